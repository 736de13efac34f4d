"""Requests and the features the policy reads from them.

Everything here is cheap and local: a token estimate without a tokenizer, precompiled
regex/keyword signals, expression signals, the built-in classifier (only when a signal asks
for it), and the ordered `query_types` rules.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.errors import RequestError
from engine.policy.expr import Expr, make_env
from engine.policy.model import Signal

ROLES = ("system", "user", "assistant", "tool")
MAX_SCAN_CHARS = 200_000
"""Regex and keyword signals look at this many characters of the prompt at most, which
bounds the cost of a pathological pattern on a huge input."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """What the caller asks for, before any routing.

    Attributes:
        messages: (role, content) pairs; a plain prompt is one user message.
        max_tokens: output budget.
        temperature: sampling temperature.
        stream: whether the caller wants a stream.
        meta: request metadata (tenant, key, tier, user...), visible as `meta.KEY`.
        has_tools: the request declares tools.
        has_images: the request carries images.
        stop: stop sequences.
    """

    messages: tuple[tuple[str, str], ...]
    max_tokens: int = 1000
    temperature: float = 0.7
    stream: bool = False
    meta: Mapping[str, Any] = field(default_factory=dict)
    has_tools: bool = False
    has_images: bool = False
    stop: tuple[str, ...] = ()

    @classmethod
    def of(cls, prompt: str | None = None, *, messages: Sequence[Any] | None = None, max_tokens: int = 1000,
           temperature: float = 0.7, stream: bool = False, meta: Mapping[str, Any] | None = None,
           has_tools: bool = False, has_images: bool = False, stop: Sequence[str] | None = None) -> Request:
        """Build and check a request from a prompt or chat messages.

        `messages` may hold (role, content) pairs, dicts with `role`/`content`, or objects
        with `role` and `content` attributes.

        Raises:
            RequestError: empty prompt, unknown role, max_tokens <= 0, temperature < 0.
        """
        if (prompt is None) == (messages is None):
            raise RequestError("give exactly one of prompt or messages")
        if prompt is not None:
            if not isinstance(prompt, str):
                raise RequestError(f"prompt must be a string, got {type(prompt).__name__}")
            msgs: tuple[tuple[str, str], ...] = (("user", prompt),)
        else:
            msgs = tuple(_message(m, i) for i, m in enumerate(messages or ()))
        if not msgs:
            raise RequestError("messages is empty")
        if not any(role != "system" and content.strip() for role, content in msgs):
            raise RequestError("prompt is empty: there is no non-blank user or assistant message")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0:
            raise RequestError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
            raise RequestError(f"temperature must be between 0 and 2, got {temperature!r}")
        return cls(messages=msgs, max_tokens=max_tokens, temperature=float(temperature), stream=stream,
                   meta=dict(meta or {}), has_tools=has_tools, has_images=has_images, stop=tuple(stop or ()))

    @property
    def last_user_text(self) -> str:
        """The text the user asked for last: what signals and the classifier look at."""
        for role, content in reversed(self.messages):
            if role == "user":
                return content
        return self.messages[-1][1]

    @property
    def has_system(self) -> bool:
        """Whether a system message is present."""
        return any(role == "system" for role, _ in self.messages)


def _message(m: Any, i: int) -> tuple[str, str]:
    if isinstance(m, Mapping):
        role, content = m.get("role"), m.get("content")
    elif isinstance(m, (tuple, list)) and len(m) == 2:
        role, content = m
    else:
        role, content = getattr(m, "role", None), getattr(m, "content", None)
    if role not in ROLES:
        raise RequestError(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
    if not isinstance(content, str):
        raise RequestError(f"messages[{i}].content must be a string, got {type(content).__name__}")
    return str(role), content


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


def count_prompt_tokens(messages: Sequence[tuple[str, str]]) -> int:
    """Estimated input tokens of a chat, with the few tokens of framing each message costs."""
    return sum(estimate_tokens(c) + 4 for _, c in messages)


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
            "meta": {str(k): v for k, v in self.meta.items()},
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
