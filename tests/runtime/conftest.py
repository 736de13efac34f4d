"""Routers over simulated adapters whose outcomes a test scripts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.base import Price
from adapters.simulated import SimulatedAdapter
from engine.policy.api import load_policy_text
from engine.policy.model import Policy
from engine.runtime.router import Router

POLICY = """
version: 1
providers:
  pa: {adapter: simulated}
  pb: {adapter: simulated}
  pc: {adapter: simulated}
models:
  a-small:
    provider: pa
    price: {input: 1, output: 2}
    context_window: 4000
    scores: {chat: 4}
  b-mid:
    provider: pb
    price: {input: 2, output: 4}
    context_window: 16000
    scores: {chat: 4}
  b-mid2:
    provider: pb
    price: {input: 2.5, output: 5}
    context_window: 16000
    scores: {chat: 4}
  c-big:
    provider: pc
    price: {input: 5, output: 10}
    context_window: 200000
    scores: {chat: 4}
routes:
  - name: default
    strategy: ordered
    candidates: [a-small, b-mid, b-mid2, c-big]
retry: {max_attempts: 2, backoff_ms: 1, max_backoff_ms: 5}
deadline_s: 10
health: {min_requests: 1000}
"""


def make_policy(extra: str = "", base: str = POLICY) -> Policy:
    return load_policy_text(base + extra, "test-policy.yaml", env={})


def sims(policy: Policy, **kw: Any) -> dict[str, SimulatedAdapter]:
    return {
        name: SimulatedAdapter(m.provider, m.id, price=Price(m.price.input, m.price.output), time_scale=0, **kw)
        for name, m in policy.models.items()
    }


@pytest.fixture
def policy() -> Policy:
    return make_policy()


@pytest.fixture
def adapters(policy: Policy) -> dict[str, SimulatedAdapter]:
    return sims(policy)


@pytest.fixture
async def router(policy: Policy, adapters: dict[str, SimulatedAdapter], tmp_path: Path) -> AsyncIterator[Router]:
    r = Router(policy, log_path=tmp_path / "log.db", adapters=adapters)
    yield r
    await r.aclose()


RowsFn = Callable[[str], list[dict[str, Any]]]


@pytest.fixture
def rows(tmp_path: Path) -> RowsFn:
    """Read a table of the test's decision log (after the router flushed it)."""
    import sqlite3

    def read(table: str) -> list[dict[str, Any]]:
        db = sqlite3.connect(tmp_path / "log.db")
        db.row_factory = sqlite3.Row
        out = [dict(r) for r in db.execute(f"SELECT * FROM {table}")]
        db.close()
        return out

    return read
