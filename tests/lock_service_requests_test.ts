/**
 * The lock service's requests in flight (cluster/lock/service.ts `submitting`, `answers`): a
 * request answered within its own step (a lone primary's) is answered from the driver's slot,
 * without an entry in the Map of requests in flight; one its step leaves unanswered (replicated to
 * a backup) waits in that Map, also when another request is submitted within its step. Every
 * request gets exactly one answer, its own, in the order the core decides them; none is lost when
 * a second one takes the slot. In process, on a manual clock.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import type { ClientAnswer } from "../lib/core/lock/lock_replica.ts";
import type { Command } from "../lib/core/lock/lock_table.ts";
import type { LockService } from "../cluster/lock/service.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { manualClock } from "../cluster/clock.ts";
import { LockService as Service } from "../cluster/lock/service.ts";
import { LockMetrics } from "../cluster/lock/metrics.ts";
import { memoryLogger } from "../cluster/log.ts";
import { NodeMetrics } from "../cluster/metrics.ts";
import { SecurityLog } from "../cluster/security_log.ts";
import { realTimers } from "../cluster/timers.ts";
import { lockPair } from "./_fuzz_apps.ts";
import { soloLockService } from "./_lock_service.ts";
import { SECRET_HASH } from "./_session.ts";

const OPEN: Command = { type: "openSession", ttlMs: 5_000, secretHash: SECRET_HASH };

/** The driver's private bookkeeping of requests in flight (test-side read only). */
function inFlight(service: LockService): { parked: number; submitting: unknown } {
  const driver = service as unknown as { answers: Map<number, unknown>; submitting: unknown };
  return { parked: driver.answers.size, submitting: driver.submitting };
}

function sessionOf(answer: ClientAnswer | undefined): string {
  assert.ok(answer?.ok && answer.result.type === "session", `a session: ${JSON.stringify(answer)}`);
  return answer.result.session;
}

test("a lone primary answers a request within its step, and one submitted from that answer within the same turn, each with its own answer, leaving nothing in flight", () => {
  const service = soloLockService(DEFAULT_SETTINGS);
  try {
    const order: string[] = [];
    let first: ClientAnswer | undefined;
    let second: ClientAnswer | undefined;
    service.submitThen(OPEN, "req-1", (answer) => {
      order.push("first");
      first = answer;
      // A continuation that submits: its step runs inside the first one's turn.
      service.submitThen(OPEN, "req-2", (nested) => {
        order.push("second");
        second = nested;
      });
      order.push("first done");
    });
    // The nested request's step leaves its answer to the loop already running (step_continuations.ts).
    assert.deepEqual(order, ["first", "first done", "second"], "both answered within the first call, in order");
    assert.notEqual(sessionOf(first), sessionOf(second), "each request its own answer");
    assert.deepEqual(inFlight(service), { parked: 0, submitting: undefined }, "nothing left in flight");
    // A retry of the first key gets the first answer (the remembered one), not the second's.
    let retried: ClientAnswer | undefined;
    service.submitThen(OPEN, "req-1", (answer) => (retried = answer));
    assert.equal(sessionOf(retried), sessionOf(first));
  } finally {
    service.stop();
  }
});

test("with a backup, a request its step leaves unanswered waits until the commit; one submitted within that step (a step listener) does not take its place; stop answers what is left", { timeout: 60_000 }, async () => {
  const pair = await lockPair();
  const { p } = pair;
  try {
    const answers: Array<{ request: string; answer: ClientAnswer }> = [];
    let nestedOnce = false;
    const removeListener = p.onStep(() => {
      // Runs after the first request's step, while that request is still the one being submitted.
      if (nestedOnce) return;
      nestedOnce = true;
      p.submitThen(OPEN, "nested", (answer) => answers.push({ request: "nested", answer }));
    });
    p.submitThen(OPEN, "outer", (answer) => answers.push({ request: "outer", answer }));
    removeListener();
    assert.ok(nestedOnce, "the listener submitted within the outer request's step");
    assert.equal(answers.length, 0, "neither is committed before the backup acks");
    assert.deepEqual(inFlight(p), { parked: 2, submitting: undefined }, "both wait in the Map");
    await pair.tickUntil("both answered", () => answers.length === 2);
    assert.deepEqual(answers.map((a) => a.request), ["outer", "nested"], "each answered once, in log order");
    assert.notEqual(sessionOf(answers[0].answer), sessionOf(answers[1].answer));
    assert.deepEqual(inFlight(p), { parked: 0, submitting: undefined });
    // One more left unanswered in its step, then the server stops: the stopping answer, not never.
    const last: ClientAnswer[] = [];
    p.submitThen(OPEN, "last", (answer) => last.push(answer));
    assert.equal(last.length, 0, "waits for the backup");
    p.stop();
    assert.equal(last.length, 1, "answered once");
    assert.equal(last[0].ok === false && last[0].code, "not_primary");
    assert.deepEqual(inFlight(p), { parked: 0, submitting: undefined });
  } finally {
    pair.stop();
  }
});

