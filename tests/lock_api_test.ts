/**
 * The lock server's HTTP API through Hono's `app.request` (no sockets): every error path
 * answers its stable code and status and leaves the lock table exactly as it was.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { manualClock } from "../cluster/clock.ts";
import { createLockApp } from "../cluster/lock/api.ts";
import type { ApiAnswer } from "../cluster/lock/api_answers.ts";
import { answerRequest, lockRoutes } from "../cluster/lock/api_routes.ts";
import { memoryLogger } from "../cluster/log.ts";
import { realTimers, type Timers } from "../cluster/timers.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { CALL_ID_LENGTH_MAX } from "../lib/core/lock/lock_table.ts";
import { ArbiterCore } from "../lib/core/arbiter/arbiter.ts";
import { createArbiterApp } from "../cluster/arbiter/server.ts";
import { Hono } from "hono";
import { type Caller, setCaller } from "../cluster/caller.ts";
import { formatStatus } from "../cluster/commands/status.ts";
import { rmSync } from "node:fs";
import { eventually, PACKAGE_VERSION, removeDir, tempDir } from "./_harness.ts";
import { soloLockService } from "./_lock_service.ts";

const SETTINGS = { ...DEFAULT_SETTINGS, bodyBytesMax: 1_024, longPollMaxMs: 200, sessionsMax: 3 };

/** Timers a test fires by hand (the service's long-poll timeouts). */
function manualTimers() {
  const pending = new Map<number, { fn: () => void; ms: number }>();
  let next = 1;
  const timers: Timers = {
    setTimeout: (fn, ms) => {
      pending.set(next, { fn, ms });
      return next++;
    },
    clearTimeout: (handle) => void pending.delete(handle as number),
  };
  return { timers, pending };
}

/** `caller`: every request comes from it, as if the bearer middleware had set it (cluster/caller.ts). */
function setup(timers: Timers = realTimers, caller?: Caller) {
  const clock = manualClock(1_000);
  const service = soloLockService(SETTINGS, timers, clock);
  const lockApp = createLockApp(service, { nodeId: "p1", role: "primary", settings: SETTINGS });
  const app = caller === undefined ? lockApp : new Hono().use(async (c, next) => {
    setCaller(c, caller);
    await next();
  }).route("/", lockApp);
  /** The secret of every session an open answered: `call` sends it, as the client does. */
  const secrets = new Map<string, string>();
  const call = async (method: string, path: string, body?: unknown, raw?: string) => {
    const response = await app.request(path, {
      method,
      headers: { "content-type": "application/json" },
      body: raw ?? (body === undefined && !sessionOfPath(path) ? undefined : JSON.stringify(withSecret(secrets, path, body))),
    });
    const answer = { status: response.status, body: await response.json() };
    if (path === "/v1/sessions" && answer.status === 201) secrets.set(answer.body.session, answer.body.sessionSecret);
    return answer;
  };
  const state = () => JSON.stringify(service.table!.snapshot());
  return { clock, service, app, call, state };
}

/** The session a keepalive's or a close's path names. */
function sessionOfPath(path: string): string | undefined {
  return /^\/v1\/sessions\/([^/]+)(\/keepalive)?$/.exec(path)?.[1];
}

/**
 * `body` with the `sessionSecret` of the session it (or the path) names, unless it has one: the
 * tests below act as the session's owner; those of the secret itself send theirs (or none) with
 * `sessionSecret` set (undefined: sent without).
 */
function withSecret(secrets: Map<string, string>, path: string, body: unknown): unknown {
  if (body !== undefined && (typeof body !== "object" || body === null || "sessionSecret" in body)) return body;
  const object = (body ?? {}) as Record<string, unknown>;
  const session = typeof object.session === "string" ? object.session : sessionOfPath(path);
  const secret = session === undefined ? undefined : secrets.get(decodeURIComponent(session));
  return secret === undefined ? body : { ...object, sessionSecret: secret };
}

async function openSession(call: ReturnType<typeof setup>["call"]): Promise<string> {
  const opened = await call("POST", "/v1/sessions", { ttlMs: 5_000 });
  assert.equal(opened.status, 201);
  return opened.body.session;
}

test("lock API: session, enter, lock info, leave and close work end to end", async () => {
  const { call } = setup();
  const session = await openSession(call);
  const entered = await call("POST", "/v1/enter", { name: "db/main", session });
  assert.equal(entered.status, 200);
  assert.equal(entered.body.granted, true);
  assert.equal(entered.body.token, 1);
  const info = await call("GET", "/v1/locks/db/main");
  assert.equal(info.status, 200);
  assert.deepEqual(info.body.holders.map((h: { session: string; token: number }) => [h.session, h.token]), [[session, 1]]);
  assert.equal((await call("POST", `/v1/sessions/${session}/keepalive`)).status, 200);
  const left = await call("POST", "/v1/leave", { name: "db/main", session, token: 1 });
  assert.deepEqual(left, { status: 200, body: { left: true, name: "db/main", wasHolder: true } });
  assert.equal((await call("DELETE", `/v1/sessions/${session}`)).status, 200);
  assert.equal((await call("GET", "/v1/health")).body.ok, true);
});

