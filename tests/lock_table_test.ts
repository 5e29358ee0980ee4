/**
 * The lock-table core, table-driven. Each case is a script of commands at virtual times and
 * the answers they must get; the core is pure, so no case needs a clock or a timer.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { CALL_ID_LENGTH_MAX, type Command, copyOfLock, type Effect, LockTable, type Output } from "../lib/core/lock/lock_table.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { SECRET_HASH } from "./_session.ts";

const LIMITS = {
  ...DEFAULT_SETTINGS,
  sessionTtlMinMs: 100,
  sessionTtlMaxMs: 10_000,
  sessionsMax: 4,
  locksMax: 3,
  waitersPerLockMax: 2,
  lockNameLengthMax: 16,
  lockDelayMaxMs: 5_000,
  waitMaxMs: 60_000,
  leftCallsPerSessionMax: 2,
};

/** A table plus shorthands; sessions are named a, b, c… in the order they are opened. */
class Script {
  readonly effects: Effect[] = [];
  nowMs = 0;

  constructor(readonly table = new LockTable({ limits: LIMITS, sessionIdPrefix: "s", tokenFloor: 100 })) {}

  /**
   * As a primary runs a command (LockReplica): the sessions whose lease lapsed go first, by an
   * `expire` entry (their effects lead the command's); a keepalive renews without an entry.
   */
  run(command: Command, atMs = this.nowMs): Output {
    this.nowMs = atMs;
    const lapsed = this.table.lapsedSessions(atMs);
    const expired = lapsed.length > 0 ? this.table.apply({ type: "expire", sessions: lapsed }, atMs).effects : [];
    const output = command.type === "keepAlive" ? this.table.renew(command, atMs) : this.table.apply(command, atMs);
    output.effects = [...expired, ...output.effects];
    this.effects.push(...output.effects);
    return output;
  }
  open(ttlMs = 1_000): string {
    const out = this.run({ type: "openSession", secretHash: SECRET_HASH, ttlMs });
    assert.ok(out.result.ok && out.result.type === "session", JSON.stringify(out.result));
    return out.result.session;
  }
  enter(session: string, name = "L", options: { mode?: "exclusive" | "shared"; waitMs?: number; lockDelayMs?: number; callId?: string } = {}) {
    return this.run({
      type: "enter",
      secretHash: SECRET_HASH,
      name,
      session,
      mode: options.mode ?? "exclusive",
      waitMs: options.waitMs ?? 10_000,
      lockDelayMs: options.lockDelayMs ?? 0,
      ...(options.callId === undefined ? {} : { callId: options.callId }),
    }).result;
  }
  leave(session: string, token?: number, name = "L") {
    return this.run({ type: "leave", secretHash: SECRET_HASH, name, session, token }).result;
  }
  tick(atMs: number) {
    return this.run({ type: "tick" }, atMs);
  }
  holders(name = "L"): string[] {
    return this.table.locks.get(name)?.holders.map((h) => h.session) ?? [];
  }
  queue(name = "L"): string[] {
    return this.table.locks.get(name)?.queue.map((w) => w.session) ?? [];
  }
  tokenOf(session: string, name = "L"): number {
    const holder = this.table.locks.get(name)?.holders.find((h) => h.session === session);
    assert.ok(holder, `${session} holds ${name}`);
    return holder.token;
  }
  grantedTo(): string[] {
    return this.effects.flatMap((e) => (e.type === "granted" ? [e.grant.session] : []));
  }
}

function granted(result: Output["result"]): number {
  assert.ok(result.ok && result.type === "granted", `expected a grant, got ${JSON.stringify(result)}`);
  return result.grant.token;
}

function errorCode(result: Output["result"]): string {
  assert.ok(!result.ok, `expected an error, got ${JSON.stringify(result)}`);
  return result.error.code;
}

interface Case {
  name: string;
  run(s: Script): void;
}

