"""Adapters pointed at a fake vendor server, with the models and keys the tests use."""

from __future__ import annotations

from typing import Any

from adapters import LLMAdapter, Price, build_adapter
from tests.fakes.server import _Urls

__all__ = ["TEST_KEYS", "TEST_MODELS", "VENDOR_KINDS", "adapter_for", "channel_of"]

VENDOR_KINDS = ("openai", "anthropic", "gemini", "openai_compatible")
"""Adapter kinds that talk HTTP to a vendor (and so to the fakes)."""

TEST_MODELS = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-haiku-4-5",
    "gemini": "gemini-2.5-flash",
    "openai_compatible": "mistral-small-latest",
}
# Shaped like real keys, so the scrubbing of key-like strings is exercised as well.
TEST_KEYS = {
    "openai": "sk-test-openai-0123456789abcdef",
    "anthropic": "sk-ant-test-0123456789abcdef",
    "gemini": "AIzaTestGemini0123456789abcdefXYZ",
    "openai_compatible": "mistral-test-key-0123456789",
}
_CHANNELS = {"openai": "openai", "anthropic": "anthropic", "gemini": "gemini", "openai_compatible": "compat"}


def channel_of(kind: str) -> str:
    """The fake's channel an adapter of `kind` from `adapter_for` talks to."""
    return _CHANNELS[kind]


def adapter_for(
    kind: str,
    server: _Urls,
    *,
    model: str | None = None,
    api_key: str | None = None,
    timeout_s: float = 10.0,
    price: Price | None = Price(input=1.0, output=2.0),
    **options: Any,
) -> LLMAdapter:
    """Build an adapter of `kind` whose base_url points at `server`.

    The openai_compatible adapter gets its own channel ("compat", under `/compat/v1`) so its
    faults and records are separate from OpenAI's. The OpenAI kinds get their SDK transport,
    the reference, unless `transport` says otherwise (the registry's default is `http`).
    """
    if kind in ("openai", "openai_compatible"):
        options.setdefault("transport", "sdk")
    if kind == "openai":
        base_url = server.openai_url
    elif kind == "openai_compatible":
        base_url = server.channel_url(channel_of(kind), "openai_compatible")
    elif kind == "anthropic":
        base_url = server.anthropic_url
    else:
        base_url = server.gemini_url
    return build_adapter(
        kind,
        provider=f"fake-{kind}",
        model=model or TEST_MODELS[kind],
        api_key=api_key or TEST_KEYS[kind],
        base_url=base_url,
        timeout_s=timeout_s,
        price=price,
        options=options,
    )
