"""The `engine` command group; each command lives in its own module, imported on use so
that `engine explain` never pays for the server or the report libraries."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import click

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

# command name -> (module, attribute); modules are imported only when the command runs
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("engine.cli.validate", "validate_cmd"),
    "explain": ("engine.cli.explain", "explain_cmd"),
    "test": ("engine.cli.policytest", "test_cmd"),
    "demo": ("engine.cli.demo", "demo_cmd"),
    "stats": ("engine.cli.stats", "stats_cmd"),
    "report": ("engine.cli.report", "report_cmd"),
    "replay": ("engine.cli.replay", "replay_cmd"),
    "serve": ("engine.cli.serve", "serve_cmd"),
    "keys": ("engine.cli.keys", "keys_group"),
    "doctor": ("engine.cli.doctor", "doctor_cmd"),
    "calibrate": ("engine.cli.calibrate", "calibrate_group"),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported when invoked (or listed in --help)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, (mod, _) in COMMANDS.items() if importlib.util.find_spec(mod) is not None]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        try:
            module = importlib.import_module(where[0])
        except ModuleNotFoundError as e:
            if e.name == where[0]:
                return None
            raise
        cmd: Any = getattr(module, where[1])
        return cmd  # type: ignore[no-any-return]


@click.group(cls=LazyGroup, context_settings=CONTEXT)
@click.version_option(package_name="llm-policy-router", prog_name="engine")
def cli() -> None:
    """Policy-driven LLM router: check, test, explain and run YAML routing policies.

    \b
    Examples:
      engine demo                          # offline run on simulated providers
      engine validate policies/default.yaml
      engine explain --meta tier=premium "Fix this Python: def f(: pass"
      engine test policies/tests/*.yaml

    Without --policy, commands use $ENGINE_POLICY, else the bundled offline default policy.
    """
