"""Hot reload: the live router, swapped atomically when the policy file changes or on SIGHUP.

A request takes a lease on the router that is live when it starts (`acquire`/`release`) and
keeps it to the end, streams included, so it finishes on the policy it started with. A reload
validates, checks, compiles and builds the new router in a worker thread, off the event loop
and the request path; then one assignment makes it live. A policy with errors is refused: its
diagnostics are logged, a `policy_rejected` event goes to the decision log, and the old router
keeps serving. A retired router is closed (its decision log flushed) once its last lease ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import PolicyError
from engine.policy.api import analyze_policy
from engine.policy.model import Policy
from engine.runtime.router import Router
from engine.server.logs import log_event

__all__ = ["Live", "PolicyHolder", "load_checked"]

log = logging.getLogger("engine.server")


@dataclass(slots=True, eq=False)
class Live:
    """One router generation.

    Attributes:
        router: the router.
        version: the policy's digest (SHA-256 of its text).
        loaded_at: UNIX time it went live.
        generation: 1 for the policy loaded at start, +1 per accepted reload.
        inflight: requests holding a lease on it.
        retired: a newer generation replaced it.
    """

    router: Router
    version: str
    loaded_at: float
    generation: int
    inflight: int = 0
    retired: bool = False
    closed: asyncio.Event = field(default_factory=asyncio.Event)


def load_checked(path: str | Path) -> tuple[Policy, bytes]:
    """Read, validate and check a policy file; warnings are logged.

    Returns:
        The policy and the file's bytes as read (to notice later changes).

    Raises:
        PolicyError: the policy has errors (every diagnostic attached).
    """
    raw = Path(path).read_bytes()
    a = analyze_policy(path)
    for d in a.warnings:
        log.warning("%s", d.format())
    if a.errors or a.policy is None:
        raise PolicyError(a.diagnostics, a.source)
    return a.policy, raw


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


class PolicyHolder:
    """Holds the live router and replaces it when the policy changes.

    Args:
        path: the policy file.
        build: makes a router from a checked policy (runs in a worker thread).
        interval_s: how often the file is checked for changes (0: never; SIGHUP and `reload()` still work).
    """

    def __init__(self, path: str | Path, build: Callable[[Policy], Router], *, interval_s: float = 1.0) -> None:
        self.path = Path(path)
        self.interval_s = interval_s
        self.reloads = 0
        """Accepted reloads."""
        self.rejections = 0
        """Refused reloads (invalid policies)."""
        self.last_error: str | None = None
        """Diagnostics of the last refused policy, until a valid one is accepted."""
        self._build = build
        self._lock = asyncio.Lock()
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) last looked at
        self._content = ""  # digest of the file's bytes last acted on (accepted or refused)
        self._closing: set[asyncio.Task[None]] = set()
        self._retired: list[Live] = []
        self.live: Live | None = None

    async def start(self) -> Live:
        """Load the policy and make its router live.

        Raises:
            PolicyError: the policy has errors.
        """
        policy, raw = await asyncio.to_thread(load_checked, self.path)
        router = await asyncio.to_thread(self._build, policy)
        self._content = _digest(raw)
        self._seen = self._stat()
        self.live = Live(router, policy.digest, time.time(), 1)
        return self.live

    # -- leases -----------------------------------------------------------------------------

    def acquire(self) -> Live:
        """Lease the live router for one request; pair with `release`."""
        live = self.live
        assert live is not None, "PolicyHolder.start() was not awaited"
        live.inflight += 1
        return live

    def release(self, live: Live) -> None:
        """End a lease; the last lease of a retired router closes it."""
        live.inflight -= 1
        if live.retired and live.inflight == 0:
            self._close(live)

    def _close(self, live: Live) -> None:
        task = asyncio.get_running_loop().create_task(self._aclose(live))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _aclose(self, live: Live) -> None:
        try:
            await live.router.aclose()
        except Exception:
            log.exception("closing the router of policy %s failed", live.version[:12])
        finally:
            live.closed.set()
            with contextlib.suppress(ValueError):
                self._retired.remove(live)

    # -- reloading --------------------------------------------------------------------------

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    async def reload(self, reason: str = "requested", *, force: bool = False) -> bool:
        """Load the file again and swap it in if valid and changed.

        Args:
            reason: said in the log and the `policy_reloaded` event.
            force: rebuild even when the file's bytes did not change.

        Returns:
            True when a new router went live.
        """
        async with self._lock:
            live = self.live
            assert live is not None
            self._seen = self._stat()
            try:
                raw = await asyncio.to_thread(self.path.read_bytes)
            except OSError as e:
                self._refuse(live, f"{self.path}: cannot read the policy: {e}", "")
                return False
            content = _digest(raw)
            if content == self._content and not force:
                return False
            try:
                policy, raw = await asyncio.to_thread(load_checked, self.path)
                content = _digest(raw)
                router = await asyncio.to_thread(self._build, policy)
            except PolicyError as e:
                self._refuse(live, e.report(), content)
                return False
            except Exception as e:  # a router that cannot be built is refused like an invalid policy
                self._refuse(live, f"{self.path}: the policy is valid but its router could not be built: {e}",
                             content)
                return False
            new = Live(router, policy.digest, time.time(), live.generation + 1)
            self.live = new  # the swap: requests that start from now on lease the new router
            self._content = content
            self.reloads += 1
            self.last_error = None
            live.retired = True
            self._retired.append(live)
            if live.inflight == 0:
                self._close(live)
            detail = f"{live.version[:12]} -> {new.version[:12]} ({reason})"
            router.recorder.event("policy_reloaded", detail)
            log_event(log, logging.INFO, "policy_reloaded",
                      f"policy reloaded: {detail}; {live.inflight} request(s) finish on the old one",
                      policy=str(self.path), version=new.version[:12], previous=live.version[:12], reason=reason)
            return True

    def _refuse(self, live: Live, report: str, content: str) -> None:
        self.rejections += 1
        self.last_error = report
        self._content = content or self._content
        log_event(log, logging.ERROR, "policy_rejected",
                  f"policy {self.path} refused; still serving {live.version[:12]}:\n{report}",
                  policy=str(self.path), version=live.version[:12])
        live.router.recorder.event("policy_rejected", report[:2000])

    async def watch(self) -> None:
        """Check the file every `interval_s` until cancelled (a cheap stat; the bytes only on change)."""
        if self.interval_s <= 0:
            return
        while True:
            await asyncio.sleep(self.interval_s)
            if self._stat() != self._seen:
                try:
                    await self.reload("file changed")
                except Exception:  # the watcher must outlive any one failed reload
                    log.exception("policy reload failed")

    def install_sighup(self) -> bool:
        """Reload on SIGHUP (main thread of a process only); True when installed."""
        if not hasattr(signal, "SIGHUP"):
            return False
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        except (ValueError, RuntimeError, NotImplementedError):
            return False
        return True

    def _on_sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload("SIGHUP", force=True))
        self._closing.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._closing.discard)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        """Close every router (flushing their decision logs), the live one included."""
        live, self.live = self.live, None
        for old in list(self._retired):
            if old.inflight:
                log.warning("closing policy %s with %d request(s) still in flight", old.version[:12], old.inflight)
                self._close(old)
        if live is not None:
            live.retired = True
            await self._aclose(live)
        while self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)
