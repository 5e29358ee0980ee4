/**
 * One lock server (primary or backup) as a pure state machine, in the style of etcd's RawNode:
 * client requests, peer messages, replies to our own requests, and ticks come in; messages to
 * send, answers to clients and committed lock-table effects come out of `ready()`.
 *
 * Safety rules (README "Failover"):
 * - A change is answered only once it is committed: the backup acked it, or the arbiter has
 *   recorded the backup as out of sync (then the backup can never be promoted).
 * - The primary accepts new commands only inside a lease from one of the other two (a majority
 *   of three): the arbiter's, renewed every leaseRenewMs, or the backup's, which every ack of a
 *   replication message carries ("I will not take over for promiseMs"). Each is counted from the
 *   send time of the request that earned it, minus a safety margin; its giver counts it from the
 *   receipt. So the arbiter alone, or the backup alone, may be lost without a stop.
 * - The backup takes over only with the arbiter's consent (the arbiter's lease lapsed on its
 *   clock, backup in sync) AND once its own promises lapsed on its own clock; a restarted backup
 *   first waits out the promises it may have given before (they lived in memory). A new primary
 *   never serves while a promise it gave as backup still runs. The new epoch fences the old
 *   primary: anyone who sees a higher epoch steps down. (docs/failover.md has the argument.)
 * - A server that steps down throws its state away (it may hold uncommitted changes) and syncs
 *   again from the primary: a streamed copy plus what follows (resync.ts).
 * - Times in the log are the primary's; a new primary continues that time base, and restarts
 *   every session lease at takeover. Keepalives renew the primary's table only (no entry); a
 *   lapsed lease is the primary's decision, logged as an `expire` entry (session_leases.ts).
 *
 * Parts, each owning its own state: backup_feed.ts (the primary's replication to its backup),
 * primary_lease.ts (the lease and its renewals), takeover_gate.ts (a backup's promises and
 * claims), backup_copy.ts (a backup's copy), replica_io.ts (messages, outputs, settings).
 */
import type { ArbiterReply } from "../arbiter/arbiter.ts";
import { freshGraceMs, freshTokenFloor, RecordCover } from "./arbiter_record.ts";
import { assert, AssertionError, assertNever } from "../assert.ts";
import { requestIdProblem } from "./answered.ts";
import { LockMachine, type LogEntry } from "./lock_machine.ts";
import { DurableCopy, type RestoredCopy, restoredCopyFor, restoredTableFor, restoredTakeoverCopy } from "./durable_copy.ts";
import type { Command, Output } from "./lock_table.ts";
import { BackupCopy } from "./backup_copy.ts";
import { BackupFeed } from "./backup_feed.ts";
import { PrimaryLease, remainingMs } from "./primary_lease.ts";
import { TakeoverGate } from "./takeover_gate.ts";
import { type ClientAnswer, emptyReady, type PeerMessage, type Ready, type ReplicaOptions, type ReplicaStatus, type Role, toAnswer } from "./replica_io.ts";

export type { BackupMode, ClientAnswer, Outbound, PeerMessage, Ready, ReplicaOptions, ReplicaSettings, ReplicaStatus, Role } from "./replica_io.ts";



interface Pending {
  index: number;
  clientRef?: number;
  output: Output;
  /** When it was appended, on this server's clock (to notice a backup that does not ack). */
  appendedAtMs: number;
}

interface InFlight {
  kind: "append" | "sync" | "renew" | "claim" | "whois";
  sentAtMs: number;
  /** For renewals: the in-sync value reported, and the report's sequence number. */
  backupInSync?: boolean;
  seq?: number;
  /** For claims: sent with our copy (a takeover) or without (a fresh start). */
  hasState?: boolean;
  /** For appends: the last index carried, and the copy generation it was sent for. */
  lastIndex?: number;
  syncGen?: number;
}

export class LockReplica {
  role: Role = "joining";
  epoch = 0;
  /** Who serves, as far as this server knows. */
  primary: string | null = null;
  machine: LockMachine | null = null;

