"""Injected time, so that quotas, cache TTLs, health windows and backoff are testable
without sleeping (tests move a fake clock by hand)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Protocol, TypeVar

_T = TypeVar("_T")


class Clock(Protocol):
    """Where the runtime reads time from."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch (calendar windows, log timestamps)."""
        ...

    def monotonic(self) -> float:
        """Monotonic seconds (durations, TTLs, sliding windows)."""
        ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch."""
        return time.time()

    def monotonic(self) -> float:
        """Monotonic seconds."""
        return time.monotonic()


class ManualClock:
    """A clock that only moves when a test calls `advance`."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._wall = start
        self._mono = 1000.0

    def time(self) -> float:
        """Wall-clock seconds since the epoch."""
        return self._wall

    def monotonic(self) -> float:
        """Monotonic seconds."""
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move both clocks forward."""
        self._wall += seconds
        self._mono += seconds


async def bounded(aw: Awaitable[_T], seconds: float) -> _T:
    """`await aw`, raising TimeoutError after `seconds`: a backstop over a client's own timeouts (a
    vendor or a Redis server that accepts but never answers). asyncio.timeout (3.11+) costs a timer
    handle; wait_for, the 3.10 fallback, a whole task per call."""
    timeout_cm = getattr(asyncio, "timeout", None)
    if timeout_cm is None:
        return await asyncio.wait_for(aw, seconds)
    async with timeout_cm(seconds):
        return await aw