const CASES: Case[] = [
  {
    name: "FIFO: waiters are granted in arrival order as each holder leaves",
    run(s) {
      const [a, b, c] = [s.open(), s.open(), s.open()];
      const tokenA = granted(s.enter(a));
      assert.deepEqual(s.enter(b), { ok: true, type: "waiting", name: "L", position: 1 });
      assert.deepEqual(s.enter(c), { ok: true, type: "waiting", name: "L", position: 2 });
      s.leave(a, tokenA);
      assert.deepEqual(s.holders(), [b]);
      s.leave(b, s.tokenOf(b));
      assert.deepEqual(s.holders(), [c]);
      assert.deepEqual(s.grantedTo(), [a, b, c]);
    },
  },
  {
    name: "fencing tokens strictly increase over all grants, also across locks",
    run(s) {
      const [a, b] = [s.open(), s.open()];
      const t1 = granted(s.enter(a, "L"));
      const t2 = granted(s.enter(b, "M"));
      s.leave(a, t1, "L");
      const t3 = granted(s.enter(b, "L"));
      assert.ok(t1 > 100 && t2 > t1 && t3 > t2, `${t1} < ${t2} < ${t3}`);
    },
  },
  {
    name: "shared holders coexist; an exclusive waits for all of them",
    run(s) {
      const [a, b, c] = [s.open(), s.open(), s.open()];
      granted(s.enter(a, "L", { mode: "shared" }));
      granted(s.enter(b, "L", { mode: "shared" }));
      assert.equal(s.enter(c).ok && s.queue().length, 1);
      s.leave(a, s.tokenOf(a));
      assert.deepEqual(s.holders(), [b], "one shared holder left: the exclusive still waits");
      s.leave(b, s.tokenOf(b));
      assert.deepEqual(s.holders(), [c]);
    },
  },
  {
    name: "writers do not starve: a queued exclusive blocks later shared requests",
    run(s) {
      const [a, b, c] = [s.open(), s.open(), s.open()];
      granted(s.enter(a, "L", { mode: "shared" }));
      s.enter(b); // exclusive, queued behind a
      const late = s.enter(c, "L", { mode: "shared" });
      assert.deepEqual(late, { ok: true, type: "waiting", name: "L", position: 2 });
      s.leave(a, s.tokenOf(a));
      assert.deepEqual(s.holders(), [b]);
      s.leave(b, s.tokenOf(b));
      assert.deepEqual(s.holders(), [c]);
    },
  },
  {
    name: "consecutive shared waiters are granted together when the exclusive leaves",
    run(s) {
      const [a, b, c, d] = [s.open(), s.open(), s.open(), s.open()];
      granted(s.enter(a));
      s.enter(b, "L", { mode: "shared" });
      s.enter(c, "L", { mode: "shared" });
      s.leave(a, s.tokenOf(a));
      assert.deepEqual(s.holders(), [b, c]);
      assert.ok(s.tokenOf(c) > s.tokenOf(b));
      granted(s.enter(d, "M"));
    },
  },
  {
    name: "idempotent enter: the holder asking again gets the same grant and no new token",
    run(s) {
      const a = s.open();
      const first = granted(s.enter(a));
      const again = granted(s.enter(a));
      assert.equal(again, first);
      assert.equal(s.table.highestToken, first);
    },
  },
  {
    name: "a waiter asking again keeps its queue place",
    run(s) {
      const [a, b, c] = [s.open(), s.open(), s.open()];
      granted(s.enter(a));
      s.enter(b);
      s.enter(c);
      assert.deepEqual(s.enter(b), { ok: true, type: "waiting", name: "L", position: 1 });
      assert.deepEqual(s.queue(), [b, c]);
    },
  },
  {
    name: "enter in another mode than the one held is refused and changes nothing",
    run(s) {
      const a = s.open();
      const token = granted(s.enter(a));
      assert.equal(errorCode(s.enter(a, "L", { mode: "shared" })), "mode_conflict");
      assert.equal(s.tokenOf(a), token);
    },
  },
  {
    name: "wrong leave: a non-holder or a wrong token is refused and changes nothing",
    run(s) {
      const [a, b] = [s.open(), s.open()];
      const token = granted(s.enter(a));
      const before = JSON.stringify(s.table.snapshot());
      assert.equal(errorCode(s.leave(b, token)), "not_holder");
      assert.equal(errorCode(s.leave(a, token + 1)), "not_holder");
      assert.equal(errorCode(s.leave(a)), "not_holder");
      assert.equal(errorCode(s.leave(a, token, "Other")), "lock_not_found");
      assert.equal(errorCode(s.leave("nobody", token)), "session_not_found");
      assert.equal(JSON.stringify(s.table.snapshot()), before);
    },
  },
  {
    name: "try-lock (waitMs 0) on a held lock answers not granted with the position and queues nothing",
    run(s) {
      const [a, b] = [s.open(), s.open()];
      granted(s.enter(a));
      assert.deepEqual(s.enter(b, "L", { waitMs: 0 }), { ok: true, type: "notGranted", name: "L", position: 1 });
      assert.deepEqual(s.queue(), []);
    },
  },
  {
    name: "a waiter withdraws by leave without a token; the next one moves up",
    run(s) {
      const [a, b, c] = [s.open(), s.open(), s.open()];
      granted(s.enter(a));
      s.enter(b);
      s.enter(c);
      assert.deepEqual(s.leave(b), { ok: true, type: "left", name: "L", wasHolder: false });
      assert.deepEqual(s.queue(), [c]);
    },
  },
  {
    name: "wait deadline: a waiter that stops asking leaves the queue at its deadline",
    run(s) {
      const [a, b, c] = [s.open(5_000), s.open(5_000), s.open(5_000)];
      granted(s.enter(a));
      s.enter(b, "L", { waitMs: 300 });
      s.enter(c, "L", { waitMs: 3_000 });
      s.tick(299);
      assert.deepEqual(s.queue(), [b, c]);
      s.tick(300);
      assert.deepEqual(s.queue(), [c]);
      assert.ok(s.effects.some((e) => e.type === "waitEnded" && e.session === b && e.reason === "deadline"));
    },
  },
  {
    name: "expiry with waiters: a dead holder's lock passes to the next waiter in order",
    run(s) {
      const a = s.open(1_000);
      const [b, c] = [s.open(5_000), s.open(5_000)];
      const tokenA = granted(s.enter(a));
      s.enter(b);
      s.enter(c);
      s.tick(999);
      assert.deepEqual(s.holders(), [a], "alive until its TTL");
      s.tick(1_000);
      assert.deepEqual(s.holders(), [b]);
      assert.ok(s.tokenOf(b) > tokenA);
      assert.ok(s.effects.some((e) => e.type === "sessionExpired" && e.session === a && e.released[0] === "L"));
    },
  },
  {
    name: "keepalive pushes expiry one TTL past the keepalive",
    run(s) {
      const a = s.open(1_000);
      granted(s.enter(a));
      s.run({ type: "keepAlive", secretHash: SECRET_HASH, session: a }, 900);
      s.tick(1_899);
      assert.deepEqual(s.holders(), [a]);
      s.tick(1_900);
      assert.deepEqual(s.holders(), []);
      assert.equal(errorCode(s.run({ type: "keepAlive", secretHash: SECRET_HASH, session: a }).result), "session_not_found");
    },
  },
  {
    name: "dead waiter skipped: a waiter whose session died is never granted (etcd #11456)",
    run(s) {
      const a = s.open(5_000);
      const b = s.open(1_000);
      const c = s.open(5_000);
      granted(s.enter(a));
      s.enter(b);
      s.enter(c);
      // No tick between b's death and a's leave: the grant itself must check b is alive.
      s.run({ type: "keepAlive", secretHash: SECRET_HASH, session: a }, 900);
      s.run({ type: "keepAlive", secretHash: SECRET_HASH, session: c }, 900);
      const out = s.run({ type: "leave", secretHash: SECRET_HASH, name: "L", session: a, token: s.tokenOf(a) }, 1_500);
      assert.ok(out.result.ok);
      assert.deepEqual(s.holders(), [c]);
      assert.ok(!s.grantedTo().includes(b));
    },
  },
  {
    name: "close releases every lock of the session and drops its waits",
    run(s) {
      const [a, b] = [s.open(), s.open()];
      granted(s.enter(a, "L"));
      granted(s.enter(a, "M"));
      granted(s.enter(b, "N"));
      s.enter(b, "L");
      s.enter(a, "N");
      const out = s.run({ type: "closeSession", secretHash: SECRET_HASH, session: a });
      assert.deepEqual(out.result, { ok: true, type: "closed", session: a, released: ["L", "M"] });
      assert.deepEqual(s.holders("L"), [b]);
      assert.deepEqual(s.queue("N"), []);
      assert.equal(s.table.locks.has("M"), false, "an idle lock is forgotten");
    },
  },
  {
    name: "lock-delay: a lock freed by expiry is not granted before the delay; a leave frees at once",
    run(s) {
      const a = s.open(1_000);
      const b = s.open(10_000);
      granted(s.enter(a, "L", { lockDelayMs: 2_000 }));
      s.enter(b, "L", { waitMs: 9_000 });
      s.tick(1_000); // a expires at 1000 → no grant until 3000
      assert.deepEqual(s.holders(), []);
      s.tick(2_999);
      assert.deepEqual(s.holders(), []);
      s.tick(3_000);
      assert.deepEqual(s.holders(), [b]);
      // A leave (not an expiry) never delays, even with a lock-delay set.
      const c = s.open(10_000);
      s.run({ type: "keepAlive", secretHash: SECRET_HASH, session: b }, 3_000);
      s.enter(c, "M", { lockDelayMs: 2_000 });
      s.leave(c, s.tokenOf(c, "M"), "M");
      granted(s.enter(b, "M"));
    },
  },
  {
    name: "lock-delay also holds a try-lock off",
    run(s) {
      const a = s.open(1_000);
      const b = s.open(10_000);
      granted(s.enter(a, "L", { lockDelayMs: 2_000 }));
      s.tick(1_000);
      assert.deepEqual(s.enter(b, "L", { waitMs: 0 }), { ok: true, type: "notGranted", name: "L", position: 1 });
      s.tick(3_000);
      granted(s.enter(b, "L", { waitMs: 0 }));
    },
  },
  {
    name: "limit: TTL bounds",
    run(s) {
      assert.equal(errorCode(s.run({ type: "openSession", secretHash: SECRET_HASH, ttlMs: 99 }).result), "bad_request");
      assert.equal(errorCode(s.run({ type: "openSession", secretHash: SECRET_HASH, ttlMs: 10_001 }).result), "bad_request");
      assert.equal(errorCode(s.run({ type: "openSession", secretHash: SECRET_HASH, ttlMs: 1.5 }).result), "bad_request");
      assert.equal(s.table.sessions.size, 0);
    },
  },
  {
    name: "limit: sessions",
    run(s) {
      for (let i = 0; i < LIMITS.sessionsMax; i++) s.open();
      assert.equal(errorCode(s.run({ type: "openSession", secretHash: SECRET_HASH, ttlMs: 1_000 }).result), "limit_reached");
      assert.equal(s.table.sessions.size, LIMITS.sessionsMax);
    },
  },
  {
    name: "limit: lock-name length and characters",
    run(s) {
      const a = s.open();
      assert.equal(errorCode(s.enter(a, "x".repeat(17))), "bad_request");
      assert.equal(errorCode(s.enter(a, "")), "bad_request");
      assert.equal(errorCode(s.enter(a, "bad name")), "bad_request");
      assert.equal(errorCode(s.enter(a, "ümlaut")), "bad_request");
      granted(s.enter(a, "x".repeat(16)));
      granted(s.enter(a, "a/b:c.d_e-f"));
      assert.equal(s.table.locks.size, 2);
    },
  },
  {
    name: "limit: waiters per lock",
    run(s) {
      const [a, b, c, d] = [s.open(), s.open(), s.open(), s.open()];
      granted(s.enter(a));
      s.enter(b);
      s.enter(c);
      assert.equal(errorCode(s.enter(d)), "limit_reached");
      assert.deepEqual(s.queue(), [b, c]);
    },
  },
  {
    name: "limit: number of locks",
    run(s) {
      const a = s.open();
      for (const name of ["A", "B", "C"]) granted(s.enter(a, name));
      assert.equal(errorCode(s.enter(a, "D")), "limit_reached");
      assert.equal(s.table.locks.size, 3);
    },
  },
  {
    name: "limit: waitMs and lockDelayMs bounds, and mode values",
    run(s) {
      const a = s.open();
      assert.equal(errorCode(s.enter(a, "L", { waitMs: -1 })), "bad_request");
      assert.equal(errorCode(s.enter(a, "L", { waitMs: 60_001 })), "bad_request");
      assert.equal(errorCode(s.enter(a, "L", { lockDelayMs: 5_001 })), "bad_request");
      assert.equal(errorCode(s.enter(a, "L", { mode: "upgrade" as "shared" })), "bad_request");
      assert.equal(s.table.locks.size, 0);
    },
  },
  {
    name: "unknown session: enter is refused and creates no lock",
    run(s) {
      assert.equal(errorCode(s.enter("ghost")), "session_not_found");
      assert.equal(s.table.locks.size, 0);
    },
  },
  {
    name: "snapshot round trip: a table rebuilt from a snapshot answers as the original",
    run(s) {
      const [a, b] = [s.open(1_000), s.open(5_000)];
      granted(s.enter(a, "L", { lockDelayMs: 500 }));
      s.enter(b, "L");
      const copy = new Script(LockTable.fromSnapshot(s.table.snapshot(), LIMITS));
      const original = s.tick(1_000);
      const replayed = copy.tick(1_000);
      assert.deepEqual(replayed, original);
      assert.deepEqual(copy.tick(1_500), s.tick(1_500));
      assert.deepEqual(copy.table.snapshot(), s.table.snapshot());
    },
  },
  {
    name: "left call: an enter of a call its session already left changes nothing (a late duplicate, finding 12)",
    run(s) {
      const [a, b] = [s.open(), s.open()];
      const token = granted(s.enter(a, "L", { callId: "k1" }));
      assert.equal(granted(s.enter(a, "L", { callId: "k1" })), token, "a retry while the call holds gets its grant");
      s.leave(a, token);
      const before = s.table.snapshot();
      const late = s.run({ type: "enter", secretHash: SECRET_HASH, name: "L", session: a, mode: "exclusive", waitMs: 10_000, lockDelayMs: 0, callId: "k1" });
      assert.deepEqual(late, { result: { ok: true, type: "notGranted", name: "L", position: 0, callLeft: true }, effects: [] });
      assert.deepEqual(s.table.snapshot(), before, "no grant, no queue entry, no token used");
      // The lock is free for the next caller, who gets the next token.
      assert.equal(granted(s.enter(b, "L", { callId: "k9" })), token + 1);
    },
  },
  {
    name: "left call: also while the session holds the lock again by a newer call, and after a withdrawal",
    run(s) {
      const [a, b] = [s.open(), s.open()];
      s.leave(a, granted(s.enter(a, "L", { callId: "k1" })));
      const token2 = granted(s.enter(a, "L", { callId: "k2" }));
      assert.ok(token2 > 0, "a new call of the same session is granted");
      assert.deepEqual(s.enter(a, "L", { callId: "k1" }), { ok: true, type: "notGranted", name: "L", position: 0, callLeft: true });
      assert.equal(s.tokenOf(a), token2, "the newer call keeps its grant");
      // A waiter that withdraws (leave without a token) leaves its call too.
      assert.equal(s.enter(b, "L", { callId: "w1" }).ok, true);
      assert.deepEqual(s.queue(), [b]);
      s.leave(b);
      assert.deepEqual(s.enter(b, "L", { callId: "w1" }), { ok: true, type: "notGranted", name: "L", position: 0, callLeft: true });
      assert.deepEqual(s.queue(), [], "the late copy did not queue again");
    },
  },
  {
    name: "left call: a call taken over by a newer call of the same session (re-enter while holding) is over once that leaves",
    run(s) {
      const a = s.open();
      const token = granted(s.enter(a, "L", { callId: "k1" }));
      assert.equal(granted(s.enter(a, "L", { callId: "k2" })), token, "the newer call gets the same grant");
      s.leave(a, token);
      const refused = { ok: true, type: "notGranted", name: "L", position: 0, callLeft: true };
      assert.deepEqual(s.enter(a, "L", { callId: "k1" }), refused, "a late copy of the older call");
      assert.deepEqual(s.enter(a, "L", { callId: "k2" }), refused, "and of the newer one");
    },
  },
  {
    name: "left call: a wait that ended at its deadline is a left call (a late copy of one of its rounds does not queue again)",
    run(s) {
      const [a, b] = [s.open(), s.open()];
      granted(s.enter(a, "L"));
      assert.equal(s.enter(b, "L", { callId: "w1", waitMs: 500 }).ok, true);
      s.tick(s.nowMs + 600); // b's wait ran out
      assert.deepEqual(s.queue(), []);
      assert.deepEqual(s.enter(b, "L", { callId: "w1", waitMs: 500 }), { ok: true, type: "notGranted", name: "L", position: 0, callLeft: true });
      assert.deepEqual(s.queue(), [], "not queued again");
      assert.equal(s.enter(b, "L", { callId: "w2", waitMs: 500 }).ok, true, "a new call queues");
      assert.deepEqual(s.queue(), [b]);
    },
  },
  {
    name: "left call: an enter without a callId keeps the old behaviour (granted again after the leave)",
    run(s) {
      const a = s.open();
      const token = granted(s.enter(a));
      s.leave(a, token);
      assert.equal(granted(s.enter(a)), token + 1);
    },
  },
  {
    name: "limit: a session remembers its last leftCallsPerSessionMax left calls, the oldest forgotten first",
    run(s) {
      const a = s.open();
      for (const callId of ["k1", "k2", "k3"]) s.leave(a, granted(s.enter(a, "L", { callId })));
      assert.deepEqual(s.table.sessions.get(a)?.leftCalls, ["k2", "k3"]);
      const refused = { ok: true, type: "notGranted", name: "L", position: 0, callLeft: true };
      assert.deepEqual(s.enter(a, "L", { callId: "k3" }), refused);
      assert.deepEqual(s.enter(a, "L", { callId: "k2" }), refused);
      granted(s.enter(a, "L", { callId: "k1" })); // beyond the limit: forgotten
    },
  },
  {
    name: "limit: callId length",
    run(s) {
      const a = s.open();
      assert.equal(errorCode(s.enter(a, "L", { callId: "x".repeat(CALL_ID_LENGTH_MAX + 1) })), "bad_request");
      assert.equal(errorCode(s.enter(a, "L", { callId: "" })), "bad_request");
      granted(s.enter(a, "L", { callId: "x".repeat(CALL_ID_LENGTH_MAX) }));
    },
  },
  {
    name: "snapshot round trip: call ids of holders and waiters and the left calls come back (backup and takeover agree)",
    run(s) {
      const [a, b] = [s.open(), s.open()];
      s.leave(a, granted(s.enter(a, "L", { callId: "k1" })));
      granted(s.enter(a, "L", { callId: "k2" }));
      s.enter(b, "L", { callId: "w1" });
      const snapshot = s.table.snapshot();
      assert.deepEqual(snapshot.sessions.find((x) => x.id === a)?.leftCalls, ["k1"]);
      const copy = LockTable.fromSnapshot(snapshot, LIMITS);
      assert.deepEqual(copy.snapshot(), snapshot);
      // Both refuse the left call, then agree on the leave of k2 and the late k2 after it.
      const late = { type: "enter", secretHash: SECRET_HASH, name: "L", session: a, mode: "exclusive", waitMs: 0, lockDelayMs: 0, callId: "k1" } as const;
      assert.deepEqual(copy.apply(late, 10), s.run(late, 10));
      const leave = { type: "leave", secretHash: SECRET_HASH, name: "L", session: a, token: s.tokenOf(a) } as const;
      assert.deepEqual(copy.apply(leave, 20), s.run(leave, 20));
      const lateK2 = { ...late, callId: "k2" };
      assert.deepEqual(copy.apply(lateK2, 30), s.run(lateK2, 30));
      assert.deepEqual(copy.snapshot(), s.table.snapshot());
      // A snapshot from before call ids (no leftCalls) still loads.
      const old = { ...snapshot, sessions: snapshot.sessions.map(({ leftCalls: _l, ...rest }) => rest) };
      assert.deepEqual(LockTable.fromSnapshot(old, LIMITS).sessions.get(a)?.leftCalls, []);
    },
  },
  {
    name: "time never goes backwards (an assertion, not an answer: it is a driver bug)",
    run(s) {
      s.tick(10);
      assert.throws(() => s.tick(9), /time went backwards/);
    },
  },
];

