"""`engine report`: one self-contained HTML file of charts from a decision log.

The file works offline: plotly.js is inlined once in the page head and every chart is a
`Plotly.newPlot` call on a div with a stable id (`CHARTS`). Nothing is fetched from a network:
no CDN, no fonts, no MathJax. The numbers are `engine stats`'s (`logstats.collect`) plus the time
series of `timeseries.series`; a JSON copy of both is embedded (`<script id="report-data">`) for
scripts that want the data rather than the pictures.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.ops.logstats import StatsReport, collect
from engine.ops.timeseries import Series, as_dict, series
from engine.policy.model import Policy

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["CHARTS", "build_report", "figures", "write_report"]

CHARTS: dict[str, str] = {
    "requests-over-time": "Requests over time, by outcome",
    "cost-over-time": "Cost over time, per model",
    "route-share": "Request share per route",
    "query-type-share": "Request share per query type",
    "latency-by-model": "Latency percentiles per model",
    "error-fallback-rates": "Fallback and error rates over time",
    "cache-hit-rate": "Cache hit rate and saved cost over time",
    "quota-consumption": "Spend per tenant (cumulative) against cost quotas",
    "quota-usage": "Quota usage in the latest window",
    "feedback": "Feedback: mean score per model and query type",
}
"""Chart div ids and titles, in page order."""

_MARKED_EVENTS = ("circuit_open", "circuit_closed", "demoted", "restored")
_MAX_MARKS = 24
_CONFIG = {"displaylogo": False, "responsive": True}


def _t(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc)


def build_report(db_path: str | Path, *, since: float | None = None, policy: Policy | None = None,
                 title: str = "LLM router report") -> str:
    """The report page for a decision log, as one HTML string.

    Args:
        db_path: the decision log.
        since: only requests from this Unix time on.
        policy: the policy that wrote the log, for quota limits (optional).
        title: page title.

    Raises:
        FileNotFoundError: no file at `db_path`.
        ValueError: the file is not a decision log.
    """
    import plotly.offline

    stats = collect(db_path, since=since, by="model", policy=policy)
    ts = series(db_path, since)
    drawn = figures(stats, ts, policy)
    parts = []
    for div_id, chart_title in CHARTS.items():
        fig = drawn.get(div_id)
        parts.append(f'<section><h2>{html.escape(chart_title)}</h2>')
        if fig is None:
            why = _why_empty(div_id, stats.totals["requests"])
            parts.append(f'<p class="empty" data-chart="{div_id}">{html.escape(why)}</p>')
        else:
            parts.append(fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=_CONFIG))
        parts.append("</section>")
    data = json.dumps({"stats": stats.as_dict(), "series": as_dict(ts)}, default=str).replace("</", "<\\/")
    return _PAGE.format(title=html.escape(title), plotlyjs=plotly.offline.get_plotlyjs(),
                        header=_header(stats, db_path), charts="\n".join(parts), data=data,
                        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"))


def write_report(db_path: str | Path, out: str | Path, **kwargs: Any) -> Path:
    """Write `build_report(db_path, **kwargs)` to `out` (parent folders created); returns the path."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build_report(db_path, **kwargs), encoding="utf-8")
    return path


def _why_empty(div_id: str, requests: int = 1) -> str:
    if not requests:
        return "No requests in this window."
    if div_id == "cost-over-time":
        return "Nothing was spent in this window (no model was billed for a call)."
    if div_id == "error-fallback-rates":
        return "No request fell back or failed, and no model call failed, in this window."
    if div_id == "cache-hit-rate":
        return "No cache hits in this window (the policy has no cache, or no request repeated)."
    if div_id == "quota-consumption":
        return "No tenant spent anything in this window."
    if div_id.startswith("quota"):
        return "No quota usage in this log (the policy has no quotas, or no request was counted yet)."
    if div_id == "feedback":
        return "No feedback yet: call router.feedback(request_id, score, label) to record how good answers were."
    return "No requests in this window."