test("lock API: a keepalive answers the locks the session holds; a force-release takes one from it (the next keepalive no longer lists it, its leave is refused) and grants the waiter a higher token", async () => {
  // A token's caller (client tokens on): an anonymous caller of an open cluster may not force (below).
  const { call } = setup(realTimers, { token: "ops", sessionsMax: null, waitersMax: null });
  const [a, b] = [await openSession(call), await openSession(call)];
  assert.equal((await call("POST", "/v1/enter", { name: "db/main", session: a })).body.token, 1);
  await call("POST", "/v1/enter", { name: "other", session: a });
  assert.deepEqual((await call("POST", `/v1/sessions/${a}/keepalive`)).body, { session: a, ttlMs: 5_000, locks: ["db/main", "other"] });
  const waiting = call("POST", "/v1/enter", { name: "db/main", session: b, waitMs: 10_000 });
  const forced = await call("POST", "/v1/force-release", { name: "db/main" });
  assert.deepEqual(forced, { status: 200, body: { released: true, name: "db/main", tokens: [1] } });
  // Tokens: 1 db/main, 2 other, 3 skipped by the force-release.
  assert.equal((await waiting).body.token, 4, "the waiter's token is above the one the force-release skipped");
  assert.deepEqual((await call("POST", `/v1/sessions/${a}/keepalive`)).body.locks, ["other"]);
  assert.equal((await call("POST", "/v1/leave", { name: "db/main", session: a, token: 1 })).body.error.code, "not_holder");
  const nobody = await call("POST", "/v1/force-release", { name: "nothing" });
  assert.deepEqual([nobody.status, nobody.body.error.code], [404, "lock_not_found"], "a lock nobody holds");
});

test("lock API: without client tokens (an anonymous caller) a force-release is refused 403 and the holder keeps its lock", async () => {
  const { call, state } = setup();
  const a = await openSession(call);
  assert.equal((await call("POST", "/v1/enter", { name: "db/main", session: a })).body.token, 1);
  const before = state();
  const forced = await call("POST", "/v1/force-release", { name: "db/main" });
  assert.equal(forced.status, 403);
  assert.equal(forced.body.error.code, "forbidden");
  assert.match(forced.body.error.message, /force-release needs client tokens/);
  assert.equal(state(), before, "nothing changed");
});

test("lock API: a waiting enter is answered by the grant when the holder leaves (long-poll)", async () => {
  const { call, service } = setup();
  const [a, b] = [await openSession(call), await openSession(call)];
  await call("POST", "/v1/enter", { name: "L", session: a });
  const waiting = call("POST", "/v1/enter", { name: "L", session: b, waitMs: 10_000 });
  await eventually("b is queued behind a", () => service.queuePosition("L", b) === 1);
  const indexBefore = service.replica.status().lastIndex;
  await call("POST", "/v1/leave", { name: "L", session: a, token: 1 });
  const answer = await waiting;
  assert.equal(answer.status, 200);
  assert.deepEqual([answer.body.granted, answer.body.token], [true, 2]);
  // The committed grant is the answer: the leave is the only entry (no second enter, which with
  // a backup was one more replication round on the path of every handoff).
  assert.equal(service.replica.status().lastIndex, indexBefore + 1);
  assert.deepEqual(service.view().locks[0].holders.map((h) => [h.session, h.token]), [[b, 2]]);
});

test("lock API: a long-poll that runs out answers waiting with the queue place kept", async () => {
  const { call, service } = setup();
  const [a, b] = [await openSession(call), await openSession(call)];
  await call("POST", "/v1/enter", { name: "L", session: a });
  const answer = await call("POST", "/v1/enter", { name: "L", session: b, waitMs: 10_000 });
  assert.deepEqual(answer.body, { granted: false, waiting: true, name: "L", position: 1 });
  assert.equal(service.queuePosition("L", b), 1);
});

