/**
 * Issue 12, validation: body limits enforced while reading, every message checked against its
 * schema before it reaches a core (a refused message changes nothing), and fail-stop on a bug.
 */
import { test } from "node:test";
import { SECRET_HASH } from "./_session.ts";
import assert from "node:assert/strict";
import { connect } from "node:net";
import { manualClock } from "../cluster/clock.ts";
import { createLockApp } from "../cluster/lock/api.ts";
import { answerPeer } from "../cluster/lock/api_peer.ts";
import { answerArbiter } from "../cluster/arbiter/server.ts";
import { ArbiterCore } from "../lib/core/arbiter/arbiter.ts";
import { RequestError, utf8LongerThan } from "../cluster/http_util.ts";
import { LockTable } from "../lib/core/lock/lock_table.ts";
import { LockMachine } from "../lib/core/lock/lock_machine.ts";
import { CopySource } from "../lib/core/lock/table_copy.ts";
import { arbiterReplySchema, arbiterRequestSchema, checkPeerAnswer, checkPeerRequest } from "../lib/wire/lock_peer.ts";
import { checkCatchUp, checkRingResult, repairDatagramSchema, ringPeerSchemas, viewMessageSchema } from "../lib/wire/ring_peer.ts";
import { checkBody, clientSchemas } from "../lib/wire/client.ts";
import { check } from "../lib/wire/schema.ts";
import { LockService, type LockServiceOptions } from "../cluster/lock/service.ts";
import { memoryLogger } from "../cluster/log.ts";
import { serveHttp } from "../cluster/runtime.ts";
import { realTimers } from "../cluster/timers.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { eventually } from "./_harness.ts";
import { decodePeerBody, encodePeerBody } from "../cluster/peer_transport.ts";

const SETTINGS = { ...DEFAULT_SETTINGS, bodyBytesMax: 1_024 };

/** A lock server's service on a clock the test moves; with `peer`, it has a peer and the arbiter a1 (inProcessPair). */
function lockService(
  nodeId: string,
  options: { settings?: typeof SETTINGS; clock?: ReturnType<typeof manualClock>; peer?: string; transport?: LockServiceOptions["transport"] } = {},
): LockService {
  const { settings = SETTINGS, clock = manualClock(1_000), peer, transport } = options;
  return new LockService({
    settings,
    clock,
    log: memoryLogger(),
    nodeId,
    peer: peer ? { id: peer, url: peer } : null,
    arbiter: peer ? { id: "a1", url: "a1" } : null,
    transport: transport ?? { send: () => Promise.reject(new Error("no peers in this test")) },
    timers: realTimers,
    sessionIdPrefix: `${nodeId}-`,
    tokenFloor: 0,
  });
}

// On commit 2c9c5fa readBodyBytes awaited the whole body (`arrayBuffer()`) before it checked
// the size, so this request hung until the client gave up (here: the 5 s bound, a failure).
test("body limit: a chunked body that passes bodyBytesMax and never ends gets 413 at once", async () => {
  const service = lockService("p1");
  const app = createLockApp(service, { nodeId: "p1", role: "primary", settings: SETTINGS });
  const server = await serveHttp(app.fetch, { hostname: "127.0.0.1", port: 0 });
  const socket = connect(server.port, "127.0.0.1");
  try {
    let received = "";
    socket.on("data", (data) => (received += data.toString()));
    socket.on("error", () => {}); // the server may close the connection after its answer
    await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
    socket.write("POST /v1/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
    const bytes = SETTINGS.bodyBytesMax + 1;
    // One byte past the limit, then the stream stays open: no terminating zero-length chunk.
    socket.write(`${bytes.toString(16)}\r\n${"x".repeat(bytes)}\r\n`);
    await eventually("the 413 answer", () => received.includes("\r\n\r\n") && received.includes("body_too_large"), 5_000);
    assert.match(received, /^HTTP\/1\.1 413 /);
    assert.equal(service.view().sessions.length, 0, "nothing was opened");
  } finally {
    socket.destroy();
    service.stop();
    await server.close();
  }
});

test("body limit: a chunked body within bodyBytesMax is read whole; Content-Length above it is refused unread", async () => {
  const service = lockService("p1");
  const app = createLockApp(service, { nodeId: "p1", role: "primary", settings: SETTINGS });
  const chunks = ['{"ttlMs":', "5000}"];
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(new TextEncoder().encode(chunk));
      controller.close();
    },
  });
  const opened = await app.request("/v1/sessions", { method: "POST", body: stream, duplex: "half" } as RequestInit);
  assert.equal(opened.status, 201, await opened.clone().text());
  const declared = await app.request("/v1/sessions", {
    method: "POST",
    headers: { "content-length": String(SETTINGS.bodyBytesMax + 1) },
    body: "{}",
  });
  assert.equal(declared.status, 413);
  assert.equal((await declared.json()).error.code, "body_too_large");
  service.stop();
});

