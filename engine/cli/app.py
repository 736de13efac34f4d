"""The `engine` command group; each command lives in its own module."""

from __future__ import annotations

import click

from engine.cli.explain import explain_cmd
from engine.cli.policytest import test_cmd
from engine.cli.validate import validate_cmd

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="llm-policy-router", prog_name="engine")
def cli() -> None:
    """Policy-driven LLM router: check, test, explain and run YAML routing policies.

    \b
    Examples:
      engine validate policies/default.yaml
      engine explain --meta tier=premium "Fix this: def f(: pass"
      engine test policies/tests/*.yaml

    Without --policy, commands use $ENGINE_POLICY, else the bundled offline default policy.
    """


cli.add_command(validate_cmd)
cli.add_command(explain_cmd)
cli.add_command(test_cmd)
