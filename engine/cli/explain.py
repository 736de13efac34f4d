"""`engine explain`: the dry run. Which model would this request get, and why."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from engine.cli.common import EXIT_OK, EXIT_REFUSED, load_compiled_or_exit, parse_meta, policy_option, resolve_policy


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
def explain_cmd(policy: str | None, prompt: str | None, as_json: bool, mermaid: bool, meta: tuple[str, ...],
                max_tokens: int, temperature: float, stream: bool, system: str | None) -> None:
    """Show which model PROMPT would be routed to, and why, without calling any vendor.

    PROMPT may be '-' (or omitted) to read it from standard input.
    Exit 0 when a model is chosen, 3 when the request would be refused, 1 on an invalid
    policy, 2 on bad usage.
    """
    from engine.errors import RequestError
    from engine.routing.decide import explain
    from engine.routing.features import Request

    if prompt is None or prompt == "-":
        if sys.stdin.isatty() and prompt is None:
            raise click.UsageError("give a PROMPT, or '-' to read it from standard input")
        prompt = sys.stdin.read()
    compiled = load_compiled_or_exit(resolve_policy(policy))
    messages = ([("system", system)] if system else []) + [("user", prompt)]
    try:
        request = Request.of(messages=messages, max_tokens=max_tokens, temperature=temperature, stream=stream,
                             meta=parse_meta(meta))
    except RequestError as e:
        raise click.UsageError(str(e)) from None
    decision = explain(compiled, request)
    from engine.policy.prices import price_sources

    out = decision.as_dict()
    sources = price_sources(compiled.policy)  # only when `price: auto` or a catalogue window is in play
    if sources is not None:
        out["prices"] = sources
    if as_json:
        click.echo(json.dumps(out, indent=2, ensure_ascii=False))
    elif mermaid:
        from engine.cli.diagrams import decision_sequence

        click.echo(decision_sequence(decision, compiled))
    else:
        click.echo(render_pretty(out))
    raise SystemExit(EXIT_OK if decision.plan else EXIT_REFUSED)


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
    lines.append(f"features    prompt_tokens={f['prompt_tokens']} max_tokens={f['max_tokens']} "
                 f"temperature={f['temperature']} stream={f['stream']} signals: {sig}")
    if f["meta"]:
        lines.append("meta        " + " ".join(f"{k}={v}" for k, v in f["meta"].items()))
    if d["candidates"]:
        lines.append("")
        lines.append("candidates")
        width = max(len(c["model"]) for c in d["candidates"])
        for c in d["candidates"]:
            mark = "+" if c["eligible"] else "-"
            role = " (fallback)" if c["role"] == "fallback" else ""
            tail = f"  {c['reason']}" if c.get("reason") else ""
            cost = f"est ${c['est_cost_usd']:.6f}"
            lines.append(f"  {mark} {c['model']:<{width}}  score {c['score']}  {cost}{role}{tail}")
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
