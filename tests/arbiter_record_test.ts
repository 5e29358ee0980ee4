/**
 * The primary's gate on the arbiter's record (lib/core/lock/arbiter_record.ts): commits wait
 * until the record covers their fencing tokens and TTLs, the renewal asks for the raise, and a
 * fresh table's grace and token floor come from the lease.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { freshGraceMs, freshTokenFloor, RecordCover } from "../lib/core/lock/arbiter_record.ts";
import { type Command, LockTable } from "../lib/core/lock/lock_table.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";

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
    cover.appended(++index, command, output.result.ok, table);
    return { index, output };
  };
  return { table, cover, append };
}

test("record gate: a grant above the ceiling waits for the raise the renewal asks for; the raise releases it", () => {
  const { cover, append } = setup({ tokenCeiling: 100, ttlMaxMs: S.sessionTtlMs });
  assert.deepEqual(cover.asks(), { tokenCeiling: 110 }, "asked half a step early: the table is at the ceiling");
  const open = append({ type: "openSession", ttlMs: S.sessionTtlMs });
  assert.equal(cover.commitLimit(open.index), open.index, "a session of a covered TTL commits at once");
  assert.ok(open.output.result.ok && open.output.result.type === "session");
  const session = open.output.result.session;
  const grant = append({ type: "enter", name: "L", session, mode: "exclusive", waitMs: 0, lockDelayMs: 0 });
  assert.equal(cover.commitLimit(grant.index), open.index, "token 101 > ceiling 100: held back");
  assert.equal(cover.waiting, true, "the primary renews sooner");
  const tick = append({ type: "tick" });
  assert.equal(cover.commitLimit(tick.index), open.index, "later entries wait behind it (needs only grow)");
  cover.covered(lease({ tokenCeiling: 105, ttlMaxMs: S.sessionTtlMs }));
  assert.equal(cover.commitLimit(tick.index), tick.index, "covered: everything commits");
  assert.equal(cover.waiting, false);
});

test("record gate: a longer TTL (or TTL plus lock-delay) waits until the record's ttlMaxMs is raised; a refused command needs nothing", () => {
  const { cover, append } = setup({ tokenCeiling: 1_000, ttlMaxMs: S.sessionTtlMs }, 0);
  const refused = append({ type: "openSession", ttlMs: S.sessionTtlMaxMs + 1 });
  assert.equal(refused.output.result.ok, false);
  assert.equal(cover.commitLimit(refused.index), refused.index, "an invalid TTL grants nothing and needs nothing");
  const open = append({ type: "openSession", ttlMs: S.sessionTtlMs });
  assert.ok(open.output.result.ok && open.output.result.type === "session");
  const enter = append({ type: "enter", name: "L", session: open.output.result.session, mode: "exclusive", waitMs: 0, lockDelayMs: 5_000 });
  assert.equal(cover.commitLimit(enter.index), open.index, "TTL + lock-delay exceeds the record");
  assert.deepEqual(cover.asks(), { ttlMaxMs: S.sessionTtlMs + 5_000 });
  cover.covered(lease({ tokenCeiling: 1_000, ttlMaxMs: S.sessionTtlMs + 5_000 }));
  assert.equal(cover.commitLimit(enter.index), enter.index);
});

test("record gate: without an arbiter (standalone) or with one from before these fields, nothing is held", () => {
  const table = new LockTable({ limits: S, sessionIdPrefix: "s-", tokenFloor: 0 });
  for (const start of [null, lease({})]) {
    const cover = new RecordCover(S);
    cover.start(start, table);
    const output = table.apply({ type: "openSession", ttlMs: S.sessionTtlMaxMs }, 0);
    cover.appended(1, { type: "openSession", ttlMs: S.sessionTtlMaxMs }, output.result.ok, table);
    assert.equal(cover.commitLimit(1), 1);
    assert.deepEqual(cover.asks(), {});
  }
});

test("fresh table: a grace of the record's ttlMaxMs stretched by L/(L−δ) after an earlier epoch, none at the first; floor at the ceiling after a lost table, the driver's at the first", () => {
  assert.equal(freshGraceMs(lease({ fresh: true, tablesBefore: false, ttlMaxMs: 10_000 }), S), 0, "the cluster's first table");
  assert.equal(freshGraceMs(lease({ fresh: true, tablesBefore: true, ttlMaxMs: 10_000 }), S), 12_500);
  assert.equal(freshGraceMs(lease({ fresh: true, tablesBefore: true, ttlMaxMs: null }), S), Math.ceil((S.sessionTtlMaxMs + S.lockDelayMaxMs) * 1.25), "unknown: the longest the settings allow");
  assert.equal(freshGraceMs(lease({ fresh: false, tablesBefore: true, ttlMaxMs: 10_000 }), S), 0, "a takeover keeps its table");
  assert.equal(freshTokenFloor(lease({ fresh: true, tablesBefore: true, tokenCeiling: 7_000 })), 7_000);
  assert.equal(freshTokenFloor(lease({ fresh: true, tablesBefore: true, tokenCeiling: null })), undefined, "a record from before: the driver's own floor");
  assert.equal(freshTokenFloor(lease({ fresh: true, tablesBefore: false, tokenCeiling: 0 })), undefined, "the first table: the driver's floor (wall clock)");
});
