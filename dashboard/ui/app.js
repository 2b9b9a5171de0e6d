// Tessera dashboard web UI: plain JavaScript over the dashboard's public REST API (the one
// `tessera admin` calls). Each view polls one or two endpoints (never one per proxy or per
// plugin: the dashboard gathers those); writes send the admin token
// kept in sessionStorage; every failure shows the API's own error text.
"use strict";

const POLL_MS = 2000;
const HISTORY_MS = 5 * 60 * 1000;
const SLOT_COUNT = 1024;
const TOKEN_KEY = "tessera-admin-token";

const $ = (id) => document.getElementById(id);
const state = { view: null, timer: null, history: [], anchor: null, selection: null, groups: [], slots: [] };

// ---- helpers ---------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    // Through the CSSOM: the page's Content-Security-Policy refuses style attributes.
    else if (k === "style") node.style.cssText = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c !== undefined && c !== null) node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function fmtBytes(n) {
  if (n === undefined || n === null) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function fmtNum(n, digits) {
  if (n === undefined || n === null) return "—";
  return Number(n).toLocaleString("en-US", { maximumFractionDigits: digits || 0 });
}

// Nanoseconds as people read them: 850 ns, 12.5 µs, 3.1 ms, 2.0 s.
function fmtNanos(n) {
  if (n === undefined || n === null) return "—";
  if (n < 1e3) return `${n.toFixed(0)} ns`;
  if (n < 1e6) return `${(n / 1e3).toFixed(1)} µs`;
  if (n < 1e9) return `${(n / 1e6).toFixed(1)} ms`;
  return `${(n / 1e9).toFixed(1)} s`;
}

function fmtTime(unix) {
  if (!unix) return "—";
  return new Date(unix * 1000).toISOString().replace(".000Z", "Z");
}

function show(text, kind) {
  const box = $("message");
  box.textContent = text;
  box.className = kind;
  box.hidden = false;
}

function clearMessage() {
  $("message").hidden = true;
}

function groupColor(id) {
  if (id === null || id === undefined) return "#d5d9e0";
  const hue = (id * 137.508) % 360;
  return `hsl(${hue.toFixed(0)}, 62%, 52%)`;
}

// ---- the API ---------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// Calls the API; a failure throws an ApiError carrying the API's own `error` text.
async function api(method, path, body, opts) {
  const headers = {};
  const write = method !== "GET" || (opts && opts.auth);
  if (write) {
    const token = await askToken();
    if (token) headers["Authorization"] = "Bearer " + token;
  }
  let payload;
  if (body instanceof Blob || body instanceof ArrayBuffer) {
    payload = body;
    headers["Content-Type"] = "application/octet-stream";
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers["Content-Type"] = "application/json";
  }
  let res;
  try {
    res = await fetch(path, { method, headers, body: payload, cache: "no-store" });
  } catch (e) {
    throw new ApiError(0, `cannot reach the dashboard: ${e.message}`);
  }
  let data = null;
  try { data = await res.json(); } catch (_) { /* not JSON */ }
  if (!res.ok) {
    const text = data && data.error ? data.error : `${res.status} ${res.statusText}`;
    throw new ApiError(res.status, text);
  }
  return data;
}

// A write: runs `call`, shows `done` or the API's error text, and refreshes the view.
async function write(call, done) {
  clearMessage();
  try {
    const result = await call();
    show(typeof done === "function" ? done(result) : done, "ok");
  } catch (e) {
    show(e.message, "error");
    if (e.status === 401) sessionStorage.removeItem(TOKEN_KEY);
  }
  state.drawn = null;
  refresh();
}

// The admin token: asked once per tab, then kept in sessionStorage.
let tokenAsked = null;
function askToken(force) {
  const kept = sessionStorage.getItem(TOKEN_KEY);
  if (kept && !force) return Promise.resolve(kept);
  if (tokenAsked) return tokenAsked;
  const dialog = $("token-dialog");
  $("token-input").value = "";
  tokenAsked = new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      tokenAsked = null;
      const token = dialog.returnValue === "ok" ? $("token-input").value.trim() : "";
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      resolve(token);
    }, { once: true });
  });
  dialog.returnValue = "";
  dialog.showModal();
  return tokenAsked;
}

