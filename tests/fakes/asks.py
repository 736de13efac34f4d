"""What a request asks of the fake model beyond text, read vendor-neutrally, and the fixed answer.

The fakes' deterministic behaviour for tools, tool results, JSON output and images (the same
rules the simulated adapter follows):

- tools offered, tool choice not `none`, last message not a tool result: call the first tool
  (or the named one); when the last user text contains the word "parallel", parallel calls
  are allowed and there are >= 2 tools (none named), call the first two. Arguments come from
  the tool's parameter schema (`args_from_schema`).
- last message a tool result: `Tool <name> returned: <result text>`.
- json_object: `{"echo": <last user text>}`; json_schema: an object built from the schema.
- images: a text answer ends with ` [images: N]`.
- otherwise the echo (`Echo from MODEL: <last user message>`), as `wire.make_reply` gives it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["Answer", "Ask", "answer", "args_from_schema", "halves"]

_PARALLEL = re.compile(r"\bparallel\b", re.I)


def args_from_schema(schema: Any) -> Any:
    """A value valid for a (simple) JSON Schema: every `required` property (else every
    property), string "x" (or the first enum value), integer 1, number 1.5, boolean true,
    array [], object {} with its own properties filled the same way."""
    if not isinstance(schema, dict):
        return {}
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if isinstance(kind, list):  # ["string", "null"]
        kind = next((k for k in kind if k != "null"), "null")
    kind = str(kind).lower()  # Gemini's OpenAPI-style schemas say STRING, OBJECT, ...
    if kind == "object":
        props = schema.get("properties") or {}
        names = schema.get("required") or list(props)
        return {n: args_from_schema(props.get(n, {})) for n in names}
    return {"string": "x", "integer": 1, "number": 1.5, "boolean": True, "array": [], "null": None}.get(kind, "x")


@dataclass(frozen=True, slots=True)
class Ask:
    """The parts of a request the surface rules look at, whatever the vendor."""

    tools: tuple[tuple[str, Any], ...] = ()  # (name, parameter schema), in order
    choice: str = "auto"  # auto | none | required | tool
    forced: str | None = None  # the named tool when choice == "tool"
    parallel: bool = True  # parallel calls allowed
    tool_result: tuple[str, str] | None = None  # (tool name, result text) when the last turn is a result
    output: str = "text"  # text | json_object | json_schema
    schema: Any = None
    images: int = 0


@dataclass(frozen=True, slots=True)
class Answer:
    """The fake model's answer: tool calls (name, arguments object), or a text.

    `text` None means the plain echo; `json` answers are never cut; `suffix` ends a text answer.
    """

    calls: tuple[tuple[str, Any], ...] = ()
    text: str | None = None
    json: bool = False
    suffix: str = ""


def answer(ask: Ask, last_user: str) -> Answer:
    """The answer the surface rules give to `ask` (`last_user`: the last user message's text)."""
    if ask.tools and ask.choice != "none" and ask.tool_result is None:
        schemas = dict(ask.tools)
        if ask.forced is not None and ask.forced in schemas:
            names = [ask.forced]
        elif ask.parallel and len(ask.tools) >= 2 and _PARALLEL.search(last_user):
            names = [ask.tools[0][0], ask.tools[1][0]]
        else:
            names = [ask.tools[0][0]]
        return Answer(calls=tuple((n, args_from_schema(schemas[n])) for n in names))
    if ask.output == "json_object":
        return Answer(text=json.dumps({"echo": last_user}), json=True)
    if ask.output == "json_schema":
        return Answer(text=json.dumps(args_from_schema(ask.schema)), json=True)
    suffix = f" [images: {ask.images}]" if ask.images else ""
    if ask.tool_result is not None:
        name, result = ask.tool_result
        return Answer(text=f"Tool {name} returned: {result}", suffix=suffix)
    return Answer(suffix=suffix)


def halves(text: str) -> list[str]:
    """`text` in two non-empty fragments (streamed tool arguments arrive split)."""
    if len(text) < 2:
        return [text]
    mid = len(text) // 2
    return [text[:mid], text[mid:]]
