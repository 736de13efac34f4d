"""OpenAI-compatible servers (Mistral, vLLM, Ollama, gateways) through the `openai` SDK.

What differs between those servers is data, not code: one `CompatibleEndpoint` row each.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from adapters.base import Price
from adapters.errors import BadRequest, InvalidInput
from adapters.openai import OpenAIAdapter
from adapters.openai_wire import OPENAI_OPTIONS

__all__ = ["COMPATIBLE_OPTIONS", "ENDPOINTS", "CompatibleEndpoint", "OpenAICompatibleAdapter"]

COMPATIBLE_OPTIONS = OPENAI_OPTIONS - {"metadata"}
"""What a generic compatible server takes: OpenAI's surface but `metadata` (stored completions are OpenAI's)."""


@dataclass(frozen=True, slots=True)
class CompatibleEndpoint:
    """How one family of OpenAI-compatible servers departs from OpenAI.

    A subclass of `OpenAICompatibleAdapter` is only warranted when a server departs from the
    chat-completions wire format itself (other paths, other payload shapes); anything that is
    a different default, field name or range is a row here.

    Attributes:
        name: Row name, used as the `endpoint` option.
        base_url: Default base URL (None: the caller must give one).
        env_api_key: Environment variable holding the key, if the service has a conventional one.
        key_required: False for keyless local servers (a placeholder key is sent).
        max_tokens_field: Request field for the output bound.
        stream_usage_option: Whether to send `stream_options: {include_usage: true}` (strict
            servers reject unknown fields; the adapter estimates usage when none arrives).
        max_temperature: Upper bound of the accepted temperature.
        options: The request options (`Options.asked()` names) the servers take; any other is
            refused before the call.
        images: Whether the servers take image parts.
        seed_field: The servers' name for the sampling seed.
    """

    name: str
    base_url: str | None = None
    env_api_key: str | None = None
    key_required: bool = False
    max_tokens_field: str = "max_tokens"
    stream_usage_option: bool = True
    max_temperature: float = 2.0
    options: frozenset[str] = COMPATIBLE_OPTIONS
    images: bool = True
    seed_field: str = "seed"


ENDPOINTS: Mapping[str, CompatibleEndpoint] = {
    row.name: row
    for row in (
        CompatibleEndpoint("generic"),
        # Mistral sends usage in its last chunk unasked, validates request fields strictly, calls the
        # seed `random_seed` and has no `user` field
        CompatibleEndpoint(
            "mistral", base_url="https://api.mistral.ai/v1", env_api_key="MISTRAL_API_KEY", key_required=True,
            stream_usage_option=False, max_temperature=1.5, options=COMPATIBLE_OPTIONS - {"user"},
            seed_field="random_seed",
        ),
        CompatibleEndpoint("vllm"),
        # Ollama's compatibility layer has no parallel_tool_calls switch and ignores `user`
        CompatibleEndpoint("ollama", base_url="http://localhost:11434/v1",
                           options=COMPATIBLE_OPTIONS - {"parallel_tool_calls", "user"}),
    )
}
"""Known endpoint families by name."""


class OpenAICompatibleAdapter(OpenAIAdapter):
    """A server speaking OpenAI's `POST {base_url}/chat/completions`.

    Args:
        provider: Provider name.
        model: The server's model id.
        api_key: The key (or the endpoint row's environment variable).
        base_url: The server's base URL, e.g. `http://localhost:8000/v1` (required unless the row has one).
        price: USD per million tokens.
        timeout_s: Default attempt timeout.
        endpoint: A row of `ENDPOINTS` by name, or a `CompatibleEndpoint`.
        headers: Extra HTTP headers sent with every request.
        send_temperature: False for servers or models that reject a temperature.
    """

    kind = "openai_compatible"
    supported_options = COMPATIBLE_OPTIONS

    def __init__(
        self,
        provider: str,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        price: Price | None = None,
        timeout_s: float = 30.0,
        endpoint: str | CompatibleEndpoint = "generic",
        headers: Mapping[str, str] | None = None,
        send_temperature: bool = True,
    ) -> None:
        if isinstance(endpoint, str):
            if endpoint not in ENDPOINTS:
                raise InvalidInput(f"unknown endpoint {endpoint!r}; known: {', '.join(sorted(ENDPOINTS))}")
            endpoint = ENDPOINTS[endpoint]
        base_url = base_url or endpoint.base_url
        if not base_url:
            raise InvalidInput(
                f"provider {provider!r}: the openai_compatible adapter needs base_url (e.g. http://localhost:8000/v1)"
            )
        super().__init__(
            provider, model, api_key=api_key, base_url=base_url, price=price, timeout_s=timeout_s, headers=headers,
            send_temperature=send_temperature,
        )
        self.endpoint = endpoint
        self._env_key = endpoint.env_api_key
        self._key_required = endpoint.key_required
        self._max_tokens_field = endpoint.max_tokens_field
        self._stream_usage = endpoint.stream_usage_option
        self._max_temperature = endpoint.max_temperature
        self._seed_field = endpoint.seed_field
        self.supported_options = endpoint.options
        self.supports_images = endpoint.images

    async def _probe(self, timeout_s: float) -> None:
        # compatible servers (vLLM, Ollama, gateways) list their models; not all retrieve one
        page = await self._get_client().models.list(timeout=timeout_s)
        ids = [m.id async for m in page]
        if self.model not in ids:
            shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
            raise self._error(BadRequest, f"the server does not list model {self.model!r} (it lists: "
                              f"{shown or 'none'})", status=404)