// Asks before a destructive action; resolves to true when confirmed.
function confirmAction(text) {
  const dialog = $("confirm-dialog");
  $("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

// ---- views -------------------------------------------------------------------------------

// One entry per view: what it polls and how it draws it.
const views = {
  overview: { load: () => Promise.all([api("GET", "/api/topology"), servers()]), draw: drawOverview },
  slots: { load: () => Promise.all([api("GET", "/api/topology"), migrations()]), draw: ([topo, migs]) => drawSlots(topo, migs) },
  groups: { load: () => Promise.all([api("GET", "/api/groups"), servers()]), draw: drawGroups },
  proxies: { load: () => api("GET", "/api/proxies"), draw: drawProxies },
  migrations: { load: migrations, draw: drawMigrations },
  plugins: { load: () => Promise.all([api("GET", "/api/plugins"), pluginStats()]), draw: drawPlugins },
};

// `GET /api/servers` (each server's role, memory and keys as the dashboard probed them), or
// null when this dashboard does not have it.
async function servers() {
  try {
    return await api("GET", "/api/servers");
  } catch (e) {
    if (e.status === 404) return null;
    throw e;
  }
}

// `GET /api/plugins/stats` (each plugin's counters summed over the proxies), or null when
// this dashboard does not have it.
async function pluginStats() {
  try {
    return await api("GET", "/api/plugins/stats");
  } catch (e) {
    if (e.status === 404) return null;
    throw e;
  }
}

async function migrations() {
  try {
    return await api("GET", "/api/migrations");
  } catch (e) {
    if (e.status === 404) return null;
    throw e;
  }
}

let polling = false;
async function refresh() {
  const name = state.view;
  if (!name || polling) return;
  polling = true;
  try {
    const data = await views[name].load();
    // Unchanged data is not drawn again (the overview's chart moves on every poll).
    const text = JSON.stringify(data);
    if (state.view === name && (name === "overview" || text !== state.drawn)) {
      views[name].draw(data);
      state.drawn = text;
    }
    document.body.dataset.loaded = name;
  } catch (e) {
    show(e.message, "error");
  } finally {
    polling = false;
  }
}

function route() {
  const name = (location.hash || "#overview").slice(1);
  state.view = views[name] ? name : "overview";
  for (const section of document.querySelectorAll(".view")) {
    section.hidden = section.id !== "view-" + state.view;
  }
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.view === state.view);
  }
  delete document.body.dataset.loaded;
  state.drawn = null;
  clearMessage();
  clearTimeout(state.timer);
  const tick = async () => {
    await refresh();
    state.timer = setTimeout(tick, POLL_MS);
  };
  tick();
}

// Keys and memory per server address, from `GET /api/servers`.
function serverIndex(data) {
  const index = new Map();
  for (const s of (data && data.servers) || []) index.set(s.addr, s);
  return index;
}

