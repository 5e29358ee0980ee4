/**
 * The ring driver's hop times (cluster/ring/hop_times.ts, status `hopMs`): a hop time runs from
 * the token's queueing to the acknowledgement of that same hand-off only, the percentiles are
 * over the last 256 hop times, and `count` counts every one.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { manualClock } from "../cluster/clock.ts";
import { HopTimes } from "../cluster/ring/hop_times.ts";

test("a hop time is taken from the token queued last to its own acknowledgement, once", () => {
  const clock = manualClock(1_000);
  const hops = new HopTimes(clock);
  assert.deepEqual(hops.status(), { p50: null, p99: null, samples: 0, count: 0 }, "no hand-off yet");
  hops.delivered(1, 1);
  assert.equal(hops.status().count, 0, "an acknowledgement without a queued token is no hop time");

  hops.queuedToken(1, 1);
  clock.advance(7);
  hops.delivered(1, 2);
  hops.delivered(2, 1);
  assert.equal(hops.status().count, 0, "another hand-off's acknowledgement (hop or epoch) closes nothing");
  hops.delivered(1, 1);
  assert.deepEqual(hops.status(), { p50: 7, p99: 7, samples: 1, count: 1 });
  clock.advance(5);
  hops.delivered(1, 1);
  assert.equal(hops.status().count, 1, "a second acknowledgement of the same hand-off is not a second hop time");
});

test("the percentiles are over the last 256 hop times, the count over all", () => {
  const clock = manualClock(0);
  const hops = new HopTimes(clock);
  // 300 hop times of 1..300 ms: the last 256 are 45..300.
  for (let i = 1; i <= 300; i++) {
    hops.queuedToken(1, i);
    clock.advance(i);
    hops.delivered(1, i);
  }
  const status = hops.status();
  assert.equal(status.samples, 256);
  assert.equal(status.count, 300);
  assert.equal(status.p50, 45 + 127, "the 128th of 45..300");
  assert.equal(status.p99, 45 + 253, "the 254th of 45..300 (ceil(0.99 * 256))");
});
