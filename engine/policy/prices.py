"""Prices and context windows from a maintained catalogue: `genai-prices` (pydantic's).

A model may say `price: auto` and may leave out `context_window`; the policy is then completed
at load time from the catalogue bundled with the installed `genai-prices` (no network: its
bundled snapshot, never its auto-update). What the policy states always wins. Each price and
window remembers where it came from (`Price.source`, `Model.context_window_source`), which
`engine explain` prints, and `catalogue_diagnostics` reports what neither could supply:
an unknown price is a warning (the model counts as free for cost estimates, `max_cost_usd` and
cost quotas), an unknown context window an error.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.policy.diagnostics import Diagnostic
    from engine.policy.load import Located
    from engine.policy.model import Policy

__all__ = ["POLICY", "UNKNOWN", "CatalogueEntry", "catalogue_diagnostics", "catalogue_version", "lookup",
           "price_sources"]

POLICY = "policy"
"""Source of a value the policy file states."""
UNKNOWN = "unknown"
"""Source of a value neither the policy nor the catalogue has."""

# genai-prices' provider id for each adapter kind; OpenAI-compatible hosts by their endpoint row
_PROVIDER_IDS = {"openai": "openai", "anthropic": "anthropic", "gemini": "google"}
_COMPATIBLE_IDS = {"mistral": "mistral", "groq": "groq", "together": "together", "fireworks": "fireworks",
                   "deepseek": "deepseek", "openrouter": "openrouter", "xai": "x-ai"}
# prices are read for this many tokens: a small prompt, below every long-context tier
_PROBE_TOKENS = 1000


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    """What the catalogue knows of one model.

    Attributes:
        input: USD per million input tokens (the base tier: short prompts).
        output: USD per million output tokens.
        context_window: largest input in tokens, when the catalogue has it.
        source: where the figures come from, e.g. `genai-prices 0.2.3: openai/gpt-4o-mini`.
    """

    input: float
    output: float
    context_window: int | None
    source: str


@lru_cache(maxsize=1)
def catalogue_version() -> str | None:
    """The installed genai-prices version, or None when it is not installed."""
    try:
        return importlib.metadata.version("genai-prices")
    except importlib.metadata.PackageNotFoundError:
        return None


def _provider_id(adapter: str, options: Mapping[str, Any]) -> str | None:
    if adapter == "openai_compatible":
        return _COMPATIBLE_IDS.get(str(options.get("endpoint", "")))
    return _PROVIDER_IDS.get(adapter)


@lru_cache(maxsize=1024)
def _lookup(model_id: str, provider_id: str | None) -> CatalogueEntry | None:
    from genai_prices import Usage, calc_price

    try:
        got = calc_price(Usage(input_tokens=_PROBE_TOKENS), model_id, provider_id=provider_id)
        out = calc_price(Usage(output_tokens=_PROBE_TOKENS), model_id, provider_id=provider_id)
    except LookupError:
        return None
    scale = Decimal(1_000_000 // _PROBE_TOKENS)
    where = f"{got.provider.id}/{got.model.id}"
    return CatalogueEntry(input=float(got.total_price * scale), output=float(out.total_price * scale),
                          context_window=got.model.context_window,
                          source=f"genai-prices {catalogue_version()}: {where}")


def lookup(model_id: str, adapter: str, options: Mapping[str, Any] | None = None) -> CatalogueEntry | None:
    """The catalogue's entry for a vendor model id, or None (unknown, or genai-prices not installed).

    Args:
        model_id: the vendor's id (`gpt-4o-mini`, `claude-haiku-4-5`, `gemini-2.5-flash`).
        adapter: the provider's adapter kind, which names the catalogue's provider.
        options: the provider's options (`endpoint` of an OpenAI-compatible host).
    """
    if catalogue_version() is None or adapter == "simulated":
        return None
    return _lookup(model_id, _provider_id(adapter, options or {}))


def catalogue_diagnostics(policy: Policy, loc: Located) -> list[Diagnostic]:
    """What the catalogue could not complete: unknown prices (warnings) and windows (errors)."""
    out: list[Diagnostic] = []
    hint = ("genai-prices is not installed (pip install genai-prices)" if catalogue_version() is None
            else f"genai-prices {catalogue_version()} does not list it")
    for name, m in policy.models.items():
        if m.price.source == UNKNOWN:
            out.append(loc.diag("price-unknown", f"model {name!r} (id {m.id!r}) has price: auto but {hint}: it "
                                "counts as free for cost estimates, max_cost_usd and cost quotas; give "
                                "price: {input, output}", ("models", name, "price"), severity="warning"))
        if m.context_window_source == UNKNOWN:
            out.append(loc.diag("context-window-unknown", f"model {name!r} (id {m.id!r}) has no context_window and "
                                f"{hint}: give context_window", ("models", name), severity="error"))
    return out


def price_sources(policy: Policy) -> dict[str, dict[str, Any]] | None:
    """Each model's price and context window with where they came from, or None when the policy
    states them all (`engine explain` then has nothing to add)."""
    models = policy.models.values()
    if all(m.price.source == POLICY and m.context_window_source == POLICY for m in models):
        return None
    return {m.name: {"input": m.price.input, "output": m.price.output, "price_source": m.price.source,
                     "context_window": m.context_window or None, "context_window_source": m.context_window_source}
            for m in models}
