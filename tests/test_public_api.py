"""The public API is small and deliberate (STYLE.md rule 3)."""

from __future__ import annotations

import subprocess
import sys

import engine


def test_exported_members() -> None:
    assert sorted(engine.__all__) == sorted([
        "EMPTY_STATE", "AllModelsFailed", "Candidate", "CompiledPolicy", "Decision", "EngineError", "Features",
        "Policy", "PolicyError", "QuotaExceeded", "Request", "RequestError", "RoutedCompletion", "Router",
        "RoutingRefused", "RuntimeState", "StreamDone", "TraceEvent", "analyze_policy", "compile_policy", "decide",
        "explain", "load_policy", "load_policy_text",
    ])
    for name in engine.__all__:
        assert getattr(engine, name) is not None, name


def test_importing_the_cli_does_not_import_vendor_sdks() -> None:
    code = ("import sys, engine, engine.cli.app, engine.routing.decide, engine.runtime.router; "
            "print(sorted(m for m in ('openai', 'anthropic', 'google.genai') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_bundled_default_policy_is_found_from_any_directory(tmp_path: object) -> None:
    code = "from engine.policy.bundled import default_policy_path as p; print(p().is_file(), p().name)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=str(tmp_path))
    assert out.stdout.split() == ["True", "default.yaml"]
