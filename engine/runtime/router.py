"""`Router`: serve requests end to end on a policy.

    async with Router.from_file("policies/default.yaml") as router:
        result = await router.generate("Summarize: ...", max_tokens=200, meta={"tenant": "acme"})
        print(result.model, result.cost_usd, result.cached)

Per request: features -> decide (pure, on a snapshot of health, limits and quotas) -> cache
-> the dispatcher walks the plan -> usage settled -> one decision-log row. A failing request
is logged too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.base import Completion, LLMAdapter, Message, StreamEnd
from adapters.conversation import NO_OPTIONS, Options, ToolCall, ToolCallDelta
from engine.errors import AllModelsFailed, QuotaExceeded, RateLimitExceeded, RequestError, RoutingRefused
from engine.policy.api import compile_policy, load_policy
from engine.policy.compile import CompiledPolicy
from engine.policy.model import Model, Policy
from engine.policy.predicate import Predicate
from engine.routing.decide import Decision, decide_features, decide_group, decide_route
from engine.routing.features import Features, Request, safe_truth
from engine.routing.state import RuntimeState
from engine.runtime.adapters import AdapterPool
from engine.runtime.backends import build_state
from engine.runtime.clock import Clock, SystemClock
from engine.runtime.dispatch import Dispatcher, Served, Walk, mark_stream_failure, record_attempt_cost
from engine.runtime.health import HealthEvent
from engine.runtime.hitmemo import HitMemo, Known, fingerprint
from engine.runtime.recording import Recorder
from engine.runtime.result import RoutedCompletion, RoutedDelta, StreamDone
from engine.semantic.hit import SemanticHit

if TYPE_CHECKING:
    from engine.semantic.cache import Probe as SemanticProbe
    from engine.semantic.cache import SemanticCache


class _FromPolicy:
    """Marker: take this setting from the policy file."""

    def __repr__(self) -> str:
        return "FROM_POLICY"


FROM_POLICY = _FromPolicy()


class Router:
    """Routes requests by policy, with fallback, limits, quotas, cache, health and logging.

    Args:
        policy: a loaded policy (see `engine.load_policy`).
        log_path: SQLite decision log (default: the policy's `log.sqlite`; None = no log).
        quota_path: SQLite file shared by processes for quotas (default: the log file, else
            in memory for this process only).
        adapters: model name -> adapter, overriding what the policy would build (tests, apps
            that bring their own client).
        clock: time source (tests pass a `ManualClock`).
        metrics: an object with `observe(record, attempts)` and health hooks (see
            `engine.ops.metrics`), or None.
    """

    def __init__(self, policy: Policy, *, log_path: str | Path | None | _FromPolicy = FROM_POLICY,
                 quota_path: str | Path | None | _FromPolicy = FROM_POLICY,
                 adapters: Mapping[str, LLMAdapter] | None = None, clock: Clock | None = None,
                 metrics: Any = None) -> None:
        self.policy = policy
        self.compiled: CompiledPolicy = compile_policy(policy)
        if encodings := {m.tokenizer for m in policy.models.values() if m.tokenizer}:
            from engine.routing.tokens import warm

            warm(encodings)  # exact token counts near a context window: the encoder is read off the loop
        if self.compiled.needs_classifier:
            from engine.classify.ngram import warm as warm_classifier

            warm_classifier()  # the classifier's second opinion, read off the loop too
        self.clock = clock or SystemClock()
        log = policy.log.sqlite if isinstance(log_path, _FromPolicy) else log_path
        shared = str(log) if log and str(log) != ":memory:" else None
        qpath = shared if isinstance(quota_path, _FromPolicy) else quota_path
        self.recorder = Recorder(log, policy, metrics=metrics, clock=self.clock)
        # the backend (embedded or Redis) is chosen here; everything below uses the interfaces only
        self.backend = build_state(policy, clock=self.clock, quota_path=qpath, cache_path=policy.cache.path or shared,
                                   on_health=self._on_health)
        self.health, self.limits, self.quotas = self.backend.health, self.backend.limits, self.backend.quotas
        self.cache, self.scoped_limits = self.backend.cache, self.backend.scoped
        self.semantic: SemanticCache | None = None
        if self.cache is not None and policy.cache.semantic is not None:
            from engine.semantic.build import build_semantic_cache

            self.semantic = build_semantic_cache(policy, clock=self.clock, path=policy.cache.path or shared,
                                                 conn=self.backend.conn)
        self.adapters = AdapterPool(policy, overrides=adapters)
        self.dispatcher = Dispatcher(policy, health=self.health, limits=self.limits, quotas=self.quotas,
                                     clock=self.clock)
        self._route_names = frozenset(r.name for r in policy.routes)
        self._providers = {n: m.provider for n, m in policy.models.items()}  # the quota probe's, per request
        # repeats of a plain request go straight to their cache entry (engine.runtime.hitmemo)
        self._memo = HitMemo() if self.cache is not None and policy.cache.enabled else None
        self._closed = False

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> Router:
        """Load, check and compile a policy file, then build a router on it."""
        return cls(load_policy(path), **kwargs)

    # -- public API ------------------------------------------------------------------------

    def explain(self, prompt: str | None = None, *, messages: Sequence[Any] | None = None, max_tokens: int = 1000,
                temperature: float = 0.7, stream: bool = False, meta: Mapping[str, Any] | None = None,
                options: Options | None = None, **surface: Any) -> Decision:
        """The decision this router would make now, with its trace (no vendor is called).
        Arguments as for `generate` (tools, images and output formats included)."""
        request = Request.of(prompt, messages=messages, max_tokens=max_tokens, temperature=temperature, stream=stream,
                             meta=meta, options=options, **surface)
        features = self.compiled.features(request)
        return decide_features(self.compiled, features, self._state(features), explain=True)

    async def probe_cache(self, prompt: str | None = None, *, messages: Sequence[Any] | None = None,
                          max_tokens: int = 1000, temperature: float = 0.7, meta: Mapping[str, Any] | None = None,
                          model: str | None = None, options: Options | None = None,
                          **surface: Any) -> dict[str, Any]:
        """Whether this request would be served from the cache now, and how (nothing is called or counted).

        Returns:
            `{"cache": "off"|"bypass"|"exact"|"semantic"|"miss", "similarity", "threshold", "refused_by"}`.
        """
        request = Request.of(prompt, messages=messages, max_tokens=max_tokens, temperature=temperature, meta=meta,
                             options=options, **surface)
        if self.cache is None:
            return {"cache": "off"}
        key, features, route, target = self._cache_probe(request, model)
        if key is None:
            return {"cache": "bypass"}  # `cache.when` (or a seed, or a refusal) keeps this request out
        if self.cache._lookup(key) is not None:  # a peek: hit counters stay as they are
            return {"cache": "exact"}
        out: dict[str, Any] = {"cache": "miss"}
        scope = self._semantic_scope(request, target) if self.semantic is not None else None
        if self.semantic is not None and scope is not None and features is not None:
            found = await self.semantic.peek(scope[0], scope[1], features.query_type)
            out.update(similarity=found.best_similarity, threshold=found.threshold, refused_by=found.refused_by)
            if found.hit is not None:
                out.update(cache="semantic", similarity=found.hit.similarity)
        return out

    async def generate(self, prompt: str | None = None, *, messages: Sequence[Any] | None = None,
                       max_tokens: int = 1000, temperature: float = 0.7, stop: Sequence[str] | None = None,
                       meta: Mapping[str, Any] | None = None, model: str | None = None,
                       options: Options | None = None, **surface: Any) -> RoutedCompletion:
        """Serve one request.

        Args:
            prompt: a user prompt (or give `messages`).
            messages: chat messages: (role, content) pairs, OpenAI-shaped dicts (text and image
                parts, assistant `tool_calls`, `tool` results) or `adapters.Message`s.
            max_tokens: output budget.
            temperature: sampling temperature.
            stop: stop sequences.
            meta: request metadata: `tenant`, `key`, `tier`, anything routes read as `meta.*`.
            model: pin a model name or a route name (the route's plan is used).
            options: tools, tool choice, output format and sampling as one
                `adapters.conversation.Options`; or as OpenAI-style keywords: `tools`,
                `tool_choice`, `parallel_tool_calls`, `response_format`, `top_p`, `seed`,
                `presence_penalty`, `frequency_penalty`, `user`, `metadata`, `extra_body`.

        Raises:
            RequestError: the request is malformed (nothing was sent).
            RoutingRefused: the policy leaves no model for it.
            QuotaExceeded: a `reject` quota has no room.
            AllModelsFailed: every attempt failed.
        """
        memo, fp, known = self._memo, None, None
        if memo is not None and not surface and (options is None or options is NO_OPTIONS):
            fp = fingerprint(prompt, messages, max_tokens, temperature, stop, meta, model)
            if fp is not None and (known := memo.get(fp)) is not None:
                repeat = self._memo_hit(memo, known)
                if repeat is not None:
                    return repeat
        rid, started, t0, request = self._request(
            prompt, messages, max_tokens, temperature, stop, meta, options, surface, stream=False)
        if self.compiled.embedding_signals:
            await self._prepare_signals(request)
        key, features, route, target = self._cache_probe(request, model)
        if fp is not None and key is not None and known is None:  # an entry's key is the fingerprint's for good
            assert memo is not None and features is not None
            memo.put(fp, Known(key, route, features.query_type, self.recorder.request_fields(request, features, route)))
        if key is None:
            decision, walk = self._plan(rid, started, t0, request, model, features)
            await self._admit(rid, started, t0, request, decision, walk)
            try:
                result = await self._serve(walk, request, decision, t0)
            except (AllModelsFailed, QuotaExceeded) as e:
                self.recorder.failed(rid, started, t0, request, decision, walk, e)
                raise
            self.recorder.served(rid, started, request, decision, walk, result)
            return result
        # Looked up before the decision: the key names the route (or the pinned model), which
        # the features alone settle; the plan, health, limits and quotas only matter on a miss.
        job = _Job(target=target)
        assert self.cache is not None and features is not None
        try:
            value, hit = await self.cache.get_or_compute(
                key, lambda: self._lead(job, rid, started, t0, request, model, features))
        except (AllModelsFailed, QuotaExceeded, RoutingRefused, RateLimitExceeded) as e:
            if not job.logged:  # we waited on another request's call: its failure is ours too
                decision, walk = self._plan(rid, started, t0, request, model, features, refused_ok=True)
                self.recorder.failed(rid, started, t0, request, decision, walk, e)
            raise
        if hit:
            result = self._from_cache(value, rid, route, features.query_type, t0)
            self.recorder.cached(rid, started, request, features, route, result, value["cost_usd"])
            return result
        if job.semantic is not None:  # an exact miss that a paraphrase's cached answer served
            assert job.decision is not None and job.walk is not None
            sim = job.semantic.similarity
            result = self._from_cache(value, rid, route, features.query_type, t0, kind="semantic", similarity=sim)
            self.recorder.served(rid, started, request, job.decision, job.walk, result, cache_saved=value["cost_usd"],
                                 cache_info={"kind": "semantic", "similarity": round(sim, 4)})
            return result
        assert job.result is not None and job.decision is not None and job.walk is not None
        self.recorder.served(rid, started, request, job.decision, job.walk, job.result)
        return job.result

    async def stream(self, prompt: str | None = None, *, messages: Sequence[Any] | None = None,
                     max_tokens: int = 1000, temperature: float = 0.7, stop: Sequence[str] | None = None,
                     meta: Mapping[str, Any] | None = None, model: str | None = None,
                     options: Options | None = None,
                     **surface: Any) -> AsyncIterator[RoutedDelta | StreamDone]:
        """Stream one request: `RoutedDelta`s (text or tool-call fragments, and the serving
        model), then one `StreamDone`. Arguments as for `generate`.

        Falls back to the next model only until the first delta has been yielded; a failure
        after that raises (and is logged).
        """
        rid, started, t0, request = self._request(
            prompt, messages, max_tokens, temperature, stop, meta, options, surface, stream=True)
        if self.compiled.embedding_signals:
            await self._prepare_signals(request)
        decision, walk = self._plan(rid, started, t0, request, model)
        await self._admit(rid, started, t0, request, decision, walk)
        msgs = _messages(request)

        async def first(m: Model, timeout: float) -> tuple[Any, AsyncIterator[Any]]:
            it = self.adapters.get(m).stream(messages=msgs, max_tokens=request.max_tokens,
                                             temperature=request.temperature, stop=request.stop or None,
                                             timeout_s=timeout, options=request.options)
            return await it.__anext__(), it

        try:
            served: Served[tuple[Any, AsyncIterator[Any]]] = await self.dispatcher.run(walk, decision.plan, first)
        except (AllModelsFailed, QuotaExceeded) as e:
            self.recorder.failed(rid, started, t0, request, decision, walk, e)
            raise
        event, it = served.value
        name = served.model.name
        try:
            while not isinstance(event, StreamEnd):
                if isinstance(event, ToolCallDelta):
                    yield RoutedDelta("", name, tool_call=event, request_id=rid)
                else:
                    yield RoutedDelta(event.text, name, request_id=rid)
                event = await it.__anext__()
        except Exception as e:
            # after the first token there is no fallback: the caller already has part of a reply
            await self.dispatcher.abandon(served)
            mark_stream_failure(walk, e)
            err = AllModelsFailed([(a.model, a.error_class or "", a.error_message or "") for a in walk.attempts
                                   if a.outcome == "error"], request_id=rid)
            self.recorder.failed(rid, started, t0, request, decision, walk, err)
            raise err from e
        except BaseException:  # the consumer went away (cancelled, closed): settle nothing
            await self.dispatcher.abandon(served)
            # close the vendor stream now, so its connection goes back to the pool at once
            # instead of whenever the garbage collector finalizes the generator
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                await aclose()
            raise
        result = await self._result(event.completion, served, walk, rid, decision, t0)
        self.recorder.served(rid, started, request, decision, walk, result)
        yield StreamDone(result)

    def feedback(self, request_id: str, score: float | None = None, label: str | None = None) -> None:
        """Attach a judgement (a score, a label) to a logged request, for selection accuracy."""
        self.recorder.feedback(request_id, score, label)

    async def aclose(self) -> None:
        """Close adapters and flush the decision log; nothing queued is lost."""
        if self._closed:
            return
        self._closed = True
        await self.adapters.aclose()
        if self.semantic is not None:
            await self.semantic.aclose()
        await self.backend.aclose()
        if self.cache is not None:
            self.cache.close()
        await self.recorder.aclose()

    async def __aenter__(self) -> Router:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- steps -----------------------------------------------------------------------------

    def _request(self, prompt: str | None, messages: Sequence[Any] | None, max_tokens: int, temperature: float,
                 stop: Sequence[str] | None, meta: Mapping[str, Any] | None, options: Options | None,
                 surface: Mapping[str, Any], *, stream: bool) -> tuple[str, float, float, Request]:
        """Check the request; a malformed one is logged, then raised (nothing was sent)."""
        started, t0 = self.clock.time(), time.perf_counter()
        rid = _request_id()
        try:
            request = Request.of(prompt, messages=messages, max_tokens=max_tokens, temperature=temperature,
                                 meta=meta, stop=stop, stream=stream, options=options, request_id=rid, **surface)
        except RequestError as e:
            self.recorder.bad_request(rid, started, meta, e)
            raise
        return rid, started, t0, request

    async def _prepare_signals(self, request: Request) -> None:
        """Embed the prompt for `similar_to` signals in a worker thread, so the event loop serves
        other requests meanwhile; `decide` then finds the vector ready. A failure here is left for
        `decide` to meet (and report) where it would have anyway."""
        text = request.last_user_text
        signals = self.compiled.embedding_signals

        def prepare() -> None:
            for s in signals:
                s.prepare(text)

        with contextlib.suppress(Exception):
            await asyncio.to_thread(prepare)

    def _plan(self, rid: str, started: float, t0: float, request: Request, model: str | None,
              features: Features | None = None, *, refused_ok: bool = False) -> tuple[Decision, Walk]:
        """Decide the request's plan; a refused one is logged, then raised (unless `refused_ok`:
        a caller that only needs the decision to log a failure it already has)."""
        try:
            decision = self._decide(request, model, features)
        except RequestError as e:  # pinned to a model or route the policy lacks
            self.recorder.bad_request(rid, started, request.meta, e)
            raise
        walk = self._walk(rid, request, decision)
        if decision.refusal is not None and not refused_ok:
            err = self._refusal(decision, walk)
            self.recorder.failed(rid, started, t0, request, decision, walk, err)
            raise err
        return decision, walk

    async def _admit(self, rid: str, started: float, t0: float, request: Request, decision: Decision,
                     walk: Walk) -> None:
        """Per-tenant / per-key `limits` (requests that reach a model; a cache hit costs no
        upstream call and is not counted): a refusal is logged, then raised (nothing was sent)."""
        if self.scoped_limits is None:
            return
        try:
            await self.scoped_limits.admit(walk.tenant, walk.key, walk.est_tokens)
        except RateLimitExceeded as e:
            self.recorder.failed(rid, started, t0, request, decision, walk, e)
            raise

    def _state(self, features: Features) -> RuntimeState:
        state = self.health.snapshot()
        # least_busy groups rank by the calls in flight: a copy, so decide sees a snapshot
        in_flight = dict(self.dispatcher.in_flight) if self.compiled.dynamic_groups else {}
        if self.limits is None and self.quotas is None and not in_flight:
            return state
        tenant, key = _who(features.meta)
        unavailable: Mapping[str, str] = {}
        if self.limits is not None:
            deadline = asyncio.get_running_loop().time() + self.policy.deadline_s if _loop() else float("inf")
            need = features.prompt_tokens + features.max_tokens
            unavailable = self.limits.unavailable({m: need for m in self.policy.models}, deadline)
        probe = None
        if self.quotas is not None:
            quotas = self.quotas
            providers = self._providers
            skip = quotas.skipped(features.env()) if quotas.conditional else frozenset()

            def probe(model: str, tokens: int, cost: float) -> tuple[str, bool] | None:
                from engine.runtime.quotas import QuotaContext

                block = quotas.check(QuotaContext(tenant, key, model, providers[model], skip), tokens, cost)
                return None if block is None else (block.reason, block.on_exceed == "downgrade")
        # built directly: dataclasses.replace costs more than the rest of this method
        return RuntimeState(open_circuits=state.open_circuits, demoted=state.demoted, latency_ms=state.latency_ms,
                            unavailable=unavailable, quota_probe=probe, in_flight=in_flight)

    def _decide(self, request: Request, pinned: str | None, features: Features | None = None) -> Decision:
        if features is None:
            features = self.compiled.features(request)
        state = self._state(features)
        decision = decide_features(self.compiled, features, state)
        if pinned is None:
            return decision
        return self._pin(decision, pinned, state)

    def _pin(self, decision: Decision, pinned: str, state: RuntimeState) -> Decision:
        """`model: NAME` pins a model; `model: GROUP` the group's members; `model: ROUTE` that route's plan."""
        if pinned in self.policy.models:
            return dataclasses.replace(decision, plan=(pinned,), refusal=None, quota_refused=False)
        grouped = decide_group(self.compiled, pinned, decision, state)
        if grouped is not None:
            return grouped
        routed = decide_route(self.compiled, pinned, decision.features, state)
        if routed is not None:
            return routed
        raise RequestError(f"unknown model or route {pinned!r} (nor a model group); "
                           f"models: {', '.join(self.policy.models)}")

    def _walk(self, rid: str, request: Request, decision: Decision) -> Walk:
        tenant, key = _who(request.meta)
        f = decision.features
        loop_deadline = asyncio.get_running_loop().time() + self.policy.deadline_s
        skip = self.quotas.skipped(f.env()) if self.quotas is not None and self.quotas.conditional else frozenset()
        return Walk(request_id=rid, tenant=tenant, key=key, est_tokens=f.prompt_tokens + f.max_tokens,
                    est_cost_of=lambda m: m.est_cost(f.prompt_tokens_for(m), f.max_tokens), deadline=loop_deadline,
                    quota_skip=skip)

    def _refusal(self, decision: Decision, walk: Walk) -> Exception:
        if decision.quota_refused and self.quotas is not None:
            from engine.runtime.quotas import QuotaContext

            f = decision.features
            for m, _, cost, reason, _ in decision.rows:
                if reason is not None and reason.startswith("quota"):
                    block = self.quotas.check(QuotaContext(walk.tenant, walk.key, m.name, m.provider, walk.quota_skip),
                                              f.prompt_tokens + f.max_tokens, cost)
                    if block is not None:
                        return block.error()
        return RoutingRefused(decision.refusal or "refused", decision)

    def _cache_probe(self, request: Request,
                     pinned: str | None) -> tuple[str | None, Features | None, str | None, str]:
        """(cache key, features, route, key target): a key when the request may be served from the
        cache, else None; the features when they were computed on the way (the decision reuses them).

        The key's target is what the request is routed to: the pinned model, else the route its
        features match (the tree walk, without ranking a plan). The route already names every
        model an answer may come from, so a key never depends on the plan, and a hit needs no
        decision: health, limits and quotas shape which model a miss calls, while a hit calls none.
        """
        cache = self.cache
        if cache is None or request.stream:
            return None, None, None, ""
        opts = request.options
        if opts.seed is not None and not self.policy.cache.seeded:
            return None, None, None, ""  # a seed asks for one sample; the policy must say a cached one will do
        compiled = self.compiled
        features = compiled.features(request)
        when = compiled.cache_when
        if when is not None and not (
                when.holds(features) if isinstance(when, Predicate) else safe_truth(when, features.env())):
            return None, features, None, ""
        route: str | None
        if pinned is None or pinned in self.policy.models:
            cr = compiled.match(features.env())
            route = None if cr is None else cr.route.name  # a pinned model still reports its route
            if pinned is not None:
                target = "model\x1f" + pinned
            elif route is None:
                return None, features, None, ""  # refused: the decision says why
            else:
                target = route
        elif pinned in self._route_names:
            route = target = pinned
        else:
            return None, features, None, ""  # unknown (or a model group): the decision decides
        return self._key(request, target, request.messages), features, route, target

    def _key(self, request: Request, target: str, messages: Sequence[Message]) -> str:
        """The cache key of `request` routed to `target`, over `messages` (the request's, or a
        copy with the question blanked: the scope of the semantic layer)."""
        assert self.cache is not None
        tenant = request.meta.get("tenant")
        params: dict[str, Any] = {"max_tokens": request.max_tokens, "temperature": request.temperature,
                                  "stop": list(request.stop) or None}
        if request.options is not NO_OPTIONS:
            params.update(request.options.cache_fields())
        return self.cache.make_key(scope=None if tenant is None else str(tenant), target=target,
                                   messages=[(m.role, _cache_text(m)) for m in messages], params=params)

    async def _serve(self, walk: Walk, request: Request, decision: Decision, t0: float) -> RoutedCompletion:
        msgs = _messages(request)

        async def call(m: Model, timeout: float) -> Completion:
            return await self.adapters.get(m).generate(messages=msgs, max_tokens=request.max_tokens,
                                                       temperature=request.temperature,
                                                       stop=request.stop or None, timeout_s=timeout,
                                                       options=request.options)

        served = await self.dispatcher.run(walk, decision.plan, call, self_timed=self._keeps_deadline)
        return await self._result(served.value, served, walk, walk.request_id, decision, t0)

    def _keeps_deadline(self, m: Model) -> bool:
        return self.adapters.get(m).keeps_deadline

    async def _lead(self, job: _Job, rid: str, started: float, t0: float, request: Request, model: str | None,
                    features: Features) -> tuple[dict[str, Any], float]:
        """A cache miss: decide, serve, and hand the cache the value to store. The leader keeps
        its own result in `job`; requests that waited on it get the cached copy."""
        try:
            decision, walk = self._plan(rid, started, t0, request, model, features)
        except (RoutingRefused, QuotaExceeded, RequestError):
            job.logged = True
            raise
        job.decision, job.walk = decision, walk
        semantic, probe = self.semantic, None
        scope = self._semantic_scope(request, job.target) if semantic is not None else None
        if semantic is not None and scope is not None:
            probe = await semantic.probe(scope[0], scope[1], decision.query_type)
            if probe.hit is not None:
                job.semantic = probe.hit
                return dict(probe.hit.value), probe.hit.cost_usd
        try:
            await self._admit(rid, started, t0, request, decision, walk)
        except RateLimitExceeded:
            job.logged = True
            raise
        try:
            result = await self._serve(walk, request, decision, t0)
        except (AllModelsFailed, QuotaExceeded) as e:
            self.recorder.failed(rid, started, t0, request, decision, walk, e)
            job.logged = True
            raise
        job.result = result
        value = result.cache_value()
        value["cost_usd"] = result.cost_usd
        self._remember(semantic, probe, scope, value, result.cost_usd)
        return value, result.cost_usd

    @staticmethod
    def _remember(semantic: SemanticCache | None, probe: SemanticProbe | None, scope: tuple[str, str] | None,
                  value: dict[str, Any], cost: float) -> None:
        if semantic is not None and probe is not None and probe.threshold is not None and scope is not None:
            semantic.remember(scope[0], scope[1], probe.vector, value, cost)  # not awaited: off the reply's path

    def _semantic_scope(self, request: Request, target: str) -> tuple[str, str] | None:
        """(scope key, last user message): the exact key of the request with that message blanked."""
        msgs = request.messages
        last = next((i for i in range(len(msgs) - 1, -1, -1) if msgs[i].role == "user"), None)
        # only a plain-text question can be compared by meaning: an image or a part list is not
        if last is None or not isinstance(msgs[last].content, str):
            return None
        blanked = (*msgs[:last], Message("user", "\x00semantic"), *msgs[last + 1:])
        return self._key(request, target, blanked), msgs[last].text

    async def _result(self, c: Completion, served: Served[Any], walk: Walk, rid: str, decision: Decision,
                      t0: float) -> RoutedCompletion:
        record_attempt_cost(walk, c.input_tokens, c.output_tokens, c.cost_usd)
        await self.dispatcher.finish(served, c.input_tokens + c.output_tokens, c.cost_usd)
        return RoutedCompletion(
            text=c.text, model=served.model.name, model_id=c.model, provider=served.model.provider,
            finish_reason=c.finish_reason, input_tokens=c.input_tokens, output_tokens=c.output_tokens,
            cost_usd=walk.cost(), latency_ms=(time.perf_counter() - t0) * 1000,
            attempts=sum(1 for a in walk.attempts if a.outcome != "skipped"), fallbacks=walk.fallbacks,
            cached=False, route=decision.route, query_type=decision.query_type, request_id=rid,
            downgraded=decision.downgraded, tool_calls=c.tool_calls)

    def _memo_hit(self, memo: HitMemo, known: Known) -> RoutedCompletion | None:
        """A repeat's exact hit, from what its first occurrence computed; None when its entry is
        no longer stored (the full path then runs: the miss, single flight and all)."""
        started, t0 = self.clock.time(), time.perf_counter()
        assert self.cache is not None
        found = self.cache.take(known.key)
        if found is None:
            return None
        rid = _request_id()
        result = self._from_cache(memo.value(known.key, found[0], json.loads), rid, known.route, known.query_type, t0)
        self.recorder.cached_as(known.row, rid, started, result, found[1])
        return result

    def _from_cache(self, value: Mapping[str, Any], rid: str, route: str | None, query_type: str,
                    t0: float, *, kind: str = "exact", similarity: float | None = None) -> RoutedCompletion:
        calls = value.get("tool_calls")
        return RoutedCompletion(
            text=value["text"], model=value["model"], model_id=value["model_id"], provider=value["provider"],
            finish_reason=value["finish_reason"], input_tokens=value["input_tokens"],
            output_tokens=value["output_tokens"], cost_usd=0.0, latency_ms=(time.perf_counter() - t0) * 1000,
            attempts=0, fallbacks=0, cached=True, route=route, query_type=query_type,
            request_id=rid, tool_calls=tuple(ToolCall(*c) for c in calls) if calls else (), cache_kind=kind,
            similarity=similarity)

    def _on_health(self, event: HealthEvent) -> None:
        self.recorder.health_event(event)


@dataclass(slots=True)
class _Job:
    """What a cache-missing request learns while it leads the upstream call."""

    target: str = ""
    """What its cache key names (route or pinned model)."""
    decision: Decision | None = None
    walk: Walk | None = None
    result: RoutedCompletion | None = None
    logged: bool = False
    """Its failure is in the log already (written where it happened)."""
    semantic: SemanticHit | None = None
    """A paraphrase's cached answer served it (no upstream call)."""


_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(1)


def _request_id() -> str:
    """Unique across processes (random per-process prefix) without a syscall per request."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):012x}"


def _who(meta: Mapping[str, Any]) -> tuple[str | None, str | None]:
    tenant, key = meta.get("tenant"), meta.get("key")
    return (None if tenant is None else str(tenant)), (None if key is None else str(key))


def _messages(request: Request) -> Sequence[Message]:
    return request.messages  # a checked `Conversation` (or the one message of a prompt): the adapter skips its checks


def _cache_text(m: Message) -> str:
    """A message as the cache key sees it: its text, plus tool calls, the call a result answers
    and images by content hash (two requests differing only there get different answers)."""
    if isinstance(m.content, str) and not m.tool_calls and m.tool_call_id is None:
        return m.content
    extra = [[c.id, c.name, c.arguments] for c in m.tool_calls], m.tool_call_id, [i.content_hash for i in m.images]
    return m.text + "\x1f" + json.dumps(extra)


def _loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True