for (const c of CASES) {
  test(`lock table: ${c.name}`, () => c.run(new Script()));
}

test("holdGrants: a fresh table's grace opens sessions and queues enters but grants nothing until its end; a snapshot keeps it", () => {
  const s = new Script();
  s.run({ type: "holdGrants", untilMs: 1_000 }, 0);
  const a = s.open(5_000);
  const b = s.open(5_000);
  assert.deepEqual(s.enter(a, "L", { waitMs: 0 }), { ok: true, type: "notGranted", name: "L", position: 1 }, "a try-lock in the grace fails");
  assert.deepEqual(s.enter(a, "L"), { ok: true, type: "waiting", name: "L", position: 1 });
  assert.deepEqual(s.enter(b, "M"), { ok: true, type: "waiting", name: "M", position: 1 });
  s.tick(999);
  assert.deepEqual(s.grantedTo(), [], "nothing granted before the grace ends");
  // A copy taken in the grace (the backup's) keeps it, also for locks made after the copy.
  const copy = LockTable.fromSnapshot(s.table.snapshot(), LIMITS);
  assert.equal(copy.grantsFrom, 1_000);
  const c = copy.apply({ type: "openSession", secretHash: SECRET_HASH, ttlMs: 5_000 }, 999).result;
  assert.ok(c.ok && c.type === "session");
  const early = copy.apply({ type: "enter", secretHash: SECRET_HASH, name: "N", session: c.session, mode: "exclusive", waitMs: 0, lockDelayMs: 0 }, 999).result;
  assert.ok(early.ok && early.type === "notGranted", JSON.stringify(early));

  s.tick(1_000);
  assert.deepEqual(s.grantedTo().sort(), [a, b].sort(), "the tick at the grace's end grants the queues");
  assert.equal(s.tokenOf(a), 101);
  const d = s.open(5_000);
  assert.equal(granted(s.enter(d, "X", { waitMs: 0 })), 103, "after the grace a try-lock is granted at once");
});

