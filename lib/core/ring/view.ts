/**
 * The ring's view change as a pure, deterministic state machine (docs/ring-view.md).
 *
 * Removing a node, adding one back and regenerating a lost token are ONE epoch-raising view
 * change, Paxos phase 1 style:
 * - ballot = (epoch, coordinator), totally ordered; any ring node may coordinate, and so may the
 *   arbiter, which casts no vote. Votes are the ring nodes of the cluster file; a view needs
 *   promises from a strict majority of them (`quorum`), so an even split stops.
 * - A node promises each EPOCH once (to one coordinator), stores the promise before answering,
 *   and from then on refuses every token and write of an older epoch (decision "promised").
 *   Two majorities share a node, so at most one view exists per epoch.
 * - The new view's members are the promisers; the regenerator is the promiser with the highest
 *   (epoch of its last write, last applied wseq), ties to file order. Its first grant waits until
 *   every section of older epochs has ended (`grantWaitMs`, see decide.ts).
 * - A node held by a token lease it renewed (token_lease.ts) defers its promise until the hold
 *   ends, and a restarted node starts held: no older lease is valid once a view has its majority.
 *
 * - A node that could not even reach a majority canvasses (pre-vote) before it takes another
 *   epoch, so a node cut off for long does not burn epochs.
 *
 * Inputs: tick, startViewChange, changeMembership, receive (every peer message), sendFailed,
 * handoffRefused, wantLease, sectionGranted. Outputs via ready(): what to persist (BEFORE sending anything of the same ready),
 * messages, decisions for the ring node, events. No clock, timers, randomness or I/O.
 *
 * Its parts: the inputs and outputs (view_io.ts), the coordinator's attempt and announcement
 * (view_attempt.ts), the token-loss probe and the pre-vote canvass (view_probe.ts); and the
 * layers of the core itself (view_state.ts says why layers): its state, voters and output
 * (view_state.ts), the vote and the install (view_voting.ts), the token lease's messages
 * (view_lease.ts, over token_lease.ts). This file keeps the inputs: ticks, wishes for a view,
 * membership changes, the hand-off's facts, failed sends, received messages, and status.
 */
import { assertNever } from "../assert.ts";
import { ViewLease } from "./view_lease.ts";
import { emptyReady, type ViewChangeReason, type ViewReady, type ViewStatus } from "./view_io.ts";
import { checkViewMessage, sameVoters, votersDiff, type ViewMessage } from "./view_wire.ts";

export * from "./view_wire.ts";
export * from "./view_io.ts";

export class ViewCore extends ViewLease {
  ready(): ViewReady {
    const ready = this.out;
    this.out = emptyReady();
    return ready;
  }

  // ---- inputs ---------------------------------------------------------------------------

  tick(nowMs: number): void {
    this.advance(nowMs);
    if (this.deferred && !this.hold.held(nowMs)) {
      const { from, ballot, voters } = this.deferred;
      this.deferred = null;
      this.onPrepare(from, ballot, voters);
    }
    // Promised, but the view never came (coordinator died, newView lost): ask for one itself.
    const unsettled = this.voter && this.promised.epoch > (this.view?.epoch ?? 0);
    if (unsettled && !this.wanted && !this.attempts.running && nowMs >= this.lastPromiseAtMs + this.options.settings.viewChangeTimeoutMs) {
      this.startViewChange("rejoin", nowMs);
    }
    const failed = this.lease.expire(nowMs);
    if (failed.type === "failed") this.setQuorum(false, `lease renewal: ${failed.reason}`);
    this.attempts.tick();
    this.attempts.tickAnnounce(this.promised.epoch);
    this.probe.tick();
  }

  /**
   * The latest time the driver may tick next without delaying anything here (a pure read):
   * `nowMs` while anything runs on ticks (a wish, an attempt or its announcement, a deferred or
   * unsettled promise, a lease renewal, a probe or canvass), else when the token-loss probe may
   * start; +∞ when only an input can start something.
   */
  nextDeadlineMs(nowMs: number): number {
    const unsettled = this.voter && this.promised.epoch > (this.view?.epoch ?? 0);
    if (this.wanted || this.deferred || unsettled || this.attempts.busy || this.lease.renewing) return nowMs;
    return this.probe.nextCheckMs(nowMs);
  }

