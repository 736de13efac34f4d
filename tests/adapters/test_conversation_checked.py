"""Messages are checked once: `coerce_messages` returns a `Conversation`, which every later step
(the router's `Request.of`, the adapter) takes as it is; anything else is checked again."""

from __future__ import annotations

import pytest

from adapters.conversation import Conversation, Message, coerce_messages
from adapters.errors import InvalidInput
from adapters.simulated import SimulatedAdapter
from engine.routing.features import Request


def test_a_checked_conversation_is_taken_as_it_is() -> None:
    conv = coerce_messages([{"role": "system", "content": "Be brief."}, ("user", "hi")])
    assert type(conv) is Conversation and conv == (Message("system", "Be brief."), Message("user", "hi"))
    assert coerce_messages(conv) is conv
    assert Request.of(None, messages=conv).messages is conv
    assert type(Request.of("hello").messages) is Conversation


def test_anything_else_is_checked_again() -> None:
    with pytest.raises(InvalidInput, match="only system messages"):
        coerce_messages((Message("system", "x"),))  # a plain tuple of messages is not trusted
    with pytest.raises(InvalidInput, match="empty"):
        coerce_messages([])


async def test_the_adapter_checks_a_plain_sequence_but_not_a_conversation() -> None:
    adapter = SimulatedAdapter("p", "m", latency_ms=(0, 0))
    with pytest.raises(InvalidInput, match="no earlier assistant"):
        await adapter.generate(messages=[Message("tool", "rain", tool_call_id="call_1"), Message("user", "and?")])
    reply = await adapter.generate(messages=coerce_messages([("user", "hello")]))
    assert reply.text
