/**
 * Real processes: a primary paused (SIGSTOP) for far longer than any request timeout. What the
 * CLIENT returns is measured (when a call's promise settles), not when the runtime's fetch gives
 * up:
 * - a holder whose keepalives meet the paused primary keeps its lock: each keepalive try gives
 *   up after one keepalive period (TTL/3, shorter than requestTimeoutMs here), so one reaches the
 *   backup that takes over before the lease ends (with tries of requestTimeoutMs it would not:
 *   the first try alone would outlast the lease);
 * - a waiter's enter long-polling at the paused primary goes on at the backup during the pause,
 *   and is granted there after the release;
 * - calls from fresh clients (the primary first in their list) made after the takeover settle
 *   within their bound: one try at the paused primary (requestTimeoutMs, an enter's long-poll
 *   time on top), then the backup's answer, within MARGIN_MS. Their failover window is shorter
 *   than that try, and the backup is still asked.
 *
 * The margin (MARGIN_MS) covers timers firing late and the backup's answer on a loaded machine;
 * the primary stays paused for twice the largest bound after the fresh calls start, so a call
 * that waited for the pause to end fails its bound whatever the machine's speed.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect, type LockClient } from "../lib/client/lock_client.ts";
import type { FetchPort } from "../lib/client/http.ts";
import { eventually } from "./_harness.ts";
import { startCluster, status } from "./_lock_cluster.ts";

const REQUEST_TIMEOUT_MS = 2_000;
const LONG_POLL_MS = 2_000;
/** Keepalives every TTL/3 = 1,000 ms: a keepalive try gives up after that, before REQUEST_TIMEOUT_MS. */
const TTL_MS = 3_000;
/** The fresh clients' window: shorter than one try at the paused primary. */
const LATE_FAILOVER_MS = 1_000;
const MARGIN_MS = 1_000;
const LATE_BOUND_MS = REQUEST_TIMEOUT_MS + LONG_POLL_MS + MARGIN_MS;

/** Where each client's requests went, and when they were sent (not how long they took). */
interface Sent {
  who: string;
  url: string;
  atMs: number;
}

function recordingFetch(who: string, sent: Sent[]): FetchPort {
  return (url, init) => {
    sent.push({ who, url, atMs: performance.now() });
    return fetch(url, init);
  };
}

/** A call's promise, with when it was made and when it settled (the client's answer, not the fetch's). */
interface TimedCall {
  who: string;
  boundMs: number;
  startMs: number;
  endMs?: number;
  error?: unknown;
  done: Promise<void>;
}

function timed(who: string, boundMs: number, call: () => Promise<unknown>): TimedCall {
  const record: TimedCall = { who, boundMs, startMs: performance.now(), done: Promise.resolve() };
  record.done = call().then(
    () => void (record.endMs = performance.now()),
    (error) => {
      record.endMs = performance.now();
      record.error = error;
    },
  );
  return record;
}

test("paused primary: the client's calls settle within their bounds, the holder keeps its lock through the takeover, the waiter is granted at the backup", { timeout: 90_000 }, async () => {
  const c = await startCluster([`longPollMaxMs = ${LONG_POLL_MS}`]);
  const sent: Sent[] = [];
  const servers = [c.urls.p1, c.urls.b1];
  const client = (who: string, failoverTimeoutMs?: number): LockClient =>
    connect({ servers, requestTimeoutMs: REQUEST_TIMEOUT_MS, failoverTimeoutMs, fetch: recordingFetch(who, sent) });
  try {
    const holder = await client("holder").lock("x", { ttlMs: TTL_MS });
    const waiterClient = client("waiter");
    const waiterSession = await waiterClient.openSession({ ttlMs: TTL_MS });
    const entered = waiterClient.enter("x", { session: waiterSession, waitMs: 60_000 });
    entered.catch(() => {}); // awaited at the end; a failure before that must not be unhandled
    await eventually("the waiter is queued", async () => (await status(c.urls.p1))?.locks.find((l) => l.name === "x")?.waiters.length === 1);

    const p1 = c.procs.get("p1")!;
    p1.kill("SIGSTOP");
    const pausedAtMs = performance.now();
    await eventually("b1 took over with the holder's lock", async () => {
      const s = await status(c.urls.b1);
      return s?.server?.serving === true && s.locks.find((l) => l.name === "x")?.holders[0]?.token === holder.token;
    }, 20_000);

    // Fresh clients, p1 first: each call's first try meets the paused p1.
    const lateStartMs = performance.now();
    const calls = [
      timed("late-open", REQUEST_TIMEOUT_MS + MARGIN_MS, () => client("late-open", LATE_FAILOVER_MS).openSession({ ttlMs: TTL_MS }).then((s) => s.close())),
      timed("late-enter", LATE_BOUND_MS, async () => {
        const answer = await client("late-enter", LATE_FAILOVER_MS).enter("z", { session: waiterSession, waitMs: LONG_POLL_MS });
        assert.equal(answer.granted, true, "the free lock z was granted at b1");
      }),
    ];
    // The pause outlasts twice every bound, from the pause (the keepalives and the waiter's
    // long-poll in flight) and from the fresh calls' start.
    await eventually(
      "p1 has been paused long enough",
      () => performance.now() - lateStartMs >= 2 * LATE_BOUND_MS && performance.now() - pausedAtMs >= 2 * LATE_BOUND_MS,
      4 * LATE_BOUND_MS + 20_000,
    );
    const resumedAtMs = performance.now();
    p1.kill("SIGCONT");
    await Promise.all(calls.map((call) => call.done));

    assert.ok(!holder.signal.aborted, "the holder kept its session alive at the backup: its lock was never lost");
    assert.ok(!waiterSession.lost, "the waiter kept its session alive too");

    for (const call of calls) {
      assert.equal(call.error, undefined, `${call.who} succeeded`);
      const tookMs = call.endMs! - call.startMs;
      assert.ok(call.endMs! < resumedAtMs && tookMs <= call.boundMs, `${call.who} took ${Math.round(tookMs)} ms, bound ${call.boundMs}`);
      const urls = sent.filter((s) => s.who === call.who).map((s) => new URL(s.url).origin);
      assert.equal(urls[0], c.urls.p1, `${call.who} first asked the paused p1`);
      assert.ok(urls.includes(c.urls.b1), `${call.who} then asked b1`);
    }
    assert.ok(
      sent.some((s) => s.who === "waiter" && s.url === `${c.urls.b1}/v1/enter` && s.atMs > pausedAtMs && s.atMs < resumedAtMs),
      "the waiter's enter went on at b1 during the pause",
    );

    await holder.release();
    const granted = await entered;
    assert.equal(granted.granted, true, "the waiter's enter was granted at the backup");
    assert.ok(granted.granted && granted.token > holder.token, "with a higher token");
    await waiterSession.close();
  } finally {
    await c.stopAll();
  }
});
