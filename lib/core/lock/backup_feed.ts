/**
 * The primary's replication to its backup (part of LockReplica, lock_replica.ts): the log of
 * entries the backup has not acked, the pipeline of appends and heartbeats, the copy streamed to
 * a backup that asks for one, and the tracker of the backup's state (resync.ts), with the moves
 * between "syncing", "inSync" and "outOfSync".
 *
 * What it decides about the commit rule it reports to the replica through `FeedHost`: the
 * replica owns `requireBackup` (it also follows the arbiter's record) and the commit itself.
 */
import { assert } from "../assert.ts";
import type { LockMachine, LogEntry } from "./lock_machine.ts";
import { backupProblem, type BackupTracker, copyingTracker, CopyServer, freshTracker, mayRequireBackup } from "./resync.ts";
import type { PeerMessage, ReplicaSettings } from "./replica_io.ts";

/** What the feed needs of its replica. */
export interface FeedHost {
  nowMs(): number;
  epoch(): number;
  /** The primary's last appended and last committed index. */
  lastIndex(): number;
  commitIndex(): number;
  /** Whether nothing commits without the backup's ack (the replica's; see advanceCommit). */
  requireBackup(): boolean;
  /** The backup caught up under load: from now on commits wait for its acks. */
  requireBackupNow(): void;
  /** Appends sent and not yet answered or failed. */
  appendsInFlight(): number;
  /** Sends an append; the answer comes back to `acked` (with the generation it was sent for). */
  sendAppend(message: Extract<PeerMessage, { type: "append" }>, lastIndex: number): void;
  /** When the oldest entry above `index` was appended (undefined: none). */
  oldestPendingAboveMs(index: number): number | undefined;
  /** Tell the arbiter of a changed backup state (the replica decides when). */
  maybeRenew(): void;
  event(event: string, fields: Record<string, unknown>): void;
}

export class BackupFeed {
  private log: LogEntry[] = []; // entries after backup.ackedIndex (kept to resend)
  private tracker: BackupTracker = freshTracker();
  /** Generation of the copy the backup should have; bumped whenever it must sync again. */
  private syncGen = 0;
  /** The copy streaming to the backup, until it acks an append of its generation. */
  private readonly copy: CopyServer;

  constructor(private readonly nodeId: string, private readonly peerId: string | null, private readonly settings: ReplicaSettings, private readonly host: FeedHost) {
    this.copy = new CopyServer(settings);
  }

  /** The backup's state, as the primary sees it (read only: for renewals and status). */
  get backup(): Readonly<BackupTracker> {
    return this.tracker;
  }

  /** Whether a copy is streaming to the backup (its acks do not count yet). */
  get copying(): boolean {
    return this.copy.copying;
  }

  /** A new primary: a fresh tracker and a new generation (any old copy is not ours). */
  restart(): void {
    this.log = [];
    this.copy.close();
    this.syncGen += 1;
    this.tracker = freshTracker();
  }

  /** No longer a primary: nothing to send. */
  stop(): void {
    this.log = [];
    this.copy.close();
    this.tracker = freshTracker();
  }

  closeCopy(): void {
    this.copy.close();
  }

  /** A new entry of the primary's log: kept to send while the backup follows. */
  appended(entry: LogEntry): void {
    if (this.tracker.mode === "syncing" || this.tracker.mode === "inSync") {
      this.log.push(entry);
      if (this.log.length > this.settings.replicationLogMax) this.declareOutOfSync("too far behind");
    }
  }

  /** An append of generation `syncGen` was lost: resend everything not acked. */
  appendLost(syncGen: number | undefined): void {
    if (syncGen === this.syncGen) this.tracker.sentIndex = this.resendFrom();
  }

  private resendFrom(): number {
    return Math.max(this.tracker.ackedIndex, this.tracker.baseIndex);
  }

  /** Sends replication messages while the pipeline has room, and heartbeats when idle. */
  pump(): void {
    if (this.peerId === null) return;
    const s = this.settings;
    const b = this.tracker;
    // Entries after the cut wait until the backup holds the copy; heartbeats keep going.
    const replicating = (b.mode === "syncing" || b.mode === "inSync") && !this.copy.copying;
    // Acks of later messages may overtake a resend point: never resend what is acked.
    b.sentIndex = Math.max(b.sentIndex, this.resendFrom());
    // Bounded: each round sends at least one entry or stops.
    while (replicating && this.host.appendsInFlight() < s.replicationPipelineMax && b.sentIndex < this.host.lastIndex()) {
      const from = b.sentIndex + 1;
      const offset = from - (this.log[0]?.index ?? from);
      // The message is built only when it fails (this runs for every append: docs/bench.md, "Ninth pass").
      if (!(offset >= 0 && offset < this.log.length)) assert(false, `entry ${from} missing from the replication log`);
      const entries = this.log.slice(offset, offset + s.replicationBatchMax);
      this.sendAppend(entries);
    }
    if (this.host.appendsInFlight() === 0 && this.host.nowMs() - b.lastSendMs >= s.heartbeatMs) this.sendAppend([]);
  }

  private sendAppend(entries: LogEntry[]): void {
    const last = entries.length > 0 ? entries[entries.length - 1].index : this.tracker.sentIndex;
    this.host.sendAppend({ type: "append", from: this.nodeId, epoch: this.host.epoch(), syncGen: this.syncGen, entries }, last);
    this.tracker.sentIndex = last;
    this.tracker.lastSendMs = this.host.nowMs();
  }

