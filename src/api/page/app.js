// slipway's status page: reads the admin API with the operator's token and follows the event
// stream. No framework, no build step; every value from the API is set as text, never as HTML.
"use strict";

const TOKEN_KEY = "slipway-token";
const STEPS = ["dhcp", "tftp", "script", "kernel", "initrd", "rootfs", "file", "config", "phone-home"];
const KEPT_EVENTS = 300;
// Timelines are read for at most this many nodes at once (the rest when events name them).
const PARALLEL = 8;

const state = {
  token: null,
  clusters: [],
  statuses: new Map(),
  nodes: [],
  timelines: new Map(),
  leases: [],
  zones: null,
  lb: null,
  lastSeq: 0,
  stream: null,
  refreshTimer: null,
  dirtyNodes: new Set(),
};

// ---- small DOM helpers ----

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "title") node.title = value;
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function table(headers, rows) {
  if (rows.length === 0) return el("p", { class: "empty" }, "none");
  return el("table", {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows));
}

function body(section) {
  return document.querySelector(`#${section} .body`);
}

function put(section, ...content) {
  body(section).replaceChildren(...content);
}

function ago(time) {
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(time)) / 1000));
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)} min`;
  if (seconds < 172800) return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
  return `${Math.floor(seconds / 86400)} d`;
}

function since(time) {
  return el("span", { class: "since", "data-since": time, title: time }, ago(time));
}

function clock(time) {
  const date = new Date(Date.parse(time));
  return isNaN(date) ? time : date.toLocaleTimeString([], { hour12: false });
}

// ---- the API ----

class Refused extends Error {}

async function api(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${state.token}` }, cache: "no-store" });
  if (response.status === 401) throw new Refused("the API refused the token");
  if (response.status === 404) return null;
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

async function each(items, limit, work) {
  const queue = [...items];
  const workers = Array.from({ length: Math.min(limit, queue.length) }, async () => {
    while (queue.length > 0) await work(queue.shift());
  });
  await Promise.all(workers);
}

// ---- views ----

function renderClusters() {
  if (state.clusters.length === 0) {
    put("clusters", el("p", { class: "empty" }, "No clusters. `slipway cluster apply -f cluster.yaml` defines one."));
    return;
  }
  put("clusters", ...state.clusters.map((cluster) => {
    const status = state.statuses.get(cluster.name);
    if (!status) {
      return el("article", { class: "cluster" },
        el("h3", {}, cluster.name, " ", el("span", { class: "phase" }, "inventory only")));
    }
    const conditions = el("ul", { class: "conditions" }, status.conditions.map((c) =>
      el("li", { class: `condition ${c.status.toLowerCase()}`, title: c.message }, `${c.type}=${c.status}`, c.message ? el("small", {}, ` ${c.message}`) : null)));
    const stage = status.stage
      ? el("p", { class: "stage" }, "Stage ", el("strong", {}, status.stage.stage), " for ", since(status.stage.since),
        status.stage.observed ? ` — ${status.stage.observed}` : "", status.stage.error ? el("span", { class: "error" }, ` ${status.stage.error}`) : null)
      : null;
    const nodes = table(["node", "phase", "in phase", "VM", "last seen", "error"], status.nodes.map((n) =>
      el("tr", { "data-node": n.name },
        el("td", {}, n.name),
        el("td", { class: `phase ${n.phase}` }, n.phase),
        el("td", {}, since(n.since)),
        el("td", {}, n.vm ? `${n.vm.hypervisor} ${n.vm.id} on ${n.vm.host}` : ""),
        el("td", {}, n.observed || ""),
        el("td", { class: "error" }, n.error || ""))));
    return el("article", { class: "cluster", "data-cluster": cluster.name },
      el("h3", {}, cluster.name, " ", el("span", { class: `phase ${status.phase}` }, status.phase)),
      stage, conditions, nodes);
  }));
}

function renderLegend() {
  const legend = document.querySelector("#boots .legend");
  legend.replaceChildren(...STEPS.map((s) => el("span", { class: `key step-${s}` }, s)));
}

