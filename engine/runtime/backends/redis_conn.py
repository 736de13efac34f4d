"""One Redis connection pool per router, with the failure bookkeeping every Redis-backed part shares.

Every operation goes through `RedisConn.run`: it runs one registered Lua script (or a pipeline)
within `state.timeout_ms`, and turns every failure (refused, reset, timeout, Redis error) into
`StateDown`. After a failure the connection is *down*: operations fail at once, without a round
trip, until `state.retry_s` has passed; then the next one tries again (the reconnection), and
its success marks the connection up. So a dead Redis costs each request one fast failure, never
a hang, and a Redis that comes back is used again without a restart.

The `redis` package is imported on first use, so `engine explain` and embedded deployments
never load it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from engine.errors import EngineError
from engine.policy.model import StateConfig
from engine.runtime.clock import bounded

__all__ = ["RedisConn", "StateDown", "redacted_url"]

_log = logging.getLogger("engine.state")
_POOL_SIZE = 16
_T = TypeVar("_T")


class StateDown(EngineError):
    """The shared state store could not answer in time; the failure behaviour of the policy applies."""


def redacted_url(url: str) -> str:
    """`url` without its credentials, for logs, /readyz and errors."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class RedisConn:
    """A lazily opened `redis.asyncio` client plus its up/down state.

    Args:
        config: the policy's `state:` section (backend `redis`).

    Attributes:
        up: whether the last operation succeeded (None before the first one).
        errors: operations that failed (timeouts included) since start.
        reconnects: times the connection came back after being down.
        last_error: the last failure, in words (no credentials).
    """

    def __init__(self, config: StateConfig) -> None:
        if not config.url:
            raise ValueError("state.backend 'redis' needs state.url")
        self.config = config
        self.url = config.url
        self.prefix = config.prefix
        self.timeout_s = config.timeout_ms / 1000
        self._retry_s = config.retry_s
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scripts: dict[str, Any] = {}  # lua source -> redis AsyncScript (EVALSHA, EVAL on NOSCRIPT)
        self._retry_at = 0.0  # monotonic instant before which a down connection is not tried
        self._errors_cls: tuple[type[BaseException], ...] = ()
        self._reply_errors: tuple[type[BaseException], ...] = ()
        self.up: bool | None = None
        self.errors = 0
        self.reconnects = 0
        self.last_error = ""
        self.down_since: float | None = None

    # -- client ---------------------------------------------------------------------------

    def _connect(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is not None and self._loop is loop:
            return self._client
        try:
            import redis.asyncio as aioredis
            from redis.exceptions import RedisError, ResponseError
        except ImportError as e:  # pragma: no cover - the package is a dependency
            raise EngineError("state.backend 'redis' needs the `redis` package: pip install redis") from e
        # a client binds to the loop of its first connection; a router moved to another loop
        # (tests, `asyncio.run` twice) gets a fresh pool instead of a broken one
        # A bounded, blocking pool: a burst of requests queues for a few warm connections (each
        # operation holds one for well under a millisecond) instead of opening hundreds at once,
        # whose handshakes alone would outlast `timeout_ms` on a busy machine.
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url, max_connections=_POOL_SIZE, timeout=self.timeout_s, socket_timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s, retry_on_timeout=False, health_check_interval=0)
        self._client = aioredis.Redis(connection_pool=pool)
        self._loop = loop
        self._scripts = {}
        self._errors_cls = (RedisError, OSError, asyncio.TimeoutError)
        self._reply_errors = (ResponseError,)
        return self._client

    def available(self) -> bool:
        """False while the connection is known down and not yet due for a retry."""
        return self.up is not False or time.monotonic() >= self._retry_at

    # -- operations -----------------------------------------------------------------------

    async def script(self, lua: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a Lua script atomically on the server.

        Raises:
            StateDown: Redis is down, refused, failed or did not answer within `timeout_ms`.
        """
        async def call(client: Any) -> Any:
            script = self._scripts.get(lua)
            if script is None:
                script = self._scripts[lua] = client.register_script(lua)
            return await script(keys=list(keys), args=list(args))

        return await self.run(call)

    async def run(self, op: Callable[[Any], Awaitable[_T]]) -> _T:
        """Run `op(client)` under the timeout and the up/down bookkeeping (see the module docstring)."""
        if not self.available():
            raise StateDown(f"Redis at {redacted_url(self.url)} is down ({self.last_error}); next try in "
                            f"{max(self._retry_at - time.monotonic(), 0):.1f}s")
        client = self._connect()
        try:
            result = await bounded(op(client), self.timeout_s)
        except self._reply_errors as e:
            # the server answered with an error: a bug or a misconfigured server, not an outage
            _log.error("state: Redis refused an operation: %s", e)
            raise StateDown(f"Redis at {redacted_url(self.url)} refused the operation: {e}") from e
        except self._errors_cls as e:
            self._failed(e)
            raise StateDown(f"Redis at {redacted_url(self.url)}: {self.last_error}") from e
        if self.up is not True:
            if self.up is False:
                self.reconnects += 1
                _log.warning("state: Redis at %s is back after %.1fs; shared state in use again",
                             redacted_url(self.url), time.monotonic() - (self.down_since or time.monotonic()))
            self.up, self.down_since = True, None
        return result

    async def ping(self) -> bool:
        """One round trip; True when Redis answered."""
        try:
            await self.run(lambda c: c.ping())
        except StateDown:
            return False
        return True

    def _failed(self, e: BaseException) -> None:
        self.errors += 1
        what = type(e).__name__ if isinstance(e, asyncio.TimeoutError) else f"{type(e).__name__}: {e}"
        self.last_error = what.replace(self.url, redacted_url(self.url))[:300]
        self._retry_at = time.monotonic() + self._retry_s
        if self.up is not False:
            self.down_since = time.monotonic()
            _log.warning("state: Redis at %s failed (%s); the policy's state.on_failure applies until it is back",
                         redacted_url(self.url), self.last_error)
        self.up = False

    def status(self) -> dict[str, Any]:
        """What /readyz and /metrics show: backend, address, connected, counters, last error."""
        return {"backend": "redis", "url": redacted_url(self.url), "connected": self.up is not False,
                "errors": self.errors, "reconnects": self.reconnects, "last_error": self.last_error or None,
                "down_for_s": None if self.down_since is None else round(time.monotonic() - self.down_since, 3)}

    def key(self, *parts: str) -> str:
        """A key under the policy's prefix."""
        return self.prefix + ":".join(parts)

    async def aclose(self) -> None:
        """Close the pool (idempotent)."""
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.aclose()
            except Exception as e:  # closing a pool of a dead server must not fail a shutdown
                _log.debug("state: closing the Redis pool: %s", e)
