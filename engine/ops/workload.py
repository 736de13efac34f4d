"""The demo's traffic: a deterministic, realistic mix of requests from several tenants.

`build_workload(n, seed)` returns `n` `DemoRequest`s in arrival order, each with a virtual
arrival time (seconds from the start of the run), a tenant, a kind and the parameters to send.
The story the numbers tell:

- everyday traffic: chat, code, maths, short summaries, extraction, translation, creative
  writing, a few streamed interactive chats and a few malformed (empty) requests; a quarter of
  the chats offer the assistant tools (a weather and an order lookup) and half of the extractions
  ask for JSON matching a schema, so tool calls and structured output are in the log too;
- a support bot asking the same handful of questions at temperature 0 (the cache's business);
- long documents (over 100k tokens) that only long-context models take;
- a premium tenant, `acme`, sending whole repositories for review; each costs about $0.24, so
  the tenant spends its daily budget part way through and is then refused;
- a provider outage between 40% and 55% of the run (see `Phases`);
- a burst of support chat between 70% and 78%, arriving ten times faster, during which the
  model that takes it answers part of the calls with HTTP 429.

Big prompts are built on demand (`DemoRequest.prompt()`), so a long run never holds them all.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["BURST", "OUTAGE", "DemoRequest", "Kind", "Phases", "build_workload"]

Kind = Literal["chat", "code", "math", "summarize", "extract", "translate", "creative", "faq", "stream",
               "long_doc", "review", "burst", "bad", "tools", "json"]

OUTAGE = (0.40, 0.55)
"""Fractions of the run (by request index) during which one provider fails every call."""
BURST = (0.70, 0.78)
"""Fractions of the run during which support chat arrives ten times faster and meets 429s."""

ARRIVALS_PER_MINUTE = 100.0
"""Average arrival rate outside the burst (virtual time)."""

_TENANTS = ("acme", "globex", "initech", "umbrella", "hooli")
_TIERS = {"acme": "premium", "globex": "standard", "initech": "standard", "umbrella": "free", "hooli": "standard"}

# (kind, weight) of everyday traffic; faq goes to the support tenant, long_doc to the documents one
_MIX: tuple[tuple[Kind, float], ...] = (
    ("chat", 24), ("code", 18), ("math", 9), ("summarize", 8), ("extract", 5), ("translate", 4), ("creative", 4),
    ("faq", 16), ("stream", 6), ("long_doc", 1.5), ("bad", 0.5),
)

_CHAT = ("What are some good habits for a productive morning?", "Can you recommend a few books about {topic}?",
         "How do I politely decline a meeting invitation?", "What is the difference between {topic} and {other}?",
         "Give me tips for a job interview in {topic}.", "What should I pack for a weekend trip to the mountains?",
         "How can I explain {topic} to a ten year old?", "Is it better to rent or buy a home in a big city?")
_TOPICS = ("machine learning", "cloud computing", "renewable energy", "supply chains", "marketing",
           "public speaking", "databases", "project management", "photography", "nutrition")
_CODE = ("Fix this Python function, it raises IndexError:\n```python\ndef last(xs):\n    return xs[len(xs)]\n```",
         "Write a Python function that merges two sorted lists of {n} elements each.",
         "Why does this JavaScript print undefined?\n```js\nfunction f() {{ let x; return x }}\nconsole.log(f())\n```",
         "Refactor this SQL query to avoid the N+1 problem: SELECT * FROM orders WHERE customer_id = {n}",
         "Write a unit test for a function `parse_date(s: str) -> date` that handles ISO dates.",
         "Implement a thread-safe LRU cache class in Python with a capacity of {n} entries.")
_MATH = ("What is the integral of x^{n} * sin(x) dx?", "Solve the equation {n}x^2 - 5x + 1 = 0.",
         "Prove that the square root of {n} is irrational when {n} is not a perfect square.",
         "What is the derivative of ln(x^2 + {n})?", "Compute the eigenvalues of [[2, 1], [1, {n}]].")
_EXTRACT = "Extract every person's name and email address from this text as JSON:\n{body}"
_TRANSLATE = "Translate into French: {body}"
_CREATIVE = ("Write a short poem about {topic}.", "Write a two-paragraph story set in a city run by {topic}.",
             "Write a catchy slogan for a startup doing {topic}.")
_FAQ = ("How do I reset my password?", "What are your support hours?", "How can I change my billing address?",
        "Where can I download my invoices?", "How do I cancel my subscription?",
        "Which payment methods do you accept?", "How do I add a team member to my account?",
        "Can I export my data as CSV?", "Why was my card declined?", "How do I enable two-factor authentication?",
        "What is your refund policy?", "How do I contact a human agent?")
_SENTENCES = ("The quarterly revenue in the {r} region grew by {p} percent.",
              "Customer churn fell to {p} percent after the loyalty programme launched in {r}.",
              "Operating costs in {r} rose {p} percent because of higher energy prices.",
              "The board approved a new warehouse in {r} with {p} hundred staff.")
_REGIONS = ("north", "south", "east", "west", "central", "coastal", "alpine")
_TOOL_ASKS = ("What's the weather in Lisbon tomorrow?", "Where is my order {n}?",
              "Is it going to rain in Oslo this weekend?", "Has order {n} shipped yet?")
_TOOLS = (
    {"type": "function", "function": {"name": "get_weather", "description": "Weather forecast for a city",
                                      "parameters": {"type": "object", "properties": {
                                          "city": {"type": "string"}, "day": {"type": "string"}},
                                          "required": ["city"]}}},
    {"type": "function", "function": {"name": "lookup_order", "description": "Status of a customer order",
                                      "parameters": {"type": "object", "properties": {
                                          "order_id": {"type": "integer"}}, "required": ["order_id"]}}},
)
_CONTACTS_SCHEMA = {"type": "json_schema", "json_schema": {"name": "contacts", "strict": True, "schema": {
    "type": "object", "additionalProperties": False, "required": ["contacts"],
    "properties": {"contacts": {"type": "array", "items": {
        "type": "object", "additionalProperties": False, "required": ["name", "email"],
        "properties": {"name": {"type": "string"}, "email": {"type": "string"}}}}}}}}


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoRequest:
    """One request of the demo workload.

    Attributes:
        index: position in arrival order.
        at_s: virtual arrival time, seconds from the start of the run.
        tenant: who sends it (`meta.tenant`).
        kind: what it is (see `Kind`).
        max_tokens: output budget.
        temperature: 0 for cacheable requests.
        stream: sent through `Router.stream`.
        size: for `long_doc` and `review`, the approximate prompt size in tokens; else 0.
        text: the prompt of ordinary requests ('' for big ones, built by `prompt()`).
    """

    index: int
    at_s: float
    tenant: str
    kind: Kind
    max_tokens: int
    temperature: float
    stream: bool = False
    size: int = 0
    text: str = ""
    surface: dict[str, Any] = field(default_factory=dict)
    """Tools or an output format to send with it (OpenAI-style keywords of `Router.generate`)."""

    @property
    def meta(self) -> dict[str, str]:
        """Request metadata: tenant and tier."""
        return {"tenant": self.tenant, "tier": _TIERS.get(self.tenant, "standard")}

    def prompt(self) -> str:
        """The prompt; big ones are generated here, deterministically, from the index."""
        if self.kind == "long_doc":
            return "Summarize the main findings of this annual report:\n\n" + _document(self.index, self.size)
        if self.kind == "review":
            return ("Review this repository for concurrency bugs and list every fix:\n```python\n"
                    + _repository(self.index, self.size) + "\n```")
        return self.text


@dataclass(frozen=True, slots=True)
class Phases:
    """Index ranges of the outage and the burst for a run of `n` requests."""

    n: int

    @property
    def outage(self) -> range:
        """Requests sent while the outage lasts."""
        return range(int(self.n * OUTAGE[0]), int(self.n * OUTAGE[1]))

    @property
    def burst(self) -> range:
        """Requests of the burst."""
        return range(int(self.n * BURST[0]), int(self.n * BURST[1]))


def build_workload(n: int, *, seed: int = 7, reviews: int | None = None) -> list[DemoRequest]:
    """`n` requests in arrival order (deterministic for a given `n` and `seed`).

    Args:
        n: number of requests (at least 20).
        seed: seed of every random choice.
        reviews: repository reviews by the premium tenant (default: enough to exhaust its
            daily budget whatever `n`: max(30, 3% of n)).

    Raises:
        ValueError: `n` below 20.
    """
    if n < 20:
        raise ValueError(f"the demo workload needs at least 20 requests, got {n}")
    rng = random.Random(seed)
    phases = Phases(n)
    n_reviews = reviews if reviews is not None else max(30, n * 3 // 100)
    # reviews are spread over 25%-90% of the run, away from the burst's own slots
    review_slots = _spread(rng, n, n_reviews, 0.25, 0.90, exclude=phases.burst)
    out: list[DemoRequest] = []
    t = 0.0
    for i in range(n):
        in_burst = i in phases.burst
        gap = 60.0 / ARRIVALS_PER_MINUTE / (10.0 if in_burst else 1.0)
        t += rng.expovariate(1.0 / gap)
        if in_burst:
            out.append(_burst(rng, i, t))
        elif i in review_slots:
            out.append(DemoRequest(index=i, at_s=t, tenant="acme", kind="review", max_tokens=8000, temperature=0.3,
                                   size=50_000))
        else:
            out.append(_everyday(rng, i, t))
    return out


def _spread(rng: random.Random, n: int, k: int, lo: float, hi: float, exclude: range) -> frozenset[int]:
    pool = [i for i in range(int(n * lo), int(n * hi)) if i not in exclude]
    return frozenset(rng.sample(pool, min(k, len(pool))))


def _burst(rng: random.Random, i: int, t: float) -> DemoRequest:
    text = rng.choice(_CHAT).format(topic=rng.choice(_TOPICS), other=rng.choice(_TOPICS)) + f" (ticket {i})"
    return DemoRequest(index=i, at_s=t, tenant="globex", kind="burst", max_tokens=400, temperature=0.7, text=text)


def _everyday(rng: random.Random, i: int, t: float) -> DemoRequest:
    kind = _pick(rng, _MIX)
    topic, other, num = rng.choice(_TOPICS), rng.choice(_TOPICS), rng.randint(2, 40)
    tenant = rng.choice(_TENANTS)
    if kind == "faq":
        return DemoRequest(index=i, at_s=t, tenant="globex", kind=kind, max_tokens=300, temperature=0.0,
                           text=rng.choice(_FAQ))
    if kind == "long_doc":
        return DemoRequest(index=i, at_s=t, tenant="initech", kind=kind, max_tokens=1500, temperature=0.2,
                           size=rng.randint(105_000, 140_000))
    if kind == "bad":
        return DemoRequest(index=i, at_s=t, tenant=tenant, kind=kind, max_tokens=200, temperature=0.7, text="   ")
    max_tokens, temperature, stream = 800, 0.7, False
    surface: dict[str, Any] = {}
    if kind == "chat" and i % 4 == 0:  # by index, so the rest of the random sequence is unchanged
        kind, text, surface = "tools", rng.choice(_TOOL_ASKS).format(n=num), {"tools": list(_TOOLS)}
    elif kind == "chat":
        text = rng.choice(_CHAT).format(topic=topic, other=other)
    elif kind == "stream":
        text, stream, max_tokens = rng.choice(_CHAT).format(topic=topic, other=other), True, 500
    elif kind == "code":
        text, max_tokens, temperature = rng.choice(_CODE).format(n=num), 1500, 0.2
    elif kind == "math":
        text, temperature = rng.choice(_MATH).format(n=num), 0.0
    elif kind == "summarize":
        text = "Summarize this in three bullet points:\n\n" + _document(i, rng.randint(300, 2500))
    elif kind == "extract":
        text = _EXTRACT.format(body=_contacts(rng))
        if i % 2 == 0:
            kind, surface = "json", {"response_format": _CONTACTS_SCHEMA}
    elif kind == "translate":
        text = _TRANSLATE.format(body=rng.choice(_CHAT).format(topic=topic, other=other))
    else:
        text = rng.choice(_CREATIVE).format(topic=topic)
    return DemoRequest(index=i, at_s=t, tenant=tenant, kind=kind, max_tokens=max_tokens, temperature=temperature,
                       stream=stream, text=text, surface=surface)


def _pick(rng: random.Random, mix: Sequence[tuple[Kind, float]]) -> Kind:
    kinds = [k for k, _ in mix]
    return rng.choices(kinds, weights=[w for _, w in mix])[0]


def _document(index: int, tokens: int) -> str:
    """About `tokens` tokens of report prose (4 characters per token)."""
    rng = random.Random(index)
    parts: list[str] = []
    size = 0
    while size < tokens * 4:
        s = rng.choice(_SENTENCES).format(r=rng.choice(_REGIONS), p=rng.randint(1, 40))
        parts.append(s)
        size += len(s) + 1
    return " ".join(parts)


def _repository(index: int, tokens: int) -> str:
    """About `tokens` tokens of Python source."""
    out: list[str] = []
    size, k = 0, 0
    while size < tokens * 4:
        block = (f"def handler_{index}_{k}(request, cache, lock):\n    with lock:\n"
                 "        value = cache.get(request.key)\n"
                 f"    if value is None:\n        value = compute(request, {k})\n        cache[request.key] = value\n"
                 "    return value\n")
        out.append(block)
        size += len(block)
        k += 1
    return "\n".join(out)


def _contacts(rng: random.Random) -> str:
    names = ("Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov", "Ken Thompson")
    picked = rng.sample(names, 3)
    return " ".join(f"Please cc {n} ({n.split()[0].lower()}@example.com) on the thread." for n in picked)
