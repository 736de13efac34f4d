"""The admin HTTP API of `engine serve`: client keys managed over HTTP, behind an admin key.

    GET    /admin/keys              list keys (`?all=true`: revoked ones too)
    POST   /admin/keys              create one; the answer holds the secret, once
    GET    /admin/keys/{id}         one key
    PATCH  /admin/keys/{id}         change name, tier, metadata, quota, expires, allow, rpm, max_parallel
    DELETE /admin/keys/{id}         revoke it

Every call needs `Authorization: Bearer $ENGINE_ADMIN_KEY`: the admin key is the value of the
`ENGINE_ADMIN_KEY` environment variable of the server (at least 32 characters), never stored.
Without it, or without a key store (`--db`), the API answers 404 and says why. Changes apply to
this worker at once and to other workers within a second, as with `engine keys`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine.server.keystore import KeyQuota, parse_expiry
from engine.server.logs import log_event
from engine.server.openai_wire import WireError, parse_json_body

if TYPE_CHECKING:
    from engine.server.auth import Authenticator

__all__ = ["ADMIN_KEY_ENV", "AdminAPI"]

ADMIN_KEY_ENV = "ENGINE_ADMIN_KEY"
"""The environment variable holding the admin key."""

_MIN_LENGTH = 32
_JSON = "application/json"
_FIELDS = frozenset(("tenant", "name", "tier", "metadata", "quota", "expires", "expires_at", "allow", "rpm",
                     "max_parallel"))

log = logging.getLogger("engine.server")


def _answer(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status_code=status, media_type=_JSON)


def _error(err: WireError) -> Response:
    return Response(err.body(), status_code=err.status, media_type=_JSON, headers=err.headers)


class AdminAPI:
    """The admin endpoints of one service, over its authenticator's key store.

    Args:
        auth: the service's authenticator (its store is the one changed, its keys refreshed).
        admin_key: the admin key; default: the `ENGINE_ADMIN_KEY` environment variable.
    """

    def __init__(self, auth: Authenticator, admin_key: str | None = None) -> None:
        self.auth = auth
        key = os.environ.get(ADMIN_KEY_ENV) if admin_key is None else admin_key
        self.disabled: str | None = None
        """Why the API is off (None: on)."""
        self._hash = b""
        if not key:
            self.disabled = f"the admin API is off: start the server with {ADMIN_KEY_ENV} set to an admin key"
        elif len(key) < _MIN_LENGTH:
            self.disabled = f"the admin API is off: {ADMIN_KEY_ENV} must be at least {_MIN_LENGTH} characters"
            log.error("%s", self.disabled)
        elif auth.store is None:
            self.disabled = "the admin API is off: the server has no key store (start it with --db FILE)"
        else:
            self._hash = hashlib.sha256(key.encode()).digest()

    def routes(self) -> list[BaseRoute]:
        """Starlette routes of the admin API."""
        return [
            Route("/admin/keys", self.list_or_create, methods=["GET", "POST"]),
            Route("/admin/keys/{key_id}", self.one, methods=["GET", "PATCH", "DELETE"]),
        ]

    def _check(self, request: Request) -> None:
        if self.disabled is not None:
            raise WireError(404, self.disabled, code="admin_disabled")
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        given = hashlib.sha256(key.strip().encode()).digest() if scheme.lower() == "bearer" else b""
        if not hmac.compare_digest(given, self._hash):
            raise WireError(401, f"This endpoint needs the admin key (Authorization: Bearer ${ADMIN_KEY_ENV}).",
                            code="invalid_admin_key", headers={"www-authenticate": "Bearer"})

    async def list_or_create(self, request: Request) -> Response:
        """`GET /admin/keys` and `POST /admin/keys`."""
        try:
            self._check(request)
            store = self.auth.store
            assert store is not None
            if request.method == "GET":
                every = request.query_params.get("all", "").lower() in ("1", "true", "yes")
                return _answer({"keys": [k.as_dict() for k in store.keys(include_revoked=every)]})
            body = _settings(parse_json_body(await request.body()))
            tenant = body.pop("tenant", None)
            if not isinstance(tenant, str) or not tenant.strip():
                raise WireError(400, "Missing required parameter: 'tenant' (a non-empty string).", param="tenant",
                                code="missing_required_parameter")
            try:
                info, secret = store.create(tenant, **body)
            except ValueError as e:
                raise WireError(400, str(e)) from None
        except WireError as e:
            return _error(e)
        self.auth.refresh(force=True)
        log_event(log, logging.INFO, "key_created", f"key {info.id} created for tenant {info.tenant!r}",
                  key=info.id, tenant=info.tenant)
        return _answer({**info.as_dict(), "key": secret}, 201)

    async def one(self, request: Request) -> Response:
        """`GET`, `PATCH` and `DELETE /admin/keys/{id}`."""
        key_id = request.path_params["key_id"]
        try:
            self._check(request)
            store = self.auth.store
            assert store is not None
            try:
                if request.method == "GET":
                    return _answer(store.get(key_id).as_dict())
                if request.method == "DELETE":
                    info, event = store.revoke(key_id), "key_revoked"
                else:
                    changes = _settings(parse_json_body(await request.body()))
                    if "tenant" in changes:
                        raise WireError(400, "A key's tenant cannot change: create a new key.", param="tenant")
                    if not changes:
                        raise WireError(400, f"Nothing to change; settings: {', '.join(sorted(_FIELDS - {'tenant'}))}.")
                    info, event = store.update(key_id, **changes), "key_updated"
            except KeyError as e:
                raise WireError(404, str(e.args[0]), code="key_not_found") from None
            except ValueError as e:
                raise WireError(400, str(e)) from None
        except WireError as e:
            return _error(e)
        self.auth.refresh(force=True)
        log_event(log, logging.INFO, event, f"key {info.id} {event.removeprefix('key_')}", key=info.id,
                  tenant=info.tenant)
        return _answer(info.as_dict())


def _settings(body: dict[str, Any]) -> dict[str, Any]:
    """A JSON body's key settings as `KeyStore.create`/`update` arguments."""
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise WireError(400, f"Unknown parameter: '{unknown[0]}'; settings: {', '.join(sorted(_FIELDS))}.",
                        param=unknown[0], code="unknown_parameter")
    out = dict(body)
    if "expires" in out:  # the CLI's forms: 30d, 2026-06-30, never
        try:
            out["expires_at"] = parse_expiry(str(out.pop("expires")))
        except ValueError as e:
            raise WireError(400, str(e), param="expires") from None
    if out.get("quota") is not None:
        q = out["quota"]
        if not isinstance(q, dict):
            raise WireError(400, "'quota' must be an object: {window, requests, tokens, cost_usd}.", param="quota")
        try:
            out["quota"] = KeyQuota.from_dict(q)
        except (ValueError, TypeError) as e:
            raise WireError(400, f"Invalid 'quota': {e}", param="quota") from None
    if "metadata" in out and out["metadata"] is not None and not isinstance(out["metadata"], dict):
        raise WireError(400, "'metadata' must be an object.", param="metadata")
    if out.get("metadata") is None and "metadata" in out:
        out["metadata"] = {}
    return out
