/**
 * A ring node's side of the view change (docs/ring-view.md, "What the ring node does"): the two
 * inputs the view change gives it, `promised` (drop the token of the older epoch, take nothing
 * older) and `install` (the new view's ring and epoch), and on the view's regenerator the epoch's
 * one token, after re-sending the writes that may differ. A layer of the RingNode
 * (ring_node_state.ts says why layers), over the token's visit (token_visit.ts).
 *
 * No clock, timer, randomness or I/O in here: time comes in as `nowMs`.
 */
import { assert } from "../assert.ts";
import type { Holding } from "./ring_node_state.ts";
import { TokenVisit } from "./token_visit.ts";
import { fenceFloor, type View } from "./view_wire.ts";
import { clientError } from "./ring_io.ts";
import type { RingEntry, RingToken } from "./ring_types.ts";

export abstract class RingViews extends TokenVisit {
  /**
   * The view change: this node promised `epoch`. The token held here (if any) is void, its
   * section ends and its writes in flight may or may not commit; nothing older is taken any more.
   */
  protected promised(epoch: number): void {
    if (epoch <= this.refuseBelowEpoch && epoch <= this.epoch) return;
    this.refuseBelowEpoch = Math.max(this.refuseBelowEpoch, epoch);
    this.lease = null;
    this.dropToken(`this node promised epoch ${epoch}`);
  }

  /** Ends whatever the token of the current epoch does here. */
  protected dropToken(why: string): void {
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
  protected install(view: View, regenerate: boolean, grantNotBeforeMs: number): void {
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

  // ---- Regeneration -----------------------------------------------------------------------

  /**
   * The regenerator's half of an installed view: the epoch's one token, at the view's startWseq.
   * Writes from resendFromWseq on (they may differ on other members) go around first, with their
   * original stamps (Raft's rule), from here; the token's commit reaches startWseq when they are back.
   */
  protected regenerate(view: View): void {
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
}
