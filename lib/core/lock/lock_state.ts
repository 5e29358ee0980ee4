/**
 * The lock table's records (lock_table.ts): sessions, locks with their holders and waiters, what
 * copies of them carry, and the few helpers that change a lock's holders and lists. Split from
 * the table when W4's memory work (issue 14) grew it past the size one core file should have;
 * pure, as the table is.
 */
import { assert } from "../assert.ts";
import { packedOrNone, unpackCallId } from "./call_id.ts";
import type { SessionLocks } from "./session_locks.ts";
import type { Mode } from "./table_commands.ts";

export interface Session {
  /** Creation order in this table (hidden: not in snapshots; see `TableWatcher`). */
  [BORN]?: number;
  id: string;
  ttlMs: number;
  createdAtMs: number;
  expiresAtMs: number;
  /** The locks this session holds or waits for (an index, kept in step with the locks; session_locks.ts). */
  locks: SessionLocks;
  /** Call ids of enters this session left (packed: call_id.ts), oldest first, at most `leftCallsPerSessionMax`. */
  leftCalls: string[];
  /**
   * SHA-256 of the secret its opener got (session_owners.ts); every action must present it.
   * Absent only in a session restored from data older than session secrets: nobody can act on it.
   */
  secretHash?: string;
  /** The token name of the caller that opened it (absent without client tokens). */
  owner?: string;
}

/** A holder as copies (snapshots, streamed copies, the wire) carry it. */
export interface HolderCopy {
  session: string;
  token: number;
  mode: Mode;
  sinceMs: number;
  lockDelayMs: number;
  /** The call id of the enter that was granted, as the client sent it (absent for clients that send none). */
  callId?: string;
}

/**
 * A holder in the table: its call id packed (call_id.ts), undefined when none. Written in the
 * literal even then: V8 gives a field added later its own backing store (32 bytes per held lock
 * in Deno).
 */
export interface Holder extends Omit<HolderCopy, "callId"> {
  callId: string | undefined;
}

/** A waiter as copies carry it. */
export interface WaiterCopy {
  session: string;
  mode: Mode;
  queuedAtMs: number;
  /** The waiter leaves the queue at this time unless it asks again (the client's long-poll). */
  deadlineMs: number;
  lockDelayMs: number;
  /** The call id of the enter that queued, as the client sent it (absent for clients that send none). */
  callId?: string;
}

/** A waiter in the table: its call id packed (call_id.ts), undefined when none. */
export interface Waiter extends Omit<WaiterCopy, "callId"> {
  callId: string | undefined;
}

/** A lock as copies carry it: its holders as a list. */
export interface LockCopy {
  name: string;
  holders: HolderCopy[];
  queue: WaiterCopy[];
  /** No grant before this time: set when a holder died with a lock-delay (Chubby). */
  delayUntilMs: number;
}

/**
 * A lock of the table. Its holders are kept as `held`: the one holder itself, or a list of two
 * or more (shared), or the shared empty list. Most held locks have one holder, and a list of one
 * costs 48 bytes of heap in Bun and 56 in Deno per held lock (W4, docs/bench.md "Memory per held
 * lock"). A lone holder is the lock itself: its fields below are the holder's (`held === this`),
 * one object where a lock and its holder were two (W4: a second object's header and the lock's
 * pointer to it). They keep the last lone holder's values while the lock has another or none:
 * a holder just removed is still read (its token, call id, lock-delay) after `withoutHolder`.
 * The table changes `held` only through the helpers at the end of this file; readers outside it
 * use `holders` (a list, new for a single holder) or `holderOf`. So a Holder read from a lock is
 * valid only until the lock's next grant or release: a grant may copy a lone holder out of the
 * lock or a list's last one into it. Since a lock is a Holder, any lock type-checks as one: the
 * helpers below take holders of the lock they are given only.
 */
export class LockState implements Holder {
  // The lone holder's fields (see above), in HolderCopy's order; written by `holdAlone` only.
  session = "";
  token = 0;
  mode: Mode = "exclusive";
  sinceMs = 0;
  lockDelayMs = 0;
  callId: string | undefined = undefined;

  constructor(
    /** Creation order in this table (see BORN; not in copies). */
    readonly born: number,
    readonly name: string,
    /** The holders (see above); only this file writes it. */
    public held: Holder | Holder[],
    public queue: Waiter[],
    /** No grant before this time: set when a holder died with a lock-delay (Chubby). */
    public delayUntilMs: number,
  ) {}

  /** The holders as a list, in grant order (a new list when there is one holder: not for hot paths). */
  get holders(): readonly Holder[] {
    return Array.isArray(this.held) ? this.held : [this.held];
  }

  /** The number of holders. */
  get holderCount(): number {
    return Array.isArray(this.held) ? this.held.length : 1;
  }

  /** The holder of `sessionId`, if it holds the lock. */
  holderOf(sessionId: string): Holder | undefined {
    const held = this.held;
    if (!Array.isArray(held)) return held.session === sessionId ? held : undefined;
    return held.find((h) => h.session === sessionId);
  }
}



/** A session as a snapshot (and a streamed copy) carries it: without its lock index, call ids unpacked. */
export type SessionCopy = Omit<Session, "locks" | "leftCalls" | typeof BORN> & { leftCalls?: string[] };

/**
 * Creation stamp of sessions and locks. No snapshot carries it: copies name their fields
 * (copyOfSession, copyOfLock). A plain property, not a symbol: an object literal with a computed
 * key takes 80 bytes in Bun where the same literal with plain keys takes 64, and a lock is made
 * per held lock (W4, docs/bench.md "Memory per held lock"); so the literals below spell `born:`.
 * Stamps grow with each creation, so each map's insertion order is stamp order (a key is set
 * once per object; a lock freed and taken again is a new object at the end). A streamed copy
 * (table_copy.ts) relies on both: "existed when the copy started" and "already sent" are each
 * one comparison of stamps.
 */