function seconds(ms) {
  return ms < 100000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 60000)} min`;
}

// One bar per node: its latest boot, each step from its time to the next step's, on one axis
// shared by every node: from the earliest boot's start to the end of the latest finished boot,
// or to now while one is under way.
function renderBoots() {
  const rows = [];
  let start = Infinity;
  let end = -Infinity;
  const now = Date.now();
  for (const node of state.nodes) {
    const timeline = state.timelines.get(node.name);
    const entries = timeline ? timeline.entries.slice(timeline.latest || 0).filter((e) => STEPS.includes(e.step)) : [];
    if (entries.length > 0) {
      start = Math.min(start, Date.parse(entries[0].time));
      end = Math.max(end, timeline.complete ? Date.parse(entries[entries.length - 1].time) : now);
    }
    rows.push({ node, timeline, entries });
  }
  const span = Math.max(1000, end - start);
  put("boots", table(["node", "MAC / address", "reached", "took", "boot"], rows.map(({ node, timeline, entries }) => {
    const bar = el("div", { class: "bar" });
    entries.forEach((entry, i) => {
      const from = Date.parse(entry.time);
      const to = i + 1 < entries.length ? Date.parse(entries[i + 1].time) : (timeline.complete ? from : now);
      const segment = el("span", { class: `segment step-${entry.step}`, title: `${entry.step} at ${clock(entry.time)}: ${entry.detail}` });
      segment.style.left = `${((from - start) / span) * 100}%`;
      segment.style.width = `max(3px, ${((to - from) / span) * 100}%)`;
      bar.append(segment);
    });
    const reached = timeline && timeline.reached ? timeline.reached : "—";
    return el("tr", { "data-node": node.name },
      el("td", {}, node.name),
      el("td", {}, `${node.mac} ${node.ipv4}`),
      el("td", { class: timeline && timeline.complete ? "complete" : "" }, reached),
      el("td", {}, entries.length > 0 ? seconds((timeline.complete ? Date.parse(entries[entries.length - 1].time) : now) - Date.parse(entries[0].time)) : ""),
      el("td", { class: "timeline" }, bar));
  })));
}

function renderLeases() {
  put("leases", table(["address", "MAC", "hostname", "node", "state", "expires"], state.leases.map((l) =>
    el("tr", { class: l.active ? "" : "inactive" },
      el("td", {}, l.ip), el("td", {}, l.mac), el("td", {}, l.hostname || ""), el("td", {}, l.node || ""),
      el("td", {}, l.active ? l.state : `${l.state} (expired)`), el("td", { title: l.expires }, clock(l.expires))))));
}

function renderDns() {
  if (state.zones === null) {
    put("dns", el("p", { class: "empty" }, "DNS is not served (no [dns] section)."));
    return;
  }
  put("dns", ...state.zones.map((zone) => el("details", {},
    el("summary", {}, `${zone.zone} — ${zone.records.length} records, serial ${zone.serial}`),
    table(["name", "type", "TTL", "value"], zone.records.map((r) =>
      el("tr", {}, el("td", {}, r.name), el("td", {}, r.type), el("td", {}, r.ttl), el("td", {}, r.value)))))));
}

function renderLb() {
  if (state.lb === null) {
    put("lb", el("p", { class: "empty" }, "The load balancer is not running (no [[lb.frontends]])."));
    return;
  }
  const frontends = table(["frontend", "listen", "pool", "connections"], state.lb.frontends.map((f) =>
    el("tr", {}, el("td", {}, f.name), el("td", {}, f.listen), el("td", {}, f.pool), el("td", {}, `${f.active} / ${f.max_connections}`))));
  const pools = state.lb.pools.map((pool) => el("div", { class: "pool" },
    el("h3", {}, `${pool.name} (${pool.algorithm})`),
    table(["backend", "state", "open", "total", "bytes in / out"], pool.backends.map((b) =>
      el("tr", { "data-backend": b.address },
        el("td", {}, b.address), el("td", { class: `backend ${b.state}` }, b.state), el("td", {}, b.active),
        el("td", {}, b.connections), el("td", {}, `${b.bytes_in} / ${b.bytes_out}`))))));
  put("lb", frontends, ...pools);
}

function eventText(event) {
  const details = { ...event.details };
  delete details.type;
  const words = Object.entries(details).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`);
  return words.join(" ");
}

function addEvent(event) {
  const list = document.getElementById("event-list");
  const item = el("li", { class: `event source-${event.source}`, "data-seq": event.seq, "data-type": event.details.type },
    el("time", { datetime: event.time }, clock(event.time)), " ",
    el("span", { class: "source" }, event.source), " ",
    el("strong", {}, event.details.type), " ",
    event.node ? el("span", { class: "node" }, event.node) : null, " ",
    event.mac ? el("span", { class: "mac" }, event.mac) : null, " ",
    el("span", { class: "details" }, eventText(event)));
  list.prepend(item);
  while (list.children.length > KEPT_EVENTS) list.lastElementChild.remove();
}

// ---- loading ----

async function loadTimelines(names) {
  await each(names, PARALLEL, async (name) => {
    const timeline = await api(`/api/v1/nodes/${encodeURIComponent(name)}/timeline`);
    if (timeline) state.timelines.set(name, timeline);
    else state.timelines.delete(name);
  });
}