function drawOverview([topo, probe]) {
  $("product").textContent = topo.product.name;
  $("ov-product").textContent = topo.product.name;
  $("ov-revision").textContent = topo.revision;
  const ops = topo.proxies.reduce((sum, p) => sum + (p.ops_per_sec || 0), 0);
  $("ov-ops").textContent = fmtNum(ops, 1);
  $("ov-ops").dataset.value = ops;
  $("ov-proxies").textContent = topo.proxies.length;
  const sessions = topo.proxies.filter((p) => p.sessions !== undefined);
  $("ov-sessions").textContent = sessions.length
    ? fmtNum(sessions.reduce((sum, p) => sum + p.sessions, 0)) : "—";
  const served = topo.slots.filter((r) => r.state !== "offline")
    .reduce((n, r) => n + runLength(r.range), 0);
  $("ov-slots").textContent = `${served} / ${SLOT_COUNT}`;

  const now = Date.now();
  state.history.push([now, ops]);
  while (state.history.length && state.history[0][0] < now - HISTORY_MS) state.history.shift();
  drawChart($("ov-chart"), state.history, now);

  const alerts = [];
  for (const p of topo.proxies) {
    if (p.topology_error) alerts.push(["bad", `proxy ${p.addr} cannot apply the topology: ${p.topology_error}`]);
    if (p.plugin_error) alerts.push(["bad", `proxy ${p.addr} could not load the plugin chain: ${p.plugin_error}`]);
    if (p.behind) alerts.push(["", `proxy ${p.addr} has applied revision ${p.applied_revision}, not the latest (${topo.revision})`]);
  }
  const index = serverIndex(probe);
  for (const s of index.values()) {
    if (!s.reachable) alerts.push(["bad", `server ${s.addr} (group ${s.group}) does not answer: ${s.error || "no reply"}`]);
  }
  if (!topo.proxies.length) alerts.push(["", "no proxy is registered"]);
  if (served < SLOT_COUNT) alerts.push(["", `${SLOT_COUNT - served} slots are offline: their commands are refused`]);
  const list = $("ov-alerts");
  if (!alerts.length) {
    list.replaceChildren(el("li", { class: "none", text: "no alerts" }));
  } else {
    list.replaceChildren(...alerts.map(([cls, text]) => el("li", { class: cls, text })));
  }

  fill($("ov-groups").tBodies[0], topo.groups.map((g) => {
    const stats = g.servers.map((a) => index.get(a)).filter(Boolean);
    const master = stats.find((s) => s.addr === g.servers[0]);
    return el("tr", { "data-group": g.id },
      el("td", {}, el("span", { class: "swatch", style: `background:${groupColor(g.id)}` }), ` ${g.id}`),
      el("td", { text: g.slots }),
      el("td", { text: g.servers[0] || "—" }),
      el("td", { class: "keys", text: master ? fmtNum(master.keys) : "—" }),
      el("td", { text: master ? fmtBytes(master.used_memory) : "—" }));
  }));
}

function runLength(range) {
  const [lo, hi] = String(range).split("-").map(Number);
  return (hi === undefined || Number.isNaN(hi) ? lo : hi) - lo + 1;
}

// The smallest of 10, 20, 50, 100, 200, ... at least `v`: round numbers on the chart's axis.
function niceCeil(v) {
  let step = 10;
  for (;;) {
    for (const m of [1, 2, 5]) if (step * m >= v) return step * m;
    step *= 10;
  }
}

function drawChart(canvas, points, now) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 30;
  ctx.clearRect(0, 0, w, h);
  const max = niceCeil(Math.max(...points.map((p) => p[1]), 0) * 1.1);
  ctx.strokeStyle = "#d9dde5";
  ctx.fillStyle = "#6b7280";
  ctx.font = "11px system-ui, sans-serif";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = h - pad + 10 - (i / 4) * (h - pad);
    ctx.beginPath(); ctx.moveTo(pad + 20, y); ctx.lineTo(w - 5, y); ctx.stroke();
    ctx.fillText(fmtNum((max * i) / 4), 2, y + 4);
  }
  ctx.fillText("−5 min", pad + 20, h - 4);
  ctx.fillText("now", w - 30, h - 4);
  if (!points.length) return;
  const x = (t) => pad + 20 + ((t - (now - HISTORY_MS)) / HISTORY_MS) * (w - pad - 25);
  const y = (v) => h - pad + 10 - (v / max) * (h - pad);
  ctx.strokeStyle = "#2f6fde";
  ctx.lineWidth = 2;
  ctx.beginPath();
  points.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
  ctx.stroke();
}

// ---- slot map ----------------------------------------------------------------------------

// The 1024 slot states from the topology's ranges.
function expandSlots(runs) {
  const slots = new Array(SLOT_COUNT).fill(null).map(() => ({ state: "offline" }));
  for (const r of runs) {
    const [lo, hi] = String(r.range).split("-").map(Number);
    const end = hi === undefined || Number.isNaN(hi) ? lo : hi;
    const { range, ...slot } = r;
    for (let s = lo; s <= end && s < SLOT_COUNT; s++) slots[s] = slot;
  }
  return slots;
}

// The group a slot's commands go to: the owner, or the source while it migrates.
function slotGroup(slot) {
  if (slot.state === "owned") return slot.group;
  if (slot.state === "migrating") return slot.from;
  return null;
}

