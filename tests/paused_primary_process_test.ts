/**
 * Real processes: a primary paused (SIGSTOP) for far longer than any request timeout. Every
 * HTTP request the clients had sent to it, or send to it after, returns within its timeout
 * (requestTimeoutMs; an enter's long-poll time on top) plus a margin, instead of hanging for the
 * pause; the clients move to the backup that takes over, a holder that keeps its session alive
 * keeps its lock, and a waiter's enter goes on waiting there and is granted after the release.
 *
 * The margin (MARGIN_MS) covers timers firing late on a loaded machine; the pause lasts more
 * than twice the largest bound plus the margin, so a request that waited for the pause to end
 * fails the assertion whatever the machine's speed.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "../lib/client/lock_client.ts";
import type { FetchPort } from "../lib/client/http.ts";
import { eventually } from "./_harness.ts";
import { startCluster, status } from "./_lock_cluster.ts";

const REQUEST_TIMEOUT_MS = 1_000;
const LONG_POLL_MS = 2_000;
const TTL_MS = 3_000;
const MARGIN_MS = 1_000;
const PAUSE_MS = 2 * (REQUEST_TIMEOUT_MS + LONG_POLL_MS + MARGIN_MS);

interface Exchange {
  who: string;
  path: string;
  startMs: number;
  endMs?: number;
}

/** The real fetch, recording when each request started and when it settled (answer read or failed). */
function recordingFetch(who: string, exchanges: Exchange[]): FetchPort {
  return (url, init) => {
    const record: Exchange = { who, path: new URL(url).pathname, startMs: performance.now() };
    exchanges.push(record);
    const settle = () => (record.endMs = performance.now());
    return fetch(url, init).then(
      (response) => ({
        ok: response.ok,
        status: response.status,
        text: () => response.text().then((text) => (settle(), text), (error) => { settle(); throw error; }),
      }),
      (error) => {
        settle();
        throw error;
      },
    );
  };
}

test("paused primary: every request returns within its timeout, the holder keeps its lock through the takeover, the waiter is granted at the backup", { timeout: 90_000 }, async () => {
  const c = await startCluster([`longPollMaxMs = ${LONG_POLL_MS}`]);
  const exchanges: Exchange[] = [];
  const servers = [c.urls.p1, c.urls.b1];
  const client = (who: string) => connect({ servers, requestTimeoutMs: REQUEST_TIMEOUT_MS, fetch: recordingFetch(who, exchanges) });
  try {
    const holder = await client("holder").lock("x", { ttlMs: TTL_MS });
    const waiterClient = client("waiter");
    const waiterSession = await waiterClient.openSession({ ttlMs: TTL_MS });
    const entered = waiterClient.enter("x", { session: waiterSession.id, waitMs: 60_000 });
    await eventually("the waiter is queued", async () => (await status(c.urls.p1))?.locks.find((l) => l.name === "x")?.waiters.length === 1);

    const p1 = c.procs.get("p1")!;
    p1.kill("SIGSTOP");
    const pausedAtMs = performance.now();
    await eventually("b1 took over with the holder's lock", async () => {
      const s = await status(c.urls.b1);
      return s?.server?.serving === true && s.locks.find((l) => l.name === "x")?.holders[0]?.token === holder.token;
    }, 20_000);
    // The property is about a duration: a pause far longer than every request's bound.
    await eventually("p1 has been paused for PAUSE_MS", () => performance.now() - pausedAtMs >= PAUSE_MS, PAUSE_MS + 5_000);
    const resumedAtMs = performance.now();
    p1.kill("SIGCONT");

    assert.ok(!holder.signal.aborted, "the holder kept its session alive at the backup: its lock was never lost");
    await holder.release();
    const granted = await entered;
    assert.equal(granted.granted, true, "the waiter's enter went on at the backup and was granted");
    assert.ok(granted.granted && granted.token > holder.token, "with a higher token");
    await waiterSession.close();

    const during = exchanges.filter((e) => e.startMs < resumedAtMs);
    assert.ok(during.some((e) => e.startMs > pausedAtMs), "requests were sent during the pause");
    for (const e of during) {
      const boundMs = REQUEST_TIMEOUT_MS + (e.path === "/v1/enter" ? LONG_POLL_MS : 0) + MARGIN_MS;
      const tookMs = (e.endMs ?? performance.now()) - e.startMs;
      assert.ok(tookMs <= boundMs, `${e.who} ${e.path} sent at +${Math.round(e.startMs - pausedAtMs)} ms took ${Math.round(tookMs)} ms, bound ${boundMs}`);
    }
  } finally {
    await c.stopAll();
  }
});
