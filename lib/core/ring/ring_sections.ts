/**
 * A ring node's critical sections for its local clients (docs/ring.md, "Critical sections"): the
 * grant to the head of the wait queue (ring_waiters.ts) with its fencing token, the section's
 * lease and pick-up deadline, a client's enter, re-poll and leave. A layer of the RingNode
 * (ring_node_state.ts says why layers); the token's visit (token_visit.ts) decides when to grant.
 *
 * No clock, timer, randomness or I/O in here: time comes in as `nowMs`.
 */
import { assert } from "../assert.ts";
import { type Holding, RingNodeState, type Section } from "./ring_node_state.ts";
import type { Waiter } from "./ring_waiters.ts";
import { nextFence } from "./view_wire.ts";
import { clientError, type ClientReply, type RingInput, type SectionEndReason } from "./ring_io.ts";

export abstract class RingSections extends RingNodeState {
  protected grant(waiter: Waiter, holding: Holding): void {
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
    this.effects.push({ type: "sectionGranted", epoch: this.epoch, leaseMs: waiter.leaseMs });
    if (waiter.reqId !== null) this.reply(waiter.reqId, this.grantReply(this.section));
  }

  protected grantReply(section: Section): ClientReply {
    const leaseMs = Math.max(0, section.leaseEndMs - this.nowMs);
    return { ok: true, type: "granted", fence: section.fence, leaseMs, epoch: this.epoch, ticket: section.ticket };
  }

  protected endSection(reason: SectionEndReason): void {
    const section = this.section;
    assert(section !== null, "no section to end");
    this.section = null;
    this.effects.push({ type: "sectionEnded", fence: section.fence, reason });
    this.event("sectionEnded", { fence: section.fence, reason, heldMs: this.nowMs - section.grantedAtMs });
  }

  protected enter(input: Extract<RingInput, { type: "enter" }>): void {
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
  protected repoll(reqId: number, ticket: string): void {
    if (this.section?.ticket === ticket) {
      this.section.pickupDeadlineMs = Number.POSITIVE_INFINITY;
      return this.reply(reqId, this.grantReply(this.section));
    }
    this.waiters.repoll(reqId, ticket);
  }

  protected leave(input: Extract<RingInput, { type: "leave" }>): void {
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
}
