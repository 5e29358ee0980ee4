/**
 * NodeMetrics without a server: a wall-clock step against the monotonic clock is counted and
 * logged by direction, ordinary ticks are not; a stall past the lease safety margin is counted
 * and logged, a shorter one is not. Clocks are moved by hand (no real time passes).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { manualClock } from "../cluster/clock.ts";
import { memoryLogger } from "../cluster/log.ts";
import { CLOCK_JUMP_MIN_MS, NodeMetrics } from "../cluster/metrics.ts";
import { SecurityLog } from "../cluster/security_log.ts";

function setup() {
  const clock = manualClock(1_000);
  let wallMs = 1_700_000_000_000;
  const log = memoryLogger();
  const metrics = new NodeMetrics({
    nodeId: "n1",
    clock,
    log,
    security: new SecurityLog(clock, log, 1_000),
    loopStall: () => ({ loopStallMaxMs: 0, loopStallRecentMaxMs: 0 }),
    leaseSafetyMs: 100,
    wallNowMs: () => wallMs,
  });
  const step = (monoMs: number, wallStepMs: number) => {
    clock.advance(monoMs);
    wallMs += wallStepMs;
    metrics.checkClocks();
  };
  return { metrics, log, step };
}

const sampleValue = (text: string, line: string) => Number(text.split("\n").find((l) => l.startsWith(line + " "))?.split(" ")[1] ?? "0");

test("clock jumps: a wall-clock step of at least CLOCK_JUMP_MIN_MS either way is counted and logged; ticks that agree within it are not", async () => {
  const { metrics, log, step } = setup();
  step(1_000, 1_000);
  step(1_000, 1_000 + CLOCK_JUMP_MIN_MS - 1);
  assert.equal(log.lines.filter((l) => l.event === "clockJump").length, 0);
  step(1_000, 1_000 - 5_000);
  step(1_000, 1_000 + 60_000);
  const text = await metrics.text();
  assert.equal(sampleValue(text, 'mutexd_clock_jumps_total{direction="backward",node="n1"}'), 1, text);
  assert.equal(sampleValue(text, 'mutexd_clock_jumps_total{direction="forward",node="n1"}'), 1, text);
  assert.deepEqual(log.lines.filter((l) => l.event === "clockJump").map((l) => [l.direction, l.jumpMs]), [["backward", -5_000], ["forward", 60_000]]);
});

test("stalls: one longer than the lease safety margin is counted and logged, one within it is not", async () => {
  const { metrics, log } = setup();
  metrics.stalled(100);
  metrics.stalled(350);
  const text = await metrics.text();
  assert.equal(sampleValue(text, 'mutexd_stalls_past_lease_margin_total{node="n1"}'), 1, text);
  assert.deepEqual(log.lines.filter((l) => l.event === "stalledPastLeaseMargin"), [{ event: "stalledPastLeaseMargin", stallMs: 350, leaseSafetyMs: 100 }]);
});
