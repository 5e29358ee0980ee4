/**
 * The ring driver's repair wiring (cluster/ring/service.ts) with hand-made peers: node b of
 * a → b → c, whose every hand-off to c the test answers or fails by hand. Proves the count: no
 * suspicion after ringRepairRetries − 1 timeouts in a row, a suspicion and one ask at the
 * ringRepairRetries-th, and an answer from c clears it (one log line each); one refusal at
 * connect suspects at once. Without a repair
 * link (the simulator's case) the same failures suspect nobody. Each test stops its service and
 * removes its data dir. Node b joins the view of epoch 1 by hand and is not started: its start
 * would begin a view change at a real-time moment, and the repair core asks on the failure
 * itself, not on a tick. (The view change that the failures start does begin: b coordinates
 * epoch 2, which goes no further, as its peers never answer a view message.)
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { RingNode, type RingResult } from "../lib/core/ring/ring_node.ts";
import type { RepairMessage } from "../lib/core/ring/repair.ts";
import { ViewCore } from "../lib/core/ring/view.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { manualClock } from "../cluster/clock.ts";
import { memoryLogger } from "../cluster/log.ts";
import { realTimers } from "../cluster/timers.ts";
import { connectRefused } from "../cluster/ring/handoff_delivery.ts";
import { type RingPeers, RingService } from "../cluster/ring/service.ts";
import { RingStorage } from "../cluster/ring/storage.ts";
import { eventually, removeDir, tempDir } from "./_harness.ts";
import { joinView, never } from "./_ring_service.ts";

const RETRIES = 3;
// A 1 ms first retry: the link's backoff is real time, and the test waits on each delivery.
const settings = { ...DEFAULT_SETTINGS, ringRepairRetries: RETRIES, tokenRetryMs: 1 };
/** A delivery the link is waiting on: the test settles it. */
type Pending = { resolve(result: RingResult): void; reject(error: Error): void };

async function withService(withRepair: boolean, body: (h: { deliveries: Pending[]; sent: RepairMessage[]; log: ReturnType<typeof memoryLogger>; service: RingService }) => Promise<void>): Promise<void> {
  const dir = tempDir("mutexd-ring-repair-service-");
  const storage = new RingStorage(dir);
  const deliveries: Pending[] = [];
  const sent: RepairMessage[] = [];
  const log = memoryLogger();
  const peers: RingPeers = {
    deliver: () => new Promise((resolve, reject) => deliveries.push({ resolve, reject })),
    fetchLog: never,
    wake: () => Promise.resolve(),
    view: never,
  };
  const node = new RingNode({ id: "b", ring: ["a", "b", "c"], limits: settings, ticketPrefix: "t-" });
  const clock = manualClock(1_000);
  const service = new RingService({
    node,
    settings,
    clock,
    timers: realTimers,
    log,
    storage,
    storedView: null,
    peers,
    repairLink: withRepair ? { send: (m) => void sent.push(m) } : undefined,
    onFatal: () => {},
  });
  joinView(service, clock);
  try {
    // The token from a, not idle: b passes it on to c at once.
    service.stepItem("a", { kind: "token", token: { epoch: 1, hop: 1, wseq: 0, commit: 0, fence: 0, idleHops: 0 } });
    await body({ deliveries, sent, log, service });
  } finally {
    service.stop();
    storage.close();
    removeDir(dir);
  }
}

/**
 * Fails the `n`-th delivery (1-based) once the link has made it: refused at connect (nothing
 * listens), or timed out (which may have arrived, and may be a lost packet).
 */
async function fail(deliveries: Pending[], n: number, how: "refused" | "timeout" = "refused"): Promise<void> {
  await eventually(`delivery ${n} is made`, () => deliveries.length >= n, 2_000);
  deliveries[n - 1].reject(new Error(how === "refused" ? "connection refused" : "The operation timed out."));
}

const repairLines = (log: ReturnType<typeof memoryLogger>) => log.lines.filter((l) => String(l.event).startsWith("ringSuspicion") || l.event === "ringSuspected");

