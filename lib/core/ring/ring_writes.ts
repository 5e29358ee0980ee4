/**
 * A ring node's write path: the replicated log's travel around the ring (docs/ring.md).
 *
 * A write made in a section goes from the holder around the ring back to it; each node applies
 * writes in `wseq` order (buffering gaps, fetching what it misses from its predecessor) and
 * passes them on to its successor. The return of a write to its origin is the commit point; what
 * that means for the token and the client is the node's (`RingWritesHost.ownWriteBack`).
 * Recovery keeps Raft's log rules: re-sent writes keep their original epoch stamps; a version
 * carried by the current epoch's messages replaces a differing one (and what follows it).
 *
 * Owned by a RingNode, which checks the epoch and the sender before it hands writes in here.
 * No clock, timer, randomness or I/O in here: time comes from the node's step.
 */
import { assert } from "../assert.ts";
import type { RingReplica } from "./ring_replica.ts";
import type { PersistOp, RingEffect, RingLimits, RingResult } from "./ring_io.ts";
import type { CatchUpReply, RingEntry, RingOp } from "./ring_types.ts";
import type { Settings } from "../../settings.ts";

/** What the write path needs of its node. */
export interface RingWritesHost {
  readonly id: string;
  readonly limits: Pick<
    RingLimits,
    "ringGapBufferMax" | "tokenHopTimeoutMs" | "ringBatchWritesMax" | "ringSnapshotEveryWrites" | "ringLogRetainMax"
  >;
  /** The epoch of the view installed in this incarnation (0: none yet). */
  epoch(): number;
  /** Promised a newer view than the installed one. */
  promisedAhead(): boolean;
  successor(): string;
  predecessor(): string;
  nowMs(): number;
  /** Sinks of the output being built by the node's current step. */
  persist(op: PersistOp): void;
  effect(effect: RingEffect): void;
  event(event: string, fields: Record<string, unknown>): void;
  /** A write of this node's (or one it re-sent as the regenerator) came back around the ring. */
  ownWriteBack(entry: RingEntry): void;
}

const encoder = new TextEncoder();

export class RingWrites {
  /** Writes that arrived ahead of a gap, by wseq. */
  private readonly gap = new Map<number, RingEntry>();
  /**
   * Highest wseq forwarded to the successor in this epoch and incarnation; a copy above it is
   * forwarded again (a re-sent write may be committed here but not yet elsewhere).
   */
  private forwardedTo = 0;
  private fetching: { fromWseq: number; retryAtMs: number } | null = null;
  // The writes to send the successor at the end of the current step.
  private forwardBuffer: RingEntry[] = [];

  constructor(
    private readonly host: RingWritesHost,
    private readonly replica: RingReplica,
    /** The wseq of the latest snapshot (stored or installed). */
    private snapshotWseq: number,
  ) {}

  /** Whether a fetch from the predecessor is out. */
  get catchingUp(): boolean {
    return this.fetching !== null;
  }

  /** A new step begins: nothing buffered for the successor yet. */
  startStep(): void {
    this.forwardBuffer = [];
  }

  /** A new view is installed: its messages start afresh. */
  newEpoch(): void {
    this.gap.clear();
    this.fetching = null;
    // Whatever arrives in the new epoch is passed on at least once, committed here or not.
    this.forwardedTo = 0;
  }

  /** Writes of the current epoch from the predecessor (the node checked epoch and sender). */
  receive(epoch: number, entries: RingEntry[]): RingResult {
    let ackedTo = 0;
    for (const [index, entry] of entries.entries()) {
      assert(entry.epoch <= epoch, `write ${entry.wseq} stamped ${entry.epoch} in a message of epoch ${epoch}`);
      if (!this.receiveEntry(entry)) {
        for (const later of entries.slice(index)) this.bufferGap(later);
        this.requestFetch();
        return { ok: false, type: "gap", ackedTo, lastApplied: this.replica.lastApplied };
      }
      ackedTo = entry.wseq;
    }
    this.drainGap();
    return { ok: true, type: "writes", ackedTo };
  }

