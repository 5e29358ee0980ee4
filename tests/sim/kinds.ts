/**
 * The node-kind registry: every protocol core the simulator knows. A run uses the default kinds
 * side by side unless `--kinds` picks some. "failover" (primary, backup, arbiter; issue 5) is
 * registered but not yet in the default set: it still finds real bugs in lock_replica.ts on a
 * few seeds in a hundred (docs/simulator.md, "Findings"), and adding it to the default set
 * changes every default run's trace (replay files without `kinds` would run it too).
 */
import type { NodeKind } from "./node_kind.ts";
import { LOCK_KIND } from "./lock/kind.ts";
import { RING_KIND } from "./ring/kind.ts";
import { FAILOVER_KIND } from "./failover/kind.ts";

export const NODE_KINDS: readonly NodeKind[] = [LOCK_KIND, RING_KIND, FAILOVER_KIND];
/** What a run without `--kinds` (a spec without `kinds`) uses. */
export const DEFAULT_KINDS: readonly NodeKind[] = [LOCK_KIND, RING_KIND];

export function kindsByName(names: readonly string[] | undefined): NodeKind[] {
  if (!names || names.length === 0) return [...DEFAULT_KINDS];
  return names.map((name) => {
    const kind = NODE_KINDS.find((k) => k.name === name);
    if (!kind) throw new Error(`unknown node kind ${name} (known: ${NODE_KINDS.map((k) => k.name).join(", ")})`);
    return kind;
  });
}
