// The policy store's live dashboard (policy_store/dashboard.py): polls /v1/dashboard every two
// seconds and redraws. Every value from the server goes in through textContent or SVG
// attributes, never as HTML: document text is untrusted transcript input.
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
const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

function renderAssignments(policy) {
  const body = document.querySelector("#assignments tbody");
  body.replaceChildren();
  for (const role of policy.roles) {
    const row = el("tr", { "data-role": role.role });
    row.append(el("td", { class: "role" }, role.role), el("td", { class: "model" }, role.model));
    const q = el("div", { class: "q" });
    const values = Object.entries(role.q_values);
    const lo = Math.min(0, ...values.map(([, v]) => v));
    const hi = Math.max(1e-9, ...values.map(([, v]) => v));
    for (const [model, value] of values) {
      const width = Math.max(2, Math.round((90 * (value - lo)) / (hi - lo || 1)));
      const bar = el("div", { class: model === role.model ? "bar chosen" : "bar", style: `width:${width}px` });
      q.append(el("span", {}, model), bar, el("span", {}, value.toFixed(2)));
    }
    const cell = el("td");
    cell.append(q);
    row.append(cell, el("td", { class: "reason" }, role.reason), el("td", { class: "num" }, num(role.published_version)));
    body.append(row);
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
      el("td", { class: "num" }, num(r.in_per_s)), el("td", { class: "num" }, num(r.done_per_s)),
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

async function refresh() {
  const status = document.getElementById("status");
  try {
    const token = readToken();
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const response = await fetch("/v1/dashboard", { cache: "no-store", headers });
    if (response.status === 401) throw new Error("it needs the read token: open /dashboard#token=<read token>");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const data = await response.json();
    renderAssignments(data.policy);
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