  // Primary state.
  private pending: Pending[] = []; // applied, not yet committed (answers held back)
  private lastIndex = 0;
  private commitIndex = 0;
  private timeOffsetMs = 0;
  /** The lease and the renewals that keep it (primary_lease.ts). */
  private readonly lease: PrimaryLease;
  private requireBackup = false; // we told (or are telling) the arbiter the backup is in sync
  /** Replication to the backup: its log, appends, copies and the backup's state (backup_feed.ts). */
  private readonly feed: BackupFeed;
  /** What the arbiter's record must cover before a commit (tokens, TTLs; arbiter_record.ts). */
  private readonly record: RecordCover;

  // Backup and joining state.
  /** The backup's copy: appends applied, new copies pulled, the primary last heard (backup_copy.ts). */
  private readonly follower: BackupCopy;
  /** Our promises to the primary, the epoch the arbiter confirmed, our claims (takeover_gate.ts). */
  private readonly gate: TakeoverGate;

  /** What the durable log holds, and the commit gate on it (durable_copy.ts). */
  private readonly disk: DurableCopy;
  /** The copy read from disk at start, until the first role decision takes or drops it. */
  private restored: RestoredCopy | null;

  private readonly inFlight = new Map<number, InFlight>();
  private nextRef = 1;
  private nowMs = 0;
  private out: Ready = emptyReady();

  constructor(private readonly options: ReplicaOptions, nowMs: number) {
    this.nowMs = nowMs;
    this.gate = new TakeoverGate(options.settings, nowMs);
    this.record = new RecordCover(options.settings);
    this.feed = new BackupFeed(options.nodeId, options.peerId, options.settings, {
      nowMs: () => this.nowMs,
      epoch: () => this.epoch,
      lastIndex: () => this.lastIndex,
      commitIndex: () => this.commitIndex,
      requireBackup: () => this.requireBackup,
      requireBackupNow: () => {
        this.requireBackup = true;
      },
      appendsInFlight: () => this.appendsInFlight(),
      sendAppend: (message, lastIndex) => {
        const ref = this.request({ kind: "append", sentAtMs: this.nowMs, lastIndex, syncGen: message.syncGen });
        this.out.send.push({ kind: "peer", ref, to: this.options.peerId!, message });
      },
      oldestPendingAboveMs: (index) => this.pending.find((p) => p.index > index)?.appendedAtMs,
      maybeRenew: () => this.maybeRenew(),
      event: (event, fields) => this.event(event, fields),
    });
    this.lease = new PrimaryLease(options.settings);
    this.follower = new BackupCopy(options.nodeId, options.settings, options.incarnation, {
      nowMs: () => this.nowMs,
      epoch: () => this.epoch,
      primary: () => this.primary,
      machine: () => this.machine,
      install: (machine) => {
        this.machine = machine;
      },
      sendSync: (to, message) => {
        const ref = this.request({ kind: "sync", sentAtMs: this.nowMs });
        this.out.send.push({ kind: "peer", ref, to, message });
      },
      beforeApply: (machine, entry) => this.disk.entry(machine, this.epoch, this.primary, entry, this.out.persist),
      event: (event, fields) => this.event(event, fields),
    });
    this.restored = options.durable?.restored ?? null;
    this.disk = new DurableCopy(options.durable !== undefined, this.restored, options.incarnation);
    // The restored copy's epoch existed: a late message of an older one must not make us drop it.
    this.epoch = this.restored?.epoch ?? 0;
    if (options.arbiterId === null) {
      assert(options.peerId === null, "a backup needs an arbiter");
      // Standalone: serve at once; nothing to replicate to, no lease to hold. Its durable copy
      // is its own table (nobody else ever served).
      const restored = this.restored?.machine;
      this.becomePrimary(1, restored ?? new LockMachine(options.newTable({ epoch: 1, tokenFloor: options.tokenFloor }), options.settings), "standalone", null);
      if (restored) this.append({ type: "restartLeases" }, undefined);
      this.lease.forever();
    }
  }

