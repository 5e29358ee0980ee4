/**
 * The cores' next deadlines, which the ring driver's tick sleeps until (cluster/ring/service.ts
 * `armTick`): pure reads of state. The view core's is the token-loss probe's start (tokenLossMs
 * after the token was last seen here) while the token is away and nothing else runs on ticks,
 * "now" (tick at the driver's period) once a view change is wanted, and none while the token is
 * here; the repair core's is "now" while it holds a suspicion, else none. The ring node's (a
 * resting token's pass time) is checked through the driver in ring_service_start_test.ts. The
 * driver's next tick (`nextTickAtMs`) is the earliest deadline, but tickMs from now at the
 * soonest and tokenIdlePaceMs from now at the latest.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { RingRepair, repairTimings } from "../lib/core/ring/repair.ts";
import { nextTickAtMs } from "../lib/core/ring/tick_schedule.ts";
import { ViewCore } from "../lib/core/ring/view.ts";
import type { LocalFacts, View } from "../lib/core/ring/view_wire.ts";
import { DEFAULT_SETTINGS as S } from "../lib/settings.ts";

const RING = ["r1", "r2", "r3"];
const VIEW: View = { epoch: 4, coordinator: "r1", members: RING, regenerator: "r1", startWseq: 0, resendFromWseq: 1, grantWaitMs: 0 };

test("the view core's deadline: the token-loss probe's start while the token is away, none while it is here, now once a view change is wanted", () => {
  let facts: LocalFacts = { lastApplied: 0, lastWriteEpoch: 0, commit: 0, tokenEpoch: 4, tokenHop: 9, token: "held", sectionRemainingMs: 0, lastTokenAgeMs: 0 };
  const startMs = 10_000;
  // A member of its installed view (restarted from it: no view change is under way).
  const core = new ViewCore({ id: "r2", ring: RING, arbiter: null, settings: S, localFacts: () => facts }, { promised: { epoch: 4, coordinator: "r1" }, view: VIEW }, startMs);
  assert.equal(core.nextDeadlineMs(startMs), Number.POSITIVE_INFINITY, "the token is here: nothing to probe for");

  // Passed on 300 ms before this tick: the probe is due tokenLossMs after that, not sooner.
  facts = { ...facts, token: "away", lastTokenAgeMs: 300 };
  core.tick(startMs + 100);
  assert.equal(core.nextDeadlineMs(startMs + 100), startMs + 100 - 300 + S.tokenLossMs);
  assert.equal(core.ready().send.length, 0, "no probe before its time");
  // At that deadline, the tick probes (the deadline is when something happens, not a guess).
  const dueMs = startMs + 100 - 300 + S.tokenLossMs;
  facts = { ...facts, lastTokenAgeMs: S.tokenLossMs };
  core.tick(dueMs);
  assert.deepEqual(new Set(core.ready().send.map((s) => s.message.type)), new Set(["probe"]), "the probe goes out at the deadline");
  assert.equal(core.nextDeadlineMs(dueMs), dueMs, "a probe runs: tick at the driver's period");

  const wanting = new ViewCore({ id: "r2", ring: RING, arbiter: null, settings: S, localFacts: () => facts }, { promised: { epoch: 4, coordinator: "r1" }, view: VIEW }, startMs);
  wanting.startViewChange("suspect", startMs);
  assert.equal(wanting.nextDeadlineMs(startMs), startMs, "a view change wanted: tick at the driver's period");
});

test("the repair core's deadline: none without a suspicion, now while it holds one", () => {
  const repair = new RingRepair({ self: "r1", ring: RING, ...repairTimings(S), nowMs: 0 });
  assert.equal(repair.nextDeadlineMs(100), Number.POSITIVE_INFINITY);
  repair.step({ type: "handoffFailed", to: "r2", epoch: 4 }, 200);
  assert.equal(repair.status(200).length, 1, "r2 suspected");
  assert.equal(repair.nextDeadlineMs(200), 200);
  repair.step({ type: "heardFrom", node: "r2" }, 300);
  assert.equal(repair.nextDeadlineMs(300), Number.POSITIVE_INFINITY, "cleared: nothing due");
});

test("the driver's next tick: the cores' earliest deadline (one due now: tickMs from now), no later than tokenIdlePaceMs", () => {
  const settings = { tickMs: 10, tokenIdlePaceMs: 200 };
  assert.equal(nextTickAtMs(1_000, 1_000, settings), 1_010, "due now: one tick period on");
  assert.equal(nextTickAtMs(1_000, 900, settings), 1_010, "overdue: one tick period on, not in the past");
  assert.equal(nextTickAtMs(1_000, 1_050, settings), 1_050, "due later: at the deadline");
  // A token resting for tokenHoldMs under contention leaves at the end of it, not a tick later.
  assert.equal(nextTickAtMs(1_000, 1_002, settings), 1_002, "due sooner than a tick period: still at the deadline");
  assert.equal(nextTickAtMs(1_000, Number.POSITIVE_INFINITY, settings), 1_200, "nothing due: the idle pace bounds the sleep");
  assert.equal(nextTickAtMs(1_000, 1_500, settings), 1_200, "a far deadline: the idle pace still bounds it");
  assert.equal(nextTickAtMs(1_000, Number.POSITIVE_INFINITY, { tickMs: 10, tokenIdlePaceMs: 0 }), 1_010, "an idle pace below the tick: the tick period");
});
