"""Errors raised by adapters.

Two roots: the caller's input being wrong (rejected before any network call) and the
provider failing. Every vendor SDK exception is mapped onto this tree at one choke point
per adapter, with the SDK exception kept as `__cause__`; nothing leaks as a vendor type.

    AdapterError
    ├── InvalidInput            caller's input is unusable (also a ValueError); never sent
    └── ProviderError           the provider failed; .provider .model .status .message
        ├── RateLimited         429 / quota exhausted; .retry_after (s) when the vendor said
        ├── Overloaded          transient: 503 / Anthropic 529 "overloaded"
        ├── Timeout             transient: no answer within the attempt's timeout
        ├── ServerError         transient: 5xx, connection lost, stream cut, malformed body
        ├── ConnectionFailed    the vendor could not be reached (DNS, refused, TLS): retried once
        ├── ContextTooLong      the input does not fit this model's context window
        ├── ContentFiltered     the vendor's safety system refused the request or answer
        ├── AuthError           401/403 or a missing / invalid API key
        └── BadRequest          any other 4xx: the request is wrong for this provider

`transient` says whether retrying the same model may help (the router retries those with
backoff and falls back on the others).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any, ClassVar

__all__ = [
    "AdapterError",
    "AuthError",
    "BadRequest",
    "ConnectionFailed",
    "ContentFiltered",
    "ContextTooLong",
    "InvalidInput",
    "Overloaded",
    "ProviderError",
    "RateLimited",
    "ServerError",
    "Timeout",
    "class_for_status",
    "parse_retry_after",
    "scrub",
]

# Shapes of vendor keys, masked even when the adapter was not told the key (a key from the
# environment, or one echoed back by a proxy); the known key is masked exactly as well.
_KEY_PATTERNS = re.compile(r"(sk-[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,}|(?<=Bearer )[A-Za-z0-9._\-]{8,})")
_MAX_MESSAGE = 2000


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Return `text` with every given secret and anything shaped like an API key masked.

    Args:
        text: A message that may quote a request, a header or a URL.
        secrets: Exact values to mask (the adapter's API key); empty or short values are ignored.
    """
    for secret in secrets:
        if secret and len(secret) >= 4 and secret in text:
            text = text.replace(secret, "***")
    text = _KEY_PATTERNS.sub("***", text)
    if len(text) > _MAX_MESSAGE:
        text = text[:_MAX_MESSAGE] + "..."
    return text


class AdapterError(Exception):
    """Root of every error an adapter raises."""


class InvalidInput(AdapterError, ValueError):
    """The caller's arguments are unusable (empty prompt, max_tokens <= 0, ...); nothing was sent."""


class ProviderError(AdapterError):
    """The provider failed to produce a completion.

    Attributes:
        provider: Provider name as configured by the caller (e.g. "openai", "sim-openai").
        model: The vendor model id that was called.
        status: HTTP status of the vendor's answer, or None (connection error, stream cut).
        message: The vendor's own message, with any API key masked.
        retry_after: Seconds the vendor asked us to wait before retrying, when it said.
    """

    transient: ClassVar[bool] = False
    """Whether retrying the same model may succeed."""
    max_retries: ClassVar[int | None] = None
    """At most this many retries of the same model for this class (None: the policy's `retry` decides)."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        model: str,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.message = message
        self.provider = provider
        self.model = model
        self.status = status
        self.retry_after = retry_after
        super().__init__(message)

    def __str__(self) -> str:
        status = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{self.provider}/{self.model}: {type(self).__name__}{status}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, provider={self.provider!r}, "
            f"model={self.model!r}, status={self.status!r}, retry_after={self.retry_after!r})"
        )

    def __reduce__(self) -> tuple[object, ...]:
        # keyword-only constructor: pickle (multiprocessing, logging handlers) needs help
        return (_rebuild, (type(self), self.message, self.provider, self.model, self.status, self.retry_after))


def _rebuild(
    cls: type[ProviderError], message: str, provider: str, model: str, status: int | None, retry_after: float | None
) -> ProviderError:
    return cls(message, provider=provider, model=model, status=status, retry_after=retry_after)


class RateLimited(ProviderError):
    """The vendor refused for rate or quota reasons; the router falls back at once."""


class Overloaded(ProviderError):
    """The vendor is overloaded (503, Anthropic 529); retry later or elsewhere."""

    transient = True


class Timeout(ProviderError):
    """No complete answer within the attempt's timeout."""

    transient = True


class ServerError(ProviderError):
    """The vendor failed (5xx), the connection or stream was cut, or the body was malformed."""

    transient = True


class ConnectionFailed(ProviderError):
    """No connection to the vendor: the name did not resolve, the host refused, TLS failed.

    Worth one retry (a blip), not the policy's full budget: a host that does not resolve
    will not resolve a few hundred milliseconds later, and the next model is waiting.
    """

    transient = True
    max_retries = 1


class ContextTooLong(ProviderError):
    """The input (plus the requested output) does not fit the model's context window."""


class ContentFiltered(ProviderError):
    """The vendor's safety system blocked the prompt or the answer."""


class AuthError(ProviderError):
    """The API key is missing, invalid, or lacks permission; fail fast for this provider."""


class BadRequest(ProviderError):
    """The vendor rejected the request as malformed or unsupported (unknown model, bad parameter)."""


def class_for_status(status: int) -> type[ProviderError]:
    """The error class an HTTP status maps to, before any vendor-specific refinement.

    Status comes first because it is the one signal every vendor, proxy and gateway gets
    right; body codes then refine a 400 into `ContextTooLong` or `ContentFiltered`.
    """
    if status == 429:
        return RateLimited
    if status in (401, 403):
        return AuthError
    if status in (408, 504):
        return Timeout
    if status in (503, 529):
        return Overloaded
    if status >= 500:
        return ServerError
    return BadRequest


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from `retry-after-ms` / `retry-after` (delta-seconds or HTTP date), else None.

    Args:
        headers: A case-insensitive mapping with `.get` (httpx / httpx2 headers).
    """
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    import email.utils  # rare path; keeps `import adapters` light

    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
