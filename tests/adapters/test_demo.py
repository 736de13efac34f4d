"""The adapters demo runs end to end against the fakes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[2] / "examples" / "adapters_demo.py"


async def test_demo_against_the_fakes(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    spec = importlib.util.spec_from_file_location("adapters_demo", DEMO)
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    failures = await demo.main(["--offline", "--prompt", "hello demo"])
    out = capsys.readouterr().out.splitlines()
    assert failures == 0
    assert [line.split()[:2] for line in out] == [
        ["openai", "fake"], ["anthropic", "fake"], ["gemini", "fake"], ["openai_compatible", "fake"],
        ["simulated", "offline"],
    ]
    assert "Echo from gpt-4o-mini: hello demo" in out[0]
    assert "Echo from mistral-small-latest: hello demo" in out[3]
