/**
 * The arbiter's decisions, table-driven on the pure core: leases, renewals, takeover allowed
 * and refused, stale epochs, restarts. Each row is a request at a virtual time and the reply
 * it must get; `persist` says whether the state must be written before the reply.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { ArbiterCore, type ArbiterRequest, type ArbiterState } from "../lib/core/arbiter/arbiter.ts";
import { recoverRecord } from "../lib/core/arbiter/recover.ts";
import type { ReplicaStatus } from "../lib/core/lock/lock_replica.ts";

const OPTIONS = { primaryId: "p", backupId: "b", leaseMs: 500, bootstrapWaitMs: 3_000 };

interface Row {
  atMs: number;
  request: ArbiterRequest;
  expect: {
    type: "lease" | "refused" | "view";
    epoch: number;
    primary?: string | null;
    becomeBackup?: boolean;
    fresh?: boolean;
    tablesBefore?: boolean;
    ttlMaxMs?: number | null;
    tokenCeiling?: number | null;
  };
  persist?: Partial<ArbiterState>;
}

interface Case {
  name: string;
  restored?: ArbiterState;
  startMs?: number;
  rows: Row[];
}

const claim = (from: string, epoch: number, hasState: boolean): Claim => ({ type: "claim", from, epoch, hasState });
let renewSeq = 0;
type Renew = Extract<ArbiterRequest, { type: "renew" }>;
type Claim = Extract<ArbiterRequest, { type: "claim" }>;
const renew = (from: string, epoch: number, backupInSync: boolean, seq = ++renewSeq): Renew => ({
  type: "renew",
  from,
  epoch,
  backupInSync,
  seq,
});
const IN_SYNC: ArbiterState = { epoch: 3, primary: "p", backup: "b", backupInSync: true, reportSeq: 0 };
const ALONE: ArbiterState = { epoch: 3, primary: "p", backup: "b", backupInSync: false, reportSeq: 0 };

const CASES: Case[] = [
  {
    name: "first start: the configured primary gets epoch 1 and a lease once the backup, too, claimed without state; written before the reply",
    rows: [
      { atMs: 0, request: claim("p", 0, false), expect: { type: "refused", epoch: 0, becomeBackup: false } },
      { atMs: 10, request: claim("b", 0, false), expect: { type: "refused", epoch: 0, becomeBackup: false } },
      {
        atMs: 20,
        request: claim("p", 0, false),
        expect: { type: "lease", epoch: 1, primary: "p", fresh: true, tablesBefore: false, tokenCeiling: 0, ttlMaxMs: 0 },
        persist: { epoch: 1, primary: "p", backup: "b" },
      },
    ],
  },
  {
    name: "first start without the backup: the configured primary waits bootstrapWaitMs too (an empty record may be a lost disk)",
    rows: [
      { atMs: 2_999, request: claim("p", 0, false), expect: { type: "refused", epoch: 0, becomeBackup: false } },
      { atMs: 3_000, request: claim("p", 0, false), expect: { type: "lease", epoch: 1, primary: "p", fresh: true }, persist: { epoch: 1 } },
    ],
  },
  {
    name: "first start: the backup waits for the primary, then may serve after bootstrapWaitMs",
    rows: [
      { atMs: 100, request: claim("b", 0, false), expect: { type: "refused", epoch: 0, becomeBackup: false } },
      { atMs: 3_000, request: claim("b", 0, false), expect: { type: "lease", epoch: 1, primary: "b", fresh: true }, persist: { epoch: 1, primary: "b", backup: "p" } },
    ],
  },
  {
    name: "renewal: the primary of the epoch gets its lease again; its sync report is persisted with its sequence",
    restored: ALONE,
    rows: [
      { atMs: 0, request: renew("p", 3, false), expect: { type: "lease", epoch: 3, primary: "p", fresh: false }, persist: { backupInSync: false } },
      { atMs: 100, request: renew("p", 3, true), expect: { type: "lease", epoch: 3 }, persist: { backupInSync: true } },
    ],
  },
  {
    name: "a late renewal (timed out at the primary, delivered after a newer one) does not undo the newer sync report",
    restored: IN_SYNC,
    rows: [
      { atMs: 0, request: renew("p", 3, false, 7), expect: { type: "lease", epoch: 3 }, persist: { backupInSync: false, reportSeq: 7 } },
      { atMs: 10, request: renew("p", 3, true, 6), expect: { type: "lease", epoch: 3 } },
    ],
  },
  {
    name: "a late report loses against every newer one, also one that repeated the old word",
    restored: ALONE,
    rows: [
      { atMs: 0, request: renew("p", 3, false, 5), expect: { type: "lease", epoch: 3 }, persist: { backupInSync: false, reportSeq: 5 } },
      { atMs: 10, request: renew("p", 3, false, 7), expect: { type: "lease", epoch: 3 }, persist: { backupInSync: false, reportSeq: 7 } },
      { atMs: 20, request: renew("p", 3, true, 6), expect: { type: "lease", epoch: 3 } },
    ],
  },
  {
    name: "the primary of record claiming with its copy gets its lease, also when it never heard of the epoch",
    restored: { epoch: 3, primary: "p", backup: "b", backupInSync: false, reportSeq: 0 },
    rows: [{ atMs: 600, request: claim("p", 2, true), expect: { type: "lease", epoch: 3, primary: "p", fresh: false } }],
  },
  {
    name: "stale epoch: a renewal from an old epoch is refused and told to become backup",
    restored: IN_SYNC,
    rows: [{ atMs: 0, request: renew("p", 2, true), expect: { type: "refused", epoch: 3, primary: "p", becomeBackup: true } }],
  },
  {
    name: "takeover refused while the primary's lease runs, allowed once it lapsed (new epoch)",
    restored: IN_SYNC,
    rows: [
      { atMs: 0, request: renew("p", 3, true), expect: { type: "lease", epoch: 3 }, persist: { backupInSync: true } },
      { atMs: 499, request: claim("b", 3, true), expect: { type: "refused", epoch: 3, becomeBackup: true } },
      { atMs: 500, request: claim("b", 3, true), expect: { type: "lease", epoch: 4, primary: "b", fresh: true }, persist: { epoch: 4, primary: "b", backup: "p", backupInSync: false } },
      { atMs: 600, request: renew("p", 3, true), expect: { type: "refused", epoch: 4, primary: "b", becomeBackup: true } },
    ],
  },
  {
    name: "takeover refused when the backup is recorded out of sync, even with the lease lapsed",
    restored: ALONE,
    rows: [{ atMs: 10_000, request: claim("b", 3, true), expect: { type: "refused", epoch: 3, becomeBackup: true } }],
  },
  {
    name: "takeover refused to a backup without state",
    restored: IN_SYNC,
    rows: [{ atMs: 10_000, request: claim("b", 3, false), expect: { type: "refused", epoch: 3, primary: "p", becomeBackup: true } }],
  },
  {
    name: "restarted arbiter: it assumes it just renewed, so no takeover for one lease",
    restored: IN_SYNC,
    startMs: 1_000,
    rows: [
      { atMs: 1_200, request: claim("b", 3, true), expect: { type: "refused", epoch: 3 } },
      { atMs: 1_500, request: claim("b", 3, true), expect: { type: "lease", epoch: 4, primary: "b" }, persist: { epoch: 4 } },
    ],
  },
  {
    name: "restarted primary without state: waits for its old lease, then yields to the in-sync backup",
    restored: IN_SYNC,
    rows: [
      { atMs: 100, request: claim("p", 0, false), expect: { type: "refused", epoch: 3, becomeBackup: false } },
      { atMs: 600, request: claim("p", 0, false), expect: { type: "refused", epoch: 3, primary: "p", becomeBackup: true } },
      { atMs: 650, request: claim("b", 3, true), expect: { type: "lease", epoch: 4, primary: "b" }, persist: { epoch: 4 } },
      { atMs: 700, request: claim("p", 0, false), expect: { type: "refused", epoch: 4, primary: "b", becomeBackup: true } },
    ],
  },
  {
    name: "restarted primary without state and no in-sync backup: a fresh epoch (the state is gone)",
    restored: ALONE,
    rows: [{ atMs: 600, request: claim("p", 0, false), expect: { type: "lease", epoch: 4, primary: "p", fresh: true }, persist: { epoch: 4 } }],
  },
  {
    name: "both servers restarted: the backup's claim without state under another process id proves the recorded copy gone; the primary without state then starts afresh after the lease",
    restored: { ...IN_SYNC, backupIncarnation: "b-1", ttlMaxMs: 10_000, tokenCeiling: 5_000_000 },
    rows: [
      { atMs: 600, request: claim("p", 0, false), expect: { type: "refused", epoch: 3, primary: "p", becomeBackup: true } },
      // The same process's own claim from before it synced (delayed) proves nothing.
      { atMs: 610, request: { ...claim("b", 0, false), incarnation: "b-1" }, expect: { type: "refused", epoch: 3, becomeBackup: true } },
      // A claim without an id (a server from before) proves nothing either.
      { atMs: 615, request: claim("b", 0, false), expect: { type: "refused", epoch: 3, becomeBackup: true } },
      {
        atMs: 620,
        request: { ...claim("b", 0, false), incarnation: "b-2" },
        expect: { type: "refused", epoch: 3, primary: "p", becomeBackup: true },
        persist: { backupInSync: true, backupCopyLost: true },
      },
      {
        atMs: 630,
        request: claim("p", 0, false),
        expect: { type: "lease", epoch: 4, primary: "p", fresh: true, tablesBefore: true, ttlMaxMs: 10_000, tokenCeiling: 5_000_000 },
        persist: { epoch: 4, ttlMaxMs: 10_000, tokenCeiling: 5_000_000 },
      },
    ],
  },
  {
    name: "a restarted backup that synced again may still take over with its new copy; an in-sync report naming it clears the mark, a late one naming the gone process does not",
    restored: { ...IN_SYNC, backupIncarnation: "b-1" },
    rows: [
      { atMs: 0, request: { ...claim("b", 0, false), incarnation: "b-2" }, expect: { type: "refused", epoch: 3, becomeBackup: true }, persist: { backupCopyLost: true } },
      // A late report of the primary from before names the gone process: its copy stays gone.
      { atMs: 5, request: { ...renew("p", 3, true, 1), backupIncarnation: "b-1" }, expect: { type: "lease", epoch: 3 }, persist: { backupCopyLost: true, backupIncarnation: "b-1" } },
      { atMs: 10, request: { ...renew("p", 3, true, 2), backupIncarnation: "b-2" }, expect: { type: "lease", epoch: 3 }, persist: { backupCopyLost: false, backupIncarnation: "b-2" } },
      { atMs: 600, request: { ...claim("b", 3, true), incarnation: "b-2" }, expect: { type: "lease", epoch: 4, primary: "b", fresh: true, tablesBefore: true }, persist: { epoch: 4 } },
    ],
  },
  {
    name: "an in-sync report records the backup process it vouches for; an out-of-sync one keeps the last",
    restored: ALONE,
    rows: [
      { atMs: 0, request: { ...renew("p", 3, true, 1), backupIncarnation: "b-7" }, expect: { type: "lease", epoch: 3 }, persist: { backupInSync: true, backupIncarnation: "b-7" } },
      { atMs: 10, request: renew("p", 3, false, 2), expect: { type: "lease", epoch: 3 }, persist: { backupInSync: false, backupIncarnation: "b-7" } },
    ],
  },
  {
    name: "renewals raise ttlMaxMs and tokenCeiling durably, never lower them; the lease names what the record covers",
    restored: { ...ALONE, reportSeq: 10, ttlMaxMs: 5_000, tokenCeiling: 1_000 },
    rows: [
      { atMs: 0, request: { ...renew("p", 3, false, 11), ttlMaxMs: 8_000, tokenCeiling: 2_000 }, expect: { type: "lease", epoch: 3, ttlMaxMs: 8_000, tokenCeiling: 2_000 }, persist: { ttlMaxMs: 8_000, tokenCeiling: 2_000 } },
      // A late renewal asks for less: covered already, nothing written.
      { atMs: 10, request: { ...renew("p", 3, false, 9), ttlMaxMs: 6_000, tokenCeiling: 1_500 }, expect: { type: "lease", epoch: 3, ttlMaxMs: 8_000, tokenCeiling: 2_000 } },
      // A refused renewal (not the primary of the epoch) raises nothing.
      { atMs: 20, request: { ...renew("p", 2, false, 12), tokenCeiling: 9_000 }, expect: { type: "refused", epoch: 3 } },
    ],
  },
  {
    name: "a record from before these fields: unknown ttlMaxMs stays unknown (null), the ceiling is raised from nothing",
    restored: { epoch: 3, primary: "p", backup: "b", backupInSync: false, reportSeq: 0 },
    rows: [
      { atMs: 0, request: { ...renew("p", 3, false, 1), ttlMaxMs: 8_000, tokenCeiling: 2_000 }, expect: { type: "lease", epoch: 3, ttlMaxMs: null, tokenCeiling: 2_000 }, persist: { ttlMaxMs: null, tokenCeiling: 2_000 } },
    ],
  },
  {
    name: "a lost disk: a server naming an epoch above the record stops the arbiter from deciding (durably), with refusals below the servers' epoch",
    rows: [
      { atMs: 0, request: renew("b", 5, true, 1), expect: { type: "refused", epoch: 0, becomeBackup: false }, persist: { epoch: 0, behindEpoch: 5 } },
      { atMs: 10, request: claim("p", 0, false), expect: { type: "refused", epoch: 0, becomeBackup: false } },
      { atMs: 5_000, request: claim("p", 0, false), expect: { type: "refused", epoch: 0, becomeBackup: false } },
      { atMs: 5_010, request: claim("b", 0, false), expect: { type: "refused", epoch: 0, becomeBackup: false } },
    ],
  },
  {
    name: "unknown servers are refused and change nothing",
    restored: IN_SYNC,
    rows: [
      { atMs: 10_000, request: claim("x", 3, true), expect: { type: "refused", epoch: 3, primary: "p" } },
      { atMs: 10_000, request: renew("x", 3, true), expect: { type: "refused", epoch: 3, primary: "p" } },
      { atMs: 10_000, request: { type: "whois", from: "x" }, expect: { type: "view", epoch: 3, primary: "p" } },
    ],
  },
];

for (const c of CASES) {
  test(`arbiter: ${c.name}`, () => {
    const core = new ArbiterCore(OPTIONS, c.restored ?? null, c.startMs ?? 0);
    let lastEpoch = core.current.epoch;
    for (const [i, row] of c.rows.entries()) {
      const before = { ...core.current };
      const { reply, persist } = core.step(row.request, row.atMs);
      const got: Record<string, unknown> = { type: reply.type, epoch: reply.epoch };
      for (const key of Object.keys(row.expect)) got[key] = (reply as unknown as Record<string, unknown>)[key];
      assert.deepEqual(got, { ...row.expect }, `row ${i}: ${JSON.stringify(reply)}`);
      if (row.persist) {
        assert.ok(persist, `row ${i} must persist`);
        assert.deepEqual({ ...persist, ...row.persist }, persist, `row ${i} persists ${JSON.stringify(persist)}`);
        assert.deepEqual(persist, core.current, "what is persisted is the new state");
      } else {
        assert.equal(persist, undefined, `row ${i} must not write`);
        assert.deepEqual(core.current, before, `row ${i} changes nothing`);
      }
      assert.ok(core.current.epoch >= lastEpoch, "epochs only grow");
      lastEpoch = core.current.epoch;
    }
  });
}

test("arbiter: never grants one epoch twice over a long random sequence of requests", () => {
  // A fixed pseudo-random walk (LCG, no Math.random) over claims and renewals of both servers.
  let seed = 12345;
  const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const core = new ArbiterCore(OPTIONS, null, 0);
  const granted = new Map<number, string>();
  let nowMs = 0;
  for (let i = 0; i < 5_000; i++) {
    nowMs += Math.floor(next() * 300);
    const from = next() < 0.5 ? "p" : "b";
    const epoch = Math.max(0, core.current.epoch - (next() < 0.2 ? 1 : 0));
    const request = next() < 0.5 ? claim(from, epoch, next() < 0.7) : renew(from, epoch, next() < 0.5);
    const { reply } = core.step(request, nowMs);
    if (reply.type === "lease") {
      const holder = granted.get(reply.epoch);
      assert.ok(holder === undefined || holder === reply.primary, `epoch ${reply.epoch} granted to ${holder} and ${reply.primary}`);
      granted.set(reply.epoch, reply.primary);
    }
  }
  assert.ok(granted.size > 3, `the walk must exercise takeovers (saw ${granted.size} epochs)`);
});

// ---- mutexd arbiter recover: the record decided from the lock servers' reports -------------

const replicaStatus = (fields: Partial<ReplicaStatus>): ReplicaStatus => ({
  role: "backup", epoch: 4, primary: "p", serving: false, leaseRemainingMs: 0, leaseSupport: null, promisedRemainingMs: 0,
  backup: null, lastIndex: 10, commitIndex: 10, hasState: true, lastHeardFromPrimaryMs: 0, arbiterRecord: null, ...fields,
});
const RECORD_VIEW = { tokenCeiling: 2_000_000, ttlMaxMs: 10_000, reportSeq: 77, backupInSync: true, backupIncarnation: "b-3" };
const PRIMARY = replicaStatus({ role: "primary", serving: true, arbiterRecord: RECORD_VIEW });

test("arbiter recover: the primary of the highest epoch gives the record (in sync exactly when its backup holds every committed change, under a known process)", () => {
  const decided = recoverRecord([{ id: "p", status: PRIMARY }, { id: "b", status: replicaStatus({}) }], null);
  assert.deepEqual(decided, {
    ok: true,
    record: {
      epoch: 4, primary: "p", backup: "b", backupInSync: true, reportSeq: 77, backupIncarnation: "b-3", backupCopyLost: false,
      ttlMaxMs: 10_000, tokenCeiling: 2_000_000,
    },
  });
  const alone = recoverRecord([{ id: "b", status: replicaStatus({}) }, { id: "p", status: replicaStatus({ ...PRIMARY, arbiterRecord: { ...RECORD_VIEW, backupInSync: false } }) }], null);
  assert.ok(alone.ok && alone.record.backupInSync === false && alone.record.backupIncarnation === null && alone.record.backup === "b");
  // In sync under an unknown process: a restarted backup could not prove that copy gone, so a
  // primary that lost its table too would wait for it forever; recorded out of sync instead.
  const unnamed = recoverRecord([{ id: "p", status: replicaStatus({ ...PRIMARY, arbiterRecord: { ...RECORD_VIEW, backupIncarnation: null } }) }, { id: "b", status: replicaStatus({}) }], null);
  assert.ok(unnamed.ok && unnamed.record.backupInSync === false && unnamed.record.backupIncarnation === null);
  // A primary from before this field (it reported backupRequired): out of sync, never in sync on a guess.
  const { backupInSync: _, ...older } = RECORD_VIEW;
  const before = recoverRecord([{ id: "p", status: replicaStatus({ ...PRIMARY, arbiterRecord: { ...older, backupRequired: true } as unknown as typeof RECORD_VIEW }) }, { id: "b", status: replicaStatus({}) }], null);
  assert.ok(before.ok && before.record.backupInSync === false);
  // The restored core takes it as its own: same epoch, the primary's renewals go on.
  assert.ok(decided.ok);
  const core = new ArbiterCore(OPTIONS, decided.record, 0);
  assert.equal(core.step({ ...renew("p", 4, true, 78), backupIncarnation: "b-3" }, 0).reply.type, "lease");
});

test("arbiter recover refuses what it cannot decide safely", () => {
  const cases: Array<[string, Parameters<typeof recoverRecord>, RegExp]> = [
    ["a silent server", [[{ id: "p", status: PRIMARY }, { id: "b", status: undefined }], null], /b did not answer/],
    ["no primary", [[{ id: "p", status: replicaStatus({ role: "joining" }) }, { id: "b", status: replicaStatus({}) }], null], /no lock server is primary/],
    ["two primaries", [[{ id: "p", status: PRIMARY }, { id: "b", status: PRIMARY }], null], /both lock servers say primary/],
    ["a newer epoch elsewhere", [[{ id: "p", status: PRIMARY }, { id: "b", status: replicaStatus({ epoch: 5 }) }], null], /knows epoch 5/],
    ["a disk that is not lost", [[{ id: "p", status: PRIMARY }, { id: "b", status: replicaStatus({}) }], { ...IN_SYNC, epoch: 9 }], /holds epoch 9/],
    ["a primary from before", [[{ id: "p", status: replicaStatus({ role: "primary" }) }, { id: "b", status: replicaStatus({}) }], null], /no arbiter record view/],
  ];
  for (const [what, args, reason] of cases) {
    const decided = recoverRecord(...args);
    assert.ok(!decided.ok && reason.test(decided.reason), `${what}: ${JSON.stringify(decided)}`);
  }
});
