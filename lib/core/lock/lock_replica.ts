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
 * Its concepts are layers of this class, each in its own file (replica_state.ts says why):
 * replica_state.ts (the shared state, the clock and the requests in flight), replica_roles.ts (role
 * changes), replica_primary.ts (the primary's log, commit and held answers), replica_renewal.ts
 * (renewals with the arbiter), replica_backup.ts (the backup's apply path), replica_takeover.ts
 * (claims and takeover); this file takes the inputs and reports `status`. Parts that keep their own
 * state: backup_feed.ts (the primary's replication to its backup), primary_lease.ts (the lease and
 * its renewals), takeover_gate.ts (a backup's promises and claims), backup_copy.ts (a backup's
 * copy), replica_io.ts (messages, outputs, settings).
 */
import type { ArbiterReply } from "../arbiter/arbiter.ts";
import { assert, assertNever } from "../assert.ts";
import { requestIdProblem } from "./answered.ts";
import { LockMachine } from "./lock_machine.ts";
import type { Command } from "./lock_table.ts";
import { remainingMs } from "./primary_lease.ts";
import { type PeerMessage, type Ready, type ReplicaOptions, type ReplicaStatus } from "./replica_io.ts";
import { ReplicaTakeover } from "./replica_takeover.ts";

export type { BackupMode, ClientAnswer, Outbound, PeerMessage, Ready, ReplicaOptions, ReplicaSettings, ReplicaStatus, Role } from "./replica_io.ts";

/** What `ready()` returns for a step with no outputs: frozen, so a driver writing to it throws. */
const NOTHING_READY: Ready = Object.freeze({
  send: Object.freeze([]),
  answers: Object.freeze([]),
  effects: Object.freeze([]),
  events: Object.freeze([]),
  persist: Object.freeze([]),
});

/** A step's list for the driver: the list the step filled, or the shared frozen empty one. */
const filled = <T>(list: T[], empty: readonly T[]): readonly T[] => (list.length > 0 ? list : empty);
/** The core's list for the next step: a new one in place of a list handed out, the empty one kept. */
const unused = <T>(list: T[]): T[] => (list.length > 0 ? [] : list);

export class LockReplica extends ReplicaTakeover {
  constructor(options: ReplicaOptions, nowMs: number) {
    super(options, nowMs);
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
    const out = this.out;
    // A step with nothing to do (every append a backup applies without a durable log: its ack is
    // peerMessage's return value) hands out the shared empty Ready and allocates nothing
    // (docs/bench.md, "Eighth pass"). Otherwise the driver gets the lists this step filled, which
    // the core replaces with new ones, and the shared frozen empty lists for the others: a step
    // allocates two objects and the lists it used, not five lists (a primary's step fills one or two;
    // "Ninth pass"). Nothing the driver holds is ever written by the core.
    if (out.send.length === 0 && out.answers.length === 0 && out.effects.length === 0 && out.events.length === 0 && out.persist.length === 0) return NOTHING_READY;
    const ready: Ready = {
      send: filled(out.send, NOTHING_READY.send),
      answers: filled(out.answers, NOTHING_READY.answers),
      effects: filled(out.effects, NOTHING_READY.effects),
      events: filled(out.events, NOTHING_READY.events),
      persist: filled(out.persist, NOTHING_READY.persist),
    };
    this.out = { send: unused(out.send), answers: unused(out.answers), effects: unused(out.effects), events: unused(out.events), persist: unused(out.persist) };
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

  /** Whether the arbiter has told this process the current epoch since it started (takeover_gate.ts). */
  epochConfirmed(): boolean {
    return this.options.arbiterId === null || this.gate.epochConfirmed;
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
