/**
 * The lock table and its sessions as a pure, deterministic state machine.
 *
 * Commands and the current time come in as arguments; a result and effects come out. Nothing
 * here reads a clock, sets a timer, draws a random number or does I/O, so the backup can replay
 * the primary's commands and the simulator can drive it under virtual time.
 *
 * Semantics (see README "Lock semantics"):
 * - FIFO per lock. Shared holders coexist; a queued exclusive request blocks later shared ones.
 * - Fencing tokens come from one counter over all grants, so they strictly increase per lock.
 * - A session whose keepalives stop for its TTL is dead: its locks pass to the next live waiter,
 *   its queued requests are dropped. When its lease lapsed is the primary's decision, logged as
 *   an `expire` entry (session_leases.ts): keepalives renew the primary's table only, so a
 *   backup's `expiresAtMs` is stale, and no entry's time expires a session by itself.
 * - A lock freed by expiry (not by leave) is not granted again before its holder's lock-delay.
 * - An enter may carry a call id, one per client call (the same on every long-poll round and
 *   retry of that call). A leave of the call's grant or wait records the id on the session (the
 *   last `leftCallsPerSessionMax`), and an enter of a recorded call changes nothing: a duplicate
 *   or a late retry that arrives after its own leave must not grant again to a session that
 *   believes it left (docs/simulator.md, finding 12).
 *
 * The table is one class in layers of one concept each, every layer a file that extends the one
 * before: table_base.ts (the state and shared bookkeeping), lock_grants.ts (a lock's queue,
 * grants, fencing tokens and lock-delay), table_sessions.ts (sessions and their leases), and
 * this file (the commands on a lock, `apply`, the refusal before the log, and copies). The
 * records are in lock_state.ts.
 */
import { assert, AssertionError, assertNever } from "../assert.ts";
import { ownerKey, ownerProblem, SECRET_MISMATCH, secretMatches } from "./session_owners.ts";
import { packCallId, packedOrNone } from "./call_id.ts";
import { SessionLocks } from "./session_locks.ts";
import type { Command, Effect, Grant, Mode, Output, Result } from "./table_commands.ts";
export type { Command, Effect, Grant, Mode, Output, Result };
import {
  appended,
  BORN,
  copyOfLock,
  copyOfSession,
  type Holder,
  type HolderCopy,
  holderFromCopy,
  type LockCopy,
  LockState,
  NONE,
  orNone,
  type Session,
  type SessionCopy,
  type Waiter,
  type WaiterCopy,
  waiterFromCopy,
  withHolders,
  withoutHolders,
  withoutHolder,
} from "./lock_state.ts";
import { CALL_ID_LENGTH_MAX, fail, type LockTableLimits, type LockTableOptions, type TableWatcher } from "./table_base.ts";
import { TableSessions } from "./table_sessions.ts";
// The records, the limits and the watcher are the table's API too: importers of the table keep
// importing them from here.
export { BORN, CALL_ID_LENGTH_MAX, copyOfLock, copyOfSession, LockState };
export type { Holder, HolderCopy, LockCopy, LockTableLimits, LockTableOptions, Session, SessionCopy, TableWatcher, Waiter, WaiterCopy };

/** The table's scalars: what a copy carries besides its sessions and locks. */
export interface LockTableHeader {
  nowMs: number;
  lastToken: number;
  sessionSeq: number;
  sessionIdPrefix: string;
  /** No grant before this (a fresh table's grace, holdGrants); absent when never held. */
  grantsFromMs?: number;
}


/** Plain-data copy of the whole table: what the backup loads and `status` shows. */
export interface LockTableSnapshot extends LockTableHeader {
  sessions: SessionCopy[];
  locks: LockCopy[];
}

/** The commands a client sends (refusalBeforeLog); the others are the primary's own. */
const SESSION_COMMANDS = new Set<Command["type"]>(["openSession", "keepAlive", "closeSession", "enter", "leave"]);

export class LockTable extends TableSessions {
  /** The empty table refusalBeforeLog runs commands on (made at its first use, kept while empty). */
  private dryRunTable: LockTable | undefined;

