// The policy store's live dashboard (policy_store/dashboard.py): polls /v1/dashboard every two
// seconds, /v1/history every ten, and redraws. Every value from the server goes in through
// textContent or SVG attributes, never as HTML: document text is untrusted transcript input.
// The charts are drawn here as inline SVG: no chart library, no network beyond the store.
"use strict";

const POLL_MS = 2000;
const SVG_NS = "http://www.w3.org/2000/svg";

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

const usd = (x) => {
  if (x === null || x === undefined) return "—";
  const v = Number(x);
  return "$" + (Math.abs(v) >= 1 ? v.toFixed(2) : String(parseFloat(v.toPrecision(3))));
};
const num = (x) => (x === null || x === undefined ? "—" : String(x));
const rate = (x) => (x === null || x === undefined ? "—" : `${x}/s`);
const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

// Label sources of a quality estimate, in the order shown; then the calls that taught no quality.
const SOURCES = [["judge", "judged"], ["canary", "canary"], ["agreement", "agreement"], ["downstream", "downstream"], ["human", "human"]];
const signed = (x, digits = 2) => (x === null || x === undefined ? "—" : (x >= 0 ? "+" : "") + Number(x).toFixed(digits));
const count = (x) => String(Math.round(Number(x || 0) * 10) / 10);

function evidenceText(ev) {
  const parts = SOURCES.filter(([key]) => key === "judge" || key === "canary" || ev[key]).map(([key, label]) => `${count(ev[key])} ${label}`);
  if (ev.failure) parts.push(`${count(ev.failure)} failed`);
  if (ev.unlabelled) parts.push(`${count(ev.unlabelled)} unlabelled`);
  return parts.join(" · ");
}

function gapCell(ev, warn) {
  const gap = ev.canary_gap;
  if (gap === null || gap === undefined) return el("td", { class: "num gap muted" }, "—");
  return el("td", { class: gap > warn ? "num gap over" : "num gap", "data-gap": gap, title: `more than ${warn} is flagged` }, gap.toFixed(2));
}

function poolTable(role, warn) {
  const table = el("table", { class: "pool" });
  const head = el("tr");
  head.append(el("th", {}, "model"));
  for (const name of ["Q", "quality ± sd", "canary", "gap"]) head.append(el("th", { class: "num" }, name));
  const thead = el("thead");
  thead.append(head);
  table.append(thead);
  const body = el("tbody");
  const models = Object.keys(role.q_values).sort((a, b) => (b === role.model) - (a === role.model) || role.q_values[b] - role.q_values[a]);
  for (const model of models) {
    const ev = (role.evidence || {})[model] || {};
    const row = el("tr", { class: model === role.model ? "chosen" : "", "data-model": model });
    row.append(
      el("td", { class: "pool-model" }, model),
      el("td", { class: "num" }, role.q_values[model].toFixed(2)),
      el("td", { class: "num" }, ev.quality === undefined ? "—" : `${signed(ev.quality)} ± ${Number(ev.quality_sd).toFixed(2)}`),
      el("td", { class: "num" }, signed(ev.canary_mean)),
      gapCell(ev, warn),
    );
    const sources = el("tr", { class: "sources" });
    sources.append(el("td", { colspan: 5 }, evidenceText(ev)));
    body.append(row, sources);
  }
  table.append(body);
  return table;
}

function sparkPath(values, x, y) {
  // "M x,y L x,y ..." through the values; a null value lifts the pen (a gap in the line).
  let d = "", pen = "M";
  for (const [t, v] of values) {
    if (v === null || v === undefined) { pen = "M"; continue; }
    d += `${pen}${x(t).toFixed(1)},${y(v).toFixed(1)} `;
    pen = "L";
  }
  return d.trim();
}

