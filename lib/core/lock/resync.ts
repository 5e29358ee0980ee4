/**
 * The sync path of LockReplica (docs/failover.md "Resync"), which replica_state.ts wires: what
 * the primary knows of its backup (`BackupTracker`), the primary's side of a streamed copy
 * (`CopyServer`) and the backup's (`CopyPuller`). The copy itself is table_copy.ts.
 */
import type { AnsweredLimits } from "./answered.ts";
import type { LockMachine } from "./lock_machine.ts";
import type { LockTableLimits } from "./lock_table.ts";
import type { PeerMessage } from "./replica_io.ts";
import { type CopyChunk, type CopyLimits, CopySink, CopySource, type CopyStart } from "./table_copy.ts";
import type { Settings } from "../../settings.ts";

export type BackupMode = "absent" | "syncing" | "inSync" | "outOfSync";

/** What the primary knows of its backup. */
export interface BackupTracker {
  mode: BackupMode;
  /** Highest index the backup applied (acked). */
  ackedIndex: number;
  /** Index of the copy it synced from: the replication log starts after it. */
  baseIndex: number;
  /** While syncing: it is in sync once it acked this (everything committed without it). */
  syncTargetIndex: number;
  /** When this tracker started (a new copy of the backup); while syncing, its last progress. */
  sinceMs: number;
  /** When it began to catch up on the entries after its copy (the copy complete). */
  catchUpFromMs: number;
  /** Highest index sent (acked or not). */
  sentIndex: number;
  lastSendMs: number;
  lastContactMs: number;
  /** The backup process this copy went to (its syncRequest's id), named in in-sync reports. */
  incarnation?: string;
}

export function freshTracker(): BackupTracker {
  return {
    mode: "absent",
    ackedIndex: 0,
    baseIndex: 0,
    syncTargetIndex: Number.POSITIVE_INFINITY,
    sinceMs: 0,
    catchUpFromMs: 0,
    sentIndex: 0,
    lastSendMs: Number.NEGATIVE_INFINITY,
    lastContactMs: 0,
  };
}

/** A backup that starts a copy at `index`: the log it gets next starts after it. */
export function copyingTracker(index: number, syncTargetIndex: number, nowMs: number, incarnation: string | undefined): BackupTracker {
  const tracker: BackupTracker = { ...freshTracker(), mode: "syncing", syncTargetIndex, sinceMs: nowMs, baseIndex: index, sentIndex: index, lastContactMs: nowMs };
  if (incarnation !== undefined) tracker.incarnation = incarnation;
  return tracker;
}

/**
 * Catching up under load: once the backup can ack what it lacks within a quarter of
 * replicationTimeoutMs at the pace it acks now (at once after a quick copy), nothing more commits
 * without it (so clients cannot outrun it); it counts as in sync (and the arbiter is told) once
 * it has acked everything committed before that switch. Switching earlier would hold commits for
 * the whole backlog of a long copy; waiting for it to ack the very last entry may never happen
 * while clients keep writing.
 */
export function mayRequireBackup(b: BackupTracker, lastIndex: number, nowMs: number, s: Pick<Settings, "replicationTimeoutMs" | "replicationBatchMax">): boolean {
  const elapsedMs = nowMs - b.catchUpFromMs;
  // A quarter: the pace is an average since the copy ended, and clients wait for the whole rest.
  const pace = elapsedMs > 0 ? ((b.ackedIndex - b.baseIndex) * s.replicationTimeoutMs) / (4 * elapsedMs) : 0;
  return lastIndex - b.ackedIndex <= Math.max(s.replicationBatchMax, pace);
}

/**
 * Why the backup must be counted out of sync now, or null. A copy, and the catch-up on the
 * entries that followed it while commits do not wait for it yet, take as long as they take:
 * either is dropped when it stops advancing. Otherwise a change it has not acked within
 * replicationTimeoutMs (counted from the later of its append and the sync's last progress: the
 * oldest waiting change may be older than the copy), or its silence, drops it.
 */
