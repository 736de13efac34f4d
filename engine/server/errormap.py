"""Engine errors as HTTP answers in OpenAI's error format (the table is in docs/service.md).

| engine error | status | type / code |
|---|---|---|
| RequestError (bad input) | 400 | invalid_request_error |
| StateUnavailable (Redis down, quotas fail closed) | 503 + Retry-After (next reconnection) | state_unavailable |
| QuotaExceeded (policy or key quota) | 429 + Retry-After (window reset) | insufficient_quota |
| RateLimitExceeded (a per-tenant / per-key `limits` entry) | 429 + Retry-After | rate_limit_exceeded |
| AllModelsFailed, every attempt rate limited | 429 + Retry-After (vendor's, else 1 s) | rate_limit_exceeded |
| AllModelsFailed, every attempt too long / filtered | 400 | context_length_exceeded / content_filter |
| AllModelsFailed, every model refused the request (BadRequest) | 400 | unsupported_parameter (naming it) |
| AllModelsFailed, otherwise | 503 | all_models_failed |
| RoutingRefused, some model only held back by an open circuit | 503 + Retry-After | no_model_available |
| RoutingRefused, held back only by rate limits | 429 + Retry-After | rate_limit_exceeded |
| RoutingRefused, the policy allows no model for this request | 422 | routing_refused |
"""

from __future__ import annotations

import logging
import math
import time

from engine.errors import (
    AllModelsFailed,
    QuotaExceeded,
    RateLimitExceeded,
    RequestError,
    RoutingRefused,
    StateUnavailable,
)
from engine.server.livestats import LiveStats
from engine.server.openai_wire import WireError
from engine.store.outcomes import outcome_of_error

__all__ = ["map_error"]

log = logging.getLogger("engine.server")

_INPUT_FAULTS = {"ContextTooLong": "context_length_exceeded", "ContentFiltered": "content_filter"}


def _seconds(value: float | None, default: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return str(default)
    return str(max(1, math.ceil(value)))


def map_error(e: Exception, stats: LiveStats, *, cooldown_s: float | None = None) -> WireError:
    """The HTTP error for an exception raised while serving a request.

    Args:
        e: the exception.
        stats: where the vendors' Retry-After hints of failed requests are kept.
        cooldown_s: the policy's circuit cooldown, the Retry-After of a refusal by open circuits.
    """
    if isinstance(e, WireError):
        return e
    if isinstance(e, RequestError):
        return WireError(400, str(e))
    if isinstance(e, StateUnavailable):
        return WireError(503, str(e), type="server_error", code="state_unavailable",
                         headers={"retry-after": _seconds(e.resets_at - time.time())})
    if isinstance(e, RateLimitExceeded):
        return WireError(429, str(e), type="rate_limit_error", code="rate_limit_exceeded",
                         headers={"retry-after": _seconds(e.retry_after)})
    if isinstance(e, QuotaExceeded):
        return WireError(429, f"{e} (quota of this {'key' if e.quota.startswith('key-') else 'deployment'})",
                         type="insufficient_quota", code="insufficient_quota",
                         headers={"retry-after": _seconds(e.resets_at - time.time())})
    if isinstance(e, AllModelsFailed):
        return _all_failed(e, stats)
    if isinstance(e, RoutingRefused):
        return _refused(e, cooldown_s)
    log.exception("unexpected error while serving a request", exc_info=e)
    return WireError(500, f"The router failed unexpectedly: {type(e).__name__}. The error is logged.",
                     type="server_error", code="internal_error")


def _all_failed(e: AllModelsFailed, stats: LiveStats) -> WireError:
    limited, hint = stats.take_retry_after(e.request_id)
    tried = [cls for _, cls, _ in e.attempts if cls != "Skipped"]
    if not limited and outcome_of_error(e) == "rate_limited":
        limited = True  # a stream's mid-flight failure is not in the hints; the classes still tell
    if limited:
        return WireError(429, f"Every model of the plan is rate limited; retry later. {e}", type="rate_limit_error",
                         code="rate_limit_exceeded", headers={"retry-after": _seconds(hint)})
    if tried and all(cls == "BadRequest" for cls in tried):
        # every model refused the request itself (a parameter it cannot honour, a malformed
        # body): the client's to fix, so a 400 naming the parameter, not a 503
        unsupported = [m for _, cls, m in e.attempts if cls == "BadRequest" and " is not supported by " in m]
        head = unsupported[0].split(" is not supported by ")[0] if unsupported else ""
        param = head if head and " " not in head else None  # "image input ..." names no parameter
        return WireError(400, str(e), param=param, code="unsupported_parameter" if unsupported else None)
    codes = {_INPUT_FAULTS.get(cls) for cls in tried}
    if tried and len(codes) == 1 and None not in codes:
        code = codes.pop()
        assert code is not None
        return WireError(400, str(e), code=code)
    return WireError(503, str(e), type="server_error", code="all_models_failed")


def _refused(e: RoutingRefused, cooldown_s: float | None) -> WireError:
    outcome = outcome_of_error(e)  # the decision log's outcome decides the status: one classification
    if outcome == "no_model":
        return WireError(503, f"No model is available right now: {e}", type="server_error",
                         code="no_model_available", headers={"retry-after": _seconds(cooldown_s)})
    if outcome == "rate_limited":
        return WireError(429, f"Every eligible model is at its rate limit: {e}", type="rate_limit_error",
                         code="rate_limit_exceeded", headers={"retry-after": "1"})
    return WireError(422, f"The routing policy allows no model for this request: {e}", code="routing_refused")
