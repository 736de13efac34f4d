"""Faults a fake vendor can inject, and the shared, thread-safe state of a fake server."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

__all__ = ["FAULT_KINDS", "Fault", "FakeState", "RecordedRequest", "FaultKind"]

FaultKind = Literal[
    "rate_limit",  # 429 with Retry-After (Gemini: RetryInfo in the body as well)
    "server_error",  # 500
    "unavailable",  # 503
    "overloaded",  # Anthropic 529 overloaded_error; 503 "overloaded" for the others
    "timeout",  # stall `delay_s` before answering (past the client's timeout)
    "drop",  # send part of the body (`after_chunks` SSE events when streaming), then cut the connection
    "stream_error",  # streaming: an error event in the vendor's shape after `after_chunks` events
    "malformed",  # 200 with a body (or SSE data) that is not JSON
    "context_length",  # the vendor's context-length error
    "content_filter",  # the vendor's content-filter answer (an error or a blocked 200, as the vendor does)
    "auth",  # the vendor's invalid-key error (401; Gemini: 400 API_KEY_INVALID)
    "bad_request",  # a generic 400
]
FAULT_KINDS: tuple[str, ...] = FaultKind.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure.

    Attributes:
        kind: What goes wrong.
        retry_after: Seconds advertised by `rate_limit` (and `overloaded`) answers.
        delay_s: How long a `timeout` stalls.
        after_chunks: SSE events sent before a `drop` / `stream_error` (non-streaming `drop`
            always sends half of the body).
    """

    kind: FaultKind
    retry_after: float | None = 1.0
    delay_s: float = 3.0
    after_chunks: int = 2

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; one of {', '.join(FAULT_KINDS)}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (for the control endpoint of a fake in another process)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | str) -> Fault:
        """Inverse of `to_json`; a bare string is a fault kind with default settings."""
        if isinstance(data, str):
            return cls(cast(FaultKind, data))
        return cls(**data)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request as the fake received it; authentication header values are replaced by "<redacted>"."""

    vendor: str
    channel: str
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any


@dataclass(slots=True)
class _Channel:
    queue: deque[Fault] = field(default_factory=deque)
    mode: Fault | None = None
    calls: int = 0
    requests: list[RecordedRequest] = field(default_factory=list)


class FakeState:
    """Faults, settings and records of one fake server; shared by the server thread and tests.

    A channel is the vendor name ("openai", "anthropic", "gemini") or, when the request path has
    a prefix (`/mistral/v1/chat/completions`), that prefix: two providers on one server fail
    independently.
    """

    def __init__(self, *, latency_ms: float = 0.0, context_window: int | None = None, record: bool = True) -> None:
        self._lock = threading.Lock()
        self._channels: dict[str, _Channel] = {}
        self.latency_ms = latency_ms
        """Fixed delay before every answer."""
        self.context_window = context_window
        """When set, inputs estimated above it get the vendor's context-length error."""
        self.record = record
        """Keep every request (off for long benchmarks)."""
        self.models: frozenset[str] | None = None
        """Model ids the model endpoints know (None: `tests.fakes.models.CATALOGUE`)."""
        self.stopping = False

    def _channel(self, name: str) -> _Channel:
        ch = self._channels.get(name)
        if ch is None:
            ch = self._channels[name] = _Channel()
        return ch

    def script(self, channel: str, *faults: Fault | str) -> None:
        """Queue faults for the next requests of `channel`, one per request, in order."""
        with self._lock:
            self._channel(channel).queue.extend(f if isinstance(f, Fault) else Fault.from_json(f) for f in faults)

    def set_mode(self, channel: str, fault: Fault | str | None) -> None:
        """Apply `fault` to every request of `channel` (after its queue is empty); None clears it."""
        with self._lock:
            self._channel(channel).mode = Fault.from_json(fault) if isinstance(fault, str) else fault

    def reset(self) -> None:
        """Forget faults, records and counters; restore latency 0 and no context window."""
        with self._lock:
            self._channels.clear()
            self.latency_ms = 0.0
            self.context_window = None
            self.models = None

    def take(self, channel: str, request: RecordedRequest | None) -> Fault | None:
        """Count a request, record it, and return the fault that applies to it (server side)."""
        with self._lock:
            ch = self._channel(channel)
            ch.calls += 1
            if request is not None and self.record:
                ch.requests.append(request)
            if ch.queue:
                return ch.queue.popleft()
            return ch.mode

    def calls(self, channel: str | None = None) -> int:
        """Requests received by `channel`, or by all channels."""
        with self._lock:
            if channel is not None:
                return self._channels[channel].calls if channel in self._channels else 0
            return sum(ch.calls for ch in self._channels.values())

    def requests(self, channel: str | None = None) -> list[RecordedRequest]:
        """Requests received by `channel` (or all, in per-channel order)."""
        with self._lock:
            if channel is not None:
                return list(self._channels[channel].requests) if channel in self._channels else []
            return [r for ch in self._channels.values() for r in ch.requests]

    def stats(self) -> dict[str, Any]:
        """Calls and pending faults per channel (what the control endpoint reports)."""
        with self._lock:
            return {
                "calls": {name: ch.calls for name, ch in self._channels.items()},
                "pending": {name: len(ch.queue) for name, ch in self._channels.items()},
                "latency_ms": self.latency_ms,
                "context_window": self.context_window,
            }