  /**
   * An ack of this epoch to an append of generation `syncGen` that carried entries up to
   * `lastIndex`. Returns whether it may have moved the commit point.
   */
  acked(syncGen: number | undefined, lastIndex: number | undefined, answer: Extract<PeerMessage, { type: "appendAck" }>): boolean {
    const b = this.tracker;
    const nowMs = this.host.nowMs();
    b.lastContactMs = nowMs;
    // An answer about an older copy says nothing about the current one (it syncs again).
    if ((b.mode !== "syncing" && b.mode !== "inSync") || syncGen !== this.syncGen) return false;
    // While the backup loads a copy (or answers from an older one), its index says nothing yet.
    if (this.copy.copying && !this.copy.completedBy(answer, b, nowMs)) return false;
    // On every ack: the message is built only when it fails.
    const logLastIndex = this.host.lastIndex();
    if (answer.appliedIndex > logLastIndex) assert(false, `backup applied ${answer.appliedIndex} > ${logLastIndex}`);
    assert(lastIndex === undefined || lastIndex <= logLastIndex, "acked past the log");
    // A lower index is a late answer to an older message (pipelining reorders), not a lost copy:
    // a backup that really lost its state asks for a new copy, which resets this tracker.
    if (answer.appliedIndex > b.ackedIndex && answer.appliedIndex >= b.baseIndex) {
      b.ackedIndex = answer.appliedIndex;
      if (b.mode === "syncing" && !this.host.requireBackup()) b.sinceMs = nowMs; // progress (see checkHealth)
      // The log holds consecutive indexes (every entry since the copy's cut), so what is acked
      // is its head: dropped in place (the appends sent carry copies of their entries).
      const acked = this.log.length === 0 ? 0 : Math.min(this.log.length, b.ackedIndex - this.log[0].index + 1);
      if (acked === this.log.length) this.log.length = 0;
      else if (acked > 0) this.log.splice(0, acked);
    }
    // A gap (an earlier message was lost or overtaken): resend what is not acked, even when
    // this answer is late, since the message it answers will not be resent otherwise.
    if (!answer.ok) b.sentIndex = this.resendFrom();
    if (b.mode === "syncing") this.advanceSync(b);
    return true;
  }

  /** Catching up under load (see `mayRequireBackup`): then in sync once it acked the target. */
  private advanceSync(b: BackupTracker): void {
    if (!this.host.requireBackup()) {
      if (!mayRequireBackup(b, this.host.lastIndex(), this.host.nowMs(), this.settings)) return;
      this.host.requireBackupNow();
      b.syncTargetIndex = this.host.lastIndex();
    }
    if (b.ackedIndex < b.syncTargetIndex) return;
    b.mode = "inSync";
    this.host.event("backupInSync", { index: b.ackedIndex });
    this.host.maybeRenew();
  }

  checkHealth(): void {
    const b = this.tracker;
    const oldestUnackedMs = this.host.oldestPendingAboveMs(b.ackedIndex);
    const context = { copying: this.copy.copying, requireBackup: this.host.requireBackup(), oldestUnackedMs, nowMs: this.host.nowMs() };
    const problem = backupProblem(b, context, this.settings);
    if (problem !== null) this.declareOutOfSync(problem);
  }

  private declareOutOfSync(reason: string): void {
    if (this.tracker.mode === "outOfSync") return;
    this.host.event("backupOutOfSync", { reason, acked: this.tracker.ackedIndex, last: this.host.lastIndex() });
    this.tracker = { ...freshTracker(), mode: "outOfSync", lastContactMs: this.tracker.lastContactMs };
    this.copy.close();
    this.syncGen += 1;
    this.log = [];
    // requireBackup stays until the arbiter confirms it recorded "out of sync".
    this.host.maybeRenew();
  }

  /**
   * The backup asks for a copy of `machine`. A new request replaces a running copy. From here
   * the backup gets every entry after the cut; it counts as having the copy only once it acks
   * an append of this generation.
   */
  startCopy(machine: LockMachine, incarnation: string | undefined): PeerMessage {
    const { start, items } = this.copy.start(machine);
    this.syncGen += 1;
    // Committed entries are all in the copy if nothing commits without the backup now.
    const committedIndex = this.host.requireBackup() ? this.host.commitIndex() : Number.POSITIVE_INFINITY;
    this.tracker = copyingTracker(start.appliedIndex, committedIndex, this.host.nowMs(), incarnation);
    this.log = [];
    this.host.event("backupSyncing", { index: start.appliedIndex, syncGen: this.syncGen, items });
    return { type: "syncStart", from: this.nodeId, epoch: this.host.epoch(), syncGen: this.syncGen, start };
  }

  /** The next chunk of the running copy (null: no such copy, or no such position). */
  nextChunk(message: Extract<PeerMessage, { type: "syncNext" }>): PeerMessage | null {
    const next = message.syncGen === this.syncGen ? this.copy.next(message.position) : null;
    if (next === null) return null;
    this.tracker.lastContactMs = this.host.nowMs();
    if (next.progress) this.tracker.sinceMs = this.host.nowMs();
    return { type: "syncChunk", from: this.nodeId, epoch: this.host.epoch(), syncGen: this.syncGen, chunk: next.chunk };
  }
}
