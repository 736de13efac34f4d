"""What the router hands back: a completion plus how it was obtained."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapters.base import TextDelta
from adapters.conversation import ToolCall, ToolCallDelta


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutedCompletion:
    """A served request.

    Attributes:
        text: the generated text.
        model: the policy's model name that served it (e.g. `gpt-4o-mini`).
        model_id: the vendor's model id.
        provider: the provider name from the policy.
        finish_reason: `stop`, `length`, `tool_calls`, `content_filter` or `other`.
        input_tokens: input tokens billed for the successful attempt.
        output_tokens: output tokens billed for the successful attempt.
        cost_usd: cost of every attempt of this request (0 for a cache hit).
        latency_ms: wall time of the whole request.
        attempts: calls made, retries included (0 for a cache hit).
        fallbacks: models tried beyond the first.
        cached: served from the response cache.
        route: the route that matched.
        query_type: the classified query type.
        request_id: id of the row in the decision log.
        downgraded: a `downgrade` quota changed the plan.
        tool_calls: the tool calls the model made (arguments as JSON text; `.args()` parses).
        cache_kind: how a cached result was found: `exact` or `semantic` (None when not cached).
        similarity: cosine similarity to the cached prompt, for a `semantic` hit.
    """

    text: str
    model: str
    model_id: str
    provider: str
    finish_reason: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: float
    attempts: int
    fallbacks: int
    cached: bool
    route: str | None
    query_type: str
    request_id: str
    downgraded: bool = False
    tool_calls: tuple[ToolCall, ...] = ()
    cache_kind: str | None = None
    similarity: float | None = None

    def cache_value(self) -> dict[str, Any]:
        """The part worth caching (routing facts are re-derived on each hit)."""
        value: dict[str, Any] = {
            "text": self.text, "model": self.model, "model_id": self.model_id, "provider": self.provider,
            "finish_reason": self.finish_reason, "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens}
        if self.tool_calls:
            value["tool_calls"] = [[c.id, c.name, c.arguments] for c in self.tool_calls]
        return value


@dataclass(frozen=True, slots=True)
class RoutedDelta(TextDelta):
    """A piece of a stream from `Router.stream`, naming the model that produced it.

    It is an `adapters.TextDelta`, so code that only wants `.text` need not care; a service
    uses `model` to label its first chunk before the stream ends, and `request_id` (the
    decision log's id of the request) to name the stream before its row is written. A
    tool-call fragment comes as `text == ""` with `tool_call` set (index, id and name on its
    first delta, then argument fragments).
    """

    model: str
    tool_call: ToolCallDelta | None = None
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class StreamDone:
    """Last event of `Router.stream`: the whole completion, as `generate` would return it."""

    result: RoutedCompletion
