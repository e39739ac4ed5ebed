// The dashboard page: fetches /dashboard/data for the chosen filters and draws it with plotly.js; a request's full
// record (/dashboard/requests/{id}, the API's /v1/requests/{id} under the dashboard's access rule) opens in a side panel addressed by the URL's hash, so a request can be linked to.
"use strict";

(() => {
  const REFRESH_MS = 15000;
  const UNRATED_NAMED = 4;
  const LABEL_CHARS = 40;
  const PANEL_PX = 440;
  const LEGEND_ROW_PX = 20;
  const SERVED = "request";
  const FRONT_COLOR = "#1d2330";
  const DEFAULT_FAMILY = "default";
  const ORIGIN_NAMES = { ledger: "served traffic", shipped: "shipped with Ponder", imported: "imported", results_dir: "PONDER_RESULTS_DIR" };
  const OUTCOME_COLORS = { served: "#2b8a3e", failed: "#c92a2a", cancelled: "#adb5bd" };
  const LATENCY_COLORS = { p50: "#74c0fc", p95: "#339af0", p99: "#1864ab" };
  const PLOT_CONFIG = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
  const AXIS = { gridcolor: "#eceef1", zerolinecolor: "#d0d4da", automargin: true };

  const $ = (selector) => document.querySelector(selector);
  const form = $("#filters");
  let pending = null;
  let renders = 0;

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key === "dataset") Object.assign(node.dataset, value);
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    node.append(...children.filter((c) => c !== null && c !== undefined).map((c) => (c instanceof Node ? c : String(c))));
    return node;
  }

  // Plotly's hover labels understand a few HTML tags; record text is not trusted to be free of them.
  const escape = (text) => String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  const fixed = (value, digits) => (value === null || value === undefined ? "–" : Number(value).toFixed(digits));
  const percent = (value) => (value === null ? "–" : `${(100 * value).toFixed(1)}%`);
  const shortId = (id) => (id.length > 14 ? `${id.slice(0, 8)}…${id.slice(-4)}` : id);

  // The strategy and its knobs as the ledger's `setting` writes them: majority(n=4, weight=none).
  function setting(strategy, params) {
    const knobs = Object.entries(params || {}).filter(([k, v]) => k !== "name" && v !== null).sort(([a], [b]) => (a < b ? -1 : 1));
    return knobs.length ? `${strategy}(${knobs.map(([k, v]) => `${k}=${v}`).join(", ")})` : strategy;
  }

  // Log-axis ticks at 1, 2 and 5 of each decade, written out in full (plotly's own label the minor ones "2", "5").
  function logTicks(values) {
    if (!values.length) return {};
    const low = Math.floor(Math.log10(Math.max(Math.min(...values), 1e-3)));
    const high = Math.ceil(Math.log10(Math.max(...values, 1e-3)));
    const ticks = [];
    for (let e = low; e <= high; e++) for (const m of [1, 2, 5]) ticks.push(m * 10 ** e);
    return { tickvals: ticks, ticktext: ticks.map((t) => t.toLocaleString()) };
  }

  function clock(epochS) {
    const when = new Date(epochS * 1000);
    const today = when.toDateString() === new Date().toDateString();
    return today ? when.toLocaleTimeString() : when.toLocaleString();
  }

  function layout(extra) {
    return {
      margin: { l: 56, r: 16, t: 10, b: 40 },
      font: { family: "system-ui, 'DejaVu Sans', sans-serif", size: 12, color: "#1d2330" },
      paper_bgcolor: "#fff",
      plot_bgcolor: "#fff",
      legend: { orientation: "h", x: 0, y: -0.18, yanchor: "top" },
      ...extra,
    };
  }

  function emptyNote(text) {
    return [{ text, showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5, font: { color: "#667085", size: 13 } }];
  }

  function query() {
    const params = new URLSearchParams();
    for (const name of ["model", "strategy", "window"]) {
      const value = form.elements[name].value;
      if (value) params.set(name, value);
    }
    return params;
  }

  async function refresh() {
    if (pending) pending.abort();
    pending = new AbortController();
    const status = $("#status");
    try {
      const response = await fetch(`/dashboard/data?${query()}`, { signal: pending.signal });
      const body = await response.json();
      if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
      render(body);
      status.className = "";
      const runs = body.benchmark_runs.length;
      const origins = Object.entries(body.sources).filter(([, names]) => names.length).map(([origin, names]) => `${names.length} ${ORIGIN_NAMES[origin]}`);
      status.textContent = `updated ${clock(body.generated_at)} · ${body.scanned} requests read${body.truncated ? " (the newest only)" : ""} · ${runs} benchmark run${runs === 1 ? "" : "s"}${origins.length ? ` (${origins.join(", ")})` : ""}`;
    } catch (error) {
      if (error.name === "AbortError") return;
      status.className = "error";
      status.textContent = `could not load: ${error.message}`;
    }
    document.body.dataset.renders = String(++renders);
  }

  function render(data) {
    fillFilter("model", data.filters.models);
    fillFilter("strategy", data.filters.strategies);
    accuracyPanels(data.points, data.families, data.pareto);
    latencyChart(data.latency);
    volumeChart(data.volume);
    recentTable(data.recent);
  }

  function fillFilter(name, values) {
    const select = form.elements[name];
    const chosen = select.value;
    const options = chosen && !values.includes(chosen) ? [...values, chosen] : values;
    select.replaceChildren(el("option", { value: "" }, "all"), ...options.map((v) => el("option", { value: v }, v)));
    select.value = chosen;
  }

  // One panel per task family, each with a series per strategy setting (and model, where the family has several)
  // and the family's Pareto front. Panels are kept across refreshes, so Plotly.react redraws them in place.
  function accuracyPanels(points, families, pareto) {
    const container = $("#accuracy-panels");
    const rated = points.filter((p) => p.accuracy !== null);
    const shown = families.filter((family) => rated.some((p) => p.family === family));
    const existing = new Map([...container.children].map((panel) => [panel.dataset.family, panel]));
    for (const [family, panel] of existing) if (!shown.includes(family)) Plotly.purge(panel.querySelector(".chart"));
    const panels = shown.map((family) => existing.get(family) || el(
      "div",
      { class: "family", dataset: { family } },
      el("h3", {}, family === DEFAULT_FAMILY ? "default" : family, el("span", {}, family === DEFAULT_FAMILY ? "requests that named no family" : "")),
      el("div", { class: "chart" }),
    ));
    container.replaceChildren(...panels);
    for (const panel of panels) {
      const family = panel.dataset.family;
      familyChart(panel.querySelector(".chart"), rated.filter((p) => p.family === family), pareto[family] || []);
    }
    $("#accuracy-empty").hidden = panels.length > 0;
    const unrated = points.filter((p) => p.accuracy === null).sort((a, b) => b.requests - a.requests);
    const named = unrated.slice(0, UNRATED_NAMED).map((p) => `${p.setting} on ${p.model} (${p.requests} requests)`);
    const more = unrated.length > UNRATED_NAMED ? ` and ${unrated.length - UNRATED_NAMED} more` : "";
    $("#unrated").textContent = unrated.length ? `Not plotted, no correctness known yet: ${named.join("; ")}${more}.` : "";
  }

  function familyChart(chart, rated, frontIds) {
    const models = new Set(rated.map((p) => p.model));
    const series = new Map();
    for (const p of rated) {
      const key = `${p.model}|${p.setting}`;
      if (!series.has(key)) series.set(key, { name: models.size > 1 ? `${p.label} · ${p.model}` : p.label, points: [] });
      series.get(key).points.push(p);
    }
    const traces = [...series.values()].sort((a, b) => a.name.localeCompare(b.name)).map(({ name, points }) => ({
      type: "scatter",
      mode: "markers",
      name,
      x: points.map((p) => p.mean_completion_tokens),
      y: points.map((p) => p.accuracy),
      error_y: { type: "data", array: points.map((p) => p.stderr), thickness: 1.2, width: 3 },
      marker: { symbol: points.map((p) => (p.source === SERVED ? "circle" : "diamond")), size: 10, line: { width: 1, color: "#fff" } },
      hovertext: points.map(hover),
      hoverinfo: "text",
      customdata: points.map((p) => p.id),
    }));
    const byId = new Map(rated.map((p) => [p.id, p]));
    const front = frontIds.map((id) => byId.get(id)).filter(Boolean);
    if (front.length) {
      traces.push({
        type: "scatter",
        mode: "lines+markers+text",
        name: "Pareto front",
        x: front.map((p) => p.mean_completion_tokens),
        y: front.map((p) => p.accuracy),
        line: { dash: "dash", color: FRONT_COLOR, width: 1.5 },
        marker: { symbol: "circle-open", size: 17, color: FRONT_COLOR, line: { width: 1.5 } },
        text: front.map((p) => (p.label.length > LABEL_CHARS ? `${p.label.slice(0, LABEL_CHARS - 1)}…` : p.label)),
        textposition: "top right",
        textfont: { size: 11, color: FRONT_COLOR },
        cliponaxis: false,
        hoverinfo: "skip",
        customdata: front.map((p) => p.id),
      });
    }
    // The panel grows with its legend, so that every series is listed without scrolling.
    chart.style.height = `${Math.max(PANEL_PX, LEGEND_ROW_PX * traces.length + 80)}px`;
    Plotly.react(chart, traces, layout({
      margin: { l: 56, r: 16, t: 16, b: 44 },
      legend: { orientation: "v", x: 1.02, xanchor: "left", y: 1, yanchor: "top", font: { size: 11 } },
      xaxis: { ...AXIS, type: "log", title: { text: "mean generated tokens per request (log scale)" }, ...logTicks(rated.map((p) => p.mean_completion_tokens)) },
      yaxis: { ...AXIS, title: { text: "accuracy" }, tickformat: ".0%", rangemode: "tozero" },
      hovermode: "closest",
    }), PLOT_CONFIG);
  }

  function hover(p) {
    const lines = [
      `<b>${escape(p.label)}</b>`,
      `${escape(p.source === SERVED ? "served traffic" : `benchmark ${p.run} (${ORIGIN_NAMES[p.origin] || p.origin})`)} · ${escape(p.model || "unknown model")}`,
      `family ${escape(p.family)} · setting ${escape(p.setting)}`,
      `accuracy ${percent(p.accuracy)} ± ${percent(p.stderr)} (${p.correct}/${p.known} known of ${p.requests})`,
      `generated tokens ${fixed(p.mean_completion_tokens, 1)} · total ${fixed(p.mean_total_tokens, 1)} per request`,
    ];
    if (p.pareto) lines.push("on the Pareto front");
    return lines.join("<br>");
  }

  function latencyChart(rows) {
    const x = rows.map((r) => r.strategy);
    const traces = ["p50", "p95", "p99"].map((q) => ({
      type: "bar",
      name: `latency ${q}`,
      x,
      y: rows.map((r) => r.latency[q]),
      marker: { color: LATENCY_COLORS[q] },
      customdata: rows.map((r) => r.latency.requests),
      hovertemplate: `%{x} ${q}: %{y:.3f} s (%{customdata} requests)<extra></extra>`,
    }));
    const timed = rows.filter((r) => r.ttft);
    if (timed.length) {
      traces.push({
        type: "scatter",
        mode: "markers",
        name: "time to first token p50",
        x: timed.map((r) => r.strategy),
        y: timed.map((r) => r.ttft.p50),
        marker: { symbol: "diamond", size: 10, color: "#1d2330" },
        hovertemplate: "%{x} TTFT p50: %{y:.3f} s<extra></extra>",
      });
    }
    Plotly.react("latency-chart", traces, layout({
      barmode: "group",
      xaxis: { ...AXIS, type: "category" },
      yaxis: { ...AXIS, title: { text: "seconds" }, rangemode: "tozero" },
      ...(rows.length ? {} : { annotations: emptyNote("No served requests in this window") }),
    }), PLOT_CONFIG);
  }

  function volumeChart(volume) {
    const x = volume.start.map((s) => new Date(s * 1000));
    const traces = Object.entries(volume.counts).map(([outcome, counts]) => ({
      type: "bar",
      name: outcome,
      x,
      y: counts,
      marker: { color: OUTCOME_COLORS[outcome] },
      hovertemplate: `%{x}: %{y} ${outcome}<extra></extra>`,
    }));
    const minutes = volume.bucket_s / 60;
    const span = minutes < 60 ? `${minutes} min` : minutes < 1440 ? `${minutes / 60} h` : `${minutes / 1440} d`;
    Plotly.react("volume-chart", traces, layout({
      barmode: "stack",
      bargap: 0.15,
      xaxis: { ...AXIS, type: "date" },
      yaxis: { ...AXIS, title: { text: `requests per ${span}` }, rangemode: "tozero" },
      ...(volume.start.length ? {} : { annotations: emptyNote("No requests in this window") }),
    }), PLOT_CONFIG);
  }

  function correctness(value) {
    if (value === true) return el("span", { class: "yes", title: "correct" }, "✓");
    if (value === false) return el("span", { class: "no", title: "incorrect" }, "✗");
    return el("span", { class: "unknown", title: "not known" }, "–");
  }

  function recentTable(rows) {
    const selected = selectedId();
    $("#recent tbody").replaceChildren(...rows.map((r) => {
      const tr = el(
        "tr",
        { dataset: { id: r.id }, class: r.id === selected ? "selected" : "" },
        el("td", {}, clock(r.time)),
        el("td", {}, el("a", { href: `#request=${r.id}`, title: r.id }, shortId(r.id))),
        el("td", {}, r.model || "–"),
        el("td", { class: "setting", title: r.setting }, r.setting),
        el("td", {}, el("span", { class: `badge ${r.outcome}`, title: r.finish_reason || "" }, `${r.outcome} ${r.status}`)),
        el("td", { class: "num" }, r.prompt_tokens),
        el("td", { class: "num" }, r.completion_tokens),
        el("td", { class: "num" }, fixed(r.latency_s, 2)),
        el("td", { class: "num" }, fixed(r.ttft_s, 2)),
        el("td", { dataset: { correct: String(r.correct) } }, correctness(r.correct)),
      );
      tr.addEventListener("click", () => { window.location.hash = `request=${r.id}`; });
      return tr;
    }));
    $("#recent-empty").hidden = rows.length > 0;
  }

  // The detail panel.

  function selectedId() {
    const match = window.location.hash.match(/^#request=([\w-]+)$/);
    return match ? match[1] : null;
  }

  async function showDetail() {
    const id = selectedId();
    const panel = $("#detail");
    for (const tr of document.querySelectorAll("#recent tbody tr")) tr.classList.toggle("selected", tr.dataset.id === id);
    if (!id) {
      panel.hidden = true;
      return;
    }
    panel.hidden = false;
    $("#detail-title").textContent = id;
    $("#detail-raw").href = `/dashboard/requests/${id}`;
    const body = $("#detail-body");
    body.replaceChildren(el("p", { class: "note" }, "loading…"));
    try {
      const response = await fetch(`/dashboard/requests/${id}`);
      const record = await response.json();
      if (!response.ok) throw new Error(record.error ? record.error.message : response.statusText);
      if (selectedId() === id) body.replaceChildren(...detailSections(record));
    } catch (error) {
      body.replaceChildren(el("p", { class: "error" }, `could not load: ${error.message}`));
    }
    panel.dataset.loaded = id;
  }

  function table(name, headers, rows, rowClass = () => "") {
    return el(
      "table",
      { class: name },
      el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows.map((cells, i) => el("tr", { class: rowClass(i) }, ...cells.map((c) => el("td", {}, c ?? "–"))))),
    );
  }

  const json = (value) => el("pre", {}, JSON.stringify(value, null, 2));

  function detailSections(record) {
    const detail = record.detail || {};
    const budget = record.budget || {};
    const summary = [
      ["time", clock(record.time)],
      ["model", record.model || "–"],
      ["route", `${record.route}${record.stream ? " (streamed)" : ""}`],
      ["setting", setting(record.strategy, record.params)],
      ["outcome", `${record.outcome} · HTTP ${record.status} · finish ${record.finish_reason || "–"}`],
      ["correct", el("span", {}, correctness(record.correct), record.feedback ? " (from feedback)" : record.correct === null ? "" : " (graded)")],
      ["tokens", `${record.prompt_tokens} prompt (${record.cached_tokens} cached) · ${record.completion_tokens} generated`],
      ["latency", `${fixed(record.latency_s, 3)} s${record.ttft_s === null ? "" : ` · first token ${fixed(record.ttft_s, 3)} s`}`],
    ];
    if (record.budget) summary.push(["budget", `${budget.used_tokens} of ${budget.max_total_tokens} tokens · ${fixed(budget.elapsed_s, 2)} of ${budget.deadline_s} s${budget.exhausted ? ` · ran out: ${budget.exhausted}` : ""}`]);
    if (record.error) summary.push(["error", el("span", { class: "error" }, `${record.error.code || record.error.status}: ${record.error.message}`)]);
    const sections = [el("dl", {}, ...summary.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]))];

    const stages = Object.entries(record.stages || {});
    if (stages.length) {
      sections.push(el("h3", {}, "Tokens by stage"), table("stages", ["stage", "prompt", "cached", "generated"], stages.map(([s, u]) => [s, u.prompt_tokens, u.cached_tokens, u.completion_tokens])));
    }
    if (Array.isArray(detail.candidates) && detail.candidates.length) {
      sections.push(el("h3", {}, `Candidates (${detail.candidates.length})`), candidatesTable(detail.candidates, detail.chosen));
    }
    if (detail.selection) sections.push(el("h3", {}, "Selection"), ...selection(detail.selection));
    if (Array.isArray(detail.trace) && detail.trace.length) {
      sections.push(el("h3", {}, "Trace"), table("trace", ["t (s)", "event", "what"], detail.trace.map(({ t, type, ...rest }) => [fixed(t, 3), type, JSON.stringify(rest)])));
    }
    sections.push(el("details", {}, el("summary", {}, "full record"), json(record)));
    return sections;
  }

  function candidatesTable(candidates, chosen) {
    const rows = candidates.map((c) => [
      c.index === chosen ? el("span", { title: "chosen" }, `★ ${c.index}`) : c.index,
      c.answer,
      c.group,
      c.tokens,
      c.finish_reason,
      Object.entries(c.scores || {}).map(([k, v]) => `${k} ${fixed(v, 3)}`).join(", ") || null,
      c.tests ? `${c.tests.passed}/${c.tests.total} ${c.tests.status}` : null,
      "correct" in c ? correctness(c.correct) : null,
      el("details", {}, el("summary", {}, (c.text || "").slice(0, 40) || "(empty)"), el("pre", {}, c.text || "")),
    ]);
    return table("candidates", ["#", "answer", "group", "tokens", "finish", "scores", "tests", "correct", "text"], rows, (i) => (candidates[i].index === chosen ? "chosen" : ""));
  }

  function selection(sel) {
    const { tally, winner, tied, tie_break: tieBreak, ...rest } = sel;
    const parts = [];
    if (Array.isArray(tally) && tally.length) {
      parts.push(table("tally", ["group", "answer", "votes", "weight"], tally.map((t) => [t.group === winner ? `★ ${t.group}` : t.group, t.answer, t.votes, fixed(t.weight, 3)]), (i) => (tally[i].group === winner ? "chosen" : "")));
      if (tied && tied.length) parts.push(el("p", { class: "note" }, `groups ${tied.join(", ")} tied; broken by ${tieBreak}`));
    }
    const scalars = Object.entries(rest).filter(([, v]) => v === null || typeof v !== "object");
    const nested = Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== null && typeof v === "object"));
    if (scalars.length) parts.push(el("p", { class: "note" }, scalars.map(([k, v]) => `${k}: ${v ?? "–"}`).join(" · ")));
    if (Object.keys(nested).length) parts.push(json(nested));
    return parts;
  }

  // Wiring.

  form.addEventListener("change", (event) => {
    if (event.target.name !== "auto") refresh();
  });
  $("#refresh").addEventListener("click", refresh);
  $("#detail-close").addEventListener("click", () => { window.location.hash = ""; });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && selectedId()) window.location.hash = "";
  });
  window.addEventListener("hashchange", showDetail);
  setInterval(() => {
    if (form.elements.auto.checked && !document.hidden) refresh();
  }, REFRESH_MS);

  refresh();
  showDetail();
})();