def figures(stats: StatsReport, s: Series, policy: Policy | None) -> dict[str, go.Figure]:
    """The plotly figures of the report by chart id (`CHARTS`); charts without data are absent.

    Args:
        stats: `logstats.collect(..., by="model")` of the log.
        s: `timeseries.series` of the same log and window.
        policy: the policy that wrote the log, for quota limits (optional).
    """
    figs: dict[str, go.Figure] = {}
    if s.starts:
        x = [_t(v) for v in s.starts]
        marks = _marks(stats, s)
        figs["requests-over-time"] = _requests(x, s, marks)
        # a chart of nothing but zeros says nothing (and plotly draws it on a -1..1 axis): the
        # page explains the empty chart instead (`_why_empty`)
        if any(any(v) for v in s.cost_by_model.values()):
            figs["cost-over-time"] = _cost(x, s, marks)
        if s.route_counts:
            figs["route-share"] = _pie(s.route_counts)
        if s.query_type_counts:
            figs["query-type-share"] = _pie(s.query_type_counts)
        if any(s.fallbacks) or any(s.errors) or any(s.failed_attempts):
            figs["error-fallback-rates"] = _rates(x, s, marks)
        if any(s.cache_hits):
            figs["cache-hit-rate"] = _cache(x, s)
        if any(any(v) for v in s.spend_by_tenant.values()):
            figs["quota-consumption"] = _spend(x, s, policy)
    latency = [g for g in stats.groups if g["model"] is not None and g["latency_p50_ms"] is not None]
    if latency:
        figs["latency-by-model"] = _latency(latency)
    if stats.quotas:
        figs["quota-usage"] = _quota_usage(stats.quotas)
    if any(f["mean"] is not None for f in stats.feedback):
        figs["feedback"] = _feedback(stats.feedback)
    return figs




def _layout(fig: go.Figure, y: str, *, pct: bool = False, money: Sequence[float] | None = None,
            counts: Sequence[float] | None = None) -> go.Figure:
    fig.update_layout(template="plotly_white", height=380, margin={"l": 60, "r": 20, "t": 30, "b": 40},
                      legend={"orientation": "h", "y": -0.2}, hovermode="x unified", yaxis_title=y)
    # automargin: long model names and tick labels get the room they need instead of being cut
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True, rangemode="tozero")
    if pct:
        fig.update_yaxes(tickformat=".0%")
    if money is not None:
        fig.update_yaxes(**money_axis(money))
    if counts is not None:
        fig.update_yaxes(**count_axis(counts))
    return fig


def money_axis(values: Sequence[float]) -> dict[str, Any]:
    """Axis settings that print amounts as readable dollars: `$0.0012`, `$1.50`, `$1,200`.

    plotly's default SI ticks give `$735µ` for 0.000735; a fixed number of decimals, enough
    for the largest value to show two significant digits, reads as money at any scale.
    """
    top = max((abs(v) for v in values), default=0.0)
    decimals = 2 if top >= 1 or top == 0 else min(8, 1 - math.floor(math.log10(top)))
    return {"tickformat": f"$,.{decimals}f", "hoverformat": f"$,.{decimals + 2}f", "tickprefix": None}


def count_axis(values: Sequence[float]) -> dict[str, Any]:
    """Axis settings for whole counts: integer ticks only (never `0, 0.5, 1` drawn as `0, 1, 1`)."""
    top = max(values, default=0.0)
    return {"tickformat": ",d", **({"dtick": 1} if top <= 5 else {})}


def _marks(stats: StatsReport, s: Series) -> list[tuple[dt.datetime, str, str]]:
    """Events worth a vertical line on time charts (circuit and demotion changes, demo phases),
    as (time, label, hover text).

    Events closer together than a fortieth of the time axis share one line: drawn apart, their
    labels would overlap into an unreadable smudge. The line's label names the first event and
    how many more there are; hovering it lists them all.
    """
    events = sorted((e["last_ts"], f"{e['kind']} {e['model'] or ''}".strip()) for e in stats.events
                     if (e["kind"] in _MARKED_EVENTS or e["kind"].startswith("demo_")) and e["count"] == 1)
    if not events:
        return []
    span = max(s.starts[-1] + s.bucket_s - s.starts[0], s.bucket_s) if s.starts else 1.0
    groups: list[list[tuple[float, str]]] = []
    for ts, text in events:
        if groups and ts - groups[-1][0][0] < span / 40:
            groups[-1].append((ts, text))
        else:
            groups.append([(ts, text)])
    out = []
    for g in groups[:_MAX_MARKS]:
        label = g[0][1] + (f" (+{len(g) - 1})" if len(g) > 1 else "")
        out.append((_t(g[0][0]), label, "<br>".join(f"{_t(ts):%H:%M:%S} {html.escape(t)}" for ts, t in g)))
    return out