test("repair wiring: ringRepairRetries timed-out hand-offs in a row make one suspicion and one ask; c's answer clears it", { timeout: 10_000 }, async () => {
  await withService(true, async ({ deliveries, sent, log, service }) => {
    for (let n = 1; n < RETRIES; n++) await fail(deliveries, n, "timeout");
    await eventually(`delivery ${RETRIES} is made`, () => deliveries.length >= RETRIES, 2_000);
    assert.deepEqual(sent, [], `no ask after ${RETRIES - 1} failures`);
    assert.deepEqual(service.suspicions(), []);
    assert.equal(service.viewStatus().wanted, null, "no view change yet either");
    await fail(deliveries, RETRIES, "timeout");
    await eventually("b asks who lost c", () => sent.length === 1, 2_000);
    // The same count starts a view change (the members will be whoever promises): b coordinates epoch 2.
    assert.equal(service.viewStatus().wanted, "suspect");
    assert.deepEqual(service.viewStatus().coordinating, { epoch: 2, coordinator: "b" });
    assert.deepEqual(sent, [{ type: "whoLostPred", epoch: 1, suspect: "c", from: "b" }]);
    assert.deepEqual(service.suspicions().map((s) => [s.node, s.suspectedBy, s.confirmedBy, s.newSuccessor]), [["c", ["b"], [], "a"]]);
    // The next failure is within askEveryMs (the clock stands still): no second ask.
    await fail(deliveries, RETRIES + 1, "timeout");
    await eventually("the link tries again", () => deliveries.length >= RETRIES + 2, 2_000);
    assert.equal(sent.length, 1);
    // c answers: b heard from it.
    deliveries[RETRIES + 1].resolve({ ok: true, type: "token", duplicate: false });
    await eventually("the suspicion is cleared", () => service.suspicions().length === 0, 2_000);
    assert.deepEqual(repairLines(log).map((l) => [l.event, l.suspect]), [["ringSuspected", "c"], ["ringSuspicionCleared", "c"]]);
  });
});

test("repair wiring: a cut hand-off (reset) alone suspects nobody; the refused retry after it suspects c and starts the view change at once (nothing listens there: no retry would reach it)", { timeout: 10_000 }, async () => {
  await withService(true, async ({ deliveries, sent, service }) => {
    // What a kill -9 gives on a kept-alive connection (docs/bench.md, "R1 and R9 broken down").
    await eventually("delivery 1 is made", () => deliveries.length >= 1, 2_000);
    deliveries[0].reject(new Error("ECONNRESET: The socket connection was closed unexpectedly"));
    await eventually("delivery 2 is made", () => deliveries.length >= 2, 2_000);
    assert.deepEqual(sent, [], "a reset may be a cut connection to a live node: no suspicion yet");
    assert.equal(service.viewStatus().wanted, null);
    await fail(deliveries, 2, "refused");
    await eventually("b asks who lost c", () => sent.length === 1, 2_000);
    assert.deepEqual(sent, [{ type: "whoLostPred", epoch: 1, suspect: "c", from: "b" }]);
    assert.equal(service.viewStatus().wanted, "suspect");
    assert.deepEqual(service.viewStatus().coordinating, { epoch: 2, coordinator: "b" });
  });
});

test("repair wiring: without a repair link (the simulator's case) failed hand-offs suspect nobody", { timeout: 10_000 }, async () => {
  await withService(false, async ({ deliveries, sent, log, service }) => {
    for (let n = 1; n <= RETRIES + 1; n++) await fail(deliveries, n);
    await eventually("the link tries again", () => deliveries.length >= RETRIES + 2, 2_000);
    assert.deepEqual(sent, []);
    assert.deepEqual(service.suspicions(), []);
    assert.deepEqual(repairLines(log), []);
  });
});

