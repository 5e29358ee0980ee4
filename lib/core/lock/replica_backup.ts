/**
 * A backup's apply path (a layer of LockReplica, replica_state.ts): the primary's appends applied
 * and acked with a promise not to take over, its tick (ask the arbiter the epoch, pull a copy,
 * claim once the primary falls silent), and the answers to its copy requests. backup_copy.ts keeps
 * the copy, takeover_gate.ts the promises.
 */
import type { PeerMessage } from "./replica_io.ts";
import { ReplicaRenewal } from "./replica_renewal.ts";

export abstract class ReplicaBackup extends ReplicaRenewal {
  protected onAppend(message: Extract<PeerMessage, { type: "append" }>): PeerMessage {
    if (message.epoch < this.epoch) return this.nack(`epoch ${message.epoch} is over`);
    if (message.epoch > this.epoch || this.role !== "backup" || this.primary !== message.from) {
      // A primary of a newer epoch (or one we did not know): follow it, with a fresh copy.
      this.followPrimary(message.epoch, message.from, "append from a primary");
    }
    this.follower.heard();
    const { ok, appliedIndex } = this.follower.append(message);
    return this.ack(ok, appliedIndex);
  }

  protected tickBackup(): void {
    this.maybeWhois();
    if (!this.machine || this.follower.loading) this.follower.requestSync(); // also a chunk request that failed
    // Also without a copy: a claim without state tells the arbiter this process's copy is gone
    // (the primary may be a restarted one waiting for it; arbiter.ts, backupCopyLost).
    if (this.primarySilent(this.nowMs)) this.maybeClaim();
  }

  protected primarySilent(nowMs: number): boolean {
    return nowMs - this.follower.lastHeardMs >= this.options.settings.primarySilenceMs;
  }

  protected onSyncAnswer(answer: PeerMessage): void {
    this.follower.syncDone();
    if (this.role !== "backup") return;
    if (answer.epoch > this.epoch) {
      // A copy of a newer epoch comes from its primary; a nack names the primary it knows.
      return this.followPrimary(answer.epoch, answer.type === "nack" ? answer.primary : answer.from, "newer epoch");
    }
    this.follower.answered(answer);
  }

  /** Acks an append of the primary we follow, with a promise not to take over if we may give one. */
  private ack(ok: boolean, appliedIndex: number): PeerMessage {
    const promiseMs = this.gate.promise(this.nowMs, this.epoch);
    return { type: "appendAck", from: this.options.nodeId, epoch: this.epoch, ok, appliedIndex, promiseMs };
  }
}
