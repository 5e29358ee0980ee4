/**
 * Session secrets and per-owner limits in the lock core (lib/core/lock/session_owners.ts, wired
 * in lock_table.ts; issue 12): an action on a session with a wrong or missing secret hash is
 * refused 403 and changes nothing, on each of the four actions; the right one works; sessions and
 * waiting enters are limited per owner, and the counts go down on close, expiry, grant, withdraw
 * and deadline and are rebuilt by a copy; a session restored without a hash cannot be acted on;
 * the backup's replay of the log refuses and counts exactly as the primary did.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { type Command, LockTable, type LockTableSnapshot, type Output } from "../lib/core/lock/lock_table.ts";
import { secretMatches } from "../lib/core/lock/session_owners.ts";
import { recountOwners, sortedEntries } from "./sim/lock/table_checkers.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { healthy } from "./_lock_world.ts";

const LIMITS = { ...DEFAULT_SETTINGS, sessionTtlMinMs: 100, sessionTtlMaxMs: 10_000, sessionsMax: 10 };
const HASH_A = "a".repeat(64);
const HASH_B = "b".repeat(64);

function newTable(): LockTable {
  return new LockTable({ limits: LIMITS, sessionIdPrefix: "s", tokenFloor: 0 });
}

function open(table: LockTable, nowMs: number, fields: Partial<Extract<Command, { type: "openSession" }>> = {}): Output {
  return table.apply({ type: "openSession", ttlMs: 1_000, secretHash: HASH_A, ...fields }, nowMs);
}

/** What a primary logs when leases lapse on its clock (session_leases.ts): an `expire` of them. */
function expireLapsed(table: LockTable, nowMs: number): Output {
  return table.apply({ type: "expire", sessions: table.lapsedSessions(nowMs) }, nowMs);
}

function opened(output: Output): string {
  assert.ok(output.result.ok && output.result.type === "session", JSON.stringify(output.result));
  return output.result.session;
}

function errorOf(output: Output): { code: string; message: string } {
  assert.ok(!output.result.ok, `expected a refusal, got ${JSON.stringify(output.result)}`);
  return output.result.error;
}

const enter = (session: string, name: string, secretHash = HASH_A, extra: Partial<Command> = {}): Command => ({
  type: "enter",
  name,
  session,
  secretHash,
  mode: "exclusive",
  waitMs: 5_000,
  lockDelayMs: 0,
  ...extra,
} as Command);

/** The owner counts the table keeps equal a recount of its sessions and queues (the simulator's check too). */
function assertCountsInStep(table: LockTable): void {
  assert.deepEqual(sortedEntries(table.owners), sortedEntries(recountOwners(table)));
}

test("secretMatches: equal non-empty hashes only; a session without a hash matches nothing", () => {
  assert.equal(secretMatches(HASH_A, HASH_A), true);
  assert.equal(secretMatches(HASH_A, HASH_B), false);
  assert.equal(secretMatches(HASH_A, HASH_A.slice(1)), false);
  assert.equal(secretMatches(HASH_A, ""), false);
  assert.equal(secretMatches(HASH_A, undefined), false);
  assert.equal(secretMatches(undefined, HASH_A), false);
  assert.equal(secretMatches(undefined, undefined), false);
  assert.equal(secretMatches("", ""), false);
});

test("each session action with a wrong or missing secret is refused 403 and changes nothing; the right secret works", () => {
  const table = newTable();
  const holder = opened(open(table, 0));
  const waiter = opened(open(table, 0));
  const granted = table.apply(enter(holder, "L"), 10).result;
  assert.ok(granted.ok && granted.type === "granted");
  assert.ok(table.apply(enter(waiter, "L"), 10).result.ok);
  const token = granted.grant.token;

  const actions = (secretHash: string): Array<[string, Command]> => [
    ["keepAlive", { type: "keepAlive", session: holder, secretHash }],
    ["closeSession", { type: "closeSession", session: holder, secretHash }],
    ["enter", enter(holder, "M", secretHash)],
    ["leave (holder)", { type: "leave", name: "L", session: holder, token, secretHash }],
    ["leave (waiter withdraws)", { type: "leave", name: "L", session: waiter, secretHash }],
  ];
  table.apply({ type: "tick" }, 20); // the refusals below run at this time: the table's clock stays
  for (const wrong of [HASH_B, "", HASH_A.slice(0, 63)]) {
    for (const [what, command] of actions(wrong)) {
      const before = JSON.stringify(table.snapshot());
      const output = table.apply(command, 20);
      assert.deepEqual(errorOf(output), { code: "forbidden", message: "session secret does not match" }, what);
      assert.deepEqual(output.effects, [], what);
      assert.equal(JSON.stringify(table.snapshot()), before, `${what} with a wrong secret changed the table`);
    }
  }
  // An unknown session is still "not found" (its id says nothing secret).
  assert.equal(errorOf(table.apply({ type: "keepAlive", session: "nope", secretHash: HASH_A }, 20)).code, "session_not_found");

  // The right secret: each action works.
  const kept = table.apply({ type: "keepAlive", session: holder, secretHash: HASH_A }, 30).result;
  assert.ok(kept.ok && kept.type === "session" && kept.expiresAtMs === 1_030);
  assert.ok(table.apply(enter(holder, "M"), 30).result.ok);
  const withdrawn = table.apply({ type: "leave", name: "L", session: waiter, secretHash: HASH_A }, 30).result;
  assert.ok(withdrawn.ok && withdrawn.type === "left" && !withdrawn.wasHolder);
  const left = table.apply({ type: "leave", name: "L", session: holder, token, secretHash: HASH_A }, 30).result;
  assert.ok(left.ok && left.type === "left" && left.wasHolder);
  const closed = table.apply({ type: "closeSession", session: holder, secretHash: HASH_A }, 30).result;
  assert.ok(closed.ok && closed.type === "closed");
  assert.deepEqual(closed.released, ["M"]);
});

