/**
 * The coordinator's side of a view change (docs/ring-view.md): one attempt at a time sends its
 * ballot's prepare to every voter, gathers promises (waiting a short while for the live voters
 * that deferred theirs), decides the view (decide.ts) and announces it to the members until they
 * confirm. An attempt that fails backs off; one that not even a majority answered canvasses first
 * next time (view_probe.ts).
 *
 * Owned by a ViewCore, which votes (its own promise comes through `host.onPrepare`, like any
 * other voter's) and installs. No clock, timer, randomness or I/O in here: time comes from the
 * core's step.
 */
import { assert } from "../assert.ts";
import { decideView, type Promised } from "./decide.ts";
import { type Ballot, compareBallots, EPOCH_MAX, type View, type ViewMessage } from "./view_wire.ts";
import type { ViewChangeReason, ViewSettings } from "./view_io.ts";

/** What the coordinator needs of its ViewCore (read live: configure changes the voters). */
export interface ViewAttemptHost {
  readonly id: string;
  readonly settings: ViewSettings;
  nowMs(): number;
  /** The voters in file order, how many make a majority, whether this node is one, its place. */
  ring(): string[];
  quorum(): number;
  voter(): boolean;
  rank(): number;
  /** The view change this node wants, if any (the core clears it once a newer view is in). */
  wanted(): { reason: ViewChangeReason; aboveEpoch: number } | null;
  /** The arbiter decided a view: its wish is done (it installs nothing). */
  clearWanted(): void;
  /** A coordinator this node promised to lately may still finish: do not compete with it yet. */
  promisedLately(): boolean;
  /** Another coordinator's prepare waits here for the lease hold to end. */
  prepareDeferred(): boolean;
  /** False while a pre-vote canvass must find a majority first (view_probe.ts). */
  mayTakeEpoch(): boolean;
  needCanvass(needed: boolean): void;
  highestSeenEpoch(): number;
  seeEpoch(epoch: number): void;
  seeViewEpoch(viewEpoch: number): void;
  /** This node's own vote (through the core, like a prepare from the wire). */
  onPrepare(from: string, ballot: Ballot, voters: readonly string[]): void;
  /** The decided view reaches this node, a member, as it reaches every other member. */
  onNewView(view: View): void;
  others(): string[];
  /** Sinks of the core's current step. */
  send(to: string, message: ViewMessage): void;
  event(event: string, fields: Record<string, unknown>): void;
  setQuorum(ok: boolean, reason: string): void;
}

interface Attempt {
  ballot: Ballot;
  reason: ViewChangeReason;
  startedAtMs: number;
  promises: Map<string, Promised>;
  /** Answered "no" (a reject message). */
  rejected: Set<string>;
  /** Could not be reached (connect refused, timeout): an answer too, but not a contact. */
  unreachable: Set<string>;
  /** Voters whose promise waits for their lease hold: when (here) each said it will answer. */
  deferredUntilMs: Map<string, number>;
  majorityAtMs: number | null;
}

export class ViewAttempts {
  private attempt: Attempt | null = null;
  private retryAtMs = Number.NEGATIVE_INFINITY;
  /** The arbiter's grace (notBefore), so that graceOver ends only it and not a back-off. */
  private graceUntilMs: number | null = null;
  /** A view this node decided, resent to the members that have not said "installed" yet. */
  private announcing: { view: View; missing: Set<string>; untilMs: number; nextAtMs: number } | null = null;

  constructor(private readonly host: ViewAttemptHost) {}

  /** Whether an attempt is running. */
  get running(): boolean {
    return this.attempt !== null;
  }

  /** Whether an attempt runs or its view is still announced (both move on ticks). */
  get busy(): boolean {
    return this.attempt !== null || this.announcing !== null;
  }

  /** The running attempt's ballot (a copy), or null. */
  ballot(): Ballot | null {
    return this.attempt ? { ...this.attempt.ballot } : null;
  }

  /** No attempt of its own before `atMs` (it lets the arbiter go first). */
  /** The arbiter's grace ends now (it could not be reached); a back-off after a failed attempt stays. */
  graceOver(): void {
    if (this.graceUntilMs !== null && this.retryAtMs === this.graceUntilMs) this.retryAtMs = Number.NEGATIVE_INFINITY;
    this.graceUntilMs = null;
  }

