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
 * It never stores user data, but it keeps what a fresh table needs to be safe after both copies
 * were lost (docs/failover.md, rules 7-8 and Lemma 4): which backup process the in-sync report
 * vouches for, the longest TTL any table granted, and a ceiling over every fencing token.
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
  /**
   * The backup process (its incarnation id) whose copy the in-sync report vouches for. null: not
   * reported (a record or a primary from before incarnations).
   */
  backupIncarnation?: string | null;
  /**
   * The backup claimed without state under another id than `backupIncarnation`: that process and
   * its copy are gone. A newer process may hold a copy again (synced from the primary, which
   * commits nothing without it meanwhile), so it may still take over with its copy; but a
   * primary that lost its state, too, starts afresh instead of waiting for the backup.
   * Cleared by an in-sync report naming another process (a late report may name the gone one).
   */
  backupCopyLost?: boolean;
  /**
   * Longest a grant of any table may outlive its holder's last acknowledged keepalive (session
   * TTL plus lock-delay), raised durably before a primary answers with a longer one. A fresh table
   * after an earlier one grants nothing for this long. null: unknown (a record from before; the
   * servers then assume the longest the settings allow).
   */
  ttlMaxMs?: number | null;
  /**
   * No table hands out a fencing token above this; a primary has it raised (in large steps)
   * before it commits a higher one, and a fresh table starts above it. null: a record from
   * before (fresh tables then start above the wall clock, as before).
   */
  tokenCeiling?: number | null;
  /**
   * A server named this epoch while the record was older (a lost or replaced disk): no epoch is
   * created and no lease granted until `mutexd arbiter recover` writes the cluster's record.
   */
  behindEpoch?: number;
}

export type ArbiterRequest =
  /** From the serving primary: extend my lease; `backupInSync` is my view of the backup, `seq` its order. */
  | {
    type: "renew";
    from: string;
    epoch: number;
    backupInSync: boolean;
    seq: number;
    /** With an in-sync report: the backup process whose copy it vouches for. */
    backupIncarnation?: string;
    /** Raise the record's ttlMaxMs / tokenCeiling to at least this before answering. */
    ttlMaxMs?: number;
    tokenCeiling?: number;
  }
  /** From a server that wants to serve: at start (`hasState` false) or as a backup taking over. */
  | { type: "claim"; from: string; epoch: number; hasState: boolean; incarnation?: string }
  /** Anyone: who is primary in which epoch. */
  | { type: "whois"; from: string };

export type ArbiterReply =
  | {
    type: "lease";
    epoch: number;
    primary: string;
    leaseMs: number;
    fresh: boolean;
    /** What the record covers now (see ArbiterState); absent from arbiters of before. */
    ttlMaxMs?: number | null;
    tokenCeiling?: number | null;
    /** With `fresh`: an earlier epoch existed, so a table may have been lost (a grace is due). */
    tablesBefore?: boolean;
  }
  | { type: "refused"; epoch: number; primary: string | null; reason: string; becomeBackup: boolean }
  | { type: "view"; epoch: number; primary: string | null; backupInSync: boolean };

export interface ArbiterOptions {
  /** The two lock servers: [configured primary, configured backup (may be absent)]. */
  primaryId: string;
  backupId: string | null;
  leaseMs: number;
  /**
   * With an empty record (a first start, a lost disk): no epoch before this unless both servers
   * claimed without state; after it, either may start epoch 1.
   */
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
  /** Servers that claimed without state at epoch 0 since this start (volatile; see claim()). */
  private readonly startedEmpty = new Set<string>();

  constructor(private readonly options: ArbiterOptions, restored: ArbiterState | null, nowMs: number) {
    // A record from before these fields: their values are unknown (null), not zero.
    this.state = restored
      ? { backupIncarnation: null, backupCopyLost: false, ttlMaxMs: null, tokenCeiling: null, ...restored }
      : { epoch: 0, primary: null, backup: null, backupInSync: false, reportSeq: 0, backupIncarnation: null, backupCopyLost: false, ttlMaxMs: 0, tokenCeiling: 0 };
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
    const behind = this.behind(request.epoch);
    if (behind) return behind;
    return request.type === "renew" ? this.renew(request, nowMs) : this.claim(request, nowMs);
  }

  private renew(request: Extract<ArbiterRequest, { type: "renew" }>, nowMs: number): ArbiterStep {
    if (request.from !== this.state.primary || request.epoch !== this.state.epoch) {
      return this.refuse(`epoch ${this.state.epoch} is served by ${this.state.primary}`, true);
    }
    const before = this.state;
    // Every newer report advances the sequence, also when its word is unchanged: an older report
    // arriving late must lose against all newer ones, not only against the last change.
    if (request.seq > this.state.reportSeq) {
      const backupIncarnation = request.backupInSync ? request.backupIncarnation ?? null : this.state.backupIncarnation;
      // A late report from before may still name the process proven gone: that copy stays gone.
      const backupCopyLost = this.state.backupCopyLost === true && (!request.backupInSync || request.backupIncarnation === this.state.backupIncarnation);
      this.state = { ...this.state, backupInSync: request.backupInSync, reportSeq: request.seq, backupIncarnation, backupCopyLost };
    }
    // Raises only, in any order: a late renewal asks for less, which is covered already.
    this.state = raiseRecord(this.state, request);
    return { reply: this.grantLease(nowMs, false), persist: this.state === before ? undefined : this.state };
  }

