/**
 * What a lock server that is not the primary may promise and when it may claim (part of
 * LockReplica, lock_replica.ts): the backup's promises not to take over, the epoch the arbiter
 * confirmed to this process, and the pacing of its claims and `whois` questions to the arbiter.
 */
import type { ReplicaSettings } from "./replica_io.ts";

export type GateSettings = Pick<ReplicaSettings, "backupLeaseMs" | "claimRetryMs">;

export class TakeoverGate {
  /** Our last promise to a primary not to take over ends here (this clock); we never serve before. */
  private promisedUntilMs = Number.NEGATIVE_INFINITY;
  /**
   * The highest epoch the arbiter told this process of, since it started (0: none yet). A
   * restarted server forgot which epochs exist: a primary it hears may be one the arbiter has
   * replaced (by this very server, before its crash). It promises nothing until the arbiter has
   * told it the current epoch, and it asks (`whois`) until then.
   */
  private arbiterEpoch = 0;
  private lastWhoisMs = Number.NEGATIVE_INFINITY;
  private lastClaimMs = Number.NEGATIVE_INFINITY;
  /**
   * The epoch whose copy this process last claimed a takeover with (-1: none). The arbiter may
   * name us primary of the next epoch, its answer lost: then that copy is the recorded state.
   * Any other copy (one synced after a restart, from a primary the arbiter may have replaced)
   * is not, and never becomes a primary's table.
   */
  private takeoverClaimEpoch = -1;
  /**
   * No takeover before this: promises given before a restart lived in memory and are forgotten,
   * so a fresh process assumes it gave one just now.
   */
  private readonly takeoverNotBeforeMs: number;

  constructor(private readonly settings: GateSettings, startMs: number) {
    this.takeoverNotBeforeMs = startMs + settings.backupLeaseMs;
  }

  /** An answer of the arbiter names `epoch`. */
  heardEpoch(epoch: number): void {
    this.arbiterEpoch = Math.max(this.arbiterEpoch, epoch);
  }

  /** Whether the arbiter has told this process the current epoch since it started. */
  get epochConfirmed(): boolean {
    return this.arbiterEpoch > 0;
  }

  /**
   * An ack to the primary of `epoch` at `nowMs`: the promise it carries (0: none). Only once the
   * arbiter has told this process that the epoch we follow is current (none newer): a promise
   * to a replaced primary would let it serve beside the new one.
   */
  promise(nowMs: number, epoch: number): number {
    const mayPromise = this.arbiterEpoch > 0 && epoch >= this.arbiterEpoch;
    const promiseMs = mayPromise ? this.settings.backupLeaseMs : 0;
    if (mayPromise) this.promisedUntilMs = Math.max(this.promisedUntilMs, nowMs + promiseMs);
    return promiseMs;
  }

  /** Whether a promise we gave still runs at `nowMs` (a new primary never serves before it ends). */
  promisedAt(nowMs: number): boolean {
    return nowMs < this.promisedUntilMs;
  }

  promisedUntil(): number {
    return this.promisedUntilMs;
  }

  /**
   * Whether to claim now. A takeover (with our copy) waits until no promise of ours, this
   * process's or a previous one's, still lets the old primary serve; one claim at a time, and
   * at most one per claimRetryMs, except before `eagerUntilMs`: then at once (the driver's tick
   * paces it). The arbiter refuses a takeover while the primary's lease runs on its clock, which
   * may end up to 100 ms after our promise (its renewals come every leaseRenewMs, our acks every
   * heartbeatMs); waiting claimRetryMs for the next claim cost up to 50 ms of F1 (issue 14).
   */
  claimDue(nowMs: number, hasState: boolean, claimInFlight: boolean, eagerUntilMs = Number.NEGATIVE_INFINITY): boolean {
    if (hasState && nowMs < this.takeoverFromMs()) return false;
    if (claimInFlight) return false;
    return nowMs < eagerUntilMs || nowMs - this.lastClaimMs >= this.settings.claimRetryMs;
  }

  /** The first moment a takeover claim may go out: every promise of ours, before a restart too, ran out. */
  takeoverFromMs(): number {
    return Math.max(this.promisedUntilMs, this.takeoverNotBeforeMs);
  }

  /** A claim sent at `nowMs`, with the copy of `takeoverEpoch` (null: without state). */
  claimSent(nowMs: number, takeoverEpoch: number | null): void {
    this.lastClaimMs = nowMs;
    if (takeoverEpoch !== null) this.takeoverClaimEpoch = takeoverEpoch;
  }

  /** The copy of `epoch` is the one we last claimed a takeover with (a restored one counts too). */
  claimedWith(epoch: number): void {
    this.takeoverClaimEpoch = epoch;
  }

  /** Whether our last takeover claim was with the copy of `epoch`. */
  tookOverWith(epoch: number): boolean {
    return this.takeoverClaimEpoch === epoch;
  }

  /** Whether to ask the arbiter the current epoch now (until it told us; one at a time, paced). */
  whoisDue(nowMs: number, whoisInFlight: boolean): boolean {
    if (this.arbiterEpoch > 0 || whoisInFlight) return false;
    return nowMs - this.lastWhoisMs >= this.settings.claimRetryMs;
  }

  whoisSent(nowMs: number): void {
    this.lastWhoisMs = nowMs;
  }
}
