"""The examples run as documented (offline, on the bundled default policy)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_embed_example_runs_offline(tmp_path: Path) -> None:
    env = {**os.environ, "ENGINE_SIM_TIME_SCALE": "0", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "embed.py"), "--log", str(tmp_path / "d.db")],
                         capture_output=True, text=True, env=env, timeout=120, check=True).stdout
    assert "[premium-code -> claude-sonnet]" in out
    assert "cache hit: True" in out and "refused:" in out
    assert (tmp_path / "d.db").exists()