test("lock API: a long-poll that runs to the end of the wait answers not granted and does not queue the waiter again", async () => {
  // Found by the simulator (lock.fifo, seed 342 of --kinds lock): the enter asked again after
  // the poll with the whole waitMs, so the waiter's own deadline pass dropped it and the same
  // enter queued it again at the back, for a new wait, answering "waiting".
  const { timers, pending } = manualTimers();
  const { call, service, clock } = setup(timers);
  const [a, b, c] = [await openSession(call), await openSession(call), await openSession(call)];
  await call("POST", "/v1/enter", { name: "L", session: a });
  const waitingB = call("POST", "/v1/enter", { name: "L", session: b, waitMs: 100 });
  const waitingC = call("POST", "/v1/enter", { name: "L", session: c, waitMs: 10_000 });
  await eventually("both long-polls are armed", () => pending.size >= 2);
  assert.deepEqual([...pending.values()].map((t) => t.ms), [100, 200], "b polls its whole wait, c one longPollMaxMs");
  assert.deepEqual([service.queuePosition("L", b), service.queuePosition("L", c)], [1, 2]);
  clock.advance(100);
  const [first] = pending.values();
  first.fn(); // b's poll runs out, at b's deadline
  assert.deepEqual((await waitingB).body, { granted: false, waiting: false, name: "L", position: 2 });
  assert.deepEqual([service.queuePosition("L", b), service.queuePosition("L", c)], [undefined, 1]);
  const [second] = pending.values();
  second.fn();
  assert.deepEqual((await waitingC).body, { granted: false, waiting: true, name: "L", position: 1 });
});

test("lock API: try-lock on a held lock answers not granted with the position", async () => {
  const { call, state } = setup();
  const [a, b] = [await openSession(call), await openSession(call)];
  await call("POST", "/v1/enter", { name: "L", session: a });
  const before = state();
  const answer = await call("POST", "/v1/enter", { name: "L", session: b, waitMs: 0 });
  assert.deepEqual(answer.body, { granted: false, waiting: false, name: "L", position: 1 });
  assert.equal(state(), before);
});

test("lock API: an enter whose callId was left answers not granted with callLeft and changes nothing (finding 12)", async () => {
  const { call, state } = setup();
  const session = await openSession(call);
  const first = await call("POST", "/v1/enter", { name: "L", session, callId: "call-1" });
  assert.equal(first.body.granted, true);
  const retried = await call("POST", "/v1/enter", { name: "L", session, callId: "call-1" });
  assert.equal(retried.body.token, first.body.token, "a retry of the call while it holds gets the same grant");
  await call("POST", "/v1/leave", { name: "L", session, token: first.body.token });
  const before = state();
  const late = await call("POST", "/v1/enter", { name: "L", session, callId: "call-1", waitMs: 10_000 });
  assert.deepEqual(late, { status: 200, body: { granted: false, waiting: false, name: "L", position: 0, callLeft: true } });
  assert.equal(state(), before, "the late copy of the left call granted nothing");
  // A new call of the same session, and an old client that sends no callId, are granted.
  const next = await call("POST", "/v1/enter", { name: "L", session, callId: "call-2" });
  assert.equal(next.body.token, first.body.token + 1);
  await call("POST", "/v1/leave", { name: "L", session, token: next.body.token });
  const old = await call("POST", "/v1/enter", { name: "L", session });
  assert.equal(old.body.token, next.body.token + 1);
});

interface ErrorCase {
  name: string;
  method: string;
  path: (s: string) => string;
  body?: (s: string) => unknown;
  raw?: string;
  status: number;
  code: string;
}

