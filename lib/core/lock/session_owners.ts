/**
 * Who may act on a session, and how much each caller has: the lock table's secret check and its
 * per-owner counts (issue 12), kept out of lock_table.ts, which only wires them in.
 *
 * - A session opens with the SHA-256 hash of a secret only its opener got (the lock routes make
 *   the secret and hash it: cluster/lock/api_routes.ts). Every command that acts on the session carries
 *   the hash of the secret presented; a mismatch is refused and changes nothing. The hash, not
 *   the secret, is what replicates, is copied and is written to disk, so neither a backup nor a
 *   durable log holds anything a client can present. A session without a hash (restored from
 *   data older than session secrets) cannot be acted on: its client opens a new one.
 * - Sessions and waiting enters are counted per owner (the caller's token name; "" without
 *   tokens). The limits come in the commands (the caller's `sessionsMax` and `waitersMax`), so
 *   the backup's replay of a command decides as the primary did.
 */
import { assert } from "../assert.ts";
import type { ApiError } from "../../wire/errors.ts";

/** Longest secret hash a command may carry (a SHA-256 in hex is 64); bounds the session record. */
export const SECRET_HASH_LENGTH_MAX = 128;
/** Longest owner name a session may carry (a token's name from the cluster file). */
export const OWNER_LENGTH_MAX = 128;

/** The refusal of a wrong or missing secret: the same message whatever was wrong (no oracle). */
export const SECRET_MISMATCH: ApiError = { code: "forbidden", message: "session secret does not match" };

/**
 * Whether `presented` (the hash of the secret a request carried) matches the session's hash.
 * Both must be non-empty strings: a session without a hash matches nothing. The comparison does
 * not stop at the first difference, so its time says nothing of how much of the hash matched.
 */
export function secretMatches(stored: string | undefined, presented: unknown): boolean {
  if (typeof stored !== "string" || typeof presented !== "string" || stored.length === 0) return false;
  if (stored.length !== presented.length) return false;
  let difference = 0;
  for (let i = 0; i < stored.length; i++) difference |= stored.charCodeAt(i) ^ presented.charCodeAt(i);
  return difference === 0;
}

/** What a secret hash or owner a command carries must be, or why not (undefined: fine). */
export function secretHashProblem(value: unknown): string | undefined {
  if (typeof value !== "string" || value.length === 0 || value.length > SECRET_HASH_LENGTH_MAX) {
    return `secretHash must be a string of 1..${SECRET_HASH_LENGTH_MAX} characters`;
  }
  return undefined;
}

export function ownerProblem(owner: unknown, limit: unknown, limitName: string): string | undefined {
  if (owner !== undefined && (typeof owner !== "string" || owner.length === 0 || owner.length > OWNER_LENGTH_MAX)) {
    return `owner must be a string of 1..${OWNER_LENGTH_MAX} characters`;
  }
  if (limit !== undefined && (!Number.isSafeInteger(limit) || (limit as number) < 0)) return `${limitName} must be a non-negative integer`;
  return undefined;
}

/** The key of an owner in the counts: the token's name, "" for sessions opened without one. */
export function ownerKey(owner: string | undefined): string {
  return owner ?? "";
}

/** How to name an owner in a refusal. */
function ownerName(owner: string): string {
  return owner === "" ? "the anonymous caller" : `caller ${owner}`;
}

/**
 * Sessions and waiting enters per owner. The table calls `sessionOpened`/`sessionDropped` and
 * `waiterAdded`/`waiterRemoved` at every change of its sessions and queues (including loads of
 * a copy), so the counts are derived state: rebuilt on load, never copied. Entries at zero are
 * deleted, so the map holds at most one entry per open session.
 */
export class OwnerCounts {
  private readonly counts = new Map<string, { sessions: number; waiters: number }>();

  /** The refusal of one more session for `owner` under its limit (null: no per-owner limit). */
  sessionRefusal(owner: string, sessionsMax: number | undefined): ApiError | undefined {
    if (sessionsMax === undefined || this.sessions(owner) < sessionsMax) return undefined;
    return { code: "limit_reached", message: `${ownerName(owner)} has at most ${sessionsMax} sessions` };
  }

  /** The refusal of one more waiting enter for `owner` under its limit. */
  waiterRefusal(owner: string, waitersMax: number | undefined): ApiError | undefined {
    if (waitersMax === undefined || this.waiters(owner) < waitersMax) return undefined;
    return { code: "limit_reached", message: `${ownerName(owner)} has at most ${waitersMax} waiting enters` };
  }

  sessions(owner: string): number {
    return this.counts.get(owner)?.sessions ?? 0;
  }

  waiters(owner: string): number {
    return this.counts.get(owner)?.waiters ?? 0;
  }

  sessionOpened(owner: string): void {
    this.change(owner, 1, 0);
  }

  sessionDropped(owner: string): void {
    this.change(owner, -1, 0);
  }

  waiterAdded(owner: string): void {
    this.change(owner, 0, 1);
  }

  waiterRemoved(owner: string, count = 1): void {
    if (count > 0) this.change(owner, 0, -count);
  }

  /** Every owner with its counts (tests compare them with a recount of the table). */
  entries(): Array<[string, { sessions: number; waiters: number }]> {
    return [...this.counts.entries()].map(([owner, c]) => [owner, { ...c }]);
  }

  private change(owner: string, sessions: number, waiters: number): void {
    const entry = this.counts.get(owner) ?? { sessions: 0, waiters: 0 };
    entry.sessions += sessions;
    entry.waiters += waiters;
    assert(entry.sessions >= 0 && entry.waiters >= 0, `owner counts of ${ownerName(owner)} went negative`);
    if (entry.sessions === 0 && entry.waiters === 0) this.counts.delete(owner);
    else this.counts.set(owner, entry);
  }
}
