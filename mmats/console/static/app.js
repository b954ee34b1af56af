// The console's shell: the session, the tabs, the live stream and the operator's actions.
// Each view's drawing is in views.js (window.Views); this file decides when to draw.
"use strict";

const App = {
  me: null,            // {user, role, csrf, can_act}
  overview: null,      // /api/overview
  view: "portfolio",
  lastSeq: 0,
  stale: new Set(),    // views whose data changed while hidden
};

async function api(path) {
  const response = await fetch(path, { credentials: "same-origin" });
  if (response.status === 401) { location.href = "/login"; throw new Error("logged out"); }
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": App.me.csrf },
    body: JSON.stringify(body),
  });
  let answer = {};
  try { answer = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) throw new Error(answer.error || `${response.status}`);
  return answer;
}

function flash(message, isError) {
  const box = document.getElementById("flash");
  box.textContent = message;
  box.className = isError ? "flash error" : "flash";
  box.hidden = false;
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => { box.hidden = true; }, isError ? 15000 : 6000);
}

// -- tabs --------------------------------------------------------------------------------
function show(view) {
  if (!Views[view]) view = "portfolio";
  App.view = view;
  for (const link of document.querySelectorAll("#tabs a")) {
    link.classList.toggle("active", link.dataset.view === view);
  }
  for (const section of document.querySelectorAll("main > .view")) {
    section.hidden = section.id !== `view-${view}`;
  }
  App.stale.delete(view);
  draw(view);
}

async function draw(view) {
  try {
    await Views[view](App);
    document.body.dataset.drawn = view;  // the browser tests wait for this
  } catch (error) {
    flash(`${view}: ${error.message}`, true);
  }
}

// Which views a journaled row changes.
const AFFECTS = {
  fills: ["portfolio", "positions", "market", "strategies", "risk"],
  orders: ["positions", "market"],
  signals: ["strategies", "market"],
  sleeve_states: ["portfolio", "positions", "strategies", "risk"],
  risk_events: ["logs", "risk", "strategies"],
  operator_actions: ["logs", "strategies"],
  config_snapshots: ["logs", "settings"],
  ticks: [],
};

let redrawTimer = null;
// A batch of journaled rows from the stream: which tables changed, and the rows a page
// shows one by one (a new fill goes into the fills table at once).
function changed(batch) {
  App.lastSeq = Math.max(App.lastSeq, batch.seq);
  for (const row of batch.rows) {
    if (row.table === "fills" && Views.addFill) Views.addFill(row);
  }
  for (const table of Object.keys(batch.tables)) {
    for (const view of AFFECTS[table] || []) App.stale.add(view);
  }
  if (batch.tables.operator_actions || batch.tables.risk_events) refreshOverview();
  // at most one redraw a second however fast the runner journals (throttled, not
  // debounced: a busy runner must not starve the page); a tab nobody looks at draws
  // nothing until it is shown again
  if (redrawTimer === null && !document.hidden) {
    redrawTimer = setTimeout(() => {
      redrawTimer = null;
      if (App.stale.has(App.view)) { App.stale.delete(App.view); draw(App.view); }
    }, 1000);
  }
}

// The live stream: shared by every tab through stream-worker.js (a browser gives one
// server six connections, and each stream holds one), or the tab's own where the browser
// has no SharedWorker.
function listen() {
  const live = document.getElementById("live");
  if (typeof SharedWorker === "function") {
    const worker = new SharedWorker("/static/stream-worker.js");
    worker.port.onmessage = (message) => {
      const { type, data } = message.data;
      if (type === "hello") live.classList.add("on");
      else if (type === "changes") changed(JSON.parse(data));
      else if (type === "error") live.classList.remove("on");
    };
    worker.port.start();
    worker.port.postMessage({ type: "start", after: App.lastSeq });
    window.addEventListener("pagehide", () => worker.port.postMessage({ type: "bye" }));
    return;
  }
  const source = new EventSource(`/api/stream?after=${App.lastSeq}`);
  source.addEventListener("hello", () => live.classList.add("on"));
  source.addEventListener("changes", (event) => changed(JSON.parse(event.data)));
  source.onerror = () => live.classList.remove("on");
}

async function refreshOverview() {
  App.overview = await api("/api/overview");
  const env = document.getElementById("env");
  env.textContent = App.overview.environment || "";
  env.classList.toggle("prod", App.overview.environment === "prod");
  document.getElementById("mode").textContent = App.overview.mode;
  const kill = document.getElementById("kill-state");
  kill.hidden = !App.overview.kill_switch;
  if (App.overview.kill_switch) {
    kill.title = `by ${App.overview.kill_switch.user}: ${App.overview.kill_switch.reason || ""}`;
  }
}