// ---- Schemas: every message, good and mutated ----

const LIMITS = { ...DEFAULT_SETTINGS, replicationBatchMax: 4, ringBatchWritesMax: 4, syncChunkItemsMax: 1_000 };

/** A machine with `sessions` open sessions, each holding one lock, and a remembered answer each. */
function filledMachine(sessions: number): LockMachine {
  const table = new LockTable({ limits: LIMITS, sessionIdPrefix: "p1-0badcafe-1-", tokenFloor: 0 });
  const machine = new LockMachine(table, LIMITS);
  let index = 0;
  for (let i = 0; i < sessions; i++) {
    const opened = machine.apply({ index: ++index, epoch: 1, atMs: 1_000 + i, requestId: `open-${i}`, command: { type: "openSession", ttlMs: 60_000, secretHash: SECRET_HASH } });
    assert.ok(opened.result.ok && opened.result.type === "session");
    const session = opened.result.session;
    machine.apply({ index: ++index, epoch: 1, atMs: 1_000 + i, command: { type: "enter", name: `lock/${i}`, session, secretHash: SECRET_HASH, mode: "exclusive", waitMs: 0, lockDelayMs: 0, callId: `call-${i}` } });
  }
  return machine;
}

const ENTRY = { index: 7, epoch: 2, atMs: 12_345, requestId: "r-1", command: { type: "enter", name: "db/main", session: "p1-0badcafe-2-1", secretHash: SECRET_HASH, mode: "shared", waitMs: 10, lockDelayMs: 5, callId: "c-1" } };