async function refresh(allTimelines) {
  const [clusters, nodes, leases, zones, lb] = await Promise.all([
    api("/api/v1/clusters"), api("/api/v1/nodes"), api("/api/v1/leases"), api("/api/v1/dns"), api("/api/v1/lb"),
  ]);
  state.clusters = clusters || [];
  state.nodes = nodes || [];
  state.leases = leases || [];
  state.zones = zones;
  state.lb = lb;
  await each(state.clusters.map((c) => c.name), PARALLEL, async (name) => {
    const status = await api(`/api/v1/clusters/${encodeURIComponent(name)}/status`);
    if (status) state.statuses.set(name, status);
    else state.statuses.delete(name);
  });
  const wanted = allTimelines ? state.nodes.map((n) => n.name) : [...state.dirtyNodes];
  state.dirtyNodes.clear();
  await loadTimelines(wanted.filter((name) => state.nodes.some((n) => n.name === name)));
  renderClusters();
  renderBoots();
  renderLeases();
  renderDns();
  renderLb();
}

// Events arrive in bursts (a boot is a dozen within seconds): one refresh per burst.
function scheduleRefresh() {
  if (state.refreshTimer !== null) return;
  state.refreshTimer = setTimeout(() => {
    state.refreshTimer = null;
    refresh(false).catch(failed);
  }, 250);
}

function setLive(on, text) {
  const live = document.getElementById("live");
  live.textContent = text;
  live.className = `live ${on ? "on" : "off"}`;
}

// The event stream: Server-Sent Events read through fetch (EventSource cannot send the token).
async function follow() {
  const controller = new AbortController();
  state.stream = controller;
  const query = state.lastSeq > 0 ? `after=${state.lastSeq}` : "limit=50";
  const response = await fetch(`/api/v1/events?follow=true&${query}`, {
    headers: { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" },
    signal: controller.signal,
  });
  if (response.status === 401) throw new Refused("the API refused the token");
  if (!response.ok || !response.body) throw new Error(`event stream: ${response.status}`);
  setLive(true, "live");
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, "")).join("\n");
      const kind = block.split("\n").find((l) => l.startsWith("event:"));
      if (!data || (kind && kind.slice(6).trim() === "lagged")) continue;
      let event;
      try { event = JSON.parse(data); } catch { continue; }
      if (event.seq <= state.lastSeq) continue;
      state.lastSeq = event.seq;
      addEvent(event);
      if (event.node) state.dirtyNodes.add(event.node);
      scheduleRefresh();
    }
  }
  setLive(false, "reconnecting");
}

async function followForever() {
  for (;;) {
    try {
      await follow();
    } catch (error) {
      if (error instanceof Refused) return failed(error);
      setLive(false, "reconnecting");
    }
    if (!state.token) return;
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

// ---- session ----

function failed(error) {
  if (error instanceof Refused) {
    logout(error.message);
    return;
  }
  console.error(error);
  setLive(false, `error: ${error.message}`);
}

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  if (state.stream) state.stream.abort();
  document.getElementById("main").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
  setLive(false, "offline");
}

async function start() {
  document.getElementById("login").hidden = true;
  document.getElementById("main").hidden = false;
  document.getElementById("logout").hidden = false;
  renderLegend();
  try {
    await refresh(true);
  } catch (error) {
    return failed(error);
  }
  followForever();
}

// A token in the fragment (`/ui/#token=...`: never sent to the server, kept out of logs and
// history) moves into session storage at once.
function takeFragmentToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (!fragment.has("token")) return false;
  sessionStorage.setItem(TOKEN_KEY, fragment.get("token"));
  history.replaceState(null, "", location.pathname + location.search);
  return true;
}

function init() {
  takeFragmentToken();
  // A link with a token opened in a tab that shows the page already.
  window.addEventListener("hashchange", () => {
    if (!takeFragmentToken()) return;
    if (state.stream) state.stream.abort();
    state.token = sessionStorage.getItem(TOKEN_KEY);
    start();
  });
  document.getElementById("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = document.getElementById("token").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    document.getElementById("token").value = "";
    state.token = token;
    start();
  });
  document.getElementById("logout").addEventListener("click", () => logout(""));
  // Times in phase count up between refreshes; the LB's connection counts have no events.
  setInterval(() => {
    for (const node of document.querySelectorAll("[data-since]")) node.textContent = ago(node.dataset.since);
  }, 1000);
  setInterval(() => { if (state.token) refresh(false).catch(failed); }, 10000);
  state.token = sessionStorage.getItem(TOKEN_KEY);
  if (state.token) start();
  else logout("");
}

init();