// The migration step moving slot `n`, from `GET /api/migrations` (null: none).
function stepOf(migs, n) {
  for (const step of (migs && migs.steps) || []) {
    const [lo, hi] = String(step.slots).split("-").map(Number);
    if (n >= lo && n <= (Number.isNaN(hi) || hi === undefined ? lo : hi)) return step;
  }
  return null;
}

function describeSlot(n, slot, step) {
  if (slot.state === "owned") return `slot ${n}: group ${slot.group}, owned`;
  if (slot.state === "migrating") {
    const progress = step ? ` (step ${step.id}, ${step.state}: ${step.keys_moved} keys moved)` : "";
    return `slot ${n}: migrating from group ${slot.from} to group ${slot.to}${progress}`;
  }
  if (slot.state === "offline") return `slot ${n}: offline`;
  return `slot ${n}: ${slot.state}`;
}

function buildGrid() {
  const grid = $("slot-grid");
  if (grid.children.length === SLOT_COUNT) return;
  const cells = [];
  for (let n = 0; n < SLOT_COUNT; n++) {
    cells.push(el("div", { class: "cell", "data-slot": n, "data-group": "" }));
  }
  grid.replaceChildren(...cells);
  grid.addEventListener("click", (e) => {
    const cell = e.target.closest(".cell");
    if (!cell) return;
    const n = Number(cell.dataset.slot);
    if (e.shiftKey && state.anchor !== null) {
      state.selection = [Math.min(state.anchor, n), Math.max(state.anchor, n)];
    } else {
      state.anchor = n;
      state.selection = [n, n];
    }
    drawSelection();
  });
  grid.addEventListener("mouseover", (e) => {
    const cell = e.target.closest(".cell");
    if (cell) $("slot-info").textContent = cell.title;
  });
}

function drawSelection() {
  const sel = state.selection;
  for (const cell of $("slot-grid").children) {
    const n = Number(cell.dataset.slot);
    cell.classList.toggle("selected", !!sel && n >= sel[0] && n <= sel[1]);
  }
  $("slot-selection").textContent = sel
    ? `slots ${rangeText(sel)} selected (${sel[1] - sel[0] + 1})` : "no slots selected";
  $("assign-button").disabled = !sel;
  $("migrate-button").disabled = !sel;
  $("offline-button").disabled = !sel;
}

function rangeText(sel) {
  return sel[0] === sel[1] ? String(sel[0]) : `${sel[0]}-${sel[1]}`;
}

function drawSlots(topo, migs) {
  $("product").textContent = topo.product.name;
  buildGrid();
  state.slots = expandSlots(topo.slots);
  const cells = $("slot-grid").children;
  state.slots.forEach((slot, n) => {
    const cell = cells[n];
    const group = slotGroup(slot);
    const text = group === null ? "" : String(group);
    if (cell.dataset.group !== text) cell.dataset.group = text;
    if (cell.dataset.state !== slot.state) cell.dataset.state = slot.state;
    cell.style.background = groupColor(group);
    cell.classList.toggle("migrating", slot.state === "migrating");
    cell.title = describeSlot(n, slot, slot.state === "migrating" ? stepOf(migs, n) : null);
  });
  const select = $("assign-group");
  const chosen = select.value;
  const ids = topo.groups.map((g) => String(g.id));
  if (ids.join() !== [...select.options].map((o) => o.value).join()) {
    select.replaceChildren(...topo.groups.map((g) => el("option", { value: g.id, text: `group ${g.id}` })));
    if (ids.includes(chosen)) select.value = chosen;
  }
  const legend = topo.groups.map((g) =>
    el("span", {}, el("span", { class: "swatch", style: `background:${groupColor(g.id)}` }), `group ${g.id} (${g.slots} slots)`));
  legend.push(el("span", {}, el("span", { class: "swatch", style: `background:${groupColor(null)}` }), "offline"));
  legend.push(el("span", {}, el("span", { class: "swatch migrating", style: "background:#999" }), "migrating"));
  $("slot-legend").replaceChildren(...legend);
}

