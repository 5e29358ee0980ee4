/**
 * The arbiter's decisions for the lock service, as a pure state machine.
 *
 * With two servers a crash and a partition look the same, so a third party decides who serves
 * (Chubby's master lease, Corosync's qdevice). The arbiter:
 * - grants the primary a lease, renewed well before it ends; the primary serves only inside it;
 * - records whether the backup is in sync, as the primary reports it; the primary must have
 *   that record changed to "out of sync" before it goes on alone;
 * - lets the backup take over only when the primary's lease has lapsed on the arbiter's clock
 *   and the backup is recorded in sync; then it starts a new epoch.
 * Epochs only grow: the persistent part is written (and fsynced by the driver) before any
 * answer that depends on it is sent, so a restarted arbiter never hands out an epoch twice.
 * It never stores user data.
 */
import { assert } from "../assert.ts";

/** What the arbiter persists. */
export interface ArbiterState {
  epoch: number;
  primary: string | null;
  backup: string | null;
  /** The primary's last word on the backup: every acknowledged change is on the backup. */
  backupInSync: boolean;
  /**
   * Sequence number of that word within the epoch. A renewal that timed out at the primary may
   * still arrive after a later one; its older word must not overwrite the newer.
   */
  reportSeq: number;
}

export type ArbiterRequest =
  /** From the serving primary: extend my lease; `backupInSync` is my view of the backup, `seq` its order. */
  | { type: "renew"; from: string; epoch: number; backupInSync: boolean; seq: number }
  /** From a server that wants to serve: at start (`hasState` false) or as a backup taking over. */
  | { type: "claim"; from: string; epoch: number; hasState: boolean }
  /** Anyone: who is primary in which epoch. */
  | { type: "whois"; from: string };

export type ArbiterReply =
  | { type: "lease"; epoch: number; primary: string; leaseMs: number; fresh: boolean }
  | { type: "refused"; epoch: number; primary: string | null; reason: string; becomeBackup: boolean }
  | { type: "view"; epoch: number; primary: string | null; backupInSync: boolean };

export interface ArbiterOptions {
  /** The two lock servers: [configured primary, configured backup (may be absent)]. */
  primaryId: string;
  backupId: string | null;
  leaseMs: number;
  /** At a cluster's first start, the backup may serve if the primary has not come for this long. */
  bootstrapWaitMs: number;
}

export interface ArbiterStep {
  reply: ArbiterReply;
  /** Write this (durably) before sending the reply; absent when nothing changed on disk. */
  persist?: ArbiterState;
}

export class ArbiterCore {
  private state: ArbiterState;
  /** End of the current primary's lease on this clock; volatile. */
  private leaseUntilMs: number;
  private readonly startedAtMs: number;
  private lastNowMs: number;

  constructor(private readonly options: ArbiterOptions, restored: ArbiterState | null, nowMs: number) {
    this.state = restored ?? { epoch: 0, primary: null, backup: null, backupInSync: false, reportSeq: 0 };
    this.state.reportSeq ??= 0;
    assert(Number.isSafeInteger(this.state.epoch) && this.state.epoch >= 0, "epoch must be a non-negative integer");
    // After a restart the arbiter cannot know when it last renewed: assume it just did.
    this.leaseUntilMs = this.state.primary === null ? nowMs : nowMs + options.leaseMs;
    this.startedAtMs = nowMs;
    this.lastNowMs = nowMs;
  }

  get current(): Readonly<ArbiterState> {
    return this.state;
  }

  /** Milliseconds of the primary's lease left on this clock (0 when lapsed). */
  leaseRemainingMs(nowMs: number): number {
    return Math.max(0, this.leaseUntilMs - nowMs);
  }

