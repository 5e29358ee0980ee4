/**
 * A primary's lease and its reports to the arbiter (part of LockReplica, lock_replica.ts).
 *
 * The lease has two supports, either one enough (a majority of three): the arbiter's, renewed
 * every leaseRenewMs, and the backup's promise, carried by every ack of an append. Each counts
 * from the send time of the request that earned it, less leaseSafetyMs.
 *
 * Each renewal reports whether the backup is in sync, numbered by `seq` within the epoch; the
 * arbiter records the newest report it received. `answered` decides which answers may change
 * what this primary believes the arbiter recorded.
 */
import type { ReplicaSettings } from "./replica_io.ts";

export type LeaseSettings = Pick<ReplicaSettings, "primaryLeaseMs" | "backupLeaseMs" | "leaseRenewMs" | "leaseSafetyMs" | "claimRetryMs">;

export class PrimaryLease {
  /** End of the arbiter's lease and of the backup's, on this clock, less the safety margin. */
  private arbiterUntilMs = Number.NEGATIVE_INFINITY;
  private backupUntilMs = Number.NEGATIVE_INFINITY;
  /** What the arbiter last confirmed: the backup in sync (it may be promoted) or not. */
  arbiterInSync = false;
  private lastRenewMs = Number.NEGATIVE_INFINITY;
  /** Orders our sync reports at the arbiter within the epoch (the newest one sent). */
  reportSeq = 0;
  private answeredSeq = 0; // the report whose answer set arbiterInSync last
  private inSyncReportSeq = 0; // the newest report that said "in sync"

  constructor(private readonly settings: LeaseSettings) {}

  /** End of the lease on this server's clock: the later of the two, since one backer suffices. */
  untilMs(): number {
    return Math.max(this.arbiterUntilMs, this.backupUntilMs);
  }

  /** How long each support runs from `nowMs` (0: not), for `status`. */
  support(nowMs: number): { arbiterRemainingMs: number; backupRemainingMs: number } {
    return { arbiterRemainingMs: remainingMs(this.arbiterUntilMs, nowMs), backupRemainingMs: remainingMs(this.backupUntilMs, nowMs) };
  }

  /** A standalone server (no arbiter) holds a lease without end. */
  forever(): void {
    this.arbiterUntilMs = Number.POSITIVE_INFINITY;
  }

  /** A new primary: no backup support and no report yet (the arbiter's lease comes with its claim). */
  restart(nowMs: number): void {
    this.arbiterInSync = false;
    this.backupUntilMs = Number.NEGATIVE_INFINITY;
    this.lastRenewMs = nowMs;
    this.reportSeq = 0;
    this.answeredSeq = 0;
    this.inSyncReportSeq = 0;
  }

  /** No longer a primary: no lease. */
  drop(): void {
    this.arbiterUntilMs = Number.NEGATIVE_INFINITY;
    this.backupUntilMs = Number.NEGATIVE_INFINITY;
  }

  /** The arbiter granted `leaseMs` to a request sent at `sentAtMs`. */
  arbiterGranted(sentAtMs: number, leaseMs: number): void {
    const until = sentAtMs + leaseMs - this.settings.leaseSafetyMs;
    this.arbiterUntilMs = Math.max(this.arbiterUntilMs, until);
  }

  /**
   * The backup promised not to take over for `promiseMs` from its receipt of an append sent at
   * `sentAtMs`. Counted from our send (its receipt is later), never longer than configured.
   */
  backupPromised(sentAtMs: number, promiseMs: number): void {
    const lengthMs = Math.min(promiseMs, this.settings.backupLeaseMs);
    this.backupUntilMs = Math.max(this.backupUntilMs, sentAtMs + lengthMs - this.settings.leaseSafetyMs);
  }

  /**
   * Whether a renewal should go out now. Renewals overlap: one lost must not cost the lease while
   * the next waits for its timeout (peerTimeoutMs, longer than the lease). The arbiter orders the
   * reports by `seq`, and a late answer cannot make us believe an older record (see `answered`).
   * At most as many in flight as fit in one lease: older ones are lost or useless.
   */
  renewalDue(nowMs: number, wantInSync: boolean, coverWaiting: boolean, renewsInFlight: number): boolean {
    const s = this.settings;
    if (renewsInFlight >= Math.ceil(s.primaryLeaseMs / s.leaseRenewMs)) return false;
    const due = nowMs - this.lastRenewMs >= s.leaseRenewMs;
    // A changed word, or commits waiting for the record to cover them, go out sooner.
    const changed = wantInSync !== this.arbiterInSync || coverWaiting;
    return due || (changed && nowMs - this.lastRenewMs >= s.claimRetryMs);
  }

  /** Numbers a renewal sent now, reporting `inSync`. */
  report(nowMs: number, inSync: boolean): number {
    this.lastRenewMs = nowMs;
    const seq = ++this.reportSeq;
    if (inSync) this.inSyncReportSeq = seq;
    return seq;
  }

  /**
   * The arbiter granted the renewal `seq` that reported `inSync`. The arbiter records the newest
   * report it received, which may be one sent after this one. So "alone" is certain only when no
   * report sent after this one said "in sync"; "in sync" is always taken (it only holds commits
   * back). Answers older than one taken change nothing. Returns whether it was taken.
   */
  answered(seq: number, inSync: boolean): boolean {
    if (seq < this.answeredSeq) return false;
    if (!inSync && this.inSyncReportSeq > seq) return false;
    this.answeredSeq = seq;
    this.arbiterInSync = inSync;
    return true;
  }
}

/** What is left of a span ending at `untilMs` (0: over), capped for display. */
export function remainingMs(untilMs: number, nowMs: number): number {
  return Math.max(0, Math.min(untilMs - nowMs, 1e9));
}
