/**
 * The lock service's long-polls (cluster/lock/long_polls.ts) are bounded per request: repeated
 * enter calls for one (lock, session), each polling until its timer, keep at most
 * POLLS_PER_REQUEST_MAX polls and timers; a newer poll ends the oldest as "changed". Without the
 * bound, every repeated call would hold a poll and a timer until it ran out. Fake timers, in process.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { LongPolls, POLLS_PER_REQUEST_MAX, type WaitOutcome } from "../cluster/lock/long_polls.ts";
import { StepContinuations } from "../cluster/lock/step_continuations.ts";
import type { TimerHandle, Timers } from "../cluster/timers.ts";

/** Timers that only count what is armed; nothing fires on its own. */
function countingTimers(): Timers & { armed: Set<TimerHandle> } {
  const armed = new Set<TimerHandle>();
  let next = 0;
  return {
    armed,
    setTimeout: () => {
      const handle = next++;
      armed.add(handle);
      return handle;
    },
    clearTimeout: (handle) => void armed.delete(handle),
  };
}

test("long polls: repeated calls for one request keep at most POLLS_PER_REQUEST_MAX polls and timers; the oldest ends as changed", () => {
  const timers = countingTimers();
  const continuations = new StepContinuations();
  const polls = new LongPolls(timers, continuations);
  const ended: Array<{ call: number; outcome: WaitOutcome }> = [];
  const calls = POLLS_PER_REQUEST_MAX + 3;
  for (let call = 0; call < calls; call++) polls.wait("x", "s1", 60_000, (outcome) => ended.push({ call, outcome }));
  polls.wait("x", "s2", 60_000, (outcome) => ended.push({ call: -1, outcome })); // another session's poll is its own
  continuations.run();
  assert.equal(timers.armed.size, POLLS_PER_REQUEST_MAX + 1, "one timer per kept poll");
  assert.deepEqual(ended, [0, 1, 2].map((call) => ({ call, outcome: "changed" })), "the oldest three ended, as changed");
  polls.wake("x", "s1");
  continuations.run();
  assert.deepEqual(ended.slice(3).map((e) => e.call), [3, 4, 5, 6], "the kept ones end on the change, oldest first");
  assert.equal(timers.armed.size, 1, "only s2's timer is left");
});
