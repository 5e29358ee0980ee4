/**
 * When a ring node's driver next ticks its cores (cluster/ring/service.ts `armTick`): a pure
 * function of now, the cores' earliest `nextDeadlineMs` (pure reads of their state) and the
 * settings. Each wake-up of an idle process costs more than the ticks (docs/bench.md, idle CPU),
 * so the driver sleeps until a core needs it rather than ticking at a fixed period.
 */
import type { Settings } from "../../settings.ts";

/**
 * tickMs from now while anything runs on ticks (a deadline now or past: as a fixed tick did);
 * the deadline itself while it is ahead (a resting token's pass, the token-loss probe), even one
 * nearer than tickMs; but never later than the longer of tickMs and tokenIdlePaceMs from now, a
 * bound should a deadline be missed. `dueMs` may be +Infinity (nothing due).
 */
export function nextTickAtMs(nowMs: number, dueMs: number, settings: Pick<Settings, "tickMs" | "tokenIdlePaceMs">): number {
  const { tickMs, tokenIdlePaceMs } = settings;
  // A deadline still ahead is kept even if nearer than tickMs (a token resting for tokenHoldMs
  // under contention must leave at its end, not a tick period later); one due now or past waits
  // tickMs, so a core that has work on ticks does not make the driver spin.
  const inMs = dueMs > nowMs ? dueMs - nowMs : tickMs;
  return nowMs + Math.min(inMs, Math.max(tickMs, tokenIdlePaceMs));
}
