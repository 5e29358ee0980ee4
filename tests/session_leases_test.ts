/**
 * Session leases as the primary's decision (lib/core/lock/session_leases.ts, docs/failover.md
 * "Session leases"): a keepalive renews the primary's table only (no log entry: nothing
 * replicated, nothing written to a durable log), the table never expires a session by an entry's
 * time (so a backup with stale lease ends expires nothing on its own), the primary logs an
 * `expire` entry when a lease lapses on its clock, and a new primary restarts every lease.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { type Command, LockTable } from "../lib/core/lock/lock_table.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { healthy, openSession, World } from "./_lock_world.ts";
import { SECRET_HASH } from "./_session.ts";

const S = DEFAULT_SETTINGS;
const LIMITS = { ...S, sessionTtlMinMs: 100, sessionTtlMaxMs: 10_000 };
/** openSession's TTL in _lock_world.ts. */
const TTL_MS = 5_000;

function tableWithHolderAndWaiter(): { table: LockTable; a: string; b: string } {
  const table = new LockTable({ limits: LIMITS, sessionIdPrefix: "s", tokenFloor: 0 });
  const open = () => {
    const result = table.apply({ type: "openSession", secretHash: SECRET_HASH, ttlMs: 1_000 }, 0).result;
    assert.ok(result.ok && result.type === "session");
    return result.session;
  };
  const [a, b] = [open(), open()];
  const enter = (session: string): Command => ({ type: "enter", secretHash: SECRET_HASH, name: "L", session, mode: "exclusive", waitMs: 60_000, lockDelayMs: 0 });
  assert.ok(table.apply(enter(a), 0).result.ok);
  assert.ok(table.apply(enter(b), 0).result.ok);
  return { table, a, b };
}

const keepAlive = (session: string): Command => ({ type: "keepAlive", secretHash: SECRET_HASH, session });

test("table: no entry's time expires a session; the primary's expire entry does, and a lapsed waiter it names is not granted on the way", () => {
  const { table, a, b } = tableWithHolderAndWaiter();
  // Far past both 1 s leases: what a backup with stale lease ends applies.
  table.apply({ type: "tick" }, 5_000);
  assert.equal(table.sessions.size, 2, "a tick expires no session");
  assert.deepEqual(table.locks.get("L")?.holders.map((h) => h.session), [a]);
  assert.deepEqual(table.lapsedSessions(5_000), [a, b], "the primary's question names both");
  assert.deepEqual(table.apply({ type: "expire", sessions: ["s-unknown"] }, 5_000).effects, [], "an id the table lacks changes nothing");
  const output = table.apply({ type: "expire", sessions: [a, b] }, 5_000);
  assert.equal(table.sessions.size, 0);
  assert.equal(table.locks.size, 0);
  assert.deepEqual(output.effects.filter((e) => e.type === "granted"), [], "b lapsed too: no grant to it between the two drops");
  assert.deepEqual(output.effects.filter((e) => e.type === "sessionExpired").map((e) => e.type === "sessionExpired" && e.session), [a, b]);
});

test("table: an expire at the end of a lock-delay drops the sessions it names before the lock is handed on (simulator seed 216)", () => {
  const table = new LockTable({ limits: LIMITS, sessionIdPrefix: "s", tokenFloor: 0 });
  const open = (ttlMs: number) => {
    const result = table.apply({ type: "openSession", secretHash: SECRET_HASH, ttlMs }, 0).result;
    assert.ok(result.ok && result.type === "session");
    return result.session;
  };
  const [a, b] = [open(1_000), open(1_500)];
  const enter = (session: string, lockDelayMs: number): Command => ({ type: "enter", secretHash: SECRET_HASH, name: "L", session, mode: "exclusive", waitMs: 60_000, lockDelayMs });
  assert.ok(table.apply(enter(a, 500), 0).result.ok);
  assert.ok(table.apply(enter(b, 0), 0).result.ok);
  table.apply({ type: "expire", sessions: table.lapsedSessions(1_000) }, 1_000); // a: L is delayed to 1,500
  assert.deepEqual(table.locks.get("L")?.queue.map((w) => w.session), [b]);
  // At 1,500 the delay ends and b's lease lapses: the primary's expire of b comes first.
  assert.deepEqual(table.lapsedSessions(1_500), [b]);
  const output = table.apply({ type: "expire", sessions: [b] }, 1_500);
  assert.deepEqual(output.effects.filter((e) => e.type === "granted"), [], "no grant to b on the way");
  assert.equal(table.locks.size, 0);
});

test("table: a renewal moves the lease end only, at the primary's time, without moving the table's clock", () => {
  const { table, a, b } = tableWithHolderAndWaiter();
  const renewed = table.renew({ type: "keepAlive", secretHash: SECRET_HASH, session: a }, 900);
  assert.ok(renewed.result.ok && renewed.result.type === "session" && renewed.result.expiresAtMs === 1_900);
  assert.equal(table.clockMs, 0, "the table's clock is the last entry's, as on the backup");
  assert.deepEqual(table.lapsedSessions(1_000), [b]);
  assert.deepEqual(table.lapsedSessions(1_900), [a, b]);
  const refused = table.renew({ type: "keepAlive", secretHash: "x".repeat(64), session: a }, 950).result;
  assert.ok(!refused.ok && refused.error.code === "forbidden", "a renewal checks the secret like any action");
});