  /** Added to the driver's clock to get the log's time base (non-zero after a takeover). */
  get timeOffset(): number {
    return this.timeOffsetMs;
  }

  /** Takes what the driver must do now. */
  ready(): Ready {
    // Until the restored copy is taken or dropped, the disk keeps it as it is.
    if (this.restored === null) this.disk.follow(this.machine, this.epoch, this.primary, this.out.persist);
    const ready = this.out;
    this.out = emptyReady();
    return ready;
  }

  // ---- inputs ---------------------------------------------------------------------------

  tick(nowMs: number): void {
    this.advance(nowMs);
    // With a backup's restored copy, ask the epoch first: a claim without state could start afresh.
    if (this.role === "joining") return this.restored && !this.gate.epochConfirmed ? this.maybeWhois() : this.maybeClaim();
    if (this.role === "backup") return this.tickBackup();
    this.tickPrimary();
  }

  /** A client command; the answer comes out of ready() once committed (or refused at once). */
  clientRequest(clientRef: number, command: Command, requestId: string | undefined, nowMs: number): void {
    this.advance(nowMs);
    if (!this.serving()) {
      this.answer(clientRef, this.notPrimary());
      return;
    }
    // Every command reads a table without lapsed sessions (a keepalive must not revive one).
    this.expireLapsed();
    // A bad id is refused before it is logged: it would be replicated and remembered.
    const idProblem = requestIdProblem(requestId);
    if (idProblem !== undefined) return this.answer(clientRef, { ok: false, code: "bad_request", message: idProblem });
    // A command the table refuses whatever is applied before it (fields out of the limits, a
    // session it does not have) is not logged: a client cannot make the log (replicated,
    // fsynced) grow with bogus requests (finding 1, docs/security.md "Fuzzing"). A retry whose
    // request id has a remembered answer is logged as before and keeps that answer.
    const machine = this.machine!;
    const remembered = requestId !== undefined && machine.answerFor(requestId) !== undefined;
    const refusal = remembered ? undefined : machine.table.refusalBeforeLog(command);
    if (refusal !== undefined) return this.answerUnlogged(clientRef, refusal);
    // A TTL the arbiter's record does not cover: only this command waits (outside the log).
    if (!this.record.admits(command, this.machine!.table)) return this.holdForCover(clientRef, command, requestId);
    this.submitAdmitted(command, requestId, clientRef);
  }

  /** A command past every check: a keepalive renews our table only, any other is logged. */
  private submitAdmitted(command: Command, requestId: string | undefined, clientRef: number): void {
    if (command.type !== "keepAlive") return this.append(command, requestId, clientRef);
    // Not replicated, not written to disk: only a primary's table holds live leases, and a new
    // primary restarts them all (docs/failover.md "Session leases").
    this.answerUnlogged(clientRef, this.machine!.table.renew(command, this.timeBaseMs()));
  }

  /**
   * Logs the sessions whose lease lapsed on our clock as `expire` entries, before any command
   * reads the table. Terminates: each entry drops at least one of the table's bounded sessions.
   */
  private expireLapsed(): void {
    const table = this.machine!.table;
    for (let ids = table.lapsedSessions(this.timeBaseMs()); ids.length > 0; ids = table.lapsedSessions(this.timeBaseMs())) {
      this.append({ type: "expire", sessions: ids }, undefined);
    }
  }

  /**
   * Answers what was read from (or, for a keepalive, renewed in) the table without a log entry.
   * The table may hold entries not yet committed (a close, or an open, that a failover could
   * still lose): the answer waits, in order with theirs, until the last of them commits, as a
   * logged answer would.
   */
  private answerUnlogged(clientRef: number, output: Output): void {
    if (this.commitIndex >= this.lastIndex) return this.answer(clientRef, toAnswer(output));
    this.pending.push({ index: this.lastIndex, clientRef, output, appendedAtMs: this.nowMs });
  }

