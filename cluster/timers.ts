/**
 * Timers for drivers (the lock service's long-poll timeout, the ring service's loops). A port
 * like the clock: the daemons pass the runtime's timers, the simulator (tests/sim) passes timers
 * on its virtual time.
 *
 * Port rule, for every driver the simulator runs as it is: what a port returns is continued
 * with `.then(onFulfilled, onRejected)` only, never awaited or passed to `Promise.all*`, so the
 * simulator's own promises settle at defined points of its event loop (a native promise would
 * continue in the runtime's microtask queue, which a synchronous simulation never reaches).
 */
export interface Timers {
  /** Runs `fn` once, `ms` from now; the handle is for `clearTimeout`. */
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

/** Opaque: whatever the implementation returns from `setTimeout`. */
export type TimerHandle = unknown;

export const realTimers: Timers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/** Runs `fn` every `ms` (re-armed before each run) until the returned function is called. */
export function repeatEvery(timers: Timers, ms: number, fn: () => void): () => void {
  let handle: TimerHandle | undefined;
  let stopped = false;
  const arm = () => {
    handle = timers.setTimeout(() => {
      if (stopped) return;
      arm();
      fn();
    }, ms);
  };
  arm();
  return () => {
    stopped = true;
    timers.clearTimeout(handle);
  };
}

/**
 * The wait before retry number `attempt` (1 for the first; the stream and the ring's peer links share it): `firstMs` doubled per attempt, at
 * most `maxMs` (the exponent is capped, so a long run of failures cannot overflow it).
 */
export function backoffMs(attempt: number, firstMs: number, maxMs: number): number {
  return Math.min(maxMs, firstMs * 2 ** Math.min(attempt - 1, 16));
}
