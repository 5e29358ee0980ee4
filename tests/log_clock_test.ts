/**
 * Node log lines carry the wall-clock time (`ts`), which an NTP step (or chaos's clock-step)
 * moves: after a step back the lines' times go back. Each line also carries `uptimeMs`, the
 * process's monotonic milliseconds, so the order and spacing of a node's lines survive a step.
 * Found with the chaos clock kinds (issue 13). `Date` is replaced for the test only, then restored.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { jsonLogger } from "../cluster/log.ts";

const HOUR_MS = 3_600_000;

test("a wall clock stepped back an hour between two log lines: ts goes back, uptimeMs does not", () => {
  const RealDate = globalThis.Date;
  let calls = 0;
  // From the second `new Date()` on, the wall clock reads an hour earlier.
  class SteppedDate extends RealDate {
    constructor(...args: unknown[]) {
      super(args.length > 0 ? (args[0] as number) : RealDate.now() - (++calls > 1 ? HOUR_MS : 0));
    }
  }
  const written: string[] = [];
  const log = jsonLogger("p1", 1_000, (text) => void written.push(text));
  globalThis.Date = SteppedDate as DateConstructor;
  try {
    log.event("first");
    log.event("second");
  } finally {
    globalThis.Date = RealDate;
  }
  log.flush();
  const [first, second] = written.join("").trim().split("\n").map((line) => JSON.parse(line));
  assert.ok(Date.parse(second.ts) < Date.parse(first.ts) - HOUR_MS / 2, "the step reached ts");
  assert.ok(Number.isSafeInteger(first.uptimeMs) && first.uptimeMs >= 0, `uptimeMs ${first.uptimeMs}`);
  assert.ok(second.uptimeMs >= first.uptimeMs, `uptimeMs went from ${first.uptimeMs} to ${second.uptimeMs}`);
});
