/**
 * When a ring node's driver next ticks its cores (cluster/ring/service.ts `armTick`): a pure
 * function of now, the cores' earliest `nextDeadlineMs` (pure reads of their state) and the
 * settings. Each wake-up of an idle process costs more than the ticks (docs/bench.md, idle CPU),
 * so the driver sleeps until a core needs it rather than ticking at a fixed period.
 */
import type { Settings } from "../../settings.ts";

/**
 * tickMs from now while anything runs on ticks (a deadline now or past: as a fixed tick did);
 * the deadline itself while it is further (a resting token's pass, the token-loss probe); but
 * never later than tokenIdlePaceMs from now (nor sooner than tickMs), a bound should a deadline
 * be missed. `dueMs` may be +Infinity (nothing due).
 */
export function nextTickAtMs(nowMs: number, dueMs: number, settings: Pick<Settings, "tickMs" | "tokenIdlePaceMs">): number {
  const { tickMs, tokenIdlePaceMs } = settings;
  return nowMs + Math.min(Math.max(dueMs - nowMs, tickMs), Math.max(tickMs, tokenIdlePaceMs));
}
