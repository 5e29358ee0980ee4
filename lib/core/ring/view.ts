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
 *   every section of older epochs has ended (`grantWaitMs`, see `grantWait`).
 * - A node held by a token lease it renewed (token_lease.ts) defers its promise until the hold
 *   ends, and a restarted node starts held: no older lease is valid once a view has its majority.
 *
 * Inputs: tick, startViewChange, receive (every peer message), sendFailed, handoffRefused,
 * wantLease. Outputs via ready(): what to persist (BEFORE sending anything of the same ready),
 * messages, decisions for the ring node, events. No clock, timers, randomness or I/O.
 */
import { assert, assertNever } from "../assert.ts";
import type { Settings } from "../../settings.ts";
import { LeaseHold, TokenLeaseHolder } from "./token_lease.ts";

export interface Ballot {
  epoch: number;
  coordinator: string;
}

/** Orders ballots: by epoch, then by coordinator id (string order). */
export function compareBallots(a: Ballot, b: Ballot): number {
  if (a.epoch !== b.epoch) return a.epoch - b.epoch;
  return a.coordinator < b.coordinator ? -1 : a.coordinator > b.coordinator ? 1 : 0;
}

/** Fences carry the epoch in their high part: fence = epoch × 2^32 + counter. */
export const FENCE_EPOCH_FACTOR = 2 ** 32;
/**
 * The highest epoch whose fences stay within Number.MAX_SAFE_INTEGER (2^53 − 1): 2^21 − 1 =
 * 2,097,151 epochs, each with 2^32 − 1 fences. At one view change a second that lasts 24 days.
 */
export const EPOCH_MAX = Math.floor(Number.MAX_SAFE_INTEGER / FENCE_EPOCH_FACTOR);

/** Every fence of `epoch` is above this, and above every fence of an older epoch. */
export function fenceFloor(epoch: number): number {
  assert(Number.isSafeInteger(epoch) && epoch >= 0 && epoch <= EPOCH_MAX, `epoch ${epoch} out of 0..${EPOCH_MAX}`);
  return epoch * FENCE_EPOCH_FACTOR;
}

/** The fence after `last` in `epoch` (the first one when `last` is of an older epoch). */
export function nextFence(epoch: number, last: number): number {
  const next = Math.max(last, fenceFloor(epoch)) + 1;
  assert(next < fenceFloor(epoch) + FENCE_EPOCH_FACTOR, `fence counter of epoch ${epoch} exhausted: a view change is needed`);
  return next;
}

/** A decided view. Plain data: it goes on the wire and to disk. */
export interface View {
  epoch: number;
  coordinator: string;
  /** The promisers, in file order: the new ring. */
  members: string[];
  /** Creates the epoch's token, after re-sending writes from `resendFromWseq` to `startWseq`. */
  regenerator: string;
  startWseq: number;
  /** Lowest commit watermark among the members, plus one: writes above it may differ. */
  resendFromWseq: number;
  /** No grant of this epoch before this long after the view is received (older sections). */
  grantWaitMs: number;
}

/** What a node persists (fsynced before the messages of the same ready() are sent). */
export interface ViewHardState {
  promised: Ballot;
  view: View | null;
}

/** What the ring node reports about itself (the driver passes a function returning it). */
export interface LocalFacts {
  lastApplied: number;
  /** Epoch stamp of the write at lastApplied (0: none). */
  lastWriteEpoch: number;
  commit: number;
  /** The last token this node held or sent: its epoch and hop (0, 0: none yet). */
  tokenEpoch: number;
  tokenHop: number;
  token: "held" | "sending" | "away";
  /** Remaining lease of the section running here (0: none). */
  sectionRemainingMs: number;
  lastTokenAgeMs: number | null;
}

/** What a promiser tells the coordinator. */
export interface PromiseFacts {
  lastApplied: number;
  lastWriteEpoch: number;
  commit: number;
  tokenEpoch: number;
  tokenHop: number;
  /** "neverLeft": its last hand-off was refused at connect, so the token is still here. */
  tokenHere: "held" | "neverLeft" | "no";
  /** Upper bound on how long a grant made here (or this node's wait before one) still runs. */
  sectionRemainingMs: number;
}

