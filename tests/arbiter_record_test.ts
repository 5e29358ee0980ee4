/**
 * The primary's gate on the arbiter's record (lib/core/lock/arbiter_record.ts): commits wait
 * until the record covers their fencing tokens, a command whose TTL it does not cover waits
 * outside the log (alone), the renewal states the whole cover, and a fresh table's grace and
 * token floor come from the lease.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { freshGraceMs, freshTokenFloor, HELD_MAX, RecordCover } from "../lib/core/lock/arbiter_record.ts";
import { type Command, LockTable } from "../lib/core/lock/lock_table.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { SECRET_HASH } from "./_session.ts";

const S = { ...DEFAULT_SETTINGS, tokenCeilingStep: 10 };
const lease = (fields: { tokenCeiling?: number | null; ttlMaxMs?: number | null; fresh?: boolean; tablesBefore?: boolean }) => ({
  type: "lease" as const,
  epoch: 2,
  primary: "p",
  leaseMs: S.primaryLeaseMs,
  fresh: false,
  ...fields,
});

/** A table and a gate, with shorthands to append commands as the primary does. */
function setup(covered: { tokenCeiling: number; ttlMaxMs: number }, tokenFloor = covered.tokenCeiling) {
  const table = new LockTable({ limits: S, sessionIdPrefix: "s-", tokenFloor });
  const cover = new RecordCover(S);
  cover.start(lease(covered), table);
  let index = 0;
  const append = (command: Command) => {
    const output = table.apply(command, 0);
    assert.ok(cover.admits(command, table), "the record covers its TTL");
    cover.appended(++index, table);
    return { index, output };
  };
  return { table, cover, append };
}

test("record gate: a grant above the ceiling waits for the raise the renewal asks for; the raise releases it", () => {
  const { cover, append } = setup({ tokenCeiling: 100, ttlMaxMs: S.sessionTtlMs });
  assert.deepEqual(cover.asks(), { tokenCeiling: 110, ttlMaxMs: S.sessionTtlMs }, "asked half a step early: the table is at the ceiling");
  const open = append({ type: "openSession", secretHash: SECRET_HASH, ttlMs: S.sessionTtlMs });
  assert.equal(cover.commitLimit(open.index), open.index, "a session of a covered TTL commits at once");
  assert.ok(open.output.result.ok && open.output.result.type === "session");
  const session = open.output.result.session;
  const grant = append({ type: "enter", secretHash: SECRET_HASH, name: "L", session, mode: "exclusive", waitMs: 0, lockDelayMs: 0 });
  assert.equal(cover.commitLimit(grant.index), open.index, "token 101 > ceiling 100: held back");
  assert.equal(cover.waiting, true, "the primary renews sooner");
  const tick = append({ type: "tick" });
  assert.equal(cover.commitLimit(tick.index), open.index, "later entries wait behind it (needs only grow)");
  cover.covered(lease({ tokenCeiling: 105, ttlMaxMs: S.sessionTtlMs }));
  assert.equal(cover.commitLimit(tick.index), tick.index, "covered: everything commits");
  assert.equal(cover.waiting, false);
});

test("record gate: a longer TTL (or TTL plus lock-delay) waits outside the log, alone, until the record's ttlMaxMs is raised; a refused command needs nothing", () => {
  const { table, cover, append } = setup({ tokenCeiling: 1_000, ttlMaxMs: S.sessionTtlMs }, 0);
  const refused = append({ type: "openSession", secretHash: SECRET_HASH, ttlMs: S.sessionTtlMaxMs + 1 });
  assert.equal(refused.output.result.ok, false);
  assert.equal(cover.commitLimit(refused.index), refused.index, "an invalid TTL grants nothing and needs nothing");
  const open = append({ type: "openSession", secretHash: SECRET_HASH, ttlMs: S.sessionTtlMs });
  assert.ok(open.output.result.ok && open.output.result.type === "session");
  const session = open.output.result.session;
  const long: Command = { type: "enter", secretHash: SECRET_HASH, name: "L", session, mode: "exclusive", waitMs: 0, lockDelayMs: 5_000 };
  assert.equal(cover.admits(long, table), false, "TTL + lock-delay exceeds the record");
  assert.equal(cover.admits({ ...long, session: "nobody" }, table), true, "an unknown session is refused by the table: nothing to wait for");
  assert.equal(cover.admits({ ...long, lockDelayMs: S.lockDelayMaxMs + 1 }, table), true, "so is a lock-delay out of bounds");
  assert.ok(cover.hold({ clientRef: 7, command: long }, table, 0));
  assert.equal(cover.waiting, true, "the primary renews sooner");
  assert.deepEqual(cover.asks(), { tokenCeiling: 1_000, ttlMaxMs: S.sessionTtlMs + 5_000 });
  // Only that command waits: a keepalive and another enter enter the log and commit meanwhile.
  const keepAlive = append({ type: "keepAlive", secretHash: SECRET_HASH, session });
  const other = append({ type: "enter", secretHash: SECRET_HASH, name: "M", session, mode: "exclusive", waitMs: 0, lockDelayMs: 0 });
  assert.equal(cover.commitLimit(other.index), other.index, `the keepalive (${keepAlive.index}) and the other enter commit`);
  assert.deepEqual(cover.takeCovered(table), [], "not covered yet");
  cover.covered(lease({ tokenCeiling: 1_000, ttlMaxMs: S.sessionTtlMs + 5_000 }));
  assert.deepEqual(cover.takeCovered(table).map((held) => held.clientRef), [7], "covered: it enters the log");
  assert.equal(cover.waiting, false);
});

