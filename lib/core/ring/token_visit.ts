/**
 * The token's visit at a ring node and its hand-off (docs/ring.md, "The token", "Visits and idle
 * pacing", "The token lease"): taking the token from the predecessor (epoch and hop checks, the
 * stale suffix dropped), then at each step moving it along as far as it can go (catch up, ask
 * for a token lease, grant, wait for writes, rest while idle or pass it on), and waking the
 * ring when clients wait here without it. A layer of the RingNode (ring_node_state.ts says why
 * layers), over its critical sections (ring_sections.ts).
 *
 * No clock, timer, randomness or I/O in here: time comes in as `nowMs`.
 */
import { assert } from "../assert.ts";
import { type Holding, inputError } from "./ring_node_state.ts";
import { RingSections } from "./ring_sections.ts";
import type { RingResult } from "./ring_io.ts";
import type { RingToken } from "./ring_types.ts";

export abstract class TokenVisit extends RingSections {
  /** Whether a token or writes of `epoch` may be taken now; otherwise the refusal. */
  protected epochCheck(epoch: number): RingResult | null {
    if (epoch < this.epoch || epoch < this.refuseBelowEpoch) {
      return { ok: false, type: "stale", epoch: Math.max(this.epoch, this.refuseBelowEpoch) };
    }
    if (epoch > this.epoch) return { ok: false, type: "notYet", epoch: this.epoch };
    return null;
  }

  protected receiveToken(from: string, token: RingToken): RingResult {
    if (token.commit !== token.wseq) {
      // Every holder waits for its writes to come back before it passes the token.
      return inputError("bad_request", `a token in transit has commit = wseq (got ${token.commit} and ${token.wseq})`);
    }
    const refusal = this.epochCheck(token.epoch);
    if (refusal) {
      this.event("tokenNotTaken", { epoch: token.epoch, hop: token.hop, ourEpoch: this.epoch, answer: refusal.type });
      return refusal;
    }
    if (from !== this.predecessor) return inputError("bad_request", `${from} is not the predecessor of ${this.id}`);
    if (token.hop <= this.lastHop) return { ok: true, type: "token", duplicate: true };
    assert(this.holding === null, `second token in epoch ${token.epoch}: hop ${token.hop} while holding`);
    // A write of this epoch above the token's wseq could only come from a second token.
    for (let w = token.wseq + 1; w <= this.replica.lastApplied; w++) {
      const above = this.replica.entryAt(w);
      assert(above === undefined || above.epoch < token.epoch, `write ${w} of epoch ${above?.epoch} above the wseq ${token.wseq} of its epoch's token`);
    }
    this.lastHop = token.hop;
    this.lastToken = { epoch: token.epoch, hop: token.hop };
    // Our own hand-off got through if the token came back around: stop resending it.
    if (this.sending) {
      this.sending = null;
      this.effects.push({ type: "tokenReturned", epoch: token.epoch, hop: token.hop });
    }
    if (this.lastArrivalMs !== null) this.lastRotationMs = this.nowMs - this.lastArrivalMs;
    this.lastArrivalMs = this.nowMs;
    this.lastTokenAtMs = this.nowMs;
    this.fenceMax = Math.max(this.fenceMax, token.fence);
    this.dropStaleSuffix(token);
    const copy = { ...token };
    if (this.nowMs < this.wakeUntilMs) copy.idleHops = 0;
    this.holding = {
      token: copy,
      arrivedAtMs: this.nowMs,
      grantsLeft: this.waiters.length,
      granted: false,
      passAtMs: null,
      outstanding: new Map(),
    };
    return { ok: true, type: "token", duplicate: false };
  }

  /**
   * Writes above the token's wseq are uncommitted leftovers of an older epoch: the token's wseq
   * is the highest one assigned in its epoch, and it starts at the regenerator's last applied
   * write, which covers every committed one (docs/ring-view.md). They must go before this node writes at
   * those places (the new epoch reassigns them), so the log is cut back to the token's wseq;
   * writes at or below it were replaced by the new epoch's versions, which travel ahead of the
   * token, and committed ones missing here are fetched before any grant (`proceed`).
   */
  protected dropStaleSuffix(token: RingToken): void {
    const replica = this.replica;
    if (replica.lastApplied <= token.wseq) return;
    const dropped = replica.lastApplied - token.wseq;
    this.writes.truncate(token.wseq + 1);
    this.event("staleWritesDropped", { epoch: token.epoch, from: token.wseq + 1, count: dropped });
  }

  /** Moves the token along as far as it can go now, then asks for it if waiters are left without it. */
  protected proceed(): void {
    this.moveToken();
    this.wakeIfWanted();
  }

  /**
   * Waiters here and the token elsewhere: wake every node, at most once per tokenIdlePaceMs. A
   * wake is in force at its receivers for 2 × tokenIdlePaceMs, so while this node has waiters the
   * others never rest the token; this covers waiters left over when the token moved on (they
   * arrived during the visit) as well as a first waiter, at a few requests per second.
   */
  protected wakeIfWanted(): void {
    if (this.holding || this.waiters.length === 0) return;
    if (this.nowMs - this.wokeAtMs < this.options.limits.tokenIdlePaceMs) return;
    this.wokeAtMs = this.nowMs;
    this.effects.push({ type: "wakeAll" });
  }