test("replica: keepalives are no log entries; the backup keeps the session past its stale lease end; its expiry is the primary's entry", () => {
  const w = healthy();
  const session = openSession(w);
  const [p, b] = [w.server("p"), w.server("b")];
  w.run(100);
  const index = p.machine!.appliedIndex;
  assert.equal(b.machine!.appliedIndex, index);
  // Bounded: 6 keepalives, 2 s apart, 12 s in all (more than two TTLs).
  for (let i = 0; i < 6; i++) {
    w.runChecked(2_000);
    assert.equal(w.ok(w.request("p", keepAlive(session))).type, "session");
  }
  assert.equal(p.machine!.appliedIndex, index, "no keepalive took a log entry");
  assert.ok(p.machine!.table.sessions.get(session)!.expiresAtMs > w.nowMs + p.timeOffset, "the primary's lease runs");
  const stale = b.machine!.table.sessions.get(session);
  assert.ok(stale, "the backup has the session");
  assert.ok(stale.expiresAtMs < w.nowMs + p.timeOffset - TTL_MS, `the backup's lease end (${stale.expiresAtMs}) is long past, and it expired nothing`);
  // The keepalives stop: the primary's clock decides, one entry, applied alike by the backup.
  w.runChecked(TTL_MS + 200);
  assert.equal(p.machine!.table.sessions.has(session), false, "expired on the primary");
  assert.equal(b.machine!.table.sessions.has(session), false, "and on the backup, by the primary's entry");
  assert.equal(p.machine!.appliedIndex, index + 1, "one expire entry");
  assert.equal(b.machine!.appliedIndex, index + 1);
});

test("replica: a takeover restarts every lease from the new primary's start; a client that died keeps its session one TTL more at most", () => {
  const w = healthy();
  const [alive, dead] = [openSession(w), openSession(w)];
  // Bounded: 4 keepalives of both 2 s apart: the backup's lease ends fall far behind.
  for (let i = 0; i < 4; i++) {
    w.runChecked(2_000);
    w.ok(w.request("p", keepAlive(alive)));
    w.ok(w.request("p", keepAlive(dead)));
  }
  // `dead`'s client dies now; the primary crashes 4.5 s later, so `dead`'s lease lapses (on the
  // lost primary's clock) before the takeover.
  w.runChecked(2_000);
  w.ok(w.request("p", keepAlive(alive)));
  w.runChecked(2_500);
  // An entry just before the crash: the log's clock, which the new primary continues, is now
  // past the backup's stale lease ends (without the restart they would lapse at once).
  openSession(w);
  w.crash("p");
  w.run(S.primaryLeaseMs + S.primarySilenceMs + 300);
  const b = w.server("b");
  assert.equal(b.role, "primary");
  const table = b.machine!.table;
  const logNowMs = () => w.nowMs + b.timeOffset;
  assert.ok(table.sessions.has(alive), "the renewed session survives the takeover");
  assert.ok(table.sessions.has(dead), "a session whose lease lapsed only on the lost primary's clock gets one more TTL");
  const endMs = table.sessions.get(dead)!.expiresAtMs;
  assert.equal(table.sessions.get(alive)!.expiresAtMs, endMs, "every lease restarted at one moment");
  // The takeover was within the last second: each lease is a whole TTL from it.
  assert.ok(endMs > logNowMs() + TTL_MS - 1_000 && endMs <= logNowMs() + TTL_MS, `lease end ${endMs}, now ${logNowMs()}`);
  w.ok(w.request("b", keepAlive(alive)));
  w.runChecked(endMs - logNowMs() - 100);
  assert.ok(table.sessions.has(dead), "not before its TTL from the takeover");
  w.ok(w.request("b", keepAlive(alive)));
  w.runChecked(200);
  assert.equal(table.sessions.has(dead), false, "gone one TTL after the takeover");
  assert.ok(table.sessions.has(alive), "the client that kept alive keeps its session");
});

test("durable: renewals write nothing to the disk; a restarted durable cluster restarts the leases", () => {
  const w = new World(S);
  w.crash("p");
  w.crash("b");
  w.start("p", { restored: null });
  w.start("b", { restored: null });
  w.run(500);
  const session = openSession(w);
  w.run(100);
  const written = { p: w.persisted.get("p")!.length, b: w.persisted.get("b")!.length };
  // Bounded: 5 keepalives, 1 s apart.
  for (let i = 0; i < 5; i++) {
    w.runChecked(1_000);
    w.ok(w.request("p", keepAlive(session)));
  }
  // An entry a second after the last keepalive: the restarted primary's log clock continues from it.
  w.runChecked(1_000);
  openSession(w);
  written.p += 1;
  written.b += 1;
  assert.deepEqual({ p: w.persisted.get("p")!.length, b: w.persisted.get("b")!.length }, written, "no record written for a keepalive");
  w.restartAllFromDisk();
  w.runChecked(3_000);
  const [serving] = w.serving();
  assert.ok(serving, "one serves");
  const table = w.server(serving).machine!.table;
  assert.ok(table.sessions.has(session), "the session survived the restart");
  // The new primary's first entries: its takeover's restartLeases, at the moment it started.
  const restart = w.persisted.get(serving)!.find((r) => r.type === "entry" && r.entry.command.type === "restartLeases");
  assert.ok(restart?.type === "entry", "the restarted primary logged restartLeases");
  assert.equal(table.sessions.get(session)!.expiresAtMs, restart.entry.atMs + TTL_MS, "its lease restarted when the new primary started");
});