test("holdGrants: a lock first made in a restored copy's grace is granted by the tick at its end (found by the simulator, seed 36)", () => {
  const s = new Script();
  s.run({ type: "holdGrants", untilMs: 1_000 }, 0);
  s.open(5_000);
  // The copy has sessions but no lock: its first command recomputes what is due without any.
  const copy = LockTable.fromSnapshot(s.table.snapshot(), LIMITS);
  const opened = copy.apply({ type: "openSession", secretHash: SECRET_HASH, ttlMs: 5_000 }, 500).result;
  assert.ok(opened.ok && opened.type === "session");
  const queued = copy.apply({ type: "enter", secretHash: SECRET_HASH, name: "N", session: opened.session, mode: "exclusive", waitMs: 4_000, lockDelayMs: 0 }, 999).result;
  assert.deepEqual(queued, { ok: true, type: "waiting", name: "N", position: 1 });
  const granted = copy.apply({ type: "tick" }, 1_000).effects.filter((e) => e.type === "granted");
  assert.equal(granted.length, 1, "the grace's end is due: the queue is granted then, not at the next expiry");
});

/** A result's type, or its error code. */
const kind = (result: Output["result"]): string => (result.ok ? result.type : result.error.code);

test("keepAlive answers the locks the session holds (not those it waits for), so a client notices a lock taken from it", () => {
  const s = new Script();
  const a = s.open(5_000);
  const b = s.open(5_000);
  assert.equal(kind(s.enter(a, "L")), "granted");
  assert.equal(kind(s.enter(a, "M")), "granted");
  assert.equal(kind(s.enter(b, "L")), "waiting");
  const keepAlive = (session: string) => s.run({ type: "keepAlive", secretHash: SECRET_HASH, session }).result;
  assert.deepEqual(keepAlive(a), { ok: true, type: "session", session: a, ttlMs: 5_000, expiresAtMs: 5_000, held: ["L", "M"] });
  assert.deepEqual((keepAlive(b) as { held?: string[] }).held, [], "b only waits for L");
  assert.ok(s.leave(a, (s.table.locks.get("M")!.holders[0]).token, "M").ok);
  assert.deepEqual((keepAlive(a) as { held?: string[] }).held, ["L"]);
});

