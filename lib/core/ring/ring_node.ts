/**
 * One node of the token ring as a pure, deterministic state machine (etcd raft's "Ready" shape).
 *
 * Inputs come in through `step(input, nowMs)`: the token or writes from the predecessor, client
 * requests, acknowledgements of what the driver sent, and ticks. Out comes a `RingOutput`: the
 * answer to the input, what to persist, and effects (messages to the successor, client replies).
 * The driver MUST persist `persist` (in order, durably) BEFORE it answers with `result`, sends a
 * message or replies to a client of that same output: a write is acknowledged only once stored,
 * and a view is acted on only once its epoch is stored. A grant stores nothing: its fence's high
 * part is the epoch, and a restarted node grants only in a newer one.
 *
 * Protocol (docs/ring.md):
 * - One token per epoch. The sender gives it up when it sends; `hop` grows at each hand-off, so
 *   a resent copy is dropped, and a token (or write) of an older epoch is refused.
 * - The holder grants the waiters that were queued when the token arrived, FIFO, one at a time,
 *   each with a fencing token above every earlier one (the epoch in its high part); a lease
 *   bounds each section. It grants only inside a token lease renewed by a majority of the ring
 *   (lib/core/ring/token_lease.ts): without one it asks the driver (`wantLease`) and keeps the
 *   token until the driver feeds the lease back (`lease`).
 * - A write made in a section goes from the holder around the ring back to it (the write path:
 *   ring_writes.ts). Its return is the commit point: the client is answered, and the token's
 *   commit watermark moves. The holder passes the token only when all its writes came back, so a
 *   token in transit always has commit = wseq.
 * - Epochs and membership come from the view change (lib/core/ring/view.ts, docs/ring-view.md),
 *   as two inputs: `promised` (refuse every token and write of an older epoch, drop the token,
 *   grant no more) and `install` (the new view: its epoch, successor and predecessor; on the
 *   regenerator, the epoch's one token, after re-sending the writes that may differ). A token or
 *   write of an epoch whose view is not installed here yet is answered `notYet` (the sender
 *   retries); one of an older epoch `stale`. A restarted node takes nothing of the epoch it ran
 *   in: it comes back through a view change (a new epoch), so the hop needs no disk.
 *
 * Its parts: the inputs and outputs (ring_io.ts), the write path (ring_writes.ts), the queue of
 * waiting clients (ring_waiters.ts), the replica (ring_replica.ts).
 *
 * No clock, timer, randomness or I/O in here: time comes in as `nowMs`.
 */
import { assert, assertNever } from "../assert.ts";
import { RingReplica } from "./ring_replica.ts";
import { checkOp, RingWrites } from "./ring_writes.ts";
import { RingWaiters, type Waiter } from "./ring_waiters.ts";
import { fenceFloor, type LocalFacts, nextFence, type View } from "./view_wire.ts";
import {
  clientError,
  type ClientReply,
  type PersistOp,
  type RingEffect,
  type RingInput,
  type RingNodeOptions,
  type RingOutput,
  type RingResult,
  type RingStatus,
  type SectionEndReason,
} from "./ring_io.ts";
import type { CatchUpReply, RingEntry, RingHardState, RingOp, RingToken } from "./ring_types.ts";
import type { ErrorCode } from "../../wire/errors.ts";

// The node's inputs and outputs live in ring_io.ts; importers of the node find them here too.
export type {
  ClientReply,
  PersistOp,
  RingEffect,
  RingInput,
  RingLimits,
  RingNodeOptions,
  RingOutput,
  RingResult,
  RingStatus,
  RingStored,
  SectionEndReason,
} from "./ring_io.ts";

interface Holding {
  /** The token as this node will pass it on (updated by grants and writes). */
  token: RingToken;
  arrivedAtMs: number;
  /** Waiters still to be served in this visit (those queued when the token came). */
  grantsLeft: number;
  /** Whether this visit granted a section (the token then rests here while nobody else asks). */
  granted: boolean;
  passAtMs: number | null;
  /** Writes of this node travelling the ring: wseq → client request waiting (null: none). */
  outstanding: Map<number, number | null>;
}