/** One good message per type, with every optional field present, and its checker. */
const GOOD: Array<{ name: string; value: Record<string, unknown>; accepts: (value: unknown) => boolean; optional?: string[]; maps?: string[] }> = [
  { name: "append", value: { type: "append", from: "p1", epoch: 2, syncGen: 1, entries: [ENTRY] }, accepts: (m) => checkPeerRequest(m, LIMITS).ok, optional: ["entries.0.requestId", "entries.0.command.callId"] },
  { name: "syncRequest", value: { type: "syncRequest", from: "b1", epoch: 2, incarnation: "b1-12345678-" }, accepts: (m) => checkPeerRequest(m, LIMITS).ok, optional: ["incarnation"] },
  { name: "syncNext", value: { type: "syncNext", from: "b1", epoch: 2, syncGen: 1, position: 1_000 }, accepts: (m) => checkPeerRequest(m, LIMITS).ok },
  { name: "appendAck", value: { type: "appendAck", from: "b1", epoch: 2, ok: true, appliedIndex: 7, promiseMs: 500 }, accepts: (m) => checkPeerAnswer(m, LIMITS).ok },
  {
    name: "syncStart",
    value: { type: "syncStart", from: "p1", epoch: 2, syncGen: 1, start: { appliedIndex: 7, table: { nowMs: 5, lastToken: 9, sessionSeq: 3, sessionIdPrefix: "p1-x-2-", grantsFromMs: 0 }, sessions: 1, locks: 1, answered: 1 } },
    accepts: (m) => checkPeerAnswer(m, LIMITS).ok,
    optional: ["start.table.grantsFromMs"],
  },
  { name: "syncChunk", value: { type: "syncChunk", from: "p1", epoch: 2, syncGen: 1, chunk: { position: 0, count: 1, payload: '[{"id":"s","ttlMs":1,"createdAtMs":0,"expiresAtMs":1,"leftCalls":[]}]' } }, accepts: (m) => checkPeerAnswer(m, LIMITS).ok },
  { name: "nack", value: { type: "nack", from: "b1", epoch: 2, primary: "p1", reason: "epoch 1 is over" }, accepts: (m) => checkPeerAnswer(m, LIMITS).ok },
  {
    name: "arbiter renew",
    value: { type: "renew", from: "p1", epoch: 2, backupInSync: true, seq: 4, backupIncarnation: "b1-x-", ttlMaxMs: 60_000, tokenCeiling: 1_000 },
    accepts: (m) => check(arbiterRequestSchema, m, "r").ok,
    optional: ["backupIncarnation", "ttlMaxMs", "tokenCeiling"],
  },
  { name: "arbiter claim", value: { type: "claim", from: "b1", epoch: 2, hasState: true, incarnation: "b1-x-" }, accepts: (m) => check(arbiterRequestSchema, m, "r").ok, optional: ["incarnation"] },
  { name: "arbiter whois", value: { type: "whois", from: "b1" }, accepts: (m) => check(arbiterRequestSchema, m, "r").ok },
  {
    name: "arbiter lease",
    value: { type: "lease", epoch: 2, primary: "p1", leaseMs: 1_000, fresh: false, ttlMaxMs: 60_000, tokenCeiling: 1_000, tablesBefore: true },
    accepts: (m) => check(arbiterReplySchema, m, "r").ok,
    optional: ["ttlMaxMs", "tokenCeiling", "tablesBefore"],
  },
  { name: "arbiter refused", value: { type: "refused", epoch: 2, primary: "p1", reason: "lease runs", becomeBackup: true }, accepts: (m) => check(arbiterReplySchema, m, "r").ok },
  { name: "arbiter view", value: { type: "view", epoch: 2, primary: "p1", backupInSync: true }, accepts: (m) => check(arbiterReplySchema, m, "r").ok },
  { name: "ring token", value: { from: "r1", token: { epoch: 1, hop: 9, wseq: 4, commit: 3, fence: 7, idleHops: 0 } }, accepts: (m) => check(ringPeerSchemas(LIMITS).token, m, "t").ok },
  {
    name: "ring writes",
    value: { from: "r1", epoch: 2, entries: [{ epoch: 2, wseq: 4, author: "r1", origin: "r1", op: { type: "put", key: "k", value: "v" } }, { epoch: 1, wseq: 5, author: "r2", origin: "r1", op: { type: "delete", key: "k" } }] },
    accepts: (m) => check(ringPeerSchemas(LIMITS).writes, m, "w").ok,
  },
  { name: "ring wake", value: { from: "r1" }, accepts: (m) => check(ringPeerSchemas(LIMITS).wake, m, "w").ok },
  {
    name: "ring catch-up answer",
    value: { commit: 4, snapshot: { wseq: 3, epoch: 1, kv: [["k", "v"]] }, entries: [{ epoch: 1, wseq: 4, author: "r1", origin: "r1", op: { type: "noop", key: "" } }] },
    accepts: (m) => checkCatchUp(m, LIMITS).ok,
    optional: ["snapshot", "snapshot.epoch"],
  },
  { name: "ring hand-off answer (token)", value: { ok: true, type: "token", duplicate: false }, accepts: (m) => checkRingResult(m).ok },
  { name: "ring hand-off answer (gap)", value: { ok: false, type: "gap", ackedTo: 4, lastApplied: 6 }, accepts: (m) => checkRingResult(m).ok },
  {
    name: "view promise",
    value: {
      type: "promise",
      from: "r2",
      ballot: { epoch: 3, coordinator: "r1" },
      prior: { epoch: 2, coordinator: "r1" },
      viewEpoch: 2,
      facts: { lastApplied: 9, lastWriteEpoch: 2, commit: 8, tokenEpoch: 2, tokenHop: 40, tokenHere: "no", sectionRemainingMs: 0, holdEndedAgoMs: { r1: 5 }, holdSectionMaxMs: { r1: 1_000 }, restartedAgoMs: 100 },
    },
    accepts: (m) => check(viewMessageSchema, m, "v").ok,
    // holdSectionMaxMs is absent in a promise of a build before it (its receiver counts ringLeaseMaxMs).
    optional: ["facts.holdEndedAgoMs.r1", "facts.holdSectionMaxMs", "facts.holdSectionMaxMs.r1"],
    // A map of node ids (any id passes here; the core refuses one that is not a ring node).
    maps: ["facts.holdEndedAgoMs", "facts.holdSectionMaxMs"],
  },
  {
    name: "view renew",
    value: { type: "renew", from: "r1", epoch: 3, seq: 2, voters: ["r1", "r2", "r3"], sectionMaxMs: 1_000 },
    accepts: (m) => check(viewMessageSchema, m, "v").ok,
    // Absent in a renewal of a build before it: its backers count ringLeaseMaxMs.
    optional: ["sectionMaxMs"],
  },
  {
    name: "view newView",
    value: { type: "newView", from: "r1", view: { epoch: 3, coordinator: "r1", members: ["r1", "r2"], regenerator: "r1", startWseq: 10, resendFromWseq: 9, grantWaitMs: 300, voters: ["r1", "r2", "r3"] } },
    accepts: (m) => check(viewMessageSchema, m, "v").ok,
    optional: ["view.voters"],
  },
  { name: "view probeReply", value: { type: "probeReply", from: "r3", viewEpoch: 2, tokenEpoch: 2, tokenHop: 7, live: true, lastTokenAgeMs: 12 }, accepts: (m) => check(viewMessageSchema, m, "v").ok },
  { name: "repair datagram", value: { type: "iLostPred", epoch: 3, suspect: "r2", from: "r1", inc: 1764331200000, seq: 1 }, accepts: (m) => check(repairDatagramSchema, m, "d").ok },
  { name: "lock enter body", value: { name: "db/main", session: "s-1", mode: "shared", waitMs: 0, lockDelayMs: 0, callId: "c" }, accepts: (m) => checkBody(clientSchemas(LIMITS).lock.enter, m).ok, optional: ["mode", "waitMs", "lockDelayMs", "callId"] },
  { name: "lock leave body", value: { name: "db/main", session: "s-1", token: 3, requestId: "r" }, accepts: (m) => checkBody(clientSchemas(LIMITS).lock.leave, m).ok, optional: ["token", "requestId"] },
  { name: "ring put body", value: { fence: 3, key: "k", value: "v" }, accepts: (m) => checkBody(clientSchemas(LIMITS).ring.put, m).ok },
];

