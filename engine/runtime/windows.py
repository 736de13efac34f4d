"""Quota windows: calendar ones (`minute`, `hour`, `day`, `month`, UTC) and rolling spans (`24h`, `7d`, `30d`).

A calendar window is one counter that starts from zero at each window's start. A rolling span
is counted in steps of span/`ROLLING_STEPS` (1 h for `24h`, 7 h for `7d`, 30 h for `30d`): a
request adds to the current step, and the usage of the span is the sum of the current step and
the 24 whole steps before it. So usage leaves a rolling window at a step boundary, up to one step
later than an exact rolling sum would let it go, never earlier: the limit always holds.
"""

from __future__ import annotations

import datetime as dt
import math
import re

__all__ = ["ROLLING_STEPS", "rolling_span_s", "step_of", "window_bounds"]

ROLLING_STEPS = 24
"""Steps a rolling span is counted in."""

_UTC = dt.timezone.utc
_FIXED_S: dict[str, float] = {"minute": 60.0, "hour": 3600.0, "day": 86400.0}
_ROLLING = re.compile(r"([1-9][0-9]{0,3})([hd])")


def rolling_span_s(window: str) -> float | None:
    """The length in seconds of a rolling window (`24h`, `7d`...), None for a calendar one."""
    m = _ROLLING.fullmatch(window)
    if m is None:
        return None
    return int(m.group(1)) * (3600.0 if m.group(2) == "h" else 86400.0)


def step_of(window: str) -> float | None:
    """The step of a rolling window in seconds, None for a calendar one."""
    span = rolling_span_s(window)
    return None if span is None else span / ROLLING_STEPS


def window_bounds(window: str, ts: float) -> tuple[float, float]:
    """The counter holding `ts`: (start, start of the next one); for a rolling window, its current step.

    Raises:
        ValueError: not a window name.
    """
    size = _FIXED_S.get(window) or step_of(window)
    if size is not None:
        start = math.floor(ts / size) * size
        # float division can land one window off right at a boundary
        if start > ts:
            start -= size
        elif start + size <= ts:
            start += size
        return start, start + size
    if window != "month":
        raise ValueError(f"unknown quota window {window!r}: use minute, hour, day, month or a span like 24h, 7d")
    d = dt.datetime.fromtimestamp(ts, _UTC)
    first = dt.datetime(d.year, d.month, 1, tzinfo=_UTC)
    following = dt.datetime(d.year + d.month // 12, d.month % 12 + 1, 1, tzinfo=_UTC)
    return first.timestamp(), following.timestamp()