interface Section {
  fence: number;
  ticket: string;
  leaseMs: number;
  grantedAtMs: number;
  leaseEndMs: number;
  /** Granted while no long-poll was attached: the client must pick it up before this. */
  pickupDeadlineMs: number;
}

function inputError(code: ErrorCode, message: string): RingResult {
  return { ok: false, type: "error", error: { code, message } };
}

export class RingNode {
  readonly id: string;
  /** The ring nodes of the cluster file, in file order (changed by a reload: `setRing`). */
  ring: readonly string[];
  successor: string;
  predecessor: string;
  /** The installed view's members in ring order. */
  private members: string[];
  readonly replica = new RingReplica();
  /** The epoch of the view installed in this incarnation (0: none yet). */
  private epoch = 0;
  /** Tokens and writes of epochs below this are refused: promised to the view change. */
  private refuseBelowEpoch = 0;
  /** No grant before this (the view's wait for older sections to end). */
  private grantNotBeforeMs = Number.NEGATIVE_INFINITY;
  /**
   * A section ended here because the token was dropped (a promise, a new view) may still be
   * believed in by its client until its lease ends: the view change's facts report it till then.
   */
  private droppedSectionUntilMs = Number.NEGATIVE_INFINITY;
  /** The regenerator's re-sent range of this epoch: their return is recognised by origin and place. */
  private resent: { from: number; to: number } | null = null;
  private fenceMax = 0;
  /** Highest hop accepted in this epoch (in memory: a restarted node never takes its old epoch again). */
  private lastHop = 0;
  private holding: Holding | null = null;
  private sending: { epoch: number; hop: number } | null = null;
  /** The last token this node held or sent (the view change's facts; in memory only). */
  private lastToken = { epoch: 0, hop: 0 };
  private lastTokenAtMs: number | null = null;
  private lastArrivalMs: number | null = null;
  private lastRotationMs: number | null = null;
  private section: Section | null = null;
  private readonly waiters: RingWaiters;
  /** The replicated log's travel around the ring. */
  private readonly writes: RingWrites;
  private wakeUntilMs = Number.NEGATIVE_INFINITY;
  /** When this node last sent `wake` (it sends at most one per tokenIdlePaceMs). */
  private wokeAtMs = Number.NEGATIVE_INFINITY;
  /** The token lease (in memory only: a restarted node renews before its first grant). */
  private lease: { epoch: number; validUntilMs: number; sectionMaxMs: number } | null = null;
  private nowMs = Number.NEGATIVE_INFINITY;
  // The output being built by the current step.
  private persistOps: PersistOp[] = [];
  private effects: RingEffect[] = [];

  constructor(private readonly options: RingNodeOptions) {
    const { id, ring } = options;
    const index = ring.indexOf(id);
    assert(index >= 0, `node ${id} is not in the ring ${ring.join(",")}`);
    assert(new Set(ring).size === ring.length, "ring ids must be unique");
    this.id = id;
    this.ring = [...ring];
    const view = options.storedView ?? null;
    this.members = view && view.members.includes(id) ? [...view.members] : [...ring];
    this.successor = this.neighbour(1);
    this.predecessor = this.neighbour(-1);
    const stored = options.stored;
    // Nothing of the epoch this node ran in before it stopped: it comes back in a newer one.
    this.refuseBelowEpoch = Math.max(options.promisedEpoch ?? 0, (view?.epoch ?? 0) + 1, (stored?.hardState.epoch ?? 0) + 1);
    if (stored) {
      this.fenceMax = stored.hardState.fenceMax;
      if (stored.snapshot) this.replica.install(stored.snapshot);
      this.replica.replay(stored.records);
    }
    this.waiters = new RingWaiters(options.ticketPrefix, options.limits, (reqId, reply) => this.reply(reqId, reply));
    this.writes = new RingWrites({
      id,
      limits: options.limits,
      epoch: () => this.epoch,
      promisedAhead: () => this.refuseBelowEpoch > this.epoch,
      successor: () => this.successor,
      predecessor: () => this.predecessor,
      nowMs: () => this.nowMs,
      persist: (op) => this.persistOps.push(op),
      effect: (effect) => this.effects.push(effect),
      event: (event, fields) => this.event(event, fields),
      ownWriteBack: (entry) => this.ownWriteBack(entry),
    }, this.replica, stored?.snapshot?.wseq ?? 0);
  }