test("a token hand-off counts as never left only if every attempt of it was refused: a reset before a refused retry may have been taken, and a timeout after a refusal withdraws it", { timeout: 10_000 }, async () => {
  // Spy on what the driver tells the view change (the refusal fact that waives the grant wait).
  const proto = ViewCore.prototype as unknown as {
    handoffRefused(epoch: number, hop: number, nowMs: number): void;
    handoffUncertain(epoch: number, hop: number, nowMs: number): void;
  };
  const original = proto.handoffRefused;
  const told: Array<[number, number]> = [];
  const uncertain: Array<[number, number]> = [];
  const originalUncertain = proto.handoffUncertain;
  proto.handoffUncertain = function (this: unknown, epoch: number, hop: number, nowMs: number) {
    uncertain.push([epoch, hop]);
    return originalUncertain.call(this, epoch, hop, nowMs);
  };
  proto.handoffRefused = function (this: unknown, epoch: number, hop: number, nowMs: number) {
    told.push([epoch, hop]);
    return original.call(this, epoch, hop, nowMs);
  };
  try {
    await withService(false, async ({ deliveries }) => {
      // Attempt 1 is cut after it may have arrived; attempt 2 finds the port closed (the
      // receiver died after taking the token): the token may be there, not here.
      await eventually("delivery 1 is made", () => deliveries.length >= 1, 2_000);
      deliveries[0].reject(new Error("read ECONNRESET"));
      await fail(deliveries, 2);
      await eventually("delivery 3 is made", () => deliveries.length >= 3, 2_000);
      assert.deepEqual(told, [], "no refusal fact after an uncertain attempt");
    });
    await withService(false, async ({ deliveries }) => {
      // Every attempt refused at connect: the token never left.
      await fail(deliveries, 1);
      await eventually("delivery 2 is made", () => deliveries.length >= 2, 2_000);
      assert.deepEqual(told, [[1, 2]], "the hand-off of hop 2 was refused");
    });
    told.length = 0;
    uncertain.length = 0;
    await withService(false, async ({ deliveries }) => {
      // A refusal (notYet), then an attempt that may have been taken: the refusal is withdrawn.
      await eventually("delivery 1 is made", () => deliveries.length >= 1, 2_000);
      deliveries[0].resolve({ ok: false, type: "notYet", epoch: 1 });
      await eventually("the refusal is reported", () => told.length === 1, 2_000);
      assert.deepEqual(told, [[1, 2]]);
      await eventually("delivery 2 is made", () => deliveries.length >= 2, 2_000);
      deliveries[1].reject(new Error("The operation timed out."));
      await eventually("delivery 3 is made", () => deliveries.length >= 3, 2_000);
      assert.deepEqual(uncertain, [[1, 2]], "the view change is told the token may have left");
    });
  } finally {
    proto.handoffRefused = original;
    proto.handoffUncertain = originalUncertain;
  }
});

test("a hand-off answer its schema refuses counts as a failed delivery (counted answerMalformed, retried); a good one after it is taken", { timeout: 10_000 }, async () => {
  await withService(false, async ({ deliveries, service }) => {
    await eventually("delivery 1 is made", () => deliveries.length >= 1, 2_000);
    // A neighbour (or anyone answering in its place without a cluster secret) sends garbage.
    deliveries[0].resolve({ ok: true, type: "token", duplicate: "yes" } as unknown as RingResult);
    await eventually("the link tries again", () => deliveries.length >= 2, 2_000);
    assert.equal(service.security.view().answerMalformed, 1);
    assert.equal(service.linkLength, 1, "the hand-off is still queued");
    deliveries[1].resolve({ ok: true, type: "token", duplicate: false });
    await eventually("the hand-off is delivered", () => service.linkLength === 0, 2_000);
  });
});

test("connectRefused: only a refused connect in the runtimes' words (Bun's code, Deno's and Node's texts, through causes), never an answer whose body says refused (that request reached the successor)", () => {
  const withCode = (code: string) => Object.assign(new Error("Unable to connect. Is the computer able to access the url?"), { code });
  assert.equal(connectRefused(withCode("ConnectionRefused")), true, "Bun");
  assert.equal(connectRefused(new TypeError("fetch failed", { cause: withCode("ECONNREFUSED") })), true, "through a cause");
  assert.equal(connectRefused(new TypeError("error sending request: Connection refused (os error 111)")), true, "Deno");
  assert.equal(connectRefused(new Error("http://c/v1/ring/token: status 409: the token was refused: stale epoch")), false, "an answer");
  assert.equal(connectRefused(new Error("no answer in 500 ms")), false, "a timeout");
  assert.equal(connectRefused(withCode("ECONNRESET")), false, "a reset");
});
