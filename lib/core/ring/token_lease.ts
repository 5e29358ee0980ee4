/**
 * The token lease: a ring node grants a critical section only while a majority of the cluster
 * file's ring nodes has recently promised not to help form a newer view (docs/ring-view.md).
 *
 * - The holder asks every ring node "renew epoch e". A node answers OK only if it has promised
 *   no ballot of a newer epoch (and is not about to: see view.ts), and from its receipt on it
 *   refuses to promise any newer ballot for `tokenLeaseMs` (its *hold*, kept in memory).
 * - The holder counts its lease from the SEND time of the request, minus `tokenLeaseSafetyMs`,
 *   and needs OKs from a majority including itself (it holds itself the same way).
 * - A view change needs promises from a majority too. The two majorities share a node, which
 *   promises only after its hold ran out, that is after the holder's lease ended. So when a new
 *   view has its majority, no lease of an older epoch is still valid anywhere.
 *
 * Why a majority of the FILE and not of the view: a view may be a bare majority (3 of 5); a
 * majority of it (2) and a majority of the file (3) need not intersect.
 *
 * Pure: time comes in as `nowMs`.
 */
import { assert } from "../assert.ts";

export interface TokenLeaseTimes {
  tokenLeaseMs: number;
  tokenLeaseSafetyMs: number;
  /** A renewal without a majority of OKs by then has failed (minority). */
  viewChangeTimeoutMs: number;
}

interface Renewal {
  seq: number;
  epoch: number;
  sentAtMs: number;
  /** The longest section the holder may grant under this renewal's lease (it states it in `renew`). */
  sectionMaxMs: number;
  oks: Set<string>;
  refusals: Set<string>;
}

export type RenewOutcome =
  | { type: "none" }
  | { type: "valid"; epoch: number; validUntilMs: number; sectionMaxMs: number }
  | { type: "failed"; epoch: number; reason: string };

/** The holder's side: at most one renewal in flight, one lease (for one epoch). */
export class TokenLeaseHolder {
  private epoch = -1;
  private validUntilMs = Number.NEGATIVE_INFINITY;
  /** The bound the latest renewal stated: no longer section is granted under the lease. */
  private sectionMaxMs = 0;
  private renewal: Renewal | null = null;
  private seq = 0;

  constructor(private readonly self: string, private readonly quorum: number, private readonly times: TokenLeaseTimes) {
    assert(quorum >= 1, "a lease quorum has at least one node");
  }

  /** True when this node may grant in `epoch` now. */
  valid(epoch: number, nowMs: number): boolean {
    return this.epoch === epoch && nowMs < this.validUntilMs;
  }

  validUntil(epoch: number): number | null {
    return this.epoch === epoch ? this.validUntilMs : null;
  }

  /** True when the lease of `epoch` is valid now and allows sections of `sectionMaxMs`. */
  covers(epoch: number, sectionMaxMs: number, nowMs: number): boolean {
    return this.valid(epoch, nowMs) && sectionMaxMs <= this.sectionMaxMs;
  }

  /**
   * Starts a renewal for `epoch`, allowing sections up to `sectionMaxMs`, unless one is in flight
   * and not yet timed out. Returns its sequence number (to send as "renew epoch e, seq,
   * sectionMaxMs"), or null when nothing is to be sent.
   */
  begin(epoch: number, sectionMaxMs: number, nowMs: number): number | null {
    assert(Number.isSafeInteger(sectionMaxMs) && sectionMaxMs >= 0, `a lease's section bound is a count of ms, not ${sectionMaxMs}`);
    const current = this.renewal;
    if (current && current.epoch === epoch && nowMs < current.sentAtMs + this.times.viewChangeTimeoutMs) return null;
    this.seq += 1;
    this.renewal = { seq: this.seq, epoch, sentAtMs: nowMs, sectionMaxMs, oks: new Set([this.self]), refusals: new Set() };
    return this.seq;
  }

  /** An answer to renewal `seq`; says when the lease became valid or the renewal failed. */
  answer(from: string, seq: number, ok: boolean, ringSize: number): RenewOutcome {
    const renewal = this.renewal;
    if (!renewal || renewal.seq !== seq) return { type: "none" }; // late: a newer renewal counts
    (ok ? renewal.oks : renewal.refusals).add(from);
    if (renewal.oks.size >= this.quorum) {
      this.renewal = null;
      const until = renewal.sentAtMs + this.times.tokenLeaseMs - this.times.tokenLeaseSafetyMs;
      // Renewals are sequential, so this one ends last: its end and its bound replace the older
      // ones (a grant checked against them is covered by this renewal's backers: docs/ring.md).
      this.validUntilMs = this.epoch === renewal.epoch ? Math.max(this.validUntilMs, until) : until;
      this.sectionMaxMs = renewal.sectionMaxMs;
      this.epoch = renewal.epoch;
      return { type: "valid", epoch: renewal.epoch, validUntilMs: this.validUntilMs, sectionMaxMs: this.sectionMaxMs };
    }
    if (ringSize - renewal.refusals.size < this.quorum) {
      this.renewal = null;
      return { type: "failed", epoch: renewal.epoch, reason: `${renewal.refusals.size} of ${ringSize} ring nodes refused` };
    }
    return { type: "none" };
  }