const ERROR_CASES: ErrorCase[] = [
  { name: "malformed JSON", method: "POST", path: () => "/v1/enter", raw: "{name:", status: 400, code: "bad_request" },
  { name: "body not an object", method: "POST", path: () => "/v1/enter", raw: "[1,2]", status: 400, code: "bad_request" },
  { name: "missing name", method: "POST", path: () => "/v1/enter", body: (s) => ({ session: s }), status: 400, code: "bad_request" },
  { name: "ill-typed waitMs", method: "POST", path: () => "/v1/enter", body: (s) => ({ name: "L", session: s, waitMs: "5" }), status: 400, code: "bad_request" },
  { name: "unknown field", method: "POST", path: () => "/v1/enter", body: (s) => ({ name: "L", session: s, wait: 5 }), status: 400, code: "bad_request" },
  { name: "bad mode", method: "POST", path: () => "/v1/enter", body: (s) => ({ name: "L", session: s, mode: "x" }), status: 400, code: "bad_request" },
  { name: "bad lock name", method: "POST", path: () => "/v1/enter", body: (s) => ({ name: "a b", session: s }), status: 400, code: "bad_request" },
  { name: "ill-typed callId", method: "POST", path: () => "/v1/enter", body: (s) => ({ name: "L", session: s, callId: 7 }), status: 400, code: "bad_request" },
  { name: "callId too long", method: "POST", path: () => "/v1/enter", body: (s) => ({ name: "M", session: s, callId: "x".repeat(CALL_ID_LENGTH_MAX + 1) }), status: 400, code: "bad_request" },
  { name: "TTL out of bounds", method: "POST", path: () => "/v1/sessions", body: () => ({ ttlMs: 1 }), status: 400, code: "bad_request" },
  { name: "oversized body", method: "POST", path: () => "/v1/enter", raw: JSON.stringify({ name: "L", pad: "x".repeat(2_000) }), status: 413, code: "body_too_large" },
  { name: "unknown session on enter", method: "POST", path: () => "/v1/enter", body: () => ({ name: "L", session: "nope" }), status: 404, code: "session_not_found" },
  { name: "unknown session on keepalive", method: "POST", path: () => "/v1/sessions/nope/keepalive", status: 404, code: "session_not_found" },
  { name: "unknown session on close", method: "DELETE", path: () => "/v1/sessions/nope", status: 404, code: "session_not_found" },
  { name: "unknown lock info", method: "GET", path: () => "/v1/locks/nothing", status: 404, code: "lock_not_found" },
  { name: "leave of an unknown lock", method: "POST", path: () => "/v1/leave", body: (s) => ({ name: "M", session: s, token: 1 }), status: 404, code: "lock_not_found" },
  { name: "leave by a non-holder", method: "POST", path: () => "/v1/leave", body: (s) => ({ name: "L", session: s, token: 1 }), status: 409, code: "not_holder" },
  { name: "force-release in an open cluster (no client tokens)", method: "POST", path: () => "/v1/force-release", body: () => ({ name: "L" }), status: 403, code: "forbidden" },
  { name: "force-release without a name", method: "POST", path: () => "/v1/force-release", body: () => ({}), status: 400, code: "bad_request" },
  { name: "force-release with an unknown field", method: "POST", path: () => "/v1/force-release", body: () => ({ name: "L", session: "x" }), status: 400, code: "bad_request" },
  { name: "unknown route", method: "GET", path: () => "/v1/nothing", status: 404, code: "not_found" },
];

for (const c of ERROR_CASES) {
  test(`lock API error: ${c.name} answers ${c.status} ${c.code} and changes nothing`, async () => {
    const { call, state } = setup();
    const holder = await openSession(call);
    await call("POST", "/v1/enter", { name: "L", session: holder });
    const other = await openSession(call);
    const before = state();
    const answer = await call(c.method, c.path(other), c.body?.(other), c.raw);
    assert.equal(answer.status, c.status, JSON.stringify(answer.body));
    assert.equal(answer.body.error.code, c.code);
    assert.equal(typeof answer.body.error.message, "string");
    assert.ok(!/\bat .*\.ts:\d+/.test(answer.body.error.message), "no stack trace in the answer");
    assert.equal(state(), before);
  });
}

test("lock API error: the sessions limit answers 429 limit_reached and opens nothing", async () => {
  const { call, service } = setup();
  for (let i = 0; i < SETTINGS.sessionsMax; i++) await openSession(call);
  const answer = await call("POST", "/v1/sessions", { ttlMs: 5_000 });
  assert.equal(answer.status, 429);
  assert.equal(answer.body.error.code, "limit_reached");
  assert.equal(service.table!.sessions.size, SETTINGS.sessionsMax);
});

test("lock API: status lists holders with tokens, waiters in order, and sessions with ages", async () => {
  const { call, clock } = setup();
  const [a, b] = [await openSession(call), await openSession(call)];
  await call("POST", "/v1/enter", { name: "L", session: a });
  await call("POST", "/v1/enter", { name: "L", session: b, waitMs: 0 });
  clock.advance(250);
  const status = (await call("GET", "/v1/status")).body;
  assert.equal(status.node.id, "p1");
  assert.equal(status.locks[0].holders[0].heldForMs, 250);
  assert.equal(status.sessions.length, 2);
  assert.equal(status.sessions[0].expiresInMs, 4_750);
});

test("peer API: malformed or forged replication messages are refused and change nothing", async () => {
  const { app, state } = setup();
  const before = state();
  const send = async (body: string) => {
    const response = await app.request("/v1/peer", { method: "POST", headers: { "content-type": "application/json" }, body });
    return { status: response.status, text: await response.text() };
  };
  assert.equal((await send("{not json")).status, 400, "malformed body");
  assert.equal((await send(JSON.stringify([1, 2]))).status, 400, "not an object");
  assert.equal((await send(JSON.stringify({ type: "append", from: "b1", epoch: 1 }))).status, 400, "append without entries");
  // The wire was superjson before issue 14: a member still sending its `{"json": …}` form is refused, not misread.
  assert.equal((await send(JSON.stringify({ json: { type: "append", from: "p1", epoch: 1, syncGen: 1, entries: [] } }))).status, 400, "superjson's form");
  // Well-formed but from a server the cluster file does not name: a nack, nothing applied.
  const forged = await send(JSON.stringify({ type: "append", from: "intruder", epoch: 9, syncGen: 1, entries: [] }));
  assert.equal(forged.status, 200);
  assert.equal((JSON.parse(forged.text) as { type: string }).type, "nack");
  assert.equal(state(), before);
});

