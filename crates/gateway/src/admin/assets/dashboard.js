// The belay dashboard: reads /topology and /metrics every second and
// follows /events (Server-Sent Events). Plain JavaScript, no libraries.
"use strict";

const POLL_MS = 1000;
const RATE_WINDOW_MS = 5000;
const MAX_EVENTS = 200;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function tag(text, kind) {
  return el("span", { class: "tag " + kind }, text);
}

const fmt = {
  rate(v) {
    if (v === null || v === undefined || !isFinite(v)) return "—";
    if (v >= 10000) return (v / 1000).toFixed(1) + "k";
    if (v >= 100) return Math.round(v).toString();
    return v.toFixed(1);
  },
  secs(s) {
    if (s === null || s === undefined || !isFinite(s)) return "—";
    if (s < 0.001) return (s * 1e6).toFixed(0) + " µs";
    if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 2 : 1) + " ms";
    return s.toFixed(2) + " s";
  },
  ms(ms) {
    if (ms === null || ms === undefined) return "—";
    return ms < 1 ? ms + " ms" : fmt.secs(ms / 1000);
  },
  bytes(b) {
    if (b === null || b === undefined) return "";
    if (b < 1024) return b + " B";
    if (b < 1024 * 1024) return (b / 1024).toFixed(1) + " KiB";
    return (b / 1024 / 1024).toFixed(1) + " MiB";
  },
  time(ms) {
    const d = new Date(ms);
    return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
  },
};

// ---- /metrics ------------------------------------------------------------

// Parses the Prometheus text exposition into [{name, labels, value}].
function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    if (m[3]) {
      for (const p of m[3].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
        labels[p[1]] = p[2];
      }
    }
    const value = m[4] === "+Inf" ? Infinity : parseFloat(m[4]);
    out.push({ name: m[1], labels, value });
  }
  return out;
}

function sum(samples, name, match) {
  let total = 0;
  for (const s of samples) {
    if (s.name !== name) continue;
    if (match && !Object.entries(match).every(([k, v]) => s.labels[k] === v)) continue;
    total += s.value;
  }
  return total;
}

function byLabel(samples, name, label) {
  const out = {};
  for (const s of samples) if (s.name === name) out[s.labels[label]] = (out[s.labels[label]] || 0) + s.value;
  return out;
}

// The buckets of a histogram for one destination: [[le, cumulative count]].
function buckets(samples, name, destination) {
  return samples
    .filter((s) => s.name === name && s.labels.destination === destination)
    .map((s) => [s.labels.le === "+Inf" ? Infinity : parseFloat(s.labels.le), s.value])
    .sort((a, b) => a[0] - b[0]);
}

// The q-quantile of the observations between two cumulative histograms,
// interpolated within its bucket as Prometheus's histogram_quantile does.
function quantile(q, now, then) {
  const d = now.map(([le, n], i) => [le, n - ((then[i] && then[i][1]) || 0)]);
  const total = d.length ? d[d.length - 1][1] : 0;
  if (total <= 0) return null;
  const rank = q * total;
  let prevLe = 0, prevN = 0;
  for (const [le, n] of d) {
    if (n >= rank) {
      if (le === Infinity) return prevLe;
      const inBucket = n - prevN;
      return inBucket > 0 ? prevLe + (le - prevLe) * ((rank - prevN) / inBucket) : le;
    }
    prevLe = le;
    prevN = n;
  }
  return prevLe;
}

const history = []; // [{t, samples}]

function rate(now, then, name, match) {
  if (!then) return null;
  const dt = (now.t - then.t) / 1000;
  if (dt <= 0) return null;
  return Math.max(0, sum(now.samples, name, match) - sum(then.samples, name, match)) / dt;
}

