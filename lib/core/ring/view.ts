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
 * handoffRefused, wantLease. Outputs via ready(): what to persist (BEFORE sending anything of the same ready),
 * messages, decisions for the ring node, events. No clock, timers, randomness or I/O.
 *
 * Its parts: the inputs and outputs (view_io.ts), the coordinator's attempt and announcement
 * (view_attempt.ts), the token-loss probe and the pre-vote canvass (view_probe.ts); the core
 * keeps the vote, the install and the token lease's messages (token_lease.ts).
 */
import { assert, assertNever } from "../assert.ts";
import { LeaseHold, TokenLeaseHolder } from "./token_lease.ts";
import { ballotText, ViewAttempts } from "./view_attempt.ts";
import { ViewProbe } from "./view_probe.ts";
import { emptyReady, type ViewChangeReason, type ViewOptions, type ViewReady, type ViewStatus } from "./view_io.ts";
import {
  type Ballot,
  checkViewMessage,
  compareBallots,
  fenceFloor,
  sameVoters,
  votersDiff,
  type PromiseFacts,
  type View,
  type ViewHardState,
  type ViewMessage,
} from "./view_wire.ts";

export * from "./view_wire.ts";
export * from "./view_io.ts";

const NO_BALLOT: Ballot = { epoch: 0, coordinator: "" };

export class ViewCore {
  private promised: Ballot;
  private view: View | null;
  /** Until then a node removed by a reload may still have a client in a section (see changeMembership). */
  private removedSectionsUntilMs = Number.NEGATIVE_INFINITY;
  /** The ring nodes of the cluster file (the voters), in file order; see changeMembership. */
  private ring: string[] = [];
  private voter = false;
  private quorum = 1;
  private rank = 0;
  private readonly hold: LeaseHold;
  /** Whether a hard state was ever stored (a restart then holds and reports its restart). */
  private hasPast: boolean;
  /** When this incarnation started, if the node ran before (it had a stored hard state); else null. */
  private readonly restartedAtMs: number | null;
  private lease!: TokenLeaseHolder;
  /** The coordinator's side: its attempt and the announcement of the view it decided. */
  private readonly attempts: ViewAttempts;
  /** The token-loss probe and the pre-vote canvass. */
  private readonly probe: ViewProbe;
  private wanted: { reason: ViewChangeReason; aboveEpoch: number } | null = null;
  /** A prepare that waits for this node's lease hold to end (the highest one only). */
  private deferred: { from: string; ballot: Ballot; voters: readonly string[] } | null = null;
  private lastPromiseAtMs = Number.NEGATIVE_INFINITY;
  private highestSeenEpoch = 0;
  /** The newest view epoch reported as "behind" (once per epoch). */
  private behindEpoch = 0;
  private grantNotBeforeMs = Number.NEGATIVE_INFINITY;
  private neverLeft: { epoch: number; hop: number } | null = null;
  private quorumOk = true;
  private nowMs: number;
  private out: ViewReady = emptyReady();

  constructor(private readonly options: ViewOptions, stored: ViewHardState | null, nowMs: number) {
    const { ring, settings } = options;
    this.configure(ring);
    this.promised = stored?.promised ?? NO_BALLOT;
    this.view = stored?.view ?? null;
    this.highestSeenEpoch = Math.max(this.promised.epoch, this.view?.epoch ?? 0);
    // It may have renewed a lease just before it stopped: no promise for a whole lease.
    this.hold = new LeaseHold(settings.tokenLeaseMs, nowMs);
    this.restartedAtMs = stored ? nowMs : null;
    this.hasPast = stored !== null;
    this.nowMs = nowMs;
    const { id } = options;
    // Closures, not copies: configure changes the voters, and calls go through the prototype.
    const common = {
      id,
      settings,
      nowMs: () => this.nowMs,
      quorum: () => this.quorum,
      voter: () => this.voter,
      others: () => this.others(),
      send: (to: string, message: ViewMessage) => this.send(to, message),
      event: (event: string, fields: Record<string, unknown>) => this.event(event, fields),
      setQuorum: (ok: boolean, reason: string) => this.setQuorum(ok, reason),
      seeViewEpoch: (viewEpoch: number) => this.seeViewEpoch(viewEpoch),
    };
    this.probe = new ViewProbe({
      ...common,
      localFacts: () => options.localFacts(this.nowMs),
      voterCount: () => this.ring.length,
      viewEpoch: () => this.view?.epoch ?? 0,
      grantNotBeforeMs: () => this.grantNotBeforeMs,
      mayProbe: () => this.isMember() && !this.wanted && !this.attempts.running,
      answerTo: (to, message) => this.answerTo(to, message),
      canvassAnswered: () => this.attempts.tick(),
      backOff: () => this.attempts.backOff(),
      tokenLost: () => this.startViewChange("tokenLoss", this.nowMs),
    });
    this.attempts = new ViewAttempts({
      ...common,
      ring: () => this.ring,
      rank: () => this.rank,
      wanted: () => this.wanted,
      clearWanted: () => this.wanted = null,
      promisedLately: () =>
        this.promised.epoch > (this.view?.epoch ?? 0) && this.nowMs < this.lastPromiseAtMs + settings.viewChangeTimeoutMs,
      prepareDeferred: () => this.deferred !== null,
      mayTakeEpoch: () => this.probe.mayTakeEpoch(),
      needCanvass: (needed) => this.probe.needCanvass(needed),
      highestSeenEpoch: () => this.highestSeenEpoch,
      seeEpoch: (epoch) => this.seeEpoch(epoch),
      onPrepare: (from, ballot, voters) => this.onPrepare(from, ballot, voters),
      onNewView: (view) => this.onNewView(view),
    });
  }

