"""Exact cache hits without rebuilding the request: a memo from a call's raw arguments to its cache key.

A repeated request is, by definition, one the router has seen: same messages, same parameters,
same metadata. Everything its exact-cache lookup needs (the checked `Request`, its features, the
route its features match, the key, the decision-log fields that depend on the request alone) is a
pure function of those arguments and of the policy, which a `Router` never changes. So the Router
remembers, per argument fingerprint, what the first such request computed, and a repeat whose
entry is still stored skips `Request.of`, the features, the route match and the key hash.

Only plain calls get a fingerprint: a prompt or messages whose fields are all strings (OpenAI
dicts or `Message`s with text content), numeric parameters, scalar metadata, no options. Anything
else (tools, images, a response format, nested metadata) takes the full path, as before. The
fingerprint keeps each value's type beside it, so `temperature=0` and `temperature=False` (which
`Request.of` refuses) never share an entry, and it holds only immutable values (strings,
numbers), so a caller changing its own objects later cannot change what an entry means.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adapters.conversation import Conversation, Message

__all__ = ["HitMemo", "Known", "fingerprint"]

_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True, slots=True)
class Known:
    """What an exact hit of one fingerprint needs, computed once by the full path."""

    key: str
    """The response-cache key."""
    route: str | None
    """The route the request's features match (reported on the result and the log row)."""
    query_type: str
    """The request's query type (likewise)."""
    row: Mapping[str, Any]
    """Decision-log fields that depend on the request only (`Recorder.request_fields`)."""


def fingerprint(prompt: str | None, messages: Sequence[Any] | None, max_tokens: Any, temperature: Any,
                stop: Sequence[str] | None, meta: Mapping[str, Any] | None, model: str | None) -> Hashable | None:
    """A hashable, immutable summary of a plain call's arguments, or None when the call is not plain."""
    if prompt is not None:
        if type(prompt) is not str or messages is not None:
            return None
        msgs: Hashable | None = prompt
    else:
        msgs = _messages(messages)
        if msgs is None:
            return None
    if stop is None:
        stops: tuple[str, ...] | None = None
    elif type(stop) in (list, tuple) and all(type(s) is str for s in stop):
        stops = tuple(stop)
    else:
        return None
    if meta is not None and type(meta) is not dict:
        return None
    metas: tuple[Any, ...] = ()
    if meta:
        items = []
        for k, v in meta.items():
            if type(k) is not str or type(v) not in _SCALARS:
                return None
            items.append((k, type(v), v))
        metas = tuple(items)
    if model is not None and type(model) is not str:
        return None
    return (msgs, type(max_tokens), max_tokens, type(temperature), temperature, stops, metas, model)


def _messages(messages: Sequence[Any] | None) -> tuple[Any, ...] | None:
    if type(messages) not in (list, tuple, Conversation):
        return None
    out = []
    for m in messages:  # type: ignore[union-attr]
        t = type(m)
        if t is dict:
            for k, v in m.items():
                if type(k) is not str or type(v) is not str:
                    return None
            out.append(tuple(m.items()))
        elif t is Message:
            if type(m.content) is not str or m.tool_calls:
                return None
            out.append((Message, m.role, m.content, m.tool_call_id, m.name))
        else:
            return None
    return tuple(out)


class HitMemo:
    """Fingerprint -> `Known`, bounded (the oldest entry goes first), plus the decoded form of the
    cached values it has served, so that a memory-cache hit does not parse the same JSON again.

    Args:
        size: most fingerprints (and decoded values) kept.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._known: dict[Hashable, Known] = {}
        # cache key -> (the stored JSON text, its decoded value): reused while the text is the same
        self._values: dict[str, tuple[str, Mapping[str, Any]]] = {}

    def get(self, fp: Hashable) -> Known | None:
        """The entry for `fp`, if the full path has computed one."""
        return self._known.get(fp)

    def put(self, fp: Hashable, known: Known) -> None:
        """Remember `known` for `fp`."""
        if len(self._known) >= self._size and fp not in self._known:
            del self._known[next(iter(self._known))]
        self._known[fp] = known

    def value(self, key: str, raw: str, decode: Callable[[str], Mapping[str, Any]]) -> Mapping[str, Any]:
        """The decoded `raw` stored under `key`: decoded once per distinct text (callers only read it)."""
        seen = self._values.get(key)
        if seen is not None and (seen[0] is raw or seen[0] == raw):
            return seen[1]
        value = decode(raw)
        if len(self._values) >= self._size and key not in self._values:
            del self._values[next(iter(self._values))]
        self._values[key] = (raw, value)
        return value