  /** Applies one command at time `nowMs` (monotonic, never smaller than the previous call's). */
  apply(command: Command, nowMs: number): Output {
    assert(Number.isFinite(nowMs), "nowMs must be finite");
    // On every command: the message (two fractional times as text) is built only when it fails.
    if (!(nowMs >= this.nowMs)) throw new AssertionError(`time went backwards: ${nowMs} < ${this.nowMs}`);
    this.nowMs = nowMs;
    const effects: Effect[] = [];
    // Wait deadlines and lock-delay ends run first so every command sees only live waiters; after
    // an `expire`, so a lock whose delay ends now does not go to a session it names.
    const expiring = command.type === "expire";
    if (!expiring) this.expireDue(effects);
    const output = this.dispatch(command, effects);
    if (expiring) this.expireDue(effects);
    // Most commands have effects on one side only (a grant its own, a leave's release in
    // `effects`, a refusal none): no third array then. Both are this call's own, never shared.
    if (effects.length > 0) output.effects = output.effects.length === 0 ? effects : effects.concat(output.effects);
    return output;
  }

  /**
   * The refusal `apply` would give `command` whatever is applied before it, or undefined: fields
   * out of the limits (every `bad_request` of the table is checked before it looks at any
   * state), or a session this table does not have (only openSession makes one, so it stays
   * unknown to every command applied before another openSession). Found by a dry run on an
   * empty table with the same limits, so the answer is `apply`'s own, in its order of checks
   * (enter and leave: by the field checks `apply` runs first, then the session, the same answer);
   * this table does not change. LockReplica.clientRequest refuses such a command without logging
   * it (finding 1, docs/security.md "Fuzzing"). Also a session this table has whose secret the
   * command does not present (finding 1c: an outsider's guesses would each take a log entry,
   * replicated and with a durable log fsynced): a session's secret never changes, so every
   * command before it leaves it refused, as `forbidden` (or, after a close or an expiry before
   * it, as `session_not_found`: a refusal either way, nothing changes).
   */
  refusalBeforeLog(command: Command): Output | undefined {
    if (command.type === "enter" || command.type === "leave") {
      // W1's two commands, without the dry run: apply's own field checks, then what the dry run's
      // session_not_found leads to below, which is `sessionFor` on this table (not found: that same
      // refusal; another secret: forbidden). The dry runs of an enter and a leave cost 157 ns
      // under Bun, these 100 (docs/bench.md, "Sixth pass"); lock_table_test compares both on every field.
      const fieldsRefusal = command.type === "enter" ? this.enterFieldsRefusal(command) : this.leaveFieldsRefusal(command);
      if (fieldsRefusal) return fieldsRefusal;
      const session = this.sessionFor(command.session, command.secretHash);
      return "result" in session ? session : undefined;
    }
    if (!SESSION_COMMANDS.has(command.type)) return undefined;
    // One empty table for the dry runs while they leave it empty: a refused command changes no
    // table (its checks come before any change; an empty one has nothing due), so the next dry
    // run sees a table as new. One that made a session (an accepted openSession) is dropped.
    // A new table per client request was about a tenth of a lone primary's core (docs/bench.md).
    const empty = this.dryRunTable ?? new LockTable(this.options);
    const dryRun = empty.apply(command, this.nowMs);
    this.dryRunTable = !dryRun.result.ok && empty.sessions.size === 0 && empty.locks.size === 0 ? empty : undefined;
    if (dryRun.result.ok) return undefined;
    const code = dryRun.result.error.code;
    if (code === "bad_request") return dryRun;
    if (code !== "session_not_found" || !("session" in command)) return undefined;
    const session = this.sessions.get(command.session);
    if (session === undefined) return dryRun;
    if (!secretMatches(session.secretHash, command.secretHash)) return { result: { ok: false, error: SECRET_MISMATCH }, effects: [] };
    return undefined;
  }

  private dispatch(command: Command, effects: Effect[]): Output {
    switch (command.type) {
      case "openSession":
        return this.openSession(command);
      case "keepAlive": // logged only by primaries older than session_leases.ts; replays as it did
        return this.renewed(command.session, this.keepAlive(command));
      case "closeSession":
        return this.closeSession(command, effects);
      case "enter":
        return this.enter(command);
      case "leave":
        return this.leave(command, effects);
      case "forceRelease":
        return this.forceRelease(command.name, effects);
      case "tick":
        return { result: { ok: true, type: "ticked" }, effects: [] };
      case "expire":
        return this.expire(command.sessions, effects);
      case "restartLeases":
        return this.restartLeases();
      case "holdGrants":
        return this.holdGrants(command.untilMs);
      default:
        return assertNever(command, "command");
    }
  }