test("forceRelease: removes every holder as if it died (lock-delay applies, a late enter of its call is refused), moves the fencing counter past them, and the queue moves on after the delay", () => {
  const s = new Script();
  const a = s.open(5_000);
  const b = s.open(5_000);
  const granted = s.enter(a, "L", { lockDelayMs: 300, callId: "call-a" });
  assert.ok(granted.ok && granted.type === "granted");
  const tokenA = granted.grant.token;
  assert.equal(kind(s.enter(b, "L")), "waiting");
  const forced = s.run({ type: "forceRelease", name: "L" }, 100);
  assert.deepEqual(forced.result, { ok: true, type: "forceReleased", name: "L", tokens: [tokenA] });
  assert.ok(forced.effects.some((e) => e.type === "released" && e.session === a && e.reason === "forced"));
  assert.deepEqual(s.holders(), [], "nobody holds L during the holder's lock-delay");
  assert.equal(s.table.highestToken, tokenA + 1, "the fencing counter moved past the released token");
  const keepAlive = s.run({ type: "keepAlive", secretHash: SECRET_HASH, session: a }).result;
  assert.deepEqual((keepAlive as { held?: string[] }).held, [], "a's keepalive no longer lists L");
  const late = s.enter(a, "L", { callId: "call-a" });
  assert.ok(late.ok && late.type === "notGranted" && late.callLeft, "a late copy of the holder's enter takes nothing");
  s.tick(400);
  assert.deepEqual(s.holders(), [b], "b gets L when the lock-delay ends");
  const next = s.table.locks.get("L")!.holders[0].token;
  assert.equal(next, tokenA + 2, "b's token is above the counter the force-release moved");
  const nobody = s.run({ type: "forceRelease", name: "N" }).result;
  assert.ok(!nobody.ok && nobody.error.code === "lock_not_found");
});

