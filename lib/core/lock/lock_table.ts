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
 */
import { assert, AssertionError, assertNever } from "../assert.ts";
import type { ErrorCode } from "../../wire/errors.ts";
import type { Settings } from "../../settings.ts";
import { OwnerCounts, ownerKey, ownerProblem, SECRET_MISMATCH, secretHashProblem, secretMatches } from "./session_owners.ts";
import { EXPIRE_BATCH_MAX, LeaseClock } from "./session_leases.ts";
import { packCallId, packedOrNone } from "./call_id.ts";
import { SessionLocks } from "./session_locks.ts";
import type { Command, Effect, Grant, Mode, Output, Result } from "./table_commands.ts";
export type { Command, Effect, Grant, Mode, Output, Result };
import {
  appended,
  BORN,
  copyOfLock,
  copyOfSession,
  heldOf,
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
  withHolder,
  withoutHolder,
} from "./lock_state.ts";
// The records are the table's API too: importers of the table keep importing them from here.
export { BORN, copyOfLock, copyOfSession, LockState };
export type { Holder, HolderCopy, LockCopy, Session, SessionCopy, Waiter, WaiterCopy };

/** The limits the table enforces; a subset of Settings so tests can pass small values. */
export type LockTableLimits = Pick<
  Settings,
  | "sessionTtlMinMs"
  | "sessionTtlMaxMs"
  | "sessionsMax"
  | "locksMax"
  | "waitersPerLockMax"
  | "lockNameLengthMax"
  | "lockDelayMaxMs"
  | "waitMaxMs"
  | "leftCallsPerSessionMax"
>;

/** Longest call id an enter may carry: a UUID is 36; this bounds what a session's record holds. */
export const CALL_ID_LENGTH_MAX = 128;

export interface LockTableOptions {
  limits: LockTableLimits;
  /** Prefix of session ids, chosen by the driver per server incarnation so ids never repeat. */
  sessionIdPrefix: string;
  /** Tokens start above this; a driver without persisted state passes a clock-derived floor. */
  tokenFloor: number;
}

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


/**
 * Told before the table changes or deletes a session or lock (its pre-image is still intact),
 * so a copy in progress can keep the version it must send. Every mutation site of a session's
 * fields (not its `locks` index, which a copy rebuilds) and of a lock calls it first; the
 * consistency tests of table_copy_test.ts and the simulator prove none is missed.
 */
export interface TableWatcher {
  beforeSessionChange(session: Session): void;
  beforeLockChange(lock: LockState): void;
}

const LOCK_NAME_PATTERN = /^[A-Za-z0-9._:/-]+$/;

/** The commands a client sends (refusalBeforeLog); the others are the primary's own. */
const SESSION_COMMANDS = new Set<Command["type"]>(["openSession", "keepAlive", "closeSession", "enter", "leave"]);

function fail(code: ErrorCode, message: string): Output {
  return { result: { ok: false, error: { code, message } }, effects: [] };
}

export class LockTable {
  readonly sessions = new Map<string, Session>();
  readonly locks = new Map<string, LockState>();
  private lastToken: number;
  private sessionSeq = 0;
  private nowMs = 0;
  /** No grant before this (holdGrants): every lock made before it starts with this lock-delay. */
  private grantsFromMs = 0;
  /** A lower bound of every waiter deadline and lock-delay end: ticks are O(1) until it. */
  private dueAtMs = Number.POSITIVE_INFINITY;
  /** The last creation stamp given (see BORN). */
  private bornSeq = 0;
  private watcher: TableWatcher | null = null;
  /** When a session's lease may have lapsed, for the primary's `lapsedSessions` (session_leases.ts). */
  private readonly leases = new LeaseClock();
  /** Sessions and waiting enters per owner (derived: kept in step with sessions and queues). */
  readonly owners = new OwnerCounts();
  /** The empty table refusalBeforeLog runs commands on (made at its first use, kept while empty). */
  private dryRunTable: LockTable | undefined;

  constructor(private readonly options: LockTableOptions) {
    assert(Number.isSafeInteger(options.tokenFloor) && options.tokenFloor >= 0, "tokenFloor must be a safe integer");
    this.lastToken = options.tokenFloor;
  }

  /** The time of the last command applied (the table's own clock reading, from its driver). */
  get clockMs(): number {
    return this.nowMs;
  }

  /** Whether a tick at `nowMs` could change anything (a wait deadline or lock-delay is due). */
  isDue(nowMs: number): boolean {
    return nowMs >= this.dueAtMs;
  }