test("arbiter API: malformed requests are refused with 400 and change no epoch", async () => {
  const core = new ArbiterCore({ primaryId: "p1", backupId: "b1", leaseMs: 500, bootstrapWaitMs: 3_000 }, null, 0);
  const dir = tempDir();
  const app = createArbiterApp(core, { nodeId: "a1", statePath: `${dir}/arbiter.json`, log: memoryLogger(), nowMs: () => 0 });
  try {
    for (const body of ["{oops", JSON.stringify({ type: "claim", from: "p1" }), JSON.stringify({ type: "renew", from: "p1", epoch: 1, backupInSync: true })]) {
      const response = await app.request("/v1/arbiter", { method: "POST", body });
      assert.equal(response.status, 400, body);
      assert.equal((await response.json()).error.code, "bad_request");
    }
    assert.deepEqual(core.current, {
      epoch: 0, primary: null, backup: null, backupInSync: false, reportSeq: 0,
      backupIncarnation: null, backupCopyLost: false, ttlMaxMs: 0, tokenCeiling: 0,
    });
  } finally {
    removeDir(dir);
  }
});

test("arbiter and lock API: /v1/health names the node's mutexd version (package.json's); lock status too", async () => {
  const core = new ArbiterCore({ primaryId: "p1", backupId: "b1", leaseMs: 500, bootstrapWaitMs: 3_000 }, null, 0);
  const dir = tempDir();
  const app = createArbiterApp(core, { nodeId: "a1", statePath: `${dir}/arbiter.json`, log: memoryLogger(), nowMs: () => 0 });
  try {
    const health = await (await app.request("/v1/health")).json();
    assert.deepEqual([health.role, health.version], ["arbiter", PACKAGE_VERSION]);
    const { call } = setup();
    assert.equal((await call("GET", "/v1/health")).body.version, PACKAGE_VERSION);
    assert.equal((await call("GET", "/v1/status")).body.node.version, PACKAGE_VERSION);
  } finally {
    removeDir(dir);
  }
});

// ---- Promises of the README and docs/http-api.md that had no test --------------------------

test("lock API: a retry of an open (same requestId) with the client's own secret gets the same session, usable with that secret; a secret under 32 characters is refused", async () => {
  const { call, service } = setup();
  const sessionSecret = "c".repeat(64);
  const first = await call("POST", "/v1/sessions", { ttlMs: 5_000, requestId: "open-own", sessionSecret });
  const again = await call("POST", "/v1/sessions", { ttlMs: 5_000, requestId: "open-own", sessionSecret });
  assert.equal(first.status, 201);
  assert.deepEqual(again.body, first.body, "the retry gets the first answer");
  assert.equal(first.body.sessionSecret, sessionSecret);
  assert.equal(service.table!.sessions.size, 1);
  assert.equal((await call("POST", `/v1/sessions/${first.body.session}/keepalive`, { sessionSecret })).status, 200);
  assert.equal((await call("POST", `/v1/sessions/${first.body.session}/keepalive`, { sessionSecret: "d".repeat(64) })).status, 403);
  const weak = await call("POST", "/v1/sessions", { ttlMs: 5_000, sessionSecret: "short" });
  assert.equal(weak.status, 400);
  assert.match(weak.body.error.message, /sessionSecret must have at least 32 characters/);
});

test("lock API: a retry of an open (same requestId) without the client's own secret gets a new session with a working secret: the first one's secret is not kept", async () => {
  const { call, service } = setup();
  const first = await call("POST", "/v1/sessions", { ttlMs: 5_000, requestId: "open-1" });
  const again = await call("POST", "/v1/sessions", { ttlMs: 5_000, requestId: "open-1" });
  assert.equal(first.status, 201);
  assert.equal(again.status, 201);
  // The first answer's secret went out once (its client lost it, or it would not retry) and only
  // its hash is kept: the retry cannot be given the first session, so it gets a fresh one.
  assert.notEqual(again.body.session, first.body.session);
  assert.notEqual(again.body.sessionSecret, first.body.sessionSecret);
  assert.equal(service.table!.sessions.size, 2, "the first session is left to expire");
  const keepalive = (session: string, sessionSecret: string) => call("POST", `/v1/sessions/${session}/keepalive`, { sessionSecret });
  assert.equal((await keepalive(again.body.session, again.body.sessionSecret)).status, 200);
  assert.equal((await keepalive(first.body.session, again.body.sessionSecret)).status, 403);
  assert.equal((await keepalive(first.body.session, first.body.sessionSecret)).status, 200);
  // An open without a requestId, or with another one, is simply another open.
  const other = await call("POST", "/v1/sessions", { ttlMs: 5_000, requestId: "open-2" });
  assert.notEqual(other.body.session, first.body.session);
  assert.equal(service.table!.sessions.size, 3);
});

