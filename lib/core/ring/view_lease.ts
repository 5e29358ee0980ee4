/**
 * The view change's side of the token lease (docs/ring-view.md, "The token lease"): the holder's
 * renewal (`wantLease`) and the outcome it reports as a decision, and the renewer's answer, which
 * holds this node's promises for a whole lease (token_lease.ts keeps the lease and the hold). A
 * layer of ViewCore (view_state.ts says why layers), over the vote (view_voting.ts).
 *
 * No clock, timers, randomness or I/O: time comes in as `nowMs`.
 */
import type { TokenLeaseHolder } from "./token_lease.ts";
import { ViewVoting } from "./view_voting.ts";
import { sameVoters, type ViewMessage } from "./view_wire.ts";

export abstract class ViewLease extends ViewVoting {
  /**
   * The holder of `epoch`'s token wants to grant sections up to `sectionMaxMs`: true when its
   * token lease is valid now for them (and the view's grant wait is over); otherwise a renewal
   * stating that bound starts (its outcome comes as a decision).
   */
  wantLease(epoch: number, nowMs: number, sectionMaxMs = this.options.settings.ringLeaseMaxMs): boolean {
    this.advance(nowMs);
    if (!this.view || this.view.epoch !== epoch || this.promised.epoch > epoch || this.deferred) return false;
    if (this.lease.covers(epoch, sectionMaxMs, nowMs)) return nowMs >= this.grantNotBeforeMs;
    const seq = this.lease.begin(epoch, sectionMaxMs, nowMs);
    if (seq !== null) {
      this.hold.renewed(nowMs, this.options.id, sectionMaxMs); // it counts itself: it holds itself like every renewer
      for (const to of this.others()) this.send(to, { type: "renew", from: this.options.id, epoch, seq, voters: [...this.ring], sectionMaxMs });
      // Its own OK (a ring of one has its majority at once; the decision says so).
      this.leaseOutcome(this.lease.answer(this.options.id, seq, true, this.ring.length));
    }
    return false;
  }

  protected onRenew(message: Extract<ViewMessage, { type: "renew" }>): void {
    const { from, epoch, seq, voters } = message;
    // A renewal stating no bound (an older build) may grant sections of any allowed length.
    // No section outlasts ringLeaseMaxMs, whatever a renewal states.
    const sectionMaxMs = Math.min(message.sectionMaxMs ?? this.options.settings.ringLeaseMaxMs, this.options.settings.ringLeaseMaxMs);
    // A lease of epoch e exists only in a view of e: a waiting prepare of an epoch up to e can no
    // longer win (a majority promised e). Refuse it now; backing the renewal would keep this node
    // held, and the prepare waiting, for as long as the holder renews.
    if (this.deferred && this.deferred.ballot.epoch <= epoch) this.rejectDeferred();
    // OK only if no newer ballot is promised or waiting to be, and under the same voter list (a
    // lease counts a majority of its holder's list: see changeMembership): then hold for a whole lease.
    const sameList = sameVoters(voters, this.ring);
    if (!sameList) this.event("renewOfOtherVoters", { from, epoch, voters: voters.join(","), ring: this.ring.join(",") });
    const ok = this.voter && sameList && this.promised.epoch <= epoch && (this.deferred === null || this.deferred.ballot.epoch <= epoch);
    if (ok) this.hold.renewed(this.nowMs, from, sectionMaxMs);
    // The first backing ever is stored (its hard state, as it is), so that a restart counts as one
    // and reports its restart hold: what it backed before is in memory only (review finding 8).
    if (ok && !this.hasPast) this.persist();
    this.answerTo(from, { type: "renewAnswer", from: this.options.id, epoch, seq, ok });
    // Its sender installed view `epoch`: newer than anything here means this node was left out
    // (a regenerator waiting for re-sent writes that never come back hears of it no other way:
    // review finding 5, simulator seed 90159 with 5 nodes).
    this.seeViewEpoch(epoch);
  }

  protected onRenewAnswer(message: Extract<ViewMessage, { type: "renewAnswer" }>): void {
    const outcome = this.lease.answer(message.from, message.seq, message.ok, this.ring.length);
    this.leaseOutcome(outcome);
    // Refused by so many that no majority is left: a voter refuses only once it promised (or is
    // about to promise) a newer epoch, so a majority has moved on, maybe without this node. A
    // holder does not probe for a lost token, and its successor may have taken its last hand-off
    // before moving on: nothing else would tell it. Rejoin (a view with it ends the wish).
    if (outcome.type === "failed") this.startViewChange("rejoin", this.nowMs);
  }

  protected leaseOutcome(outcome: ReturnType<TokenLeaseHolder["answer"]>): void {
    if (outcome.type === "valid") {
      this.out.decisions.push({ type: "lease", epoch: outcome.epoch, validUntilMs: outcome.validUntilMs, sectionMaxMs: outcome.sectionMaxMs });
      this.setQuorum(true, "token lease renewed");
    } else if (outcome.type === "failed") {
      this.setQuorum(false, `lease renewal: ${outcome.reason}`);
    }
  }
}