export type ViewMessage =
  | { type: "probe"; from: string; epoch: number }
  /** `viewEpoch`: the epoch of the view the answering node installed. */
  | { type: "probeReply"; from: string; viewEpoch: number; tokenEpoch: number; tokenHop: number; live: boolean; lastTokenAgeMs: number | null }
  | { type: "prepare"; from: string; ballot: Ballot }
  /** `prior`: the ballot promised before this one; `viewEpoch`: the installed view's epoch. */
  | { type: "promise"; from: string; ballot: Ballot; prior: Ballot; viewEpoch: number; facts: PromiseFacts }
  | { type: "reject"; from: string; ballot: Ballot; promised: Ballot; viewEpoch: number }
  | { type: "newView"; from: string; view: View }
  | { type: "installed"; from: string; epoch: number }
  | { type: "renew"; from: string; epoch: number; seq: number }
  | { type: "renewAnswer"; from: string; epoch: number; seq: number; ok: boolean };

export type ViewChangeReason = "tokenLoss" | "suspect" | "rejoin" | "membership" | "bootstrap";

export type ViewDecision =
  /** Refuse every token and write of an epoch below `epoch`; stop granting. */
  | { type: "promised"; epoch: number }
  /** Ring anew: this view, this successor; regenerate if asked; no grant before grantNotBeforeMs. */
  | { type: "install"; view: View; successor: string; regenerate: boolean; grantNotBeforeMs: number; fenceFloor: number }
  | { type: "lease"; epoch: number; validUntilMs: number }
  /** A newer view exists without this node: catch the replica up from a member, then rejoin. */
  | { type: "behind"; viewEpoch: number }
  /** false: no majority reachable (no view change, no lease): this node does not grant. */
  | { type: "quorum"; ok: boolean; reason: string };

export interface ViewReady {
  persist: ViewHardState | null;
  send: Array<{ to: string; message: ViewMessage }>;
  decisions: ViewDecision[];
  events: Array<{ event: string; fields: Record<string, unknown> }>;
}

export type ViewSettings = Pick<
  Settings,
  "tokenLeaseMs" | "tokenLeaseSafetyMs" | "viewPromiseWaitMs" | "viewChangeTimeoutMs" | "viewChangeRetryMs" | "ringLeaseMaxMs" | "tokenLossMs"
>;

export interface ViewOptions {
  id: string;
  /** The ring nodes of the cluster file, in file order: the voters. */
  ring: string[];
  /** The arbiter's id, if there is one: it may coordinate, it never votes. */
  arbiter: string | null;
  settings: ViewSettings;
  /** The ring node's facts now (pure: the driver reads them from its RingNode). */
  localFacts: (nowMs: number) => LocalFacts;
}

interface Attempt {
  ballot: Ballot;
  reason: ViewChangeReason;
  startedAtMs: number;
  promises: Map<string, { prior: Ballot; viewEpoch: number; facts: PromiseFacts; receivedAtMs: number }>;
  rejected: Set<string>;
  majorityAtMs: number | null;
}

export interface ViewStatus {
  id: string;
  promised: Ballot;
  view: View | null;
  member: boolean;
  quorum: "ok" | "lost";
  coordinating: Ballot | null;
  wanted: ViewChangeReason | null;
  leaseValidUntilMs: number | null;
  promiseHeldUntilMs: number;
}

const NO_BALLOT: Ballot = { epoch: 0, coordinator: "" };