  /**
   * Applies, skips or recognises the return of one write of a message of the current epoch;
   * false when it lies beyond a gap. Raft's rule: the version the current epoch carries replaces
   * a differing one here (and what follows it), whatever the stamps; the epoch's messages carry
   * only the regenerator's versions and the epoch's new writes.
   */
  private receiveEntry(entry: RingEntry): boolean {
    const replica = this.replica;
    if (entry.origin === this.host.id) {
      // Its own write (or one it re-sent as the regenerator) came back around.
      this.host.ownWriteBack(entry);
      return true;
    }
    if (entry.wseq <= replica.lastApplied) {
      const existing = replica.entryAt(entry.wseq);
      if (existing === undefined || existing.epoch === entry.epoch) {
        // A copy (before the log's start it is committed, the same everywhere). Pass it on if
        // it never left here in this epoch.
        if (entry.wseq > this.forwardedTo) this.forward(entry);
        return true;
      }
      assert(entry.wseq > replica.commit, `write ${entry.wseq} stamped ${entry.epoch} differs from the committed one stamped ${existing.epoch}`);
      this.truncate(entry.wseq);
      this.append(entry);
      this.forward(entry);
      return true;
    }
    if (entry.wseq > replica.lastApplied + 1) return false;
    this.append(entry);
    this.forward(entry);
    return true;
  }

  private bufferGap(entry: RingEntry): void {
    if (entry.wseq <= this.replica.lastApplied) return;
    if (this.gap.size >= this.host.limits.ringGapBufferMax && !this.gap.has(entry.wseq)) return;
    this.gap.set(entry.wseq, entry);
  }

  private drainGap(): void {
    // Each pass applies one buffered write or stops: bounded by the buffer size.
    for (;;) {
      for (const wseq of this.gap.keys()) if (wseq <= this.replica.lastApplied) this.gap.delete(wseq);
      const next = this.gap.get(this.replica.lastApplied + 1);
      if (!next) return;
      this.gap.delete(next.wseq);
      const applied = this.receiveEntry(next);
      assert(applied, "the write after the last applied one must apply");
    }
  }

  /** Asks the predecessor for the writes after the last applied one (one fetch out at a time). */
  requestFetch(): void {
    if (this.fetching) return;
    const fromWseq = this.replica.lastApplied + 1;
    this.fetching = { fromWseq, retryAtMs: this.host.nowMs() + this.host.limits.tokenHopTimeoutMs };
    this.host.effect({ type: "fetch", from: this.host.predecessor(), fromWseq });
  }

  /** A fetch unanswered for tokenHopTimeoutMs goes again if still needed (`behind`: the token's commit is ahead). */
  expireFetch(behind: boolean): void {
    if (this.fetching && this.host.nowMs() >= this.fetching.retryAtMs) {
      this.fetching = null;
      if (behind || this.gap.size > 0) this.requestFetch();
    }
  }

  /** The predecessor answered a fetch. */
  caughtUp(reply: CatchUpReply): RingResult {
    this.fetching = null;
    // Promised a newer view: the log stays as reported in the promise until that view is here.
    if (this.host.promisedAhead()) return { ok: true, type: "done" };
    const replica = this.replica;
    if (reply.snapshot && reply.snapshot.wseq > replica.lastApplied) {
      replica.install(reply.snapshot);
      this.snapshotWseq = reply.snapshot.wseq;
      // forwardedTo stays: the writes of this epoch the snapshot covers have not left here yet,
      // and a regenerator waits for its re-sent ones to come back (their copies are passed on).
      this.host.persist({ type: "snapshot", snapshot: reply.snapshot, tail: [] });
      this.host.event("snapshotInstalled", { wseq: reply.snapshot.wseq });
    }
    let applied = 0;
    for (const entry of reply.entries) {
      if (entry.wseq > replica.lastApplied + 1) break;
      if (entry.wseq <= replica.commit) continue;
      // Committed there (the same everywhere), or written in this epoch: take it. An older
      // uncommitted version arrives only through the ring, where the regenerator's version rules.
      if (entry.wseq > reply.commit && entry.epoch !== this.host.epoch()) break;
      const existing = replica.entryAt(entry.wseq);
      if (existing && existing.epoch === entry.epoch) continue;
      if (existing) this.truncate(entry.wseq);
      this.append(entry);
      if (entry.origin !== this.host.id && entry.wseq <= this.forwardedTo + 1) this.forward(entry);
      applied += 1;
    }
    this.learnCommit(reply.commit);
    this.drainGap();
    if (applied > 0) this.host.event("caughtUp", { applied, lastApplied: replica.lastApplied });
    return { ok: true, type: "done" };
  }

