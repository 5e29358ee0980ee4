/**
 * The event-loop stall monitor (cluster/stall_monitor.ts) driven by its caller's timer, as the lock
 * server drives it from its tick (one wake-up instead of two timers): on a manual clock, beats on
 * time report no stall, a late beat reports its lateness beyond the period, and no timer of its
 * own is ever set.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { manualClock } from "../cluster/clock.ts";
import { StallMonitor } from "../cluster/stall_monitor.ts";
import type { Timers } from "../cluster/timers.ts";

const noTimers: Timers = {
  setTimeout: () => assert.fail("a driven monitor sets no timer"),
  clearTimeout: () => {},
};

test("a driven stall monitor measures its caller's beats against the caller's period and sets no timer of its own", () => {
  const clock = manualClock(1_000);
  const logged: number[] = [];
  const monitor = new StallMonitor(clock, noTimers, (stallMs) => logged.push(stallMs), 20);
  monitor.startDriven();
  for (let beat = 0; beat < 5; beat++) {
    clock.advance(20);
    monitor.beat();
  }
  assert.deepEqual(monitor.view(), { loopStallMaxMs: 0, loopStallRecentMaxMs: 0 });
  // A beat 150 ms late: the loop was blocked for 150 ms beyond the 20 ms period.
  clock.advance(170);
  monitor.beat();
  assert.deepEqual(monitor.view(), { loopStallMaxMs: 150, loopStallRecentMaxMs: 150 });
  assert.deepEqual(logged, [150]);
  // Shorter than 100 ms is measured but not logged; the recent window forgets after ~10 s.
  clock.advance(80);
  monitor.beat();
  assert.deepEqual(logged, [150]);
  clock.advance(11_000);
  monitor.startDriven(); // a restart of the driver does not count its pause as a stall
  clock.advance(20);
  monitor.beat();
  assert.deepEqual(monitor.view(), { loopStallMaxMs: 150, loopStallRecentMaxMs: 0 });
  monitor.stop();
});
