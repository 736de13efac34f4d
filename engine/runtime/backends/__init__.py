"""Shared-state backends: where quotas, rate limits, health, the cache and single flight live.

`embedded` (the default) is the code in `engine.runtime` itself: quotas in the SQLite file,
everything else in the process. `redis` puts all of it in one Redis so that any number of
router processes and machines see one truth. `build_state` picks the implementations for a
policy; each Redis class subclasses the embedded one, so the router and the dispatcher use
either without knowing which they have (and the embedded half is the Redis half's fallback).
"""

from __future__ import annotations

from engine.runtime.backends.select import StateParts, build_state, unshared_limits

__all__ = ["StateParts", "build_state", "unshared_limits"]