  /** Moves the token along as far as it can go now: catch up, grant, wait for writes, or pass. */
  protected moveToken(): void {
    if (this.waiters.length > 0) this.renewEarly();
    const holding = this.holding;
    if (!holding) return;
    if (holding.token.commit > this.replica.lastApplied) {
      // Behind on committed writes: no grant before this node has them.
      this.writes.requestFetch();
      return;
    }
    this.writes.learnCommit(holding.token.commit);
    if (this.section || holding.outstanding.size > 0) return;
    // Waiters that arrived during the visit are served in it while it is young: younger than
    // tokenIdlePaceMs while no other node asked for the token (no wake: nobody is made to wait,
    // and a lone client no longer waits a whole rotation per section), younger than tokenHoldMs
    // under contention (the token ring's holding time: each visit delays the others by at most
    // that plus one section, and a client that leaves and asks again at once is served again).
    if (holding.grantsLeft === 0 && this.waiters.length > 0 && this.visitOpen(holding)) holding.grantsLeft = 1;
    if (holding.grantsLeft > 0 && this.waiters.length > 0) {
      const paceMs = this.options.limits.tokenIdlePaceMs;
      if (this.grantNotBeforeMs - this.nowMs > paceMs) {
        // The view's wait for older sections: no member grants yet. The token moves on at the
        // idle pace meanwhile, so the members see it: resting here for the whole wait, it would
        // be taken for lost after tokenLossMs by every other member (another view change,
        // another wait: found by the ring benchmark under packet loss).
        holding.passAtMs ??= holding.arrivedAtMs + paceMs;
        if (this.nowMs >= holding.passAtMs) this.pass();
        return;
      }
      // No grant without a majority's lease (renewEarly asked for it): a token cut off from the
      // majority is not usable. Nor a section longer than the lease's stated bound (the view
      // change counts on it: docs/ring.md "The token lease"; renewEarly asks for a larger one).
      // Nor before the view's wait for older sections is over.
      if (!this.leaseValid() || this.waiters.next!.leaseMs > this.lease!.sectionMaxMs || this.nowMs < this.grantNotBeforeMs) return;
      holding.grantsLeft -= 1;
      this.grant(this.waiters.shift()!, holding);
      return;
    }
    if (this.waiters.length > 0) {
      // Those arrived during this visit; they are served at the next, which must come soon.
      holding.token.idleHops = 0;
      this.pass();
      return;
    }
    // After a visit with grants the token rests here while the visit is open (visitOpen): the
    // node whose client just left is the likeliest to be asked next. While nobody else asks, like
    // an idle token (a wake from another node's first waiter sends it on at once, and it leaves
    // after tokenIdlePaceMs anyway). Under contention only within the holding time tokenHoldMs:
    // a client that left and asks again at once is served in this visit instead of costing a hop
    // of the token per section (issue 14: 8 clients on 5 nodes), and the others wait no longer
    // than the holding time already allowed. The pass is then due at the end of the holding time.
    if (holding.granted && this.visitOpen(holding)) {
      if (!this.uncontended(holding)) holding.passAtMs = holding.arrivedAtMs + this.options.limits.tokenHoldMs;
      return;
    }
    if (holding.token.idleHops < this.ring.length || this.nowMs < this.wakeUntilMs) {
      this.pass();
      return;
    }
    holding.passAtMs ??= holding.arrivedAtMs + this.options.limits.tokenIdlePaceMs;
    if (this.nowMs >= holding.passAtMs) this.pass();
  }

  /**
   * A waiter is queued here: have a lease ready for the token's arrival (or the end of the
   * running section), renewed once less than a quarter of tokenLeaseMs is left, so a grant does not wait one renewal
   * after the token came. A lease without the token grants nothing, so asking early is safe.
   */
  protected renewEarly(): void {
    if (this.epoch === 0 || this.refuseBelowEpoch > this.epoch) return; // no view to lease in
    const lease = this.lease;
    // A quarter of tokenLeaseMs ahead: far more than a renewal's round trip, and few renewals.
    const aheadMs = this.options.limits.tokenLeaseMs / 4;
    const sectionMaxMs = this.waiters.longestLeaseMs;
    if (!this.leaseValid() || lease!.validUntilMs - this.nowMs < aheadMs || lease!.sectionMaxMs < sectionMaxMs) {
      this.effects.push({ type: "wantLease", epoch: this.epoch, sectionMaxMs });
    }
  }

  /** No other node asked for the token lately (no wake in force), and the visit is younger than tokenIdlePaceMs. */
  protected uncontended(holding: Holding): boolean {
    return this.nowMs >= this.wakeUntilMs && this.nowMs < holding.arrivedAtMs + this.options.limits.tokenIdlePaceMs;
  }

  /** Whether this visit may still serve waiters that arrived during it (see proceed). */
  protected visitOpen(holding: Holding): boolean {
    return this.uncontended(holding) || this.nowMs < holding.arrivedAtMs + this.options.limits.tokenHoldMs;
  }

  protected leaseValid(): boolean {
    return this.lease !== null && this.lease.epoch === this.epoch && this.nowMs < this.lease.validUntilMs;
  }

  protected pass(): void {
    const holding = this.holding;
    assert(holding !== null, "pass without the token");
    assert(this.section === null && holding.outstanding.size === 0, "pass during a section or with writes out");
    assert(holding.token.commit === holding.token.wseq, "a token is passed only with every write committed");
    const token: RingToken = { ...holding.token, hop: holding.token.hop + 1, idleHops: holding.token.idleHops + 1 };
    this.holding = null;
    this.sending = { epoch: token.epoch, hop: token.hop };
    this.lastToken = { epoch: token.epoch, hop: token.hop };
    this.lastTokenAtMs = this.nowMs;
    this.effects.push({ type: "sendToken", to: this.successor, token });
  }
}