test("openSession refuses a missing or oversized secret hash (bad_request) and answers the hash it stored", () => {
  const table = newTable();
  assert.equal(errorOf(open(table, 0, { secretHash: "" })).code, "bad_request");
  assert.equal(errorOf(open(table, 0, { secretHash: "x".repeat(129) })).code, "bad_request");
  assert.equal(errorOf(open(table, 0, { owner: "" })).code, "bad_request");
  assert.equal(errorOf(open(table, 0, { ownerSessionsMax: -1 })).code, "bad_request");
  assert.equal(table.sessions.size, 0);
  const result = open(table, 0, { secretHash: HASH_B }).result;
  assert.ok(result.ok && result.type === "session");
  assert.equal(result.secretHash, HASH_B);
});

test("a session restored without a hash (data older than session secrets) cannot be acted on", () => {
  const table = newTable();
  const session = opened(open(table, 0));
  const snapshot = table.snapshot();
  const old: LockTableSnapshot = { ...snapshot, sessions: snapshot.sessions.map(({ secretHash: _hash, ...rest }) => rest) };
  const restored = LockTable.fromSnapshot(old, LIMITS);
  for (const secretHash of [HASH_A, ""]) {
    assert.equal(errorOf(restored.apply({ type: "keepAlive", session, secretHash }, 10)).code, "forbidden");
  }
  // ...while a copy with the hash keeps the session usable (what a takeover relies on).
  const copied = LockTable.fromSnapshot(snapshot, LIMITS);
  assert.ok(copied.apply({ type: "keepAlive", session, secretHash: HASH_A }, 10).result.ok);
});

test("sessions are limited per owner; the count goes down on close and on expiry; other owners are not affected", () => {
  const table = newTable();
  const a1 = opened(open(table, 0, { owner: "alice", ownerSessionsMax: 2 }));
  opened(open(table, 0, { owner: "alice", ownerSessionsMax: 2, ttlMs: 500 }));
  const refused = open(table, 0, { owner: "alice", ownerSessionsMax: 2 });
  assert.deepEqual(errorOf(refused), { code: "limit_reached", message: "caller alice has at most 2 sessions" });
  assert.equal(table.sessions.size, 2);
  // Another caller, and one without a limit, still open.
  opened(open(table, 0, { owner: "bob", ownerSessionsMax: 1 }));
  opened(open(table, 0));
  assert.equal(table.owners.sessions("alice"), 2);
  assertCountsInStep(table);

  assert.ok(table.apply({ type: "closeSession", session: a1, secretHash: HASH_A }, 10).result.ok);
  assert.equal(table.owners.sessions("alice"), 1);
  opened(open(table, 10, { owner: "alice", ownerSessionsMax: 2 }));
  assert.equal(errorOf(open(table, 10, { owner: "alice", ownerSessionsMax: 2 })).code, "limit_reached");
  // The 500 ms session expires: one more fits.
  expireLapsed(table, 600);
  opened(open(table, 600, { owner: "alice", ownerSessionsMax: 2 }));
  assert.equal(table.owners.sessions("alice"), 2);
  assertCountsInStep(table);
});