def _mark(fig: go.Figure, marks: Sequence[tuple[dt.datetime, str, str]]) -> None:
    for x, text, hover in marks:
        fig.add_shape(type="line", x0=x, x1=x, y0=0, y1=1, yref="paper", line={"dash": "dot", "width": 1,
                                                                                "color": "#888"})
        fig.add_annotation(x=x, y=1, yref="paper", text=html.escape(text), hovertext=hover, showarrow=False,
                           textangle=-90, xanchor="right", yanchor="top", font={"size": 9, "color": "#666"})


def _requests(x: list[dt.datetime], s: Series, marks: Sequence[tuple[dt.datetime, str, str]]) -> go.Figure:
    import plotly.graph_objects as go

    from engine.store.outcomes import COLORS, LABELS

    fig = go.Figure()
    for outcome, values in s.outcomes.items():
        total = sum(values)
        if not total:
            continue
        name = f"{LABELS.get(outcome, outcome)} ({total:,})"  # type: ignore[call-overload]
        fig.add_bar(x=x, y=list(values), name=name, meta=outcome,
                    marker={"color": COLORS.get(outcome, "#9e9e9e")})  # type: ignore[call-overload]
    fig.update_layout(barmode="stack")
    _mark(fig, marks)
    fig = _layout(fig, f"requests per {_width(s.bucket_s)}", counts=list(s.requests))
    return fig.update_layout(legend={"traceorder": "normal"})  # the vocabulary's order, not the stack's


def _cost(x: list[dt.datetime], s: Series, marks: Sequence[tuple[dt.datetime, str, str]]) -> go.Figure:
    import plotly.graph_objects as go

    fig = go.Figure()
    for model, values in s.cost_by_model.items():
        fig.add_scatter(x=x, y=list(values), name=model, mode="lines", stackgroup="cost")
    _mark(fig, marks)
    stacked = [math.fsum(col) for col in zip(*s.cost_by_model.values(), strict=True)]
    return _layout(fig, f"USD per {_width(s.bucket_s)}", money=stacked)


def _pie(counts: Mapping[str, int]) -> go.Figure:
    import plotly.graph_objects as go

    fig = go.Figure(go.Pie(labels=list(counts), values=list(counts.values()), hole=0.4, sort=False))
    fig.update_layout(template="plotly_white", height=360, margin={"l": 20, "r": 20, "t": 20, "b": 20})
    return fig


def _latency(groups: Sequence[Mapping[str, Any]]) -> go.Figure:
    import plotly.graph_objects as go

    models = [g["model"] for g in groups]
    fig = go.Figure()
    for p in ("p50", "p95", "p99"):
        fig.add_bar(x=models, y=[g[f"latency_{p}_ms"] for g in groups], name=p)
    fig.update_layout(barmode="group")
    fig = _layout(fig, "ms (whole request, retries and fallbacks included)")
    fig.update_layout(hovermode="closest")
    fig.update_xaxes(type="category")
    return fig


def _rates(x: list[dt.datetime], s: Series, marks: Sequence[tuple[dt.datetime, str, str]]) -> go.Figure:
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_scatter(x=x, y=s.rate(s.fallbacks, s.requests), name="requests that fell back", mode="lines+markers")
    fig.add_scatter(x=x, y=s.rate(s.errors, s.requests), name="requests that failed", mode="lines+markers")
    fig.add_scatter(x=x, y=s.rate(s.failed_attempts, s.attempts), name="model calls that failed",
                    mode="lines+markers", line={"dash": "dot"})
    _mark(fig, marks)
    return _layout(fig, "share", pct=True)


