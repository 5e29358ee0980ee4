/**
 * The optional durable log of a lock server (`durable = true` in the cluster file), the core's
 * side: what the driver must write, and how far the written copy gates commits. Pure: the driver
 * (cluster/lock/durable_log.ts) does the writing and fsyncing and reports back with `durable`.
 *
 * The disk mirrors the server's copy in memory: the copy (a LockMachine, or none), the view it
 * belongs to (the epoch and the primary it follows or is), and the entries applied to it. Three
 * kinds of record keep it so, in order:
 * - `base`: a new copy (a synced snapshot, a fresh table, or none: the copy was dropped); what
 *   was on disk before is void. The driver takes the machine's snapshot when it writes the
 *   record; entries applied since are in the snapshot and also follow as `entry` records (the
 *   reader skips what the snapshot already has).
 * - `view`: the same copy under a new epoch or primary (a takeover, a restored copy adopted).
 * - `entry`: one log entry, recorded before it is applied.
 * A base also stores the id of the process that made the copy (its incarnation, which the
 * arbiter's in-sync record names): a copy restored later is reported under that id
 * (`reportedIncarnation`). Each base starts a new `copyGen`; the driver's `durable(copyGen, index)` says the copy of that
 * generation is on disk up to `index`, and only then may the primary answer (commit gate) and
 * the backup acknowledge (the driver holds its ack). docs/failover.md ("The durable log") has
 * what a restarted server may do with its copy, and why it is safe.
 */
import type { LockMachine, LogEntry } from "./lock_machine.ts";

export type PersistRecord =
  | { type: "base"; copyGen: number; machine: LockMachine | null; epoch: number; primary: string | null; incarnation?: string }
  | { type: "view"; copyGen: number; epoch: number; primary: string | null }
  | { type: "entry"; copyGen: number; entry: LogEntry };

/** A copy read back from disk at start: the table, the view it was last recorded under, its process's id. */
export interface RestoredCopy {
  machine: LockMachine;
  epoch: number;
  primary: string | null;
  /** The incarnation stored with the copy (absent: written without one). */
  incarnation?: string;
}

export class DurableCopy {
  /** The machine the disk holds (by identity), and its view. */
  private onDisk: LockMachine | null = null;
  private epoch = 0;
  private primary: string | null = null;
  private copyGen = 0;
  /** The copy of generation copyGen is on disk up to here. */
  private durableIndex = 0;

  /** The restored copy's machine and id, while it is what this server holds. */
  private readonly restoredMachine: LockMachine | null;
  private readonly restoredIncarnation: string | undefined;

  /**
   * `restored`: the copy the driver read at start; it is on disk already (generation 0). Without
   * `enabled` nothing is recorded and nothing is gated. `incarnation`: this process's id, stored
   * with every copy it writes.
   */
  constructor(readonly enabled: boolean, restored: RestoredCopy | null, private readonly incarnation?: string) {
    this.restoredMachine = restored?.machine ?? null;
    this.restoredIncarnation = restored?.incarnation;
    if (restored === null) return;
    this.onDisk = restored.machine;
    this.epoch = restored.epoch;
    this.primary = restored.primary;
    this.durableIndex = restored.machine.appliedIndex;
  }

  /** Records what changed since the last call: a new copy (base), or the same under a new view. */
  follow(machine: LockMachine | null, epoch: number, primary: string | null, out: PersistRecord[]): void {
    if (!this.enabled) return;
    if (machine !== this.onDisk) {
      this.onDisk = machine;
      this.copyGen += 1;
      this.durableIndex = 0;
      this.epoch = epoch;
      this.primary = primary;
      const base: Extract<PersistRecord, { type: "base" }> = { type: "base", copyGen: this.copyGen, machine, epoch, primary };
      if (this.incarnation !== undefined) base.incarnation = this.incarnation;
      out.push(base);
    } else if (machine !== null && (epoch !== this.epoch || primary !== this.primary)) {
      this.epoch = epoch;
      this.primary = primary;
      out.push({ type: "view", copyGen: this.copyGen, epoch, primary });
    }
  }

