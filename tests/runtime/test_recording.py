"""What the decision log records of the request surface (issue 11 item 6): features used,
finish reason, tool-call count; tool arguments and images are prompt content."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adapters.conversation import coerce_messages
from engine.runtime.recording import prompt_hash, prompt_text
from engine.runtime.router import Router
from tests.runtime.conftest import RowsFn
from tests.runtime.test_surface import PIXEL, TIME, WEATHER, surface_policy
from tests.runtime.toolsim import tool_sims

SCHEMA = {"type": "json_schema", "json_schema": {"name": "n", "schema": {
    "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}}


def _call_history(arguments: str) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "22 C"},
    ]


async def test_each_row_says_what_the_request_used_and_how_it_ended(tmp_path: Path, rows: RowsFn) -> None:
    p = surface_policy()
    async with Router(p, log_path=tmp_path / "log.db", adapters=tool_sims(p)) as router:
        await router.generate("plain")
        await router.generate("Weather and time, in parallel", tools=[WEATHER, TIME], seed=3)
        await router.generate(messages=[{"role": "user", "content": [
            {"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": PIXEL}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}])
        await router.generate("json please", model="a-small", response_format=SCHEMA)
        async for _ in router.stream("Weather?", tools=[WEATHER]):
            pass
    got = [(json.loads(r["needs"]), r["tools_offered"], r["images"], r["output_format"], r["seed"],
            r["finish_reason"], r["tool_calls"]) for r in rows("requests")]
    assert got == [
        ([], 0, 0, "text", None, "stop", 0),
        (["tools"], 2, 0, "text", 3, "tool_calls", 2),
        (["vision"], 0, 2, "text", None, "stop", 0),
        (["json", "json_schema"], 0, 0, "json_schema", None, "stop", 0),
        (["streaming", "tools"], 1, 0, "text", None, "tool_calls", 1),
    ]


async def test_tool_arguments_and_images_are_hashed_and_shown_only_in_full(tmp_path: Path, rows: RowsFn) -> None:
    p = surface_policy()
    async with Router(p, log_path=tmp_path / "log.db", adapters=tool_sims(p)) as router:
        await router.generate(messages=_call_history('{"city": "Paris"}'), tools=[WEATHER])
        await router.generate(messages=_call_history('{"city": "Rome"}'), tools=[WEATHER])
    paris, rome = rows("requests")
    assert paris["prompt_hash"] != rome["prompt_hash"]  # only the arguments differ
    assert paris["prompt"] is None and "Paris" not in json.dumps(paris)

    full = surface_policy("log: {prompts: full}\n")
    async with Router(full, log_path=tmp_path / "full.db", adapters=tool_sims(full)) as router:
        await router.generate(messages=_call_history('{"city": "Paris"}'), tools=[WEATHER])
        await router.generate(messages=[{"role": "user", "content": [
            {"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": PIXEL}}]}])
    import sqlite3

    db = sqlite3.connect(tmp_path / "full.db")
    texts = [r[0] for r in db.execute("select prompt from requests order by ts")]
    db.close()
    assert texts == [
        'user: Weather?\n\nassistant: [call call_1 get_weather {"city": "Paris"}]\n\ntool: [result of call_1] 22 C',
        f"user: see [image {PIXEL}]",
    ]


def test_a_plain_conversation_hashes_as_before() -> None:
    """Hashes of text-only prompts are what earlier versions logged, so they stay comparable."""
    import hashlib

    msgs = coerce_messages([{"role": "system", "content": "be  brief"}, {"role": "user", "content": "hi\nthere"}])
    old = hashlib.sha256(b"system\0be brief\0user\0hi there\0").hexdigest()
    assert prompt_hash(msgs) == old
    with_image = coerce_messages([{"role": "user", "content": [
        {"type": "text", "text": "hi there"}, {"type": "image_url", "image_url": {"url": PIXEL}}]}])
    assert prompt_hash(with_image) != old and prompt_text(with_image).startswith("user: hi there [image data:")
