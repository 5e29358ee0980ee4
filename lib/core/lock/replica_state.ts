/**
 * What every part of a LockReplica (lock_replica.ts) reads and writes, and the bookkeeping they
 * share: the role and epoch, the primary's log indexes and held answers, the parts that keep their
 * own state (backup_feed.ts, primary_lease.ts, arbiter_record.ts, backup_copy.ts, takeover_gate.ts,
 * durable_copy.ts) wired together, this server's clock, the requests in flight to the peer and the
 * arbiter, and the outputs being built for `ready()`.
 *
 * LockReplica is one state machine whose steps share these fields, so its concepts are layers of
 * one class, each file adding the steps of one concept and each step reading as it did in the one
 * class: replica_state.ts ← replica_roles.ts (role changes) ← replica_primary.ts (the primary's
 * log and commit) ← replica_renewal.ts (renewals with the arbiter) ← replica_backup.ts (the
 * backup's apply path) ← replica_takeover.ts (claims and takeover) ← lock_replica.ts (the inputs
 * and `status`). A layer reaches a step of a later one through the abstract methods below.
 */
import { AssertionError } from "../assert.ts";
import { RecordCover } from "./arbiter_record.ts";
import type { LockMachine } from "./lock_machine.ts";
import { DurableCopy, type RestoredCopy } from "./durable_copy.ts";
import type { Output } from "./lock_table.ts";
import { BackupCopy } from "./backup_copy.ts";
import { BackupFeed } from "./backup_feed.ts";
import { PrimaryLease } from "./primary_lease.ts";
import { TakeoverGate } from "./takeover_gate.ts";
import { type ClientAnswer, emptyReady, type PeerMessage, type ReadyLists, type ReplicaOptions, type Role } from "./replica_io.ts";

interface Pending {
  index: number;
  clientRef?: number;
  output: Output;
  /** When it was appended, on this server's clock (to notice a backup that does not ack). */
  appendedAtMs: number;
}

export interface InFlight {
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

export abstract class ReplicaState {
  role: Role = "joining";
  epoch = 0;
  /** Who serves, as far as this server knows. */
  primary: string | null = null;
  machine: LockMachine | null = null;

  // Primary state.
  protected pending: Pending[] = []; // applied, not yet committed (answers held back)
  protected lastIndex = 0;
  protected commitIndex = 0;
  protected timeOffsetMs = 0;
  /** The lease and the renewals that keep it (primary_lease.ts). */
  protected readonly lease: PrimaryLease;
  protected requireBackup = false; // we told (or are telling) the arbiter the backup is in sync
  /** Replication to the backup: its log, appends, copies and the backup's state (backup_feed.ts). */
  protected readonly feed: BackupFeed;
  /** What the arbiter's record must cover before a commit (tokens, TTLs; arbiter_record.ts). */
  protected readonly record: RecordCover;

  // Backup and joining state.
  /** The backup's copy: appends applied, new copies pulled, the primary last heard (backup_copy.ts). */
  protected readonly follower: BackupCopy;
  /** Our promises to the primary, the epoch the arbiter confirmed, our claims (takeover_gate.ts). */
  protected readonly gate: TakeoverGate;

  /** What the durable log holds, and the commit gate on it (durable_copy.ts). */
  protected readonly disk: DurableCopy;
  /** The copy read from disk at start, until the first role decision takes or drops it. */
  protected restored: RestoredCopy | null;

  protected readonly inFlight = new Map<number, InFlight>();
  protected nextRef = 1;
  protected nowMs = 0;
  protected out: ReadyLists = emptyReady();

  constructor(protected readonly options: ReplicaOptions, nowMs: number) {
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
  }

  protected advance(nowMs: number): void {
    // On every step: the message (two fractional times as text) is built only when it fails.
    if (!(nowMs >= this.nowMs)) throw new AssertionError(`time went backwards: ${nowMs} < ${this.nowMs}`);
    this.nowMs = nowMs;
    // Requests the driver never reported back: count them failed after two timeouts. Appends
    // are resent much sooner: a lost one must not outlast replicationTimeoutMs, or one dropped
    // message would cost the backup its in-sync state. A late answer to a forgotten append is
    // ignored; the backup skips entries it already has.
    // The Map itself, not a copy: `forget` deletes only the entry at hand, which a Map's own
    // iteration allows, and adds none; a copy cost 30–50 ns on every step (docs/bench.md, "Eighth pass").
    const s = this.options.settings;
    for (const [ref, request] of this.inFlight) {
      const limitMs = request.kind === "append" ? s.replicationTimeoutMs / 3 : 2 * s.peerTimeoutMs;
      if (nowMs - request.sentAtMs > limitMs) this.forget(ref);
    }
  }

  protected request(request: InFlight): number {
    const ref = this.nextRef++;
    this.inFlight.set(ref, request);
    return ref;
  }

  protected hasInFlight(kind: InFlight["kind"]): boolean {
    return [...this.inFlight.values()].some((r) => r.kind === kind);
  }

  private appendsInFlight(): number {
    let count = 0;
    for (const request of this.inFlight.values()) if (request.kind === "append") count += 1;
    return count;
  }

  protected forget(ref: number): void {
    const request = this.inFlight.get(ref);
    if (!request) return;
    this.inFlight.delete(ref);
    // Resend everything not acked; the backup skips what it already has.
    if (request.kind === "append" && this.role === "primary") this.feed.appendLost(request.syncGen);
    if (request.kind === "sync") this.follower.syncDone();
  }

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

  /** End of the lease on this server's clock: the later of the two, since one backer suffices. */
  leaseUntilMs(): number {
    return this.lease.untilMs();
  }

  protected timeBaseMs(): number {
    return Math.max(this.nowMs + this.timeOffsetMs, this.machine?.lastAtMs ?? 0);
  }

  protected answer(clientRef: number, answer: ClientAnswer): void {
    this.out.answers.push({ clientRef, answer });
  }

  protected notPrimary(epoch = this.epoch, primary = this.primary): ClientAnswer {
    const why = this.role === "primary" ? "its lease has lapsed" : `it is ${this.role}`;
    return { ok: false, code: "not_primary", message: `${this.options.nodeId} does not serve: ${why}`, epoch, primary };
  }

  /** A command the record did not cover in time: retryable, here (the client's retry asks again). */
  protected uncovered(): ClientAnswer {
    const message = `${this.options.nodeId} cannot answer yet: the arbiter has not raised its record to cover this TTL (retry)`;
    return { ok: false, code: "not_primary", message, epoch: this.epoch, primary: this.options.nodeId };
  }

  protected nack(reason: string): PeerMessage {
    return { type: "nack", from: this.options.nodeId, epoch: this.epoch, primary: this.primary, reason };
  }

  protected event(event: string, fields: Record<string, unknown>): void {
    this.out.events.push({ event, fields });
  }

  /** Steps of later layers that earlier ones call (replica_renewal.ts, replica_takeover.ts). */
  protected abstract maybeRenew(): void;
  protected abstract maybeClaim(): void;
  protected abstract maybeWhois(): void;
}
