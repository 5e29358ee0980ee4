/**
 * The dashboard page served at `/` (docs/dashboard.md): one HTML document with its CSS and plain
 * JavaScript inline, so it needs no bundler, no CDN and no file next to the compiled binary.
 * The script reads `/v1/dashboard/events` through `fetch` (an EventSource cannot send an
 * Authorization header): the token, when the cluster needs one, is typed into a small form and
 * kept in sessionStorage, never put in a URL. When the node it talks to stops answering it moves
 * to the next member of the cluster that the last snapshot named (CORS: routes.ts).
 * Written without backticks or dollar-braces so that it can sit in this template literal.
 */
export const DASHBOARD_PAGE = String.raw`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mutexd dashboard</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font: 14px system-ui, sans-serif; margin: 0; background: #f6f7f9; color: #1d2330; }
header { background: #1d2330; color: #fff; padding: 8px 16px; display: flex; gap: 16px; align-items: baseline; }
header h1 { font-size: 18px; margin: 0; }
#conn.down { color: #ff8a80; }
main { display: grid; grid-template-columns: 420px 1fr; gap: 12px; padding: 12px; }
section { background: #fff; border-radius: 6px; padding: 10px 12px; box-shadow: 0 1px 2px #0002; }
h2 { font-size: 15px; margin: 0 0 8px; }
table { border-collapse: collapse; width: 100%; }
td, th { text-align: left; padding: 2px 6px; border-bottom: 1px solid #eee; font-variant-numeric: tabular-nums; }
.alive { fill: #2e7d32; } .suspected { fill: #f9a825; } .outOfView { fill: #9e9e9e; } .minority { fill: #6a1b9a; } .down { fill: #c62828; }
.badge { display: inline-block; padding: 0 6px; border-radius: 8px; color: #fff; font-size: 12px; }
.badge.alive { background: #2e7d32; } .badge.down { background: #c62828; } .badge.suspected { background: #f9a825; } .badge.outOfView { background: #9e9e9e; } .badge.minority { background: #6a1b9a; }
#token { fill: #ffb300; stroke: #000; transition: transform 0.3s ease; }
#timeline { max-height: 320px; overflow: auto; font-family: ui-monospace, monospace; font-size: 12px; }
#login { display: none; }
</style></head>
<body>
<header><h1>mutexd</h1><span id="conn">connecting…</span><span id="view"></span></header>
<form id="login"><section>This cluster needs a client token with <code>read</code> permission:
<input id="tokenInput" type="password" autocomplete="off"> <button>Use token</button></section></form>
<main>
<section><h2>Token ring</h2><svg id="ring" width="400" height="320" viewBox="-200 -160 400 320" role="img" aria-label="token ring">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" orient="auto"><path d="M0,0L10,5L0,10z"/></marker></defs>
<g id="ringNodes"></g><circle id="token" r="8" cx="0" cy="0" data-holder="" visibility="hidden"/></svg>
<div id="ringLegend"></div></section>
<section><h2>Lock service</h2><table id="lockService"></table></section>
<section><h2>Locks</h2><div id="lockCounts"></div><h3>Hottest by wait</h3><table id="hottest"></table>
<h3>Longest held</h3><table id="longestHeld"></table>
<h3>Browse by name</h3><form id="browse"><input id="prefix" placeholder="name prefix" size="24"> <button>Show</button>
<button type="button" id="nextPage" disabled>Next page</button></form><div id="pageInfo"></div><table id="lockPage"></table></section>
<section><h2>Timeline</h2><div id="timeline"></div></section>
</main>
<script>
"use strict";
const TOKEN_KEY = "mutexdToken";
const TIMELINE_MAX = 200;
const RETRY_MS = 1000;
/** A node that sends nothing this long (stopped, cut off) is left for another. */
const SILENT_MS = 3000;
let members = [{ id: "?", url: location.origin }];
let memberIndex = 0;
let baseUrl = location.origin;
let lastSnapshotAt = 0;
/** Every event seen, by node and sequence number, so the timeline outlives the node that logged it. */
const seenEvents = new Map();
const el = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"]/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[ch]);
const ms = (v) => v === null || v === undefined ? "–" : v >= 1000 ? (v / 1000).toFixed(1) + " s" : Math.round(v) + " ms";

el("login").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, el("tokenInput").value);
  el("login").style.display = "none";
});

async function connect() {
  // As long as the page is open: one attempt per RETRY_MS at most, each stream bounded by the node.
  for (;;) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const abort = new AbortController();
    lastSnapshotAt = Date.now();
    const watchdog = setInterval(() => { if (Date.now() - lastSnapshotAt > SILENT_MS) abort.abort(new Error("silent for " + SILENT_MS + " ms")); }, 500);
    try {
      const answer = await fetch(baseUrl + "/v1/dashboard/events", { headers: token ? { authorization: "Bearer " + token } : {}, signal: abort.signal });
      if (answer.status === 401 || answer.status === 403) {
        el("login").style.display = "block";
        setConn("needs a token with read permission (" + answer.status + ")", true);
      } else if (answer.ok && answer.body) {
        setConn("talking to " + baseUrl, false);
        await readStream(answer.body);
        setConn(baseUrl + " ended its stream", true);
      } else {
        setConn(baseUrl + " answered " + answer.status, true);
        nextMember();
      }
    } catch (error) {
      setConn(baseUrl + " does not answer: " + error.message, true);
      nextMember();
    } finally {
      clearInterval(watchdog);
    }
    await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
  }
}

function nextMember() {
  memberIndex = (memberIndex + 1) % members.length;
  baseUrl = members[memberIndex].url;
}

function setConn(text, down) {
  el("conn").textContent = text;
  el("conn").className = down ? "down" : "";
}

async function readStream(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    pending += value;
    let end;
    while ((end = pending.indexOf("\n\n")) >= 0) {
      const block = pending.slice(0, end);
      pending = pending.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (data) render(JSON.parse(data));
    }
    if (pending.length > 4000000) throw new Error("an event larger than 4 MB");
  }
}

function render(snapshot) {
  lastSnapshotAt = Date.now();
  members = snapshot.members;
  memberIndex = Math.max(0, members.findIndex((m) => m.id === snapshot.self));
  const self = members[memberIndex];
  setConn("talking to " + self.id + " (" + self.url + ")", false);
  const parts = new Map(snapshot.parts.map((p) => [p.id, p]));
  renderRing(members.filter((m) => m.role === "ring"), parts);
  renderLockService(members.filter((m) => m.role !== "ring"), parts);
  for (const p of snapshot.parts) for (const e of p.events || []) seenEvents.set(e.node + "#" + e.seq + "@" + e.atMs, e);
  renderTimeline();
}

function ringStates(ringMembers, parts) {
  const up = ringMembers.map((m) => parts.get(m.id)).filter((p) => p && !p.down);
  const best = up.reduce((a, p) => (p.state.view.view && (!a || p.state.view.view.epoch > a.epoch) ? p.state.view.view : a), null);
  const suspected = new Set(up.flatMap((p) => (p.state.suspicions || []).map((s) => s.node)));
  const states = new Map();
  for (const m of ringMembers) {
    const p = parts.get(m.id);
    let state = "alive";
    if (!p || p.down) state = "down";
    else if (best && !best.members.includes(m.id)) state = "outOfView";
    else if (p.state.lease.quorum === "lost") state = "minority";
    else if (suspected.has(m.id)) state = "suspected";
    states.set(m.id, state);
  }
  return { states, view: best };
}

function renderRing(ringMembers, parts) {
  const svg = el("ringNodes");
  if (ringMembers.length === 0) { svg.innerHTML = "<text x='-60' y='0'>no ring in this cluster</text>"; return; }
  const { states, view } = ringStates(ringMembers, parts);
  el("view").textContent = view ? "ring view epoch " + view.epoch + ": " + view.members.join(", ") + " (regenerator " + view.regenerator + ")" : "no ring view";
  const r = 110;
  const at = new Map(ringMembers.map((m, i) => {
    const a = (2 * Math.PI * i) / ringMembers.length - Math.PI / 2;
    return [m.id, [r * Math.cos(a), r * Math.sin(a)]];
  }));
  let html = "";
  let holder = null;
  for (const m of ringMembers) {
    const p = parts.get(m.id);
    if (!p || p.down) continue;
    if (p.state.token === "held" || p.state.token === "sending") holder = m.id;
    const to = at.get(p.state.successor);
    if (!to || p.state.successor === m.id) continue;
    const [x1, y1] = at.get(m.id), [x2, y2] = to;
    const d = Math.hypot(x2 - x1, y2 - y1), k = 24 / d;
    html += "<line x1='" + (x1 + (x2 - x1) * k) + "' y1='" + (y1 + (y2 - y1) * k) + "' x2='" + (x2 - (x2 - x1) * k) + "' y2='" + (y2 - (y2 - y1) * k) + "' stroke='#555' marker-end='url(#arrow)'/>";
  }
  for (const m of ringMembers) {
    const [x, y] = at.get(m.id);
    const state = states.get(m.id);
    html += "<g data-node='" + esc(m.id) + "' data-state='" + state + "'><circle cx='" + x + "' cy='" + y + "' r='20' class='" + state + "'/>" +
      "<text x='" + x + "' y='" + (y + 5) + "' text-anchor='middle' fill='#fff'>" + esc(m.id) + "</text>" +
      "<text x='" + x + "' y='" + (y + 36) + "' text-anchor='middle' font-size='11'>" + state + "</text></g>";
  }
  svg.innerHTML = html;
  // One token element, moved (not redrawn), so its CSS transition shows it travel between nodes.
  const t = holder ? at.get(holder) : null;
  const token = el("token");
  token.setAttribute("data-holder", holder || "");
  token.setAttribute("visibility", t ? "visible" : "hidden");
  if (t) token.style.transform = "translate(" + t[0] * 0.7 + "px," + t[1] * 0.7 + "px)";
  el("ringLegend").innerHTML = "token at <b id='tokenHolder'>" + esc(holder || "none seen") + "</b> · " +
    ["alive", "suspected", "outOfView", "minority", "down"].map((s) => "<span class='badge " + s + "'>" + s + "</span>").join(" ");
}

function renderLockService(others, parts) {
  let rows = "<tr><th>node</th><th>state</th><th>epoch</th><th>lease</th><th>support</th><th>lag</th></tr>";
  const locks = [];
  for (const m of others) {
    const p = parts.get(m.id);
    if (!p || p.down) {
      rows += "<tr data-node='" + esc(m.id) + "' data-state='down'><td>" + esc(m.id) + "</td><td><span class='badge down'>down</span></td><td colspan='4'>" + esc(p ? p.down : "") + "</td></tr>";
      continue;
    }
    const s = p.state;
    if (m.role === "arbiter") {
      rows += "<tr data-node='" + esc(m.id) + "' data-state='arbiter'><td>" + esc(m.id) + "</td><td>arbiter</td><td>" + s.epoch + "</td><td>" + ms(s.leaseRemainingMs) + " for " + esc(s.primary || "–") + "</td><td></td><td></td></tr>";
      continue;
    }
    const sv = s.server;
    const support = sv.leaseSupport ? "arbiter " + ms(sv.leaseSupport.arbiterRemainingMs) + ", backup " + ms(sv.leaseSupport.backupRemainingMs) : "";
    const lag = sv.backup ? sv.backup.lagEntries + " entries (" + sv.backup.mode + ")" : "";
    rows += "<tr data-node='" + esc(m.id) + "' data-state='" + esc(sv.role) + "'><td>" + esc(m.id) + "</td><td>" + esc(sv.role) + (sv.serving ? " (serving)" : "") + "</td><td>" + sv.epoch + "</td><td>" + ms(sv.leaseRemainingMs) + "</td><td>" + support + "</td><td>" + lag + "</td></tr>";
    if (sv.role === "primary" && s.locks) {
      locks.push(s);
      primaryUrl = m.url;
    }
  }
  el("lockService").innerHTML = rows;
  const primary = locks[0];
  if (!primary) { el("lockCounts").textContent = "no serving primary seen"; return; }
  const l = primary.locks;
  el("lockCounts").textContent = l.lockCount + " locks, " + l.heldCount + " held, " + l.waiterCount + " waiting, " + primary.sessionCount + " sessions, last fencing token " + primary.lastToken;
  el("hottest").innerHTML = lockRows(l.hottest);
  el("longestHeld").innerHTML = lockRows(l.longestHeld);
}

function lockRows(rows) {
  return "<tr><th>lock</th><th>holders (fencing token, held for)</th><th>waiters</th><th>longest wait</th></tr>" + rows.map((r) =>
    "<tr><td>" + esc(r.name) + "</td><td>" + r.holders.map((h) => esc(h.owner) + " #" + h.token + " " + ms(h.heldForMs)).join(", ") + (r.holderCount > r.holders.length ? " …" : "") +
    "</td><td>" + r.waiterCount + "</td><td>" + ms(r.longestWaitMs) + "</td></tr>").join("");
}

function renderTimeline() {
  const events = [...seenEvents.values()].sort((a, b) => b.atMs - a.atMs).slice(0, TIMELINE_MAX);
  // Bounded: only the newest TIMELINE_MAX are kept.
  seenEvents.clear();
  for (const e of events) seenEvents.set(e.node + "#" + e.seq + "@" + e.atMs, e);
  el("timeline").innerHTML = events.map((e) => {
    const fields = Object.entries(e.fields).map(([k, v]) => k + "=" + (typeof v === "string" ? v : JSON.stringify(v))).join(" ");
    const kind = e.event === "primary" && e.fields.how === "takeover" ? "takeover" : e.event;
    return "<div data-event='" + esc(kind) + "'>" + new Date(e.atMs).toISOString().slice(11, 23) + " <b>" + esc(e.node) + "</b> " + esc(kind) + " " + esc(fields) + "</div>";
  }).join("");
}

// The lock table one page at a time, from the primary the last snapshot named (CORS: routes.ts).
let primaryUrl = null;
let pageCursor = "";
async function showPage(after) {
  if (!primaryUrl) { el("pageInfo").textContent = "no serving primary seen"; return; }
  const token = sessionStorage.getItem(TOKEN_KEY);
  const query = new URLSearchParams({ prefix: el("prefix").value, after, limit: "50" });
  try {
    const answer = await fetch(primaryUrl + "/v1/dashboard/locks?" + query, { headers: token ? { authorization: "Bearer " + token } : {} });
    const page = await answer.json();
    if (!answer.ok) { el("pageInfo").textContent = page.error ? page.error.message : "HTTP " + answer.status; return; }
    el("pageInfo").textContent = page.matching + " locks match" + (after ? ", after " + after : "");
    el("lockPage").innerHTML = "<tr><th>lock</th><th>holders (fencing token, held for)</th><th>waiters (waiting for)</th></tr>" + page.locks.map((l) =>
      "<tr><td>" + esc(l.name) + "</td><td>" + l.holders.map((h) => esc(h.owner) + " #" + h.token + " " + ms(h.heldForMs)).join(", ") +
      "</td><td>" + l.waiters.map((w) => esc(w.owner) + " " + ms(w.waitingForMs)).join(", ") + (l.waiterCount > l.waiters.length ? " … " + l.waiterCount + " in all" : "") + "</td></tr>").join("");
    pageCursor = page.next;
    el("nextPage").disabled = page.next === null;
  } catch (error) {
    el("pageInfo").textContent = "the primary does not answer: " + error.message;
  }
}
el("browse").addEventListener("submit", (e) => { e.preventDefault(); showPage(""); });
el("nextPage").addEventListener("click", () => showPage(pageCursor));

connect();
</script>
</body></html>
`;