/** Every path to a value in `value` (objects and arrays walked), as dot paths. */
function leafPaths(value: unknown, prefix = ""): string[] {
  if (typeof value !== "object" || value === null) return [prefix];
  const paths: string[] = Array.isArray(value) || prefix === "" ? [] : [prefix];
  for (const [key, inner] of Object.entries(value)) paths.push(...leafPaths(inner, prefix === "" ? key : `${prefix}.${key}`));
  return paths;
}

/** A deep copy of `value` with the value at `path` set by `change` (which may delete it). */
function mutated(value: unknown, path: string, change: (parent: Record<string, unknown>, key: string) => void): unknown {
  const copy = structuredClone(value) as Record<string, unknown>;
  const keys = path.split(".");
  let parent = copy;
  for (const key of keys.slice(0, -1)) parent = parent[key] as Record<string, unknown>;
  change(parent, keys[keys.length - 1]);
  return copy;
}

/** A value of another type than `value` (a schema never accepts both). */
function wrongType(value: unknown): unknown {
  if (typeof value === "string") return 1;
  if (typeof value === "number") return "1";
  if (typeof value === "boolean") return "true";
  if (Array.isArray(value)) return {};
  return [];
}

test("schemas: every message type is accepted in its good form", () => {
  for (const { name, value, accepts } of GOOD) assert.ok(accepts(value), name);
});