  private holdForCover(clientRef: number, command: Command, requestId: string | undefined): void {
    if (!this.record.hold({ clientRef, command, requestId }, this.machine!.table, this.nowMs)) this.answer(clientRef, this.uncovered());
    this.maybeRenew();
  }

  /** A message from the other server; the return value is the answer to send back. */
  peerMessage(message: PeerMessage, nowMs: number): PeerMessage {
    this.advance(nowMs);
    if (message.from !== this.options.peerId) return this.nack(`unknown peer ${message.from}`);
    switch (message.type) {
      case "append":
        return this.onAppend(message);
      case "syncRequest":
        return this.onSyncRequest(message);
      case "syncNext":
        return this.onSyncNext(message);
      case "appendAck":
      case "syncStart":
      case "syncChunk":
      case "nack":
        return this.nack(`${message.type} is an answer, not a request`);
      default:
        return assertNever(message, "peer message");
    }
  }

  /** The answer to one of our own requests. */
  reply(ref: number, answer: PeerMessage | ArbiterReply, nowMs: number): void {
    this.advance(nowMs);
    const request = this.inFlight.get(ref);
    if (!request) {
      // Late (already counted as failed), but a newer epoch in it still counts.
      if (this.role === "primary" && answer.epoch > this.epoch) {
        this.stepDown(answer.epoch, answer.type === "nack" || answer.type === "refused" ? answer.primary : null, "late answer of a newer epoch");
      }
      return;
    }
    this.inFlight.delete(ref);
    if (request.kind === "renew" || request.kind === "claim" || request.kind === "whois") {
      this.gate.heardEpoch((answer as ArbiterReply).epoch);
    }
    switch (request.kind) {
      case "append":
        return this.onAppendAnswer(request, answer as PeerMessage);
      case "sync":
        return this.onSyncAnswer(answer as PeerMessage);
      case "renew":
        return this.onRenewAnswer(request, answer as ArbiterReply);
      case "claim":
        return this.onClaimAnswer(request, answer as ArbiterReply);
      case "whois":
        return this.onWhoisAnswer(answer as ArbiterReply);
      default:
        return assertNever(request.kind, "request kind");
    }
  }

  /** The durable log holds the copy of `copyGen` up to `index` (durable_copy.ts). */
  durable(copyGen: number, index: number, nowMs: number): void {
    this.advance(nowMs);
    this.disk.durable(copyGen, index);
    if (this.role === "primary") this.advanceCommit();
  }

  /** One of our requests failed or timed out (it may still have been delivered). */
  failed(ref: number, nowMs: number): void {
    this.advance(nowMs);
    this.forget(ref);
  }

  private forget(ref: number): void {
    const request = this.inFlight.get(ref);
    if (!request) return;
    this.inFlight.delete(ref);
    // Resend everything not acked; the backup skips what it already has.
    if (request.kind === "append" && this.role === "primary") this.feed.appendLost(request.syncGen);
    if (request.kind === "sync") this.follower.syncDone();
  }

  // ---- primary ----------------------------------------------------------------------------

  /** Whether this server accepts new commands now. */
  serving(): boolean {
    return this.servingAt(this.nowMs);
  }

  /**
   * Whether it would accept a command at `nowMs` on its clock (the simulator's checkers ask at
   * any moment, also between two inputs): a primary inside its lease, and outside every promise
   * it gave as a backup.
   */
  servingAt(nowMs: number): boolean {
    return this.role === "primary" && nowMs < this.leaseUntilMs() && !this.gate.promisedAt(nowMs);
  }

  /** Whether the arbiter has told this process the current epoch since it started (takeover_gate.ts). */
  epochConfirmed(): boolean {
    return this.options.arbiterId === null || this.gate.epochConfirmed;
  }

  /** End of the lease on this server's clock: the later of the two, since one backer suffices. */
  leaseUntilMs(): number {
    return this.lease.untilMs();
  }

