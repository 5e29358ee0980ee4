/**
 * The view change's vote and install (docs/ring-view.md, "Voting"): a voter promises each epoch
 * once, within one voter list, and defers its promise while a token lease it backed may still be
 * valid (the lease hold); its promise carries the facts the coordinator decides from; a decided
 * view whose ballot it promised is installed and confirmed. A layer of ViewCore (view_state.ts
 * says why layers).
 *
 * No clock, timers, randomness or I/O: time comes in as `nowMs`.
 */
import { ballotText } from "./view_attempt.ts";
import { ViewState } from "./view_state.ts";
import { type Ballot, compareBallots, fenceFloor, type PromiseFacts, sameVoters, type View } from "./view_wire.ts";

export abstract class ViewVoting extends ViewState {
  protected onPrepare(from: string, ballot: Ballot, voters: readonly string[]): void {
    this.seeEpoch(ballot.epoch);
    if (!this.voter) return;
    const viewEpoch = this.view?.epoch ?? 0;
    // Votes count within one voter list only (see changeMembership): a coordinator of another
    // list is one reload ahead or behind this node.
    if (!sameVoters(voters, this.ring)) {
      this.event("prepareOfOtherVoters", { ballot: ballotText(ballot), voters: voters.join(","), ring: this.ring.join(",") });
      return this.answerTo(from, { type: "reject", from: this.options.id, ballot, promised: { ...this.promised }, viewEpoch });
    }
    // One promise per epoch: the ballot's epoch must be above everything promised or installed.
    if (ballot.epoch <= this.promised.epoch || ballot.epoch <= viewEpoch) {
      return this.answerTo(from, { type: "reject", from: this.options.id, ballot, promised: { ...this.promised }, viewEpoch });
    }
    if (this.hold.held(this.nowMs)) {
      // A lease this node renewed may still be valid at its holder: answer when the hold ends.
      if (this.deferred && compareBallots(this.deferred.ballot, ballot) >= 0) {
        return this.answerTo(from, { type: "reject", from: this.options.id, ballot, promised: { ...this.promised }, viewEpoch });
      }
      if (this.deferred) this.rejectDeferred();
      this.deferred = { from, ballot, voters: [...voters] };
      this.event("promiseDeferred", { ballot, untilMs: this.hold.heldUntilMs });
      // The coordinator waits for this promise rather than leaving this live node out of the view
      // (itself too: a restarted coordinator starts held, and a view without it would leave it out).
      const waitMs = Math.max(0, this.hold.heldUntilMs - this.nowMs);
      if (from !== this.options.id) {
        this.send(from, { type: "deferred", from: this.options.id, ballot: { ...ballot }, waitMs });
      } else {
        this.attempts.onDeferred(from, ballot, waitMs);
      }
      return;
    }
    const prior = this.promised;
    this.promised = { ...ballot };
    if (ballot.coordinator !== this.options.id) this.lastPromiseAtMs = this.nowMs;
    this.lease.drop();
    this.persist();
    this.out.decisions.push({ type: "promised", epoch: ballot.epoch });
    this.attempts.outdatedBy(ballot);
    const facts = this.promiseFacts();
    this.answerTo(from, { type: "promise", from: this.options.id, ballot: { ...ballot }, prior, viewEpoch, facts });
  }

  protected rejectDeferred(): void {
    const deferred = this.deferred!;
    this.deferred = null;
    const viewEpoch = this.view?.epoch ?? 0;
    this.answerTo(deferred.from, { type: "reject", from: this.options.id, ballot: deferred.ballot, promised: { ...this.promised }, viewEpoch });
  }

  protected promiseFacts(): PromiseFacts {
    const local = this.options.localFacts(this.nowMs);
    const left = this.neverLeft;
    const neverLeft = local.token === "sending" && left !== null && left.epoch === local.tokenEpoch && left.hop === local.tokenHop;
    const tokenHere = local.token === "held" ? "held" : neverLeft ? "neverLeft" : "no";
    // A holder that installed its view lately may itself still be waiting out older sections.
    const ownWaitMs = Math.max(0, this.grantNotBeforeMs - this.nowMs);
    const holdEndedAgoMs: Record<string, number> = {};
    const holdSectionMaxMs: Record<string, number> = {};
    for (const id of this.ring) {
      const restarted = this.restartedAtMs !== null;
      const untilMs = this.hold.heldUntilFor(id, restarted);
      // It promises only once every hold has ended, so each of these lies in the past.
      if (untilMs > Number.NEGATIVE_INFINITY) holdEndedAgoMs[id] = Math.max(0, this.nowMs - untilMs);
      const boundMs = this.hold.sectionBoundFor(id, restarted, this.options.settings.ringLeaseMaxMs);
      if (boundMs !== null) holdSectionMaxMs[id] = boundMs;
    }
    return {
      holdEndedAgoMs,
      holdSectionMaxMs,
      restartedAgoMs: this.restartedAtMs === null ? null : this.nowMs - this.restartedAtMs,
      lastApplied: local.lastApplied,
      lastWriteEpoch: local.lastWriteEpoch,
      commit: local.commit,
      tokenEpoch: local.tokenEpoch,
      tokenHop: local.tokenHop,
      tokenHere,
      sectionRemainingMs: Math.max(local.sectionRemainingMs, ownWaitMs, this.removedSectionsUntilMs - this.nowMs),
    };
  }

  protected onNewView(view: View): void {
    this.seeEpoch(view.epoch);
    if (!this.voter || !view.members.includes(this.options.id)) return;
    if (this.promised.epoch !== view.epoch || this.promised.coordinator !== view.coordinator) {
      this.event("newViewIgnored", { epoch: view.epoch, promised: ballotText(this.promised) });
      return;
    }
    // A resent copy of the installed view is confirmed again (the first confirmation may be lost).
    if (!this.view || this.view.epoch < view.epoch) this.install(view);
    else if (this.view.epoch > view.epoch) return;
    if (view.coordinator !== this.options.id) this.send(view.coordinator, { type: "installed", from: this.options.id, epoch: view.epoch });
  }

  protected install(view: View): void {
    this.view = { ...view, members: [...view.members] };
    this.persist();
    this.grantNotBeforeMs = this.nowMs + view.grantWaitMs;
    this.lease.drop();
    this.neverLeft = null;
    const members = view.members;
    const successor = members[(members.indexOf(this.options.id) + 1) % members.length];
    this.out.decisions.push({
      type: "install",
      view: { ...view, members: [...members] },
      successor,
      regenerate: view.regenerator === this.options.id,
      grantNotBeforeMs: this.grantNotBeforeMs,
      fenceFloor: fenceFloor(view.epoch),
    });
    this.event("viewInstalled", { epoch: view.epoch, members: members.join(","), regenerator: view.regenerator, grantWaitMs: view.grantWaitMs });
    this.setQuorum(true, `view ${view.epoch} installed`);
    if (this.wanted && view.epoch > this.wanted.aboveEpoch) this.wanted = null;
  }
}
