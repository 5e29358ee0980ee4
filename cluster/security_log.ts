/**
 * Counts and logs refused input (forged or replayed peer messages and datagrams, bad client
 * credentials): every refusal is counted (`GET /v1/status` shows the counts under `security`),
 * but logged at most once per sender and reason per `intervalMs`, so a flood of forged requests
 * cannot flood the log. The next line after a quiet interval says how many were not logged.
 */
import type { Clock } from "./clock.ts";
import type { Logger } from "./log.ts";

/** Most (sender, reason) pairs remembered for the log's rate limit; the oldest is forgotten first. */
const REMEMBERED_MAX = 1_024;

export class SecurityLog {
  /** Refusals by reason since the process started (status, metrics). */
  readonly counts: Record<string, number> = {};
  /** (sender, reason) → when it was last logged and how many since went unlogged. */
  private readonly lastLogged = new Map<string, { atMs: number; unlogged: number }>();

  constructor(private readonly clock: Clock, private readonly log: Logger, private readonly intervalMs: number) {}

  /**
   * Counts one refusal of `reason` (e.g. "peerForged") from `sender` (a node id, an address, a
   * token name: whatever the receiver knows, never a secret) and logs it unless that pair was
   * logged within the interval.
   */
  refused(reason: string, sender: string, detail: Record<string, unknown> = {}): void {
    this.counts[reason] = (this.counts[reason] ?? 0) + 1;
    const key = `${reason}\u0000${sender}`;
    const nowMs = this.clock.nowMs();
    const last = this.lastLogged.get(key);
    if (last && nowMs - last.atMs < this.intervalMs) {
      last.unlogged += 1;
      return;
    }
    this.lastLogged.delete(key);
    if (this.lastLogged.size >= REMEMBERED_MAX) this.lastLogged.delete(this.lastLogged.keys().next().value!);
    this.lastLogged.set(key, { atMs: nowMs, unlogged: 0 });
    this.log.event("refused", { reason, sender: sender.slice(0, 128), ...(last?.unlogged ? { unloggedBefore: last.unlogged } : {}), ...detail }, "warn");
  }

  /** The counts for status (a copy). */
  view(): Record<string, number> {
    return { ...this.counts };
  }
}
