/**
 * The dashboard page's script (docs/dashboard.md), in the browser. Source only: tools/build_dashboard.ts
 * bundles it (with ring_states.ts) into page_script.generated.ts, which page.ts embeds, so the
 * compiled binary and `main.ts` serve it with no build step at run time; a test fails when the
 * generated file is older than this source (tests/dashboard_build_test.ts).
 *
 * It reads `/v1/dashboard/events` through `fetch` (an EventSource cannot send an Authorization
 * header): the token, when the cluster needs one, is typed into a small form and kept in
 * sessionStorage, never put in a URL. When the node it talks to stops answering it moves to the
 * next member of the cluster that the last snapshot named (CORS: routes.ts).
 */
/// <reference lib="dom" />
import { RING_MEMBER_STATES, ringStates, type SnapshotPart } from "./ring_states.ts";

const TOKEN_KEY = "mutexdToken";
const TIMELINE_MAX = 200;
const RETRY_MS = 1000;
/** A node that sends nothing this long (stopped, cut off) is left for another. */
const SILENT_MS = 3000;
/** One event of the stream larger than this ends the stream (the node's snapshots are far smaller). */
const EVENT_CHARS_MAX = 4_000_000;

interface Member {
  id: string;
  role?: string;
  url: string;
}
interface TimelineEvent {
  node: string;
  seq: number;
  atMs: number;
  event: string;
  fields: Record<string, unknown>;
}
interface Snapshot {
  self: string;
  members: Member[];
  parts: Array<SnapshotPart & { events?: TimelineEvent[] }>;
}
interface HolderRow {
  owner: string;
  token: number;
  heldForMs: number;
}
interface LockRow {
  name: string;
  holders: HolderRow[];
  holderCount: number;
  waiterCount: number;
  longestWaitMs: number | null;
}

let members: Member[] = [{ id: "?", url: location.origin }];
let memberIndex = 0;
let baseUrl = location.origin;
let lastSnapshotAt = 0;
/** Every event seen, by node and sequence number, so the timeline outlives the node that logged it. */
const seenEvents = new Map<string, TimelineEvent>();
/** The lock table one page at a time, from the primary the last snapshot named (CORS: routes.ts). */
let primaryUrl: string | null = null;
let pageCursor = "";

const el = (id: string): HTMLElement => document.getElementById(id)!;
const input = (id: string) => el(id) as HTMLInputElement;
const esc = (s: unknown) =>
  String(s).replace(/[&<>"]/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[ch as "&" | "<" | ">" | '"']);
const ms = (v: number | null | undefined) => v === null || v === undefined ? "–" : v >= 1000 ? (v / 1000).toFixed(1) + " s" : Math.round(v) + " ms";
const authHeaders = (token: string | null): Record<string, string> => token ? { authorization: "Bearer " + token } : {};

el("login").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, input("tokenInput").value);
  el("login").style.display = "none";
});

async function connect(): Promise<never> {
  // As long as the page is open: one attempt per RETRY_MS at most, each stream bounded by the node.
  for (;;) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const abort = new AbortController();
    lastSnapshotAt = Date.now();
    const watchdog = setInterval(() => {
      if (Date.now() - lastSnapshotAt > SILENT_MS) abort.abort(new Error("silent for " + SILENT_MS + " ms"));
    }, 500);
    try {
      const answer = await fetch(baseUrl + "/v1/dashboard/events", { headers: authHeaders(token), signal: abort.signal });
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
      setConn(baseUrl + " does not answer: " + (error as Error).message, true);
      nextMember();
    } finally {
      clearInterval(watchdog);
    }
    await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
  }
}

function nextMember(): void {
  memberIndex = (memberIndex + 1) % members.length;
  baseUrl = members[memberIndex].url;
}

function setConn(text: string, down: boolean): void {
  el("conn").textContent = text;
  el("conn").className = down ? "down" : "";
}