  notBefore(atMs: number): void {
    this.graceUntilMs = Math.max(this.retryAtMs, atMs);
    this.retryAtMs = this.graceUntilMs;
  }

  tick(): void {
    const host = this.host;
    const settings = host.settings;
    const nowMs = host.nowMs();
    const attempt = this.attempt;
    if (attempt) {
      if (this.canDecide(attempt)) return this.decide(attempt);
      const quorum = host.quorum();
      const hopeless = host.ring().length - attempt.rejected.size - attempt.unreachable.size < quorum;
      if (hopeless || nowMs >= attempt.startedAtMs + settings.viewChangeTimeoutMs) {
        host.setQuorum(false, `${attempt.promises.size} promises for ${ballotText(attempt.ballot)}, ${quorum} needed`);
        // Not even a majority answered: before the next epoch, make sure one can (pre-vote).
        host.needCanvass(attempt.promises.size + attempt.rejected.size < quorum);
        this.abandon(hopeless ? "rejected by too many" : "timed out");
      }
      return;
    }
    const wanted = host.wanted();
    if (!wanted || nowMs < this.retryAtMs) return;
    // Give a coordinator this node promised to the time to finish before competing with it.
    if (host.promisedLately()) return;
    // Another coordinator's prepare waits here for the lease hold to end: let it go first. A
    // hold of its own does not stop it: its own promise waits like any other (onPrepare).
    if (host.prepareDeferred()) return;
    if (!host.mayTakeEpoch()) return;
    const epoch = host.highestSeenEpoch() + 1;
    assert(epoch <= EPOCH_MAX, `epoch ${epoch} above ${EPOCH_MAX}: fences would overflow`);
    const ballot = { epoch, coordinator: host.id };
    // Its own ballot counts as seen: a voter's promise to itself records it anyway, but the
    // arbiter never promises, and would otherwise take the same epoch again next time.
    host.seeEpoch(epoch);
    this.attempt = {
      ballot,
      reason: wanted.reason,
      startedAtMs: nowMs,
      promises: new Map(),
      rejected: new Set(),
      unreachable: new Set(),
      deferredUntilMs: new Map(),
      majorityAtMs: null,
    };
    host.event("prepare", { ballot: ballotText(ballot), reason: wanted.reason });
    for (const to of host.others()) host.send(to, { type: "prepare", from: host.id, ballot, voters: [...host.ring()] });
    // Its own promise last: with a one-node ring it decides the view at once.
    if (host.voter()) host.onPrepare(host.id, ballot, host.ring());
  }

  private canDecide(attempt: Attempt): boolean {
    const host = this.host;
    if (attempt.promises.size < host.quorum()) return false;
    const nowMs = host.nowMs();
    attempt.majorityAtMs ??= nowMs;
    const allAnswered = attempt.promises.size + attempt.rejected.size + attempt.unreachable.size >= host.ring().length;
    if (allAnswered) return true;
    // Live voters that said their promise is on its way (after their lease hold) are waited for.
    let untilMs = attempt.majorityAtMs;
    for (const [id, atMs] of attempt.deferredUntilMs) if (!attempt.promises.has(id)) untilMs = Math.max(untilMs, atMs);
    return nowMs >= untilMs + host.settings.viewPromiseWaitMs;
  }

  onPromise(message: Extract<ViewMessage, { type: "promise" }>): void {
    const attempt = this.attempt;
    if (!attempt || compareBallots(message.ballot, attempt.ballot) !== 0) return; // late
    attempt.promises.set(message.from, { prior: message.prior, viewEpoch: message.viewEpoch, facts: message.facts, receivedAtMs: this.host.nowMs() });
    // A prepare that timed out may still have arrived: each voter counts once, by its answer.
    attempt.unreachable.delete(message.from);
    this.host.seeEpoch(Math.max(message.prior.epoch, message.viewEpoch));
    this.tick();
  }

