/**
 * The dashboard's server side without a browser (docs/dashboard.md): who may read what, CORS,
 * the stream's first snapshot (a member that does not answer is `down`), the bound on concurrent
 * streams, the timeline's ring buffer, the lock table's summary of 10,000 locks, and the ring
 * states the page draws from a snapshot (a node another member suspects is `suspected`).
 * The browser's view of a live cluster is dashboard_browser_test.ts.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";
import { Hono } from "hono";
import { ClientAuth } from "../cluster/client_auth.ts";
import type { TokenConfig } from "../cluster/config.ts";
import { installErrorHandlers } from "../cluster/http_util.ts";
import { jsonLogger, memoryLogger } from "../cluster/log.ts";
import { RecentEvents, recordingLogger } from "../cluster/dashboard/events.ts";
import { type DashboardOptions, installDashboard, LOCK_ROWS_MAX, lockPage, summarizeLocks } from "../cluster/dashboard/routes.ts";
import type { LockView } from "../cluster/lock/status_view.ts";
import { ringStates, type SnapshotPart } from "../cluster/dashboard/ring_states.ts";
import type { SuspicionStatus } from "../lib/core/ring/repair.ts";
import { eventually } from "./_harness.ts";

const READ = "read-token-0123456789abcdef0123456789";
const NONE = "none-token-0123456789abcdef0123456789";
const tokens: TokenConfig[] = [
  { name: "viewer", secret: READ, permissions: [{ prefix: "team/", allow: ["read"] }], sessionsMax: null, waitersMax: null },
  { name: "nobody", secret: NONE, permissions: [], sessionsMax: null, waitersMax: null },
];
const MEMBERS = [
  { id: "r1", role: "ring", url: "http://127.0.0.1:7001" },
  { id: "r2", role: "ring", url: "http://127.0.0.1:7002" },
];

function dashboardApp(overrides: Partial<DashboardOptions> = {}) {
  const auth = new ClientAuth(tokens, null);
  const app = new Hono();
  installErrorHandlers(app, (error) => {
    throw error;
  });
  app.use(auth.middleware);
  const events = new RecentEvents("r1", 10, () => 1_000);
  events.record("tokenRegenerated", { epoch: 3 });
  const fetched: Array<{ url: string; authorization: string | null }> = [];
  installDashboard(app, auth, {
    nodeId: "r1",
    role: "ring",
    members: () => MEMBERS,
    state: (may) => ({ readsTeam: may("team/a"), readsOther: may("other") }),
    events,
    fetch: (url, init) => {
      fetched.push({ url, authorization: new Headers(init?.headers).get("authorization") });
      return Promise.reject(new Error("connection refused"));
    },
    limits: { intervalMs: 10, streamsMax: 1 },
    ...overrides,
  });
  return { app, fetched };
}

const bearer = (token: string, more: Record<string, string> = {}) => ({ headers: { authorization: `Bearer ${token}`, ...more } });

/** The first snapshot event of a dashboard stream (the stream is closed after it). */
async function firstSnapshot(answer: Response) {
  const reader = answer.body!.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  // Bounded: a snapshot is a few hundred bytes; stop at the first complete event.
  for (let reads = 0; reads < 100 && !text.includes("\n\n"); reads++) text += (await reader.read()).value ?? "";
  await reader.cancel();
  return JSON.parse(text.split("\n").find((line) => line.startsWith("data:"))!.slice(5));
}