test("locks without waiters or holders share one empty list (W4's memory), and an entry added to one lock's list reaches no other lock, nor a snapshot or a restored copy", () => {
  const s = new Script();
  const a = s.open(5_000);
  const b = s.open(5_000);
  granted(s.enter(a, "L"));
  granted(s.enter(a, "M"));
  const l = s.table.locks.get("L")!;
  const m = s.table.locks.get("M")!;
  // The saving itself: two held locks without waiters have the same (frozen) queue.
  assert.equal(l.queue, m.queue);
  assert.ok(Object.isFrozen(l.queue));
  const before = s.table.snapshot();
  assert.deepEqual(s.enter(b, "L", { waitMs: 1_000 }), { ok: true, type: "waiting", name: "L", position: 1 });
  assert.deepEqual(s.queue("L"), [b]);
  assert.deepEqual(s.queue("M"), []);
  assert.deepEqual(before.locks.map((lock) => lock.queue.length), [0, 0]);
  // forceRelease empties the holders; the copy of the table still has its own lists.
  s.run({ type: "forceRelease", name: "M" });
  const restored = LockTable.fromSnapshot(s.table.snapshot(), LIMITS);
  assert.deepEqual(restored.locks.get("L")!.queue.map((w) => w.session), [b]);
  assert.equal(restored.locks.get("M"), undefined);
  // The waiter on L gets it when a leaves; M's list is untouched by that.
  assert.equal(s.leave(a, s.tokenOf(a, "L"), "L").ok, true);
  assert.deepEqual(s.holders("L"), [b]);
  assert.deepEqual(s.queue("L"), []);
});