test("schemas: extra, missing and wrong-typed fields, NaN, ±Infinity, 2^53 and nested garbage are refused", () => {
  let cases = 0;
  for (const { name, value, accepts, optional = [], maps = [] } of GOOD) {
    const refuse = (mutant: unknown, what: string) => {
      cases += 1;
      assert.equal(accepts(mutant), false, `${name}: ${what} must be refused`);
    };
    refuse(null, "null");
    refuse([value], "an array");
    refuse("text", "a string");
    for (const path of leafPaths(value)) {
      const at = (v: unknown) => mutated(value, path, (parent, key) => void (parent[key] = v));
      const original = path.split(".").reduce((o: any, k) => o[k], value);
      refuse(at(wrongType(original)), `${path} of another type`);
      refuse(at({ nested: { garbage: [1, "x", null] } }), `${path} as nested garbage`);
      if (typeof original === "number") {
        for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 2 ** 53]) refuse(at(bad), `${path} = ${bad}`);
      }
      if (typeof original === "object" && original !== null && !Array.isArray(original) && !maps.includes(path)) {
        refuse(mutated(value, path, (parent, key) => void ((parent[key] as Record<string, unknown>).extra = 1)), `an extra key in ${path}`);
      }
      if (!/\.\d+$/.test(path) && !optional.includes(path)) {
        refuse(mutated(value, path, (parent, key) => void delete parent[key]), `${path} missing`);
      }
    }
    refuse({ ...value, extra: 1 }, "an extra key");
  }
  assert.ok(cases > 500, `${cases} refusals checked`);
});

test("schemas: arrays above their bound are refused (a batch, a chunk, a ring batch)", () => {
  const append = GOOD.find((g) => g.name === "append")!.value;
  const entries = Array.from({ length: LIMITS.replicationBatchMax + 1 }, (_, i) => ({ ...ENTRY, index: i + 1 }));
  assert.equal(checkPeerRequest({ ...append, entries: entries.slice(0, -1) }, LIMITS).ok, true);
  assert.equal(checkPeerRequest({ ...append, entries }, LIMITS).ok, false);
  const writes = GOOD.find((g) => g.name === "ring writes")!.value;
  const ring = Array.from({ length: LIMITS.ringBatchWritesMax + 1 }, (_, i) => ({ epoch: 1, wseq: i + 1, author: "r1", origin: "r1", op: { type: "delete", key: "k" } }));
  assert.equal(check(ringPeerSchemas(LIMITS).writes, { ...writes, entries: ring.slice(0, -1) }, "w").ok, true);
  assert.equal(check(ringPeerSchemas(LIMITS).writes, { ...writes, entries: ring }, "w").ok, false);
  const chunk = GOOD.find((g) => g.name === "syncChunk")!.value;
  assert.equal(checkPeerAnswer({ ...chunk, chunk: { position: 0, count: LIMITS.syncChunkItemsMax + 1, payload: "[]" } }, LIMITS).ok, false);
});