  /** Records an entry about to be applied to `machine` (its view recorded first if it changed). */
  entry(machine: LockMachine, epoch: number, primary: string | null, entry: LogEntry, out: PersistRecord[]): void {
    if (!this.enabled) return;
    this.follow(machine, epoch, primary, out);
    out.push({ type: "entry", copyGen: this.copyGen, entry });
  }

  /**
   * The id to name this server's copy by in a claim (docs/failover.md "The durable log"): while
   * it holds the copy it restored (`pending`: not yet taken or dropped, or `machine` is it), the
   * id stored with that copy, since the arbiter's record of the in-sync backup may name it and
   * that copy survived; otherwise (none restored, or dropped) this process's own, new id.
   */
  reportedIncarnation(machine: LockMachine | null, pending: boolean): string | undefined {
    const holdsRestored = this.restoredMachine !== null && (pending || machine === this.restoredMachine);
    return holdsRestored && this.restoredIncarnation !== undefined ? this.restoredIncarnation : this.incarnation;
  }

  /** The driver's report: the copy of `copyGen` is on disk up to `index`. */
  durable(copyGen: number, index: number): void {
    if (copyGen === this.copyGen) this.durableIndex = Math.max(this.durableIndex, index);
  }

  /**
   * The commit gate: at most what is on disk (everything, when not durable). A primary answers
   * nothing its disk may lack, so a restart of every process loses no answered change.
   */
  commitLimit(index: number): number {
    return this.enabled ? Math.min(index, this.durableIndex) : index;
  }
}

/**
 * Whether a restored copy may become the table of the epoch the arbiter just granted this
 * server without state (a "fresh" lease, `epoch`): only the copy this server recorded as the
 * primary of the epoch before. The arbiter grants a fresh epoch to the primary of record only
 * when nobody else holds the state (the backup recorded out of sync), and that primary's disk
 * has every change it answered (the commit gate). Any other copy (a backup's, an older epoch's)
 * may lack changes answered since, and a fresh table starts instead.
 */
export function restoredTableFor(restored: RestoredCopy | null, nodeId: string, grantedEpoch: number): LockMachine | null {
  if (restored === null || restored.primary !== nodeId || restored.epoch + 1 !== grantedEpoch) return null;
  return restored.machine;
}

/**
 * Whether a restored copy may be kept as the backup's copy when it follows `primary` in `epoch`:
 * only the copy recorded under that very view. Then it is the copy the arbiter counted (or did
 * not count) in sync; the disk held every entry acked (the driver holds an ack until its entries
 * are on disk), and a copy replaced in memory was replaced on disk before any entry of the new
 * one was acked. Kept, it may take over as an in-sync copy would (after takeoverNotBeforeMs).
 */
export function restoredCopyFor(restored: RestoredCopy | null, epoch: number, primary: string | null): LockMachine | null {
  if (restored === null || primary === null || restored.epoch !== epoch || restored.primary !== primary) return null;
  return restored.machine;
}

/**
 * Whether a restored backup's copy may be the table of `epoch`, in which the arbiter names this
 * server primary: only a copy recorded as the backup's of the epoch before (epoch − 1), under
 * another primary. The arbiter creates a new epoch for the backup of record only at its takeover
 * claim with state, which it approves only while it counts that backup in sync: its disk then
 * had every change committed in epoch − 1 (the ack gate). Nothing committed in `epoch` can be
 * missing: its entries follow its view on disk, and the view was not written (else the copy
 * would have been restored under it). The server claims again with this copy, as it does when
 * the answer to its takeover claim was lost.
 */
export function restoredTakeoverCopy(restored: RestoredCopy | null, nodeId: string, epoch: number): LockMachine | null {
  if (restored === null || restored.primary === null || restored.primary === nodeId || restored.epoch !== epoch - 1) return null;
  return restored.machine;
}