  /** What this node can send a neighbour that asks for writes from `from` on. */
  catchUp(from: number): CatchUpReply {
    const max = this.host.limits.ringBatchWritesMax;
    const replica = this.replica;
    const start = Math.max(1, from);
    const entries = replica.entriesFrom(start, max);
    if (entries !== undefined) return { commit: replica.commit, entries };
    return { commit: replica.commit, snapshot: replica.snapshot(), entries: replica.pending().slice(0, max) };
  }

  /** Applies and stores one write. */
  append(entry: RingEntry): void {
    this.replica.append(entry);
    this.host.persist({ type: "log", record: { type: "entry", entry } });
  }

  /** Cuts the log from `from` on (stored, and out of the gap buffer). */
  truncate(from: number): void {
    this.replica.truncateFrom(from);
    this.host.persist({ type: "log", record: { type: "truncate", from } });
    for (const wseq of this.gap.keys()) if (wseq >= from) this.gap.delete(wseq);
  }

  /** Queues a write for the successor (sent at the end of the step, in order). */
  forward(entry: RingEntry): void {
    this.forwardBuffer.push(entry);
    this.forwardedTo = Math.max(this.forwardedTo, entry.wseq);
  }

  /** Sends the step's forwarded writes in batches of at most ringBatchWritesMax. */
  flushForwards(): void {
    const max = this.host.limits.ringBatchWritesMax;
    for (let i = 0; i < this.forwardBuffer.length; i += max) {
      const entries = this.forwardBuffer.slice(i, i + max);
      this.host.effect({ type: "sendWrites", to: this.host.successor(), epoch: this.host.epoch(), entries });
    }
    this.forwardBuffer = [];
  }

  /** Moves the local commit watermark (never beyond what is applied) and snapshots now and then. */
  learnCommit(commit: number): void {
    const replica = this.replica;
    const target = Math.min(commit, replica.lastApplied);
    if (target <= replica.commit) return;
    replica.commitTo(target);
    this.host.persist({ type: "log", record: { type: "commit", wseq: target } });
    const limits = this.host.limits;
    if (replica.commit - this.snapshotWseq >= limits.ringSnapshotEveryWrites) {
      this.snapshotWseq = replica.commit;
      this.host.persist({ type: "snapshot", snapshot: replica.snapshot(), tail: replica.pending() });
      replica.compact(limits.ringLogRetainMax);
    }
  }
}

/** Why `op` is malformed, or undefined. */
export function checkOp(op: RingOp, limits: Pick<Settings, "ringKeyLengthMax" | "ringValueBytesMax">): string | undefined {
  if (typeof op.key !== "string" || op.key.length === 0) return "key must be a non-empty string";
  if (op.key.length > limits.ringKeyLengthMax) return `key is longer than ${limits.ringKeyLengthMax} characters`;
  if (op.type === "put") {
    if (typeof op.value !== "string") return "value must be a string";
    if (encoder.encode(op.value).byteLength > limits.ringValueBytesMax) {
      return `value is larger than ${limits.ringValueBytesMax} bytes`;
    }
  }
  return undefined;
}