  step(request: ArbiterRequest, nowMs: number): ArbiterStep {
    assert(nowMs >= this.lastNowMs, "arbiter time went backwards");
    this.lastNowMs = nowMs;
    if (request.type === "whois") {
      return { reply: { type: "view", epoch: this.state.epoch, primary: this.state.primary, backupInSync: this.state.backupInSync } };
    }
    if (request.from !== this.options.primaryId && request.from !== this.options.backupId) {
      return this.refuse(`unknown server ${request.from}`, false);
    }
    return request.type === "renew" ? this.renew(request, nowMs) : this.claim(request, nowMs);
  }

  private renew(request: Extract<ArbiterRequest, { type: "renew" }>, nowMs: number): ArbiterStep {
    if (request.from !== this.state.primary || request.epoch !== this.state.epoch) {
      return this.refuse(`epoch ${this.state.epoch} is served by ${this.state.primary}`, true);
    }
    let persist: ArbiterState | undefined;
    // Every newer report advances the sequence, also when its word is unchanged: an older report
    // arriving late must lose against all newer ones, not only against the last change.
    if (request.seq > this.state.reportSeq) {
      this.state = { ...this.state, backupInSync: request.backupInSync, reportSeq: request.seq };
      persist = this.state;
    }
    return { reply: this.grantLease(nowMs, false), persist };
  }

  private claim(request: Extract<ArbiterRequest, { type: "claim" }>, nowMs: number): ArbiterStep {
    const { from } = request;
    const other = from === this.options.primaryId ? this.options.backupId : this.options.primaryId;
    if (this.state.primary === null) {
      const bootstrapOver = nowMs - this.startedAtMs >= this.options.bootstrapWaitMs;
      if (from !== this.options.primaryId && !bootstrapOver) {
        return this.refuse(`waiting ${this.options.bootstrapWaitMs} ms for ${this.options.primaryId} to start`, false);
      }
      return this.newEpoch(from, other, nowMs);
    }
    if (from === this.state.primary) {
      // With its copy: the primary of record, perhaps without having heard our answer (lost).
      if (request.hasState && request.epoch <= this.state.epoch) return { reply: this.grantLease(nowMs, false) };
      // The primary came back without its state (a restart): the in-sync backup has it.
      if (nowMs < this.leaseUntilMs) return this.refuse("the previous lease has not lapsed yet", false);
      if (this.state.backupInSync) return this.refuse(`the in-sync backup ${this.state.backup} must take over`, true);
      // Nobody holds the state any more (the primary ran alone): start afresh, loudly.
      return this.newEpoch(from, other, nowMs);
    }
    if (!request.hasState) return this.refuse(`${this.state.primary} serves epoch ${this.state.epoch}`, true);
    if (from !== this.state.backup) return this.refuse(`${from} is not the recorded backup`, true);
    if (!this.state.backupInSync) return this.refuse("the backup is recorded out of sync", true);
    if (nowMs < this.leaseUntilMs) {
      return this.refuse(`the primary's lease runs ${this.leaseUntilMs - nowMs} ms more`, true);
    }
    return this.newEpoch(from, this.state.primary, nowMs);
  }

  private newEpoch(primary: string, backup: string | null, nowMs: number): ArbiterStep {
    const epoch = this.state.epoch + 1;
    assert(epoch > this.state.epoch, "epochs only grow");
    this.state = { epoch, primary, backup, backupInSync: false, reportSeq: 0 };
    return { reply: this.grantLease(nowMs, true), persist: this.state };
  }

  private grantLease(nowMs: number, fresh: boolean): ArbiterReply {
    assert(this.state.primary !== null, "a lease needs a primary");
    this.leaseUntilMs = nowMs + this.options.leaseMs;
    return { type: "lease", epoch: this.state.epoch, primary: this.state.primary, leaseMs: this.options.leaseMs, fresh };
  }

  private refuse(reason: string, becomeBackup: boolean): ArbiterStep {
    return { reply: { type: "refused", epoch: this.state.epoch, primary: this.state.primary, reason, becomeBackup } };
  }
}
