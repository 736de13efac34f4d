"""Settings of `engine serve`, passed to worker processes through environment variables.

uvicorn starts each worker by importing `engine.server.app:create_app`, so everything a worker
needs travels as `ENGINE_SERVE_*` variables: `ServeConfig.to_env()` in the parent,
`ServeConfig.from_env()` in each worker.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

__all__ = ["ServeConfig", "default_log_path"]

_PREFIX = "ENGINE_SERVE_"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeConfig:
    """How the service runs.

    Attributes:
        policy: the policy file (watched for changes).
        keys_db: SQLite file of the client keys (`engine keys`); None serves without auth.
        log_db: decision log file overriding the policy's `log.sqlite` (None: the policy's).
        default_log_db: decision log file of a policy that names no `log.sqlite` (and no `log_db`
            is given); `engine serve` sets it to `default_log_path(policy)`.
        max_body_bytes: larger request bodies get 413.
        reload_interval_s: how often the policy file is checked for changes (0: only on SIGHUP).
        keys_refresh_s: how often the key table is checked for new and revoked keys.
        default_max_tokens: output budget of a request that gives none (cost estimates use it).
        otel: export OpenTelemetry traces over OTLP/HTTP (`engine.ops.tracing`; the SDK's
            `OTEL_EXPORTER_OTLP_*` variables say where).
        ready_check_s: when above 0, `/readyz` also requires the provider probes of `engine doctor`
            to pass; they run at start and again every `ready_check_s` seconds.
    """

    policy: str
    keys_db: str | None = None
    log_db: str | None = None
    default_log_db: str | None = None
    max_body_bytes: int = 1 << 20
    reload_interval_s: float = 1.0
    keys_refresh_s: float = 1.0
    default_max_tokens: int = 1000
    ready_check_s: float = 0.0
    otel: bool = False

    def to_env(self) -> dict[str, str]:
        """The `ENGINE_SERVE_*` variables describing this config (unset fields are left out)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[_PREFIX + f.name.upper()] = str(value)
        return out

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServeConfig:
        """Read the config from `ENGINE_SERVE_*` variables.

        Raises:
            RuntimeError: ENGINE_SERVE_POLICY is not set, or a number does not parse.
        """
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            kind = type(f.default) if isinstance(f.default, (int, float)) else str
            if kind is bool:
                values[f.name] = raw.strip().lower() in ("1", "true", "yes", "on")
                continue
            try:
                values[f.name] = int(raw) if kind is int else float(raw) if kind is float else raw
            except ValueError:
                raise RuntimeError(f"{_PREFIX}{f.name.upper()}={raw!r} is not a number") from None
        if "policy" not in values:
            raise RuntimeError(f"{_PREFIX}POLICY is not set: start the service with `engine serve --policy FILE`")
        return cls(**values)  # type: ignore[arg-type]


def default_log_path(policy: str | Path, cwd: str | Path | None = None) -> Path:
    """Where `engine serve` keeps its decision log when neither the policy nor `--log-db` names one.

    Beside the policy as `<name>.decisions.db` when that directory is writable and is not the
    package's bundled policies (an installed package is no place for data); else
    `decisions.db` in the working directory.
    """
    from engine.policy.bundled import default_policy_path

    p = Path(policy).resolve()
    bundled = default_policy_path().resolve().parent
    if p.parent != bundled and os.access(p.parent, os.W_OK):
        return p.with_name(f"{p.stem}.decisions.db")
    return Path(cwd or os.getcwd()).resolve() / "decisions.db"