async function assignSelection(group) {
  const sel = state.selection;
  if (!sel) return;
  const range = rangeText(sel);
  const question = group === null
    ? `Take slots ${range} offline? Their commands will be refused.`
    : `Assign slots ${range} to group ${group}? No data is moved.`;
  if (!(await confirmAction(question))) return;
  write(() => api("POST", "/api/slots/assign", { range, group }),
    (r) => `${r.changed} slots changed (revision ${r.revision})`);
}

async function migrateSelection(group) {
  const sel = state.selection;
  if (!sel) return;
  const range = rangeText(sel);
  if (!(await confirmAction(`Migrate slots ${range} with their keys to group ${group}?`))) return;
  write(() => api("POST", "/api/slots/migrate", { range, to: group }),
    (r) => `slots ${range} queued to move to group ${group} in ${r.queued.length} steps (revision ${r.revision})`);
}

// ---- groups ------------------------------------------------------------------------------

function drawGroups([data, probe]) {
  const index = serverIndex(probe);
  const list = $("group-list");
  if (!data.groups.length) {
    list.replaceChildren(el("p", { class: "muted", text: "no groups yet" }));
    return;
  }
  // A group's box is built again only when its servers or slots change; otherwise only its
  // probe cells are updated, so what is being typed or clicked in it stays.
  const kept = new Map([...list.querySelectorAll(":scope > .group")].map((b) => [b.dataset.structure, b]));
  const boxes = data.groups.map((g) => {
    const structure = JSON.stringify([g.id, g.servers, g.slots]);
    const box = kept.get(structure) || groupBox(g, structure);
    for (const row of box.querySelectorAll("tr[data-addr]")) serverCells(row, index.get(row.dataset.addr));
    return box;
  });
  // Kept boxes are not moved (a moved element loses the focus).
  const wanted = new Set(boxes);
  for (const child of [...list.children]) if (!wanted.has(child)) child.remove();
  boxes.forEach((box, i) => {
    if (list.children[i] !== box) list.insertBefore(box, list.children[i] || null);
  });
}

// Fills a server row's probe cells from `GET /api/servers` (`s` undefined: not probed).
function serverCells(row, s) {
  const [reachable, role, memory, keys] = [...row.querySelectorAll("td.probe")];
  reachable.className = "probe " + (s ? (s.reachable ? "good" : "bad") : "");
  reachable.textContent = s ? (s.reachable ? "yes" : `no: ${s.error || "no reply"}`) : "—";
  role.textContent = s && s.role ? s.role : "—";
  memory.textContent = s && s.reachable ? fmtBytes(s.used_memory) : "—";
  keys.textContent = s && s.reachable ? fmtNum(s.keys) : "—";
}

function groupBox(g, structure) {
  const rows = g.servers.map((addr, i) => el("tr", { "data-addr": addr },
    el("td", { text: addr }),
    el("td", { text: i === 0 ? "master" : "replica" }),
    el("td", { class: "probe" }), el("td", { class: "probe" }),
    el("td", { class: "probe" }), el("td", { class: "probe" }),
    el("td", {}, el("button", {
      type: "button", class: "danger remove-server",
      onclick: async () => {
        if (!(await confirmAction(`Remove server ${addr} from group ${g.id}?`))) return;
        write(() => api("DELETE", `/api/groups/${g.id}/servers/${encodeURIComponent(addr)}`),
          (r) => `server ${addr} removed from group ${g.id} (revision ${r.revision})`);
      },
    }, "Remove"))));
  const input = el("input", { "data-group": g.id, class: "new-server", placeholder: "host:port", size: 22 });
  const header = ["Server", "Role", "Reachable", "Redis role", "Memory", "Keys", ""];
  return el("div", { class: "group", "data-group": g.id, "data-structure": structure },
    el("h2", { text: `Group ${g.id} — ${g.slots} slots` }),
    g.servers.length
      ? el("table", {}, el("thead", {}, el("tr", {}, ...header.map((t) => el("th", { text: t })))), el("tbody", {}, ...rows))
      : el("p", { class: "muted", text: "no servers" }),
    el("div", { class: "toolbar" }, input,
      el("button", {
        type: "button", class: "add-server",
        onclick: () => {
          const addr = input.value.trim();
          write(async () => { const r = await api("POST", `/api/groups/${g.id}/servers`, { addr }); input.value = ""; return r; },
            (r) => `server ${addr} added to group ${g.id} (revision ${r.revision})`);
        },
      }, "Add server"),
      el("button", {
        type: "button", class: "danger remove-group",
        onclick: async () => {
          if (!(await confirmAction(`Remove group ${g.id}?`))) return;
          write(() => api("DELETE", `/api/groups/${g.id}`), (r) => `group ${g.id} removed (revision ${r.revision})`);
        },
      }, "Remove group")));
}

