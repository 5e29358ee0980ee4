/**
 * Per-node virtual clocks. The simulation has one global virtual time (integer ms); each node
 * reads it through its own clock with an offset and a drift rate, as real machines do. Clocks
 * stay monotonic (drift > -1), which is all the cores and the client lease rule rely on.
 *
 * `wallMs` is the node's realtime clock (Date.now): it starts at a fixed epoch plus the offset
 * and can be stepped (an NTP step, a VM restore), which matters for drivers that derive state
 * from it (the lock server's token floor).
 */
import type { Clock } from "../../cluster/clock.ts";

/** The virtual Date.now() at time 0: a fixed date, so traces are identical run to run. */
export const WALL_EPOCH_MS = 1_767_225_600_000; // 2026-01-01T00:00:00Z

export class NodeClock implements Clock {
  /** Added to the realtime clock only: a step of the wall clock (negative is backwards). */
  wallStepMs = 0;

  constructor(
    private readonly globalNowMs: () => number,
    readonly offsetMs: number,
    readonly driftPpm: number,
  ) {}

  /** Monotonic local milliseconds (integer), what drivers pass to cores. */
  nowMs(): number {
    return this.offsetMs + Math.floor((this.globalNowMs() * (1_000_000 + this.driftPpm)) / 1_000_000);
  }

  wallMs(): number {
    return WALL_EPOCH_MS + this.nowMs() + this.wallStepMs;
  }

  /** Global ms until this clock has advanced by `localMs` (rounded up: timers never fire early). */
  globalDelayMs(localMs: number): number {
    return Math.max(0, Math.ceil((localMs * 1_000_000) / (1_000_000 + this.driftPpm)));
  }
}
