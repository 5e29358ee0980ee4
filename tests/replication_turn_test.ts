/**
 * The lock service's end of turn (cluster/lock/service.ts `scheduleEndOfTurn`): appends the primary
 * makes while one is in flight wait for the end of the event-loop turn, which the driver asks the
 * timers port for once per turn, and then leave in one frame (backup_feed.ts `appendedPump`). The
 * pair is the in-process one of tests/_fuzz_apps.ts (real LockServices, the peer route as JSON
 * text); the test runs the end of the turn itself, so it knows it ran before the first ack came.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { realTimers, type Timers } from "../cluster/timers.ts";
import { lockPair } from "./_fuzz_apps.ts";
import { SECRET_HASH } from "./_session.ts";

test("lock service: four changes in one turn with the first in flight: the first at once, the other three in ONE frame from ONE end-of-turn call, all committed", async () => {
  const endOfTurn: Array<() => void> = [];
  const timers: Timers = { ...realTimers, endOfTurn: (fn) => void endOfTurn.push(fn) };
  const pair = await lockPair(undefined, { timers });
  try {
    for (const fn of endOfTurn.splice(0)) fn(); // whatever the set-up's turns asked for
    const before = pair.recorded.length;
    const appended = () =>
      pair.recorded.slice(before)
        .filter((r) => r.from === "p1" && r.to === "b1" && r.message.type === "append" && (r.message.entries as unknown[]).length > 0)
        .map((r) => (r.message.entries as unknown[]).length);
    // One synchronous turn: the backup's acks come back as promise callbacks, after it.
    const answers = [1, 2, 3, 4].map(() => pair.p.submit({ type: "openSession", secretHash: SECRET_HASH, ttlMs: 5_000 }));
    assert.deepEqual(appended(), [1], "the first change goes at once; the other three wait");
    assert.equal(endOfTurn.length, 1, "the driver asked for the end of the turn once");
    endOfTurn.shift()!();
    assert.deepEqual(appended(), [1, 3], "at the end of the turn the three leave in one frame");
    for (const answer of await Promise.all(answers)) assert.ok(answer.ok && answer.result.type === "session", JSON.stringify(answer));
    assert.equal(pair.p.replica.status().commitIndex, pair.p.replica.status().lastIndex, "all four committed");
  } finally {
    pair.stop();
  }
});