def _cache(x: list[dt.datetime], s: Series) -> go.Figure:
    from plotly.subplots import make_subplots

    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_bar(x=x, y=list(s.saved_by_cache), name="cost saved (USD)", opacity=0.5, secondary_y=True)
    fig.add_scatter(x=x, y=s.rate(s.cache_hits, s.requests), name="cache hit rate", mode="lines+markers",
                    secondary_y=False)
    _layout(fig, "hit rate")
    fig.update_yaxes(tickformat=".0%", rangemode="tozero", secondary_y=False)
    fig.update_yaxes(title_text="saved", secondary_y=True, showgrid=False, **money_axis(s.saved_by_cache))
    return fig


def _spend(x: list[dt.datetime], s: Series, policy: Policy | None) -> go.Figure:
    import plotly.graph_objects as go

    fig = go.Figure()
    for tenant, values in s.spend_by_tenant.items():
        fig.add_scatter(x=x, y=list(values), name=tenant, mode="lines")
    refused_at = [xi for xi, n in zip(x, s.quota_refused, strict=True) if n]
    if refused_at:
        fig.add_scatter(x=refused_at, y=[0.0] * len(refused_at), name="quota refusals", mode="markers",
                        marker={"symbol": "x", "size": 9, "color": "crimson"})
    for q in policy.quotas if policy is not None else ():
        if q.limit.cost_usd is not None and q.scope == ("tenant",):
            fig.add_hline(y=q.limit.cost_usd, line_dash="dash", line_color="crimson",
                          annotation_text=f"{q.name}: ${q.limit.cost_usd:g} per tenant per {q.window}")
    limits = [q.limit.cost_usd for q in (policy.quotas if policy is not None else ()) if q.limit.cost_usd]
    return _layout(fig, "USD spent since the start of the window shown",
                   money=[v for values in s.spend_by_tenant.values() for v in values] + limits)


def _quota_usage(quotas: Sequence[Mapping[str, Any]]) -> go.Figure:
    import plotly.graph_objects as go

    labels = [f"{q['quota']} · {q['scope_key'] or 'global'}" for q in quotas]
    fig = go.Figure()
    if all(q.get("used_ratio") is not None for q in quotas):
        fig.add_bar(x=[q["used_ratio"] for q in quotas], y=labels, orientation="h", name="share of the limit used")
        return _layout(fig, "", pct=False).update_xaxes(tickformat=".0%").update_layout(
            height=max(300, 28 * len(quotas)), hovermode="closest")
    fig.add_bar(x=[q["cost_usd"] for q in quotas], y=labels, orientation="h", name="cost (USD)")
    fig = _layout(fig, "").update_xaxes(**money_axis([q["cost_usd"] for q in quotas]))
    return fig.update_layout(height=max(300, 28 * len(quotas)), hovermode="closest",
                             xaxis_title="USD in the window (pass --policy to see limits)")


def _feedback(cells: Sequence[Mapping[str, Any]]) -> go.Figure:
    import plotly.graph_objects as go

    models = sorted({str(c["model"]) for c in cells})
    qts = sorted({str(c["query_type"]) for c in cells})
    z: list[list[float | None]] = [[None] * len(qts) for _ in models]
    text: list[list[str]] = [[""] * len(qts) for _ in models]
    for c in cells:
        i, j = models.index(str(c["model"])), qts.index(str(c["query_type"]))
        z[i][j] = c["mean"]
        text[i][j] = "" if c["mean"] is None else f"{c['mean']:.2f} (n={c['scored']})"
    fig = go.Figure(go.Heatmap(z=z, x=qts, y=models, text=text, texttemplate="%{text}", zmin=1, zmax=5,
                               colorscale="RdYlGn", colorbar={"title": "score"}))
    fig.update_layout(template="plotly_white", height=max(300, 45 * len(models)),
                      margin={"l": 20, "r": 20, "t": 20, "b": 40})
    fig.update_xaxes(automargin=True, type="category")
    fig.update_yaxes(automargin=True, type="category")
    return fig