  /** An enter's `bad_request` (its fields out of the limits, in enter's order of checks), or undefined. */
  private enterFieldsRefusal(command: Extract<Command, { type: "enter" }>): Output | undefined {
    const { name, mode, waitMs, lockDelayMs, callId } = command;
    const limits = this.options.limits;
    const nameProblem = this.checkName(name);
    if (nameProblem) return fail("bad_request", nameProblem);
    if (mode !== "exclusive" && mode !== "shared") return fail("bad_request", "mode must be exclusive or shared");
    if (!Number.isSafeInteger(waitMs) || waitMs < 0 || waitMs > limits.waitMaxMs) {
      return fail("bad_request", `waitMs must be an integer within 0..${limits.waitMaxMs}`);
    }
    if (!Number.isSafeInteger(lockDelayMs) || lockDelayMs < 0 || lockDelayMs > limits.lockDelayMaxMs) {
      return fail("bad_request", `lockDelayMs must be an integer within 0..${limits.lockDelayMaxMs}`);
    }
    if (callId !== undefined && (typeof callId !== "string" || callId.length === 0 || callId.length > CALL_ID_LENGTH_MAX)) {
      return fail("bad_request", `callId must be a string of 1..${CALL_ID_LENGTH_MAX} characters`);
    }
    const limitProblem = ownerProblem(undefined, command.ownerWaitersMax, "ownerWaitersMax");
    if (limitProblem) return fail("bad_request", limitProblem);
    return undefined;
  }

  private enter(command: Extract<Command, { type: "enter" }>): Output {
    const { name, mode, waitMs, lockDelayMs, callId } = command;
    const limits = this.options.limits;
    const fieldsRefusal = this.enterFieldsRefusal(command);
    if (fieldsRefusal) return fieldsRefusal;
    const session = this.sessionFor(command.session, command.secretHash);
    if ("result" in session) return session;
    const call = packedOrNone(callId);
    if (call !== undefined && session.leftCalls.includes(call)) {
      // A duplicate or late retry of a call the client already left: granting it would give the
      // session a lock nobody believes it holds.
      return { result: { ok: true, type: "notGranted", name, position: 0, callLeft: true }, effects: [] };
    }

    const existing = this.locks.get(name);
    // Every branch below may change the lock (a call id, a deadline, a grant, a queue place).
    if (existing) this.watcher?.beforeLockChange(existing);
    const held = existing?.holderOf(session.id);
    if (held) {
      if (held.mode !== mode) return fail("mode_conflict", `session holds ${name} in ${held.mode} mode`);
      // Entering a lock the session already holds returns the same grant, now the newest call's:
      // its leave is the one that ends the grant, and the older call is over (a late copy of it
      // must not take the lock again after that leave).
      this.supersedeCall(session, held, call);
      return { result: { ok: true, type: "granted", grant: { name, session: session.id, token: held.token, mode } }, effects: [] };
    }
    const queuedIndex = existing ? existing.queue.findIndex((w) => w.session === session.id) : -1;
    if (existing && queuedIndex >= 0) {
      // Asking again keeps the place in the queue; it only moves the deadline (the long-poll).
      const waiter = existing.queue[queuedIndex];
      if (waiter.mode !== mode) return fail("mode_conflict", `session waits for ${name} in ${waiter.mode} mode`);
      waiter.deadlineMs = this.nowMs + waitMs;
      this.supersedeCall(session, waiter, call);
      this.noteDue(waiter.deadlineMs);
      return { result: { ok: true, type: "waiting", name, position: queuedIndex + 1 }, effects: [] };
    }
    if (!existing && this.locks.size >= limits.locksMax) {
      return fail("limit_reached", `at most ${limits.locksMax} locks`);
    }
    // A lock made during a grace waits for its end like a lock-delay (its queue is granted then).
    const lock = existing ?? new LockState(++this.bornSeq, name, NONE, NONE, this.nowMs < this.grantsFromMs ? this.grantsFromMs : 0);
    if (!existing && lock.delayUntilMs > 0) this.noteDue(lock.delayUntilMs);
    if (lock.queue.length === 0 && this.compatible(lock, mode)) {
      if (!existing) this.locks.set(name, lock);
      const grant = this.grant(lock, session, mode, lockDelayMs, call);
      // Every new grant is also an effect, so drivers log and replicas observe all of them alike.
      return { result: { ok: true, type: "granted", grant }, effects: [{ type: "granted", grant }] };
    }
    if (waitMs === 0) {
      // A try-lock that fails changes nothing.
      return { result: { ok: true, type: "notGranted", name, position: lock.queue.length + 1 }, effects: [] };
    }
    if (lock.queue.length >= limits.waitersPerLockMax) {
      return fail("limit_reached", `at most ${limits.waitersPerLockMax} waiters on ${name}`);
    }
    const ownerRefusal = this.owners.waiterRefusal(ownerKey(session.owner), command.ownerWaitersMax);
    if (ownerRefusal) return { result: { ok: false, error: ownerRefusal }, effects: [] };
    if (!existing) this.locks.set(name, lock);
    const waiter: Waiter = { session: session.id, mode, queuedAtMs: this.nowMs, deadlineMs: this.nowMs + waitMs, lockDelayMs, callId: call };
    lock.queue = appended(lock.queue, waiter);
    this.owners.waiterAdded(ownerKey(session.owner));
    session.locks.add(lock);
    this.noteDue(this.nowMs + waitMs);
    // Expiry ran first, so everything ahead is live and the request cannot be granted yet; a lock
    // in its lock-delay is granted by the tick that ends the delay.
    return { result: { ok: true, type: "waiting", name, position: lock.queue.length }, effects: [] };
  }

