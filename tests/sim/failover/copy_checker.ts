/**
 * failover.copy-is-cut (issue 11, a hook): a returning backup's streamed copy is the primary's
 * state at the copy's index. When a primary starts a copy (its `backupSyncing` event, in the
 * step that took the cut) the checker keeps its machine's snapshot; when the backup has loaded
 * the whole copy (`synced`, in the step that installed it, before any later entry) its machine's
 * snapshot must equal it. The copy streams in chunks while the primary goes on (clients, expiries,
 * the filler), so a mutation the copy-on-write misses (docs/failover.md "Resync") shows here
 * even when no later check would notice it.
 */
import type { Sim } from "../simulator.ts";
import type { FailoverServerActor } from "./server.ts";

export const COPY_IS_CUT = "failover.copy-is-cut";
/** Cuts kept, newest last (a copy is replaced by the next request, so few are ever pending). */
const CUTS_MAX = 16;

export class CopyCutChecker {
  private readonly cuts = new Map<string, string>();

  constructor(private readonly sim: Sim) {
    sim.checkers.declareHook(COPY_IS_CUT);
  }

  event(server: FailoverServerActor, event: string, fields: Record<string, unknown>): void {
    const replica = server.replica;
    if (!replica?.machine) return;
    if (event === "backupSyncing") {
      this.cuts.set(`${server.id}/${replica.epoch}/${fields.syncGen}`, JSON.stringify(replica.machine.snapshot()));
      if (this.cuts.size > CUTS_MAX) this.cuts.delete(this.cuts.keys().next().value!);
    } else if (event === "synced") {
      const key = `${fields.primary}/${replica.epoch}/${fields.syncGen}`;
      const cut = this.cuts.get(key);
      if (cut === undefined) return; // the primary's start fell out of the window (or a restart)
      const copy = JSON.stringify(replica.machine.snapshot());
      if (copy !== cut) {
        this.sim.violate(COPY_IS_CUT, `${server.id}'s copy ${key} at index ${fields.index} differs from the primary's state at that index: ${firstDifference(copy, cut)}`);
      }
    }
  }
}

function firstDifference(a: string, b: string): string {
  let i = 0;
  while (i < a.length && a[i] === b[i]) i += 1;
  return `copy …${a.slice(Math.max(0, i - 60), i + 60)}… primary …${b.slice(Math.max(0, i - 60), i + 60)}…`;
}