test("lock API: close with the same requestId twice closes once and answers the same both times (idempotent retry)", async () => {
  const { call, service, state } = setup();
  const session = await openSession(call);
  await call("POST", "/v1/enter", { name: "L", session });
  const keep = await openSession(call); // a second session, so the table is not simply empty
  const first = await call("DELETE", `/v1/sessions/${session}`, { requestId: "close-1" });
  assert.deepEqual(first, { status: 200, body: { session, released: ["L"] } });
  const after = state();
  const again = await call("DELETE", `/v1/sessions/${session}`, { requestId: "close-1" });
  assert.deepEqual(again, first, "the retry gets the first answer, not 404");
  assert.equal(state(), after, "and changes nothing");
  assert.deepEqual([...service.table!.sessions.keys()], [keep]);
  // Not vacuous: without the same requestId the closed session is unknown.
  const fresh = await call("DELETE", `/v1/sessions/${session}`, { requestId: "close-2" });
  assert.equal(fresh.status, 404);
  assert.equal(fresh.body.error.code, "session_not_found");
});

test("lock API: a leave with the same requestId twice releases once and answers the same both times", async () => {
  const { call, state } = setup();
  const [a, b] = [await openSession(call), await openSession(call)];
  await call("POST", "/v1/enter", { name: "L", session: a });
  const first = await call("POST", "/v1/leave", { name: "L", session: a, token: 1, requestId: "leave-1" });
  assert.deepEqual(first.body, { left: true, name: "L", wasHolder: true });
  const granted = await call("POST", "/v1/enter", { name: "L", session: b });
  assert.equal(granted.body.token, 2);
  const after = state();
  const again = await call("POST", "/v1/leave", { name: "L", session: a, token: 1, requestId: "leave-1" });
  assert.deepEqual(again, first);
  assert.equal(state(), after, "b keeps the lock the retried leave would otherwise have touched");
});

test("lock API: a leave with a stale token (of an earlier grant) is refused 409 not_holder and changes nothing", async () => {
  const { call, state } = setup();
  const session = await openSession(call);
  const old = (await call("POST", "/v1/enter", { name: "L", session })).body.token;
  await call("POST", "/v1/leave", { name: "L", session, token: old });
  const current = (await call("POST", "/v1/enter", { name: "L", session })).body.token;
  assert.ok(current > old, `a new grant, token ${current} after ${old}`);
  const before = state();
  const stale = await call("POST", "/v1/leave", { name: "L", session, token: old });
  assert.equal(stale.status, 409, JSON.stringify(stale.body));
  assert.equal(stale.body.error.code, "not_holder");
  assert.equal(state(), before, "the holder with the current token still holds");
  const info = await call("GET", "/v1/locks/L");
  assert.deepEqual(info.body.holders.map((h: { session: string; token: number }) => [h.session, h.token]), [[session, current]]);
  assert.equal((await call("POST", "/v1/leave", { name: "L", session, token: current })).status, 200, "the current token leaves");
});

test("lock API: a shared request while an exclusive lock is held waits, and is granted (shared) after the leave", async () => {
  const { call, service } = setup();
  const [writer, reader] = [await openSession(call), await openSession(call)];
  const held = await call("POST", "/v1/enter", { name: "L", session: writer });
  assert.equal(held.body.granted, true);
  const tryShared = await call("POST", "/v1/enter", { name: "L", session: reader, mode: "shared", waitMs: 0 });
  assert.deepEqual(tryShared.body, { granted: false, waiting: false, name: "L", position: 1 }, "not granted beside the exclusive holder");
  let answered = false;
  const waiting = call("POST", "/v1/enter", { name: "L", session: reader, mode: "shared", waitMs: 10_000 }).finally(() => (answered = true));
  await eventually("the shared request is queued", () => service.queuePosition("L", reader) === 1);
  assert.equal(answered, false, "it waits while the exclusive lock is held");
  await call("POST", "/v1/leave", { name: "L", session: writer, token: held.body.token });
  const granted = await waiting;
  assert.equal(granted.status, 200);
  assert.deepEqual([granted.body.granted, granted.body.mode, granted.body.session], [true, "shared", reader]);
  assert.ok(granted.body.token > held.body.token);
});