  /** A leave's `bad_request` (its fields out of the limits, in leave's order of checks), or undefined. */
  private leaveFieldsRefusal(command: Extract<Command, { type: "leave" }>): Output | undefined {
    const nameProblem = this.checkName(command.name);
    if (nameProblem) return fail("bad_request", nameProblem);
    if (command.token !== undefined && (!Number.isSafeInteger(command.token) || command.token < 0)) {
      return fail("bad_request", "token must be a non-negative integer");
    }
    return undefined;
  }

  private leave(command: Extract<Command, { type: "leave" }>, effects: Effect[]): Output {
    const { name } = command;
    const fieldsRefusal = this.leaveFieldsRefusal(command);
    if (fieldsRefusal) return fieldsRefusal;
    const session = this.sessionFor(command.session, command.secretHash);
    if ("result" in session) return session;
    const lock = this.locks.get(name);
    if (!lock) return fail("lock_not_found", `lock ${name} is not held or waited for`);
    this.watcher?.beforeLockChange(lock);
    const holder = lock.holderOf(session.id);
    if (holder) {
      if (command.token !== holder.token) {
        return fail("not_holder", `session ${session.id} holds ${name} with another token`);
      }
      withoutHolder(lock, holder);
      session.locks.delete(lock);
      this.recordLeft(session, holder.callId);
      effects.push({ type: "released", name, session: session.id, token: holder.token, reason: "leave" });
      this.promote(lock, effects);
      this.forgetIfIdle(lock);
      return { result: { ok: true, type: "left", name, wasHolder: true }, effects: [] };
    }
    const waiterIndex = lock.queue.findIndex((w) => w.session === session.id);
    if (waiterIndex >= 0 && command.token === undefined) {
      // A waiter that gives up withdraws its request; those behind it may now be grantable.
      const [waiter] = lock.queue.splice(waiterIndex, 1);
      this.owners.waiterRemoved(ownerKey(session.owner));
      session.locks.delete(lock);
      this.recordLeft(session, waiter.callId);
      effects.push({ type: "waitEnded", name, session: session.id, reason: "withdrawn" });
      this.promote(lock, effects);
      this.forgetIfIdle(lock);
      return { result: { ok: true, type: "left", name, wasHolder: false }, effects: [] };
    }
    return fail("not_holder", `session ${session.id} does not hold ${name}`);
  }

  private forceRelease(name: string, effects: Effect[]): Output {
    const nameProblem = this.checkName(name);
    if (nameProblem) return fail("bad_request", nameProblem);
    const lock = this.locks.get(name);
    if (!lock || lock.holderCount === 0) return fail("lock_not_found", `lock ${name} has no holder`);
    this.watcher?.beforeLockChange(lock);
    const tokens: number[] = [];
    for (const holder of lock.holders) {
      const session = this.sessions.get(holder.session);
      assert(session !== undefined, `lock ${name} held by missing session ${holder.session}`);
      this.watcher?.beforeSessionChange(session);
      session.locks.delete(lock);
      // A late copy of the holder's enter must not take the lock back.
      this.recordLeft(session, holder.callId);
      tokens.push(holder.token);
      effects.push({ type: "released", name, session: session.id, token: holder.token, reason: "forced" });
      // As if the holder had died: it may still be writing, so nobody gets the lock for its lock-delay.
      if (holder.lockDelayMs > 0) {
        lock.delayUntilMs = Math.max(lock.delayUntilMs, this.nowMs + holder.lockDelayMs);
        this.noteDue(lock.delayUntilMs);
      }
    }
    withoutHolders(lock);
    // The next grant's token is above every token the removed holders could still present.
    this.lastToken += 1;
    assert(Number.isSafeInteger(this.lastToken), "fencing token overflow");
    this.promote(lock, effects);
    this.forgetIfIdle(lock);
    return { result: { ok: true, type: "forceReleased", name, tokens }, effects: [] };
  }