  /** The epoch this node promised or installed (what a `coordinate` request carries). */
  epochNow(): number {
    return this.currentEpoch();
  }

  /**
   * Asks for a new view (token lost, successor suspected, rejoin, membership change).
   * `ownAfterMs`: this node coordinates only after that long (it asked the arbiter to, and lets
   * it go first; a prepare that arrives meanwhile is promised as usual).
   */
  startViewChange(reason: ViewChangeReason, nowMs: number, ownAfterMs = 0): void {
    this.advance(nowMs);
    const arbiter = this.options.arbiter;
    if (!this.wanted && this.voter && arbiter !== null && arbiter !== this.options.id) {
      // Every wish, the driver's and the core's own (a lost token, a view that never came,
      // refused renewals, a membership change), goes to the arbiter first: it coordinates without
      // a vote, and this node coordinates itself only if no prepare came by then (the arbiter is
      // down or slow; a failed send ends the grace at once, see sendFailed).
      ownAfterMs = Math.max(ownAfterMs, this.options.settings.viewChangeRetryMs);
      this.send(arbiter, { type: "coordinate", from: this.options.id, reason, epoch: this.currentEpoch() });
    }
    if (!this.wanted && !this.attempts.running && ownAfterMs > 0) this.attempts.notBefore(nowMs + ownAfterMs);
    // The arbiter installs no view: its wish is about the newest epoch it has heard of.
    if (!this.wanted) this.wanted = { reason, aboveEpoch: this.voter ? this.currentEpoch() : this.highestSeenEpoch };
    this.event("viewChangeWanted", { reason, epoch: this.currentEpoch() });
    this.attempts.tick();
  }

  /**
   * The cluster file changed (SIGHUP): new voters, then a view change. Raft's single-server rule:
   * one node added or removed at a time, so a majority of the old list and one of the new list
   * always share a node (with n and n + 1 voters: (⌊n/2⌋ + 1) + ⌊(n+1)/2⌋ > n); votes count only
   * between nodes of the same list (onPrepare, onRenew); and a voter takes the next change only
   * once its installed view was decided under its current list. So a list two changes ahead is
   * used only after a view under the list between: views form only under lists one change apart,
   * and a node that voted under the newer one never votes under the older one again (review
   * finding 7). The arbiter votes in no list and skips the last rule. Returns the reason for a
   * refusal, or null.
   */
  changeMembership(ring: string[], nowMs: number): string | null {
    this.advance(nowMs);
    const { added, removed } = votersDiff(this.ring, ring);
    if (added.length + removed.length > 1) return `add or remove one ring node at a time (got +${added.join(",")} -${removed.join(",")})`;
    if (!ring.includes(this.options.id) && this.options.id !== this.options.arbiter) return `${this.options.id} is no longer in the ring`;
    if (added.length + removed.length === 0) return null;
    if (this.voter && !(this.view?.voters && sameVoters(this.view.voters, this.ring))) {
      const installed = !this.view ? "no view installed" : !this.view.voters
        ? `view ${this.view.epoch} has no voter list (stored by an earlier version)`
        : `view ${this.view.epoch} was decided under ${this.view.voters.join(",")}, not ${this.ring.join(",")}`;
      return `the previous membership change has not formed a view yet (${installed}): reload again once it has`;
    }
    this.attempts.abandon("membership changed");
    // A removed node may have granted sections the new list no longer accounts for (its holds
    // are not reported, and it is no non-promiser of the new list): this node reports them as
    // its own for one maximum section (review finding 3).
    if (removed.length > 0) this.removedSectionsUntilMs = nowMs + this.options.settings.ringLeaseMaxMs + this.options.settings.tokenLeaseSafetyMs;
    this.configure(ring);
    this.probe.forgetNonVoters();
    this.event("membershipChanged", { ring: ring.join(","), added: added.join(","), removed: removed.join(",") });
    this.startViewChange("membership", nowMs);
    return null;
  }

  /**
   * The token hand-off of (epoch, hop) was refused (at connect, or answered notYet/stale), and
   * so was every attempt of it before: the token never left here.
   */
  handoffRefused(epoch: number, hop: number, nowMs: number): void {
    this.advance(nowMs);
    this.neverLeft = { epoch, hop };
  }