  /**
   * The cluster file was reloaded with these ring nodes (one added or removed: the view change
   * takes it in or out by a new view; until then the installed view's ring stays as it is).
   */
  setRing(ring: readonly string[]): void {
    assert(ring.includes(this.id) && new Set(ring).size === ring.length, `a reloaded ring must list ${this.id} once`);
    this.ring = [...ring];
  }

  /** The member `step` places after this one in the view (-1: before). */
  private neighbour(step: 1 | -1): string {
    const members = this.members;
    const index = members.indexOf(this.id);
    return members[(index + step + members.length) % members.length];
  }

  /** First output after construction (nothing to resend: the next view re-sends what may differ). */
  start(nowMs: number): RingOutput {
    return this.run(nowMs, () => ({ ok: true, type: "done" }));
  }

  /** Applies one input at `nowMs` (monotonic, never below the previous call's). */
  step(input: RingInput, nowMs: number): RingOutput {
    return this.run(nowMs, () => this.dispatch(input));
  }

  private run(nowMs: number, body: () => RingResult): RingOutput {
    assert(Number.isFinite(nowMs), "nowMs must be finite");
    assert(nowMs >= this.nowMs, `time went backwards: ${nowMs} < ${this.nowMs}`);
    this.nowMs = nowMs;
    this.persistOps = [];
    this.effects = [];
    this.writes.startStep();
    this.expire();
    const result = body();
    this.proceed();
    this.writes.flushForwards();
    this.checkInvariants();
    return { result, persist: this.persistOps, effects: this.effects };
  }

  private dispatch(input: RingInput): RingResult {
    switch (input.type) {
      case "tick":
        return { ok: true, type: "done" };
      case "token":
        return this.receiveToken(input.from, input.token);
      case "writes":
        return this.receiveWrites(input.from, input.epoch, input.entries);
      case "tokenDelivered":
        if (this.sending && this.sending.epoch === input.epoch && this.sending.hop === input.hop) {
          this.sending = null;
          this.lastTokenAtMs = this.nowMs;
        }
        return { ok: true, type: "done" };
      case "peerStale":
        // The successor promised or installed a newer view: the hand-off is refused, so the token
        // never left here (`sending` stays: the view change reports it). Epochs change only by views.
        if (input.what === "token" && this.sending) this.event("tokenRefused", { epoch: this.sending.epoch, newerEpoch: input.epoch });
        return { ok: true, type: "done" };
      case "caughtUp":
        return this.writes.caughtUp(input.reply);
      case "wake":
        this.wakeUntilMs = this.nowMs + 2 * this.options.limits.tokenIdlePaceMs;
        if (this.holding) this.holding.token.idleHops = 0;
        return { ok: true, type: "done" };
      case "lease":
        // A lease of an older epoch is void here (this node has moved on).
        if (input.epoch === this.epoch) {
          this.lease = { epoch: input.epoch, validUntilMs: input.validUntilMs, sectionMaxMs: input.sectionMaxMs ?? this.options.limits.ringLeaseMaxMs };
        }
        return { ok: true, type: "done" };
      case "promised":
        this.promised(input.epoch);
        return { ok: true, type: "done" };
      case "install":
        this.install(input.view, input.regenerate, input.grantNotBeforeMs);
        return { ok: true, type: "done" };
      case "enter":
        this.enter(input);
        return { ok: true, type: "done" };
      case "detach":
        this.waiters.detach(input.reqId, this.nowMs);
        return { ok: true, type: "done" };
      case "leave":
        this.leave(input);
        return { ok: true, type: "done" };
      case "write":
        this.write(input.reqId, input.fence, input.op);
        return { ok: true, type: "done" };
      default:
        return assertNever(input, "ring input");
    }
  }