  /** The scalars of the table (a streamed copy sends them first). */
  header(): LockTableHeader {
    return {
      nowMs: this.nowMs,
      lastToken: this.lastToken,
      sessionSeq: this.sessionSeq,
      sessionIdPrefix: this.options.sessionIdPrefix,
      ...(this.grantsFromMs > 0 ? { grantsFromMs: this.grantsFromMs } : {}),
    };
  }

  /** A plain-data copy of the whole state (for status, and for the backup to load). */
  snapshot(): LockTableSnapshot {
    return {
      ...this.header(),
      sessions: [...this.sessions.values()].map(copyOfSession),
      locks: [...this.locks.values()].map(copyOfLock),
    };
  }

  /** Rebuilds a table from a snapshot; the result answers every command as the original would. */
  static fromSnapshot(snapshot: LockTableSnapshot, limits: LockTableLimits): LockTable {
    const table = LockTable.fromHeader(snapshot, limits);
    for (const s of snapshot.sessions) table.loadSession(s);
    for (const l of snapshot.locks) table.loadLock(l);
    return table;
  }

  /**
   * An empty table with a copy's scalars, to be filled with `loadSession` (all sessions first)
   * and `loadLock`, in the copy's order (fromSnapshot, and the backup's streamed copy).
   */
  static fromHeader(header: LockTableHeader, limits: LockTableLimits): LockTable {
    const table = new LockTable({ limits, sessionIdPrefix: header.sessionIdPrefix, tokenFloor: header.lastToken });
    table.sessionSeq = header.sessionSeq;
    table.nowMs = header.nowMs;
    table.grantsFromMs = header.grantsFromMs ?? 0;
    table.dueAtMs = Number.NEGATIVE_INFINITY; // recompute on the next command
    return table;
  }

  /** Adds one session of a copy (its lock index fills as its locks are loaded). */
  loadSession(s: SessionCopy): void {
    assert(!this.sessions.has(s.id), `copy has session ${s.id} twice`);
    // Snapshots from before call ids have no leftCalls; from before session secrets, no secretHash.
    const { id, ttlMs, createdAtMs, expiresAtMs } = s;
    const leftCalls = (s.leftCalls ?? []).map(packCallId);
    const session: Session = { born: ++this.bornSeq, id, ttlMs, createdAtMs, expiresAtMs, locks: new SessionLocks(), leftCalls };
    if (s.secretHash !== undefined) session.secretHash = s.secretHash;
    if (s.owner !== undefined) session.owner = s.owner;
    this.sessions.set(id, session);
    this.owners.sessionOpened(ownerKey(s.owner));
  }

  /** Adds one lock of a copy; every session it names must be loaded already. */
  loadLock(l: LockCopy): void {
    assert(!this.locks.has(l.name), `copy has lock ${l.name} twice`);
    // Own entries, spelled out: the backup's copy then has the same compact shapes as the
    // primary's, and each names its session by the session's own id string (not one parsed per
    // entry: 32 bytes more per held lock).
    const sessionIdOf = (entry: HolderCopy | WaiterCopy) => {
      const session = this.sessions.get(entry.session);
      assert(session !== undefined, `snapshot lock ${l.name} names unknown session ${entry.session}`);
      return session.id;
    };
    const holders = l.holders.map((h) => holderFromCopy(h, sessionIdOf(h)));
    const queue = l.queue.map((w) => waiterFromCopy(w, sessionIdOf(w)));
    const lock = new LockState(++this.bornSeq, l.name, NONE, orNone(queue), l.delayUntilMs);
    withHolders(lock, holders);
    this.locks.set(lock.name, lock);
    for (const entry of [...holders, ...queue]) this.sessions.get(entry.session)!.locks.add(lock);
    for (const waiter of lock.queue) this.owners.waiterAdded(ownerKey(this.sessions.get(waiter.session)!.owner));
  }
}
