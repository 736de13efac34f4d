"""`engine explain`: the dry run. Which model would this request get, and why."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from engine.cli.common import EXIT_OK, EXIT_REFUSED, load_compiled_or_exit, parse_meta, policy_option, resolve_policy
from engine.routing.features import Request


def _read_data(path: str, what: str) -> Any:
    """A JSON or YAML file's content, or a usage error naming the flag."""
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text("utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise click.BadParameter(f"cannot read {path}: {e}", param_hint=what) from None


def _tools_arg(value: str) -> Any:
    if value.isdigit():
        return int(value)
    data = _read_data(value, "--tools")
    if isinstance(data, dict) and "tools" in data:
        data = data["tools"]
    if not isinstance(data, list):
        raise click.BadParameter(f"{value} must hold a list of tool definitions (or a number of tools)",
                                 param_hint="--tools")
    return data


def _quota_used(items: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """`NAME.MEASURE=AMOUNT` pairs (the quota name may itself contain dots)."""
    out: dict[str, dict[str, float]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        name, dot, measure = key.rpartition(".")
        try:
            amount = float(raw)
        except ValueError:
            amount = -1.0
        if not sep or not dot or not name or amount < 0:
            raise click.BadParameter(f"expected QUOTA.MEASURE=AMOUNT (e.g. tenant-daily-spend.cost_usd=19.99), "
                                     f"got {item!r}", param_hint="--quota-used")
        out.setdefault(name, {})[measure] = amount
    return out


@click.command("explain")
@policy_option
@click.argument("prompt", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the decision as one JSON object.")
@click.option("--mermaid", is_flag=True, help="Print the request's plan as a mermaid sequence diagram.")
@click.option("--meta", "-m", multiple=True, metavar="KEY=VALUE", help="Request metadata (repeatable).")
@click.option("--max-tokens", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--temperature", type=click.FloatRange(0, 2), default=0.7, show_default=True)
@click.option("--stream", is_flag=True, help="Decide as for a streaming request.")
@click.option("--system", default=None, help="A system prompt to send before PROMPT.")
@click.option("--tools", "tools", default=None, metavar="FILE|N",
              help="Offer tools: a JSON/YAML file of OpenAI tool definitions, or a number of placeholder tools.")
@click.option("--image", "images", count=True, help="Attach an image to the prompt (repeat for more).")
@click.option("--json-schema", "json_schema", default=None, metavar="FILE",
              help="Ask for output matching the JSON Schema in FILE (response_format json_schema).")
@click.option("--json-object", is_flag=True, help="Ask for JSON object output (response_format json_object).")
@click.option("--prompt-tokens", type=click.IntRange(min=0), default=None, metavar="N",
              help="Decide as for a prompt of N tokens (instead of estimating PROMPT).")
@click.option("--request-id", default="", help="Seeds the order inside model groups, as live traffic does.")
@click.option("--quota-used", multiple=True, metavar="QUOTA.MEASURE=AMOUNT",
              help="Quota usage so far in the current window (repeatable); shows headroom and verdicts.")
@click.option("--state", "state_file", default=None, metavar="FILE",
              help="Runtime state as in an `engine test` case's `state:` (open_circuits, quota_used, ...).")
@click.option("--cache", "show_cache", is_flag=True,
              help="Also say whether the policy's cache would serve PROMPT now (exact or semantic, similarity).")
def explain_cmd(policy: str | None, prompt: str | None, as_json: bool, mermaid: bool, meta: tuple[str, ...],
                max_tokens: int, temperature: float, stream: bool, system: str | None, tools: str | None,
                images: int, json_schema: str | None, json_object: bool, prompt_tokens: int | None,
                request_id: str, quota_used: tuple[str, ...], state_file: str | None, show_cache: bool) -> None:
    """Show which model PROMPT would be routed to, and why, without calling any vendor.

    PROMPT may be '-' (or omitted) to read it from standard input; with --prompt-tokens it
    may be left out.
    Exit 0 when a model is chosen, 3 when the request would be refused, 1 on an invalid
    policy, 2 on bad usage.
    """
    from engine.errors import RequestError
    from engine.policy.testing import build_request, build_state
    from engine.routing.why import explain_request

    if as_json and mermaid:
        raise click.UsageError("--json and --mermaid are two output formats: choose one")
    if json_schema and json_object:
        raise click.UsageError("--json-schema and --json-object are two output formats: choose one")
    if prompt is None and prompt_tokens is not None:
        prompt = ""
    elif prompt is None or prompt == "-":
        if sys.stdin.isatty() and prompt is None:
            raise click.UsageError("give a PROMPT, or '-' to read it from standard input")
        prompt = sys.stdin.read()
    spec: dict[str, Any] = {"prompt": prompt or None, "system": system, "max_tokens": max_tokens,
                            "temperature": temperature, "stream": stream, "meta": parse_meta(meta),
                            "prompt_tokens": prompt_tokens, "request_id": request_id}
    _surface(spec, tools, images, json_schema, json_object)
    raw_state = _raw_state(state_file, quota_used)
    compiled = load_compiled_or_exit(resolve_policy(policy))
    try:
        request = build_request(spec)
        state, usage = build_state(raw_state)
        explained = explain_request(compiled, request, state, quota_used=usage)
    except (RequestError, ValueError, TypeError) as e:
        raise click.UsageError(str(e)) from None
    decision = explained.decision
    live_cache = _probe_cache(resolve_policy(policy), request) if show_cache and not stream else None
    from engine.policy.prices import price_sources

    report = dict(explained.report)
    sources = price_sources(compiled.policy)  # only when `price: auto` or a catalogue window is in play
    if sources is not None:
        report["prices"] = sources
    if live_cache is not None:
        report["cache_probe"] = live_cache
    if as_json:
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
    elif mermaid:
        from engine.cli.diagrams import decision_sequence

        click.echo(decision_sequence(decision, compiled))
    else:
        click.echo(render_pretty(report))
        if live_cache is not None:
            click.echo("\n" + render_cache(live_cache))
    raise SystemExit(EXIT_OK if decision.plan else EXIT_REFUSED)


def _surface(spec: dict[str, Any], tools: str | None, images: int, json_schema: str | None,
             json_object: bool) -> None:
    if tools is not None:
        spec["tools"] = _tools_arg(tools)
    if images:
        spec["images"] = images
    if json_schema is not None:
        spec["json_schema"] = _read_data(json_schema, "--json-schema")
    elif json_object:
        spec["response_format"] = {"type": "json_object"}


def _raw_state(state_file: str | None, quota_used: tuple[str, ...]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    if state_file is not None:
        loaded = _read_data(state_file, "--state")
        if not isinstance(loaded, dict):
            raise click.BadParameter(f"{state_file} must hold a mapping", param_hint="--state")
        raw = loaded
    used = _quota_used(quota_used)
    if used:
        raw = {**raw, "quota_used": {**(raw.get("quota_used") or {}), **used}}
    return raw


def _num(v: float) -> str:
    return f"{int(v):,}" if float(v).is_integer() else f"{v:g}"


def _fmt(v: Any) -> str:
    return repr(v) if isinstance(v, str) else json.dumps(v)


def render_pretty(d: dict[str, Any]) -> str:
    """Human-readable explain output."""
    lines = [
        f"route       {d['route'] or '(none)'}",
        f"query type  {d['query_type']}",
        f"model       {d['model'] or 'REFUSED'}",
        f"plan        {' -> '.join(d['plan']) or '(empty)'}",
    ]
    if d.get("downgraded"):
        lines.append("            (downgraded by a quota)")
    if d.get("refusal"):
        lines.append(f"refusal     {d['refusal']}")
    f = d["features"]
    sig = ", ".join(k for k, v in f["signals"].items() if v) or "none"
    counts = _token_counts(d["candidates"])
    by = f" ({next(iter(counts))[1]})" if len(counts) == 1 else ""
    lines.append(f"features    prompt_tokens={f['prompt_tokens']}{by} max_tokens={f['max_tokens']} "
                 f"temperature={f['temperature']} stream={f['stream']} signals: {sig}")
    if f.get("needs"):
        lines.append(f"needs       {', '.join(f['needs'])}")
    if f["meta"]:
        lines.append("meta        " + " ".join(f"{k}={v}" for k, v in f["meta"].items()))
    if d.get("classifier"):
        c = d["classifier"]
        ev = ", ".join(f"{label} {score:g}" for label, score in c["evidence"])
        second = ""
        if c.get("second_opinion"):
            second = "; cues unsure, n-gram model: " + ", ".join(f"{label} {p:.0%}" for label, p in c["second_opinion"])
        lines.append(f"classifier  {c['label']} (scores: {ev}{second})")
    if d.get("cache"):
        c = d["cache"]
        lines.append(f"cache       {'eligible' if c['eligible'] else 'not used'}: {c['why']}")
    if d.get("downgrade"):
        dg = d["downgrade"]
        lines.append(f"downgrade   would pick {dg['would_pick'] or 'nothing (no model of the route fits)'}; "
                     f"can reach {', '.join(dg['reach']) or 'nothing'}")
    _routes_section(lines, d.get("routes_not_matched") or [])
    _candidates_section(lines, d["candidates"])
    _quotas_section(lines, d.get("quotas") or [])
    if d.get("limits"):
        lines.append("")
        lines.append("limits")
        for lim in d["limits"]:
            parts = [f"{scope} {' '.join(f'{k}={v}' for k, v in lim[key].items())}"
                     for scope, key in (("model", "model_limits"), ("provider " + lim["provider"], "provider_limits"))
                     if key in lim]
            lines.append(f"  {lim['model']}: {'; '.join(parts)}")
    if d.get("prices"):
        lines.append("")
        lines.append("prices (USD per million tokens in / out, context window)")
        width = max(len(m) for m in d["prices"])
        for m, p in d["prices"].items():
            window = f"{p['context_window']:,}" if p["context_window"] else "?"
            where = p["price_source"] if p["price_source"] == p["context_window_source"] else (
                f"{p['price_source']}; window: {p['context_window_source']}")
            lines.append(f"  {m:<{width}}  ${p['input']:g} / ${p['output']:g}  {window}  from {where}")
    if d["trace"]:
        lines.append("")
        lines.append("trace")
        lines.extend(f"  {t}" for t in d["trace"])
    return "\n".join(lines)


def _token_counts(candidates: list[dict[str, Any]]) -> set[tuple[int, str]]:
    """The distinct (prompt tokens, what counted them) the candidates were checked with."""
    return {(c["prompt_tokens"], c["tokens_by"]) for c in candidates if "prompt_tokens" in c}


def _routes_section(lines: list[str], skipped: list[dict[str, Any]]) -> None:
    if not skipped:
        return
    lines.append("")
    lines.append("routes not matched")
    for r in skipped:
        seen = ", ".join(f"{k}={_fmt(v)}" for k, v in r["values"].items())
        lines.append(f"  - {r['route']}: {r['false']} is false" + (f" ({seen})" if seen else ""))


def _candidates_section(lines: list[str], candidates: list[dict[str, Any]]) -> None:
    if not candidates:
        return
    lines.append("")
    lines.append("candidates")
    width = max(len(c["model"]) for c in candidates)
    # one count for every model is said once, on the features line; else each row says its own
    per_model = len(_token_counts(candidates)) > 1
    for c in candidates:
        mark = "+" if c["eligible"] else "-"
        role = " (fallback)" if c["role"] == "fallback" else ""
        tail = f"  {c['reason']}" if c.get("reason") else ""
        cost = f"est ${c['est_cost_usd']:.6f}"
        tokens = f"  tokens {c['prompt_tokens']:,} ({c['tokens_by']})" if per_model else ""
        lines.append(f"  {mark} {c['model']:<{width}}  score {c['score']}  {cost}{role}{tokens}{tail}")


def _quotas_section(lines: list[str], quotas: list[dict[str, Any]]) -> None:
    if not quotas:
        return
    lines.append("")
    lines.append("quotas")
    for q in quotas:
        limit = " ".join(f"{k}={_num(v)}" for k, v in q["limit"].items())
        head = f"  {q['name']} ({'/'.join(q['scope'])}, per {q['window']}, {limit}, on_exceed={q['on_exceed']})"
        if "headroom" in q:
            head += " headroom " + " ".join(f"{k}={_num(v)}" for k, v in q["headroom"].items())
        lines.append(f"{head}: {q['verdict']}")


def _probe_cache(path: str | Path, request: Request) -> dict[str, Any]:
    """Ask a router on the policy (no log, no vendor call) whether its cache would serve the request."""
    import asyncio

    from engine.runtime.router import Router

    async def run() -> dict[str, Any]:
        async with Router.from_file(path, log_path=None) as router:
            return await router.probe_cache(messages=request.messages, max_tokens=request.max_tokens,
                                            temperature=request.temperature, meta=request.meta,
                                            options=request.options)

    return asyncio.run(run())


def render_cache(c: dict[str, Any]) -> str:
    """One line: would the cache serve this request now."""
    kind = c["cache"]
    if kind in ("off", "bypass", "exact"):
        return {"off": "cache       off", "bypass": "cache       bypassed (cache.when is false)",
                "exact": "cache       exact hit"}[kind]
    sim, thr = c.get("similarity"), c.get("threshold")
    if kind == "semantic":
        return f"cache       semantic hit (similarity {sim:.3f} >= threshold {thr:.2f}, every guard passed)"
    if "threshold" not in c:
        return "cache       miss"
    if thr is None:
        return "cache       miss (this query type is kept out of the semantic cache)"
    if sim is None:
        return "cache       miss (no entry in this scope yet)"
    why = f"refused by the {c['refused_by']} guard" if c.get("refused_by") else f"nearest {sim:.3f} < {thr:.2f}"
    return f"cache       miss ({why})"
