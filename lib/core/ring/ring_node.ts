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
 * waiting clients (ring_waiters.ts), the replica (ring_replica.ts); and the layers of the node
 * itself (ring_node_state.ts says why layers): its state and output sinks (ring_node_state.ts),
 * the critical sections (ring_sections.ts), the token's visit and hand-off (token_visit.ts), the
 * view change's promise, install and regeneration (ring_views.ts). This file keeps the inputs and
 * their dispatch, the holder's writes, time (expiry, the next deadline) and reads and status.
 *
 * No clock, timer, randomness or I/O in here: time comes in as `nowMs`.
 */
import { assert, assertNever } from "../assert.ts";
import { checkOp } from "./ring_writes.ts";
import { inputError } from "./ring_node_state.ts";
import { RingViews } from "./ring_views.ts";
import type { LocalFacts } from "./view_wire.ts";
import { clientError, type RingInput, type RingOutput, type RingResult, type RingStatus } from "./ring_io.ts";
import type { CatchUpReply, RingEntry, RingOp } from "./ring_types.ts";

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

export class RingNode extends RingViews {
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
  protected ownWriteBack(entry: RingEntry): void {
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
   * visit not yet paced), the resting token's pass time (the idle pace, or the end of the
   * holding time after a grant under contention: token_visit.ts), and +∞ otherwise (an
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

  // ---- Invariants -------------------------------------------------------------------------

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
