/**
 * The lock table's state and the bookkeeping every part of it shares (lock_table.ts is the
 * table; this is the first of its layers, see there): its maps of sessions and locks, its clock,
 * the fencing-token counter, creation stamps, the due index that keeps ticks O(1), the one copy
 * watcher, the calls a session left (so a late copy of an enter is answered without granting
 * again), and the check of a lock's name. Split from lock_table.ts by concept (developer guide,
 * rule 1); pure, as the table is.
 */
import { assert } from "../assert.ts";
import type { ErrorCode } from "../../wire/errors.ts";
import type { Settings } from "../../settings.ts";
import { OwnerCounts } from "./session_owners.ts";
import { LeaseClock } from "./session_leases.ts";
import type { Output } from "./table_commands.ts";
import type { Holder, LockState, Session, Waiter } from "./lock_state.ts";

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

/**
 * The characters a lock name may have, [A-Za-z0-9._:/-], by code (1: allowed) below 128: a loop
 * over them costs a third of a regular expression's test per name (12 against 34 ns under Bun, 24
 * against 63 under Deno), and every enter and leave checks its name twice (refusalBeforeLog's dry
 * run, then the entry's apply). lock_table_test compares it with the pattern over every UTF-16 code unit.
 */
const LOCK_NAME_CHARACTERS = (() => {
  const allowed = new Uint8Array(128);
  for (const character of "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:/-") allowed[character.charCodeAt(0)] = 1;
  return allowed;
})();

/** A refusal: the answer of a command that changes nothing. */
export function fail(code: ErrorCode, message: string): Output {
  return { result: { ok: false, error: { code, message } }, effects: [] };
}

/**
 * The fields of the table and the small steps on them that its layers share. A class the
 * layers extend (not objects they are handed) so that every step stays a method of the one
 * table: the simulator's injected bugs (tests/sim_bugs_test.ts) patch them on
 * `LockTable.prototype`, and each call inside the table goes through `this`.
 */
export class TableBase {
  readonly sessions = new Map<string, Session>();
  readonly locks = new Map<string, LockState>();
  protected lastToken: number;
  protected sessionSeq = 0;
  protected nowMs = 0;
  /** No grant before this (holdGrants): every lock made before it starts with this lock-delay. */
  protected grantsFromMs = 0;
  /** A lower bound of every waiter deadline and lock-delay end: ticks are O(1) until it. */
  protected dueAtMs = Number.POSITIVE_INFINITY;
  /** The last creation stamp given (see BORN). */
  protected bornSeq = 0;
  protected watcher: TableWatcher | null = null;
  /** When a session's lease may have lapsed, for the primary's `lapsedSessions` (session_leases.ts). */
  protected readonly leases = new LeaseClock();
  /** Sessions and waiting enters per owner (derived: kept in step with sessions and queues). */
  readonly owners = new OwnerCounts();

  constructor(protected readonly options: LockTableOptions) {
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

  /** A newer call of the session takes over a grant or a queue place: the older call is over. */
  protected supersedeCall(session: Session, entry: Holder | Waiter, callId: string | undefined): void {
    // The entry's lock was announced to the watcher by `enter`.
    if (callId !== undefined && entry.callId !== undefined && entry.callId !== callId) this.recordLeft(session, entry.callId);
    // An enter without a call id keeps the one it has.
    if (callId !== undefined) entry.callId = callId;
  }

  /** Remembers that the session left `callId`'s call, forgetting the oldest beyond the limit. */
  protected recordLeft(session: Session, callId: string | undefined): void {
    if (callId === undefined || session.leftCalls.includes(callId)) return;
    this.watcher?.beforeSessionChange(session);
    session.leftCalls.push(callId);
    const max = this.options.limits.leftCallsPerSessionMax;
    if (session.leftCalls.length > max) session.leftCalls.splice(0, session.leftCalls.length - max);
  }

  protected forgetIfIdle(lock: LockState): void {
    if (lock.holderCount === 0 && lock.queue.length === 0 && lock.delayUntilMs <= this.nowMs) {
      this.watcher?.beforeLockChange(lock);
      this.locks.delete(lock.name);
    }
  }

  protected noteDue(atMs: number): void {
    this.dueAtMs = Math.min(this.dueAtMs, atMs);
  }

  protected checkName(name: unknown): string | undefined {
    const max = this.options.limits.lockNameLengthMax;
    if (typeof name !== "string" || name.length === 0) return "lock name must be a non-empty string";
    if (name.length > max) return `lock name is longer than ${max} characters`;
    for (let i = 0; i < name.length; i++) {
      const code = name.charCodeAt(i);
      if (code >= 128 || LOCK_NAME_CHARACTERS[code] === 0) return "lock name may contain only A-Z a-z 0-9 . _ : / -";
    }
    return undefined;
  }
}