// ---- proxies -----------------------------------------------------------------------------

function drawProxies(data) {
  fill($("proxy-table").tBodies[0], data.proxies.map((p) => {
    const problems = [p.topology_error, p.plugin_error].filter(Boolean).join("; ");
    return el("tr", { "data-addr": p.addr },
      el("td", { text: p.addr }),
      el("td", { text: p.version }),
      el("td", { class: p.behind ? "bad" : "", text: p.behind ? `${p.applied_revision} (behind ${data.revision})` : p.applied_revision }),
      el("td", { text: fmtNum(p.ops_per_sec, 1) }),
      el("td", { text: fmtNum(p.sessions) }),
      el("td", { text: fmtNum(p.errors) }),
      el("td", { text: fmtTime(p.start_time) }),
      el("td", {}, p.admin_addr
        ? el("a", { href: `http://${p.admin_addr}/api/stats`, target: "_blank", rel: "noopener" }, "stats")
        : "—"),
      el("td", { class: problems ? "bad" : "", text: problems || "—" }));
  }));
  if (!data.proxies.length) {
    fill($("proxy-table").tBodies[0], [el("tr", {}, el("td", { colspan: 9, class: "muted", text: "no proxy is registered" }))]);
  }
}

// ---- migrations --------------------------------------------------------------------------

function drawMigrations(data) {
  const box = $("migration-list");
  const steps = (data && data.steps) || [];
  if (!steps.length) {
    box.replaceChildren(el("p", { class: "muted", text: "no migrations" }));
    return;
  }
  const header = ["Step", "Slots", "From", "To", "State", "Keys moved", "Keys/s", "ETA", "Held by"];
  box.replaceChildren(el("table", { id: "migration-table" },
    el("thead", {}, el("tr", {}, ...header.map((t) => el("th", { text: t })))),
    el("tbody", {}, ...steps.map((s) => {
      const holders = (s.holding || []).map((h) =>
        `${h.addr} (applied revision ${h.applied_revision})${h.topology_error ? `: ${h.topology_error}` : ""}`);
      return el("tr", { "data-step": s.id, "data-slots": s.slots, "data-state": s.state },
        el("td", { text: s.id }),
        el("td", { text: s.slots }),
        el("td", { text: s.from }),
        el("td", { text: s.to }),
        el("td", { class: s.error ? "bad" : "", text: s.state + (s.cancel ? " (cancelling)" : "") + (s.error ? `: ${s.error}` : "") }),
        el("td", { text: fmtNum(s.keys_moved) }),
        el("td", { text: fmtNum(s.keys_per_sec, 1) }),
        el("td", { text: s.eta_secs === null || s.eta_secs === undefined ? "—" : `${s.eta_secs} s` }),
        el("td", { class: holders.length ? "bad" : "", text: holders.join("; ") || "—" }));
    }))));
}

// What `POST /api/migrations/cancel` answered, in words.
function cancelled(r) {
  const dropped = r.dropped ? `queued slots ${r.dropped} dropped` : "no queued slots dropped";
  const marked = (r.cancelling || []).length
    ? `; steps ${r.cancelling.join(", ")} in flight finish or roll back` : "";
  return `${dropped}${marked} (revision ${r.revision})`;
}

async function cancelMigrations(all) {
  const range = $("cancel-range").value.trim();
  if (!all && !range) {
    show("give the slots to cancel (e.g. 0-99)", "error");
    return;
  }
  const question = all ? "Cancel every migration?" : `Cancel the migration of slots ${range}?`;
  if (!(await confirmAction(question))) return;
  write(() => api("POST", "/api/migrations/cancel", all ? {} : { range }), cancelled);
}