export const BORN = "born";

/** A session as copies carry it (own arrays: later changes of the table do not reach it). */
export function copyOfSession(s: Session): SessionCopy {
  const copy: SessionCopy = { id: s.id, ttlMs: s.ttlMs, createdAtMs: s.createdAtMs, expiresAtMs: s.expiresAtMs, leftCalls: s.leftCalls.map(unpackCallId) };
  if (s.secretHash !== undefined) copy.secretHash = s.secretHash;
  if (s.owner !== undefined) copy.owner = s.owner;
  return copy;
}

/** A lock as copies carry it (own holder and waiter objects, the clients' call ids). */
export function copyOfLock(lock: LockState): LockCopy {
  return {
    name: lock.name,
    holders: orNone(lock.holders.map(holderCopy)),
    queue: orNone(lock.queue.map(waiterCopy)),
    delayUntilMs: lock.delayUntilMs,
  };
}

/**
 * A holder as copies carry it, field by field (a lone holder is its lock, whose other fields a
 * copy must not carry), in the order the table's holders always had: copies, snapshots, the
 * durable log and the wire stay byte for byte what they were. The call id as the client sent it,
 * absent when it sent none.
 */
function holderCopy(h: Holder): HolderCopy {
  const copy: HolderCopy = { session: h.session, token: h.token, mode: h.mode, sinceMs: h.sinceMs, lockDelayMs: h.lockDelayMs };
  if (h.callId !== undefined) copy.callId = unpackCallId(h.callId);
  return copy;
}

/** A waiter as copies carry it: the client's call id, absent when it sent none. */
function waiterCopy(entry: Waiter): WaiterCopy {
  const { callId, ...copy } = entry;
  return callId === undefined ? copy : { ...copy, callId: unpackCallId(callId) };
}

export function holderFromCopy(h: HolderCopy, session: string): Holder {
  return { session, token: h.token, mode: h.mode, sinceMs: h.sinceMs, lockDelayMs: h.lockDelayMs, callId: packedOrNone(h.callId) };
}

export function waiterFromCopy(w: WaiterCopy, session: string): Waiter {
  const { mode, queuedAtMs, deadlineMs, lockDelayMs } = w;
  return { session, mode, queuedAtMs, deadlineMs, lockDelayMs, callId: packedOrNone(w.callId) };
}

/**
 * The one empty list that every lock without holders or without waiters shares. Most locks have
 * no queue, and each empty array literal costs 64 bytes of heap in Bun (JSC reserves room in it):
 * an eighth of a held lock's cost before this (W4, docs/bench.md "Memory per held lock"). Frozen,
 * so a stray push onto it throws (fail-stop) instead of handing one lock's entry to all of them;
 * `appended` replaces it with a list of its own.
 */
export const NONE: never[] = Object.freeze([]) as unknown as never[];

/** `list` with `entry` at its end: the same array, or a new one in place of the shared empty list. */
export function appended<T>(list: T[], entry: T): T[] {
  if (list.length === 0) return [entry];
  list.push(entry);
  return list;
}

/** `list`, or the shared empty list when it is empty (a filter or a copy that kept nothing). */
export function orNone<T>(list: T[]): T[] {
  return list.length === 0 ? NONE : list;
}

/** Sets the lock's holders (a loaded copy's): a lone one kept in the lock itself (see LockState). */
export function withHolders(lock: LockState, holders: Holder[]): void {
  if (holders.length === 1) holdAlone(lock, holders[0]);
  else lock.held = orNone(holders);
}

/** Adds a holder to the lock's holders (a grant). */
export function withHolder(lock: LockState, holder: Holder): void {
  const held = lock.held;
  // A lone holder that gets company leaves the lock for an object of its own in the list.
  if (!Array.isArray(held)) lock.held = [held === lock ? apart(lock) : held, holder];
  else if (held.length === 0) holdAlone(lock, holder);
  else held.push(holder);
}

/** Removes one of the lock's holders; the lock's fields keep the removed lone holder's (see LockState). */
export function withoutHolder(lock: LockState, holder: Holder): void {
  const held = lock.held;
  assert(Array.isArray(held) || held === holder, `${holder.session} is not the holder of ${lock.name}`);
  if (!Array.isArray(held)) {
    lock.held = NONE;
    return;
  }
  const kept = held.filter((h) => h !== holder);
  // A stale Holder (read before a grant moved it) would otherwise be removed silently as nobody.
  assert(kept.length === held.length - 1, `${holder.session} is not a holder of ${lock.name}`);
  // A list's holders are objects apart: the one left moves into the lock.
  if (kept.length === 1) holdAlone(lock, kept[0]);
  else lock.held = orNone(kept);
}

/** Removes every holder of the lock (a forced release); the lock's fields keep the last lone holder's. */
export function withoutHolders(lock: LockState): void {
  lock.held = NONE;
}

/** The lock holds `holder` alone, its fields copied into the lock. */
function holdAlone(lock: LockState, holder: Holder): void {
  lock.session = holder.session;
  lock.token = holder.token;
  lock.mode = holder.mode;
  lock.sinceMs = holder.sinceMs;
  lock.lockDelayMs = holder.lockDelayMs;
  lock.callId = holder.callId;
  lock.held = lock;
}

/** The lock's lone holder as an object of its own (the literal's order, as `holderFromCopy`). */
function apart(lock: LockState): Holder {
  return { session: lock.session, token: lock.token, mode: lock.mode, sinceMs: lock.sinceMs, lockDelayMs: lock.lockDelayMs, callId: lock.callId };
}
