"""Build an adapter from a policy's provider entry: `build_adapter(kind, ...)`.

Adapter modules (and, on first call, their SDKs) are imported only for the kinds asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from adapters.base import LLMAdapter, Price
from adapters.errors import InvalidInput

__all__ = ["ADAPTER_KINDS", "build_adapter"]

# kind -> (module, class, accepted options)
_KINDS: dict[str, tuple[str, str, frozenset[str]]] = {
    "openai": (
        "adapters.openai", "OpenAIAdapter", frozenset({"organization", "headers", "send_temperature", "transport"}),
    ),
    "anthropic": ("adapters.anthropic", "AnthropicAdapter", frozenset({"headers", "send_temperature"})),
    "gemini": ("adapters.gemini", "GeminiAdapter", frozenset({"api_version", "headers"})),
    "openai_compatible": (
        "adapters.openai_compat", "OpenAICompatibleAdapter",
        frozenset({"endpoint", "headers", "send_temperature", "transport"}),
    ),
    "simulated": (
        "adapters.simulated",
        "SimulatedAdapter",
        frozenset({"latency_ms", "failure_rate", "seed", "time_scale", "context_window", "faults"}),
    ),
}
ADAPTER_KINDS: tuple[str, ...] = tuple(_KINDS)
"""The adapter kinds a policy may name."""

# kind -> (module, class) per non-default `transport` option; "sdk" (the vendor SDK) is `_KINDS`' class
_TRANSPORTS: dict[str, dict[str, tuple[str, str]]] = {
    "openai": {"http": ("adapters.openai_http", "OpenAIHTTPAdapter")},
    "openai_compatible": {"http": ("adapters.openai_http", "OpenAICompatibleHTTPAdapter")},
}

# provider-entry keys the router itself consumes; passed through here harmlessly
_ROUTER_KEYS = frozenset({"adapter", "api_key", "base_url", "timeout_s", "limits"})


def build_adapter(
    kind: str,
    *,
    provider: str,
    model: str,
    api_key: str | None = None,
    base_url: str | None = None,
    timeout_s: float = 30.0,
    price: Price | None = None,
    options: Mapping[str, Any] | None = None,
) -> LLMAdapter:
    """Create the adapter of `kind` for one model of one provider.

    Args:
        kind: One of `ADAPTER_KINDS`.
        provider: Provider name from the policy (reported in completions and errors).
        model: The vendor's model id.
        api_key: The key (secret: never logged); vendors' environment variables otherwise.
        base_url: Override of the vendor's endpoint.
        timeout_s: Attempt timeout.
        price: USD per million tokens.
        options: Adapter-specific settings from the provider entry (e.g. `latency_ms: {p50, p95}`,
            `failure_rate`, `seed`, `time_scale` for `simulated`; `endpoint` for `openai_compatible`;
            `transport: sdk|http` for `openai` and `openai_compatible`: the vendor SDK, the default and
            reference behaviour, or one aiohttp session: the same body and errors, less CPU per call).

    Raises:
        InvalidInput: Unknown kind or option, or an invalid setting.
        ImportError: The vendor SDK is not installed (the message gives the pip command).
    """
    if kind not in _KINDS:
        raise InvalidInput(f"unknown adapter {kind!r}; use one of: {', '.join(ADAPTER_KINDS)}")
    module_name, class_name, accepted = _KINDS[kind]
    opts = {k: v for k, v in (options or {}).items() if k not in _ROUTER_KEYS}
    unknown = sorted(set(opts) - accepted)
    if unknown:
        raise InvalidInput(
            f"provider {provider!r}: unknown option(s) {', '.join(unknown)} for the {kind} adapter; "
            f"accepted: {', '.join(sorted(accepted)) or 'none'}"
        )
    transport = opts.pop("transport", "sdk")
    if transport != "sdk":
        choices = _TRANSPORTS.get(kind, {})
        if transport not in choices:
            raise InvalidInput(
                f"provider {provider!r}: transport must be one of: {', '.join(['sdk', *choices])}; got {transport!r}"
            )
        module_name, class_name = choices[transport]
    cls: Callable[..., LLMAdapter] = getattr(importlib.import_module(module_name), class_name)
    if kind == "simulated":
        return cls(provider, model, price=price, timeout_s=timeout_s, **_simulated_options(opts))
    return cls(provider, model, api_key=api_key, base_url=base_url, price=price, timeout_s=timeout_s, **opts)


def _simulated_options(opts: dict[str, Any]) -> dict[str, Any]:
    latency = opts.pop("latency_ms", None)
    if isinstance(latency, Mapping):
        if "p50" not in latency:
            raise InvalidInput("latency_ms needs p50 (and optionally p95) in milliseconds")
        opts["latency_ms"] = (float(latency["p50"]), float(latency.get("p95", latency["p50"])))
    elif isinstance(latency, (list, tuple)) and len(latency) == 2:
        opts["latency_ms"] = (float(latency[0]), float(latency[1]))
    elif isinstance(latency, (int, float)):
        opts["latency_ms"] = (float(latency), float(latency))
    elif latency is not None:
        raise InvalidInput(f"latency_ms must be {{p50, p95}}, [p50, p95] or a number, got {latency!r}")
    return opts
