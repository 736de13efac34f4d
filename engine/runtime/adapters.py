"""One adapter per model, built on first use so vendor SDKs load only when needed."""

from __future__ import annotations

from collections.abc import Mapping

from adapters.base import LLMAdapter, Price
from engine.policy.model import Model, Policy


class AdapterPool:
    """Adapters by model name; overrides (tests, apps with their own clients) win."""

    def __init__(self, policy: Policy, overrides: Mapping[str, LLMAdapter] | None = None) -> None:
        self._policy = policy
        self._adapters: dict[str, LLMAdapter] = dict(overrides or {})

    def preload(self) -> None:
        """Build every adapter of the policy and import the SDKs they will use (seconds on a busy
        machine). Meant for a thread that prepares a router before it goes live."""
        import importlib

        for model in self._policy.models.values():
            try:
                modules = self.get(model).sdk_modules
            except Exception:
                continue
            for module in modules:
                importlib.import_module(module)

    def get(self, model: Model) -> LLMAdapter:
        """The adapter serving `model`, created the first time it is asked for."""
        adapter = self._adapters.get(model.name)
        if adapter is None:
            from adapters.registry import build_adapter

            p = self._policy.providers[model.provider]
            adapter = build_adapter(
                p.adapter, provider=p.name, model=model.id, api_key=p.api_key, base_url=p.base_url,
                timeout_s=p.timeout_s, price=Price(model.price.input, model.price.output), options=p.options)
            self._adapters[model.name] = adapter
        return adapter

    def built(self) -> Mapping[str, LLMAdapter]:
        """Adapters created so far."""
        return dict(self._adapters)

    async def aclose(self) -> None:
        """Close every adapter's client."""
        for a in self._adapters.values():
            await a.aclose()
