/**
 * A primary's renewals with the arbiter (a layer of LockReplica, replica_state.ts): each renews the
 * arbiter's lease and reports whether the backup is in sync; its answer extends the lease, lets
 * commits and held commands the record now covers go on, lets changes commit without a backup the
 * arbiter recorded out of sync, or makes the primary step down. primary_lease.ts keeps the lease
 * and the order of the reports.
 */
import type { ArbiterReply } from "../arbiter/arbiter.ts";
import type { InFlight } from "./replica_state.ts";
import { ReplicaPrimary } from "./replica_primary.ts";

export abstract class ReplicaRenewal extends ReplicaPrimary {
  protected maybeRenew(): void {
    if (this.role !== "primary" || this.options.arbiterId === null) return;
    const wantInSync = this.feed.backup.mode === "inSync";
    const renewsInFlight = [...this.inFlight.values()].filter((r) => r.kind === "renew").length;
    if (!this.lease.renewalDue(this.nowMs, wantInSync, this.record.waiting, renewsInFlight)) return;
    if (wantInSync) this.requireBackup = true;
    const seq = this.lease.report(this.nowMs, wantInSync);
    const ref = this.request({ kind: "renew", sentAtMs: this.nowMs, backupInSync: wantInSync, seq });
    this.out.send.push({
      kind: "arbiter",
      ref,
      to: this.options.arbiterId,
      request: { type: "renew", from: this.options.nodeId, epoch: this.epoch, backupInSync: wantInSync, seq, ...this.record.asks(),
        ...(wantInSync && this.feed.backup.incarnation !== undefined ? { backupIncarnation: this.feed.backup.incarnation } : {}) },
    });
  }

  protected onRenewAnswer(request: InFlight, reply: ArbiterReply): void {
    if (this.role !== "primary") return;
    // An arbiter behind our epoch lost its record (its refusals say so): it decides nothing
    // about our epoch. We serve on the backup's promises (while it gives any) until it is recovered.
    if (reply.type === "refused" && reply.epoch < this.epoch) return;
    if (reply.type !== "lease" || reply.epoch !== this.epoch || reply.primary !== this.options.nodeId) {
      return this.stepDown(reply.epoch, reply.primary, reply.type === "refused" ? reply.reason : "arbiter names another primary");
    }
    this.lease.arbiterGranted(request.sentAtMs, reply.leaseMs);
    this.record.covered(reply);
    if (this.serving()) {
      this.expireLapsed();
      for (const held of this.record.takeCovered(this.machine!.table)) this.submitAdmitted(held.command, held.requestId, held.clientRef);
    }
    this.advanceCommit();
    // Only an answer that may change what we believe the arbiter recorded (primary_lease.ts).
    if (!this.lease.answered(request.seq!, request.backupInSync!)) return;
    const mode = this.feed.backup.mode;
    if (!this.lease.arbiterInSync && (mode === "outOfSync" || mode === "absent" || this.feed.copying)) {
      // The arbiter will not promote the backup now: changes may commit without it (also while
      // it loads a copy: BackupFeed.advanceSync turns the requirement on again at its first ack).
      this.requireBackup = false;
      this.advanceCommit();
    }
  }
}