async function readStream(body: ReadableStream<BufferSource>): Promise<void> {
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
    if (pending.length > EVENT_CHARS_MAX) throw new Error("an event larger than " + EVENT_CHARS_MAX + " characters");
  }
}

function render(snapshot: Snapshot): void {
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

function renderRing(ringMembers: Member[], parts: Map<string, SnapshotPart>): void {
  const svg = el("ringNodes");
  if (ringMembers.length === 0) {
    svg.innerHTML = "<text x='-60' y='0'>no ring in this cluster</text>";
    return;
  }
  const { states, view } = ringStates(ringMembers, parts);
  el("view").textContent = view
    ? "ring view epoch " + view.epoch + ": " + view.members.join(", ") + " (regenerator " + view.regenerator + ")"
    : "no ring view";
  const r = 110;
  const at = new Map(ringMembers.map((m, i): [string, [number, number]] => {
    const a = (2 * Math.PI * i) / ringMembers.length - Math.PI / 2;
    return [m.id, [r * Math.cos(a), r * Math.sin(a)]];
  }));
  let html = "";
  let holder: string | null = null;
  for (const m of ringMembers) {
    const p = parts.get(m.id);
    if (!p || p.down) continue;
    if (p.state.token === "held" || p.state.token === "sending") holder = m.id;
    const to = at.get(p.state.successor);
    if (!to || p.state.successor === m.id) continue;
    const [x1, y1] = at.get(m.id)!, [x2, y2] = to;
    const d = Math.hypot(x2 - x1, y2 - y1), k = 24 / d;
    html += "<line x1='" + (x1 + (x2 - x1) * k) + "' y1='" + (y1 + (y2 - y1) * k) + "' x2='" + (x2 - (x2 - x1) * k) + "' y2='" +
      (y2 - (y2 - y1) * k) + "' stroke='#555' marker-end='url(#arrow)'/>";
  }
  for (const m of ringMembers) {
    const [x, y] = at.get(m.id)!;
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
    RING_MEMBER_STATES.map((s) => "<span class='badge " + s + "'>" + s + "</span>").join(" ");
}

function renderLockService(others: Member[], parts: Map<string, SnapshotPart>): void {
  let rows = "<tr><th>node</th><th>state</th><th>epoch</th><th>lease</th><th>support</th><th>lag</th></tr>";
  // deno-lint-ignore no-explicit-any
  const locks: any[] = [];
  for (const m of others) {
    const p = parts.get(m.id);
    if (!p || p.down) {
      rows += "<tr data-node='" + esc(m.id) + "' data-state='down'><td>" + esc(m.id) + "</td><td><span class='badge down'>down</span></td><td colspan='4'>" +
        esc(p ? p.down : "") + "</td></tr>";
      continue;
    }
    const s = p.state;
    if (m.role === "arbiter") {
      rows += "<tr data-node='" + esc(m.id) + "' data-state='arbiter'><td>" + esc(m.id) + "</td><td>arbiter</td><td>" + s.epoch + "</td><td>" +
        ms(s.leaseRemainingMs) + " for " + esc(s.primary || "–") + "</td><td></td><td></td></tr>";
      continue;
    }
    const sv = s.server;
    const support = sv.leaseSupport
      ? "arbiter " + ms(sv.leaseSupport.arbiterRemainingMs) + ", backup " + ms(sv.leaseSupport.backupRemainingMs)
      : "";
    const lag = sv.backup ? sv.backup.lagEntries + " entries (" + sv.backup.mode + ")" : "";
    rows += "<tr data-node='" + esc(m.id) + "' data-state='" + esc(sv.role) + "'><td>" + esc(m.id) + "</td><td>" + esc(sv.role) +
      (sv.serving ? " (serving)" : "") + "</td><td>" + sv.epoch + "</td><td>" + ms(sv.leaseRemainingMs) + "</td><td>" + support + "</td><td>" + lag +
      "</td></tr>";
    if (sv.role === "primary" && s.locks) {
      locks.push(s);
      primaryUrl = m.url;
    }
  }
  el("lockService").innerHTML = rows;
  const primary = locks[0];
  if (!primary) {
    el("lockCounts").textContent = "no serving primary seen";
    return;
  }
  const l = primary.locks;
  el("lockCounts").textContent = l.lockCount + " locks, " + l.heldCount + " held, " + l.waiterCount + " waiting, " + primary.sessionCount +
    " sessions, last fencing token " + primary.lastToken;
  el("hottest").innerHTML = lockRows(l.hottest);
  el("longestHeld").innerHTML = lockRows(l.longestHeld);
}

const holdersText = (holders: HolderRow[]) => holders.map((h) => esc(h.owner) + " #" + h.token + " " + ms(h.heldForMs)).join(", ");

function lockRows(rows: LockRow[]): string {
  return "<tr><th>lock</th><th>holders (fencing token, held for)</th><th>waiters</th><th>longest wait</th></tr>" + rows.map((r) =>
    "<tr><td>" + esc(r.name) + "</td><td>" + holdersText(r.holders) + (r.holderCount > r.holders.length ? " …" : "") +
    "</td><td>" + r.waiterCount + "</td><td>" + ms(r.longestWaitMs) + "</td></tr>"
  ).join("");
}

function renderTimeline(): void {
  const events = [...seenEvents.values()].sort((a, b) => b.atMs - a.atMs).slice(0, TIMELINE_MAX);
  // Bounded: only the newest TIMELINE_MAX are kept.
  seenEvents.clear();
  for (const e of events) seenEvents.set(e.node + "#" + e.seq + "@" + e.atMs, e);
  el("timeline").innerHTML = events.map((e) => {
    const fields = Object.entries(e.fields).map(([k, v]) => k + "=" + (typeof v === "string" ? v : JSON.stringify(v))).join(" ");
    const kind = e.event === "primary" && e.fields.how === "takeover" ? "takeover" : e.event;
    return "<div data-event='" + esc(kind) + "'>" + new Date(e.atMs).toISOString().slice(11, 23) + " <b>" + esc(e.node) + "</b> " + esc(kind) + " " +
      esc(fields) + "</div>";
  }).join("");
}

async function showPage(after: string): Promise<void> {
  if (!primaryUrl) {
    el("pageInfo").textContent = "no serving primary seen";
    return;
  }
  const query = new URLSearchParams({ prefix: input("prefix").value, after, limit: "50" });
  try {
    const answer = await fetch(primaryUrl + "/v1/dashboard/locks?" + query, { headers: authHeaders(sessionStorage.getItem(TOKEN_KEY)) });
    const page = await answer.json();
    if (!answer.ok) {
      el("pageInfo").textContent = page.error ? page.error.message : "HTTP " + answer.status;
      return;
    }
    el("pageInfo").textContent = page.matching + " locks match" + (after ? ", after " + after : "");
    el("lockPage").innerHTML = "<tr><th>lock</th><th>holders (fencing token, held for)</th><th>waiters (waiting for)</th></tr>" +
      // deno-lint-ignore no-explicit-any
      page.locks.map((l: any) =>
        "<tr><td>" + esc(l.name) + "</td><td>" + holdersText(l.holders) + "</td><td>" +
        // deno-lint-ignore no-explicit-any
        l.waiters.map((w: any) => esc(w.owner) + " " + ms(w.waitingForMs)).join(", ") +
        (l.waiterCount > l.waiters.length ? " … " + l.waiterCount + " in all" : "") + "</td></tr>"
      ).join("");
    pageCursor = page.next;
    (el("nextPage") as HTMLButtonElement).disabled = page.next === null;
  } catch (error) {
    el("pageInfo").textContent = "the primary does not answer: " + (error as Error).message;
  }
}
el("browse").addEventListener("submit", (e) => {
  e.preventDefault();
  showPage("");
});
el("nextPage").addEventListener("click", () => showPage(pageCursor));

connect();