// -- actions: each asks for confirmation first --------------------------------------------
function confirmAction({ title, text, fields = "", collect = () => ({}), send }) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-fields").innerHTML = fields;
  document.getElementById("confirm-reason").value = "";
  const error = document.getElementById("confirm-error");
  error.hidden = true;
  const ok = document.getElementById("confirm-ok");
  ok.disabled = false;
  ok.onclick = async (event) => {
    event.preventDefault();
    ok.disabled = true;
    try {
      const reason = document.getElementById("confirm-reason").value;
      const answer = await send({ ...collect(), reason });
      dialog.close();
      flash(answer.message || "done");
      refreshOverview();
      draw(App.view);
    } catch (failure) {
      error.textContent = failure.message;
      error.hidden = false;
      ok.disabled = false;
    }
  };
  document.getElementById("confirm-cancel").onclick = () => dialog.close();
  dialog.showModal();
}

const Actions = {
  pause(model) {
    confirmAction({ title: `Pause ${model}?`,
      text: "It opens nothing new; its positions are kept until you close them.",
      send: (body) => post("/api/actions/pause", { ...body, model, confirm: model }) });
  },
  resume(model) {
    confirmAction({ title: `Resume ${model || "every model"}?`,
      text: model ? "It trades again at its next signal change."
                  : "Every model trades again; this lifts a booked kill switch.",
      send: (body) => post("/api/actions/resume", { ...body, model, confirm: model || "ALL" }) });
  },
  close(symbol) {
    confirmAction({ title: `Close ${symbol}?`,
      text: "Every sleeve holding it goes flat; the models keep trading afterwards.",
      send: (body) => post("/api/actions/close", { ...body, symbol, confirm: symbol }) });
  },
  kill() {
    confirmAction({ title: "Emergency stop",
      text: "Halt every model, cancel our open orders and flatten every position. " +
            "Nothing trades again until every model is resumed.",
      send: (body) => post("/api/actions/kill", { ...body, confirm: "KILL" }) });
  },
  order(prefill = {}) {
    const sleeves = (App.overview.sleeve_list || []);
    const options = sleeves.map((s) =>
      `<option value="${s.model_id}|${s.symbol}">${s.model_id} · ${s.symbol}</option>`).join("");
    confirmAction({ title: "Manual order",
      text: "It goes through the same risk gates as a model's order and is journaled with your name.",
      fields: `<label>Model · symbol <select id="ticket-sleeve">${options}</select></label>
        <label>Side <select id="ticket-side"><option>buy</option><option>sell</option></select></label>
        <label>Quantity <input id="ticket-quantity" inputmode="decimal" placeholder="units of the base asset"></label>
        <label>or exposure <input id="ticket-exposure" inputmode="decimal" placeholder="fraction of the sleeve's equity, e.g. 0.5"></label>`,
      collect: () => {
        const [model, symbol] = document.getElementById("ticket-sleeve").value.split("|");
        return { model, symbol, side: document.getElementById("ticket-side").value,
          quantity: document.getElementById("ticket-quantity").value || null,
          exposure: document.getElementById("ticket-exposure").value || null };
      },
      send: (body) => post("/api/actions/order", { ...body, confirm: "ORDER" }) });
    if (prefill.sleeve) document.getElementById("ticket-sleeve").value = prefill.sleeve;
  },
};

// -- start ---------------------------------------------------------------------------------
async function start() {
  App.me = await api("/api/me");
  document.body.classList.add(App.me.can_act ? "operator" : "viewer");
  document.getElementById("who").textContent = `${App.me.user} (${App.me.role})`;
  await refreshOverview();
  App.lastSeq = App.overview.head_seq || 0;
  document.getElementById("kill").onclick = () => Actions.kill();
  document.getElementById("new-order").onclick = () => Actions.order();
  document.getElementById("logout").onclick = async () => {
    await post("/logout", {});
    location.href = "/login";
  };
  for (const link of document.querySelectorAll("#tabs a")) {
    link.onclick = (event) => { event.preventDefault(); location.hash = link.dataset.view; };
  }
  window.addEventListener("hashchange", () => show(location.hash.slice(1)));
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && App.stale.has(App.view)) { App.stale.delete(App.view); draw(App.view); }
  });
  show(location.hash.slice(1) || "portfolio");
  listen();
}

window.App = App;
window.Actions = Actions;
window.api = api;
document.addEventListener("DOMContentLoaded", start);