test("schemas: a sync chunk's items are checked (a real 1,000-item chunk passes; one bad item refuses it all)", () => {
  const machine = filledMachine(400);
  const source = new CopySource(machine, LIMITS);
  const message = { type: "syncChunk", from: "p1", epoch: 1, syncGen: 1 };
  const first = source.chunk(0)!;
  assert.equal(first.count, 1_000, "sessions, locks and answers in one chunk");
  assert.equal(checkPeerAnswer({ ...message, chunk: first }, LIMITS).ok, true);
  const items = JSON.parse(first.payload) as unknown[];
  const bad = [
    ["a session with a negative ttlMs", 0, { ...(items[0] as object), ttlMs: -1 }],
    ["a session with an extra key", 1, { ...(items[1] as object), admin: true }],
    ["a lock whose holder's token is a string", 400, { ...(items[400] as { holders: object[] }), holders: [{ ...(items[400] as { holders: object[] }).holders[0], token: "1" }] }],
    ["an answer that is not an answer", 999, ["r", { ok: "yes" }]],
    ["null", 500, null],
  ] as const;
  for (const [what, at, item] of bad) {
    const payload = JSON.stringify(items.map((x, i) => (i === at ? item : x)));
    const checked = checkPeerAnswer({ ...message, chunk: { ...first, payload } }, LIMITS);
    assert.equal(checked.ok, false, what);
    assert.match((checked as { message: string }).message, new RegExp(`chunk item ${at}`), what);
  }
  assert.equal(checkPeerAnswer({ ...message, chunk: { ...first, payload: "[1," } }, LIMITS).ok, false, "not JSON");
  assert.equal(checkPeerAnswer({ ...message, chunk: { ...first, count: 999 } }, LIMITS).ok, false, "count does not match");
  source.close();
});

/**
 * A primary p1, a backup b1 and an arbiter core in one process, wired by a transport that hands
 * each request to the receiver's real handler (answerPeer, answerArbiter) as its text.
 */
function inProcessPair(settings: typeof SETTINGS) {
  const clock = manualClock(1_000);
  const services = new Map<string, LockService>();
  const arbiter = new ArbiterCore({ primaryId: "p1", backupId: "b1", leaseMs: settings.primaryLeaseMs, bootstrapWaitMs: 0 }, null, clock.nowMs());
  const ports = { store: { load: () => null, save: () => {} }, clock, log: memoryLogger(), failStop: (reason: string): never => assert.fail(reason) };
  const transport = {
    send: (url: string, body: unknown) =>
      new Promise<unknown>((resolve) => {
        const text = encodePeerBody(body);
        if (url.startsWith("a1")) return resolve(decodePeerBody(answerArbiter(arbiter, text, ports).body));
        answerPeer(services.get(url.split("/")[0])!, settings, text, (answer) => resolve(decodePeerBody(answer)));
      }),
  };
  const start = (id: string, peer: string) => services.set(id, lockService(id, { settings, clock, peer, transport }));
  start("p1", "b1");
  start("b1", "p1");
  return { clock, p1: services.get("p1")!, b1: services.get("b1")!, stop: () => services.forEach((s) => s.stop()) };
}

test("schemas: a refused peer message changes nothing in a backup with a copy (index, clock, table) and is counted", async () => {
  const settings = { ...SETTINGS, replicationBatchMax: 4 };
  const { clock, p1, b1, stop } = inProcessPair(settings);
  try {
    await eventually("p1 serves with b1 in sync", () => {
      clock.advance(10);
      p1.tick();
      b1.tick();
      return p1.replica.status().serving && p1.replica.status().backup?.arbiterRecordedInSync === true;
    });
    let opened: unknown;
    p1.submitThen({ type: "openSession", ttlMs: 5_000, secretHash: SECRET_HASH }, undefined, (answer) => (opened = answer));
    // The manual clock moves only here: each round is a tick of both servers.
    await eventually("a session opened and on b1", () => {
      clock.advance(10);
      p1.tick();
      b1.tick();
      return opened !== undefined && b1.replica.status().lastIndex === p1.replica.status().lastIndex;
    });
    assert.equal((opened as { ok: boolean }).ok, true);
    const state = () => JSON.stringify({ index: b1.replica.status().lastIndex, clockMs: b1.table!.clockMs, table: b1.table!.snapshot() });
    const before = state();
    const { epoch } = b1.replica.status();
    const next = b1.replica.status().lastIndex + 1;
    const append = { type: "append", from: "p1", epoch, syncGen: 0, entries: [] as unknown[] };
    const entry = { index: next, epoch, atMs: clock.nowMs() + 1_000, command: { type: "tick" } };
    const refusals = [
      { ...append, entries: [{ ...entry, command: { type: "enter", session: "x" } }] },
      { ...append, entries: [{ ...entry, atMs: Number.NaN }] },
      { ...append, entries: [{ ...entry, atMs: Number.POSITIVE_INFINITY }] },
      { ...append, entries: [{ ...entry, index: 2 ** 53 }] },
      { ...append, entries: [{ ...entry, command: { type: "openSession", ttlMs: 60_000, admin: true } }] },
      { ...append, entries: Array.from({ length: settings.replicationBatchMax + 1 }, (_, i) => ({ ...entry, index: next + i })) },
      { ...append, epoch: 2 ** 53, entries: [entry] },
      { ...append, from: "x".repeat(65), entries: [entry] },
      { type: "appendAck", from: "p1", epoch, ok: true, appliedIndex: next, promiseMs: 1 },
    ];
    for (const message of refusals) {
      assert.throws(
        () => answerPeer(b1, settings, encodePeerBody(message), () => assert.fail("answered")),
        (error: Error) => error instanceof RequestError && error.code === "bad_request",
      );
    }
    assert.equal(state(), before);
    assert.equal(b1.security.view().peerMalformed, refusals.length);
    // The same entry well-formed is applied: the refusals above were for their fields alone.
    const applied = await new Promise((done) => answerPeer(b1, settings, encodePeerBody({ ...append, entries: [entry] }), (text) => done(decodePeerBody(text))));
    assert.deepEqual({ ...(applied as object), promiseMs: 0 }, { type: "appendAck", from: "b1", epoch, ok: true, appliedIndex: next, promiseMs: 0 });
  } finally {
    stop();
  }
});