function sparkline(series, lines, label, shown) {
  // One small chart of one or more lines ([css class, [[time, value], ...]]) on a shared scale;
  // the caption shows `shown` of the first line.
  const W = 120, H = 32, P = 2;
  const figure = el("figure", { class: "spark", "data-series": series });
  const isKnown = (p) => p[1] !== null && p[1] !== undefined;
  const main = lines[0][1].filter(isKnown);
  const caption = el("figcaption");
  caption.append(el("span", { class: "muted" }, `${label} `), el("b", {}, shown(main)));
  const box = svg("svg", { class: "sparkline", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
  figure.append(caption, box);
  const all = lines.flatMap(([, values]) => values.filter(isKnown));
  if (!all.length) return figure;
  const times = lines.flatMap(([, values]) => values.map((p) => p[0]));
  const t0 = Math.min(...times), t1 = Math.max(...times);
  const lo = Math.min(...all.map((p) => p[1])), hi = Math.max(...all.map((p) => p[1]));
  const x = (t) => P + ((W - 2 * P) * (t - t0)) / (t1 - t0 || 1);
  const y = (v) => (hi === lo ? H / 2 : H - P - ((H - 2 * P) * (v - lo)) / (hi - lo));
  for (const [cls, values] of lines) {
    const known = values.filter(isKnown);
    if (known.length === 1) box.append(svg("circle", { class: `${cls} spark-dot`, cx: x(known[0][0]).toFixed(1), cy: y(known[0][1]).toFixed(1), r: 2 }));
    else if (known.length) box.append(svg("path", { class: cls, d: sparkPath(values, x, y) }));
  }
  return figure;
}

function sparklines(history) {
  // Quality estimate of the assigned model (with its canary score, dashed), reward, spend per minute.
  const holder = el("div", { class: "sparks" });
  const points = (history && history.points) || [];
  const column = (i) => points.map((p) => [p[0], p[i]]);
  const latest = (format) => (known) => (known.length ? format(known[known.length - 1][1]) : "—");
  const total = (known) => usd(known.reduce((sum, p) => sum + p[1], 0));
  const spend = (history && history.spend_per_minute) || [];
  const charts = [
    sparkline("quality", [["spark-line", column(2)], ["spark-canary", column(4)]], "quality", latest((v) => signed(v))),
    sparkline("reward", [["spark-line", column(5)]], "reward", latest((v) => v.toFixed(2))),
    sparkline("spend", [["spark-line", spend]], "spend, last hour", total),
  ];
  charts[0].setAttribute("title", "quality estimate of the assigned model over time; dashed: its canary score");
  charts[1].setAttribute("title", "expected reward (Q-value) of the assigned model over time");
  charts[2].setAttribute("title", "spend on this role per minute (calls and their judging)");
  holder.append(...charts);
  return holder;
}

// The contexts decided on their own (policy_store/state.py): where a chunk's domain, language or
// size gets another model than the role's.
function contextList(contexts) {
  const list = el("ul", { class: "contexts muted" });
  for (const c of contexts) {
    const version = c.published_version === null || c.published_version === undefined ? "" : ` v${c.published_version}`;
    const item = el("li", { "data-context": c.context, title: c.reason }, `${c.context}: ${c.model}${version}`);
    list.append(item);
  }
  return list;
}

function renderAssignments(policy, warn, history) {
  const holder = document.getElementById("assignments");
  holder.replaceChildren();
  for (const role of policy.roles) {
    const card = el("article", { class: "role-card", "data-role": role.role });
    const title = el("div", { class: "card-head" });
    title.append(el("span", { class: "role" }, role.role), el("span", { class: "model" }, role.model));
    if (role.published_version !== null && role.published_version !== undefined) {
      title.append(el("span", { class: "muted version" }, `v${role.published_version}`));
    }
    card.append(title, poolTable(role, warn), el("p", { class: "reason" }, role.reason));
    if (role.contexts && role.contexts.length) card.append(contextList(role.contexts));
    card.append(sparklines((history.roles || {})[role.role]));
    holder.append(card);
  }
}

function chart(points, limit) {
  const W = 640, H = 190, L = 56, R = 10, T = 10, B = 24;
  const box = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
  if (!points.length) return box;
  const x0 = points[0][0], x1 = points[points.length - 1][0] || x0 + 1;
  const top = Math.max(limit || 0, ...points.map((p) => p[1])) * 1.1 || 1e-6;
  const x = (t) => L + ((W - L - R) * (t - x0)) / (x1 - x0 || 1);
  const y = (v) => H - B - ((H - T - B) * v) / top;
  box.append(
    svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }),
    svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }),
    svg("text", { x: 4, y: H - B }, "$0"),
    svg("text", { x: 4, y: T + 10 }, usd(top)),
    svg("text", { x: L, y: H - 6 }, clock(x0)),
    svg("text", { x: W - R - 36, y: H - 6 }, clock(x1)),
  );
  if (limit !== null && limit !== undefined) {
    box.append(svg("line", { class: "limit", x1: L, y1: y(limit), x2: W - R, y2: y(limit) }));
  }
  box.append(svg("polyline", { class: "spend", points: points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ") }));
  return box;
}

function renderBudgets(budgets) {
  const holder = document.getElementById("budgets");
  holder.replaceChildren();
  for (const b of budgets) {
    const figure = el("figure", { class: "budget", "data-feed": b.feed });
    const caption = el("figcaption");
    caption.append(el("b", {}, b.feed), document.createTextNode(": "));
    const spent = el("span", { class: b.limit_usd !== null && b.spent_usd > b.limit_usd ? "spent over" : "spent" }, usd(b.spent_usd));
    caption.append(spent, document.createTextNode(b.limit_usd === null ? " this hour (no budget set)" : ` of ${usd(b.limit_usd)} this hour`));
    figure.append(caption, chart(b.points, b.limit_usd));
    holder.append(figure);
  }
}

function renderThroughput(rows, llm) {
  const body = document.querySelector("#throughput tbody");
  body.replaceChildren();
  for (const r of rows) {
    const row = el("tr", { "data-stage": r.stage });
    row.append(
      el("td", {}, r.stage), el("td", { class: "muted" }, r.topic),
      el("td", { class: "num" }, rate(r.in_per_s)), el("td", { class: "num" }, rate(r.done_per_s)),
      el("td", { class: "num lag" }, num(r.lag)),
    );
    body.append(row);
  }
  const models = document.querySelector("#llm tbody");
  models.replaceChildren();
  for (const [model, s] of Object.entries(llm)) {
    const row = el("tr", { "data-model": model });
    row.append(
      el("td", {}, model), el("td", { class: "num" }, s.calls), el("td", { class: "num" }, s.errors),
      el("td", { class: "num" }, usd(s.cost_usd)),
      el("td", { class: "num" }, s.mean_latency_ms === null ? "—" : `${s.mean_latency_ms} ms`),
    );
    models.append(row);
  }
}

function renderDocuments(docs) {
  const list = document.getElementById("documents");
  list.replaceChildren();
  for (const d of docs) {
    const item = el("li", { class: "document", "data-stream": d.stream_id, "data-topic": d.topic_id });
    const title = el("div");
    title.append(el("span", { class: "doc-title" }, d.name));
    title.append(el("span", { class: d.final ? "badge final" : "badge" }, d.final ? "final" : "open"));
    title.append(el("span", { class: "muted" }, `  ${d.stream_id} · sentences ${d.first_id}–${d.last_id} · v${d.version}`));
    const aspects = el("ul", { class: "aspects" });
    for (const a of d.aspects) {
      const line = el("li");
      line.append(el("b", {}, `${a.name} (${a.count})`));
      if (a.first) line.append(document.createTextNode(` ${a.first}`));
      aspects.append(line);
    }
    item.append(title, aspects);
    list.append(item);
  }
}

// The read token, when the store needs one: given once as /dashboard#token=..., kept for this tab
// only, and taken out of the address (the fragment never reaches the server or its logs).
const TOKEN_KEY = "olp-read-token";

function readToken() {
  const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (match) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

async function getJson(path) {
  const token = readToken();
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const response = await fetch(path, { cache: "no-store", headers });
  if (response.status === 401) throw new Error("it needs the read token: open /dashboard#token=<read token>");
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return response.json();
}

// The history changes slowly (a point per role every few seconds at most): fetched every 5th poll.
const HISTORY_EVERY = 5;
let polls = 0;
let history = { roles: {} };

async function refresh() {
  const status = document.getElementById("status");
  try {
    const data = await getJson("/v1/dashboard");
    if (polls++ % HISTORY_EVERY === 0) history = await getJson("/v1/history");
    renderAssignments(data.policy, data.calibration_gap_warn, history);
    renderBudgets(data.budgets);
    renderThroughput(data.throughput, data.llm);
    renderDocuments(data.documents);
    status.textContent =
      `policy version ${data.policy.version} · ${data.policy.observed} outcomes learned · ` +
      `total LLM spend ${usd(data.spend_total_usd)} · updated ${new Date(data.generated_ms).toLocaleTimeString()}`;
    document.body.dataset.loaded = "true";
  } catch (error) {
    status.textContent = `cannot reach the policy store: ${error.message}`;
  }
}

refresh();
setInterval(refresh, POLL_MS);