  private timeBaseMs(): number {
    return Math.max(this.nowMs + this.timeOffsetMs, this.machine?.lastAtMs ?? 0);
  }

  private append(command: Command, requestId: string | undefined, clientRef?: number): void {
    const machine = this.machine;
    assert(machine !== null && this.role === "primary", "only a primary appends");
    const entry: LogEntry = { index: this.lastIndex + 1, epoch: this.epoch, atMs: this.timeBaseMs(), command };
    if (requestId !== undefined) entry.requestId = requestId;
    this.disk.entry(machine, this.epoch, this.primary, entry, this.out.persist);
    const output = machine.apply(entry);
    this.lastIndex = entry.index;
    this.record.appended(entry.index, machine.table);
    this.pending.push({ index: entry.index, clientRef, output, appendedAtMs: this.nowMs });
    this.feed.appended(entry);
    this.feed.pump();
    this.advanceCommit();
  }

  private tickPrimary(): void {
    const machine = this.machine!;
    for (const held of this.record.takeExpired(this.nowMs)) this.answer(held.clientRef, this.uncovered());
    if (this.serving()) this.expireLapsed();
    if (this.serving() && machine.table.isDue(this.timeBaseMs())) this.append({ type: "tick" }, undefined);
    if (this.options.arbiterId === null) return;
    this.feed.checkHealth();
    this.feed.pump();
    this.maybeRenew();
  }

  private appendsInFlight(): number {
    let count = 0;
    for (const request of this.inFlight.values()) if (request.kind === "append") count += 1;
    return count;
  }

  private onAppendAnswer(request: InFlight, answer: PeerMessage): void {
    if (this.role !== "primary") return;
    if (answer.epoch > this.epoch) return this.stepDown(answer.epoch, answer.type === "nack" ? answer.primary : null, "peer has a newer epoch");
    if (answer.type !== "appendAck" || answer.epoch !== this.epoch) return;
    // The backup's promise is a lease whatever the state of its copy: it cannot take over before it ends.
    if (answer.promiseMs > 0) this.lease.backupPromised(request.sentAtMs, answer.promiseMs);
    if (this.feed.acked(request.syncGen, request.lastIndex, answer)) this.advanceCommit();
    // Group commit: what was appended while the pipeline was full goes out now, in one append,
    // not at the next tick (up to tickMs later; with one append in flight that was every batch).
    this.feed.pump();
  }

