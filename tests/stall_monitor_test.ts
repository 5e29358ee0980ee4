/**
 * The event-loop stall monitor (cluster/stall_monitor.ts) driven by its caller's timer, as the lock
 * server, the ring node and the arbiter drive it from their ticks (one wake-up instead of two
 * timers): on a manual clock, beats on time report no stall, a late beat reports its lateness
 * beyond the period, and no timer of its own is ever set. The ring driver and the arbiter's ring
 * coordinator call their `onTick` (where the daemons beat the monitor) once per tick from the one
 * timer they run anyway; the ring driver's tick waits as long as its cores allow, so it reports
 * how late its timer ran instead.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { manualClock } from "../cluster/clock.ts";
import { memoryLogger } from "../cluster/log.ts";
import { RingCoordinator } from "../cluster/arbiter/ring_coordinator.ts";
import { type RingPeers, RingService } from "../cluster/ring/service.ts";
import { StallMonitor } from "../cluster/stall_monitor.ts";
import type { TimerHandle, Timers } from "../cluster/timers.ts";
import { RingNode } from "../lib/core/ring/ring_node.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";

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

test("a beat before the start measures nothing; a driver whose timer waits as long as its cores allow reports its lateness", () => {
  const clock = manualClock(1_000);
  const logged: number[] = [];
  const monitor = new StallMonitor(clock, noTimers, (stallMs) => logged.push(stallMs), 20);
  // The arbiter's ring coordinator ticks before the server listens and the monitor starts.
  clock.advance(500);
  monitor.beat();
  monitor.late(300);
  assert.deepEqual(monitor.view(), { loopStallMaxMs: 0, loopStallRecentMaxMs: 0 });
  monitor.startDriven();
  // The ring node's tick: on time after a long idle wait, then 130 ms late.
  clock.advance(200);
  monitor.late(0);
  assert.deepEqual(monitor.view(), { loopStallMaxMs: 0, loopStallRecentMaxMs: 0 });
  clock.advance(330);
  monitor.late(130);
  assert.deepEqual(monitor.view(), { loopStallMaxMs: 130, loopStallRecentMaxMs: 130 });
  assert.deepEqual(logged, [130]);
});

test("a stall carries the CPU time the process used in it: a wait (run queue, SIGSTOP) shows little, the node's own work shows its length", () => {
  const clock = manualClock(1_000);
  let cpuMs = 50;
  const logged: Array<[number, number | undefined]> = [];
  const monitor = new StallMonitor(clock, noTimers, (stallMs, used) => logged.push([stallMs, used]), 20, () => cpuMs);
  monitor.startDriven();
  clock.advance(20);
  cpuMs += 3; // an ordinary tick's work
  monitor.beat();
  // 400 ms late with 2 ms of CPU: the process waited.
  clock.advance(420);
  cpuMs += 2;
  monitor.beat();
  // 300 ms late with 310 ms of CPU (work on helper threads too): it worked.
  clock.advance(320);
  cpuMs += 310;
  monitor.beat();
  assert.deepEqual(logged, [[400, 2], [300, 310]]);
  // Without a CPU clock the stall is reported alone.
  const bare: Array<[number, number | undefined]> = [];
  const plain = new StallMonitor(clock, noTimers, (stallMs, used) => bare.push([stallMs, used]), 20);
  plain.startDriven();
  clock.advance(150);
  plain.beat();
  assert.deepEqual(bare, [[130, undefined]]);
});

/** Timers on a manual clock: `run(untilMs)` fires what is due, in order. */
function countingTimers(clock: ReturnType<typeof manualClock>) {
  let seq = 0;
  const due: Array<{ atMs: number; seq: number; fn: () => void }> = [];
  const timers: Timers = {
    setTimeout(fn, ms) {
      const entry = { atMs: clock.nowMs() + ms, seq: ++seq, fn };
      due.push(entry);
      return entry;
    },
    clearTimeout(handle: TimerHandle) {
      const at = due.indexOf(handle as (typeof due)[number]);
      if (at >= 0) due.splice(at, 1);
    },
  };
  const run = (untilMs: number) => {
    for (let step = 0; step < 100_000; step++) {
      due.sort((a, b) => a.atMs - b.atMs || a.seq - b.seq);
      if (!due[0] || due[0].atMs > untilMs) break;
      const next = due.shift()!;
      clock.set(next.atMs);
      next.fn();
    }
    clock.set(untilMs);
  };
  return { timers, run };
}

test("the ring driver and the arbiter's ring coordinator call onTick from their one tick timer: the driver with its lateness, the coordinator every tickMs", () => {
  const settings = DEFAULT_SETTINGS;
  const clock = manualClock(0);
  const { timers, run } = countingTimers(clock);
  // A lone ring node that never reaches a peer (a view needs none: it is its own majority).
  const refuse = () => Promise.reject(new Error("ECONNREFUSED"));
  const peers: RingPeers = { deliver: refuse, fetchLog: refuse, wake: refuse, view: refuse };
  const serviceLateMs: number[] = [];
  const service = new RingService({
    node: new RingNode({ id: "r1", ring: ["r1"], limits: settings, ticketPrefix: "r1-" }),
    settings,
    clock,
    timers,
    log: memoryLogger(),
    storage: { apply() {}, storeView() {} },
    storedView: null,
    peers,
    onFatal: (error) => assert.fail(error.message),
    onTick: (lateMs) => serviceLateMs.push(lateMs),
  });
  let coordinatorTicks = 0;
  const coordinator = new RingCoordinator({
    id: "a1",
    ring: ["r1"],
    settings,
    clock,
    timers,
    view: () => Promise.resolve(),
    log: memoryLogger(),
    onTick: () => coordinatorTicks++,
  });
  service.start();
  coordinator.start();
  run(1_000);
  // On the manual loop every timer runs on time: no lateness, and at least one tick per tokenIdlePaceMs.
  assert.ok(serviceLateMs.length >= 1_000 / settings.tokenIdlePaceMs, `${serviceLateMs.length} ticks`);
  assert.ok(serviceLateMs.every((ms) => ms === 0));
  assert.equal(coordinatorTicks, 1_000 / settings.tickMs);
  service.stop();
  coordinator.stop();
});
