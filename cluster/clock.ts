/**
 * The real clock for drivers. Cores never read it: drivers pass `clock.nowMs()` in.
 * Monotonic (performance.now), so a wall-clock step cannot expire a session early.
 */
export interface Clock {
  /** Milliseconds on a monotonic scale, integer. */
  nowMs(): number;
}

export const monotonicClock: Clock = {
  nowMs: () => Math.floor(performance.now()),
};

/** A clock tests move by hand. */
export function manualClock(startMs = 0): Clock & { advance(ms: number): void; set(ms: number): void } {
  let now = startMs;
  return {
    nowMs: () => now,
    advance: (ms) => void (now += ms),
    set: (ms) => void (now = ms),
  };
}