// Previews the rebalance (dry run), then queues it once confirmed.
async function rebalance() {
  clearMessage();
  const box = $("rebalance-plan");
  let preview;
  try {
    preview = await api("POST", "/api/rebalance", { dry_run: true });
  } catch (e) {
    box.replaceChildren();
    show(e.message, "error");
    return;
  }
  if (!preview.plan.length) {
    box.replaceChildren(el("p", { class: "muted", text: "balanced already: nothing to move" }));
    return;
  }
  box.replaceChildren(el("table", { id: "rebalance-table" },
    el("thead", {}, el("tr", {}, ...["Slots", "From", "To", "Count"].map((t) => el("th", { text: t })))),
    el("tbody", {}, ...preview.plan.map((m) => el("tr", {},
      el("td", { text: m.range }), el("td", { text: m.from }),
      el("td", { text: m.to }), el("td", { text: m.slots }))))));
  const moves = preview.plan.length === 1 ? "1 move" : `${preview.plan.length} moves`;
  const slots = preview.plan.reduce((n, m) => n + m.slots, 0);
  if (!(await confirmAction(`Queue this plan (${moves}, ${slots} slots, with their keys)?`))) return;
  write(() => api("POST", "/api/rebalance", { dry_run: false }),
    (r) => `rebalance queued: ${r.plan.length} moves in ${r.queued.length} steps (revision ${r.revision})`);
}

// ---- plugins -----------------------------------------------------------------------------

// The counters of one plugin as table cells, each with its number in `data-value`.
const COUNTERS = ["calls", "continues", "rewrites", "replies", "rejects", "remembered", "failures"];
function counterCells(c) {
  return [
    ...COUNTERS.map((f) => el("td", { class: f, "data-value": c[f], text: fmtNum(c[f]) })),
    el("td", { class: "nanos", "data-value": c.nanos, text: fmtNanos(c.nanos) }),
    el("td", { class: "per-call", "data-value": c.nanos_per_call, text: fmtNanos(c.nanos_per_call) }),
  ];
}

// The chain's counters summed over the proxies that run it, and each proxy's own.
function drawPluginStats(stats) {
  const sums = $("plugin-stats-table").tBodies[0];
  const rows = $("plugin-proxy-table").tBodies[0];
  if (!stats) {
    $("plugin-stats-summary").textContent = "this dashboard does not report plugin counters";
    fill(sums, []);
    fill(rows, []);
    return;
  }
  $("plugin-stats-summary").textContent =
    `summed over ${stats.counted} of ${stats.proxies.length} proxies (chain ${stats.chain_hash.slice(0, 12)}); ` +
    "each proxy counts from its start or its last chain swap";
  $("plugin-stats-summary").dataset.counted = stats.counted;
  fill(sums, stats.plugins.map((p) => el("tr", { "data-plugin": p.name }, el("td", { text: p.name }), ...counterCells(p))));
  if (!stats.plugins.length) fill(sums, [el("tr", {}, el("td", { colspan: 10, class: "muted", text: "no plugins: the chain is empty" }))]);
  fill(rows, stats.proxies.flatMap((x) => {
    const head = (plugin) => [
      el("td", { text: x.addr }),
      el("td", { class: x.state === "counted" ? "good" : "bad", text: x.state.replace("_", " ") }),
      el("td", { title: x.chain_hash || "" }, el("code", { text: x.chain_hash ? x.chain_hash.slice(0, 12) : "—" })),
      el("td", { text: plugin }),
    ];
    const note = el("td", { class: x.error ? "bad" : "", text: x.error || "—" });
    if (!x.plugins.length) {
      return [el("tr", { "data-proxy": x.addr, "data-state": x.state }, ...head("—"),
        ...Array.from({ length: COUNTERS.length + 2 }, () => el("td", { text: "—" })), note)];
    }
    return x.plugins.map((p) => el("tr", { "data-proxy": x.addr, "data-state": x.state, "data-plugin": p.name },
      ...head(p.name), ...counterCells(p), note.cloneNode(true)));
  }));
  if (!stats.proxies.length) fill(rows, [el("tr", {}, el("td", { colspan: 14, class: "muted", text: "no proxy is registered" }))]);
}

