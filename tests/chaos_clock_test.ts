/**
 * The clock kinds' plumbing in the chaos schedule (tests/chaos/faults.ts, clock.ts): they leave a
 * seed's other schedules as they were, they are off with the reason where libfaketime is
 * missing, their draws stay within the documented bounds, and a node's environment and
 * timestamp file say what libfaketime must do.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { removeDir, tempDir } from "./_harness.ts";
import { CLOCK_STEP_MAX_S, NodeClocks } from "./chaos/clock.ts";
import { CLOCK_RATE, describeFault, makeSchedule, RATE_ERROR_MAX_PERMILLE } from "./chaos/faults.ts";

const RING5 = ["r1", "r2", "r3", "r4", "r5"];
const SEEDS = [1, 7, 11, 18, 101, 202, 303, 404];

test("clock kinds leave every other track's schedule and weight of a seed unchanged", () => {
  for (const seed of SEEDS) {
    const without = makeSchedule(seed, 60, {
      ring: RING5,
      netnsOff: null,
      degradeOff: null,
      clockOff: "no libfaketime",
    });
    const withClock = makeSchedule(seed, 60, { ring: RING5, netnsOff: null, degradeOff: null, clockOff: null });
    for (const track of ["lock", "ring", "client"] as const) {
      assert.deepEqual(withClock.steps[track], without.steps[track], `seed ${seed}, ${track} track`);
    }
    for (const [name, weight] of Object.entries(without.profile)) {
      if (!name.startsWith("clock-")) assert.equal(withClock.profile[name], weight, `seed ${seed}, ${name}`);
    }
  }
});

test("where libfaketime is missing the clock kinds are off with the reason, and no clock step or rate is drawn", () => {
  const schedule = makeSchedule(7, 60, {
    ring: ["r1", "r2", "r3"],
    netnsOff: "loopback",
    degradeOff: "loopback",
    clockOff: "no libfaketime (apt-get install faketime)",
  });
  assert.equal(schedule.off["clock-step"], "no libfaketime (apt-get install faketime)");
  assert.equal(schedule.off[CLOCK_RATE], "no libfaketime (apt-get install faketime)");
  assert.equal(schedule.profile["clock-step"], 0);
  assert.deepEqual(schedule.steps.clock, []);
  assert.deepEqual(schedule.rates, {});
  assert.throws(
    () =>
      makeSchedule(7, 60, {
        ring: ["r1"],
        netnsOff: "loopback",
        degradeOff: "loopback",
        clockOff: "no libfaketime",
        only: ["clock-step"],
      }),
    /off here/,
  );
});

test("clock steps go forward and back by seconds to hours, never on a rated node; rates are within the bound and only the arbiter runs fast", () => {
  const offsets: number[] = [];
  const fast = new Set<string>();
  for (let seed = 1; seed <= 200; seed++) {
    const schedule = makeSchedule(seed, 60, { ring: RING5, netnsOff: null, degradeOff: null, clockOff: null });
    for (const [id, rate] of Object.entries(schedule.rates)) {
      const errorPermille = Math.round(Math.abs(rate - 1) * 1_000);
      assert.ok(errorPermille >= 10 && errorPermille <= RATE_ERROR_MAX_PERMILLE, `seed ${seed}: ${id} x${rate}`);
      if (rate > 1) fast.add(id);
    }
    assert.ok(Object.keys(schedule.rates).length <= schedule.profile[CLOCK_RATE]);
    for (const step of schedule.steps.clock) {
      assert.equal(step.name, "clock-step");
      const [fault] = step.faults;
      assert.equal(fault.kind, "clock");
      assert.equal(schedule.rates[fault.target], undefined, `seed ${seed}: ${fault.target} is rated and stepped`);
      assert.ok(
        Number.isSafeInteger(fault.offsetS) && fault.offsetS !== 0 && Math.abs(fault.offsetS!) <= CLOCK_STEP_MAX_S,
      );
      offsets.push(fault.offsetS!);
    }
  }
  assert.deepEqual([...fast], ["a1"], "the arbiter is the only node drawn fast");
  assert.ok(offsets.some((s) => s < 0) && offsets.some((s) => s > 0), "steps both ways");
  assert.ok(offsets.some((s) => Math.abs(s) < 60) && offsets.some((s) => Math.abs(s) >= 3_600), "seconds and hours");
  assert.equal(describeFault({ kind: "clock", target: "r2", offsetS: -3_600 }), "clock r2 -3600 s");
});

test("--only clock-step,clock-rate: one rated node, the clock track steps the others first, no other track runs", () => {
  const schedule = makeSchedule(7, 15, {
    ring: ["r1", "r2", "r3"],
    netnsOff: "loopback",
    degradeOff: "loopback",
    clockOff: null,
    only: ["clock-step", CLOCK_RATE],
  });
  assert.equal(Object.keys(schedule.rates).length, 1);
  assert.ok(schedule.steps.clock.length >= 2);
  for (const track of ["lock", "ring", "client"] as const) assert.deepEqual(schedule.steps[track], []);
});

test("a node's libfaketime environment: a stepped node fakes the wall clock only, a rated node its whole clock; a step rewrites its file", () => {
  const dir = tempDir("mutexd-clock-");
  try {
    const clocks = new NodeClocks("/lib/libfaketimeMT.so.1", dir, { r3: 0.964 });
    const stepped = clocks.env("p1");
    assert.equal(stepped.LD_PRELOAD, "/lib/libfaketimeMT.so.1");
    assert.equal(stepped.FAKETIME_DONT_FAKE_MONOTONIC, "1");
    assert.equal(stepped.FAKETIME_NO_CACHE, "1");
    assert.equal(readFileSync(clocks.file("p1"), "utf8"), "+0\n");
    clocks.step("p1", -7_200);
    assert.equal(readFileSync(clocks.file("p1"), "utf8"), "-7200\n");
    // A restart during a step keeps the step (the file is not reset by env()).
    clocks.env("p1");
    assert.equal(readFileSync(clocks.file("p1"), "utf8"), "-7200\n");
    clocks.step("p1", 0);
    assert.equal(readFileSync(clocks.file("p1"), "utf8"), "+0\n");
    const rated = clocks.env("r3");
    assert.equal(rated.FAKETIME_DONT_FAKE_MONOTONIC, undefined, "a rate applies to the monotonic clock too");
    assert.equal(readFileSync(clocks.file("r3"), "utf8"), "+0 x0.964\n");
    assert.throws(() => clocks.step("r3", 5), /rate/);
    assert.throws(() => clocks.step("p1", CLOCK_STEP_MAX_S + 1), /out of bounds/);
  } finally {
    removeDir(dir);
  }
});