test("refusalBeforeLog answers every command as a dry run on a new empty table does, while it reuses one table for its dry runs (an accepted openSession in between, the table's clock moving)", () => {
  const s = new Script();
  const a = s.open(5_000);
  const options = { limits: LIMITS, sessionIdPrefix: "s", tokenFloor: 100 };
  const enter = (session: string, fields: Record<string, unknown> = {}) =>
    ({ type: "enter", secretHash: SECRET_HASH, name: "L", session, mode: "exclusive", waitMs: 0, lockDelayMs: 0, ...fields }) as Command;
  const commands: Command[] = [
    enter("unknown"),
    enter(a),
    enter(a, { secretHash: "wrong" }),
    enter(a, { name: "" }),
    enter("unknown", { waitMs: -1 }),
    { type: "openSession", secretHash: SECRET_HASH, ttlMs: 5_000 },
    { type: "openSession", secretHash: SECRET_HASH, ttlMs: 1 },
    { type: "leave", secretHash: SECRET_HASH, name: "L", session: "unknown" },
    { type: "leave", secretHash: SECRET_HASH, name: "L", session: a, token: -1 },
    { type: "keepAlive", secretHash: SECRET_HASH, session: "unknown" },
    { type: "closeSession", secretHash: "wrong", session: a },
    enter("unknown", { name: "M" }),
    { type: "openSession", secretHash: SECRET_HASH, ttlMs: 5_000 },
    { type: "openSession", secretHash: SECRET_HASH, ttlMs: 5_000 },
    enter("s-1"),
    { type: "tick" },
    // Enter and leave are answered without a dry run (apply's own field checks, then the session):
    // each of their refusals, in apply's order of checks, on a session the table has or not.
    enter(a, { mode: "both" }),
    enter(a, { waitMs: 1.5 }),
    enter(a, { lockDelayMs: -1 }),
    enter(a, { callId: "" }),
    enter("unknown", { callId: "c".repeat(200) }),
    enter(a, { ownerWaitersMax: -1 }),
    enter(a, { name: "bad name", secretHash: "wrong" }),
    enter(a, { callId: 7, waitMs: -1 }),
    enter(a, { secretHash: undefined }),
    { type: "leave", secretHash: SECRET_HASH, name: "L", session: a },
    { type: "leave", secretHash: SECRET_HASH, name: "L", session: a, token: 1.5 },
    { type: "leave", secretHash: "wrong", name: "L", session: a, token: 3 },
    { type: "leave", secretHash: "wrong", name: "L/ä", session: a },
    { type: "leave", secretHash: SECRET_HASH, name: "L", session: 42 } as unknown as Command,
  ];
  let atMs = 0;
  for (let round = 0; round < 3; round++) {
    for (const command of commands) {
      s.run({ type: "tick" }, (atMs += 7));
      const expected = new LockTable(options).apply(command, atMs);
      const answer = s.table.refusalBeforeLog(command);
      const shown = JSON.stringify(command);
      if (command.type === "tick") assert.equal(answer, undefined, shown);
      else if (expected.result.ok) assert.equal(answer, undefined, shown);
      else if (expected.result.error.code === "bad_request") assert.deepEqual(answer, expected, shown);
      else if (!("session" in command) || command.session !== a) assert.deepEqual(answer, expected, shown);
      // Session a is in the table: with its secret the table decides; without, forbidden.
      else if (command.secretHash === SECRET_HASH) assert.equal(answer, undefined, shown);
      else assert.equal(answer!.result.ok ? "ok" : answer!.result.error.code, "forbidden", shown);
    }
  }
  assert.equal(s.table.sessions.size, 1, "the dry runs changed nothing in the table");
});

test("UUID call ids (mutexd's client) are kept packed in the table (W4's memory) and carried as sent in snapshots; a restored copy refuses the left call alike", () => {
  const s = new Script();
  const a = s.open(5_000);
  const [left, held] = ["5f0c3f8e-0b7a-4c2e-9d1f-3a6b8c9d0e1f", "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"];
  s.leave(a, granted(s.enter(a, "L", { callId: left })));
  granted(s.enter(a, "L", { callId: held }));
  const holder = s.table.locks.get("L")!.holderOf(a)!;
  assert.equal(holder.callId?.length, 16, "the table keeps 16 characters, not the 36 of the text");
  assert.equal(s.table.sessions.get(a)!.leftCalls[0].length, 16);
  const snapshot = s.table.snapshot();
  assert.equal(snapshot.locks[0].holders[0].callId, held, "a copy carries the client's text");
  assert.deepEqual(snapshot.sessions[0].leftCalls, [left]);
  const copy = LockTable.fromSnapshot(snapshot, LIMITS);
  assert.deepEqual(copy.snapshot(), snapshot);
  const late = { type: "enter", secretHash: SECRET_HASH, name: "L", session: a, mode: "exclusive", waitMs: 0, lockDelayMs: 0, callId: left } as const;
  assert.deepEqual(copy.apply(late, 10), s.run(late, 10));
  assert.deepEqual(s.run(late, 10).result, { ok: true, type: "notGranted", name: "L", position: 0, callLeft: true });
  // The same call asking again gets its grant (the packed ids compare equal).
  assert.equal(granted(s.enter(a, "L", { callId: held })), holder.token);
});