  private maybeRenew(): void {
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

  private onRenewAnswer(request: InFlight, reply: ArbiterReply): void {
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

  private advanceCommit(): void {
    const acked = this.requireBackup ? Math.min(this.feed.backup.ackedIndex, this.lastIndex) : this.lastIndex;
    // Two more gates: the arbiter's record covers the answer, and our own disk has the entry.
    const commitTo = this.disk.commitLimit(this.record.commitLimit(acked));
    if (commitTo <= this.commitIndex) return;
    this.commitIndex = commitTo;
    let done = 0;
    while (done < this.pending.length && this.pending[done].index <= commitTo) {
      const p = this.pending[done];
      this.out.effects.push(...p.output.effects);
      if (p.clientRef !== undefined) this.answer(p.clientRef, toAnswer(p.output));
      done += 1;
    }
    this.pending = this.pending.slice(done);
  }

  private onSyncRequest(message: Extract<PeerMessage, { type: "syncRequest" }>): PeerMessage {
    return this.refuseSync(message) ?? this.feed.startCopy(this.machine!, message.incarnation);
  }

  private onSyncNext(message: Extract<PeerMessage, { type: "syncNext" }>): PeerMessage {
    const refusal = this.refuseSync(message);
    if (refusal) return refusal;
    return this.feed.nextChunk(message) ?? this.nack(`no copy ${message.syncGen} at ${message.position}`);
  }

  private refuseSync(message: { epoch: number }): PeerMessage | null {
    if (this.role !== "primary" || !this.machine) return this.nack("not primary");
    if (message.epoch <= this.epoch) return null;
    this.stepDown(message.epoch, null, "sync request from a newer epoch");
    return this.nack("stepped down");
  }

  // ---- backup -----------------------------------------------------------------------------

  private onAppend(message: Extract<PeerMessage, { type: "append" }>): PeerMessage {
    if (message.epoch < this.epoch) return this.nack(`epoch ${message.epoch} is over`);
    if (message.epoch > this.epoch || this.role !== "backup" || this.primary !== message.from) {
      // A primary of a newer epoch (or one we did not know): follow it, with a fresh copy.
      this.followPrimary(message.epoch, message.from, "append from a primary");
    }
    this.follower.heard();
    const { ok, appliedIndex } = this.follower.append(message);
    return this.ack(ok, appliedIndex);
  }

  private tickBackup(): void {
    this.maybeWhois();
    if (!this.machine || this.follower.loading) this.follower.requestSync(); // also a chunk request that failed
    // Also without a copy: a claim without state tells the arbiter this process's copy is gone
    // (the primary may be a restarted one waiting for it; arbiter.ts, backupCopyLost).
    if (this.primarySilent(this.nowMs)) this.maybeClaim();
  }

  private primarySilent(nowMs: number): boolean {
    return nowMs - this.follower.lastHeardMs >= this.options.settings.primarySilenceMs;
  }

  /**
   * Whether this server is a backup with a whole copy that has heard nothing from its primary for
   * primarySilenceMs, while a dead primary's leases would end (eagerClaimsUntilMs): it claims the
   * primary's place as soon as its promises let it, so a client's request refused now would be
   * served here soon. The driver may hold such a request until the takeover
   * (cluster/lock/service.ts) rather than have the client back off and ask again. Past that
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

  private onSyncAnswer(answer: PeerMessage): void {
    this.follower.syncDone();
    if (this.role !== "backup") return;
    if (answer.epoch > this.epoch) {
      // A copy of a newer epoch comes from its primary; a nack names the primary it knows.
      return this.followPrimary(answer.epoch, answer.type === "nack" ? answer.primary : answer.from, "newer epoch");
    }
    this.follower.answered(answer);
  }

  /** Asks the arbiter to serve: with our copy if we have one (takeover), else as a fresh start. */
  private maybeClaim(): void {
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

  private onClaimAnswer(request: InFlight, reply: ArbiterReply): void {
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

  // ---- role changes -----------------------------------------------------------------------

  private becomePrimary(epoch: number, machine: LockMachine, how: string, lease: Extract<ArbiterReply, { type: "lease" }> | null): void {
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
  private stepDown(epoch: number, primary: string | null, reason: string): void {
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

  private followPrimary(epoch: number, primary: string | null, reason: string): void {
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

  // ---- helpers ----------------------------------------------------------------------------

  private advance(nowMs: number): void {
    // On every step: the message (two fractional times as text) is built only when it fails.
    if (!(nowMs >= this.nowMs)) throw new AssertionError(`time went backwards: ${nowMs} < ${this.nowMs}`);
    this.nowMs = nowMs;
    // Requests the driver never reported back: count them failed after two timeouts. Appends
    // are resent much sooner: a lost one must not outlast replicationTimeoutMs, or one dropped
    // message would cost the backup its in-sync state. A late answer to a forgotten append is
    // ignored; the backup skips entries it already has.
    const s = this.options.settings;
    for (const [ref, request] of [...this.inFlight]) {
      const limitMs = request.kind === "append" ? s.replicationTimeoutMs / 3 : 2 * s.peerTimeoutMs;
      if (nowMs - request.sentAtMs > limitMs) this.forget(ref);
    }
  }

  private request(request: InFlight): number {
    const ref = this.nextRef++;
    this.inFlight.set(ref, request);
    return ref;
  }

  private hasInFlight(kind: InFlight["kind"]): boolean {
    return [...this.inFlight.values()].some((r) => r.kind === kind);
  }

  private answer(clientRef: number, answer: ClientAnswer): void {
    this.out.answers.push({ clientRef, answer });
  }

  private notPrimary(epoch = this.epoch, primary = this.primary): ClientAnswer {
    const why = this.role === "primary" ? "its lease has lapsed" : `it is ${this.role}`;
    return { ok: false, code: "not_primary", message: `${this.options.nodeId} does not serve: ${why}`, epoch, primary };
  }

  /** A command the record did not cover in time: retryable, here (the client's retry asks again). */
  private uncovered(): ClientAnswer {
    const message = `${this.options.nodeId} cannot answer yet: the arbiter has not raised its record to cover this TTL (retry)`;
    return { ok: false, code: "not_primary", message, epoch: this.epoch, primary: this.options.nodeId };
  }

  private nack(reason: string): PeerMessage {
    return { type: "nack", from: this.options.nodeId, epoch: this.epoch, primary: this.primary, reason };
  }

  /** Acks an append of the primary we follow, with a promise not to take over if we may give one. */
  private ack(ok: boolean, appliedIndex: number): PeerMessage {
    const promiseMs = this.gate.promise(this.nowMs, this.epoch);
    return { type: "appendAck", from: this.options.nodeId, epoch: this.epoch, ok, appliedIndex, promiseMs };
  }

  /** A backup that has not heard the current epoch from the arbiter since it started asks it. */
  private maybeWhois(): void {
    const arbiter = this.options.arbiterId;
    if (arbiter === null || !this.gate.whoisDue(this.nowMs, this.hasInFlight("whois"))) return;
    this.gate.whoisSent(this.nowMs);
    const ref = this.request({ kind: "whois", sentAtMs: this.nowMs });
    this.out.send.push({ kind: "arbiter", ref, to: arbiter, request: { type: "whois", from: this.options.nodeId } });
  }

  /** The arbiter's view: a newer epoch than the one we follow replaces it (we may have missed it). */
  private onWhoisAnswer(reply: ArbiterReply): void {
    if (reply.type !== "view" || reply.epoch <= this.epoch || this.role === "primary") return;
    this.followPrimary(reply.epoch, reply.primary, "the arbiter names a newer epoch");
  }

  private event(event: string, fields: Record<string, unknown>): void {
    this.out.events.push({ event, fields });
  }

  /** What `status` shows of replication. */
  status(): ReplicaStatus {
    return {
      role: this.role,
      epoch: this.epoch,
      primary: this.primary,
      serving: this.serving(),
      leaseRemainingMs: this.role === "primary" ? remainingMs(this.leaseUntilMs(), this.nowMs) : 0,
      leaseSupport: this.role === "primary"
        ? this.lease.support(this.nowMs)
        : null,
      promisedRemainingMs: remainingMs(this.gate.promisedUntil(), this.nowMs),
      backup: this.role === "primary" && this.options.peerId !== null
        ? {
          id: this.options.peerId,
          mode: this.feed.backup.mode,
          ackedIndex: this.feed.backup.ackedIndex,
          lagEntries: this.lastIndex - this.feed.backup.ackedIndex,
          arbiterRecordedInSync: this.lease.arbiterInSync,
        }
        : null,
      lastIndex: this.role === "primary" ? this.lastIndex : this.machine?.appliedIndex ?? 0,
      commitIndex: this.role === "primary" ? this.commitIndex : this.machine?.appliedIndex ?? 0,
      hasState: this.machine !== null,
      lastHeardFromPrimaryMs: this.role === "backup" ? this.nowMs - this.follower.lastHeardMs : null,
      arbiterRecord: this.role === "primary" && this.options.arbiterId !== null
        ? { ...this.record.status(), reportSeq: this.lease.reportSeq, backupInSync: this.feed.backup.mode === "inSync", backupIncarnation: this.feed.backup.incarnation ?? null }
        : null,
    };
  }
}
