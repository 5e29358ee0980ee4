/**
 * A ring node's simulated disk, with the semantics of cluster/ring/storage.ts: the hard state
 * is replaced, log records are appended, a snapshot replaces the snapshot and rewrites the log
 * to the entries after it. Everything stored survives a crash (the driver stores before it
 * acts, so a crash between two events loses nothing stored); it is copied in and out so the
 * core never shares objects with its disk.
 */
import type { PersistOp, RingStored } from "../../../lib/core/ring/ring_node.ts";
import type { RingHardState, RingLogRecord, RingSnapshot } from "../../../lib/core/ring/ring_types.ts";
import type { RingStore } from "../../../cluster/ring/storage.ts";
import type { ViewHardState } from "../../../lib/core/ring/view_wire.ts";

export class SimRingDisk implements RingStore {
  private hardState: RingHardState = { epoch: 0, fenceMax: 0, lastHop: 0 };
  private snapshot: RingSnapshot | undefined;
  private records: RingLogRecord[] = [];
  private view: ViewHardState | null = null;
  /**
   * Every ballot ever stored as promised: epoch → coordinators (for ring.view-majority: a view's
   * members promised its ballot, and nobody promised one epoch to two coordinators). One driver
   * store may carry a newer promise made in the same step, so a ballot can be overwritten before
   * it is ever stored alone. Bounded by the run's view changes.
   */
  private readonly promises = new Map<number, Set<string>>();

  apply(ops: readonly PersistOp[]): void {
    for (const op of ops) {
      if (op.type === "hardState") this.hardState = { ...op.state };
      else if (op.type === "log") this.records.push(structuredClone(op.record));
      else {
        this.snapshot = structuredClone(op.snapshot);
        this.records = op.tail.map((entry) => ({ type: "entry", entry: structuredClone(entry) }));
      }
    }
  }

  storeView(state: ViewHardState): void {
    this.view = structuredClone(state);
    const { epoch, coordinator } = state.promised;
    const coordinators = this.promises.get(epoch) ?? new Set();
    this.promises.set(epoch, coordinators.add(coordinator));
  }

  /** The coordinators this disk ever stored a promise of epoch `epoch` for. */
  promisedIn(epoch: number): string[] {
    return [...(this.promises.get(epoch) ?? [])].sort();
  }

  /** The highest epoch ever promised here (0: none). */
  promisedEpochMax(): number {
    return Math.max(0, ...this.promises.keys());
  }

  loadView(): ViewHardState | null {
    return structuredClone(this.view);
  }

  load(): RingStored {
    return {
      hardState: { ...this.hardState },
      snapshot: this.snapshot ? structuredClone(this.snapshot) : undefined,
      records: structuredClone(this.records),
    };
  }
}
