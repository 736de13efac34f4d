"""Fake vendor servers on 127.0.0.1 speaking the OpenAI, Anthropic and Gemini wire protocols.

JSON and SSE streaming in each vendor's real format (usage included), scriptable faults in
each vendor's real error shapes, a fixed latency, and a record of every request. Used by the
adapter tests (in a thread, see `pytest_plugin`) and by benchmarks (`python -m tests.fakes`).
"""

from __future__ import annotations

from tests.fakes.faults import FAULT_KINDS, FakeState, Fault, FaultKind, RecordedRequest
from tests.fakes.server import FakeVendorServer, RemoteFake, serve, spawn_fake
from tests.fakes.wire import tokens

__all__ = [
    "FAULT_KINDS",
    "FakeState",
    "FakeVendorServer",
    "Fault",
    "FaultKind",
    "RecordedRequest",
    "RemoteFake",
    "serve",
    "spawn_fake",
    "tokens",
]
