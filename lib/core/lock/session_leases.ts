/**
 * Session leases: when a session's lease has lapsed is the primary's decision alone.
 *
 * A keepalive renews a session's lease in the primary's table only: it is not a log entry, so
 * it is neither replicated nor written to a durable log (issue 14: 10,000 idle sessions would
 * otherwise cost a replicated change each every TTL/3). The backup's copy of a session's
 * `expiresAtMs` is therefore stale, and the table never expires a session by the time of an
 * entry: the primary, on its own clock, finds the sessions whose lease lapsed (`LeaseClock`)
 * and appends an `expire` entry naming them, which both servers apply alike. A new primary
 * (after a takeover, or a durable primary's restart) gives every session a whole TTL again from
 * the moment it starts (`restartLeases`). Why that is safe: docs/failover.md "Session leases".
 */
import type { Session } from "./lock_state.ts";

/** Sessions one `expire` entry names at most: bounds an entry's size (the rest go in the next). */
export const EXPIRE_BATCH_MAX = 1_000;

/** A lower bound of every session's lease end, so the primary's check is O(1) until one is due. */
export class LeaseClock {
  /** -Infinity: unknown (a table loaded from a copy), recomputed by the next `lapsed`. */
  private dueAtMs = Number.NEGATIVE_INFINITY;

  /** A session's lease now ends at `atMs` (opened, renewed, restarted). */
  note(atMs: number): void {
    this.dueAtMs = Math.min(this.dueAtMs, atMs);
  }

  /** Whether a lease may have ended at or before `nowMs` (else `lapsed` finds none, in O(1)). */
  mayHaveLapsed(nowMs: number): boolean {
    return nowMs >= this.dueAtMs;
  }

  /**
   * Ids of the sessions whose lease ended at or before `nowMs`, oldest first, at most `max`.
   * Scans the sessions only when one may be due, and then moves the bound to the next lease end.
   */
  lapsed(sessions: Iterable<Session>, nowMs: number, max: number): string[] {
    if (!this.mayHaveLapsed(nowMs)) return [];
    const ids: string[] = [];
    let nextDueMs = Number.POSITIVE_INFINITY;
    for (const session of sessions) {
      // A lapsed session beyond `max` keeps the bound at or before now: the next call takes it.
      if (session.expiresAtMs <= nowMs && ids.length < max) ids.push(session.id);
      else nextDueMs = Math.min(nextDueMs, session.expiresAtMs);
    }
    this.dueAtMs = nextDueMs;
    return ids;
  }
}
