"""The fake vendors' model endpoints: list and retrieve, each in its vendor's shape.

    GET {prefix}/v1/models                        OpenAI (and compatible): the catalogue
    GET {prefix}/v1/models/{id}                   OpenAI; Anthropic when `anthropic-version` is sent
    GET {prefix}/v1beta/models/{model}            Gemini (v1 and v1alpha too)

A model exists when it is in `FakeState.models` (default: `CATALOGUE`); an unknown id gets the
vendor's 404. A channel's fault mode applies here too, so `set_mode("x", "auth")` makes a
channel answer its vendor's invalid-key error to every call, model look-ups included.
"""

from __future__ import annotations

import re
from typing import Any

from tests.fakes.wire import ANTHROPIC, GEMINI, OPENAI, Vendor

__all__ = ["CATALOGUE", "model_body", "model_route", "models_list_body", "not_found"]

CATALOGUE = frozenset((
    "gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-4.1-mini", "o4-mini",
    "claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-1",
    "gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite",
    "mistral-small-latest", "open-mixtral-8x22b", "mixtral-8x7b",
))
"""Model ids the fakes know unless a test configures others."""

_OPENAI_MODEL = re.compile(r"^(?P<prefix>.*)/v1/models(?:/(?P<model>[^/]+))?$")
_GEMINI_MODEL = re.compile(r"^(?P<prefix>.*)/v1(?:beta|alpha)?/models/(?P<model>[^/:]+)$")


def model_route(path: str, headers: dict[bytes, bytes]) -> tuple[Vendor, str, str | None] | None:
    """(vendor, channel, model id or None for the list) of a model look-up, else None."""
    m = _GEMINI_MODEL.match(path)
    if m and (b"x-goog-api-key" in headers or "/v1/" not in path):
        return GEMINI, m["prefix"].strip("/") or "gemini", m["model"]
    m = _OPENAI_MODEL.match(path)
    if m is None:
        return None
    vendor = ANTHROPIC if b"anthropic-version" in headers else OPENAI
    return vendor, m["prefix"].strip("/") or vendor.name, m["model"]


def model_body(vendor: Vendor, model: str) -> dict[str, Any]:
    """The vendor's answer to retrieving `model`."""
    if vendor is ANTHROPIC:
        return {"type": "model", "id": model, "display_name": model, "created_at": "2025-10-01T00:00:00Z"}
    if vendor is GEMINI:
        return {"name": f"models/{model}", "version": "001", "displayName": model, "inputTokenLimit": 1048576,
                "outputTokenLimit": 65536, "supportedGenerationMethods": ["generateContent", "countTokens"]}
    return {"id": model, "object": "model", "created": 1_700_000_000, "owned_by": "fake"}


def models_list_body(models: frozenset[str]) -> dict[str, Any]:
    """OpenAI's `GET /v1/models` answer."""
    return {"object": "list", "data": [model_body(OPENAI, m) for m in sorted(models)]}


def not_found(vendor: Vendor, model: str) -> dict[str, Any]:
    """The vendor's 404 body for an unknown model id."""
    if vendor is ANTHROPIC:
        return {"type": "error", "error": {"type": "not_found_error", "message": f"model: {model}"},
                "request_id": "req_fake"}
    if vendor is GEMINI:
        return {"error": {"code": 404, "status": "NOT_FOUND",
                          "message": f"models/{model} is not found for API version v1beta, or is not supported "
                                     "for generateContent."}}
    return {"error": {"message": f"The model `{model}` does not exist or you do not have access to it.",
                      "type": "invalid_request_error", "param": None, "code": "model_not_found"}}