export class ViewCore {
  private promised: Ballot;
  private view: View | null;
  /** The ring nodes of the cluster file (the voters), in file order; see changeMembership. */
  private ring: string[] = [];
  private voter = false;
  private quorum = 1;
  private rank = 0;
  private readonly hold: LeaseHold;
  private lease!: TokenLeaseHolder;
  private attempt: Attempt | null = null;
  private wanted: { reason: ViewChangeReason; aboveEpoch: number } | null = null;
  private retryAtMs = Number.NEGATIVE_INFINITY;
  /** A prepare that waits for this node's lease hold to end (the highest one only). */
  private deferred: { from: string; ballot: Ballot } | null = null;
  private lastPromiseAtMs = Number.NEGATIVE_INFINITY;
  private highestSeenEpoch = 0;
  /** The newest view epoch reported as "behind" (once per epoch). */
  private behindEpoch = 0;
  private grantNotBeforeMs = Number.NEGATIVE_INFINITY;
  private neverLeft: { epoch: number; hop: number } | null = null;
  private probe: { epoch: number; sentAtMs: number; quiet: Set<string>; unreachable: Set<string>; majorityAtMs: number | null } | null = null;
  private nextProbeAtMs = Number.NEGATIVE_INFINITY;
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
    this.nowMs = nowMs;
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
      const { from, ballot } = this.deferred;
      this.deferred = null;
      this.onPrepare(from, ballot);
    }
    // Promised, but the view never came (coordinator died, newView lost): ask for one itself.
    const unsettled = this.voter && this.promised.epoch > (this.view?.epoch ?? 0);
    if (unsettled && !this.wanted && !this.attempt && nowMs >= this.lastPromiseAtMs + this.options.settings.viewChangeTimeoutMs) {
      this.startViewChange("rejoin", nowMs);
    }
    const failed = this.lease.expire(nowMs);
    if (failed.type === "failed") this.setQuorum(false, `lease renewal: ${failed.reason}`);
    this.tickAttempt();
    this.tickProbe();
  }

  /** Asks for a new view (token lost, successor suspected, rejoin, membership change). */
  startViewChange(reason: ViewChangeReason, nowMs: number): void {
    this.advance(nowMs);
    if (!this.wanted) this.wanted = { reason, aboveEpoch: this.currentEpoch() };
    this.event("viewChangeWanted", { reason, epoch: this.currentEpoch() });
    this.tickAttempt();
  }

  /**
   * The cluster file changed (SIGHUP): new voters, then a view change. One node added or removed
   * at a time: a majority of the old list and one of the new list then always share a node (with
   * n and n + 1 voters: (⌊n/2⌋ + 1) + ⌊(n+1)/2⌋ > n), so no two views form under the two lists.
   * Returns the reason for a refusal, or null.
   */
  changeMembership(ring: string[], nowMs: number): string | null {
    this.advance(nowMs);
    const added = ring.filter((id) => !this.ring.includes(id));
    const removed = this.ring.filter((id) => !ring.includes(id));
    if (added.length + removed.length > 1) return `add or remove one ring node at a time (got +${added.join(",")} -${removed.join(",")})`;
    if (!ring.includes(this.options.id) && this.options.id !== this.options.arbiter) return `${this.options.id} is no longer in the ring`;
    if (added.length + removed.length === 0) return null;
    this.abandon("membership changed");
    this.configure(ring);
    this.event("membershipChanged", { ring: ring.join(","), added: added.join(","), removed: removed.join(",") });
    this.startViewChange("membership", nowMs);
    return null;
  }

  /** The token hand-off of (epoch, hop) was refused at connect: the token never left here. */
  handoffRefused(epoch: number, hop: number, nowMs: number): void {
    this.advance(nowMs);
    this.neverLeft = { epoch, hop };
  }

  /**
   * The holder of `epoch`'s token wants to grant: true when its token lease is valid now (and
   * the view's grant wait is over); otherwise a renewal starts (its outcome comes as a decision).
   */
  wantLease(epoch: number, nowMs: number): boolean {
    this.advance(nowMs);
    if (!this.view || this.view.epoch !== epoch || this.promised.epoch > epoch || this.deferred) return false;
    if (this.lease.valid(epoch, nowMs)) return nowMs >= this.grantNotBeforeMs;
    const seq = this.lease.begin(epoch, nowMs);
    if (seq !== null) {
      this.hold.renewed(nowMs); // it counts itself: it holds itself like every renewer
      for (const to of this.others()) this.send(to, { type: "renew", from: this.options.id, epoch, seq });
    }
    return false;
  }

  /** A message could not be delivered (connect refused, timeout): for a prepare, a "no". */
  sendFailed(to: string, message: ViewMessage, nowMs: number): void {
    this.advance(nowMs);
    const attempt = this.attempt;
    if (message.type === "prepare" && attempt && compareBallots(message.ballot, attempt.ballot) === 0) {
      attempt.rejected.add(to);
      this.tickAttempt();
    }
    if (message.type === "probe" && this.probe) {
      this.probe.unreachable.add(to);
      this.checkProbe();
    }
  }

  receive(message: ViewMessage, nowMs: number): void {
    this.advance(nowMs);
    const problem = this.check(message);
    if (problem) {
      this.event("badViewMessage", { from: message?.from, type: message?.type, problem });
      return;
    }
    switch (message.type) {
      case "probe":
        return this.onProbe(message.from);
      case "probeReply":
        return this.onProbeReply(message);
      case "prepare":
        return this.onPrepare(message.from, message.ballot);
      case "promise":
        return this.onPromise(message);
      case "reject":
        return this.onReject(message);
      case "newView":
        return this.onNewView(message.view);
      case "installed":
        this.event("viewInstalledAt", { node: message.from, epoch: message.epoch });
        return;
      case "renew":
        return this.onRenew(message);
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
      coordinating: this.attempt ? { ...this.attempt.ballot } : null,
      wanted: this.wanted?.reason ?? null,
      leaseValidUntilMs: this.view && this.lease.valid(this.view.epoch, nowMs) ? this.lease.validUntil(this.view.epoch) : null,
      promiseHeldUntilMs: this.hold.heldUntilMs,
    };
  }

  // ---- voting ---------------------------------------------------------------------------

  private onPrepare(from: string, ballot: Ballot): void {
    this.seeEpoch(ballot.epoch);
    if (!this.voter) return;
    const viewEpoch = this.view?.epoch ?? 0;
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
      this.deferred = { from, ballot };
      this.event("promiseDeferred", { ballot, untilMs: this.hold.heldUntilMs });
      return;
    }
    const prior = this.promised;
    this.promised = { ...ballot };
    if (ballot.coordinator !== this.options.id) this.lastPromiseAtMs = this.nowMs;
    this.lease.drop();
    this.persist();
    this.out.decisions.push({ type: "promised", epoch: ballot.epoch });
    if (this.attempt && compareBallots(this.attempt.ballot, ballot) < 0) this.abandon(`promised ${ballotText(ballot)}`);
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
    return {
      lastApplied: local.lastApplied,
      lastWriteEpoch: local.lastWriteEpoch,
      commit: local.commit,
      tokenEpoch: local.tokenEpoch,
      tokenHop: local.tokenHop,
      tokenHere,
      sectionRemainingMs: Math.max(local.sectionRemainingMs, ownWaitMs),
    };
  }

  private onNewView(view: View): void {
    this.seeEpoch(view.epoch);
    if (!this.voter || !view.members.includes(this.options.id)) return;
    if (this.promised.epoch !== view.epoch || this.promised.coordinator !== view.coordinator) {
      this.event("newViewIgnored", { epoch: view.epoch, promised: ballotText(this.promised) });
      return;
    }
    if (this.view && this.view.epoch >= view.epoch) return; // a resent copy
    this.install(view);
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

  // ---- coordinating ---------------------------------------------------------------------

  private tickAttempt(): void {
    const settings = this.options.settings;
    const attempt = this.attempt;
    if (attempt) {
      if (this.canDecide(attempt)) return this.decide(attempt);
      const hopeless = this.ring.length - attempt.rejected.size < this.quorum;
      if (hopeless || this.nowMs >= attempt.startedAtMs + settings.viewChangeTimeoutMs) {
        this.setQuorum(false, `${attempt.promises.size} promises for ${ballotText(attempt.ballot)}, ${this.quorum} needed`);
        this.abandon(hopeless ? "rejected by too many" : "timed out");
      }
      return;
    }
    if (!this.wanted || this.nowMs < this.retryAtMs) return;
    // Give a coordinator this node promised to the time to finish before competing with it.
    const unsettled = this.promised.epoch > (this.view?.epoch ?? 0);
    if (unsettled && this.nowMs < this.lastPromiseAtMs + settings.viewChangeTimeoutMs) return;
    // Another coordinator's prepare waits here for the lease hold to end: let it go first. A
    // hold of its own does not stop it: its own promise waits like any other (onPrepare).
    if (this.deferred) return;
    const epoch = this.highestSeenEpoch + 1;
    assert(epoch <= EPOCH_MAX, `epoch ${epoch} above ${EPOCH_MAX}: fences would overflow`);
    const ballot = { epoch, coordinator: this.options.id };
    this.attempt = { ballot, reason: this.wanted.reason, startedAtMs: this.nowMs, promises: new Map(), rejected: new Set(), majorityAtMs: null };
    this.event("prepare", { ballot: ballotText(ballot), reason: this.wanted.reason });
    for (const to of this.others()) this.send(to, { type: "prepare", from: this.options.id, ballot });
    // Its own promise last: with a one-node ring it decides the view at once.
    if (this.voter) this.onPrepare(this.options.id, ballot);
  }

  private canDecide(attempt: Attempt): boolean {
    if (attempt.promises.size < this.quorum) return false;
    attempt.majorityAtMs ??= this.nowMs;
    const allAnswered = attempt.promises.size + attempt.rejected.size >= this.ring.length;
    return allAnswered || this.nowMs >= attempt.majorityAtMs + this.options.settings.viewPromiseWaitMs;
  }

  private onPromise(message: Extract<ViewMessage, { type: "promise" }>): void {
    const attempt = this.attempt;
    if (!attempt || compareBallots(message.ballot, attempt.ballot) !== 0) return; // late
    attempt.promises.set(message.from, { prior: message.prior, viewEpoch: message.viewEpoch, facts: message.facts, receivedAtMs: this.nowMs });
    this.seeEpoch(Math.max(message.prior.epoch, message.viewEpoch));
    this.tickAttempt();
  }

  private onReject(message: Extract<ViewMessage, { type: "reject" }>): void {
    this.seeEpoch(message.promised.epoch);
    this.seeViewEpoch(message.viewEpoch);
    const attempt = this.attempt;
    if (!attempt || compareBallots(message.ballot, attempt.ballot) !== 0) return;
    attempt.rejected.add(message.from);
    this.tickAttempt();
  }

  /** Decides the view of `attempt` (once: the attempt ends here) and installs or sends it. */
  private decide(attempt: Attempt): void {
    this.attempt = null;
    const ring = this.ring;
    const members = ring.filter((id) => attempt.promises.has(id));
    let regenerator = members[0];
    for (const id of members) {
      const a = attempt.promises.get(id)!.facts;
      const b = attempt.promises.get(regenerator)!.facts;
      if (a.lastWriteEpoch > b.lastWriteEpoch || (a.lastWriteEpoch === b.lastWriteEpoch && a.lastApplied > b.lastApplied)) regenerator = id;
    }
    const startWseq = attempt.promises.get(regenerator)!.facts.lastApplied;
    const lowestCommit = Math.min(...members.map((id) => attempt.promises.get(id)!.facts.commit));
    const view: View = {
      epoch: attempt.ballot.epoch,
      coordinator: attempt.ballot.coordinator,
      members,
      regenerator,
      startWseq,
      resendFromWseq: lowestCommit + 1,
      grantWaitMs: this.grantWait(attempt),
    };
    this.event("viewDecided", { epoch: view.epoch, members: members.join(","), regenerator, grantWaitMs: view.grantWaitMs, reason: attempt.reason });
    this.setQuorum(true, `view ${view.epoch} decided`);
    for (const to of members) {
      if (to === this.options.id) this.onNewView(view);
      else this.send(to, { type: "newView", from: this.options.id, view });
    }
    if (!this.voter) this.wanted = null; // the arbiter coordinates; it installs nothing
  }

  /**
   * How long the new token must wait before its first grant: every section of an older epoch
   * must have ended. Every such section was granted under a token lease, and every such lease
   * ended before the majority of promises was complete (token_lease.ts), so each ends within
   * ringLeaseMaxMs of now. Shorter when the token is known to be at a promiser: the latest token
   * (highest epoch and hop reported) is held there, or provably never left it, and no promiser
   * had promised a newer epoch than that token's (else a newer view, whose token we do not see,
   * may exist). Then the wait is that promiser's remaining section (or own grant wait).
   */
  private grantWait(attempt: Attempt): number {
    const settings = this.options.settings;
    const unknownWaitMs = settings.ringLeaseMaxMs + settings.tokenLeaseSafetyMs;
    let top: { epoch: number; hop: number } = { epoch: -1, hop: -1 };
    let atTop: string[] = [];
    let newestPromised = 0;
    for (const [id, p] of attempt.promises) {
      newestPromised = Math.max(newestPromised, p.prior.epoch, p.viewEpoch);
      const f = p.facts;
      const cmp = f.tokenEpoch !== top.epoch ? f.tokenEpoch - top.epoch : f.tokenHop - top.hop;
      if (cmp > 0) {
        top = { epoch: f.tokenEpoch, hop: f.tokenHop };
        atTop = [id];
      } else if (cmp === 0) atTop.push(id);
    }
    // Nobody promised anything before: no view, hence no token, ever existed (first start).
    if (newestPromised === 0 && top.epoch <= 0) return 0;
    if (top.epoch < newestPromised || top.epoch === 0) return unknownWaitMs;
    // The receiver of the latest hand-off holds it (its sender reports the same hop); a refused
    // hand-off is proof only when nobody else reports that hop.
    const held = atTop.filter((id) => attempt.promises.get(id)!.facts.tokenHere === "held");
    const neverLeft = atTop.length === 1 && attempt.promises.get(atTop[0])!.facts.tokenHere === "neverLeft";
    if (held.length !== 1 && !neverLeft) return unknownWaitMs;
    const holder = attempt.promises.get(held.length === 1 ? held[0] : atTop[0])!;
    return Math.max(0, holder.receivedAtMs + holder.facts.sectionRemainingMs - this.nowMs);
  }

  private abandon(why: string): void {
    const attempt = this.attempt;
    if (!attempt) return;
    this.attempt = null;
    this.event("viewChangeAbandoned", { ballot: ballotText(attempt.ballot), why });
    // Deterministic spread: the earlier a node is in the file, the sooner it tries again.
    this.retryAtMs = this.nowMs + this.options.settings.viewChangeRetryMs * (1 + this.rank);
  }

  // ---- token loss probe -----------------------------------------------------------------

  private tickProbe(): void {
    const settings = this.options.settings;
    if (!this.isMember() || this.wanted || this.attempt) return;
    const local = this.options.localFacts(this.nowMs);
    const probe = this.probe;
    if (probe) {
      this.checkProbe();
      if (this.probe && this.nowMs >= probe.sentAtMs + settings.viewChangeTimeoutMs) {
        this.probe = null;
        this.setQuorum(false, `token probe: ${probe.quiet.size} answers, ${this.quorum} needed`);
      }
      return;
    }
    if (local.token !== "away" || this.nowMs < this.nextProbeAtMs) return;
    const lastSeenMs = local.lastTokenAgeMs;
    if (lastSeenMs !== null && lastSeenMs < settings.tokenLossMs) return;
    if (lastSeenMs === null && this.nowMs < this.grantNotBeforeMs + settings.tokenLossMs) return;
    this.probe = { epoch: this.view!.epoch, sentAtMs: this.nowMs, quiet: new Set([this.options.id]), unreachable: new Set(), majorityAtMs: null };
    this.nextProbeAtMs = this.nowMs + settings.tokenLossMs;
    for (const to of this.others()) this.send(to, { type: "probe", from: this.options.id, epoch: this.view!.epoch });
    this.checkProbe();
  }

  private onProbe(from: string): void {
    const local = this.options.localFacts(this.nowMs);
    this.answerTo(from, {
      type: "probeReply",
      from: this.options.id,
      viewEpoch: this.view?.epoch ?? 0,
      tokenEpoch: local.tokenEpoch,
      tokenHop: local.tokenHop,
      live: local.token !== "away",
      lastTokenAgeMs: local.lastTokenAgeMs,
    });
  }

  private onProbeReply(message: Extract<ViewMessage, { type: "probeReply" }>): void {
    this.seeViewEpoch(message.viewEpoch);
    const probe = this.probe;
    if (!probe) return;
    const seenLately = message.lastTokenAgeMs !== null && message.lastTokenAgeMs < this.options.settings.tokenLossMs;
    if (message.viewEpoch > probe.epoch) {
      this.probe = null; // not lost: this node is behind (seeViewEpoch said so)
      return;
    }
    if (message.live || seenLately) {
      this.probe = null;
      this.event("tokenAlive", { at: message.from, tokenEpoch: message.tokenEpoch, tokenHop: message.tokenHop });
      return;
    }
    probe.quiet.add(message.from);
    this.checkProbe();
  }

  /** Token lost: a majority saw none lately, and the rest answered too or had a short while. */
  private checkProbe(): void {
    const probe = this.probe;
    if (!probe || probe.quiet.size < this.quorum) return;
    probe.majorityAtMs ??= this.nowMs;
    const allAnswered = probe.quiet.size + probe.unreachable.size >= this.ring.length;
    if (!allAnswered && this.nowMs < probe.majorityAtMs + this.options.settings.viewPromiseWaitMs) return;
    this.event("tokenLost", { epoch: probe.epoch, quiet: [...probe.quiet].join(",") });
    this.probe = null;
    this.startViewChange("tokenLoss", this.nowMs);
  }

  // ---- token lease ------------------------------------------------------------------------

  private onRenew(message: Extract<ViewMessage, { type: "renew" }>): void {
    const { from, epoch, seq } = message;
    // OK only if no newer ballot is promised or waiting to be: then hold for a whole lease.
    const ok = this.voter && this.promised.epoch <= epoch && (this.deferred === null || this.deferred.ballot.epoch <= epoch);
    if (ok) this.hold.renewed(this.nowMs);
    this.answerTo(from, { type: "renewAnswer", from: this.options.id, epoch, seq, ok });
  }

  private onRenewAnswer(message: Extract<ViewMessage, { type: "renewAnswer" }>): void {
    const outcome = this.lease.answer(message.from, message.seq, message.ok, this.ring.length);
    if (outcome.type === "valid") {
      this.out.decisions.push({ type: "lease", epoch: outcome.epoch, validUntilMs: outcome.validUntilMs });
      this.setQuorum(true, "token lease renewed");
    } else if (outcome.type === "failed") {
      this.setQuorum(false, `lease renewal: ${outcome.reason}`);
    }
  }

  // ---- helpers ----------------------------------------------------------------------------

  private check(message: ViewMessage): string | undefined {
    const ring = this.ring;
    const arbiter = this.options.arbiter;
    if (typeof message !== "object" || message === null) return "not an object";
    const coordinatorOk = (id: string) => ring.includes(id) || (arbiter !== null && id === arbiter);
    if (!coordinatorOk(message.from)) return `unknown sender ${message.from}`;
    const ballots: unknown[] = [];
    const counts: unknown[] = [];
    switch (message.type) {
      case "probe":
      case "installed":
        counts.push(message.epoch);
        break;
      case "probeReply":
        counts.push(message.viewEpoch, message.tokenEpoch, message.tokenHop);
        if (message.lastTokenAgeMs !== null) counts.push(message.lastTokenAgeMs);
        break;
      case "prepare":
        ballots.push(message.ballot);
        break;
      case "promise": {
        ballots.push(message.ballot, message.prior);
        const f = message.facts;
        if (typeof f !== "object" || f === null) return "facts missing";
        counts.push(message.viewEpoch, f.lastApplied, f.lastWriteEpoch, f.commit, f.tokenEpoch, f.tokenHop, f.sectionRemainingMs);
        if (f.commit > f.lastApplied) return "commit above lastApplied";
        if (!["held", "neverLeft", "no"].includes(f.tokenHere)) return "bad tokenHere";
        break;
      }
      case "reject":
        ballots.push(message.ballot, message.promised);
        counts.push(message.viewEpoch);
        break;
      case "newView": {
        const v = message.view;
        if (typeof v !== "object" || v === null || !Array.isArray(v.members)) return "bad view";
        ballots.push({ epoch: v.epoch, coordinator: v.coordinator });
        counts.push(v.startWseq, v.resendFromWseq, v.grantWaitMs);
        if (v.coordinator !== message.from) return "a view comes from its coordinator";
        if (v.members.length < this.quorum || !v.members.every((m) => ring.includes(m)) || new Set(v.members).size !== v.members.length) {
          return "members must be a majority of distinct ring nodes";
        }
        if (!v.members.includes(v.regenerator)) return "the regenerator must be a member";
        break;
      }
      case "renew":
      case "renewAnswer":
        counts.push(message.epoch, message.seq);
        break;
      default:
        return `unknown type ${(message as { type: unknown }).type}`;
    }
    if (!counts.every((n) => Number.isSafeInteger(n) && (n as number) >= 0)) return "numbers must be non-negative safe integers";
    for (const b of ballots) {
      const ballot = b as Ballot;
      if (typeof ballot !== "object" || ballot === null || !Number.isSafeInteger(ballot.epoch) || ballot.epoch < 0 || ballot.epoch > EPOCH_MAX) {
        return "bad ballot";
      }
      if (ballot.epoch > 0 && !coordinatorOk(ballot.coordinator)) return `unknown coordinator ${ballot.coordinator}`;
    }
    return undefined;
  }

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

function ballotText(ballot: Ballot): string {
  return `${ballot.epoch}/${ballot.coordinator}`;
}

function emptyReady(): ViewReady {
  return { persist: null, send: [], decisions: [], events: [] };
}