  // ---- Token ------------------------------------------------------------------------------

  /** Whether a token or writes of `epoch` may be taken now; otherwise the refusal. */
  private epochCheck(epoch: number): RingResult | null {
    if (epoch < this.epoch || epoch < this.refuseBelowEpoch) {
      return { ok: false, type: "stale", epoch: Math.max(this.epoch, this.refuseBelowEpoch) };
    }
    if (epoch > this.epoch) return { ok: false, type: "notYet", epoch: this.epoch };
    return null;
  }

  private receiveToken(from: string, token: RingToken): RingResult {
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
  private dropStaleSuffix(token: RingToken): void {
    const replica = this.replica;
    if (replica.lastApplied <= token.wseq) return;
    const dropped = replica.lastApplied - token.wseq;
    this.writes.truncate(token.wseq + 1);
    this.event("staleWritesDropped", { epoch: token.epoch, from: token.wseq + 1, count: dropped });
  }

  /** Moves the token along as far as it can go now, then asks for it if waiters are left without it. */
  private proceed(): void {
    this.moveToken();
    this.wakeIfWanted();
  }

  /**
   * Waiters here and the token elsewhere: wake every node, at most once per tokenIdlePaceMs. A
   * wake is in force at its receivers for 2 × tokenIdlePaceMs, so while this node has waiters the
   * others never rest the token; this covers waiters left over when the token moved on (they
   * arrived during the visit) as well as a first waiter, at a few requests per second.
   */
  private wakeIfWanted(): void {
    if (this.holding || this.waiters.length === 0) return;
    if (this.nowMs - this.wokeAtMs < this.options.limits.tokenIdlePaceMs) return;
    this.wokeAtMs = this.nowMs;
    this.effects.push({ type: "wakeAll" });
  }

  /** Moves the token along as far as it can go now: catch up, grant, wait for writes, or pass. */
  private moveToken(): void {
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
    // After a visit with grants the token rests here like an idle one while nobody else asks:
    // the node whose client just left is the likeliest to be asked next; a wake from another
    // node's first waiter sends it on at once, and it leaves after tokenIdlePaceMs anyway.
    if (holding.granted && this.uncontended(holding)) return;
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
  private renewEarly(): void {
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
  private uncontended(holding: Holding): boolean {
    return this.nowMs >= this.wakeUntilMs && this.nowMs < holding.arrivedAtMs + this.options.limits.tokenIdlePaceMs;
  }

  /** Whether this visit may still serve waiters that arrived during it (see proceed). */
  private visitOpen(holding: Holding): boolean {
    return this.uncontended(holding) || this.nowMs < holding.arrivedAtMs + this.options.limits.tokenHoldMs;
  }

  private leaseValid(): boolean {
    return this.lease !== null && this.lease.epoch === this.epoch && this.nowMs < this.lease.validUntilMs;
  }

  private pass(): void {
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

  /**
   * The view change: this node promised `epoch`. The token held here (if any) is void, its
   * section ends and its writes in flight may or may not commit; nothing older is taken any more.
   */
  private promised(epoch: number): void {
    if (epoch <= this.refuseBelowEpoch && epoch <= this.epoch) return;
    this.refuseBelowEpoch = Math.max(this.refuseBelowEpoch, epoch);
    this.lease = null;
    this.dropToken(`this node promised epoch ${epoch}`);
  }

  /** Ends whatever the token of the current epoch does here. */
  private dropToken(why: string): void {
    const holding = this.holding;
    if (!holding) return;
    if (this.section) {
      this.droppedSectionUntilMs = Math.max(this.droppedSectionUntilMs, this.section.leaseEndMs);
      this.endSection("epoch");
    }
    for (const [wseq, reqId] of holding.outstanding) {
      if (reqId === null) continue;
      this.reply(reqId, clientError("ring_unavailable", `the token of epoch ${holding.token.epoch} was replaced (${why}); write ${wseq} may or may not commit`));
    }
    this.holding = null;
    this.resent = null;
  }

  /** The view change installed `view` here: a new ring; on the regenerator, the epoch's token. */
  private install(view: View, regenerate: boolean, grantNotBeforeMs: number): void {
    assert(view.epoch > this.epoch && view.epoch >= this.refuseBelowEpoch, `view ${view.epoch} is not newer than ${this.epoch}/${this.refuseBelowEpoch}`);
    assert(view.members.includes(this.id), `view ${view.epoch} without ${this.id}`);
    const old = this.epoch;
    this.dropToken(`view ${view.epoch}`);
    this.epoch = view.epoch;
    this.refuseBelowEpoch = view.epoch;
    this.members = [...view.members];
    this.successor = this.neighbour(1);
    this.predecessor = this.neighbour(-1);
    this.grantNotBeforeMs = grantNotBeforeMs;
    this.lastHop = 0;
    this.sending = null;
    this.lease = null;
    this.writes.newEpoch();
    // The only per-epoch state on disk: a restarted node rejoins in a newer epoch anyway.
    this.persistHardState();
    this.event("epoch", { epoch: view.epoch, previous: old, members: view.members.join(","), successor: this.successor });
    if (regenerate) this.regenerate(view);
  }

  // ---- Critical sections ------------------------------------------------------------------

  private grant(waiter: Waiter, holding: Holding): void {
    // The epoch in the fence's high part: every fence of this epoch is above every fence an
    // older epoch's token could still hand out (nextFence fails stop when the counter runs out).
    const fence = nextFence(this.epoch, Math.max(this.fenceMax, holding.token.fence));
    this.fenceMax = fence;
    holding.token.fence = fence;
    holding.token.idleHops = 0;
    holding.granted = true;
    // Not stored: within the epoch the token carries the counter, and a restarted node takes
    // nothing of its old epoch; its next fence is of a newer epoch, above this one (docs/ring.md, Durability).
    this.section = {
      fence,
      ticket: waiter.ticket,
      leaseMs: waiter.leaseMs,
      grantedAtMs: this.nowMs,
      leaseEndMs: this.nowMs + waiter.leaseMs,
      pickupDeadlineMs: waiter.reqId === null ? waiter.pollDeadlineMs : Number.POSITIVE_INFINITY,
    };
    this.event("granted", { fence, epoch: this.epoch, leaseMs: waiter.leaseMs, waitedMs: this.nowMs - waiter.queuedAtMs });
    if (waiter.reqId !== null) this.reply(waiter.reqId, this.grantReply(this.section));
  }

  private grantReply(section: Section): ClientReply {
    const leaseMs = Math.max(0, section.leaseEndMs - this.nowMs);
    return { ok: true, type: "granted", fence: section.fence, leaseMs, epoch: this.epoch, ticket: section.ticket };
  }

  private endSection(reason: SectionEndReason): void {
    const section = this.section;
    assert(section !== null, "no section to end");
    this.section = null;
    this.effects.push({ type: "sectionEnded", fence: section.fence, reason });
    this.event("sectionEnded", { fence: section.fence, reason, heldMs: this.nowMs - section.grantedAtMs });
  }

  private enter(input: Extract<RingInput, { type: "enter" }>): void {
    const { reqId, ticket, waitMs, leaseMs } = input;
    const problem = this.waiters.checkEnter(waitMs, leaseMs);
    if (problem) return this.reply(reqId, clientError("bad_request", problem));
    if (ticket !== undefined) return this.repoll(reqId, ticket);
    const busyHere = this.holding !== null && (this.section !== null || this.holding.outstanding.size > 0);
    if (!this.waiters.add(reqId, waitMs, leaseMs, this.nowMs, busyHere)) return;
    if (this.holding && !busyHere && this.waiters.length === 1) {
      // The token rests here idle: serve the newcomer in this visit.
      this.holding.grantsLeft = Math.max(this.holding.grantsLeft, 1);
    }
  }

  /** The client asks again with its ticket: pick up a grant, or keep waiting. */
  private repoll(reqId: number, ticket: string): void {
    if (this.section?.ticket === ticket) {
      this.section.pickupDeadlineMs = Number.POSITIVE_INFINITY;
      return this.reply(reqId, this.grantReply(this.section));
    }
    this.waiters.repoll(reqId, ticket);
  }

  private leave(input: Extract<RingInput, { type: "leave" }>): void {
    const { reqId, fence, ticket } = input;
    if (fence !== undefined) {
      if (this.section?.fence !== fence) {
        return this.reply(reqId, clientError("not_in_section", `fence ${fence} is not the current section of ${this.id}`));
      }
      this.endSection("left");
      return this.reply(reqId, { ok: true, type: "left", wasHolder: true });
    }
    if (ticket === undefined) return this.reply(reqId, clientError("bad_request", "leave needs a fence or a ticket"));
    if (this.section?.ticket === ticket) {
      this.endSection("left");
      return this.reply(reqId, { ok: true, type: "left", wasHolder: true });
    }
    this.waiters.withdraw(reqId, ticket);
  }

  // ---- Writes -----------------------------------------------------------------------------

  /** A client write inside its section: stamped, stored, and sent around the ring. */
  private write(reqId: number, fence: number, op: RingOp): void {
    const limits = this.options.limits;
    const problem = checkOp(op, limits);
    if (problem) return this.reply(reqId, clientError("bad_request", problem));
    if (this.section?.fence !== fence) {
      return this.reply(reqId, clientError("not_in_section", `fence ${fence} is not the current section of ${this.id}`));
    }
    const holding = this.holding;
    assert(holding !== null, "a section without the token");
    if (holding.outstanding.size >= limits.ringSectionWritesMax) {
      return this.reply(reqId, clientError("limit_reached", `at most ${limits.ringSectionWritesMax} writes in flight`));
    }
    if (op.type === "put" && this.replica.keyCountWith(op.key) > limits.ringKeysMax) {
      return this.reply(reqId, clientError("limit_reached", `at most ${limits.ringKeysMax} keys`));
    }
    const wseq = holding.token.wseq + 1;
    holding.token.wseq = wseq;
    const entry: RingEntry = { epoch: this.epoch, wseq, author: this.id, origin: this.id, op };
    this.writes.append(entry);
    holding.outstanding.set(wseq, reqId);
    this.writes.forward(entry);
  }

  private receiveWrites(from: string, epoch: number, entries: RingEntry[]): RingResult {
    const refusal = this.epochCheck(epoch);
    if (refusal) return refusal;
    if (from !== this.predecessor) return inputError("bad_request", `${from} is not the predecessor of ${this.id}`);
    return this.writes.receive(epoch, entries);
  }

  /** A write of this node's came back around: it is back if the token waits for it in its epoch. */
  private ownWriteBack(entry: RingEntry): void {
    const holding = this.holding;
    const ours = entry.epoch === this.epoch || (this.resent !== null && entry.wseq >= this.resent.from && entry.wseq <= this.resent.to);
    if (holding?.outstanding.has(entry.wseq) && ours) this.returned(entry.wseq);
  }

  /** One of this holder's writes came back: it is committed. */
  private returned(wseq: number): void {
    const holding = this.holding!;
    const reqId = holding.outstanding.get(wseq);
    holding.outstanding.delete(wseq);
    let lowest = holding.token.wseq + 1;
    for (const out of holding.outstanding.keys()) lowest = Math.min(lowest, out);
    // Raft: re-sent writes (older stamps) commit only together with this epoch's marker.
    const markerWseq = this.resent ? this.resent.to + 1 : 0;
    if (lowest - 1 >= markerWseq) holding.token.commit = Math.max(holding.token.commit, lowest - 1);
    this.writes.learnCommit(holding.token.commit);
    if (reqId !== null && reqId !== undefined) this.reply(reqId, { ok: true, type: "written", wseq });
  }

  /** What this node can send a neighbour that asks for writes from `from` on. */
  catchUp(from: number): CatchUpReply {
    return this.writes.catchUp(from);
  }

  // ---- Regeneration -----------------------------------------------------------------------

  /**
   * The regenerator's half of an installed view: the epoch's one token, at the view's startWseq.
   * Writes from resendFromWseq on (they may differ on other members) go around first, with their
   * original stamps (Raft's rule), from here; the token's commit reaches startWseq when they are back.
   */
  private regenerate(view: View): void {
    const replica = this.replica;
    assert(replica.lastApplied >= view.startWseq, `regenerator at ${replica.lastApplied} below the view's startWseq ${view.startWseq}`);
    if (replica.lastApplied > view.startWseq) this.writes.truncate(view.startWseq + 1);
    const fence = Math.max(this.fenceMax, fenceFloor(view.epoch));
    const token: RingToken = { epoch: view.epoch, hop: 1, wseq: view.startWseq, commit: replica.commit, fence, idleHops: 0 };
    this.lastHop = 1;
    this.fenceMax = fence;
    this.lastToken = { epoch: view.epoch, hop: 1 };
    this.lastTokenAtMs = this.nowMs;
    this.lastArrivalMs = this.nowMs;
    const holding: Holding = { token, arrivedAtMs: this.nowMs, grantsLeft: this.waiters.length, granted: false, passAtMs: null, outstanding: new Map() };
    this.holding = holding;
    // From the lowest member commit on: a member may hold a differing uncommitted version of any
    // later write. (A member more than ringLogRetainMax behind: docs/ring-view.md, Known gaps.)
    const from = Math.max(view.resendFromWseq, replica.logStart);
    const resend = from <= view.startWseq ? replica.entriesFrom(from, view.startWseq - from + 1) ?? [] : [];
    this.resent = resend.length > 0 ? { from, to: view.startWseq } : null;
    for (const stored of resend) {
      const entry = { ...stored, origin: this.id };
      holding.outstanding.set(entry.wseq, null);
      this.writes.forward(entry);
    }
    // The epoch's marker right behind them (Raft's no-op; see RingOp): the token's commit passes
    // startWseq only with it, so a committed prefix always ends in this epoch's stamp or a newer one.
    const marker: RingEntry = { epoch: view.epoch, wseq: view.startWseq + 1, author: this.id, origin: this.id, op: { type: "noop", key: "" } };
    token.wseq = marker.wseq;
    this.writes.append(marker);
    holding.outstanding.set(marker.wseq, null);
    this.writes.forward(marker);
    this.event("tokenRegenerated", { epoch: view.epoch, fence, wseq: token.wseq, commit: token.commit, resent: resend.length });
  }

  // ---- Time -------------------------------------------------------------------------------

  /** Lease ends, wait deadlines, abandoned grants, fetch retries. */
  private expire(): void {
    const now = this.nowMs;
    const section = this.section;
    if (section && now >= section.leaseEndMs) this.endSection("lease");
    else if (section && now >= section.pickupDeadlineMs) this.endSection("abandoned");
    this.waiters.expire(now);
    this.writes.expireFetch(this.holding !== null && this.holding.token.commit > this.replica.lastApplied);
  }

  /**
   * The latest time the driver may tick next without delaying anything here (a pure read): the
   * step's own time while anything runs on ticks (a section, waiters, a catch-up, writes out, a
   * visit not yet paced), the idle token's pass time while it rests here, and +∞ otherwise (an
   * input comes first: a token, a wake, a client). The driver never ticks slower than its period
   * when this is due (cluster/ring/service.ts).
   */
  nextDeadlineMs(): number {
    if (this.section || this.waiters.length > 0 || this.writes.catchingUp) return this.nowMs;
    const holding = this.holding;
    if (!holding) return Number.POSITIVE_INFINITY;
    return holding.outstanding.size === 0 && holding.passAtMs !== null ? holding.passAtMs : this.nowMs;
  }

  // ---- Reads and status -------------------------------------------------------------------

  read(key: string, dirty: boolean): string | undefined {
    return this.replica.read(key, dirty);
  }

  keys(dirty: boolean): string[] {
    return this.replica.keys(dirty);
  }

  /**
   * What the view change reads of this node (LocalFacts, docs/ring-view.md). A pure read.
   * lastWriteEpoch is the stamp of the write at lastApplied (snapshots keep it).
   */
  viewFacts(nowMs: number): LocalFacts {
    const replica = this.replica;
    const section = this.section;
    return {
      lastApplied: replica.lastApplied,
      lastWriteEpoch: replica.stampAt(replica.lastApplied),
      commit: replica.commit,
      tokenEpoch: this.lastToken.epoch,
      tokenHop: this.lastToken.hop,
      token: this.holding ? "held" : this.sending ? "sending" : "away",
      sectionRemainingMs: Math.max(0, (section?.leaseEndMs ?? Number.NEGATIVE_INFINITY) - nowMs, this.droppedSectionUntilMs - nowMs),
      lastTokenAgeMs: this.lastTokenAtMs === null ? null : Math.max(0, nowMs - this.lastTokenAtMs),
    };
  }

  /** Whether `fence` is the section running now (for the driver's section watchers). */
  sectionActive(fence: number): boolean {
    return this.section?.fence === fence;
  }

  status(nowMs: number): RingStatus {
    const section = this.section;
    return {
      id: this.id,
      ring: [...this.ring],
      members: [...this.members],
      epoch: this.epoch,
      refuseBelowEpoch: this.refuseBelowEpoch,
      successor: this.successor,
      predecessor: this.predecessor,
      fenceMax: this.fenceMax,
      token: this.holding ? "held" : this.sending ? "sending" : "away",
      lastHop: this.lastHop,
      lastTokenAgeMs: this.lastTokenAtMs === null ? null : Math.max(0, nowMs - this.lastTokenAtMs),
      lastRotationMs: this.lastRotationMs,
      heldToken: this.holding ? { ...this.holding.token } : null,
      section: section
        ? { fence: section.fence, heldForMs: nowMs - section.grantedAtMs, leaseRemainingMs: Math.max(0, section.leaseEndMs - nowMs) }
        : null,
      waiters: this.waiters.length,
      outstandingWrites: this.holding?.outstanding.size ?? 0,
      lastApplied: this.replica.lastApplied,
      commit: this.replica.commit,
      logStart: this.replica.logStart,
      catchingUp: this.writes.catchingUp,
      leaseValidUntilMs: this.lease && this.lease.epoch === this.epoch && nowMs < this.lease.validUntilMs ? this.lease.validUntilMs : null,
    };
  }

  // ---- Helpers ----------------------------------------------------------------------------

  /** Stores the hard state; one record per output (a later change in the same step updates it). */
  private persistHardState(): void {
    const state: RingHardState = { epoch: this.epoch, fenceMax: this.fenceMax, lastHop: this.lastHop };
    const earlier = this.persistOps.find((op) => op.type === "hardState");
    if (earlier) earlier.state = state;
    else this.persistOps.push({ type: "hardState", state });
  }

  private reply(reqId: number, reply: ClientReply): void {
    this.effects.push({ type: "reply", reqId, reply });
  }

  private event(event: string, fields: Record<string, unknown>): void {
    this.effects.push({ type: "event", event, fields });
  }

  private checkInvariants(): void {
    const holding = this.holding;
    assert(this.section === null || holding !== null, "a section runs only while the token is here");
    assert(!(holding && this.sending), "holding and sending a token at once");
    assert(this.replica.commit <= this.replica.lastApplied, "commit beyond last applied");
    if (holding) {
      assert(holding.token.epoch === this.epoch, "holding a token of another epoch");
      assert(holding.token.fence <= this.fenceMax, "token fence above the stored fence");
      assert(holding.token.commit <= holding.token.wseq, "token commit above its wseq");
    }
    const replies = new Set<number>();
    for (const effect of this.effects) {
      if (effect.type !== "reply") continue;
      assert(!replies.has(effect.reqId), `two replies to request ${effect.reqId}`);
      replies.add(effect.reqId);
    }
  }
}
