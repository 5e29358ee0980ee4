/**
 * Claims and takeover (a layer of LockReplica, replica_state.ts): a server that is not the primary
 * asks the arbiter to serve, with its copy (a takeover) or without (a fresh start), and becomes the
 * primary its answer names, with the right table; a restarted one first asks the arbiter the
 * current epoch (`whois`). The driver asks here whether a request refused now would be served here
 * soon (takeoverPending) and when the next claim may go out (takeoverClaimAtMs).
 * takeover_gate.ts paces the claims and keeps the promises that hold them back.
 */
import type { ArbiterReply } from "../arbiter/arbiter.ts";
import { freshGraceMs, freshTokenFloor } from "./arbiter_record.ts";
import { LockMachine } from "./lock_machine.ts";
import { restoredTableFor } from "./durable_copy.ts";
import type { InFlight } from "./replica_state.ts";
import { ReplicaBackup } from "./replica_backup.ts";

export abstract class ReplicaTakeover extends ReplicaBackup {
  /**
   * Whether this server is a backup with a whole copy that has heard nothing from its primary for
   * primarySilenceMs, while a dead primary's leases would end (eagerClaimsUntilMs): it claims the
   * primary's place as soon as its promises let it, so a client's request refused now would be
   * served here soon. The driver may hold such a request until the takeover
   * (cluster/lock/service.ts with takeover_hold.ts) rather than have the client back off and ask again. Past that
   * window the primary is most likely alive and cut off from us: a request is refused at once,
   * and the client asks the primary.
   */
  takeoverPending(nowMs: number): boolean {
    if (this.role !== "backup" || this.machine === null || this.follower.loading) return false;
    return this.primarySilent(nowMs) && nowMs < this.eagerClaimsUntilMs(true);
  }

  /**
   * When this backup's next takeover claim may first go out (its promises ran out and the primary
   * fell silent), if that is later than `nowMs`; else undefined. The driver ticks at that moment
   * too, so the claim does not wait for the next tick (up to tickMs, issue 14).
   */
  takeoverClaimAtMs(nowMs: number): number | undefined {
    if (this.role !== "backup" || this.machine === null) return undefined;
    const atMs = Math.max(this.gate.takeoverFromMs(), this.follower.lastHeardMs + this.options.settings.primarySilenceMs);
    return atMs > nowMs ? atMs : undefined;
  }

  /** Asks the arbiter to serve: with our copy if we have one (takeover), else as a fresh start. */
  protected maybeClaim(): void {
    const hasState = this.machine !== null;
    const arbiter = this.options.arbiterId;
    if (arbiter === null) return;
    if (!this.gate.claimDue(this.nowMs, hasState, this.hasInFlight("claim"), this.eagerClaimsUntilMs(hasState))) return;
    const ref = this.request({ kind: "claim", sentAtMs: this.nowMs, hasState });
    this.gate.claimSent(this.nowMs, hasState ? this.epoch : null);
    this.out.send.push({
      kind: "arbiter",
      ref,
      to: arbiter,
      request: { type: "claim", from: this.options.nodeId, epoch: this.epoch, hasState, incarnation: this.disk.reportedIncarnation(this.machine, this.restored !== null) },
    });
  }

  /**
   * Until when a backup taking over claims again at every tick (takeover_gate.ts claimDue): while
   * the arbiter's lease of the silent primary may be about to end. A primary that died did so
   * within a heartbeat of our hearing it last (unless its last messages were lost), and its lease
   * ends primaryLeaseMs after its last renewal; leaseRenewMs of margin. Past that, the primary is
   * most likely alive and cut off from us: claims every claimRetryMs.
   */
  private eagerClaimsUntilMs(hasState: boolean): number {
    const s = this.options.settings;
    return this.role === "backup" && hasState ? this.follower.lastHeardMs + s.primaryLeaseMs + s.leaseRenewMs : Number.NEGATIVE_INFINITY;
  }

  protected onClaimAnswer(request: InFlight, reply: ArbiterReply): void {
    if (this.role === "primary") return;
    // Any lease naming us serves an epoch at least ours (we may have learnt the epoch from the
    // peer before the arbiter's answer reached us).
    if (reply.type === "lease" && reply.primary === this.options.nodeId && reply.epoch >= this.epoch) {
      // A lease for a claim without state is granted on "nobody has the state": a copy synced
      // while the claim was in flight (from a primary the arbiter may have replaced) must not
      // become the table, or its older tokens would be handed out again.
      const copy = request.hasState ? this.machine : null;
      // A durable copy of ours as the primary of the epoch before is that table (durable_copy.ts):
      // nothing was lost, so it keeps its tokens and sessions and needs no grace.
      const restored = copy ? null : restoredTableFor(this.restored, this.options.nodeId, reply.epoch);
      const how = copy ? "takeover" : restored ? "restored" : "fresh";
      // A fresh table continues above every token the record covers (handed out by a lost table).
      const tokenFloor = freshTokenFloor(reply, this.options.tokenFloor);
      const machine = copy ?? restored ?? new LockMachine(this.options.newTable({ epoch: reply.epoch, tokenFloor }), this.options.settings);
      this.becomePrimary(reply.epoch, machine, how, reply);
      this.lease.arbiterGranted(request.sentAtMs, reply.leaseMs);
      if (how !== "fresh") this.append({ type: "restartLeases" }, undefined);
      // After a lost table: no grant until its sessions ended on their clients' clocks, counted
      // from our claim's send (after its last answer), in the log's time base.
      const graceMs = how === "fresh" ? freshGraceMs(reply, this.options.settings) : 0;
      if (graceMs > 0) this.append({ type: "holdGrants", untilMs: request.sentAtMs + this.timeOffsetMs + graceMs }, undefined);
      return;
    }
    if (reply.type === "refused" && reply.becomeBackup && reply.primary !== null && reply.primary !== this.options.nodeId) {
      if (this.role === "joining" || reply.epoch > this.epoch || reply.primary !== this.primary) {
        this.followPrimary(reply.epoch, reply.primary, reply.reason);
      }
    } else if (reply.type === "refused" && reply.epoch > this.epoch) {
      // The arbiter is past the epoch we follow: its primary is no longer ours to follow.
      this.followPrimary(reply.epoch, reply.primary, reply.reason);
    }
  }

  /** A backup that has not heard the current epoch from the arbiter since it started asks it. */
  protected maybeWhois(): void {
    const arbiter = this.options.arbiterId;
    if (arbiter === null || !this.gate.whoisDue(this.nowMs, this.hasInFlight("whois"))) return;
    this.gate.whoisSent(this.nowMs);
    const ref = this.request({ kind: "whois", sentAtMs: this.nowMs });
    this.out.send.push({ kind: "arbiter", ref, to: arbiter, request: { type: "whois", from: this.options.nodeId } });
  }

  /** The arbiter's view: a newer epoch than the one we follow replaces it (we may have missed it). */
  protected onWhoisAnswer(reply: ArbiterReply): void {
    if (reply.type !== "view" || reply.epoch <= this.epoch || this.role === "primary") return;
    this.followPrimary(reply.epoch, reply.primary, "the arbiter names a newer epoch");
  }
}
