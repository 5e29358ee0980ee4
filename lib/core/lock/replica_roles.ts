/**
 * The role changes of a LockReplica (a layer of it, replica_state.ts): becoming the primary of an
 * epoch, stepping down when a newer epoch or another primary shows up, and following a primary as
 * its backup. Requests held back by a primary that leaves its role are answered "not primary"
 * here, so no client waits for an answer that can no longer come.
 */
import type { ArbiterReply } from "../arbiter/arbiter.ts";
import { assert } from "../assert.ts";
import type { LockMachine } from "./lock_machine.ts";
import { restoredCopyFor, restoredTakeoverCopy } from "./durable_copy.ts";
import { ReplicaState } from "./replica_state.ts";

export abstract class ReplicaRoles extends ReplicaState {
  protected becomePrimary(epoch: number, machine: LockMachine, how: string, lease: Extract<ArbiterReply, { type: "lease" }> | null): void {
    assert(epoch >= this.epoch, "epochs only grow");
    this.role = "primary";
    this.epoch = epoch;
    this.primary = this.options.nodeId;
    this.restored = null;
    this.machine = machine;
    this.lastIndex = machine.appliedIndex;
    this.commitIndex = machine.appliedIndex;
    this.pending = [];
    this.feed.restart();
    this.follower.drop();
    // Continue the log's time base from where the last entry left it.
    this.timeOffsetMs = machine.lastAtMs - this.nowMs;
    this.requireBackup = false;
    this.lease.restart(this.nowMs);
    this.record.start(lease, machine.table);
    this.event("primary", { epoch, how, index: machine.appliedIndex });
  }

  /** Leaves the primary role (or an old primary): answers held requests "not primary". */
  protected stepDown(epoch: number, primary: string | null, reason: string): void {
    this.event("steppedDown", { from: this.role, epoch, primary, reason });
    this.refuseHeldBack(epoch, primary);
    this.feed.closeCopy();
    if (primary !== null && primary !== this.options.nodeId) {
      this.followPrimary(Math.max(epoch, this.epoch), primary, reason);
    } else {
      this.role = "joining";
      this.epoch = Math.max(epoch, this.epoch);
      this.primary = primary;
      this.machine = null;
      this.follower.drop();
    }
  }

  /** Leaving the primary role: uncommitted and uncovered requests get "not primary" (the client retries there). */
  private refuseHeldBack(epoch: number, primary: string | null): void {
    for (const p of this.pending) if (p.clientRef !== undefined) this.answer(p.clientRef, this.notPrimary(epoch, primary));
    this.pending = [];
    for (const held of this.record.takeAll()) this.answer(held.clientRef, this.notPrimary(epoch, primary));
  }

  protected followPrimary(epoch: number, primary: string | null, reason: string): void {
    if (primary === this.options.nodeId) {
      // Someone names us primary of an epoch we never heard of. If the arbiter recorded our own
      // takeover claim but its answer was lost, claim again with that copy. Otherwise we were
      // that primary before a restart, and our table died with it: a copy we hold now came from
      // elsewhere and is not it (claim without state; the arbiter decides).
      const taken = restoredTakeoverCopy(this.restored, this.options.nodeId, epoch);
      if (taken) [this.machine, this.restored] = [taken, null];
      if (taken) this.gate.claimedWith(epoch - 1);
      if (!this.gate.tookOverWith(epoch - 1)) this.machine = null;
      this.role = "joining";
      this.epoch = Math.max(this.epoch, epoch);
      this.primary = null;
      this.event("namedPrimary", { epoch, reason, hasState: this.machine !== null });
      return;
    }
    const wasServing = this.role === "primary";
    if (wasServing) {
      this.refuseHeldBack(epoch, primary);
    }
    const sameCopy = this.role === "backup" && this.epoch === epoch && this.primary === primary;
    this.role = primary === null ? "joining" : "backup";
    this.epoch = Math.max(this.epoch, epoch);
    this.primary = primary;
    this.lease.drop();
    this.requireBackup = false;
    this.feed.stop();
    this.follower.heard();
    // Our copy may hold changes the new primary never committed: start over from its streamed copy.
    if (!sameCopy) {
      // A durable copy recorded under this very view is kept (durable_copy.ts); it syncs anew.
      this.machine = restoredCopyFor(this.restored, this.epoch, primary);
      this.follower.restart();
    }
    this.restored = null;
    this.event("backup", { epoch: this.epoch, primary, reason });
  }
}
