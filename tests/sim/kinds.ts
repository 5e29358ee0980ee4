/**
 * The node-kind registry: every protocol core the simulator knows. A run uses all of them side
 * by side unless `--kinds` picks some. Issue 5 adds "failover" (primary, backup, arbiter) here.
 */
import type { NodeKind } from "./node_kind.ts";
import { LOCK_KIND } from "./lock/kind.ts";
import { RING_KIND } from "./ring/kind.ts";

export const NODE_KINDS: readonly NodeKind[] = [LOCK_KIND, RING_KIND];

export function kindsByName(names: readonly string[] | undefined): NodeKind[] {
  if (!names || names.length === 0) return [...NODE_KINDS];
  return names.map((name) => {
    const kind = NODE_KINDS.find((k) => k.name === name);
    if (!kind) throw new Error(`unknown node kind ${name} (known: ${NODE_KINDS.map((k) => k.name).join(", ")})`);
    return kind;
  });
}