def _width(bucket_s: float) -> str:
    for size, name in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if bucket_s >= size and bucket_s % size == 0:
            n = int(bucket_s // size)
            return name if n == 1 else f"{n} {name}s"
    return f"{bucket_s:g} s"


def _header(stats: StatsReport, db_path: str | Path) -> str:
    from engine.store.outcomes import COLORS, LABELS

    t = stats.totals
    span = (f"{_t(t['first_ts']):%Y-%m-%d %H:%M:%S} to {_t(t['last_ts']):%Y-%m-%d %H:%M:%S} UTC"
            if t["requests"] else "no requests")
    facts = [("requests", f"{t['requests']:,}"), ("cost", f"${t['cost_usd']:,.4f}"),
             ("saved by cache", f"${t['saved_cost_usd']:,.4f}"), ("cache hit rate", f"{t['cache_hit_rate']:.1%}"),
             ("fallback rate", f"{t['fallback_rate']:.1%}"), ("error rate", f"{t['error_rate']:.1%}"),
             ("quota refusals", f"{t['quota_refused']:,}"),
             ("p50 / p95", f"{_ms(t['latency_p50_ms'])} / {_ms(t['latency_p95_ms'])}")]
    cells = "".join(f"<div class='fact'><span>{html.escape(k)}</span><b>{html.escape(v)}</b></div>"
                    for k, v in facts)
    outcomes = "".join(
        f"<div class='fact' data-outcome='{html.escape(o)}' style='border-left: 6px solid "
        f"{COLORS.get(o, '#9e9e9e')}'><span>{html.escape(LABELS.get(o, o))}</span><b>{n:,}</b></div>"  # type: ignore[call-overload]
        for o, n in t["outcomes"].items() if n)
    calls = {a["model"]: a for a in stats.attempts}
    groups = list(stats.groups) + [{"model": m, "requests": 0, "share": 0.0, "cost_usd": 0.0, "latency_p50_ms": None,
                                    "latency_p95_ms": None, "fallbacks": 0, "cache_hits": 0}
                                   for m in calls if m not in {g["model"] for g in stats.groups}]
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in (
            str(g["model"] or "(not served)"), f"{g['requests']:,}", f"{g['share']:.1%}", f"${g['cost_usd']:,.4f}",
            _ms(g["latency_p50_ms"]), _ms(g["latency_p95_ms"]), *_calls(calls.get(g["model"])),
            f"{g['fallbacks']:,}", f"{g['cache_hits']:,}")) + "</tr>" for g in groups)
    table = ("<table id='per-model'><thead><tr><th>model</th><th>requests served</th><th>share</th><th>cost</th>"
             "<th>p50</th><th>p95</th><th>calls</th><th>failed calls</th><th>fallbacks</th><th>cache hits</th></tr>"
             f"</thead><tbody>{rows}</tbody></table>")
    return (f"<p class='meta'>{html.escape(str(db_path))} · {html.escape(span)}</p>"
            f"<div class='facts'>{cells}</div><div class='facts outcomes'>{outcomes}</div>{table}")


def _calls(a: Mapping[str, Any] | None) -> tuple[str, str]:
    """A model's calls (retries included) and failed calls, with the failure rate."""
    if a is None:
        return "-", "-"
    return f"{a['attempts']:,}", f"{a['failed']:,} ({a['error_rate']:.1%})" if a["attempts"] else "0"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f} ms"


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #222; }}
h1 {{ margin-bottom: 0.2rem; }} h2 {{ font-size: 1.1rem; margin: 2rem 0 0.5rem; }}
.meta {{ color: #666; margin-top: 0; }}
.facts {{ display: flex; flex-wrap: wrap; gap: 0.8rem; margin: 1rem 0; }}
.fact {{ border: 1px solid #ddd; border-radius: 6px; padding: 0.5rem 0.8rem; min-width: 8rem; }}
.fact span {{ display: block; color: #666; font-size: 0.8rem; }}
table {{ border-collapse: collapse; font-size: 0.9rem; }}
td, th {{ border-bottom: 1px solid #eee; padding: 0.3rem 0.7rem; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
.empty {{ color: #888; font-style: italic; }}
footer {{ color: #999; font-size: 0.8rem; margin-top: 3rem; }}
</style>
<script type="text/javascript">{plotlyjs}</script>
</head>
<body>
<h1>{title}</h1>
{header}
{charts}
<footer>Generated {generated} by engine report. Works offline: every script is inlined.</footer>
<script type="application/json" id="report-data">{data}</script>
</body>
</html>
"""