  private claim(request: Extract<ArbiterRequest, { type: "claim" }>, nowMs: number): ArbiterStep {
    const { from } = request;
    const other = from === this.options.primaryId ? this.options.backupId : this.options.primaryId;
    if (this.state.primary === null) {
      // An empty record: a cluster's first start, or a lost disk in a running cluster whose
      // servers will name their epoch soon (renewals, takeover claims; see behind()). The
      // configured primary starts at once only when the other server, too, says it has no state.
      if (!request.hasState && request.epoch === 0) this.startedEmpty.add(from);
      const bootstrapOver = nowMs - this.startedAtMs >= this.options.bootstrapWaitMs;
      const bothEmpty = other === null || this.startedEmpty.has(other);
      if (!bootstrapOver && !(from === this.options.primaryId && bothEmpty)) {
        return this.refuse(`waiting ${this.options.bootstrapWaitMs} ms for ${this.options.primaryId} and ${other} to start`, false);
      }
      return this.newEpoch(from, other, nowMs);
    }
    if (from === this.state.primary) {
      // With its copy: the primary of record, perhaps without having heard our answer (lost).
      if (request.hasState && request.epoch <= this.state.epoch) return { reply: this.grantLease(nowMs, false) };
      // The primary came back without its state (a restart): the in-sync backup has it.
      if (nowMs < this.leaseUntilMs) return this.refuse("the previous lease has not lapsed yet", false);
      if (this.state.backupInSync && !this.state.backupCopyLost) return this.refuse(`the in-sync backup ${this.state.backup} must take over`, true);
      // Nobody holds the state any more (the primary ran alone): start afresh, loudly.
      return this.newEpoch(from, other, nowMs);
    }
    if (!request.hasState) {
      if (this.copyGone(request)) {
        // The process the report vouches for is gone with its copy (a claim of its own from
        // before it synced would carry its id): durable before the answer.
        this.state = { ...this.state, backupCopyLost: true };
        return { ...this.refuse(`the recorded copy of ${from} is gone`, true), persist: this.state };
      }
      return this.refuse(`${this.state.primary} serves epoch ${this.state.epoch}`, true);
    }
    if (from !== this.state.backup) return this.refuse(`${from} is not the recorded backup`, true);
    if (!this.state.backupInSync) return this.refuse("the backup is recorded out of sync", true);
    if (nowMs < this.leaseUntilMs) {
      return this.refuse(`the primary's lease runs ${this.leaseUntilMs - nowMs} ms more`, true);
    }
    return this.newEpoch(from, this.state.primary, nowMs);
  }

  /** A claim without state from the recorded in-sync backup, under another process id than the one vouched for. */
  private copyGone(request: Extract<ArbiterRequest, { type: "claim" }>): boolean {
    const recorded = this.state.backupIncarnation;
    return request.from === this.state.backup && this.state.backupInSync && !this.state.backupCopyLost && recorded != null &&
      request.incarnation !== undefined && request.incarnation !== recorded;
  }

  /**
   * A server names an epoch this record never had: the record was lost (an empty or older disk).
   * Creating epochs from it could hand out an epoch or tokens again, so the arbiter stops
   * deciding (durably) until `mutexd arbiter recover` writes the cluster's record. Its refusals
   * name an epoch below the servers', which they ignore: the primary serves on its backup's
   * promises meanwhile.
   */
  private behind(epoch: number): ArbiterStep | undefined {
    if (epoch > this.state.epoch && epoch > (this.state.behindEpoch ?? 0)) {
      this.state = { ...this.state, behindEpoch: epoch };
      return { ...this.refuse(`the arbiter's record (epoch ${this.state.epoch}) is behind epoch ${epoch}: run mutexd arbiter recover`, false), persist: this.state };
    }
    if (this.state.behindEpoch !== undefined && this.state.behindEpoch > this.state.epoch) {
      return this.refuse(`the arbiter's record (epoch ${this.state.epoch}) is behind epoch ${this.state.behindEpoch}: run mutexd arbiter recover`, false);
    }
    return undefined;
  }

  private newEpoch(primary: string, backup: string | null, nowMs: number): ArbiterStep {
    const epoch = this.state.epoch + 1;
    assert(epoch > this.state.epoch, "epochs only grow");
    const tablesBefore = this.state.epoch > 0;
    this.state = { ...this.state, epoch, primary, backup, backupInSync: false, reportSeq: 0, backupIncarnation: null, backupCopyLost: false };
    return { reply: { ...this.grantLease(nowMs, true), tablesBefore }, persist: this.state };
  }

  private grantLease(nowMs: number, fresh: boolean): Extract<ArbiterReply, { type: "lease" }> {
    assert(this.state.primary !== null, "a lease needs a primary");
    this.leaseUntilMs = nowMs + this.options.leaseMs;
    const { epoch, primary, ttlMaxMs = null, tokenCeiling = null } = this.state;
    return { type: "lease", epoch, primary, leaseMs: this.options.leaseMs, fresh, ttlMaxMs, tokenCeiling };
  }

  private refuse(reason: string, becomeBackup: boolean): ArbiterStep {
    return { reply: { type: "refused", epoch: this.state.epoch, primary: this.state.primary, reason, becomeBackup } };
  }
}

/** The record with a renewal's asks applied: ttlMaxMs and tokenCeiling only grow (same object when nothing changes). */
function raiseRecord(state: ArbiterState, request: Extract<ArbiterRequest, { type: "renew" }>): ArbiterState {
  let next = state;
  // An unknown ttlMaxMs (null, a record from before) stays unknown: the old table's TTLs are not known.
  if (request.ttlMaxMs !== undefined && state.ttlMaxMs != null && request.ttlMaxMs > state.ttlMaxMs) {
    next = { ...next, ttlMaxMs: request.ttlMaxMs };
  }
  if (request.tokenCeiling !== undefined && request.tokenCeiling > (state.tokenCeiling ?? 0)) {
    next = { ...next, tokenCeiling: request.tokenCeiling };
  }
  return next;
}