test("dashboard routes: the page is open, the data needs read on some name, names filtered by the token", async () => {
  let builds = 0;
  const built = () => builds;
  const { app } = dashboardApp({
    state: (may) => {
      builds++;
      return { readsTeam: may("team/a"), readsOther: may("other") };
    },
    limits: { intervalMs: 60_000, streamsMax: 1 },
  });
  const page = await app.request("/");
  assert.equal(page.status, 200);
  const html = await page.text();
  assert.match(html, /<svg id="ring"/);
  // Offline: nothing is loaded from elsewhere (no src or href attribute at all; script and style inline).
  assert.doesNotMatch(html, /\b(src|href)\s*=/i);
  assert.doesNotMatch(html, /https?:\/\//);
  assert.equal((await app.request("/v1/dashboard/node")).status, 401);
  assert.equal((await app.request("/v1/dashboard/events")).status, 401);
  assert.equal((await app.request("/v1/dashboard/node", bearer(NONE))).status, 403);
  const part = await (await app.request("/v1/dashboard/node", bearer(READ))).json();
  assert.deepEqual(part.state, { readsTeam: true, readsOther: false });
  // Built once per token within half an interval (the table walk is shared by every stream).
  await app.request("/v1/dashboard/node", bearer(READ));
  assert.equal(built(), 1);
  assert.deepEqual(part.events.map((e: { event: string }) => e.event), ["tokenRegenerated"]);
});

test("dashboard routes: CORS for the cluster's members only; a preflight passes without a token", async () => {
  const { app } = dashboardApp();
  const member = await app.request("/v1/dashboard/node", bearer(READ, { origin: "http://127.0.0.1:7002" }));
  assert.equal(member.headers.get("access-control-allow-origin"), "http://127.0.0.1:7002");
  const stranger = await app.request("/v1/dashboard/node", bearer(READ, { origin: "http://evil.example" }));
  assert.equal(stranger.headers.get("access-control-allow-origin"), null);
  const preflight = await app.request("/v1/dashboard/events", { method: "OPTIONS", headers: { origin: "http://127.0.0.1:7001" } });
  assert.equal(preflight.status, 204);
  assert.equal(preflight.headers.get("access-control-allow-headers"), "authorization");
  // Only the dashboard's preflights pass the token check.
  assert.equal((await app.request("/v1/status", { method: "OPTIONS" })).status, 401);
});

test("dashboard stream: a snapshot of every member (one that fails is down, asked with the caller's header); streams are bounded", async () => {
  const { app, fetched } = dashboardApp();
  const answer = await app.request("/v1/dashboard/events", bearer(READ));
  assert.equal(answer.status, 200);
  assert.match(answer.headers.get("content-type") ?? "", /text\/event-stream/);
  // The one stream allowed runs: a second is refused.
  const second = await app.request("/v1/dashboard/events", bearer(READ));
  assert.equal(second.status, 429);
  const data = await firstSnapshot(answer);
  // The closed stream gives its place back: a new one is served.
  await eventually("a stream after the first was closed", async () => {
    const again = await app.request("/v1/dashboard/events", bearer(READ));
    await again.body?.cancel();
    return again.status === 200;
  }, 2_000);
  assert.equal(data.self, "r1");
  assert.deepEqual(data.members, MEMBERS);
  assert.equal(data.parts[0].id, "r1");
  assert.deepEqual(data.parts[1], { id: "r2", role: "ring", down: "connection refused" });
  assert.deepEqual(fetched[0], { url: "http://127.0.0.1:7002/v1/dashboard/node", authorization: `Bearer ${READ}` });
});

test("timeline: the buffer keeps the newest `capacity` events; the logger passes every line on and records the timeline's, without lock names", () => {
  const events = new RecentEvents("p1", 3);
  const lines = memoryLogger();
  const log = recordingLogger(lines, events);
  for (let i = 0; i < 5; i++) log.event("sessionExpired", { session: `s${i}`, released: ["secret/a", "secret/b"] });
  log.event("granted", { name: "x" });
  log.event("primary", { how: "takeover", list: "y".repeat(1000) });
  assert.equal(lines.lines.length, 7);
  const kept = events.list();
  assert.deepEqual(kept.map((e) => e.fields.session ?? e.event), ["s3", "s4", "primary"]);
  assert.ok((kept[2].fields.list as string).length <= 201, "long fields are cut");
  assert.deepEqual(kept.map((e) => e.seq), [4, 5, 6]);
  // Lock names stay out of the timeline (any read token sees it): the count only.
  assert.equal(kept[0].fields.released, 2);
  assert.deepEqual(lines.lines[0].released, ["secret/a", "secret/b"], "the log keeps them");
});

test("timeline: the recording logger passes the wrapped logger's levels on (a grant builds no debug line's fields at the default level)", () => {
  const events = new RecentEvents("p1", 3);
  const atInfo = recordingLogger(jsonLogger("p1", 10, () => {}, "info"), events);
  assert.equal(atInfo.wants?.("debug"), false);
  assert.equal(atInfo.wants?.("info"), true);
  // A logger that keeps every level (tests) wants every level through the wrapper too.
  assert.equal(recordingLogger(memoryLogger(), events).wants?.("debug"), true);
});

test("lock pages: by name after a cursor, filtered by prefix and token, bounded and checked", async () => {
  const locks: LockView[] = ["team/c", "team/a", "other/x", "team/b", "team/d"].map((name, i) => ({
    name,
    holders: [{ session: `s${i}`, owner: "worker", token: i + 1, mode: "exclusive", heldForMs: 5, lockDelayMs: 0 }],
    waiters: Array.from({ length: 12 }, (_, w) => ({ position: w + 1, session: `w${w}`, mode: "exclusive", waitingForMs: w })),
    lockDelayRemainingMs: 0,
  }));
  const { app } = dashboardApp({ lockPage: (query, may) => lockPage(locks, query, may) });
  const get = async (query: string) => {
    const answer = await app.request(`/v1/dashboard/locks?${query}`, bearer(READ));
    return { status: answer.status, body: await answer.json() };
  };
  const first = await get("limit=2");
  assert.equal(first.status, 200);
  assert.equal(first.body.matching, 4, "other/x is not readable with the viewer's token");
  assert.deepEqual(first.body.locks.map((l: { name: string }) => l.name), ["team/a", "team/b"]);
  assert.equal(first.body.next, "team/b");
  assert.equal(first.body.locks[0].waiters.length, 10, "the first waiters, and their count");
  assert.equal(first.body.locks[0].waiterCount, 12);
  const second = await get("limit=2&after=team/b");
  assert.deepEqual(second.body.locks.map((l: { name: string }) => l.name), ["team/c", "team/d"]);
  assert.equal(second.body.next, null);
  assert.deepEqual((await get("prefix=team/d")).body.locks.map((l: { name: string }) => l.name), ["team/d"]);
  assert.equal((await get("limit=101")).status, 400);
  assert.equal((await get("limit=0")).status, 400);
  assert.equal((await get("prefix=" + "x".repeat(257))).status, 400);
  assert.equal((await get("sort=name")).status, 400, "an unknown parameter is refused, by name");
  assert.equal((await app.request("/v1/dashboard/locks")).status, 401);
  // A role without a lock table answers 404.
  const { app: ring } = dashboardApp();
  assert.equal((await ring.request("/v1/dashboard/locks", bearer(READ))).status, 404);
});

test("lock summary: 10,000 locks become bounded lists, hottest by wait first, only readable names", () => {
  const locks: LockView[] = Array.from({ length: 10_000 }, (_, i) => ({
    name: i % 2 === 0 ? `team/${i}` : `other/${i}`,
    holders: [{ session: `s${i}`, token: i + 1, mode: "exclusive", heldForMs: i, lockDelayMs: 0 }],
    waiters: i % 10 === 0 ? [{ position: 1, session: `w${i}`, mode: "exclusive", waitingForMs: 10 * i }] : [],
    lockDelayRemainingMs: 0,
  }));
  const startedUs = process.cpuUsage();
  const summary = summarizeLocks(locks, (name) => name.startsWith("team/"));
  const cpu = process.cpuUsage(startedUs);
  assert.equal(summary.lockCount, 5_000);
  assert.equal(summary.heldCount, 5_000);
  assert.equal(summary.waiterCount, 1_000);
  assert.equal(summary.hottest.length, LOCK_ROWS_MAX);
  assert.equal(summary.hottest[0].name, "team/9990");
  assert.equal(summary.longestHeld[0].name, "team/9998");
  assert.ok(summary.hottest.every((lock, i, all) => i === 0 || all[i - 1].longestWaitMs >= lock.longestWaitMs));
  console.log(`summarizeLocks of 10,000 locks: ${((cpu.user + cpu.system) / 1000).toFixed(1)} ms CPU`);
});

test("ring states: a node another member's repair suspects shows as suspected, from the stream's snapshot", async () => {
  const ring = ["r1", "r2", "r3"].map((id, i) => ({ id, role: "ring", url: `http://127.0.0.1:${7001 + i}` }));
  const view = { view: { epoch: 4, members: ["r1", "r2", "r3"], regenerator: "r1" } };
  /** A ring member's part as `GET /v1/dashboard/node` answers it (the fields ring_states.ts reads). */
  const ringPart = (id: string, successor: string, suspicions: SuspicionStatus[]) => ({
    id,
    role: "ring",
    state: { token: "none", successor, view, lease: { quorum: "ok" }, suspicions },
    events: [],
  });
  // r2's hand-offs to r3 failed: its repair link suspects r3 (r3 itself answers, and reports nothing).
  const r2Suspects: SuspicionStatus[] = [{ node: "r3", suspectedBy: ["r2"], suspectedForMs: 700, epoch: 4, confirmedBy: [], newSuccessor: "r1" }];
  const statesSeen = async (r2Suspicions: SuspicionStatus[], r3Answers: boolean) => {
    const { app } = dashboardApp({
      members: () => ring,
      state: () => ringPart("r1", "r2", []).state,
      fetch: (url) => {
        if (url.startsWith(ring[1].url)) return Promise.resolve(Response.json(ringPart("r2", "r3", r2Suspicions)));
        if (url.startsWith(ring[2].url) && r3Answers) return Promise.resolve(Response.json(ringPart("r3", "r1", [])));
        return Promise.reject(new Error("connection refused"));
      },
    });
    const snapshot = await firstSnapshot(await app.request("/v1/dashboard/events", bearer(READ)));
    const { states } = ringStates(snapshot.members, new Map(snapshot.parts.map((p: SnapshotPart) => [p.id, p])));
    return Object.fromEntries(states);
  };
  assert.deepEqual(await statesSeen(r2Suspects, true), { r1: "alive", r2: "alive", r3: "suspected" });
  // Without the suspicion r3 is alive (so the state above comes from r2's suspicion); once r3 stops answering it is down.
  assert.deepEqual(await statesSeen([], true), { r1: "alive", r2: "alive", r3: "alive" });
  assert.deepEqual(await statesSeen(r2Suspects, false), { r1: "alive", r2: "alive", r3: "down" });
});
