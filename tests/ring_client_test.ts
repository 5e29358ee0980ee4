/**
 * The ring client's lease (lib/client/ring_client.ts) against a scripted node (fetch stubbed, no
 * sockets): the lease is counted from the send time of the enter request whose answer carried
 * the grant, not from the first request of a long wait.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { connectRing } from "../lib/client/ring_client.ts";

const LEASE_MS = 300;
/** Each scripted "waiting" answer comes this late: longer than the lease. */
const POLL_MS = 400;

/** Replaces fetch while `body` runs: enter answers "waiting" `waitingRounds` times, then grants. */
async function withScriptedNode<T>(
  waitingRounds: number,
  body: (enterSentAt: number[], leaves: number[]) => Promise<T>,
): Promise<T> {
  const original = globalThis.fetch;
  const enterSentAt: number[] = [];
  const leaves: number[] = [];
  const json = (value: unknown) => new Response(JSON.stringify(value), { status: 200, headers: { "content-type": "application/json" } });
  globalThis.fetch = ((input: string | URL | Request, init?: RequestInit) => {
    const url = String(input);
    if (url.endsWith("/v1/ring/enter")) {
      enterSentAt.push(performance.now());
      if (enterSentAt.length <= waitingRounds) {
        return new Promise((resolve) => setTimeout(() => resolve(json({ granted: false, waiting: true, ticket: "t1", position: 1 })), POLL_MS));
      }
      return Promise.resolve(json({ granted: true, fence: 7, leaseMs: LEASE_MS, epoch: 1, ticket: "t1" }));
    }
    if (url.includes("/v1/ring/section/")) {
      // A watch long-poll: held until the client cancels it.
      return new Promise((_, reject) => init?.signal?.addEventListener("abort", () => reject(new Error("aborted")), { once: true }));
    }
    if (url.endsWith("/v1/ring/leave")) {
      leaves.push(performance.now());
      return Promise.resolve(json({ left: true, wasHolder: true }));
    }
    return Promise.resolve(new Response("{}", { status: 404 }));
  }) as typeof fetch;
  try {
    return await body(enterSentAt, leaves);
  } finally {
    globalThis.fetch = original;
  }
}

const LEASE_CASES = [
  { name: "granted on the first request", waitingRounds: 0 },
  { name: "granted on the third request, after two long-polls (each longer than the lease) ended 'waiting'", waitingRounds: 2 },
];

for (const c of LEASE_CASES) {
  test(`ring client lease: ${c.name}: counted from the send time of the request that got the grant`, async () => {
    await withScriptedNode(c.waitingRounds, async (enterSentAt) => {
      const ring = connectRing({ server: "http://ring.invalid" });
      const section = await ring.lock({ waitMs: 10_000, leaseMs: LEASE_MS });
      try {
        assert.equal(enterSentAt.length, c.waitingRounds + 1);
        const grantingSentAt = enterSentAt.at(-1)!;
        assert.ok(section.leaseEndsAtMs <= grantingSentAt + LEASE_MS, "never later than the node's lease end");
        assert.ok(section.leaseEndsAtMs > grantingSentAt + LEASE_MS - 50, `from the granting request: ends ${section.leaseEndsAtMs - grantingSentAt} ms after it`);
        assert.equal(section.lost, false, "the section is not over on arrival");
        assert.ok(section.remainingMs > LEASE_MS / 2, `remaining ${section.remainingMs} ms`);
      } finally {
        await section.release();
      }
    });
  });
}

test("ring client: a section lost by the client's own lease clock is still left at the node on release", async () => {
  await withScriptedNode(0, async (_enterSentAt, leaves) => {
    const ring = connectRing({ server: "http://ring.invalid" });
    const section = await ring.lock({ waitMs: 10_000, leaseMs: LEASE_MS });
    // Waits for the loss itself (the signal's abort), not for "long enough"; gives up at 10 leases.
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`not lost within ${10 * LEASE_MS} ms`)), 10 * LEASE_MS);
      const done = () => (clearTimeout(timer), resolve());
      if (section.lost) done();
      else section.signal.addEventListener("abort", done, { once: true });
    });
    assert.equal(section.lost, true, "the lease ended by the client's clock");
    assert.match((section.signal.reason as Error).message, /lost/);
    await section.release();
    assert.equal(leaves.length, 1, "the node is told, so the ring need not wait out the node's own lease");
  });
});
