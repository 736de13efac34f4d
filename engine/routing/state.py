"""What `decide` may know about the running system: a snapshot, never a live object.

The runtime builds a `RuntimeState` from health, rate limiters and quotas just before it
calls `decide`; `engine explain` passes `EMPTY_STATE` (or one rebuilt from a log).
Keeping this a plain value is what makes `decide` pure and replayable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

QuotaProbe = Callable[[str, int, float], "tuple[str, bool] | None"]
"""(model name, estimated tokens, estimated cost USD) -> None when quotas leave room, else
(reason naming the quota, whether that quota says `on_exceed: downgrade`)."""



@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeState:
    """Health, limiter and quota facts that shape a plan.

    Attributes:
        open_circuits: model -> why its circuit is open (the model is skipped).
        demoted: model -> why it is demoted (moved to the end of the plan).
        latency_ms: model -> measured (p50, p95); models absent here use their policy prior.
        unavailable: model -> why it cannot take a request now (e.g. its rate limiter would
            wait past the deadline).
        quota_probe: asks whether quotas leave room for a model; None means no quotas apply.
        in_flight: model -> requests it is serving now (for `least_busy` groups).
    """

    open_circuits: Mapping[str, str] = field(default_factory=dict)
    demoted: Mapping[str, str] = field(default_factory=dict)
    latency_ms: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    unavailable: Mapping[str, str] = field(default_factory=dict)
    quota_probe: QuotaProbe | None = None
    in_flight: Mapping[str, int] = field(default_factory=dict)


EMPTY_STATE = RuntimeState()
"""The state `engine explain` uses: every model healthy, no limits, no quotas."""