  /** Sets the voters; a new majority needs a new lease (the old one counted other voters). */
  private configure(ring: string[]): void {
    const { id, arbiter } = this.options;
    assert(new Set(ring).size === ring.length && ring.length > 0, "ring ids must be unique and non-empty");
    assert(ring.includes(id) || id === arbiter, `${id} is neither a ring node nor the arbiter`);
    this.ring = [...ring];
    this.voter = ring.includes(id);
    this.quorum = Math.floor(ring.length / 2) + 1;
    this.rank = this.voter ? ring.indexOf(id) : ring.length;
    this.lease = new TokenLeaseHolder(id, this.quorum, this.options.settings);
  }

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
    };
  }

  // ---- voting ---------------------------------------------------------------------------

  private onPrepare(from: string, ballot: Ballot, voters: readonly string[]): void {
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

  private rejectDeferred(): void {
    const deferred = this.deferred!;
    this.deferred = null;
    const viewEpoch = this.view?.epoch ?? 0;
    this.answerTo(deferred.from, { type: "reject", from: this.options.id, ballot: deferred.ballot, promised: { ...this.promised }, viewEpoch });
  }

  private promiseFacts(): PromiseFacts {
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

  private onNewView(view: View): void {
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

  private install(view: View): void {
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

  // ---- token lease ------------------------------------------------------------------------

  private onRenew(message: Extract<ViewMessage, { type: "renew" }>): void {
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

  private onRenewAnswer(message: Extract<ViewMessage, { type: "renewAnswer" }>): void {
    const outcome = this.lease.answer(message.from, message.seq, message.ok, this.ring.length);
    this.leaseOutcome(outcome);
    // Refused by so many that no majority is left: a voter refuses only once it promised (or is
    // about to promise) a newer epoch, so a majority has moved on, maybe without this node. A
    // holder does not probe for a lost token, and its successor may have taken its last hand-off
    // before moving on: nothing else would tell it. Rejoin (a view with it ends the wish).
    if (outcome.type === "failed") this.startViewChange("rejoin", this.nowMs);
  }

  private leaseOutcome(outcome: ReturnType<TokenLeaseHolder["answer"]>): void {
    if (outcome.type === "valid") {
      this.out.decisions.push({ type: "lease", epoch: outcome.epoch, validUntilMs: outcome.validUntilMs, sectionMaxMs: outcome.sectionMaxMs });
      this.setQuorum(true, "token lease renewed");
    } else if (outcome.type === "failed") {
      this.setQuorum(false, `lease renewal: ${outcome.reason}`);
    }
  }

  // ---- helpers ----------------------------------------------------------------------------

  private advance(nowMs: number): void {
    assert(Number.isFinite(nowMs) && nowMs >= this.nowMs, `time went backwards: ${nowMs} < ${this.nowMs}`);
    this.nowMs = nowMs;
  }

  private currentEpoch(): number {
    return Math.max(this.promised.epoch, this.view?.epoch ?? 0);
  }

  private seeEpoch(epoch: number): void {
    this.highestSeenEpoch = Math.max(this.highestSeenEpoch, epoch);
  }

  /** Another node installed view `viewEpoch`; newer than anything here: this node is behind. */
  private seeViewEpoch(viewEpoch: number): void {
    this.seeEpoch(viewEpoch);
    // The arbiter installs nothing: a wish it coordinates is served by any newer view, its own or
    // a ring node's (else it would force one more view change later: review finding 6).
    if (!this.voter && this.wanted && viewEpoch > this.wanted.aboveEpoch) this.wanted = null;
    if (viewEpoch <= this.currentEpoch() || viewEpoch <= this.behindEpoch) return;
    this.behindEpoch = viewEpoch;
    this.out.decisions.push({ type: "behind", viewEpoch });
    this.event("behind", { viewEpoch, epoch: this.currentEpoch() });
  }

  private isMember(): boolean {
    return this.view !== null && this.view.members.includes(this.options.id) && this.promised.epoch <= this.view.epoch;
  }

  private others(): string[] {
    return this.ring.filter((id) => id !== this.options.id);
  }

  /** Answers `to`; an answer to itself (its own ballot) is fed back at once. */
  private answerTo(to: string, message: ViewMessage): void {
    if (to === this.options.id) this.receive(message, this.nowMs);
    else this.send(to, message);
  }

  private send(to: string, message: ViewMessage): void {
    this.out.send.push({ to, message });
  }

  private persist(): void {
    this.hasPast = true;
    this.out.persist = { promised: { ...this.promised }, view: this.view ? { ...this.view, members: [...this.view.members] } : null };
  }

  private setQuorum(ok: boolean, reason: string): void {
    if (ok === this.quorumOk) return;
    this.quorumOk = ok;
    this.out.decisions.push({ type: "quorum", ok, reason });
  }

  private event(event: string, fields: Record<string, unknown>): void {
    this.out.events.push({ event, fields });
  }
}
