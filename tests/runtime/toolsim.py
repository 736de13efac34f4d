"""A simulated model with the whole request surface, for the runtime's own tests.

`ToolSim` is the `simulated` adapter (scripted failures, call counts, the base adapter's
validation and refusal of what a model cannot honour) answering tool calls, tool results,
JSON output and images the way the shared behaviour spec of the fakes says (see
`tests/fakes`): it calls the first offered tool (the forced one, or the first two when the
last user text says "parallel"), with arguments built from the tool's schema; it answers a
tool result with `Tool <name> returned: <text>`; JSON output is `{"echo": ...}` or built from
the schema; images add ` [images: N]`. Streams split each call's arguments into two fragments.

The runtime tests use it so that they do not depend on which adapters of a given branch
already map tools; `test_surface_e2e.py` runs the same flows over the shipped simulated
adapter and the wire fakes.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

from adapters.base import Price, Reply, Request, Usage
from adapters.conversation import ToolCall, ToolCallDelta
from adapters.simulated import SimulatedAdapter
from adapters.tokens import estimate_messages_tokens, estimate_tokens
from engine.policy.model import Policy

ALL_OPTIONS = frozenset({"tools", "tool_choice", "parallel_tool_calls", "response_format", "top_p", "seed",
                         "presence_penalty", "frequency_penalty", "user", "metadata"})


def args_for(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments valid for an object schema, as the fakes build them."""
    props: Mapping[str, Any] = schema.get("properties") or {}
    names = schema.get("required") or list(props)
    return {name: _value(props.get(name) or {}) for name in names}


def _value(s: Mapping[str, Any]) -> Any:
    if "enum" in s:
        return s["enum"][0]
    kind = s.get("type")
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return args_for(s)
    return "x"


class ToolSim(SimulatedAdapter):
    """`SimulatedAdapter` that also honours tools, JSON output and images (see the module docstring)."""

    supported_options = ALL_OPTIONS
    supports_images = True

    def _answer(self, request: Request, text: str) -> tuple[str, tuple[ToolCall, ...], str]:
        """(text, tool calls, finish reason) for a request, per the behaviour spec."""
        opts = request.options
        msgs = request.messages
        last = msgs[-1]
        choice = opts.tool_choice
        if opts.tools and (choice is None or choice.mode != "none") and last.role != "tool":
            tools = list(opts.tools)
            if choice is not None and choice.mode == "tool":
                tools = [t for t in tools if t.name == choice.name]
            last_user = next((m.text for m in reversed(msgs) if m.role == "user"), "")
            n = 2 if ("parallel" in last_user.split() and opts.parallel_tool_calls is not False
                      and len(tools) >= 2) else 1
            calls = tuple(ToolCall(f"call_{i + 1}", t.name, json.dumps(args_for(t.parameters)))
                          for i, t in enumerate(tools[:n]))
            return "", calls, "tool_calls"
        if last.role == "tool":
            name = last.name or next((c.name for m in msgs for c in m.tool_calls if c.id == last.tool_call_id), "")
            return f"Tool {name} returned: {last.text}", (), "stop"
        out = opts.output
        if out is not None and out.type == "json_object":
            last_user = next((m.text for m in reversed(msgs) if m.role == "user"), "")
            return json.dumps({"echo": last_user}), (), "stop"
        if out is not None and out.type == "json_schema":
            return json.dumps(args_for(out.schema or {})), (), "stop"
        images = sum(len(m.images) for m in msgs)
        return (f"{text} [images: {images}]" if images else text), (), "stop"

    def _usage_of(self, request: Request, text: str, calls: tuple[ToolCall, ...], finish: str) -> Usage:
        out = estimate_tokens(text) + sum(estimate_tokens(c.name + c.arguments) for c in calls)
        return Usage(finish, estimate_messages_tokens(m.text for m in request.messages), out)

    async def _complete(self, request: Request) -> Reply:
        plan = self._plan(request)
        await self._wait(plan, request)
        if plan.error is not None:
            raise plan.error
        text, calls, finish = self._answer(request, plan.text)
        return Reply(text, self._usage_of(request, text, calls, finish), calls)

    # ignore: the simulated adapter this subclasses may still declare a text-only stream
    async def _stream(self, request: Request) -> AsyncIterator[str | ToolCallDelta | Usage]:  # type: ignore[override,unused-ignore]
        plan = self._plan(request)
        await self._wait(plan, request)
        if plan.error is not None and plan.fail_after is None:
            raise plan.error
        text, calls, finish = self._answer(request, plan.text)
        events: list[str | ToolCallDelta] = [piece for piece in re.findall(r"\S*\s*", text) if piece]
        for i, c in enumerate(calls):
            half = len(c.arguments) // 2
            events += [ToolCallDelta(i, c.id, c.name, ""), ToolCallDelta(i, arguments=c.arguments[:half]),
                       ToolCallDelta(i, arguments=c.arguments[half:])]
        for n, event in enumerate(events):
            if plan.error is not None and n == plan.fail_after:
                raise plan.error
            yield event
        if plan.error is not None:
            raise plan.error
        yield self._usage_of(request, text, calls, finish)


def tool_sims(policy: Policy, text_only: tuple[str, ...] = ()) -> dict[str, SimulatedAdapter]:
    """A `ToolSim` per model of `policy` (instant), plain simulated adapters for `text_only`."""
    out: dict[str, SimulatedAdapter] = {}
    for name, m in policy.models.items():
        price = Price(m.price.input, m.price.output)
        out[name] = SimulatedAdapter(m.provider, m.id, price=price, time_scale=0, features=["streaming"]) \
            if name in text_only else ToolSim(m.provider, m.id, price=price, time_scale=0)
    return out
