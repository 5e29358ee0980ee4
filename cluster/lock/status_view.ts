/**
 * The lock server's state as `status`, `GET /v1/locks` and lock watches show it (through the lock
 * service, service.ts): ages instead of clock readings, owners (token names), never secrets' hashes.
 */
import type { LockCopy, LockState, LockTable } from "../../lib/core/lock/lock_table.ts";
import type { LockReplica, ReplicaStatus } from "../../lib/core/lock/lock_replica.ts";
import type { Clock } from "../clock.ts";

/** `owner`: the token name of the caller that opened the session (absent without client tokens). */
export interface LockView {
  name: string;
  holders: Array<{ session: string; owner?: string; token: number; mode: string; heldForMs: number; lockDelayMs: number }>;
  waiters: Array<{ position: number; session: string; owner?: string; mode: string; waitingForMs: number }>;
  lockDelayRemainingMs: number;
}

export interface StatusView {
  server: ReplicaStatus;
  lastToken: number;
  sessions: Array<{ session: string; owner?: string; ttlMs: number; ageMs: number; expiresInMs: number; locks: string[] }>;
  locks: LockView[];
}

/** `status` without the sessions and locks: their counts instead. */
export type StatusSummary = Omit<StatusView, "sessions" | "locks"> & { sessionCount: number; lockCount: number };

/** The summary (cheap at any size). */
export function statusSummary(replica: LockReplica): StatusSummary {
  const table = replica.machine?.table;
  return { server: replica.status(), lastToken: table?.highestToken ?? 0, sessionCount: table?.sessions.size ?? 0, lockCount: table?.locks.size ?? 0 };
}

/** One lock as `statusView` shows it (undefined: nobody holds, waits for or delays it), without copying the table. */
export function lockView(replica: LockReplica, clock: Clock, name: string): LockView | undefined {
  const table = replica.machine?.table;
  const lock = table?.locks.get(name);
  return table && lock ? lockViewOf(lock, table, viewNowMs(replica, clock, table, replica.status())) : undefined;
}

/** The state for `status` and `GET /v1/locks`. */
export function statusView(replica: LockReplica, clock: Clock): StatusView {
  const server = replica.status();
  const table = replica.machine?.table;
  if (!table) return { server, lastToken: 0, sessions: [], locks: [] };
  const nowMs = viewNowMs(replica, clock, table, server);
  const snapshot = table.snapshot();
  // Appended in place: copying the list per lock was quadratic in a session's locks (52 ms of
  // CPU per dashboard snapshot for one session with 10,000 locks).
  const heldBy = new Map<string, string[]>();
  for (const lock of snapshot.locks) {
    for (const entry of [...lock.holders, ...lock.queue]) {
      const names = heldBy.get(entry.session);
      if (names) names.push(lock.name);
      else heldBy.set(entry.session, [lock.name]);
    }
  }
  return {
    server,
    lastToken: snapshot.lastToken,
    sessions: snapshot.sessions.map((s) => ({
      session: s.id,
      ...(s.owner === undefined ? {} : { owner: s.owner }),
      ttlMs: s.ttlMs,
      ageMs: nowMs - s.createdAtMs,
      expiresInMs: Math.max(0, s.expiresAtMs - nowMs),
      locks: heldBy.get(s.id) ?? [],
    })),
    locks: snapshot.locks.map((lock) => lockViewOf(lock, table, nowMs)),
  };
}

/**
 * The time ages are measured at. The table runs on the primary's time base; ages are
 * differences on that base. A backup cannot read the primary's clock: it shows ages as of the
 * last change it applied.
 */
function viewNowMs(replica: LockReplica, clock: Clock, table: LockTable, server: ReplicaStatus): number {
  return server.role === "primary" ? Math.max(table.clockMs, clock.nowMs() + replica.timeOffset) : table.clockMs;
}

/** A lock as status shows it. */
function lockViewOf(lock: LockState | LockCopy, table: LockTable, nowMs: number): LockView {
  const ownerOf = (session: string) => {
    const owner = table.sessions.get(session)?.owner;
    return owner === undefined ? {} : { owner };
  };
  return {
    name: lock.name,
    holders: lock.holders.map((h) => ({
      session: h.session,
      ...ownerOf(h.session),
      token: h.token,
      mode: h.mode,
      heldForMs: nowMs - h.sinceMs,
      lockDelayMs: h.lockDelayMs,
    })),
    waiters: lock.queue.map((w, index) => ({
      position: index + 1,
      session: w.session,
      ...ownerOf(w.session),
      mode: w.mode,
      waitingForMs: nowMs - w.queuedAtMs,
    })),
    lockDelayRemainingMs: Math.max(0, lock.delayUntilMs - nowMs),
  };
}
