"""The fakes' deterministic answers to the request surface beyond text, whatever the vendor.

Each vendor's parser (tests/fakes/wire.py) extracts the neutral facts of a request (the tools
offered, the tool choice, the last turn, the output format, the image count) and calls
`answer`; its renderer turns the `Surface` into the vendor's JSON and SSE shapes.

    tools offered, choice not "none", last turn not a tool result
        -> call the first tool (or the named one); the first two when the last user text says
           "parallel", parallel calls are not off and there are >= 2 tools
    last turn a tool result      -> "Tool <name> returned: <result text>"
    json_object                  -> {"echo": <last user text>}
    json_schema                  -> an object built from the schema (`args_for`)
    images                       -> the text ends with " [images: N]"
    otherwise                    -> None: the echo answer

Arguments built from a schema: every property in `required` (else every property); string
"x" (or the first `enum` value), integer 1, number 1.5, boolean true, array [], object {}
recursing into nested `properties`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Surface", "ToolOffer", "answer", "args_for"]

_PARALLEL = re.compile(r"\bparallel\b", re.I)


@dataclass(frozen=True, slots=True)
class ToolOffer:
    """A tool as the request offered it: its name and its parameters' JSON Schema."""

    name: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Surface:
    """What the fake answers instead of the echo: tool calls, or a text.

    Attributes:
        calls: (tool name, arguments as compact JSON text), in order; empty for a text answer.
        text: The answer's text when it is not the echo (None: the echo, images suffix aside).
        images: Images in the request (the text gets " [images: N]").
    """

    calls: tuple[tuple[str, str], ...] = ()
    text: str | None = None
    images: int = 0


def args_for(schema: Mapping[str, Any] | None, defs: Mapping[str, Any] | None = None) -> Any:
    """A value valid for `schema` (an object schema gives a dict), by the rules above.

    Follows local `$ref`s (`#/$defs/...`, `#/definitions/...`) and takes the first non-null
    branch of `anyOf` / `oneOf`, as pydantic's schemas need.
    """
    if not isinstance(schema, Mapping):
        return {}
    root_defs = defs if defs is not None else {**schema.get("definitions", {}), **schema.get("$defs", {})}
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return args_for(root_defs.get(ref.rsplit("/", 1)[-1], {}), root_defs)
    for key in ("anyOf", "oneOf", "allOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            pick = next((b for b in branches if not (isinstance(b, Mapping) and b.get("type") == "null")), branches[0])
            return args_for(pick, root_defs)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None and "properties" in schema:
        kind = "object"
    scalar = {"string": "x", "integer": 1, "number": 1.5, "boolean": True, "null": None}
    if kind in scalar:
        return scalar[kind]
    if kind == "array":
        return []
    props = schema.get("properties")
    if not isinstance(props, Mapping):
        return {}
    required = schema.get("required")
    names = [n for n in required if n in props] if isinstance(required, list) and required else list(props)
    return {n: args_for(props[n], root_defs) for n in names}


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def answer(
    *,
    tools: Sequence[ToolOffer] = (),
    choice: str | None = None,
    parallel: bool | None = None,
    last_user: str = "",
    tool_result: tuple[str, str] | None = None,
    output: str | None = None,
    schema: Mapping[str, Any] | None = None,
    images: int = 0,
) -> Surface | None:
    """The fake's answer, or None for the plain echo.

    Args:
        tools: The tools offered, in order.
        choice: "auto" (or None), "none", "required", or the name of a forced tool.
        parallel: The request's parallel-tool-calls switch (None: not given).
        last_user: The last user message's text.
        tool_result: (tool name, result text) when the last turn is a tool result.
        output: None / "text", "json_object" or "json_schema".
        schema: The JSON schema of a json_schema output.
        images: How many images the request holds.
    """
    if tools and choice != "none" and tool_result is None:
        by_name = {t.name: t for t in tools}
        if choice in by_name and choice not in ("auto", "required"):
            chosen = [by_name[choice]]
        elif _PARALLEL.search(last_user) and parallel is not False and len(tools) >= 2:
            chosen = list(tools[:2])
        else:
            chosen = [tools[0]]
        return Surface(tuple((t.name, _json(args_for(t.parameters))) for t in chosen), None, images)
    text: str | None = None
    if tool_result is not None:
        text = f"Tool {tool_result[0]} returned: {tool_result[1]}"
    elif output == "json_object":
        text = _json({"echo": last_user})
    elif output == "json_schema":
        text = _json(args_for(schema))
    if text is None and not images:
        return None
    return Surface((), text, images)
