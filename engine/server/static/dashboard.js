// Live dashboard of one `engine serve` process: polls /dashboard/data and redraws with plotly.js.
"use strict";

const EVERY_S = 5;
const CONFIG = { displayModeBar: false, responsive: true };
const LAYOUT = { margin: { t: 40, r: 20, b: 60, l: 60 }, paper_bgcolor: "#fff", plot_bgcolor: "#fff" };

function layout(title, extra) {
  return Object.assign({}, LAYOUT, { title: { text: title, font: { size: 14 } } }, extra || {});
}

// An empty chart says so, instead of drawing bare axes from -1 to 1.
function orEmpty(hasData, what, extra) {
  if (hasData) return extra || {};
  return { annotations: [{ text: what, showarrow: false, font: { color: "#777" } }],
           xaxis: { visible: false }, yaxis: { visible: false }, showlegend: false };
}

const AXES = { xaxis: { automargin: true }, yaxis: { automargin: true, rangemode: "tozero" } };

function bar(x, y, name, extra) {
  return Object.assign({ type: "bar", x: x, y: y, name: name }, extra || {});
}

// The outcome vocabulary (engine.store.outcomes) comes with the data: one name, label and colour
// per outcome, the same as engine stats, engine report and /metrics use.
const CHARTS = {
  timeline(d) {
    const x = d.minutes.map((m) => new Date(m.t * 1000));
    const traces = d.vocabulary.filter((v) => d.outcomes[v.outcome]).map((v) =>
      bar(x, d.minutes.map((m) => m[v.outcome] || 0), v.label + " (" + d.outcomes[v.outcome] + ")",
          { marker: { color: v.color }, meta: v.outcome }));
    return [traces, layout("Requests per minute by outcome", Object.assign(
      { barmode: "stack", legend: { traceorder: "normal" }, xaxis: { type: "date", automargin: true },
        yaxis: { automargin: true, rangemode: "tozero", tickformat: ",d" } },
      orEmpty(traces.length, "no requests yet")))];
  },
  models(d) {
    const names = Object.keys(d.models);
    return [[bar(names, names.map((n) => d.models[n].requests), "requests served"),
             bar(names, names.map((n) => d.models[n].errors), "failed calls", { marker: { color: "#c62828" } })],
            layout("Requests served and failed calls per model",
                   Object.assign({ barmode: "group" }, orEmpty(names.length, "no model called yet", AXES)))];
  },
  latency(d) {
    const names = Object.keys(d.models).filter((n) => d.models[n].p50_ms !== null);
    return [[bar(names, names.map((n) => d.models[n].p50_ms), "p50"),
             bar(names, names.map((n) => d.models[n].p95_ms), "p95")],
            layout("Latency per model (ms)",
                   Object.assign({ barmode: "group" }, orEmpty(names.length, "no latency measured yet", AXES)))];
  },
  tenants(d) {
    const names = Object.keys(d.tenants).filter((n) => d.tenants[n].cost_usd > 0);
    const top = Math.max(0, ...names.map((n) => d.tenants[n].cost_usd));
    // readable dollars at any scale (never plotly's SI "$735µ")
    const decimals = top >= 1 || top === 0 ? 2 : Math.min(8, 1 - Math.floor(Math.log10(top)));
    const money = { xaxis: { automargin: true }, yaxis: { automargin: true, rangemode: "tozero",
                                                          tickformat: "$,." + decimals + "f" } };
    return [[bar(names, names.map((n) => d.tenants[n].cost_usd), "cost (USD)")],
            layout("Spend per tenant (USD)", orEmpty(names.length, "nothing spent yet", money))];
  },
  routes(d) {
    const names = Object.keys(d.routes);
    const values = names.map((n) => d.routes[n]);
    return [[{ type: "pie", labels: names, values: values, hole: 0.4 }],
            layout("Requests per route", orEmpty(names.length, "no routed request yet"))];
  },
  errors(d) {
    const names = Object.keys(d.attempt_errors);
    const empty = names.length ? {} : { annotations: [{ text: "no failed attempts", showarrow: false }],
                                         xaxis: { visible: false }, yaxis: { visible: false } };
    return [[bar(names, names.map((n) => d.attempt_errors[n]), "attempts", { marker: { color: "#c62828" } })],
            layout("Failed attempts by error class", empty)];
  },
};