  /**
   * An attempt of the hand-off (epoch, hop) may have been taken (it timed out, or the connection
   * was cut): whatever was refused before, the token may have left (review finding: a notYet,
   * then a retry taken by a receiver that died before answering, still counted as never left).
   */
  handoffUncertain(epoch: number, hop: number, nowMs: number): void {
    this.advance(nowMs);
    if (this.neverLeft?.epoch === epoch && this.neverLeft.hop === hop) this.neverLeft = null;
  }

  /**
   * This node, holding `epoch`'s token, granted a section of `leaseMs`: it tells the other voters
   * (`section`, best effort), whose token-loss probe counts the token as seen until the lease ends
   * (view_probe.ts). Without it, a section longer than tokenLossMs on a holder too loaded to answer
   * the probe within viewPromiseWaitMs ended in a needless view change. A section that ends within
   * tokenLossMs / 2 after the last one announced goes unannounced (ViewProbe.announceSection).
   */
  sectionGranted(epoch: number, leaseMs: number, nowMs: number): void {
    this.advance(nowMs);
    const n = this.probe.announceSection(epoch, leaseMs);
    if (n === null) return;
    for (const to of this.others()) this.send(to, { type: "section", from: this.options.id, epoch, leaseMs, n });
  }

  /** A message could not be delivered (connect refused, timeout): for a prepare, a "no". */
  sendFailed(to: string, message: ViewMessage, nowMs: number): void {
    this.advance(nowMs);
    if (message.type === "prepare") this.attempts.unreachable(to, message.ballot);
    // The arbiter cannot be reached: no point leaving it the grace.
    if (message.type === "coordinate") {
      this.attempts.graceOver();
      this.attempts.tick();
    }
    if (message.type === "probe") this.probe.unreachable(to);
  }

  receive(message: ViewMessage, nowMs: number): void {
    this.advance(nowMs);
    const problem = checkViewMessage(message, this.ring, this.options.arbiter, this.quorum);
    if (problem) {
      this.event("badViewMessage", { from: message?.from, type: message?.type, problem });
      return;
    }
    switch (message.type) {
      case "probe":
        return this.probe.onProbe(message.from);
      case "probeReply":
        return this.probe.onProbeReply(message);
      case "prepare":
        return this.onPrepare(message.from, message.ballot, message.voters);
      case "promise":
        return this.attempts.onPromise(message);
      case "reject":
        return this.attempts.onReject(message);
      case "deferred":
        return this.attempts.onDeferred(message.from, message.ballot, message.waitMs);
      case "newView":
        return this.onNewView(message.view);
      case "installed":
        this.attempts.onInstalled(message.from, message.epoch);
        this.event("viewInstalledAt", { node: message.from, epoch: message.epoch });
        return;
      case "renew":
        return this.onRenew(message);
      case "section":
        return this.probe.onSection(message.from, message.epoch, message.leaseMs, message.n);
      case "sectionEnd":
        return this.probe.onSectionEnd(message.from, message.epoch, message.n);
      case "coordinate":
        // The arbiter (a non-voter) coordinates what a ring node asks for; a ring node coordinates
        // its own wishes only.
        if (!this.voter) {
          this.seeEpoch(message.epoch); // the asker's epoch: the arbiter's ballot goes above it
          // Served once any view above the asker's epoch exists (another coordinator may win). A
          // new wish starts there (above every epoch seen); one already held is raised BEFORE
          // startViewChange, whose tick may decide the running attempt and end the wish.
          if (this.wanted) this.wanted.aboveEpoch = Math.max(this.wanted.aboveEpoch, message.epoch);
          this.startViewChange(message.reason as ViewChangeReason, nowMs);
        }
        return;
      case "renewAnswer":
        return this.onRenewAnswer(message);
      default:
        return assertNever(message, "view message");
    }
  }

  status(nowMs: number): ViewStatus {
    return {
      id: this.options.id,
      promised: { ...this.promised },
      view: this.view ? { ...this.view, members: [...this.view.members] } : null,
      member: this.isMember(),
      quorum: this.quorumOk ? "ok" : "lost",
      coordinating: this.attempts.ballot(),
      wanted: this.wanted?.reason ?? null,
      leaseValidUntilMs: this.view && this.lease.valid(this.view.epoch, nowMs) ? this.lease.validUntil(this.view.epoch) : null,
      promiseHeldUntilMs: this.hold.heldUntilMs,
      sectionSeenUntilMs: this.probe.sectionSeenUntilMs(),
    };
  }
}
