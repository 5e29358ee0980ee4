/**
 * One node's copy of the ring's key/value map: the committed map plus the log of writes.
 *
 * The log is contiguous: it holds writes `base + 1 … lastApplied`. Writes up to `commit` are
 * committed (they went around the whole ring) and folded into the committed map; writes above it
 * are pending, visible only to dirty reads. Pure data structure: no clock, no I/O.
 */
import { assert } from "../assert.ts";
import type { RingEntry, RingLogRecord, RingSnapshot } from "./ring_types.ts";

export class RingReplica {
  /** The map as of `commit`. */
  private readonly committed = new Map<string, string>();
  /** Entries `base + 1 …`, in order. */
  private log: RingEntry[] = [];
  private base = 0;
  /** The epoch stamp of the write at `base` (kept by snapshots: the view change compares stamps). */
  private baseEpoch = 0;
  private commitWseq = 0;

  get lastApplied(): number {
    return this.base + this.log.length;
  }

  get commit(): number {
    return this.commitWseq;
  }

  /** The first wseq still in the log (entries before it live only in the committed map). */
  get logStart(): number {
    return this.base + 1;
  }

  /** The entry at `wseq`, or undefined when it is not in the log (compacted or not yet applied). */
  entryAt(wseq: number): RingEntry | undefined {
    if (wseq <= this.base || wseq > this.lastApplied) return undefined;
    const entry = this.log[wseq - this.base - 1];
    assert(entry.wseq === wseq, `log out of order at ${wseq}`);
    return entry;
  }

  /** The epoch stamp of the write at `wseq`: from the log, or the snapshot's at its wseq; 0 when unknown. */
  stampAt(wseq: number): number {
    if (wseq === this.base) return this.baseEpoch;
    return this.entryAt(wseq)?.epoch ?? 0;
  }

  /** Appends the next write; it must follow the last one. */
  append(entry: RingEntry): void {
    assert(entry.wseq === this.lastApplied + 1, `append of ${entry.wseq} after ${this.lastApplied}`);
    this.log.push(entry);
  }

  /** Drops the pending writes from `wseq` on (an uncommitted suffix replaced by a newer epoch). */
  truncateFrom(wseq: number): void {
    assert(wseq > this.commitWseq, `truncate of committed write ${wseq} (commit ${this.commitWseq})`);
    if (wseq > this.lastApplied) return;
    this.log.length = wseq - this.base - 1;
  }

  /** Marks everything up to `wseq` committed and folds it into the committed map. */
  commitTo(wseq: number): void {
    assert(wseq <= this.lastApplied, `commit ${wseq} beyond last applied ${this.lastApplied}`);
    for (let w = this.commitWseq + 1; w <= wseq; w++) applyOp(this.committed, this.entryAt(w)!);
    this.commitWseq = Math.max(this.commitWseq, wseq);
  }

  /** Forgets committed entries so that at most `retainMax` committed ones stay in the log. */
  compact(retainMax: number): void {
    const drop = this.commitWseq - this.base - retainMax;
    if (drop <= 0) return;
    this.baseEpoch = this.log[drop - 1].epoch;
    this.log = this.log.slice(drop);
    this.base += drop;
  }

  /** The value of `key` in the committed map, or with the pending writes applied (`dirty`). */
  read(key: string, dirty: boolean): string | undefined {
    if (dirty) {
      for (let w = this.lastApplied; w > this.commitWseq; w--) {
        const op = this.entryAt(w)!.op;
        if (op.key === key) return op.type === "put" ? op.value : undefined;
      }
    }
    return this.committed.get(key);
  }

  /** Keys in the committed map, or with the pending writes applied; sorted. */
  keys(dirty: boolean): string[] {
    if (!dirty || this.lastApplied === this.commitWseq) return [...this.committed.keys()].sort();
    const view = new Map(this.committed);
    for (let w = this.commitWseq + 1; w <= this.lastApplied; w++) applyOp(view, this.entryAt(w)!);
    return [...view.keys()].sort();
  }

  /** How many keys a put of `key` would leave in the dirty view (for the key limit). */
  keyCountWith(key: string): number {
    const present = this.read(key, true) !== undefined;
    return this.committed.size + (this.lastApplied - this.commitWseq) + (present ? 0 : 1);
  }

  /** Entries from `from` on, at most `max`; undefined when `from` lies before the log. */
  entriesFrom(from: number, max: number): RingEntry[] | undefined {
    assert(from >= 1, "entries start at wseq 1");
    if (from <= this.base) return undefined;
    const start = from - this.base - 1;
    return this.log.slice(start, start + max);
  }

  /** The pending entries (above the commit watermark). */
  pending(): RingEntry[] {
    return this.log.slice(this.commitWseq - this.base);
  }

  snapshot(): RingSnapshot {
    return { wseq: this.commitWseq, epoch: this.stampAt(this.commitWseq), kv: [...this.committed.entries()] };
  }

  /** Replaces everything by `snapshot`: the log restarts after it. */
  install(snapshot: RingSnapshot): void {
    assert(snapshot.wseq >= this.commitWseq, `snapshot ${snapshot.wseq} older than commit ${this.commitWseq}`);
    this.committed.clear();
    for (const [key, value] of snapshot.kv) this.committed.set(key, value);
    this.log = [];
    this.base = snapshot.wseq;
    this.baseEpoch = snapshot.epoch ?? 0;
    this.commitWseq = snapshot.wseq;
  }

  /** Replays stored log records in order (after `install` of the stored snapshot, if any). */
  replay(records: RingLogRecord[]): void {
    for (const record of records) {
      if (record.type === "entry") {
        const w = record.entry.wseq;
        if (w <= this.base) continue; // already in the snapshot
        if (w <= this.lastApplied) this.truncateFrom(w);
        this.append(record.entry);
      } else if (record.type === "truncate") {
        this.truncateFrom(record.from);
      } else {
        this.commitTo(Math.min(record.wseq, this.lastApplied));
      }
    }
  }
}

function applyOp(map: Map<string, string>, entry: RingEntry): void {
  if (entry.op.type === "put") map.set(entry.op.key, entry.op.value);
  else if (entry.op.type === "delete") map.delete(entry.op.key);
}