  /** Called on ticks: a renewal that got no majority in time has failed. */
  /** Whether a renewal is out (its timeout runs on ticks: `expire`). */
  get renewing(): boolean {
    return this.renewal !== null;
  }

  expire(nowMs: number): RenewOutcome {
    const renewal = this.renewal;
    if (!renewal || nowMs < renewal.sentAtMs + this.times.viewChangeTimeoutMs) return { type: "none" };
    this.renewal = null;
    return { type: "failed", epoch: renewal.epoch, reason: `${renewal.oks.size} OKs in ${this.times.viewChangeTimeoutMs} ms, ${this.quorum} needed` };
  }

  /** This node promised a newer view: its lease and any renewal in flight are void at once. */
  drop(): void {
    this.epoch = -1;
    this.validUntilMs = Number.NEGATIVE_INFINITY;
    this.sectionMaxMs = 0;
    this.renewal = null;
  }
}

/**
 * The renewer's side: until when this node must not promise a newer ballot. In memory only:
 * a restarted node starts held for a whole `tokenLeaseMs` (it may have renewed just before).
 *
 * It also remembers, per requester, when its hold for that requester's lease ends, and the
 * latest end of (hold + the section bound the renewal stated): every lease of a node ends before
 * the holds of all its backers for it, and a section granted under it ends within its bound after,
 * so a view change can bound when the last section a dead or cut-off node could have granted ends
 * (decide.ts, docs/ring.md "The token lease"). Bounded by the ring's size (the requesters are ring
 * nodes, checked on the wire).
 */
export class LeaseHold {
  private untilMs: number;
  /** The restart hold: it covers every requester (what was backed before the restart is unknown). */
  private readonly restartUntilMs: number;
  private readonly byRequester = new Map<string, { untilMs: number; sectionsEndMs: number }>();

  constructor(private readonly tokenLeaseMs: number, startedAtMs: number) {
    this.untilMs = startedAtMs + tokenLeaseMs;
    this.restartUntilMs = this.untilMs;
  }

  /**
   * This node answered OK to `requester`'s renewal received now (or renews its own lease), whose
   * lease allows sections up to `sectionMaxMs`.
   */
  renewed(nowMs: number, requester: string, sectionMaxMs: number): void {
    const holdEndMs = nowMs + this.tokenLeaseMs;
    this.untilMs = Math.max(this.untilMs, holdEndMs);
    const before = this.byRequester.get(requester);
    this.byRequester.set(requester, {
      untilMs: Math.max(before?.untilMs ?? Number.NEGATIVE_INFINITY, holdEndMs),
      sectionsEndMs: Math.max(before?.sectionsEndMs ?? Number.NEGATIVE_INFINITY, holdEndMs + sectionMaxMs),
    });
  }

  /** When the hold for `requester`'s leases ends (−∞: it never backed one, since a start without a past). */
  heldUntilFor(requester: string, restarted: boolean): number {
    const own = this.byRequester.get(requester)?.untilMs ?? Number.NEGATIVE_INFINITY;
    return restarted ? Math.max(own, this.restartUntilMs) : own;
  }

  /**
   * How long after `heldUntilFor(requester)` the sections of `requester`'s leases this node backed
   * end at the latest (null: it never backed one). A restarted node may have backed leases of any
   * bound before: its restart hold counts `unknownBoundMs` (ringLeaseMaxMs), until its own later
   * holds reach past that.
   */
  sectionBoundFor(requester: string, restarted: boolean, unknownBoundMs: number): number | null {
    const heldUntilMs = this.heldUntilFor(requester, restarted);
    if (heldUntilMs === Number.NEGATIVE_INFINITY) return null;
    const ownEndMs = this.byRequester.get(requester)?.sectionsEndMs ?? Number.NEGATIVE_INFINITY;
    const endMs = restarted ? Math.max(ownEndMs, this.restartUntilMs + unknownBoundMs) : ownEndMs;
    return endMs - heldUntilMs;
  }

  held(nowMs: number): boolean {
    return nowMs < this.untilMs;
  }

  get heldUntilMs(): number {
    return this.untilMs;
  }
}