function drawPlugins([data, stats]) {
  drawPluginStats(stats);
  const chain = $("chain-table").tBodies[0];
  fill(chain, data.chain.map((l, i) => el("tr", { "data-plugin": l.name },
    el("td", { text: i + 1 }),
    el("td", { text: l.name }),
    el("td", { title: l.module }, el("code", { text: l.module.slice(0, 12) })),
    el("td", { text: l.fail }),
    el("td", { text: `${l.memory_limit_mb} MiB` }),
    el("td", { text: `${l.timeout_ms} ms` }),
    el("td", { text: l.remember ? "yes" : "no" }),
    el("td", { text: l.config === "" ? "—" : `${l.config} (${l.config_bytes} bytes, sha256 ${l.config_sha256.slice(0, 12)})` }))));
  if (!data.chain.length) fill(chain, [el("tr", {}, el("td", { colspan: 8, class: "muted", text: "no plugins: the chain is empty" }))]);
  $("plugin-errors").replaceChildren(...(data.proxy_errors || []).map((p) =>
    el("li", { class: "bad", text: `proxy ${p.addr} could not load the chain: ${p.plugin_error}` })));
  fill($("module-table").tBodies[0], data.modules.map((m) => el("tr", { "data-module": m.sha256 },
    el("td", {}, el("code", { text: m.sha256 })),
    el("td", { text: fmtNum(m.size) }),
    el("td", { text: m.used_by.join(", ") || "—" }))));
}

async function uploadModule(file) {
  const name = file.name.replace(/\.(wasm|wat)$/, "").replace(/[^A-Za-z0-9_.-]/g, "-");
  await write(async () => {
    const r = await api("POST", "/api/plugins/modules", await file.arrayBuffer());
    const editor = $("chain-editor");
    let doc;
    try { doc = JSON.parse(editor.value); } catch (_) { doc = { chain: [] }; }
    if (!Array.isArray(doc.chain)) doc.chain = [];
    doc.chain.push({ name, module: r.sha256, config: "", fail: "closed" });
    editor.value = JSON.stringify(doc, null, 2);
    return r;
  }, (r) => `module ${file.name} uploaded: ${r.sha256} (${r.size} bytes); it is added to the new chain below`);
}

async function loadChain() {
  await write(async () => {
    const r = await api("GET", "/api/plugins?full=1", undefined, { auth: true });
    const chain = r.chain.map(({ config_bytes, config_sha256, ...link }) => link);
    $("chain-editor").value = JSON.stringify({ chain }, null, 2);
    return r;
  }, (r) => `the current chain (revision ${r.revision}) is in the editor`);
}

async function applyChain() {
  let doc;
  try {
    doc = JSON.parse($("chain-editor").value);
  } catch (e) {
    show(`the chain is not JSON: ${e.message}`, "error");
    return;
  }
  const names = (doc.chain || []).map((l) => l.name).join(", ") || "an empty chain";
  if (!(await confirmAction(`Replace the plugin chain of every proxy with ${names}?`))) return;
  write(() => api("PUT", "/api/plugins", doc),
    (r) => `plugin chain set: ${r.chain.map((l) => l.name).join(", ") || "empty"} (revision ${r.revision})`);
}

// ---- start -------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("token-button").addEventListener("click", () => askToken(true));
  $("assign-button").addEventListener("click", () => assignSelection(Number($("assign-group").value)));
  $("offline-button").addEventListener("click", () => assignSelection(null));
  $("migrate-button").addEventListener("click", () => migrateSelection(Number($("assign-group").value)));
  $("cancel-range-button").addEventListener("click", () => cancelMigrations(false));
  $("cancel-all-button").addEventListener("click", () => cancelMigrations(true));
  $("rebalance-button").addEventListener("click", rebalance);
  $("add-group-button").addEventListener("click", () => {
    const id = Number($("new-group-id").value);
    write(() => api("POST", "/api/groups", { id }), (r) => `group ${id} created (revision ${r.revision})`);
  });
  $("module-file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) uploadModule(file).finally(() => { e.target.value = ""; });
  });
  $("load-chain-button").addEventListener("click", loadChain);
  $("apply-chain-button").addEventListener("click", applyChain);
  window.addEventListener("hashchange", route);
  route();
});