export function backupProblem(
  b: BackupTracker,
  now: { copying: boolean; requireBackup: boolean; oldestUnackedMs: number | undefined; nowMs: number },
  s: Pick<Settings, "replicationTimeoutMs" | "syncProgressTimeoutMs">,
): string | null {
  if (b.mode !== "inSync" && b.mode !== "syncing") return null;
  const { nowMs, oldestUnackedMs } = now;
  if (b.mode === "syncing" && (now.copying || !now.requireBackup)) {
    const limitMs = now.copying ? s.syncProgressTimeoutMs : s.replicationTimeoutMs;
    if (nowMs - b.sinceMs <= limitMs) return null;
    return now.copying ? "copy made no progress" : "catch-up made no progress";
  }
  if (oldestUnackedMs !== undefined && nowMs - Math.max(oldestUnackedMs, b.sinceMs) > s.replicationTimeoutMs) return "no ack in time";
  return nowMs - b.lastContactMs > s.replicationTimeoutMs ? "backup silent" : null;
}

/** The primary's side: at most one copy streaming to the backup. */
export class CopyServer {
  private source: CopySource | null = null;

  constructor(private readonly limits: CopyLimits) {}

  /** Whether a copy is streaming (until the backup acks an append of its generation). */
  get copying(): boolean {
    return this.source !== null;
  }

  /** Starts a copy of `machine` at its applied index, replacing a running one (memory: one table). */
  start(machine: LockMachine): { start: CopyStart; items: number } {
    this.close();
    const source = new CopySource(machine, this.limits);
    this.source = source;
    return { start: source.start, items: source.total };
  }

  /** The chunk at `position` (null: no copy, or a position it no longer has); `progress`: not a repeat. */
  next(position: number): { chunk: CopyChunk; progress: boolean } | null {
    const acked = this.source?.acked ?? 0;
    const chunk = this.source?.chunk(position) ?? null;
    return chunk === null ? null : { chunk, progress: position > acked };
  }

  /**
   * Whether `answer` (to an append of the copy's generation) says the backup holds the whole
   * copy: only an ok ack does (until then it is loading, or answers from an older copy). Then
   * the copy is over and the catch-up on the entries since its index starts (`b`'s clocks).
   */
  completedBy(answer: Extract<PeerMessage, { type: "appendAck" }>, b: BackupTracker, nowMs: number): boolean {
    if (!answer.ok || answer.appliedIndex < b.baseIndex) return false;
    this.close();
    b.sinceMs = nowMs;
    b.catchUpFromMs = nowMs;
    return true;
  }

  close(): void {
    this.source?.close();
    this.source = null;
  }
}

/** The backup's side: one request in flight at a time, a new copy or the next chunk of one. */
export class CopyPuller {
  /** Generation of the complete copy the backup holds (0: none). */
  generation = 0;
  inFlight = false;
  /** A new copy being loaded; the backup's old one stays its machine until this is complete. */
  private sink: CopySink | null = null;

  constructor(private readonly nodeId: string, private readonly settings: LockTableLimits & AnsweredLimits) {}

  get loading(): boolean {
    return this.sink !== null;
  }

  /** The primary names a newer generation than the copy being loaded: that stream is gone there. */
  noteGeneration(syncGen: number): void {
    if (this.sink !== null && syncGen > this.sink.syncGen) this.sink = null;
  }

  /** Drops the copy being loaded (another primary or epoch, a takeover, a restart of the role). */
  drop(): void {
    this.sink = null;
  }

  /** The next request to the primary (now in flight); `incarnation` names this process (arbiter.ts). */
  request(epoch: number, incarnation: string | undefined): PeerMessage {
    this.inFlight = true;
    const from = this.nodeId;
    const sink = this.sink;
    return sink === null
      ? { type: "syncRequest", from, epoch, ...(incarnation !== undefined ? { incarnation } : {}) }
      : { type: "syncNext", from, epoch, syncGen: sink.syncGen, position: sink.position };
  }

  /**
   * An answer (`ours`: from the primary we follow, of our epoch): the complete copy's machine,
   * "next" (ask for the next chunk at once) or "stop" (a refusal or a stale answer: the stream
   * was replaced or dropped; the next tick or append asks for a new one).
   */
  take(answer: PeerMessage, ours: boolean): LockMachine | "next" | "stop" {
    this.inFlight = false;
    const s = this.settings;
    if (ours && answer.type === "syncStart") {
      this.sink = new CopySink(answer.syncGen, answer.start, s, s);
    } else if (ours && answer.type === "syncChunk" && this.sink?.syncGen === answer.syncGen) {
      if (!this.sink.accept(answer.chunk)) return "stop";
    } else {
      this.sink = null;
      return "stop";
    }
    if (!this.sink.done) return "next";
    this.generation = this.sink.syncGen;
    const machine = this.sink.finish();
    this.sink = null;
    return machine;
  }
}
