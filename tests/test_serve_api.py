"""`engine serve` answering the official openai SDK, over the vendor fakes and the default policy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from engine.policy.bundled import default_policy_path
from engine.server.config import ServeConfig
from tests.fakes import FakeVendorServer, Fault
from tests.test_serve_support import ServerThread, fake_policy

MSG: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello to the router"}]


@pytest.fixture
def server(fake: FakeVendorServer, tmp_path: Path) -> Iterator[ServerThread]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(fake_policy(fake))
    with ServerThread(ServeConfig(policy=str(policy), reload_interval_s=0, max_body_bytes=4096)) as s:
        yield s


def client(server: ServerThread, key: str = "unused") -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def test_json_completion_is_routed_by_policy(server: ServerThread, fake: FakeVendorServer) -> None:
    raw = client(server).chat.completions.with_raw_response.create(model="auto", messages=MSG,  # type: ignore[arg-type]
                                                                   max_tokens=50)
    r = raw.parse()
    assert r.object == "chat.completion"
    assert r.model == "gpt-mini"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == "Echo from gpt-4o-mini: Say hello to the router"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 0
    assert r.id.startswith("chatcmpl-") and r.id == "chatcmpl-" + raw.headers["x-request-id"]
    assert raw.headers["x-router-route"] == "default"
    body = fake.last_body("openai")
    assert body["model"] == "gpt-4o-mini" and body["messages"][-1]["content"] == "Say hello to the router"


def test_stream_in_openai_chunks_with_usage(server: ServerThread) -> None:
    chunks = list(client(server).chat.completions.create(
        model="auto", messages=MSG, stream=True, stream_options={"include_usage": True}))  # type: ignore[arg-type]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo from gpt-4o-mini: Say hello to the router"
    assert {c.model for c in chunks} == {"gpt-mini"}
    assert len({c.id for c in chunks}) == 1
    finished = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finished] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_stream_raw_wire_is_sse_ending_in_done(server: ServerThread) -> None:
    body = {"model": "auto", "messages": MSG, "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    for e in events[:-1]:
        chunk = json.loads(e[len("data: "):])
        assert chunk["object"] == "chat.completion.chunk" and "usage" not in chunk


def test_named_model_and_route_pin_the_plan(server: ServerThread, fake: FakeVendorServer) -> None:
    c = client(server)
    r = c.chat.completions.create(model="claude", messages=MSG)  # type: ignore[arg-type]
    assert r.model == "claude" and fake.calls("anthropic") == 1 and fake.calls("openai") == 0
    assert c.chat.completions.create(model="default", messages=MSG).model == "gpt-mini"  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="gpt-5", messages=MSG)  # type: ignore[arg-type]
    assert e.value.code == "model_not_found"


def test_fallback_before_first_token(server: ServerThread, fake: FakeVendorServer) -> None:
    fake.script("openai", "server_error", "server_error")
    c = client(server)
    assert c.chat.completions.create(model="auto", messages=MSG).model == "claude"  # type: ignore[arg-type]
    chunks = list(c.chat.completions.create(model="auto", messages=MSG, stream=True))  # type: ignore[arg-type]
    assert {ch.model for ch in chunks} == {"claude"}
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == "Echo from claude-haiku-4-5: " + str(
        MSG[0]["content"])


def test_every_model_rate_limited_is_429_with_retry_after(server: ServerThread, fake: FakeVendorServer) -> None:
    fake.script("openai", Fault("rate_limit", retry_after=7))
    fake.script("anthropic", Fault("rate_limit", retry_after=3))
    with pytest.raises(openai.RateLimitError) as e:
        client(server).chat.completions.create(model="auto", messages=MSG)  # type: ignore[arg-type]
    assert e.value.status_code == 429 and e.value.code == "rate_limit_exceeded"
    assert e.value.response.headers["retry-after"] == "3"


def test_every_model_failing_is_503(server: ServerThread, fake: FakeVendorServer) -> None:
    fake.set_mode("openai", "server_error")
    fake.set_mode("anthropic", "overloaded")
    c = client(server)
    with pytest.raises(openai.InternalServerError) as e:
        c.chat.completions.create(model="auto", messages=MSG)  # type: ignore[arg-type]
    assert e.value.status_code == 503 and e.value.code == "all_models_failed"
    assert "gpt-mini" in e.value.message and "claude" in e.value.message
    with pytest.raises(openai.InternalServerError):  # before the first token a stream fails with a status too
        c.chat.completions.create(model="auto", messages=MSG, stream=True)  # type: ignore[arg-type]


def test_failure_after_first_token_is_an_error_event(server: ServerThread, fake: FakeVendorServer) -> None:
    fake.script("openai", Fault("stream_error", after_chunks=2))
    stream = client(server).chat.completions.create(model="auto", messages=MSG, stream=True)  # type: ignore[arg-type]
    got = []
    with pytest.raises(openai.APIError) as e:
        for ch in stream:
            got.append(ch)
    assert got and got[0].choices[0].delta.role == "assistant"
    assert "failed" in e.value.message


@pytest.mark.parametrize(("body", "param", "code"), [
    (b"{not json", None, None),
    (b"[1, 2]", None, None),
    (b'{"messages": [{"role": "user", "content": "hi"}]}', "model", "missing_required_parameter"),
    (b'{"model": "auto", "messages": "hi"}', "messages", "invalid_type"),
    (b'{"model": "auto", "messages": []}', "messages", "empty_array"),
    (b'{"model": "auto", "messages": [{"role": "bot", "content": "hi"}]}', "messages[0].role", "invalid_value"),
    (b'{"model": "auto", "messages": [{"role": "user"}]}', "messages[0].content", "missing_required_parameter"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": 5}]}', "messages[0].content", "invalid_type"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": " "}]}', "messages[0].content", "invalid_value"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "colour": 1}', "colour",
     "unknown_parameter"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}', "temperature",
     "invalid_type"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "temperature": 3}', "temperature",
     "decimal_above_max_value"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}', "max_tokens",
     "integer_below_min_value"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "n": 2}', "n", "unsupported_parameter"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}',
     "tools[0].function.name", "invalid_value"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stream_options": {}}',
     "stream_options", "invalid_value"),
])
def test_bad_input_is_400_in_openai_format(server: ServerThread, fake: FakeVendorServer, body: bytes,
                                           param: str | None, code: str | None) -> None:
    r = httpx.post(server.url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    assert (err["param"], err["code"]) == (param, code)
    assert fake.calls() == 0


def test_oversized_body_is_413(server: ServerThread) -> None:
    content = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "x" * 5000}]})
    r = httpx.post(server.url + "/v1/chat/completions", content=content)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    chunked = httpx.post(server.url + "/v1/chat/completions", content=iter([content.encode()]))  # no length
    assert chunked.status_code == 413


def test_sdk_sees_bad_request_error(server: ServerThread) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client(server).chat.completions.create(model="auto", messages=[])
    assert e.value.param == "messages"


def test_models_explain_and_ops_endpoints(server: ServerThread) -> None:
    ids = [m.id for m in client(server).models.list()]
    assert ids == ["auto", "default", "gpt-mini", "claude"]
    ex = httpx.post(server.url + "/v1/explain", json={"model": "auto", "messages": MSG}).json()
    assert ex["route"] == "default" and ex["plan"] == ["gpt-mini", "claude"] and ex["model"] == "gpt-mini"
    assert len(ex["policy_version"]) == 64
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/readyz").json()
    assert ready["ready"] and ready["policy"]["digest"] == ex["policy_version"]
    assert ready["providers"]["openai"] == {"state": "closed", "models": {"gpt-mini": "closed"}}
    client(server).chat.completions.create(model="auto", messages=MSG)  # type: ignore[arg-type]
    metrics = httpx.get(server.url + "/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert 'model="gpt-mini"' in metrics.text and ready["policy"]["version"] in metrics.text


def test_default_policy_answers_the_sdk(tmp_path: Path) -> None:
    """The bundled offline policy, as from a fresh clone: JSON and streaming."""
    with ServerThread(ServeConfig(policy=str(default_policy_path()), reload_interval_s=0)) as s:
        c = client(s)
        r = c.chat.completions.create(model="auto", messages=[{"role": "user", "content": "Hello!"}])
        assert r.choices[0].message.content and r.model in {m.id for m in c.models.list()}
        chunks = list(c.chat.completions.create(model="auto", stream=True,
                                                messages=[{"role": "user", "content": "Tell me a story"}]))
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks).strip()


def test_request_no_model_can_take_is_422(server: ServerThread, fake: FakeVendorServer) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as e:
        client(server).chat.completions.create(model="auto", messages=MSG, max_tokens=1_000_000)
    assert e.value.code == "routing_refused" and "context window" in e.value.message
    assert fake.calls() == 0


def test_open_circuits_are_503_with_cooldown(fake: FakeVendorServer, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    text = fake_policy(fake).replace("health: {min_requests: 1000}",
                                     "health: {min_requests: 1, open_circuit: {error_rate: 0.5, cooldown_s: 42}}")
    policy.write_text(text)
    fake.set_mode("openai", "server_error")
    fake.set_mode("anthropic", "server_error")
    with ServerThread(ServeConfig(policy=str(policy), reload_interval_s=0)) as s:
        with pytest.raises(openai.InternalServerError) as first:
            client(s).chat.completions.create(model="auto", messages=MSG)
        assert first.value.code == "all_models_failed"
        with pytest.raises(openai.InternalServerError) as e:
            client(s).chat.completions.create(model="auto", messages=MSG)
        ready = httpx.get(s.url + "/readyz").json()
    assert e.value.code == "no_model_available" and e.value.response.headers["retry-after"] == "42"
    assert ready["providers"]["openai"]["state"] == "open" and fake.calls() == 2
