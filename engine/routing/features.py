"""Requests and the features the policy reads from them.

Everything here is cheap and local: a token estimate without a tokenizer, precompiled
regex/keyword signals, expression signals, the built-in classifier (only when a signal asks
for it), and the ordered `query_types` rules.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from adapters.conversation import (
    NO_OPTIONS,
    Conversation,
    Message,
    Options,
    coerce_messages,
    needed_features,
    options_of,
)
from adapters.errors import InvalidInput
from engine.errors import RequestError
from engine.policy.expr import Expr, make_env
from engine.policy.model import Signal

if TYPE_CHECKING:
    from engine.policy.model import Model
    from engine.routing.tokens import PromptTokens

ROLES = ("system", "user", "assistant", "tool")
MAX_SCAN_CHARS = 200_000
"""Regex and keyword signals look at this many characters of the prompt at most, which
bounds the cost of a pathological pattern on a huge input."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """What the caller asks for, before any routing.

    Attributes:
        messages: the conversation (`adapters.conversation.Message`s); a plain prompt is one
            user message.
        max_tokens: output budget.
        temperature: sampling temperature.
        stream: whether the caller wants a stream.
        meta: request metadata (tenant, key, tier, user...), visible as `meta.KEY`.
        options: tools, tool choice, output format and sampling beyond temperature.
        has_tools: the request declares tools or carries tool calls (derived; `explain` and
            `engine test` may also state it).
        has_images: the request carries images (likewise).
        stop: stop sequences.
        request_id: seeds the random order inside model groups, so a dry run with the same id
            repeats the live order.
        prompt_tokens: a stated input size that replaces the estimate (`explain`, `engine test`).
        prompt_tokens_at_least: a floor on the estimate (likewise).
    """

    messages: tuple[Message, ...]
    max_tokens: int = 1000
    temperature: float = 0.7
    stream: bool = False
    meta: Mapping[str, Any] = field(default_factory=dict)
    options: Options = NO_OPTIONS
    has_tools: bool = False
    has_images: bool = False
    stop: tuple[str, ...] = ()
    request_id: str = ""
    prompt_tokens: int | None = None
    prompt_tokens_at_least: int = 0
    stated_needs: frozenset[str] = frozenset()
    """Needs stated without the content that implies them (`engine test` `needs:`)."""

    @classmethod
    def of(cls, prompt: str | None = None, *, messages: Sequence[Any] | None = None, max_tokens: int = 1000,
           temperature: float = 0.7, stream: bool = False, meta: Mapping[str, Any] | None = None,
           has_tools: bool = False, has_images: bool = False, stop: Sequence[str] | None = None,
           options: Options | None = None, request_id: str = "", prompt_tokens: int | None = None,
           prompt_tokens_at_least: int = 0, **surface: Any) -> Request:
        """Build and check a request from a prompt or chat messages.

        `messages` may hold `Message`s, (role, content) pairs, or OpenAI-shaped dicts (text and
        image parts, assistant tool calls, tool results). The rest of the request surface
        comes as `options` or as OpenAI-style keywords (`tools`, `tool_choice`,
        `parallel_tool_calls`, `response_format`, `top_p`, `seed`, `presence_penalty`,
        `frequency_penalty`, `user`, `metadata`, `extra_body`).

        Raises:
            RequestError: empty prompt, unknown role, a tool result for no call, a malformed
                part, tool or option, max_tokens <= 0, temperature outside 0..2.
        """
        if (prompt is None) == (messages is None):
            raise RequestError("give exactly one of prompt or messages")
        try:
            if prompt is not None:
                if not isinstance(prompt, str):
                    raise RequestError(f"prompt must be a string, got {type(prompt).__name__}")
                if not prompt.strip():
                    raise RequestError("prompt is empty: there is no non-blank user or assistant message")
                msgs: tuple[Message, ...] = Conversation((Message("user", prompt),))
            else:
                msgs = coerce_messages(messages or ())
            opts = options_of(options, surface)
        except InvalidInput as e:
            raise RequestError(str(e)) from None
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0:
            raise RequestError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
            raise RequestError(f"temperature must be between 0 and 2, got {temperature!r}")
        for name, n in (("prompt_tokens", prompt_tokens), ("prompt_tokens_at_least", prompt_tokens_at_least)):
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
                raise RequestError(f"{name} must be a non-negative integer, got {n!r}")
        needs = needed_features(msgs, opts)
        return cls(messages=msgs, max_tokens=max_tokens, temperature=float(temperature), stream=stream,
                   meta=dict(meta or {}), options=opts, has_tools=has_tools or "tools" in needs,
                   has_images=has_images or "vision" in needs, stop=tuple(stop or ()), request_id=request_id,
                   prompt_tokens=prompt_tokens, prompt_tokens_at_least=prompt_tokens_at_least)

    @property
    def needs(self) -> frozenset[str]:
        """Model features this request needs (`tools`, `vision`, `json`, `json_schema`, `streaming`)."""
        need = set(needed_features(self.messages, self.options, stream=self.stream))
        # explain and policy tests may state a need without carrying the content
        need.update(self.stated_needs)
        if self.has_tools:
            need.add("tools")
        if self.has_images:
            need.add("vision")
        return frozenset(need)

    @property
    def last_user_text(self) -> str:
        """The text the user asked for last: what signals and the classifier look at."""
        for m in reversed(self.messages):
            if m.role == "user":
                return m.text
        return self.messages[-1].text

    @property
    def has_system(self) -> bool:
        """Whether a system message is present."""
        return any(m.role == "system" for m in self.messages)


def estimate_tokens(text: str) -> int:
    """Fast token estimate: ~4 characters per token for Latin text, ~1 per CJK character.

    Counted from the UTF-8 length so no per-character Python loop runs: each non-ASCII
    character adds 1-3 bytes, and scripts that use them tokenize densely.
    """
    n = len(text)
    extra = len(text.encode("utf-8", "surrogatepass")) - n
    if extra == 0:
        return (n + 3) // 4
    # roughly: 2-byte scripts (Cyrillic, Greek, Hebrew, Arabic) ~2 chars/token, 3-byte (CJK) ~1
    wide = extra / 2
    return int((n - wide) / 4 + wide + 0.999)


def count_prompt_tokens(messages: Sequence[Message], options: Options = NO_OPTIONS) -> int:
    """Estimated input tokens of a chat, with the few tokens of framing each message costs,
    plus tool calls, tool definitions, output schemas and images (a fixed mid-size guess each)."""
    total = 0
    for m in messages:
        total += estimate_tokens(m.text) + 4
        for c in m.tool_calls:
            total += estimate_tokens(c.name) + estimate_tokens(c.arguments)
        total += IMAGE_TOKENS * len(m.images)
    if options.tools:
        total += sum(estimate_tokens(t.name) + estimate_tokens(t.description) + estimate_tokens(
            json.dumps(t.parameters)) for t in options.tools)
    if options.output is not None and options.output.schema is not None:
        total += estimate_tokens(json.dumps(options.output.schema))
    return total


IMAGE_TOKENS = 765
"""Input tokens counted per image: what vendors bill a mid-size image (it is not decoded here)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Features:
    """What expressions see for one request (POLICY.md, "Request features")."""

    prompt_tokens: int
    max_tokens: int
    temperature: float
    stream: bool
    has_tools: bool
    has_images: bool
    has_system: bool
    query_type: str
    signals: Mapping[str, bool]
    meta: Mapping[str, Any]
    needs: frozenset[str] = frozenset()
    """Model features the request needs (`tools`, `vision`, `json`, `json_schema`, `streaming`)."""
    request_id: str = ""
    """Seeds the order inside model groups (see `Request.request_id`)."""
    prompt_tokens_stated: bool = False
    """The request stated its size (`Request.prompt_tokens`): nothing is counted."""
    tokens: PromptTokens | None = field(default=None, compare=False, repr=False)
    """Exact counts for models with a tokenizer (`engine.routing.tokens`); None: every model uses
    `prompt_tokens` (the policy has no such model, or the request stated its size)."""

    def prompt_tokens_for(self, model: Model) -> int:
        """The prompt size `model` is checked and priced with: the exact count of its encoding
        when one was made for this request, else `prompt_tokens` (which expressions see)."""
        enc = model.tokenizer
        if enc is None or self.tokens is None:
            return self.prompt_tokens
        return self.tokens.used(enc)

    def tokens_source(self, model: Model) -> str:
        """What produced `prompt_tokens_for(model)`: `stated`, `cl100k_base via tiktoken`, or
        `estimate` (saying why when an exact count was wanted and cannot be made)."""
        if self.prompt_tokens_stated:
            return "stated"
        enc = model.tokenizer
        if enc is None or self.tokens is None:
            return "estimate"
        return self.tokens.source(enc)

    def env(self) -> Mapping[str, Any]:
        """Flat names for expression evaluation (`meta.tier`, `signals.has_code`...)."""
        env: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens, "max_tokens": self.max_tokens, "temperature": self.temperature,
            "stream": self.stream, "has_tools": self.has_tools, "has_images": self.has_images,
            "has_system": self.has_system, "query_type": self.query_type,
        }
        for k, v in self.signals.items():
            env["signals." + k] = v
        for k, v in self.meta.items():
            env["meta." + str(k)] = v
        return make_env(env)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view for explain output and the decision log."""
        return {
            "prompt_tokens": self.prompt_tokens, "max_tokens": self.max_tokens, "temperature": self.temperature,
            "stream": self.stream, "has_tools": self.has_tools, "has_images": self.has_images,
            "has_system": self.has_system, "query_type": self.query_type, "signals": dict(self.signals),
            "meta": {str(k): v for k, v in self.meta.items()}, "needs": sorted(self.needs),
        }


class SignalMatcher:
    """One compiled signal."""

    __slots__ = ("name", "_regex", "_when", "_label", "_similar")

    def __init__(self, signal: Signal, when: Expr | None) -> None:
        self.name = signal.name
        self._label = signal.classify
        self._similar: Any = None
        if signal.similar_to:  # loads the embedder on first use, not here: `engine validate` stays fast
            from engine.semantic.similar import SimilarTo

            self._similar = SimilarTo(signal.similar_to, signal.similar_threshold)
        self._when = when
        patterns = list(signal.regex)
        if signal.keywords:
            patterns.append(keywords_pattern(signal.keywords))
        self._regex = re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None

    @property
    def needs_classifier(self) -> bool:
        """Whether this signal asks the built-in classifier."""
        return self._label is not None

    def prepare(self, text: str) -> None:
        """Do this signal's slow part for `text` ahead of `decide` (a `similar_to` signal embeds it);
        blocking, for a worker thread. Other signals have nothing to prepare."""
        if self._similar is not None:
            self._similar.prepare(text)

    @property
    def embeds(self) -> bool:
        """Whether this signal embeds the prompt (a `similar_to` signal)."""
        return self._similar is not None

    def __call__(self, text: str, env: Mapping[str, Any], label: str | None) -> bool:
        if self._regex is not None:
            return self._regex.search(text, 0, MAX_SCAN_CHARS) is not None
        if self._label is not None:
            return label == self._label
        if self._similar is not None:
            return bool(self._similar(text))
        assert self._when is not None
        return safe_truth(self._when, env)


def keywords_pattern(keywords: Sequence[str]) -> str:
    """Whole-word, case-insensitive alternation; CJK keywords match anywhere (no word breaks)."""
    parts = []
    for kw in keywords:
        esc = re.escape(kw)
        if any(unicodedata.east_asian_width(ch) in ("W", "F") for ch in kw):
            parts.append(esc)
        else:
            parts.append(rf"(?<!\w){esc}(?!\w)")
    return "(?i:" + "|".join(parts) + ")"


def safe_truth(expr: Expr, env: Mapping[str, Any]) -> bool:
    """Truth of `expr`; an evaluation error (e.g. `None > 3`) counts as false."""
    try:
        return bool(expr.evaluate(env))
    except Exception:
        return False
