// The console's views: each reads its JSON from /api and draws it. Charts are TradingView's
// Lightweight Charts (canvas; ~160 kB, ready in tens of milliseconds), served by the app
// itself (no CDN). Everything user- or journal-supplied goes through
// esc() before it reaches innerHTML.
"use strict";

const esc = (value) => String(value ?? "").replace(/[&<>"']/g,
  (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const num = (value, digits = 2) => (value === null || value === undefined || Number.isNaN(value))
  ? "–" : Number(value).toLocaleString("en-US", { maximumFractionDigits: digits,
                                                   minimumFractionDigits: digits });
const qty = (value) => (value === null || value === undefined) ? "–"
  : Number(value).toPrecision(6).replace(/\.?0+$/, "");
const time = (ms) => ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "–";
const signed = (value, digits = 2) =>
  `<span class="${value >= 0 ? "pos" : "neg"}">${value >= 0 ? "+" : ""}${num(value, digits)}</span>`;

const CHART_OPTIONS = {
  autoSize: true,
  layout: { background: { color: "#172029" }, textColor: "#d9e1e8" },
  grid: { vertLines: { color: "#26323d" }, horzLines: { color: "#26323d" } },
  timeScale: { timeVisible: true, secondsVisible: false, borderColor: "#26323d" },
  rightPriceScale: { borderColor: "#26323d" },
};
const PALETTE = ["#f0883e", "#3fb950", "#f85149", "#a371f7", "#d29922", "#db61a2", "#79c0ff",
                 "#56d364", "#ffa657", "#bc8cff"];
const charts = {};  // container id -> chart, replaced on each draw

function newChart(id) {
  if (charts[id]) charts[id].remove();
  charts[id] = LightweightCharts.createChart(document.getElementById(id), CHART_OPTIONS);
  return charts[id];
}

// [[ts_ms, value], ...] as the chart's points: seconds, ascending, one per time (the last).
function points(pairs) {
  const out = [];
  for (const [ms, value] of pairs) {
    if (value === null || value === undefined) continue;
    const time = Math.floor(ms / 1000);
    if (out.length && out[out.length - 1].time >= time) {
      if (out[out.length - 1].time === time) out[out.length - 1].value = value;
      continue;
    }
    out.push({ time, value });
  }
  return out;
}

function table(columns, rows, empty = "nothing yet") {
  if (!rows.length) return `<p class="empty">${esc(empty)}</p>`;
  const head = columns.map((c) => `<th>${esc(c.label)}</th>`).join("");
  const body = rows.map((row) => "<tr>" + columns.map((c) => {
    const value = c.html ? c.html(row) : esc(c.value ? c.value(row) : row[c.key]);
    return `<td class="${c.num ? "num" : ""} ${c.wrap ? "wrap" : ""}">${value}</td>`;
  }).join("") + "</tr>").join("");
  return `<table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

const stateBadge = (state) => `<span class="state ${esc(state)}">${esc(state)}</span>`;

const Views = {
  async portfolio() {
    const data = await api("/api/portfolio");
    const dd = data.drawdown_limit_pct
      ? `${num(data.drawdown_pct)} % <span class="muted">of ${num(data.drawdown_limit_pct)} %</span>`
      : `${num(data.drawdown_pct)} % <span class="muted">no limit</span>`;
    document.getElementById("portfolio-cards").innerHTML = [
      ["Equity", num(data.equity_now)],
      ["P&L today", signed(data.pnl_today)],
      ["P&L total", signed(data.pnl_total)],
      ["Drawdown", dd],
      ["Daily loss", data.daily_loss_limit_pct
        ? `${num(data.daily_loss_pct)} % <span class="muted">of ${num(data.daily_loss_limit_pct)} %</span>`
        : `${num(data.daily_loss_pct)} %`],
    ].map(([label, value]) =>
      `<div class="card"><div class="label">${label}</div><div class="value">${value}</div></div>`).join("");
    const chart = newChart("equity-chart");
    const lines = [["global", data.equity.global || [], "#58a6ff", true]];
    let colour = 0;
    for (const [name, pts] of Object.entries(data.equity.markets || {})) {
      lines.push([`market ${name}`, pts, PALETTE[colour++ % PALETTE.length], false]);
    }
    for (const [name, pts] of Object.entries(data.equity.models || {})) {
      lines.push([`model ${name}`, pts, PALETTE[colour++ % PALETTE.length], false]);
    }
    const legend = [];
    for (const [name, pts, color, visible] of lines) {
      const series = chart.addLineSeries({ color, lineWidth: name === "global" ? 3 : 2,
        title: name, visible, priceLineVisible: false });
      series.setData(points(pts));
      legend.push({ name, color, series, visible });
    }
    chart.timeScale().fitContent();
    const box = document.getElementById("equity-legend");
    box.innerHTML = legend.map((l, i) => `<label><input type="checkbox" data-line="${i}"
      ${l.visible ? "checked" : ""}><span style="color:${l.color}">&#9632;</span> ${esc(l.name)}</label>`).join("");
    for (const input of box.querySelectorAll("input")) {
      input.onchange = () => legend[input.dataset.line].series.applyOptions({ visible: input.checked });
    }
  },

  async positions() {
    const [positions, orders, fills] = await Promise.all(
      [api("/api/positions"), api("/api/orders"), api("/api/fills?limit=300")]);
    const act = App.me.can_act;
    document.getElementById("positions-table").innerHTML = table([
      { label: "Model", key: "model_id" }, { label: "Symbol", key: "symbol" },
      { label: "Side", key: "side" }, { label: "Quantity", num: true, value: (r) => qty(r.qty) },
      { label: "Entry", num: true, value: (r) => qty(r.entry_price) },
      { label: "Mark", num: true, value: (r) => qty(r.mark) },
      { label: "Unrealised P&L", num: true, html: (r) => signed(r.unrealised_pnl) },
      { label: "Stop", num: true, value: (r) => qty(r.stop_loss) },
      { label: "Take profit", num: true, value: (r) => qty(r.take_profit) },
      { label: "State", html: (r) => stateBadge(r.trading_state) },
      { label: "", html: (r) => act
        ? `<button class="small close-position" data-symbol="${esc(r.symbol)}">Close</button>` : "" },
    ], positions, "no open position");
    const orderColumns = [
      { label: "Time", value: (r) => time(r.ts_ms) }, { label: "Model", key: "model_id" },
      { label: "Symbol", key: "symbol" }, { label: "Side", key: "side" },
      { label: "Quantity", num: true, value: (r) => qty(r.qty) },
      { label: "Filled", num: true, value: (r) => qty(r.filled_qty) },
      { label: "Status", key: "status" }, { label: "Client id", key: "client_order_id" },
    ];
    document.getElementById("pending-table").innerHTML =
      table(orderColumns, orders.pending || [], "no pending order");
    document.getElementById("orders-table").innerHTML =
      table(orderColumns, (orders.recent || []).slice(0, 100), "no order yet");
    document.getElementById("fills-table").innerHTML = fillsTable(fills);
    for (const button of document.querySelectorAll(".close-position")) {
      button.onclick = () => Actions.close(button.dataset.symbol);
    }
  },

  async strategies() {
    const models = await api("/api/strategies");
    const act = App.me.can_act;
    document.getElementById("strategies").innerHTML = models.map((m) => {
      const paused = m.sleeves.some((s) => s.state === "PAUSED" || s.state === "HALTED");
      const buttons = !act ? "" : paused
        ? `<button class="small resume-model" data-model="${esc(m.id)}">Resume</button>`
        : `<button class="small pause-model" data-model="${esc(m.id)}">Pause</button>`;
      const params = Object.entries(m.params || {}).map(([k, v]) => `${esc(k)}=${esc(v)}`).join(", ");
      const sleeves = m.sleeves.map((s) =>
        `${esc(s.symbol)} ${stateBadge(s.state)} position ${qty(s.position)} · equity ${num(s.equity)}`).join("<br>");
      const signals = table([
        { label: "Time", value: (r) => time(r.ts_ms) }, { label: "Symbol", key: "symbol" },
        { label: "Action", key: "action" }, { label: "Quantity", num: true, value: (r) => qty(r.qty) },
        { label: "Stop", num: true, value: (r) => qty(r.stop_loss) },
        { label: "Take profit", num: true, value: (r) => qty(r.take_profit) },
        { label: "Confidence", num: true, value: (r) => r.confidence == null ? "–" : num(r.confidence) },
        { label: "Decision", value: (r) => (r.meta && r.meta.decision) || "" },
        { label: "Why (gate by gate)", wrap: true, html: (r) => gates(r.meta) },
      ], m.signals || [], "no signal yet");
      return `<article class="model" data-model="${esc(m.id)}"><header><h3>${esc(m.id)}</h3>
        <span class="muted">${esc(m.strategy)} on ${esc(m.market)} · allocation ${num(100 * m.allocation, 0)} %</span>
        <span class="spacer"></span>${buttons}</header>
        <p class="muted">params: ${params || "defaults"}</p><p>${sleeves}</p>${signals}</article>`;
    }).join("") || '<p class="empty">no model configured</p>';
    for (const b of document.querySelectorAll(".pause-model")) b.onclick = () => Actions.pause(b.dataset.model);
    for (const b of document.querySelectorAll(".resume-model")) b.onclick = () => Actions.resume(b.dataset.model);
  },

  async risk() {
    const data = await api("/api/risk");
    document.getElementById("risk").innerHTML = table([
      { label: "Level", key: "level" }, { label: "Scope", key: "scope" },
      { label: "State", html: (r) => r.state ? stateBadge(r.state) : "" },
      { label: "Limit", key: "name" },
      { label: "Used", num: true, value: (r) => r.used == null ? "no data yet" : `${num(r.used)} ${r.unit || ""}` },
      { label: "Limit value", num: true, value: (r) => r.limit == null ? "none" : `${num(r.limit)} ${r.unit || ""}` },
      { label: "Usage", html: (r) => meter(r) },
    ], (data.levels || []).flatMap((level) => (level.limits || []).map((limit) =>
      ({ level: level.level, scope: level.scope, state: level.state, ...limit }))), "no limit");
  },

  async market() {
    const select = document.getElementById("market-symbol");
    if (!select.options.length) {
      select.innerHTML = (App.overview.symbols || []).map((s) =>
        `<option value="${esc(s.market)}|${esc(s.symbol)}">${esc(s.symbol)} (${esc(s.market)})</option>`).join("");
      select.onchange = () => Views.market();
    }
    if (!select.value) return;
    const [market, symbol] = select.value.split("|");
    const query = `market=${encodeURIComponent(market)}&symbol=${encodeURIComponent(symbol)}`;
    const [data, book] = await Promise.all([api(`/api/market?${query}`), api(`/api/orderbook?${query}`)]);
    const c = data.candles;
    const chart = newChart("candle-chart");
    const candles = chart.addCandlestickSeries({ upColor: "#2ea043", downColor: "#f85149",
      wickUpColor: "#2ea043", wickDownColor: "#f85149", borderVisible: false });
    candles.setData(c.t.map((ms, i) => ({ time: Math.floor(ms / 1000), open: c.open[i],
      high: c.high[i], low: c.low[i], close: c.close[i] })).filter((bar) => bar.open !== null));
    // each fill marked on the candle (bucket) it fell in
    const bucket = (ms) => Math.floor((ms - (ms % c.bucket_ms)) / 1000);
    candles.setMarkers(data.fills.map((f) => ({ time: bucket(f.ts_ms),
      position: f.side === "buy" ? "belowBar" : "aboveBar",
      color: f.side === "buy" ? "#2ea043" : "#f85149",
      shape: f.side === "buy" ? "arrowUp" : "arrowDown",
      text: `${f.side} ${qty(f.qty)} ${f.model_id}${f.reason && f.reason !== "signal" ? " (" + f.reason + ")" : ""}`,
    })).sort((a, b) => a.time - b.time));
    const stops = chart.addLineSeries({ color: "#d29922", lineWidth: 1, lineStyle: 2,
      lineType: 1, title: "stop", priceLineVisible: false, lastValueVisible: false });
    // a lifted stop (null) is a gap in the line, not a level
    const levels = [];
    for (const level of data.stops) {
      const time = Math.floor(level.ts_ms / 1000);
      const point = level.stop_loss === null ? { time } : { time, value: level.stop_loss };
      if (levels.length && levels[levels.length - 1].time >= time) {
        if (levels[levels.length - 1].time === time) levels[levels.length - 1] = point;
        continue;
      }
      levels.push(point);
    }
    stops.setData(levels);
    chart.timeScale().fitContent();
    document.getElementById("candle-title").textContent =
      `${symbol} · ${c.timeframe}${c.bucket_ms > 0 && c.bars > c.t.length ? " (grouped: " + c.t.length + " of " + c.bars + " bars)" : ""}`;
    document.getElementById("order-book").innerHTML = book.available
      ? table([{ label: "Bid size", num: true, value: (r) => qty(r.bid && r.bid[1]) },
               { label: "Bid", num: true, value: (r) => qty(r.bid && r.bid[0]) },
               { label: "Ask", num: true, value: (r) => qty(r.ask && r.ask[0]) },
               { label: "Ask size", num: true, value: (r) => qty(r.ask && r.ask[1]) }],
              Array.from({ length: Math.max(book.bids.length, book.asks.length) },
                         (_, i) => ({ bid: book.bids[i], ask: book.asks[i] })))
      : `<p class="empty" id="no-order-book">Order book not available: ${esc(book.reason)}</p>`;
  },

  async logs() {
    const source = document.getElementById("log-source");
    const level = document.getElementById("log-level");
    const text = document.getElementById("log-text");
    if (!source.onchange) {
      source.onchange = level.onchange = () => Views.logs();
      text.oninput = () => { clearTimeout(text.timer); text.timer = setTimeout(Views.logs, 250); };
    }
    const query = new URLSearchParams({ source: source.value, level: level.value, q: text.value });
    const rows = await api(`/api/logs?${query}`);
    document.getElementById("logs-table").innerHTML = table([
      { label: "Time", value: (r) => time(r.ts_ms) }, { label: "Source", key: "source" },
      { label: "Level", key: "level" }, { label: "Kind", key: "kind" },
      { label: "Scope", key: "scope" }, { label: "User", key: "user" },
      { label: "Message", key: "message", wrap: true },
    ], rows, "no entry matches");
  },

  async research() {
    const reports = await api("/api/reports");
    const list = document.getElementById("reports-list");
    list.innerHTML = reports.length ? "<ul>" + reports.map((r) =>
      `<li><a href="${esc(r.url)}" class="report-link">${esc(r.name)}<br>
       <span class="muted">${time(r.mtime_ms)} · ${num(r.size / 1024, 0)} kB</span></a></li>`).join("") + "</ul>"
      : '<p class="empty">no report yet: run <code>mmats walkforward</code></p>';
    const frame = document.getElementById("report-frame");
    for (const link of list.querySelectorAll("a")) {
      link.onclick = (event) => {
        event.preventDefault();
        for (const other of list.querySelectorAll("a")) other.classList.remove("active");
        link.classList.add("active");
        frame.src = link.getAttribute("href");
      };
    }
    if (!frame.getAttribute("src") && reports.length) list.querySelector("a").click();
  },

  async settings() {
    const data = await api("/api/settings");
    const users = data.users.length ? table([{ label: "User", key: "name" },
      { label: "Role", key: "role" }, { label: "Created", key: "created" }], data.users) : "";
    document.getElementById("settings").innerHTML = `
      <div class="cards">
        <div class="card"><div class="label">Configuration</div><div>${esc(data.source)}</div></div>
        <div class="card"><div class="label">Mode</div><div>${esc(data.mode)}</div></div>
        <div class="card"><div class="label">Journal</div><div>${esc(data.journal)}</div></div>
        <div class="card"><div class="label">Reports</div><div>${esc(data.reports)}</div></div>
      </div>
      ${users ? "<h2>Dashboard accounts</h2>" + users : ""}
      <h2>Configuration as the runner reads it (secrets never appear here)</h2>
      <pre>${esc(JSON.stringify(data.config, null, 2))}</pre>`;
  },

  // A fill from the live stream goes straight into the fills table.
  addFill(change) {
    const body = document.querySelector("#fills-table tbody");
    if (!body) return;
    const row = document.createElement("tr");
    row.className = "live-fill";
    row.dataset.seq = change.seq;
    row.innerHTML = `<td>${time(change.ts_ms)}</td><td>${esc(change.model_id)}</td><td>${esc(change.symbol)}</td>
      <td>${esc(change.side)}</td><td class="num">${qty(change.qty)}</td><td class="num">${qty(change.price)}</td>
      <td class="num">${qty(change.fee)}</td><td>${esc(change.reason || "")}</td>`;
    body.prepend(row);
  },
};

function fillsTable(fills) {
  return table([
    { label: "Time", value: (r) => time(r.ts_ms) }, { label: "Model", key: "model_id" },
    { label: "Symbol", key: "symbol" }, { label: "Side", key: "side" },
    { label: "Quantity", num: true, value: (r) => qty(r.qty) },
    { label: "Price", num: true, value: (r) => qty(r.price) },
    { label: "Fee", num: true, value: (r) => qty(r.fee) }, { label: "Reason", key: "reason" },
  ], fills, "no fill yet");
}

function gates(meta) {
  if (!meta) return "";
  if (meta.reason) return esc(meta.reason);
  if (!Array.isArray(meta.gates)) return "";
  return meta.gates.map((g) => esc(Object.entries(g).map(([k, v]) => `${k}: ${v}`).join(" "))).join("<br>");
}

function meter(row) {
  if (row.ratio == null) return `<span class="state status-${esc(row.status || "none")}">${esc(row.status || "none")}</span>`;
  const width = Math.min(100, Math.max(0, 100 * row.ratio));
  const colour = { ok: "#2ea043", warn: "#d29922", breach: "#f85149" }[row.status] || "#8a99a8";
  return `<div class="meter" title="${num(100 * row.ratio, 0)} % of the limit" data-status="${esc(row.status)}">
    <span style="width:${width}%;background:${colour}"></span></div>`;
}

window.Views = Views;