test("a lock's one holder is the lock itself, two or more (shared) a list, none the shared empty list (W4's memory); copies carry the holder's fields only", () => {
  const s = new Script();
  const [a, b] = [s.open(5_000), s.open(5_000)];
  const callId = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";
  const tokenA = granted(s.enter(a, "L", { mode: "shared", lockDelayMs: 7, callId }));
  const lock = s.table.locks.get("L")!;
  assert.equal(lock.held, lock, "one holder: kept in the lock itself");
  assert.equal(lock.holderCount, 1);
  // Exactly the fields a holder always had, in its order: the lock's own fields stay out.
  const holderKeys = ["session", "token", "mode", "sinceMs", "lockDelayMs", "callId"];
  const copyA = s.table.snapshot().locks[0].holders;
  assert.deepEqual(copyA.map((h) => Object.keys(h)), [holderKeys]);
  assert.deepEqual(copyA, [{ session: a, token: tokenA, mode: "shared", sinceMs: lock.sinceMs, lockDelayMs: 7, callId }]);
  granted(s.enter(b, "L", { mode: "shared" }));
  assert.ok(Array.isArray(lock.held) && lock.held.length === 2);
  assert.ok(lock.held.every((h) => h !== lock), "a list's holders are objects of their own");
  assert.deepEqual(s.holders(), [a, b]);
  assert.deepEqual(s.table.snapshot().locks[0].holders.map((h) => [h.session, h.token, h.callId]), [[a, tokenA, callId], [b, tokenA + 1, undefined]]);
  assert.deepEqual(s.table.snapshot().locks[0].holders.map((h) => Object.keys(h)), [holderKeys, holderKeys.slice(0, -1)]);
  s.leave(a, s.tokenOf(a));
  assert.equal(lock.held, lock, "back to one holder: in the lock again");
  assert.equal(lock.holderOf(b)?.session, b);
  assert.equal(lock.holderOf(b)?.token, tokenA + 1);
  assert.equal(lock.holderOf(a), undefined);
  s.enter(a, "L", { waitMs: 1_000 });
  s.run({ type: "forceRelease", name: "L" });
  // The exclusive waiter got it; a restored copy has the same shape.
  assert.deepEqual(s.holders(), [a]);
  const restored = LockTable.fromSnapshot(s.table.snapshot(), LIMITS).locks.get("L")!;
  assert.equal(restored.held, restored);
  assert.deepEqual(copyOfLock(restored), copyOfLock(lock));
  s.leave(a, s.tokenOf(a));
  assert.equal(s.table.locks.get("L"), undefined, "an idle lock is forgotten");
});

test("lock names: the table accepts exactly the names /^[A-Za-z0-9._:/-]+$/ accepts, over every UTF-16 code unit alone and inside a valid name", () => {
  // The table checks names by a table of character codes (table_base.ts); the documented pattern is the oracle.
  const pattern = /^[A-Za-z0-9._:/-]+$/;
  const table = new LockTable({ limits: { ...LIMITS, locksMax: 1_000_000, lockNameLengthMax: 8 }, sessionIdPrefix: "s", tokenFloor: 100 });
  const opened = table.apply({ type: "openSession", secretHash: SECRET_HASH, ttlMs: 10_000 }, 0).result;
  assert.ok(opened.ok && opened.type === "session");
  const refusedForCharacters = (name: string) => {
    // A try-lock: granted or refused, and a grant is left at once (the table stays small).
    const result = table.apply({ type: "enter", secretHash: SECRET_HASH, name, session: opened.session, mode: "exclusive", waitMs: 0, lockDelayMs: 0 }, 0).result;
    if (result.ok && result.type === "granted") {
      table.apply({ type: "leave", secretHash: SECRET_HASH, name, session: opened.session, token: result.grant.token }, 0);
    }
    return !result.ok && result.error.message === "lock name may contain only A-Z a-z 0-9 . _ : / -";
  };
  let accepted = 0;
  for (let code = 0; code <= 0xffff; code++) {
    const character = String.fromCharCode(code);
    for (const name of [character, `a${character}b`]) {
      assert.equal(refusedForCharacters(name), !pattern.test(name), `name ${JSON.stringify(name)}`);
    }
    if (pattern.test(character)) accepted += 1;
  }
  assert.equal(accepted, 26 + 26 + 10 + 5, "the pattern's 67 characters");
  for (const name of ["\u{1F512}", "a\u{10000}", "ok\n", "x y"]) assert.ok(refusedForCharacters(name), JSON.stringify(name));
});