function renderMetrics() {
  const now = history[history.length - 1];
  const then = history.find((h) => now.t - h.t <= RATE_WINDOW_MS) || history[0];
  const base = then === now ? null : then;
  const s = now.samples;
  const toMaster = rate(now, base, "belay_commands_total", { destination: "master" });
  const toReplicas = rate(now, base, "belay_commands_total", { destination: "replica" });
  const local = rate(now, base, "belay_commands_total", { destination: "gateway" });
  $("ops-total").textContent = fmt.rate(toMaster + toReplicas + local);
  $("ops-master").textContent = fmt.rate(toMaster);
  $("ops-replicas").textContent = fmt.rate(toReplicas);
  const readsReplica = rate(now, base, "belay_commands_total", { class: "read", destination: "replica" });
  const readsMaster = rate(now, base, "belay_commands_total", { class: "read", destination: "master" });
  const reads = readsReplica + readsMaster;
  $("read-share").textContent = base && reads > 0 ? Math.round((100 * readsReplica) / reads) + " %" : "—";
  for (const dest of ["master", "replica"]) {
    const name = "belay_backend_request_duration_seconds_bucket";
    const b = buckets(s, name, dest);
    const a = base ? buckets(base.samples, name, dest) : [];
    const p50 = quantile(0.5, b, a), p99 = quantile(0.99, b, a);
    $("latency-" + dest).textContent = p50 === null ? "—" : fmt.secs(p50) + " / " + fmt.secs(p99);
  }
  $("clients").textContent = sum(s, "belay_client_connections");
  $("held-commands").textContent = sum(s, "belay_held_commands");
  $("errors").textContent = fmt.rate(rate(now, base, "belay_errors_total"));
  // Per-node figures, keyed by address, for the nodes table.
  nodeFigures = {};
  const inFlight = byLabel(s, "belay_backend_in_flight", "node");
  const lagBytes = byLabel(s, "belay_replica_lag_bytes", "node");
  for (const sample of s) {
    if (sample.name !== "belay_node_commands_total") continue;
    const addr = sample.labels.node;
    const before = base && base.samples.find((x) => x.name === sample.name && x.labels.node === addr);
    const dt = base ? (now.t - base.t) / 1000 : 0;
    nodeFigures[addr] = {
      ops: before && dt > 0 ? Math.max(0, sample.value - before.value) / dt : null,
      inFlight: inFlight[addr],
      lagBytes: lagBytes[addr],
    };
  }
  renderNodes();
}

async function pollMetrics() {
  try {
    const r = await fetch("metrics", { cache: "no-store" });
    if (!r.ok) throw new Error(r.status);
    history.push({ t: Date.now(), samples: parseMetrics(await r.text()) });
    while (history.length > 2 && history[history.length - 1].t - history[1].t > RATE_WINDOW_MS) history.shift();
    renderMetrics();
  } catch (e) {
    // The page says the gateway is unreachable through the event stream's dot.
  }
}

// ---- /topology -----------------------------------------------------------

let topology = null;
let nodeFigures = {};

function renderTopology() {
  const t = topology;
  const shards = t.shards || null;
  $("headline-label").textContent = shards ? "cluster" : "master";
  const held = shards ? shards.filter((s) => s.writes_held) : t.writes_held ? [t] : [];
  const ws = $("write-state");
  ws.dataset.held = held.length ? "true" : "false";
  ws.className = "pill " + (held.length ? "held" : "ok");
  if (shards) {
    $("master-addr").textContent = shards.length + (shards.length === 1 ? " shard" : " shards");
    ws.textContent = held.length
      ? "writes held on " + held.map((s) => "slots " + s.slots.join(",") + " (" + (s.writes_held_because || "no confirmed master") + ")").join("; ")
      : "writes flow to every shard's master";
  } else {
    $("master-addr").textContent = t.master || "none confirmed";
    ws.textContent = held.length ? "writes held: " + (t.writes_held_because || "no confirmed master") : "writes flow to the master";
  }
  $("generation").textContent = t.generation;
  $("server-version").textContent = t.server_version || "—";
  renderNodes();
  // A cluster has no Sentinels: its shards are in the nodes table.
  $("sentinels-section").hidden = !!shards;
  if (!shards) renderSentinels();
  const drift = Object.entries(t.admin_drift || {});
  $("drift").hidden = drift.length === 0;
  $("drift").textContent = drift.map(([node, missed]) => node + " misses: " + missed.join(", ")).join("; ");
}

function renderNodes() {
  if (!topology) return;
  const t = topology;
  const rows = [];
  if (t.shards) {
    // One group of rows per shard: its slots and whether its writes flow,
    // then its master and replicas.
    t.shards.forEach((s, i) => {
      const state = s.writes_held ? tag("writes held: " + (s.writes_held_because || "no confirmed master"), "bad") : tag("writes flow", "ok");
      const moving = s.slots_read_on_master ? tag(s.slots_read_on_master + " slots read on the master (resharding)", "warn") : null;
      rows.push(
        el("tr", { class: "shard", "data-shard": i, "data-held": s.writes_held ? "true" : "false" },
          el("th", { colSpan: 9 }, "shard " + (i + 1) + " · slots " + s.slots.join(", ") + " ", state, moving)));
      rows.push(...groupRows(s, i));
    });
  } else {
    rows.push(...groupRows(t, null));
  }
  $("nodes").tBodies[0].replaceChildren(...rows);
}