  /** The highest fencing token granted so far. */
  get highestToken(): number {
    return this.lastToken;
  }

  /** The stamp the next session or lock created gets; everything existing has a lower one. */
  get nextBornSeq(): number {
    return this.bornSeq + 1;
  }

  /** Sets (or, with null, removes) the one watcher of changes; a copy in progress (table_copy.ts). */
  watch(watcher: TableWatcher | null): void {
    assert(watcher === null || this.watcher === null, "one copy of a table at a time");
    this.watcher = watcher;
  }

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
    output.effects = effects.concat(output.effects);
    return output;
  }

  /**
   * The primary's keepalive at `nowMs`: renews the session's lease in this table only, as no log
   * entry (session_leases.ts); the table's clock stays the last entry's, as on the backup. The
   * primary expires lapsed sessions first, so a lapsed one is not revived.
   */
  renew(command: Extract<Command, { type: "keepAlive" }>, nowMs: number): Output {
    if (!(Number.isFinite(nowMs) && nowMs >= this.nowMs)) throw new AssertionError(`a renewal at ${nowMs} before the table's clock ${this.nowMs}`);
    return this.renewed(command.session, this.keepAlive(command, nowMs));
  }

  /** The primary's question: sessions whose lease lapsed at `nowMs`, to name in an `expire` entry. */
  lapsedSessions(nowMs: number, max = EXPIRE_BATCH_MAX): string[] {
    return this.leases.lapsed(this.sessions.values(), nowMs, max);
  }

  /** Notes the lease end a keepalive set (read back from the session, whatever set it). */
  private renewed(sessionId: string, output: Output): Output {
    const session = this.sessions.get(sessionId);
    if (output.result.ok && session) this.leases.note(session.expiresAtMs);
    return output;
  }

  /**
   * The refusal `apply` would give `command` whatever is applied before it, or undefined: fields
   * out of the limits (every `bad_request` of the table is checked before it looks at any
   * state), or a session this table does not have (only openSession makes one, so it stays
   * unknown to every command applied before another openSession). Found by a dry run on an
   * empty table with the same limits, so the answer is `apply`'s own, in its order of checks;
   * this table does not change. LockReplica.clientRequest refuses such a command without logging
   * it (finding 1, docs/security.md "Fuzzing"). Also a session this table has whose secret the
   * command does not present (finding 1c: an outsider's guesses would each take a log entry,
   * replicated and with a durable log fsynced): a session's secret never changes, so every
   * command before it leaves it refused, as `forbidden` (or, after a close or an expiry before
   * it, as `session_not_found`: a refusal either way, nothing changes).
   */
  refusalBeforeLog(command: Command): Output | undefined {
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

  private openSession(command: Extract<Command, { type: "openSession" }>): Output {
    const { ttlMs, secretHash, owner } = command;
    const { sessionTtlMinMs, sessionTtlMaxMs, sessionsMax } = this.options.limits;
    if (!Number.isSafeInteger(ttlMs) || ttlMs < sessionTtlMinMs || ttlMs > sessionTtlMaxMs) {
      return fail("bad_request", `ttlMs must be an integer within ${sessionTtlMinMs}..${sessionTtlMaxMs}`);
    }
    const problem = secretHashProblem(secretHash) ?? ownerProblem(owner, command.ownerSessionsMax, "ownerSessionsMax");
    if (problem) return fail("bad_request", problem);
    if (this.sessions.size >= sessionsMax) {
      return fail("limit_reached", `at most ${sessionsMax} sessions`);
    }
    const ownerRefusal = this.owners.sessionRefusal(ownerKey(owner), command.ownerSessionsMax);
    if (ownerRefusal) return { result: { ok: false, error: ownerRefusal }, effects: [] };
    this.sessionSeq += 1;
    const id = `${this.options.sessionIdPrefix}${this.sessionSeq}`;
    assert(!this.sessions.has(id), `session id ${id} reused`);
    const session: Session = {
      born: ++this.bornSeq,
      id,
      ttlMs,
      createdAtMs: this.nowMs,
      expiresAtMs: this.nowMs + ttlMs,
      locks: new SessionLocks(),
      leftCalls: [],
      secretHash,
    };
    if (owner !== undefined) session.owner = owner;
    this.sessions.set(id, session);
    this.owners.sessionOpened(ownerKey(owner));
    this.leases.note(session.expiresAtMs);
    return { result: { ok: true, type: "session", session: id, ttlMs, expiresAtMs: session.expiresAtMs, secretHash }, effects: [] };
  }

  /** The live session a command acts on, or the refusal (unknown, or the secret does not match). */
  private sessionFor(sessionId: string, secretHash: string): Session | Output {
    const session = this.sessions.get(sessionId);
    if (!session) return fail("session_not_found", `session ${sessionId} is unknown or expired`);
    if (!secretMatches(session.secretHash, secretHash)) return { result: { ok: false, error: SECRET_MISMATCH }, effects: [] };
    return session;
  }

  private keepAlive(command: Extract<Command, { type: "keepAlive" }>, nowMs = this.nowMs): Output {
    const sessionId = command.session;
    const session = this.sessionFor(sessionId, command.secretHash);
    if ("result" in session) return session;
    this.watcher?.beforeSessionChange(session);
    session.expiresAtMs = nowMs + session.ttlMs;
    // session.locks also names the locks it waits for: only those it holds are answered.
    const held = [...session.locks].filter((lock) => lock.holderOf(sessionId) !== undefined).map((lock) => lock.name).sort();
    return {
      result: { ok: true, type: "session", session: sessionId, ttlMs: session.ttlMs, expiresAtMs: session.expiresAtMs, held },
      effects: [],
    };
  }

  /**
   * The primary's decision that these sessions' leases lapsed (an id it no longer has: nothing).
   * All go before any lock they free is granted: a lapsed waiter must not get one on the way.
   */
  private expire(ids: readonly string[], effects: Effect[]): Output {
    const touched = new Set<LockState>();
    for (const id of ids) {
      const session = this.sessions.get(id);
      if (!session) continue;
      const released = this.dropSession(session, "expired", effects, touched);
      effects.push({ type: "sessionExpired", session: id, released });
    }
    this.promoteAll(touched, effects);
    return { result: { ok: true, type: "ticked" }, effects: [] };
  }

  private closeSession(command: Extract<Command, { type: "closeSession" }>, effects: Effect[]): Output {
    const sessionId = command.session;
    const session = this.sessionFor(sessionId, command.secretHash);
    if ("result" in session) return session;
    const touched = new Set<LockState>();
    const released = this.dropSession(session, "closed", effects, touched);
    this.promoteAll(touched, effects);
    return { result: { ok: true, type: "closed", session: sessionId, released }, effects: [] };
  }

  /**
   * No lease may end earlier than the old primary could have let it, and the new primary cannot
   * know when the last keepalive reached the old one: every session gets its whole TTL again.
   * Waits get a TTL too, since their clients must find the new primary and ask again.
   */
  private holdGrants(untilMs: number): Output {
    assert(Number.isFinite(untilMs), "holdGrants needs a time");
    this.grantsFromMs = Math.max(this.grantsFromMs, untilMs);
    // The locks there are (none in a fresh table) wait too; the tick at the end grants their queues.
    for (const lock of this.locks.values()) {
      this.watcher?.beforeLockChange(lock);
      lock.delayUntilMs = Math.max(lock.delayUntilMs, this.grantsFromMs);
    }
    this.noteDue(this.grantsFromMs);
    return { result: { ok: true, type: "ticked" }, effects: [] };
  }

  /** When grants may start (holdGrants; 0 when never held). */
  get grantsFrom(): number {
    return this.grantsFromMs;
  }

  private restartLeases(): Output {
    for (const session of this.sessions.values()) {
      this.watcher?.beforeSessionChange(session);
      session.expiresAtMs = this.nowMs + session.ttlMs;
      this.leases.note(session.expiresAtMs);
    }
    for (const lock of this.locks.values()) {
      if (lock.queue.length > 0) this.watcher?.beforeLockChange(lock);
      for (const waiter of lock.queue) {
        const ttlMs = this.sessions.get(waiter.session)?.ttlMs ?? 0;
        waiter.deadlineMs = Math.max(waiter.deadlineMs, this.nowMs + ttlMs);
        this.noteDue(waiter.deadlineMs);
      }
    }
    return { result: { ok: true, type: "leasesRestarted", sessions: this.sessions.size }, effects: [] };
  }

  private enter(command: Extract<Command, { type: "enter" }>): Output {
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

  private leave(command: Extract<Command, { type: "leave" }>, effects: Effect[]): Output {
    const { name } = command;
    const nameProblem = this.checkName(name);
    if (nameProblem) return fail("bad_request", nameProblem);
    if (command.token !== undefined && (!Number.isSafeInteger(command.token) || command.token < 0)) {
      return fail("bad_request", "token must be a non-negative integer");
    }
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
    lock.held = NONE;
    // The next grant's token is above every token the removed holders could still present.
    this.lastToken += 1;
    assert(Number.isSafeInteger(this.lastToken), "fencing token overflow");
    this.promote(lock, effects);
    this.forgetIfIdle(lock);
    return { result: { ok: true, type: "forceReleased", name, tokens }, effects: [] };
  }

  /** Grants from the head of the queue while the head is compatible with the holders. */
  private promote(lock: LockState, effects: Effect[]): void {
    if (this.nowMs < lock.delayUntilMs) return;
    if (lock.queue.length > 0) this.watcher?.beforeLockChange(lock);
    // Each pass removes the head or stops, so the loop is bounded by the queue length.
    while (lock.queue.length > 0) {
      const head = lock.queue[0];
      const session = this.sessions.get(head.session);
      if (!session || head.deadlineMs <= this.nowMs) {
        // Never grant to a dead waiter (etcd #11456): the primary logs an `expire` of every lapsed
        // lease before each entry (LockReplica.append), so a session here is live on its clock.
        lock.queue.shift();
        if (session) this.owners.waiterRemoved(ownerKey(session.owner));
        session?.locks.delete(lock);
        const reason = !session ? "sessionDead" : "deadline";
        // A wait that ended at its deadline is a call its session left: a late copy of one of its
        // rounds must not queue it again.
        if (session && reason === "deadline") this.recordLeft(session, head.callId);
        effects.push({ type: "waitEnded", name: lock.name, session: head.session, reason });
        continue;
      }
      if (!this.compatible(lock, head.mode)) return;
      lock.queue.shift();
      this.owners.waiterRemoved(ownerKey(session.owner));
      session.locks.delete(lock); // re-added by grant
      effects.push({ type: "granted", grant: this.grant(lock, session, head.mode, head.lockDelayMs, head.callId) });
      if (head.mode === "exclusive") return;
    }
  }

  private grant(lock: LockState, session: Session, mode: Mode, lockDelayMs: number, callId: string | undefined): Grant {
    // On every grant: the messages are built only when they fail.
    if (!this.compatible(lock, mode)) throw new AssertionError(`grant of ${lock.name} would break mutual exclusion`);
    if (!(this.nowMs >= lock.delayUntilMs)) throw new AssertionError(`grant of ${lock.name} inside its lock-delay`);
    this.watcher?.beforeLockChange(lock);
    this.lastToken += 1;
    assert(Number.isSafeInteger(this.lastToken), "fencing token overflow");
    withHolder(lock, { session: session.id, token: this.lastToken, mode, sinceMs: this.nowMs, lockDelayMs, callId });
    session.locks.add(lock);
    return { name: lock.name, session: session.id, token: this.lastToken, mode };
  }

  private compatible(lock: LockState, mode: Mode): boolean {
    if (this.nowMs < lock.delayUntilMs) return false;
    const held = lock.held;
    if (!Array.isArray(held)) return mode === "shared" && held.mode === "shared";
    return held.length === 0 || (mode === "shared" && held.every((h) => h.mode === "shared"));
  }

  /** Ends waits whose deadline came and lock-delays that ended; O(1) while nothing is due. */
  private expireDue(effects: Effect[]): void {
    if (this.nowMs < this.dueAtMs) return;
    let nextDueMs = Number.POSITIVE_INFINITY;
    for (const lock of [...this.locks.values()]) {
      const kept = lock.queue.filter((waiter) => {
        if (waiter.deadlineMs > this.nowMs) return true;
        const session = this.sessions.get(waiter.session);
        session?.locks.delete(lock);
        if (session) this.owners.waiterRemoved(ownerKey(session.owner));
        if (session) this.recordLeft(session, waiter.callId); // as in promote: the call is over
        effects.push({ type: "waitEnded", name: lock.name, session: waiter.session, reason: "deadline" });
        return false;
      });
      const changed = kept.length !== lock.queue.length;
      if (changed) {
        this.watcher?.beforeLockChange(lock);
        lock.queue = orNone(kept);
      }
      if (changed || lock.delayUntilMs <= this.nowMs) this.promote(lock, effects);
      for (const waiter of lock.queue) nextDueMs = Math.min(nextDueMs, waiter.deadlineMs);
      if (lock.delayUntilMs > this.nowMs) nextDueMs = Math.min(nextDueMs, lock.delayUntilMs);
      this.forgetIfIdle(lock);
    }
    this.dueAtMs = nextDueMs;
  }

  /**
   * Removes a session: releases what it holds (with lock-delay on expiry), drops its waits. The
   * locks it was in go to `touched`, for `promoteAll` once every session that goes has gone.
   */
  private dropSession(session: Session, reason: "expired" | "closed", effects: Effect[], touched: Set<LockState>): string[] {
    const released: string[] = [];
    this.watcher?.beforeSessionChange(session);
    // In name order: the index's own order differs between a table and its copy (table_copy.ts),
    // and the answer's `released` list must not.
    for (const lock of [...session.locks].sort(byName)) {
      const name = lock.name;
      assert(this.locks.get(name) === lock, `session ${session.id} indexes a lock ${name} the table does not have`);
      this.watcher?.beforeLockChange(lock);
      const holder = lock.holderOf(session.id);
      if (holder) {
        withoutHolder(lock, holder);
        released.push(name);
        effects.push({ type: "released", name, session: session.id, token: holder.token, reason });
        if (reason === "expired" && holder.lockDelayMs > 0) {
          lock.delayUntilMs = Math.max(lock.delayUntilMs, this.nowMs + holder.lockDelayMs);
          this.noteDue(lock.delayUntilMs);
        }
      }
      const waiting = lock.queue.length;
      lock.queue = orNone(lock.queue.filter((w) => w.session !== session.id));
      this.owners.waiterRemoved(ownerKey(session.owner), waiting - lock.queue.length);
      if (lock.queue.length !== waiting) {
        effects.push({ type: "waitEnded", name, session: session.id, reason: "sessionDead" });
      }
      touched.add(lock);
    }
    this.sessions.delete(session.id);
    this.owners.sessionDropped(ownerKey(session.owner));
    session.locks.clear();
    return released;
  }

  private promoteAll(locks: Iterable<LockState>, effects: Effect[]): void {
    for (const lock of locks) {
      this.promote(lock, effects);
      this.forgetIfIdle(lock);
    }
  }

  /** A newer call of the session takes over a grant or a queue place: the older call is over. */
  private supersedeCall(session: Session, entry: Holder | Waiter, callId: string | undefined): void {
    // The entry's lock was announced to the watcher by `enter`.
    if (callId !== undefined && entry.callId !== undefined && entry.callId !== callId) this.recordLeft(session, entry.callId);
    // An enter without a call id keeps the one it has.
    if (callId !== undefined) entry.callId = callId;
  }

  /** Remembers that the session left `callId`'s call, forgetting the oldest beyond the limit. */
  private recordLeft(session: Session, callId: string | undefined): void {
    if (callId === undefined || session.leftCalls.includes(callId)) return;
    this.watcher?.beforeSessionChange(session);
    session.leftCalls.push(callId);
    const max = this.options.limits.leftCallsPerSessionMax;
    if (session.leftCalls.length > max) session.leftCalls.splice(0, session.leftCalls.length - max);
  }

  private forgetIfIdle(lock: LockState): void {
    if (lock.holderCount === 0 && lock.queue.length === 0 && lock.delayUntilMs <= this.nowMs) {
      this.watcher?.beforeLockChange(lock);
      this.locks.delete(lock.name);
    }
  }

  private noteDue(atMs: number): void {
    this.dueAtMs = Math.min(this.dueAtMs, atMs);
  }

  private checkName(name: unknown): string | undefined {
    const max = this.options.limits.lockNameLengthMax;
    if (typeof name !== "string" || name.length === 0) return "lock name must be a non-empty string";
    if (name.length > max) return `lock name is longer than ${max} characters`;
    if (!LOCK_NAME_PATTERN.test(name)) return "lock name may contain only A-Z a-z 0-9 . _ : / -";
    return undefined;
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
    const lock = new LockState(++this.bornSeq, l.name, heldOf(holders), orNone(queue), l.delayUntilMs);
    this.locks.set(lock.name, lock);
    for (const entry of [...holders, ...queue]) this.sessions.get(entry.session)!.locks.add(lock);
    for (const waiter of lock.queue) this.owners.waiterAdded(ownerKey(this.sessions.get(waiter.session)!.owner));
  }
}

/** Orders locks by name (a session's index is in no particular order). */
function byName(a: LockState, b: LockState): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}