function tile(label, value) {
  const div = document.createElement("div");
  div.className = "tile";
  const b = document.createElement("b");
  b.textContent = value;
  const span = document.createElement("span");
  span.textContent = label;
  div.append(b, span);
  return div;
}

function drawTiles(d) {
  const total = Object.values(d.outcomes).reduce((a, b) => a + b, 0);
  const cost = Object.values(d.tenants).reduce((a, t) => a + t.cost_usd, 0);
  const hits = Object.values(d.tenants).reduce((a, t) => a + t.cache_hits, 0);
  const ok = (d.outcomes.served || 0) + (d.outcomes.cached || 0);
  const tiles = document.getElementById("tiles");
  tiles.replaceChildren(
    tile("requests", String(total)),
    tile("answered", total ? (100 * ok / total).toFixed(1) + " %" : "-"),
    tile("failed", String(d.outcomes.failed || 0)),
    tile("spend (USD)", cost.toFixed(4)),
    tile("cache hits", String(hits)),
    tile("policy", d.readiness.ready ? d.readiness.policy.version : "none"),
  );
}

function drawProviders(d) {
  const body = document.querySelector("#providers tbody");
  const rows = [];
  const providers = (d.readiness && d.readiness.providers) || {};
  for (const [name, p] of Object.entries(providers)) {
    const tr = document.createElement("tr");
    const models = Object.entries(p.models).map(([m, s]) => m + ": " + s).join(", ");
    for (const [text, cls] of [[name, ""], [p.state, p.state], [models, ""]]) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.append(td);
    }
    rows.push(tr);
  }
  body.replaceChildren(...rows);
}

async function refreshReport() {
  const status = document.getElementById("report-status");
  const resp = await fetch("/dashboard/report", { cache: "no-store" });
  if (!resp.ok) throw new Error("report: HTTP " + resp.status);
  const r = await resp.json();
  if (!r.available) {
    status.textContent = r.reason;
    return;
  }
  const grid = document.getElementById("report");
  for (const chart of r.charts) {
    let div = document.getElementById("report-" + chart.id);
    if (!div) {
      div = document.createElement("div");
      div.id = "report-" + chart.id;
      div.className = "chart";
      div.dataset.report = chart.id;
      grid.append(div);
    }
    if (chart.figure) {
      const lay = Object.assign({}, chart.figure.layout, { title: { text: chart.title, font: { size: 14 } },
                                                           height: 320, autosize: true });
      await Plotly.react(div, chart.figure.data, lay, CONFIG);
      div.dataset.rendered = "1";
    } else {
      div.textContent = chart.title + ": no data yet";
    }
  }
  status.textContent = "";
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const resp = await fetch("/dashboard/data", { cache: "no-store" });
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    const d = await resp.json();
    drawTiles(d);
    drawProviders(d);
    for (const div of document.querySelectorAll("[data-chart]")) {
      const [data, lay] = CHARTS[div.dataset.chart](d);
      await Plotly.react(div, data, lay, CONFIG);
      div.dataset.rendered = "1";
    }
    await refreshReport();
    status.className = "status";
    status.textContent = "updated " + new Date(d.generated_at * 1000).toLocaleTimeString();
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
  } catch (err) {
    status.className = "status bad";
    status.textContent = "cannot refresh: " + err.message;
  }
}

document.getElementById("every").textContent = String(EVERY_S);
refresh();
setInterval(refresh, EVERY_S * 1000);