// The rows of one group (the Sentinel group, or one shard of a cluster):
// its master, the master the Sentinels still name when none is confirmed,
// its replicas.
function groupRows(t, shard) {
  const rows = [];
  const at = { "data-shard": shard === null ? undefined : shard };
  if (t.master) {
    const f = nodeFigures[t.master] || {};
    rows.push(
      el("tr", { "data-addr": t.master, "data-role": "master", ...at },
        el("td", {}, "master"),
        el("td", { class: "addr" }, t.master),
        el("td", {}, t.master_offset),
        el("td", {}, "—"),
        el("td", {}, t.master_zone || "—"),
        el("td", {}, fmt.ms(t.master_rtt_ms)),
        el("td", {}, t.writes_held ? tag("writes held", "bad") : tag("taking writes", "ok")),
        el("td", {}, fmt.rate(f.ops)),
        el("td", {}, f.inFlight ?? "—")));
  }
  // No confirmed master: the one the Sentinels still name, if no replica.
  const named = (t.sentinels || []).map((s) => s.master).filter(Boolean);
  const down = !t.master && named.length ? named.sort((a, b) => named.filter((x) => x === b).length - named.filter((x) => x === a).length)[0] : null;
  if (down && !t.replicas.some((r) => r.addr === down)) {
    rows.push(
      el("tr", { "data-addr": down, "data-role": "master-down", ...at },
        el("td", {}, "master?"),
        el("td", { class: "addr" }, down),
        el("td", {}, "—"),
        el("td", {}, "—"),
        el("td", {}, "—"),
        el("td", {}, "—"),
        el("td", {}, tag("not confirmed: down or not answering", "bad")),
        el("td", {}, "—"),
        el("td", {}, "—")));
  }
  for (const r of t.replicas) {
    const f = nodeFigures[r.addr] || {};
    const link = el("td", {});
    link.append(r.eligible ? tag("serves reads", "ok") : tag("no reads", "bad"));
    if (r.silent) link.append(tag("silent", "bad"));
    if (r.busy) link.append(tag("busy (script)", "warn"));
    const lag = [fmt.ms(r.lag_ms), f.lagBytes !== undefined ? fmt.bytes(f.lagBytes) : null].filter(Boolean).join(" · ");
    rows.push(
      el("tr", { "data-addr": r.addr, "data-role": "replica", "data-eligible": r.eligible ? "true" : "false", ...at },
        el("td", {}, "replica"),
        el("td", { class: "addr" }, r.addr),
        el("td", {}, r.offset),
        el("td", {}, lag),
        el("td", {}, r.zone || "—"),
        el("td", {}, fmt.ms(r.rtt_ms)),
        link,
        el("td", {}, fmt.rate(f.ops)),
        el("td", {}, f.inFlight ?? "—")));
  }
  return rows;
}

function renderSentinels() {
  const list = topology.sentinels || [];
  const body = $("sentinels").tBodies[0];
  body.replaceChildren(...list.map((s) =>
    el("tr", { "data-addr": s.addr },
      el("td", { class: "addr" }, s.addr),
      el("td", { class: "addr" }, s.error ? el("span", { class: "warn" }, "no answer: " + s.error) : (s.master || "—")),
      el("td", {}, (s.flags || []).join(", ")),
      el("td", {}, s.error ? "" : s.agrees ? tag("yes", "ok") : tag("no", "bad")))));
  const answered = list.filter((s) => !s.error);
  const agreeing = answered.filter((s) => s.agrees).length;
  $("agreement").textContent = list.length
    ? agreeing + " of " + answered.length + " answering agree" + (answered.length < list.length ? " (" + (list.length - answered.length) + " not answering)" : "")
    : "";
}

let topologyPending = false;
async function pollTopology() {
  if (topologyPending) return;
  topologyPending = true;
  try {
    const r = await fetch("topology", { cache: "no-store" });
    if (r.ok) {
      topology = await r.json();
      renderTopology();
    }
  } catch (e) {
    // Shown by the event stream's dot.
  } finally {
    topologyPending = false;
  }
}

// ---- /events and the failover timeline ------------------------------------

// The gateway keeps the timeline (/failovers); the page draws it.
let episodes = [];