test("a refusal decided before stop() and answered after it (stop called from an earlier answer of the same step loop) is answered, not held for a takeover that will never come", { timeout: 60_000 }, async () => {
  const pair = await lockPair();
  const { b } = pair;
  try {
    // b is about to take over (test-side: the core says so), so a "not primary" it answers is held.
    (b.replica as unknown as { takeoverPending: () => boolean }).takeoverPending = () => true;
    const answers: Array<{ request: string; answer: ClientAnswer }> = [];
    b.submitThen(OPEN, "first", (answer) => {
      answers.push({ request: "first", answer });
      // Within the continuation loop: the nested request's refusal is queued, then the server stops.
      b.submitThen(OPEN, "nested", (nested) => answers.push({ request: "nested", answer: nested }));
      b.stop();
    }, false);
    assert.deepEqual(answers.map((a) => a.request), ["first", "nested"], "both answered once, none held past stop");
    assert.equal(answers[1].answer.ok === false && answers[1].answer.code, "not_primary");
  } finally {
    pair.stop();
  }
});

test("a lone primary reads the clock once per request (an enter's ask and its step share one reading) and its metrics time a hold from the grant's step to the release's", async () => {
  const clock = manualClock(1_000);
  let reads = 0;
  const counted = { nowMs: () => (reads++, clock.nowMs()) };
  const log = memoryLogger();
  const security = new SecurityLog(clock, log, 1_000);
  const node = new NodeMetrics({ nodeId: "p1", clock, log, security, loopStall: () => ({ loopStallMaxMs: 0, loopStallRecentMaxMs: 0 }), leaseSafetyMs: 100 });
  const service = new Service({
    settings: DEFAULT_SETTINGS,
    clock: counted,
    log,
    nodeId: "p1",
    peer: null,
    arbiter: null,
    transport: { send: () => Promise.reject(new Error("no peers in this test")) },
    timers: realTimers,
    sessionIdPrefix: "t-",
    tokenFloor: 0,
    metrics: new LockMetrics(node, counted, () => ({ sessionCount: 1, lockCount: 0, epoch: 1, lagEntries: null })),
  });
  try {
    let opened: ClientAnswer | undefined;
    service.submitThen(OPEN, undefined, (answer) => (opened = answer));
    const session = sessionOf(opened);
    for (let round = 0; round < 3; round++) {
      reads = 0;
      let granted: ClientAnswer | undefined;
      service.enterThen({ type: "enter", name: "L", session, secretHash: SECRET_HASH, mode: "exclusive", waitMs: 0, lockDelayMs: 0 }, (answer) => (granted = answer));
      assert.ok(granted?.ok && granted.result.type === "granted", JSON.stringify(granted));
      clock.advance(250);
      let left: ClientAnswer | undefined;
      service.submitThen({ type: "leave", name: "L", session, secretHash: SECRET_HASH, token: granted.result.grant.token }, `leave-${round}`, (answer) => (left = answer));
      assert.ok(left?.ok && left.result.type === "left", JSON.stringify(left));
      // The enter's and the leave's; the grant's and the release's metrics take their steps' (was 5).
      assert.equal(reads, 2, `clock reads for acquire+release ${round}`);
    }
    const text = await node.text();
    const sample = (line: string) => Number(text.split("\n").find((l) => l.startsWith(line + " "))?.split(" ")[1]);
    assert.equal(sample('mutexd_lock_hold_seconds_count{node="p1",lock="L"}'), 3, text);
    assert.ok(Math.abs(sample('mutexd_lock_hold_seconds_sum{node="p1",lock="L"}') - 0.75) < 1e-9, text);
  } finally {
    service.stop();
  }
});
