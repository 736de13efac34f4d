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
        "adapters.openai", "OpenAIAdapter",
        frozenset({"organization", "headers", "send_temperature", "transport", "pass_through"}),
    ),
    "anthropic": ("adapters.anthropic", "AnthropicAdapter", frozenset({"headers", "send_temperature", "pass_through"})),
    "gemini": ("adapters.gemini", "GeminiAdapter", frozenset({"api_version", "headers", "pass_through"})),
    "openai_compatible": (
        "adapters.openai_compat", "OpenAICompatibleAdapter",
        frozenset({"endpoint", "headers", "send_temperature", "transport", "pass_through"}),
    ),
    "simulated": (
        "adapters.simulated",
        "SimulatedAdapter",
        frozenset({"latency_ms", "failure_rate", "seed", "time_scale", "context_window", "faults", "features"}),
    ),
}
ADAPTER_KINDS: tuple[str, ...] = tuple(_KINDS)
"""The adapter kinds a policy may name."""

# kind -> (module, class) per `transport` option other than "sdk" (the vendor SDK: `_KINDS`' class)
_TRANSPORTS: dict[str, dict[str, tuple[str, str]]] = {
    "openai": {"http": ("adapters.openai_http", "OpenAIHTTPAdapter")},
    "openai_compatible": {"http": ("adapters.openai_http", "OpenAICompatibleHTTPAdapter")},
}
# the lean transport is the default where it is equivalent (the equivalence suite says so); `sdk` opts out
DEFAULT_TRANSPORT: dict[str, str] = {"openai": "http", "openai_compatible": "http"}

# body fields the adapters write themselves: a pass-through may not replace them
_RESERVED_BODY = frozenset({"model", "messages", "stream", "stream_options", "contents", "system"})

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
            `failure_rate`, `seed`, `time_scale`, `features` for `simulated`; `endpoint` for
            `openai_compatible`; `transport: http|sdk` for `openai` and `openai_compatible`: one
            aiohttp session, the default, or the vendor SDK, the reference behaviour: the same body
            and errors either way, the first with less CPU per call; `pass_through: [field, ...]`
            for the vendor kinds: request `extra_body` fields sent as they are, any other refused).

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
    transport = opts.pop("transport", DEFAULT_TRANSPORT.get(kind, "sdk"))
    pass_through = _pass_through(opts.pop("pass_through", None), provider)
    if transport != "sdk":
        choices = _TRANSPORTS.get(kind, {})
        if transport not in choices:
            raise InvalidInput(
                f"provider {provider!r}: transport must be one of: {', '.join(['sdk', *choices])}; got {transport!r}"
            )
        module_name, class_name = choices[transport]
    cls: Callable[..., LLMAdapter] = getattr(importlib.import_module(module_name), class_name)
    if kind == "simulated":
        return cls(provider, model, price=price, timeout_s=timeout_s, **_simulated_options(opts, provider, model))
    adapter = cls(provider, model, api_key=api_key, base_url=base_url, price=price, timeout_s=timeout_s, **opts)
    adapter.extra_body_fields = pass_through
    return adapter


def _pass_through(fields: Any, provider: str) -> frozenset[str]:
    if fields is None:
        return frozenset()
    if isinstance(fields, str) or not isinstance(fields, (list, tuple, set, frozenset)) or not all(
            isinstance(f, str) and f for f in fields):
        raise InvalidInput(f"provider {provider!r}: pass_through must be a list of request body field names, "
                           f"got {fields!r}")
    reserved = sorted(set(fields) & _RESERVED_BODY)
    if reserved:
        raise InvalidInput(f"provider {provider!r}: pass_through may not name {', '.join(reserved)}: the adapter "
                           "writes those fields itself")
    return frozenset(fields)


def _simulated_options(opts: dict[str, Any], provider: str, model: str) -> dict[str, Any]:
    features = opts.pop("features", None)
    if isinstance(features, Mapping):  # per model id; a model not listed has every feature
        features = features.get(model)
    if features is not None:
        if isinstance(features, str) or not isinstance(features, (list, tuple, set, frozenset)):
            raise InvalidInput(f"provider {provider!r}: features must be a list, or a map of model id to a list")
        opts["features"] = features
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