function addEventLine(a) {
  const list = $("events");
  list.prepend(el("li", { "data-kind": a.kind },
    el("time", {}, fmt.time(a.at_ms)),
    el("span", { class: "kind" }, a.kind),
    a.text));
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

// A bar from the episode's start to its end (or now), the hold shaded and
// each step a tick.
function episodeBar(e, end) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const span = Math.max(1, end - e.started_at_ms);
  const x = (t) => (100 * (t - e.started_at_ms)) / span + "%";
  const line = document.createElementNS(ns, "rect");
  line.setAttribute("x", "0"); line.setAttribute("y", "8"); line.setAttribute("width", "100%"); line.setAttribute("height", "2");
  line.setAttribute("fill", "#e3e6eb");
  svg.append(line);
  if (e.hold_started_at_ms !== null) {
    const hold = document.createElementNS(ns, "rect");
    const holdEnd = e.released_at_ms !== null ? e.released_at_ms : end;
    hold.setAttribute("x", x(e.hold_started_at_ms));
    hold.setAttribute("width", Math.max(0.5, (100 * (holdEnd - e.hold_started_at_ms)) / span) + "%");
    hold.setAttribute("y", "4"); hold.setAttribute("height", "10"); hold.setAttribute("fill", "#f4b4ae");
    svg.append(hold);
  }
  for (const s of e.steps) {
    const c = document.createElementNS(ns, "circle");
    c.setAttribute("cx", x(s.at_ms)); c.setAttribute("cy", "9"); c.setAttribute("r", "3"); c.setAttribute("fill", "#2f5bd3");
    const title = document.createElementNS(ns, "title");
    title.textContent = s.text;
    c.append(title);
    svg.append(c);
  }
  return svg;
}

function renderEpisodes() {
  const list = $("failovers");
  if (!episodes.length) {
    list.replaceChildren(el("li", { class: "empty" }, "none seen since the gateway started"));
    return;
  }
  const now = Date.now();
  list.replaceChildren(...episodes.map((e) => {
    const end = e.ongoing ? now : Math.max(e.started_at_ms, ...e.steps.map((s) => s.at_ms));
    const title = e.failover
      ? "failover" + (e.old_master ? " of " + e.old_master : "") + (e.new_master ? " → " + e.new_master : "")
      : "writes held";
    const blackout = e.held_ms !== null
      ? "write blackout " + fmt.ms(e.held_ms)
      : e.hold_started_at_ms !== null ? "writes held for " + fmt.ms(now - e.hold_started_at_ms) + "…" : e.ongoing ? "under way" : "";
    return el("li", { "data-state": e.ongoing ? "ongoing" : "done", "data-held-ms": e.held_ms, "data-new-master": e.new_master },
      el("span", { class: "blackout" + (e.ongoing ? " open" : "") }, blackout),
      el("span", { class: "title" }, title),
      " ", el("span", { class: "meta" }, fmt.time(e.started_at_ms)),
      e.took_ms !== null ? el("span", { class: "meta" }, " · new master after " + fmt.ms(e.took_ms)) : null,
      episodeBar(e, end),
      el("ol", {}, ...e.steps.map((s) => el("li", {}, el("time", {}, fmt.time(s.at_ms)), " ", s.text))));
  }));
}

let failoversPending = false;
async function pollFailovers() {
  if (failoversPending) return;
  failoversPending = true;
  try {
    const r = await fetch("failovers", { cache: "no-store" });
    if (r.ok) {
      episodes = await r.json();
      renderEpisodes();
    }
  } catch (e) {
    // Shown by the event stream's dot.
  } finally {
    failoversPending = false;
  }
}

const KINDS = ["sentinel", "master", "hold", "release", "replica", "node", "failover"];

function connectEvents() {
  const source = new EventSource("events");
  source.addEventListener("open", () => {
    // The stream starts with the recent past: rebuild from it.
    $("events").replaceChildren();
    $("live").className = "dot on";
    $("live-text").textContent = "live";
    pollTopology();
    pollFailovers();
  });
  source.addEventListener("error", () => {
    $("live").className = "dot off";
    $("live-text").textContent = "reconnecting to the gateway…";
  });
  for (const kind of KINDS) {
    source.addEventListener(kind, (m) => {
      try {
        addEventLine(JSON.parse(m.data));
      } catch (e) {
        return;
      }
      if (kind !== "sentinel") pollTopology();
      if (kind !== "replica" && kind !== "node") pollFailovers();
    });
  }
  source.addEventListener("gap", (m) => {
    const missed = JSON.parse(m.data).missed;
    addEventLine({ at_ms: Date.now(), kind: "gap", text: missed + " events missed (the page fell behind)" });
  });
}

connectEvents();
pollTopology();
pollMetrics();
setInterval(pollTopology, POLL_MS);
setInterval(pollMetrics, POLL_MS);
pollFailovers();
// An episode under way: its clock runs, and its steps come in.
setInterval(() => { if (episodes[0] && episodes[0].ongoing) pollFailovers(); }, 500);
