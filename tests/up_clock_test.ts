/**
 * `mutexd up` waits for its nodes to start (upStartTimeoutMs) and to stop after SIGTERM
 * (upStopTimeoutMs). Those waits must be measured on the monotonic clock: a wall-clock step (NTP,
 * or chaos's clock-step) must neither cut a start short (the whole cluster stopped, exit 1) nor
 * stretch a stop by hours (SIGKILL never sent). Found with the chaos clock kinds (issue 13). The
 * test steps `Date.now` by an hour during each wait (patched for the test only, then restored).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import type { ChildProcess } from "node:child_process";
import type { NodeConfig } from "../cluster/config.ts";
import { startProblem, waitForExit } from "../cluster/commands/up.ts";

const HOUR_MS = 3_600_000;

/** Runs `fn` while `Date.now` reads `offsetMs` off the real wall clock from its second call on. */
async function withWallStep<T>(offsetMs: number, fn: () => Promise<T>): Promise<T> {
  const realNow = Date.now;
  let calls = 0;
  Date.now = () => realNow.call(Date) + (++calls > 1 ? offsetMs : 0);
  try {
    return await fn();
  } finally {
    Date.now = realNow;
  }
}

test("a wall clock stepped forward an hour does not cut short the wait for a node's start", async () => {
  let tries = 0;
  const node = { id: "p1", host: "127.0.0.1", port: 1 } as NodeConfig;
  const child = { pid: 4242, exitCode: null, signalCode: null } as unknown as ChildProcess;
  // The node answers on its third try, a few polls after the start, as the process up started.
  const fetchFn = (_url: string) =>
    ++tries < 3 ? Promise.reject(new Error("refused")) : Promise.resolve(Response.json({ id: "p1", pid: 4242 }));
  const problem = await withWallStep(HOUR_MS, () => startProblem(fetchFn, node, child, DEFAULT_SETTINGS));
  assert.equal(problem, undefined, `gave up after ${tries} tries: ${problem}`);
});

test("a wall clock stepped back an hour does not stretch the wait for stopping nodes beyond upStopTimeoutMs", async () => {
  const settings = { upStopTimeoutMs: 300, upPollMs: 20 };
  const stuck = { exitCode: null, signalCode: null };
  const startedMs = performance.now();
  // Bounded by the test: without the fix this waits an hour; the race ends it after 3 s.
  const outcome = await withWallStep(
    -HOUR_MS,
    () =>
      Promise.race([
        waitForExit([stuck], settings).then(() => "returned"),
        new Promise((r) => setTimeout(() => r("still waiting"), 3_000)),
      ]),
  );
  assert.equal(outcome, "returned");
  assert.ok(performance.now() - startedMs >= settings.upStopTimeoutMs - 1, "waited the whole upStopTimeoutMs");
});