test("peer and arbiter API: the body limit counts bytes, not characters; a larger message is 413 and changes nothing", async () => {
  // "é" is one UTF-16 unit but two UTF-8 bytes: each body below is under its limit in characters
  // and over it in bytes. Both endpoints once compared text.length and let such a body through.
  const { service, state } = setup();
  const peerBytesMax = 1_000;
  const lockApp = createLockApp(service, { nodeId: "p1", role: "primary", settings: { ...SETTINGS, peerBodyBytesMax: peerBytesMax } });
  const before = state();
  const peerBody = JSON.stringify({ type: "syncRequest", from: "b1", epoch: 1, pad: "é".repeat(peerBytesMax * 0.6) });
  assert.ok(peerBody.length < peerBytesMax && new TextEncoder().encode(peerBody).byteLength > peerBytesMax);
  const peer = await lockApp.request("/v1/peer", { method: "POST", headers: { "content-type": "application/json" }, body: peerBody });
  assert.equal(peer.status, 413);
  assert.equal((await peer.json()).error.code, "body_too_large");
  assert.equal(state(), before);

  const dir = tempDir();
  try {
    const core = new ArbiterCore({ primaryId: "p1", backupId: "b1", leaseMs: 500, bootstrapWaitMs: 3_000 }, null, 0);
    const arbiterApp = createArbiterApp(core, { nodeId: "a1", statePath: `${dir}/arbiter.json`, log: memoryLogger(), nowMs: () => 0 });
    // The backup said it has no state: p1's claim, if read, would start epoch 1.
    await arbiterApp.request("/v1/arbiter", { method: "POST", body: JSON.stringify({ type: "claim", from: "b1", epoch: 0, hasState: false }) });
    const arbiterBody = JSON.stringify({ type: "claim", from: "p1", epoch: 0, hasState: false, pad: "é".repeat(DEFAULT_SETTINGS.bodyBytesMax * 0.6) });
    assert.ok(arbiterBody.length < DEFAULT_SETTINGS.bodyBytesMax && new TextEncoder().encode(arbiterBody).byteLength > DEFAULT_SETTINGS.bodyBytesMax);
    const arbiter = await arbiterApp.request("/v1/arbiter", { method: "POST", body: arbiterBody });
    assert.equal(arbiter.status, 413);
    assert.equal((await arbiter.json()).error.code, "body_too_large");
    assert.equal(core.current.epoch, 0, "no epoch handed out");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("lock API: acting on a session with a wrong or missing sessionSecret answers 403 forbidden and changes nothing", async () => {
  const { call, state } = setup();
  const opened = await call("POST", "/v1/sessions", { ttlMs: 5_000 });
  assert.equal(opened.status, 201);
  const { session, sessionSecret } = opened.body;
  assert.match(sessionSecret, /^[0-9a-f]{64}$/, "256 random bits, hex");
  const entered = await call("POST", "/v1/enter", { name: "L", session });
  assert.equal(entered.body.token, 1);
  const before = state();
  for (const secret of [{ sessionSecret: "guess" }, { sessionSecret: undefined }, { sessionSecret: sessionSecret.slice(1) }]) {
    const refusals = [
      await call("POST", "/v1/enter", { name: "M", session, ...secret }),
      await call("POST", "/v1/leave", { name: "L", session, token: 1, ...secret }),
      await call("POST", `/v1/sessions/${session}/keepalive`, { ...secret }),
      await call("DELETE", `/v1/sessions/${session}`, { ...secret }),
    ];
    for (const refused of refusals) {
      assert.deepEqual(refused, { status: 403, body: { error: { code: "forbidden", message: "session secret does not match" } } });
    }
  }
  assert.equal(state(), before);
  const tooLong = await call("POST", `/v1/sessions/${session}/keepalive`, { sessionSecret: "x".repeat(257) });
  assert.equal(tooLong.status, 400);
  assert.equal((await call("POST", "/v1/leave", { name: "L", session, token: 1, sessionSecret })).status, 200);
});

test("lock API: listings show each session's owner and never its secret or the secret's hash", async () => {
  const { call, service } = setup(realTimers, { token: "alice", sessionsMax: null, waitersMax: null });
  const opened = await call("POST", "/v1/sessions", { ttlMs: 5_000 });
  const other = await call("POST", "/v1/sessions", { ttlMs: 5_000 });
  await call("POST", "/v1/enter", { name: "L", session: opened.body.session });
  await call("POST", "/v1/enter", { name: "L", session: other.body.session, waitMs: 5_000 }); // a waiter: listed too
  const hash = service.table!.sessions.get(opened.body.session)!.secretHash!;
  assert.match(hash, /^[0-9a-f]{64}$/);
  for (const path of ["/v1/status", "/v1/sessions", "/v1/locks", "/v1/locks/L"]) {
    const text = JSON.stringify((await call("GET", path)).body);
    assert.ok(text.includes(opened.body.session), `${path} lists the session`);
    assert.ok(text.includes('"owner":"alice"'), `${path} names the owner: ${text}`);
    for (const secret of [opened.body.sessionSecret, other.body.sessionSecret, hash]) assert.ok(!text.includes(secret), `${path} leaks a secret`);
    assert.ok(!text.includes("secretHash"), path);
  }
  // `mutexd status` prints the same: the owner beside each session, no secret.
  const printed = formatStatus((await call("GET", "/v1/status")).body);
  assert.match(printed, new RegExp(`${opened.body.session}\\[alice\\] 1 exclusive`));
  for (const secret of [opened.body.sessionSecret, hash]) assert.ok(!printed.includes(secret));
});

test("lock API: a token's sessionsMax and waitersMax limit that caller (429 naming it), not the server", async () => {
  const { call, service } = setup(realTimers, { token: "alice", sessionsMax: 2, waitersMax: 1 });
  const [a, b] = [await openSession(call), await openSession(call)];
  const third = await call("POST", "/v1/sessions", { ttlMs: 5_000 });
  assert.deepEqual(third, { status: 429, body: { error: { code: "limit_reached", message: "caller alice has at most 2 sessions" } } });
  assert.equal(service.table!.sessions.size, 2, "SETTINGS.sessionsMax is 3: the caller's limit refused it");
  assert.equal((await call("POST", "/v1/enter", { name: "L", session: a })).body.granted, true);
  assert.equal((await call("POST", "/v1/enter", { name: "M", session: a })).body.granted, true);
  // b's first wait fits (a 0 ms wait is a try-lock, never a waiter); a second wait would not.
  const waiting = call("POST", "/v1/enter", { name: "L", session: b, waitMs: 60_000 });
  await eventually("b queued on L", () => service.queuePosition("L", b) === 1, 2_000);
  const refused = await call("POST", "/v1/enter", { name: "M", session: b, waitMs: 60_000 });
  assert.deepEqual(refused, { status: 429, body: { error: { code: "limit_reached", message: "caller alice has at most 1 waiting enters" } } });
  // The grant ends the wait (the count goes down): another wait fits again.
  assert.equal((await call("POST", "/v1/leave", { name: "L", session: a, token: 1 })).status, 200);
  assert.deepEqual(service.table!.locks.get("L")!.holders.map((h) => h.session), [b]);
  assert.equal(service.table!.owners.waiters("alice"), 0);
  await waiting;
  const fits = await call("POST", "/v1/enter", { name: "M", session: b, waitMs: 100 });
  assert.equal(fits.body.waiting, true);
});

test("lock API: a keepalive result without the held list answers no `locks`, not an empty list (which would tell the client every lock it holds is gone)", async () => {
  // A service whose keepalive result lacks `held` (the table always sets it: this pins the
  // route's fail-safe, not the table).
  const service = {
    submitThen: (_command: unknown, _requestId: unknown, done: (answer: unknown) => void) =>
      done({ ok: true, result: { type: "session", session: "t-1", ttlMs: 5_000, expiresAtMs: 6_000 } }),
  } as unknown as Parameters<typeof lockRoutes>[0];
  const options = { nodeId: "p1", role: "primary", settings: SETTINGS };
  const answer = await new Promise<ApiAnswer>((done) =>
    answerRequest(lockRoutes(service, options), options, { method: "POST", path: "/v1/sessions/t-1/keepalive", body: JSON.stringify({ sessionSecret: "s".repeat(40) }) }, done)
  );
  assert.deepEqual(answer, { status: 200, body: { session: "t-1", ttlMs: 5_000 } });
});

test("lock API: a granted enter's answer is the grant's fields after granted, in the grant's order (name, session, token, mode), on the fast path and through Hono", async () => {
  const { app, call } = setup();
  for (const [name, chunked] of [["db/main", false], ["db/other", true]] as const) {
    const owner = (await call("POST", "/v1/sessions", { ttlMs: 5_000 })).body as { session: string; sessionSecret: string };
    const body = JSON.stringify({ name, session: owner.session, sessionSecret: owner.sessionSecret, mode: "shared" });
    // A declared length takes the fast path (api_fast_path.ts); a streamed body goes through Hono.
    const response = chunked
      ? await app.request("/v1/enter", { method: "POST", headers: { "content-type": "application/json" }, body: new Blob([body]).stream(), duplex: "half" } as RequestInit)
      : await app.request("/v1/enter", { method: "POST", headers: { "content-type": "application/json", "content-length": String(body.length) }, body });
    assert.equal(response.status, 200);
    const text = await response.text();
    const token = JSON.parse(text).token;
    assert.equal(text, `{"granted":true,"name":${JSON.stringify(name)},"session":${JSON.stringify(owner.session)},"token":${token},"mode":"shared"}`, chunked ? "through Hono" : "fast path");
  }
});