test("record gate: a held command is refused once peerTimeoutMs passed without the raise; at most HELD_MAX wait", () => {
  const { table, cover } = setup({ tokenCeiling: 1_000, ttlMaxMs: S.sessionTtlMs }, 0);
  const long: Command = { type: "openSession", secretHash: SECRET_HASH, ttlMs: S.sessionTtlMs + 1 };
  assert.ok(cover.hold({ clientRef: 1, command: long }, table, 100));
  assert.deepEqual(cover.takeExpired(100 + S.peerTimeoutMs - 1), [], "still waiting");
  assert.deepEqual(cover.takeExpired(100 + S.peerTimeoutMs).map((held) => held.clientRef), [1]);
  for (let ref = 0; ref < HELD_MAX; ref++) assert.ok(cover.hold({ clientRef: ref, command: long }, table, 0));
  assert.equal(cover.hold({ clientRef: HELD_MAX, command: long }, table, 0), false, "the list is full: refused now");
  assert.equal(cover.takeAll().length, HELD_MAX, "a step-down answers every held command");
});

test("record gate: every renewal states the whole cover, so a record that went back (an older state file) is raised again", () => {
  const { cover } = setup({ tokenCeiling: 5_000, ttlMaxMs: 20_000 }, 0);
  assert.deepEqual(cover.asks(), { tokenCeiling: 5_000, ttlMaxMs: 20_000 }, "nothing to raise, yet the cover is stated");
  // The arbiter restarted from an older file: its lease says less than it said before.
  cover.covered(lease({ tokenCeiling: 1_000, ttlMaxMs: 10_000 }));
  assert.deepEqual(cover.asks(), { tokenCeiling: 5_000, ttlMaxMs: 20_000 }, "the next renewal asks for all of it again");
});

test("record gate: without an arbiter (standalone) or with one from before these fields, nothing is held", () => {
  const table = new LockTable({ limits: S, sessionIdPrefix: "s-", tokenFloor: 0 });
  for (const start of [null, lease({})]) {
    const cover = new RecordCover(S);
    cover.start(start, table);
    const open: Command = { type: "openSession", secretHash: SECRET_HASH, ttlMs: S.sessionTtlMaxMs };
    assert.ok(cover.admits(open, table), "the longest TTL is admitted");
    table.apply(open, 0);
    cover.appended(1, table);
    assert.equal(cover.commitLimit(1), 1);
    assert.deepEqual(cover.asks(), {});
  }
});

test("fresh table: a grace of the record's ttlMaxMs stretched by L/(L−δ) after an earlier epoch, none at the first; the token floor the larger of the ceiling and the driver's after a lost table, the driver's at the first", () => {
  assert.equal(freshGraceMs(lease({ fresh: true, tablesBefore: false, ttlMaxMs: 10_000 }), S), 0, "the cluster's first table");
  // × L/(L − δ) = 500/400 with the defaults (× 1.33 with a 400 ms lease), rounded up.
  assert.equal(freshGraceMs(lease({ fresh: true, tablesBefore: true, ttlMaxMs: 10_000 }), S), 12_500);
  assert.equal(freshGraceMs(lease({ fresh: true, tablesBefore: true, ttlMaxMs: null }), S), Math.ceil(((S.sessionTtlMaxMs + S.lockDelayMaxMs) * 5) / 4), "unknown: the longest the settings allow");
  assert.equal(freshGraceMs(lease({ fresh: false, tablesBefore: true, ttlMaxMs: 10_000 }), S), 0, "a takeover keeps its table");
  assert.equal(freshTokenFloor(lease({ fresh: true, tablesBefore: true, tokenCeiling: 7_000 }), 5_000), 7_000, "the ceiling, above the driver's floor");
  assert.equal(freshTokenFloor(lease({ fresh: true, tablesBefore: true, tokenCeiling: 7_000 }), 9_000), 9_000, "the driver's floor, above the ceiling");
  // Before the fix a ceiling never raised (0) was the floor: tokens restarted at 1.
  assert.equal(freshTokenFloor(lease({ fresh: true, tablesBefore: true, tokenCeiling: 0 }), 5_000), 5_000, "a ceiling never raised: the driver's floor");
  assert.equal(freshTokenFloor(lease({ fresh: true, tablesBefore: true, tokenCeiling: null }), 5_000), 5_000, "a record from before: the driver's floor");
  assert.equal(freshTokenFloor(lease({ fresh: true, tablesBefore: false, tokenCeiling: 0 }), 5_000), 5_000, "the first table: the driver's floor (wall clock)");
});