test("waiting enters are limited per owner; the count goes down on grant, withdraw, deadline and the session's end", () => {
  const table = newTable();
  const holder = opened(open(table, 0, { owner: "holder" }));
  const w1 = opened(open(table, 0, { owner: "alice" }));
  const w2 = opened(open(table, 0, { owner: "alice", ttlMs: 10_000 }));
  for (const name of ["A", "B", "C", "D"]) assert.ok(table.apply(enter(holder, name, HASH_A, { waitMs: 0 } as Partial<Command>), 0).result.ok);
  const limited = (session: string, name: string, extra: Record<string, unknown> = {}) => enter(session, name, HASH_A, { ownerWaitersMax: 2, ...extra } as Partial<Command>);

  assert.equal((table.apply(limited(w1, "A"), 0).result as { type: string }).type, "waiting");
  assert.equal((table.apply(limited(w2, "B"), 0).result as { type: string }).type, "waiting");
  const refused = table.apply(limited(w2, "C"), 0);
  assert.deepEqual(errorOf(refused), { code: "limit_reached", message: "caller alice has at most 2 waiting enters" });
  assert.equal(table.locks.get("C")!.queue.length, 0);
  // Asking again for a wait it already has is not one more.
  assert.equal((table.apply(limited(w1, "A"), 0).result as { type: string }).type, "waiting");
  assert.equal(table.owners.waiters("alice"), 2);
  assertCountsInStep(table);

  // Grant: the holder leaves A, w1's wait becomes a hold.
  const tokenA = table.locks.get("A")!.holders[0].token;
  assert.ok(table.apply({ type: "leave", name: "A", session: holder, token: tokenA, secretHash: HASH_A }, 10).result.ok);
  assert.deepEqual(table.locks.get("A")!.holders.map((h) => h.session), [w1]);
  assert.equal(table.owners.waiters("alice"), 1);
  assert.equal((table.apply(limited(w2, "C"), 10).result as { type: string }).type, "waiting");
  assert.equal(table.owners.waiters("alice"), 2);
  assertCountsInStep(table);

  // Withdraw.
  assert.ok(table.apply({ type: "leave", name: "C", session: w2, secretHash: HASH_A }, 20).result.ok);
  assert.equal(table.owners.waiters("alice"), 1);
  // Deadline: a 100 ms wait on D ends.
  assert.equal((table.apply(limited(w2, "D", { waitMs: 100 }), 20).result as { type: string }).type, "waiting");
  assert.equal(table.owners.waiters("alice"), 2);
  table.apply({ type: "tick" }, 200);
  assert.equal(table.owners.waiters("alice"), 1);
  assertCountsInStep(table);

  // The session's end: closing w2 drops its wait on B, then w1 expires (its keepalives stopped).
  assert.ok(table.apply({ type: "closeSession", session: w2, secretHash: HASH_A }, 300).result.ok);
  assert.equal(table.owners.waiters("alice"), 0);
  expireLapsed(table, 2_000);
  assert.equal(table.owners.sessions("alice"), 0);
  assert.deepEqual(table.owners.entries(), []);
});

test("owner counts are rebuilt by a copy, and survive restartLeases", () => {
  const table = newTable();
  const holder = opened(open(table, 0, { owner: "h" }));
  const waiter = opened(open(table, 0, { owner: "w" }));
  opened(open(table, 0));
  assert.ok(table.apply(enter(holder, "L"), 0).result.ok);
  assert.ok(table.apply(enter(waiter, "L"), 0).result.ok);
  table.apply({ type: "restartLeases" }, 5);
  assertCountsInStep(table);
  const copy = LockTable.fromSnapshot(table.snapshot(), LIMITS);
  assert.deepEqual(copy.owners.entries(), table.owners.entries());
  assert.equal(copy.owners.waiters("w"), 1);
  // The copy refuses over the limit as the original does.
  assert.equal(errorOf(open(copy, 10, { owner: "w", ownerSessionsMax: 1 })).code, "limit_reached");
});

test("the backup's replay refuses and counts exactly as the primary: wrong secrets and per-owner limits", () => {
  const w = healthy();
  const openAs = (owner: string, secretHash = HASH_A) => w.request("p", { type: "openSession", ttlMs: 5_000, secretHash, owner, ownerSessionsMax: 1 });
  const first = w.ok(openAs("alice"));
  assert.ok(first.type === "session");
  const second = w.answers.get(openAs("alice"))!;
  assert.ok(!second.ok && second.code === "limit_reached", JSON.stringify(second));
  const bob = w.ok(openAs("bob", HASH_B));
  assert.ok(bob.type === "session");
  assert.ok(w.ok(w.request("p", enter(first.session, "L"))).type === "granted");
  const outsider = w.answers.get(w.request("p", { type: "leave", name: "L", session: first.session, token: 1, secretHash: HASH_B }))!;
  assert.ok(!outsider.ok && outsider.code === "forbidden", JSON.stringify(outsider));
  const bobWaits = w.answers.get(w.request("p", enter(bob.session, "L", HASH_B, { ownerWaitersMax: 0 } as Partial<Command>)))!;
  assert.ok(!bobWaits.ok && bobWaits.code === "limit_reached", JSON.stringify(bobWaits));
  w.run(500);

  const primary = w.server("p").machine!.table;
  const backup = w.server("b").machine!.table;
  assert.equal(w.server("b").machine!.appliedIndex, w.server("p").machine!.appliedIndex);
  assert.equal(JSON.stringify(backup.snapshot()), JSON.stringify(primary.snapshot()));
  assert.deepEqual(backup.owners.entries(), primary.owners.entries());
  assert.equal(backup.owners.sessions("alice"), 1);
  assert.equal(backup.locks.get("L")!.holders[0].session, first.session);
  assertCountsInStep(backup);
});