test("schemas: messages name the field (missing, unknown, ill-typed), as the readers before did for client bodies", () => {
  const lock = clientSchemas(LIMITS).lock;
  const says = (checked: { ok: boolean; message?: string }) => (checked as { message: string }).message;
  assert.equal(says(checkBody(lock.enter, { session: "s" })), "name must be a non-empty string");
  assert.equal(says(checkBody(lock.enter, { name: "a", session: "s", mode: "x" })), "mode must be one of exclusive, shared");
  assert.equal(says(checkBody(lock.enter, { name: "a", session: "s", waitMs: 1.5 })), "waitMs must be an integer");
  assert.equal(says(checkBody(lock.enter, { name: "a", session: "s", x: 1 })), "unknown field x (allowed: name, session, sessionSecret, mode, waitMs, lockDelayMs, callId)");
  assert.equal(says(checkBody(clientSchemas(LIMITS).ring.put, { fence: 1, key: "k" })), "value must be a string");
  assert.equal(says(checkPeerRequest({ type: "append", epoch: 1, syncGen: 0, entries: [] }, LIMITS)), "from: missing");
  assert.equal(says(checkPeerRequest({ type: "syncNext", from: "b1", epoch: 1, syncGen: 0, position: 0, admin: true }, LIMITS)), "unknown field admin in peer request");
  assert.match(says(checkPeerRequest({ ...GOOD[0].value, entries: [{ ...ENTRY, command: { ...ENTRY.command, name: 7 } }] }, LIMITS)), /^entries\.0\.command\.name: /);
});

test("a peer request's size in UTF-8 bytes: the short cut (at most 3 bytes a UTF-16 unit) gives the encoder's verdict at and around every bound, for 1-, 2-, 3- and 4-byte characters and lone surrogates", () => {
  const encoder = new TextEncoder();
  let over = 0;
  for (const unit of ["a", "é", "€", "😀", "\ud800", "\udc00"]) {
    for (let repeat = 0; repeat <= 12; repeat++) {
      const text = unit.repeat(repeat);
      const bytes = encoder.encode(text).byteLength;
      for (let bytesMax = 0; bytesMax <= 50; bytesMax++) {
        assert.equal(utf8LongerThan(text, bytesMax), bytes > bytesMax, `${JSON.stringify(text)} (${bytes} bytes) against ${bytesMax}`);
        if (bytes > bytesMax) over++;
      }
    }
  }
  assert.ok(over > 100, `over ${over}`);
});
