/**
 * The node-kind registry: every protocol core the simulator knows. A run uses all of them side by
 * side unless `--kinds` picks some, so a plain `make sim-many` covers every kind (issue 8; before,
 * "failover" was left out of the default). Regression seeds and replay files that mean a run of
 * the older default name their kinds (`tests/sim/seeds.json`).
 */
import type { NodeKind } from "./node_kind.ts";
import { LOCK_KIND } from "./lock/kind.ts";
import { RING_KIND } from "./ring/kind.ts";
import { FAILOVER_KIND } from "./failover/kind.ts";

export const NODE_KINDS: readonly NodeKind[] = [LOCK_KIND, RING_KIND, FAILOVER_KIND];
/** What a run without `--kinds` (a spec without `kinds`) uses. */
export const DEFAULT_KINDS: readonly NodeKind[] = NODE_KINDS;

export function kindsByName(names: readonly string[] | undefined): NodeKind[] {
  if (!names || names.length === 0) return [...DEFAULT_KINDS];
  return names.map((name) => {
    const kind = NODE_KINDS.find((k) => k.name === name);
    if (!kind) throw new Error(`unknown node kind ${name} (known: ${NODE_KINDS.map((k) => k.name).join(", ")})`);
    return kind;
  });
}