  onReject(message: Extract<ViewMessage, { type: "reject" }>): void {
    this.host.seeEpoch(message.promised.epoch);
    this.host.seeViewEpoch(message.viewEpoch);
    const attempt = this.attempt;
    if (!attempt || compareBallots(message.ballot, attempt.ballot) !== 0) return;
    attempt.rejected.add(message.from);
    attempt.unreachable.delete(message.from);
    this.tick();
  }

  /** Voter `from` defers its promise for `ballot` until its lease hold ends, `waitMs` from now. */
  onDeferred(from: string, ballot: Ballot, waitMs: number): void {
    const attempt = this.attempt;
    if (!attempt || compareBallots(ballot, attempt.ballot) !== 0) return;
    // Bounded by one lease whatever the voter says: it defers for one hold at most.
    attempt.deferredUntilMs.set(from, this.host.nowMs() + Math.min(waitMs, this.host.settings.tokenLeaseMs));
  }

  /** A prepare could not be delivered to `to`: a "no". */
  unreachable(to: string, ballot: Ballot): void {
    const attempt = this.attempt;
    if (!attempt || compareBallots(ballot, attempt.ballot) !== 0) return;
    // A failed send is a "no" only for a voter that has not answered (a timed-out prepare may
    // have arrived, and its answer counts instead).
    if (!attempt.promises.has(to) && !attempt.rejected.has(to)) attempt.unreachable.add(to);
    this.tick();
  }

  /** Member `from` installed the view of `epoch`: no more resends to it. */
  onInstalled(from: string, epoch: number): void {
    if (this.announcing?.view.epoch === epoch) this.announcing.missing.delete(from);
  }

  /** This node promised `ballot`: an attempt of a lower ballot cannot win any more. */
  outdatedBy(ballot: Ballot): void {
    if (this.attempt && compareBallots(this.attempt.ballot, ballot) < 0) this.abandon(`promised ${ballotText(ballot)}`);
  }

  /** Decides the view of `attempt` (once: the attempt ends here) and installs or sends it. */
  private decide(attempt: Attempt): void {
    const host = this.host;
    const nowMs = host.nowMs();
    this.attempt = null;
    const view = decideView(attempt.ballot, attempt.promises, host.ring(), host.settings, nowMs);
    const { members, regenerator } = view;
    host.event("viewDecided", { epoch: view.epoch, members: members.join(","), regenerator, grantWaitMs: view.grantWaitMs, reason: attempt.reason });
    host.setQuorum(true, `view ${view.epoch} decided`);
    const settings = host.settings;
    const missing = new Set(members.filter((id) => id !== host.id));
    this.announcing = { view, missing, untilMs: nowMs + settings.viewChangeTimeoutMs, nextAtMs: nowMs + settings.viewChangeRetryMs };
    for (const to of missing) host.send(to, { type: "newView", from: host.id, view });
    if (members.includes(host.id)) host.onNewView(view);
    if (!host.voter()) host.clearWanted(); // the arbiter coordinates; it installs nothing
  }

  /**
   * Resends the decided view to members that did not confirm it, for viewChangeTimeoutMs.
   * `promisedEpoch`: a newer promise here ends the resends.
   */
  tickAnnounce(promisedEpoch: number): void {
    const host = this.host;
    const nowMs = host.nowMs();
    const announcing = this.announcing;
    if (!announcing || nowMs < announcing.nextAtMs) return;
    if (announcing.missing.size === 0 || nowMs >= announcing.untilMs || promisedEpoch > announcing.view.epoch) {
      this.announcing = null;
      return;
    }
    announcing.nextAtMs = nowMs + host.settings.viewChangeRetryMs;
    for (const to of announcing.missing) host.send(to, { type: "newView", from: host.id, view: announcing.view });
  }

  abandon(why: string): void {
    const attempt = this.attempt;
    if (!attempt) return;
    this.attempt = null;
    this.host.event("viewChangeAbandoned", { ballot: ballotText(attempt.ballot), why });
    this.backOff();
  }

  /** Deterministic spread: the earlier a node is in the file, the sooner it tries again. */
  backOff(): void {
    this.retryAtMs = this.host.nowMs() + this.host.settings.viewChangeRetryMs * (1 + this.host.rank());
  }
}

export function ballotText(ballot: Ballot): string {
  return `${ballot.epoch}/${ballot.coordinator}`;
}
