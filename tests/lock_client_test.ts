/**
 * The TypeScript client against a real lock server process: `await using` releases, the
 * handle's signal fires when the server expires the session, try-lock throws NotAcquiredError,
 * and the seed's enter/leave work on an explicit session.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { inspect } from "node:util";
import { recordingSecrets } from "./_session.ts";
import { connect, NotAcquiredError } from "../lib/mod.ts";
import type { MutexdError } from "../lib/wire/errors.ts";
import { freePort, type Proc, removeDir, startMutexd, tempDir, waitForHttp, writeCluster } from "./_harness.ts";

async function withPrimary(body: (url: string) => Promise<void>): Promise<void> {
  const port = await freePort();
  const dir = tempDir();
  const file = writeCluster(dir, `[[nodes]]\nid = "p1"\nrole = "primary"\nhttp = "127.0.0.1:${port}"\n`);
  const proc: Proc = startMutexd(["node", "--config", file, "--id", "p1"]);
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitForHttp(`${url}/v1/health`);
    await body(url);
  } finally {
    proc.kill("SIGTERM");
    await proc.exited;
    removeDir(dir);
  }
}

async function holders(url: string, name: string): Promise<number> {
  const response = await fetch(`${url}/v1/locks/${name}`);
  if (response.status === 404) {
    await response.body?.cancel();
    return 0;
  }
  return (await response.json()).holders.length;
}

test("client: `await using` releases the lock at the end of the block; tokens rise", { timeout: 30_000 }, async () => {
  await withPrimary(async (url) => {
    const client = connect({ servers: url });
    let first: number;
    {
      await using lock = await client.lock("block", { ttlMs: 5_000 });
      first = lock.token;
      assert.equal(await holders(url, "block"), 1);
    }
    assert.equal(await holders(url, "block"), 0, "released by the block's end");
    const again = await client.lock("block", { ttlMs: 5_000 });
    assert.ok(again.token > first);
    await again.release();
  });
});

test("client: the handle's signal aborts when the server no longer has the session", { timeout: 30_000 }, async () => {
  await withPrimary(async (url) => {
    const secrets = new Map<string, string>();
    const client = connect({ servers: url, fetch: recordingSecrets(secrets) });
    const lock = await client.lock("lost", { ttlMs: 1_500 });
    const sessionSecret = secrets.get(lock.session.id);
    assert.equal(lock.signal.aborted, false);
    const close = (body: unknown) => fetch(`${url}/v1/sessions/${lock.session.id}`, { method: "DELETE", body: JSON.stringify(body) });
    // Without the secret nobody else can end it (issue 12)...
    assert.equal((await close({})).status, 403);
    // ...but with it the session ends behind the client's back (as an expiry would): the next keepalive learns it.
    assert.equal(typeof sessionSecret, "string");
    assert.ok(!inspect(lock, { depth: 6 }).includes(sessionSecret!), "the handle and its session do not show the secret");
    assert.equal((await close({ sessionSecret })).status, 200);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("signal did not fire")), 5_000);
      lock.signal.addEventListener("abort", () => {
        clearTimeout(timer);
        resolve();
      });
    });
    assert.match(String((lock.signal.reason as Error).message), /lost: the server expired the session/);
    await lock.release(); // harmless after a loss
  });
});

test("client: a try-lock on a taken lock throws NotAcquiredError and leaves no session behind", { timeout: 30_000 }, async () => {
  await withPrimary(async (url) => {
    const client = connect({ servers: url });
    const held = await client.lock("busy", { ttlMs: 5_000 });
    await assert.rejects(client.lock("busy", { waitMs: 0 }), (error) => error instanceof NotAcquiredError && error.code === "not_acquired");
    const status = await client.status();
    assert.equal(status.sessions.length, 1, "the failed try closed its own session");
    await held.release();
  });
});

test("client: enter and leave (the seed's mutex_enter and mutex_leave) on one session", { timeout: 30_000 }, async () => {
  await withPrimary(async (url) => {
    const client = connect({ servers: url });
    const a = await client.openSession({ ttlMs: 5_000 });
    const b = await client.openSession({ ttlMs: 5_000 });
    const granted = await client.enter("seed", { session: a });
    assert.ok(granted.granted);
    const taken = await client.enter("seed", { session: b, waitMs: 0 });
    assert.deepEqual(taken, { granted: false, name: "seed", position: 1 });
    // A session id alone (without its secret) acts on nothing.
    await assert.rejects(client.leave("seed", { session: a.id, token: granted.token }), (error) => (error as MutexdError).code === "forbidden");
    const waiting = client.enter("seed", { session: b, waitMs: 10_000 });
    await client.leave("seed", { session: a, token: granted.token });
    const next = await waiting;
    assert.ok(next.granted && next.token > granted.token);
    await a.close();
    await b.close();
  });
});

// ---- the client on hand-driven ports (ConnectOptions fetch, clock, timers): no server, no wall time

interface Call {
  url: string;
  method: string;
  body: Record<string, unknown> | undefined;
}

/**
 * An answer, or no answer: "hang" rejects when the client aborts (as a runtime's fetch should);
 * "deaf" never settles whatever the abort (a fetch port that ignores it); "deafBody" answers the
 * headers but its body's `text()` never settles (a server paused mid-answer).
 */
type Respond = (call: Call) => { status: number; body: unknown } | "hang" | "deaf" | "deafBody" | Promise<{ status: number; body: unknown }> | Response;

/**
 * A client whose fetch answers with `respond` (or hangs, see Respond), whose clock stands still
 * until `advance`, and whose timers run when `advance` passes them.
 */
function handDriven(servers: string[], respond: Respond, options: { requestTimeoutMs?: number; failoverTimeoutMs?: number } = {}) {
  let nowMs = 0;
  let idNext = 1;
  const timers: Array<{ atMs: number; fn: () => void; cancelled: boolean }> = [];
  const calls: Call[] = [];
  const client = connect({
    servers,
    requestTimeoutMs: options.requestTimeoutMs ?? 100,
    failoverTimeoutMs: options.failoverTimeoutMs ?? 1_000,
    clock: { nowMs: () => nowMs },
    timers: {
      setTimeout: (fn, ms) => {
        const timer = { atMs: nowMs + ms, fn, cancelled: false };
        timers.push(timer);
        return timer;
      },
      clearTimeout: (handle) => {
        if (handle) (handle as { cancelled: boolean }).cancelled = true;
      },
    },
    fetch: (url, init) => {
      const call = { url, method: init.method, body: init.body === undefined ? undefined : JSON.parse(init.body) };
      calls.push(call);
      const answer = respond(call);
      if (answer === "hang") return new Promise((_, reject) => init.signal.addEventListener("abort", () => reject(init.signal.reason)));
      if (answer === "deaf") return new Promise(() => {});
      if (answer === "deafBody") return Promise.resolve({ ok: true, status: 200, text: () => new Promise<string>(() => {}) });
      if (answer instanceof Response) return Promise.resolve(answer); // a stream (a watch)
      // An answer the test releases later (a request that was applied before another was sent).
      if (answer instanceof Promise) return answer.then((later) => new Response(JSON.stringify(later.body), { status: later.status }));
      return Promise.resolve(new Response(JSON.stringify(answer.body), { status: answer.status }));
    },
    newRequestId: () => `id-${idNext++}`,
  });
  /** Lets native promise continuations run (a bounded number of microtask turns, no wall time). */
  async function settle(): Promise<void> {
    for (let i = 0; i < 100; i++) await Promise.resolve();
  }
  /** Moves the clock by `ms`, running every timer due on the way, in order. */
  async function advance(ms: number): Promise<void> {
    const endMs = nowMs + ms;
    await settle();
    for (let i = 0; i < 10_000; i++) {
      const due = timers.filter((t) => !t.cancelled && t.atMs <= endMs).sort((a, b) => a.atMs - b.atMs)[0];
      if (!due) break;
      due.cancelled = true;
      nowMs = Math.max(nowMs, due.atMs);
      due.fn();
      await settle();
    }
    nowMs = endMs;
  }
  /** Moves the clock by `ms` without running a timer: the client's process was stalled. */
  const stall = (ms: number) => void (nowMs += ms);
  return { client, calls, advance, settle, stall, now: () => nowMs };
}

type Settled<T> = { ok: true; value: T } | { ok: false; error: MutexdError } | undefined;

/**
 * How a call's promise has settled so far (undefined while pending), without awaiting it: a call
 * that never settles must fail the test, not hang it.
 */
function watch<T>(call: Promise<T>): () => Settled<T> {
  let seen: Settled<T>;
  call.then((value) => (seen = { ok: true, value }), (error) => (seen = { ok: false, error }));
  return () => seen;
}

test("client ports: a leave retried after a timeout and a 'not primary' answer keeps its idempotency key and follows the hint", async () => {
  const { client, calls, advance } = handDriven(["http://a", "http://b"], (call) => {
    if (call.url.startsWith("http://b")) {
      return { status: 421, body: { error: { code: "not_primary", message: "backup", primaryUrl: "http://a" } } };
    }
    // a: the first attempt's answer is lost (the client times out), the second is answered.
    return calls.filter((c) => c.url.startsWith("http://a")).length === 1 ? "hang" : { status: 200, body: { left: true } };
  });
  let left = false;
  const leaving = client.leave("L", { session: "s1", token: 7 }).then(() => (left = true));
  await advance(99);
  assert.equal(calls.length, 1, "no retry before the request timeout");
  await advance(1); // timeout of a → b at once, which points back to a: a full round, so back off 25 ms
  assert.deepEqual(calls.map((c) => c.url), ["http://a/v1/leave", "http://b/v1/leave"]);
  await advance(25);
  await leaving;
  assert.ok(left);
  assert.deepEqual(calls.map((c) => c.url), ["http://a/v1/leave", "http://b/v1/leave", "http://a/v1/leave"]);
  assert.deepEqual(new Set(calls.map((c) => c.body?.requestId)), new Set(["id-1"]), "one key for every try");
  assert.ok(calls.every((c) => c.body?.token === 7 && c.body?.session === "s1"));
});

test("client ports: every round and retry of one enter call carries the same callId; the next call a new one (finding 12)", async () => {
  let enters = 0;
  const { client, calls, advance } = handDriven(["http://a"], (call) => {
    enters += 1;
    // The first try's answer is lost (a retry follows), the second long-polls, the third grants.
    if (enters === 1) return "hang";
    if (enters === 2) return { status: 200, body: { granted: false, waiting: true, name: "L", position: 1 } };
    return { status: 200, body: { granted: true, name: "L", session: call.body?.session, token: enters, mode: "exclusive" } };
  }, { failoverTimeoutMs: 5_000 });
  const first = client.enter("L", { session: "s1", waitMs: 1_000 });
  await advance(1_100); // the first try times out after requestTimeoutMs + the wait it asked
  await advance(25);
  assert.equal((await first).granted, true);
  assert.equal(calls.length, 3, "a lost answer, a long-poll round, the grant");
  const firstIds = new Set(calls.map((c) => c.body?.callId));
  assert.equal(firstIds.size, 1, `one callId for the call: ${[...firstIds].join(", ")}`);
  assert.equal(typeof [...firstIds][0], "string");
  await client.enter("L", { session: "s1", waitMs: 0 });
  assert.equal(calls.length, 4);
  assert.ok(!firstIds.has(calls[3].body?.callId), "a new call, a new callId");
});

test("client ports: the lease counts from the send time of the open; keepalives every TTL/3; lost one TTL after the last acknowledged one", async () => {
  let keepalivesAnswered = 1;
  const { client, calls, advance } = handDriven(["http://a"], (call) => {
    if (call.url.endsWith("/v1/sessions")) return { status: 201, body: { session: "s1", ttlMs: 300 } };
    // The first keepalive is answered, the rest are lost.
    if (call.url.endsWith("/keepalive")) return keepalivesAnswered-- > 0 ? { status: 200, body: { session: "s1", ttlMs: 300 } } : "hang";
    return { status: 200, body: {} };
  }, { requestTimeoutMs: 50, failoverTimeoutMs: 0 });
  const opening = client.openSession({ ttlMs: 300 });
  await advance(0);
  const session = await opening;
  assert.equal(session.leaseEndsAtMs, 300, "open sent at 0, TTL 300");
  await advance(100); // keepalive sent at 100, answered at once: lease to 400
  assert.equal(session.leaseEndsAtMs, 400);
  await advance(299); // keepalives at 200 and 300 are lost
  assert.equal(calls.filter((c) => c.url.endsWith("/keepalive")).length, 3);
  assert.equal(session.signal.aborted, false, "still inside the lease at 399");
  await advance(2);
  assert.equal(session.signal.aborted, true, "lost once the lease ran out");
  assert.match((session.signal.reason as Error).message, /no keepalive reached the server for a whole TTL/);
});

test("client ports: a keepalive answer that no longer lists a held lock aborts its handle's signal (a force-release); an answer without the list changes nothing", async () => {
  for (const listed of [true, false]) {
    let keepalives = 0;
    const { client, calls, advance } = handDriven(["http://a"], (call) => {
      if (call.url.endsWith("/v1/sessions")) return { status: 201, body: { session: "s1", ttlMs: 300 } };
      if (call.url.endsWith("/v1/enter")) return { status: 200, body: { granted: true, name: "L", session: "s1", token: 9, mode: "exclusive" } };
      // The first keepalive finds L held, the second finds it gone (an older server sends no list).
      if (call.url.endsWith("/keepalive")) return { status: 200, body: { session: "s1", ttlMs: 300, ...(listed ? { locks: keepalives++ === 0 ? ["L"] : [] } : {}) } };
      return { status: 200, body: {} };
    }, { requestTimeoutMs: 50, failoverTimeoutMs: 0 });
    const locking = client.lock("L", { ttlMs: 300 });
    await advance(0);
    const handle = await locking;
    await advance(100);
    assert.equal(handle.signal.aborted, false, "the first keepalive lists L");
    await advance(100);
    if (!listed) {
      assert.equal(handle.signal.aborted, false, "no list, no verdict");
      continue;
    }
    assert.equal(handle.signal.aborted, true, "the second keepalive no longer lists L");
    assert.match((handle.signal.reason as Error).message, /lock L lost: the server says session s1 no longer holds it/);
    const releasing = handle.release();
    await advance(0);
    await releasing;
    assert.equal(calls.filter((c) => c.url.endsWith("/v1/leave")).length, 0, "no leave of a lock that is gone; the session is closed");
    assert.equal(calls.at(-1)?.method, "DELETE");
  }
});

test("client ports: a keepalive sent before a grant and answered after it without the lock does not abort the fresh handle; the next one does", async () => {
  // The server applied the first keepalive before the enter (so it lists nothing), but its answer
  // reaches the client only after the grant's: it says nothing of the grant. The second keepalive,
  // sent after the grant was seen, answers without L: a real loss (a force-release).
  const later: Record<string, (answer: { status: number; body: unknown }) => void> = {};
  const deferred = (what: string) => new Promise<{ status: number; body: unknown }>((resolve) => (later[what] = resolve));
  let keepalives = 0;
  const { client, advance } = handDriven(["http://a"], (call) => {
    if (call.url.endsWith("/v1/sessions")) return { status: 201, body: { session: "s1", ttlMs: 300 } };
    if (call.url.endsWith("/v1/enter")) return deferred("enter");
    if (call.url.endsWith("/keepalive")) return ++keepalives === 1 ? deferred("keepalive") : { status: 200, body: { session: "s1", ttlMs: 300, locks: [] } };
    return { status: 200, body: {} };
  }, { requestTimeoutMs: 1_000, failoverTimeoutMs: 0 });
  const locking = client.lock("L", { ttlMs: 300, waitMs: 1_000 });
  await advance(150); // the enter waits; the first keepalive is sent at 100 and not yet answered
  assert.equal(keepalives, 1);
  later.enter({ status: 200, body: { granted: true, name: "L", session: "s1", token: 9, mode: "exclusive" } });
  await advance(0);
  const handle = await locking;
  later.keepalive({ status: 200, body: { session: "s1", ttlMs: 300, locks: [] } });
  await advance(0);
  assert.equal(handle.signal.aborted, false, "an answer to a keepalive sent before the grant says nothing of it");
  await advance(50); // the second keepalive, sent at 200 after the grant: L is gone
  assert.equal(keepalives, 2);
  assert.equal(handle.signal.aborted, true, "a keepalive sent after the grant that does not list L: lost");
});

// ---- issue 11's client fixes against a paused server: each test fails with its fix reverted

test("client ports: a request ends at its timeout even when the fetch port ignores the abort, or the answer's body never arrives", async () => {
  for (const silence of ["deaf", "deafBody"] as const) {
    const { client, calls, advance } = handDriven(["http://a"], () => silence, { requestTimeoutMs: 100, failoverTimeoutMs: 0 });
    const leaving = watch(client.leave("L", { session: "s1", token: 7 }));
    await advance(99);
    assert.equal(leaving(), undefined, `${silence}: still waiting before the timeout`);
    await advance(1);
    assert.equal(calls.length, 1);
    assert.equal(leaving()?.ok, false, `${silence}: the call ended at requestTimeoutMs, not when the runtime gave up`);
    assert.equal((leaving() as { error?: MutexdError })?.error?.code, "unreachable");
  }
});

test("client ports: an enter whose try at a paused primary outlasts the failover window still asks the backup", async () => {
  const { client, calls, advance } = handDriven(["http://a", "http://b"], (call) => {
    if (call.url.startsWith("http://a")) return "hang";
    return { status: 200, body: { granted: true, name: "L", session: "s1", token: 9, mode: "exclusive" } };
  }, { requestTimeoutMs: 100, failoverTimeoutMs: 500 });
  // The try at a waits requestTimeoutMs plus the 1,000 ms it asked for: past the 500 ms window.
  const entering = watch(client.enter("L", { session: "s1", waitMs: 1_000 }));
  await advance(1_099);
  assert.deepEqual(calls.map((c) => c.url), ["http://a/v1/enter"]);
  await advance(1);
  assert.deepEqual(calls.map((c) => c.url), ["http://a/v1/enter", "http://b/v1/enter"], "b was asked after the window ran out");
  assert.deepEqual(entering(), { ok: true, value: { granted: true, name: "L", session: "s1", token: 9, mode: "exclusive" } });
});

test("client ports: a late failure at a server another request has already left does not move the client back to it", async () => {
  const { client, calls, advance } = handDriven(["http://a", "http://b"], (call) => {
    if (call.url.startsWith("http://a")) return "hang"; // a is paused
    if (call.url.endsWith("/v1/enter")) return { status: 200, body: { granted: true, name: "L", session: "s1", token: 9, mode: "exclusive" } };
    return { status: 200, body: { left: true } };
  }, { requestTimeoutMs: 100, failoverTimeoutMs: 5_000 });
  // Both go to a: the leave gives up after 100 ms and moves the client to b, where it is
  // answered; the long-poll enter gives up at a only after 1,100 ms.
  const entering = watch(client.enter("L", { session: "s1", waitMs: 1_000 }));
  const leaving = watch(client.leave("M", { session: "s1", token: 3 }));
  await advance(100);
  assert.equal(leaving()?.ok, true);
  assert.equal(client.server, "http://b");
  await advance(1_000); // the enter's late failure at a
  assert.equal(client.server, "http://b", "still at b after the enter's failure at a");
  assert.equal(entering()?.ok, true, "the enter's retry went to b at once");
  await client.leave("L", { session: "s1", token: 9 });
  assert.deepEqual(calls.map((c) => c.url), [
    "http://a/v1/enter",
    "http://a/v1/leave",
    "http://b/v1/leave",
    "http://b/v1/enter",
    "http://b/v1/leave",
  ]);
});

test("client ports: a keepalive at a paused primary gives up after TTL/3 when requestTimeoutMs is longer, so the session lives on at the backup", async () => {
  let paused = false;
  const { client, calls, advance } = handDriven(["http://a", "http://b"], (call) => {
    if (call.url.startsWith("http://a") && paused) return "hang";
    if (call.url.endsWith("/v1/sessions")) return { status: 201, body: { session: "s1", ttlMs: 300 } };
    return { status: 200, body: { session: "s1", ttlMs: 300 } };
  }, { requestTimeoutMs: 250, failoverTimeoutMs: 1_000 });
  const opening = client.openSession({ ttlMs: 300 });
  await advance(0);
  const session = await opening;
  assert.equal(session.leaseEndsAtMs, 300);
  paused = true;
  await advance(100); // the first keepalive goes to a, which is paused
  await advance(100); // it gives up at TTL/3 = 100 ms (not 250) and b acknowledges it
  assert.ok(calls.some((c) => c.url === "http://b/v1/sessions/s1/keepalive"), "a keepalive reached b by 200 ms");
  assert.equal(session.leaseEndsAtMs, 400, "the lease runs from the acknowledged keepalive's send time (100 ms)");
  await advance(1_000);
  assert.equal(session.signal.aborted, false, "the session was never lost: every keepalive since went to b");
  assert.ok(session.leaseEndsAtMs >= 1_000);
  await session.close();
});

test("client ports: a grant that arrives after the session's lease ran out is reported lost, not returned as a hold (chaos seed 251)", async () => {
  // The open is answered at once (lease to 300). The enter's grant arrives after a stall of
  // 350 ms in which no timer ran (the lease timer is overdue): the client must not hand out a
  // hold its lease no longer covers, while another client may already be granted.
  const stalled = { ms: 0 };
  const { client, advance, stall } = handDriven(["http://a"], (call) => {
    if (call.url.endsWith("/v1/sessions")) return { status: 201, body: { session: "s1", ttlMs: 300 } };
    if (call.url.endsWith("/v1/enter")) {
      stall(stalled.ms);
      return { status: 200, body: { granted: true, name: "L", session: "s1", token: 9, mode: "exclusive" } };
    }
    return { status: 200, body: {} };
  }, { requestTimeoutMs: 1_000, failoverTimeoutMs: 0 });
  stalled.ms = 350;
  const late = watch(client.lock("L", { ttlMs: 300 }));
  await advance(0);
  const outcome = late();
  assert.equal(outcome?.ok, false, "a grant past the lease is no hold");
  assert.equal((outcome as { error: MutexdError }).error.code, "lock_lost");
  stalled.ms = 0;
  const inTime = watch(client.lock("L", { ttlMs: 300 }));
  await advance(0);
  assert.equal(inTime()?.ok, true, "the same grant inside the lease is a hold");
});

// ---- "not primary" naming the server itself (a lease that lapsed for a moment): each test fails
// with the client moving on at once (Failover.requestThen before the self retry)

/** A "not primary" answer of `server`, naming `primaryUrl` (or nobody). */
function notPrimary(server: string, primaryUrl: string | null) {
  return { status: 421, body: { error: { code: "not_primary", message: `${server} does not serve`, primary: primaryUrl, ...(primaryUrl ? { primaryUrl } : {}) } } };
}

/**
 * Server a refuses its first leave naming itself (its lease lapsed for a moment), then serves;
 * each of its answers waits until the test calls `release` (oldest first). `other` answers a call
 * first when it returns an answer. b is paused.
 */
function lapsedOnce(other: (call: Call) => ReturnType<Respond> | undefined = () => undefined) {
  let lapsed = true;
  const held: Array<() => void> = [];
  const respond: Respond = (call) => {
    if (call.url.startsWith("http://b")) return "hang";
    const first = other(call);
    if (first !== undefined) return first;
    const answer = lapsed ? notPrimary("a", "http://a") : { status: 200, body: { left: true } };
    lapsed = false;
    return new Promise((resolve) => held.push(() => resolve(answer)));
  };
  return { respond, release: () => held.shift()!() };
}

test("client ports: a 'not primary' naming the server itself is asked again after a short backoff, not the paused other server", async () => {
  let lapsed = true;
  const { client, calls, advance } = handDriven(["http://a", "http://b"], (call) => {
    if (call.url.startsWith("http://b")) return "hang"; // b is paused
    // a's lease lapsed for a moment: the first try is refused naming a, the retry is served.
    if (lapsed) return (lapsed = false), notPrimary("a", "http://a");
    return { status: 200, body: { left: true } };
  }, { requestTimeoutMs: 100, failoverTimeoutMs: 1_000 });
  const leaving = watch(client.leave("L", { session: "s1", token: 7 }));
  await advance(24);
  assert.deepEqual(calls.map((c) => c.url), ["http://a/v1/leave"], "no retry before the backoff, and not at b");
  await advance(1);
  assert.deepEqual(leaving(), { ok: true, value: undefined }, "served by a's retry 25 ms later");
  assert.deepEqual(calls.map((c) => c.url), ["http://a/v1/leave", "http://a/v1/leave"]);
  assert.equal(client.server, "http://a");
});

test("client ports: the self retry waits twice the refused try's round trip (the primary's renewal is one of its round trips away)", async () => {
  const a = lapsedOnce();
  const { client, calls, advance } = handDriven(["http://a", "http://b"], a.respond, { requestTimeoutMs: 500, failoverTimeoutMs: 2_000 });
  const leaving = watch(client.leave("L", { session: "s1", token: 7 }));
  await advance(40); // each answer 40 ms on the way
  a.release();
  await advance(79);
  assert.equal(calls.length, 1, "not asked again before 2 × 40 ms");
  await advance(1);
  assert.deepEqual(calls.map((c) => c.url), ["http://a/v1/leave", "http://a/v1/leave"]);
  a.release();
  await advance(0);
  assert.deepEqual(leaving(), { ok: true, value: undefined });
});

test("client ports: the self retry waits at most 100 ms (a try that waited at a paused server says nothing of the network), and a served retry points the client back at that server", async () => {
  // Another call's answer of a names b (as at a step-down): the client moves there at once.
  const a = lapsedOnce((call) => call.url.endsWith("/v1/enter") ? notPrimary("a", "http://b") : undefined);
  const { client, calls, advance } = handDriven(["http://a", "http://b"], a.respond, { requestTimeoutMs: 500, failoverTimeoutMs: 2_000 });
  const leaving = watch(client.leave("L", { session: "s1", token: 7 }));
  // a was paused: its refusal comes 300 ms after the send.
  await advance(300);
  a.release();
  await advance(0);
  // Meanwhile another call is refused by a naming b, which moves the client to b.
  const entering = watch(client.enter("M", { session: "s1", waitMs: 0 }));
  await advance(99);
  assert.equal(calls.filter((c) => c.url === "http://a/v1/leave").length, 1, "not asked again before 100 ms");
  assert.equal(client.server, "http://b", "the enter's refusal moved the client on");
  await advance(1);
  assert.equal(calls.filter((c) => c.url === "http://a/v1/leave").length, 2, "the retry goes to a, which named itself, 100 ms later");
  a.release();
  await advance(0);
  assert.deepEqual(leaving(), { ok: true, value: undefined });
  assert.equal(client.server, "http://a", "a served the retry: the next call goes there");
  void entering;
});

test("client ports: a cut-off primary that keeps naming itself costs one backoff: the second refusal moves the client to the new primary", async () => {
  const { client, calls, advance } = handDriven(["http://a", "http://b"], (call) => {
    // a was cut off and b took over; a has not heard and names itself.
    if (call.url.startsWith("http://a")) return notPrimary("a", "http://a");
    return { status: 200, body: { left: true } };
  }, { requestTimeoutMs: 100, failoverTimeoutMs: 1_000 });
  const leaving = watch(client.leave("L", { session: "s1", token: 7 }));
  await advance(25);
  assert.deepEqual(leaving(), { ok: true, value: undefined }, "served by b at 25 ms");
  assert.deepEqual(calls.map((c) => c.url), ["http://a/v1/leave", "http://a/v1/leave", "http://b/v1/leave"]);
  assert.equal(client.server, "http://b");
  // The next call goes to b at once; a later refusal of a naming itself retries it once, per call.
  await client.leave("M", { session: "s1", token: 8 });
  assert.equal(calls.at(-1)?.url, "http://b/v1/leave");
});

test("client ports: a 'not primary' naming the server itself after the failover window is still asked again once (a keepalive whose window a paused server used up; simulator seed 350876221)", async () => {
  const a = lapsedOnce();
  const { client, calls, advance } = handDriven(["http://a", "http://b"], a.respond, { requestTimeoutMs: 2_000, failoverTimeoutMs: 1_000 });
  const leaving = watch(client.leave("L", { session: "s1", token: 7 }));
  // a was paused past the window: its refusal naming itself comes 1,200 ms after the send.
  await advance(1_200);
  a.release();
  await advance(100);
  assert.deepEqual(calls.map((c) => c.url), ["http://a/v1/leave", "http://a/v1/leave"], "a asked again 100 ms later, not b");
  a.release();
  await advance(0);
  assert.deepEqual(leaving(), { ok: true, value: undefined }, "served by a's retry");
});

test("client ports: a 'not primary' naming the other server, or no one, moves on at once", async () => {
  for (const hint of ["http://b", null]) {
    const { client, calls, advance } = handDriven(["http://a", "http://b"], (call) => {
      if (call.url.startsWith("http://a")) return notPrimary("a", hint);
      return { status: 200, body: { left: true } };
    }, { requestTimeoutMs: 100, failoverTimeoutMs: 1_000 });
    const leaving = watch(client.leave("L", { session: "s1", token: 7 }));
    await advance(0);
    assert.deepEqual(leaving(), { ok: true, value: undefined }, `hint ${hint}: served by b without a wait`);
    assert.deepEqual(calls.map((c) => c.url), ["http://a/v1/leave", "http://b/v1/leave"]);
  }
});

test("client ports: a keepalive refused by the primary naming itself is acknowledged by its retry; the paused backup costs the period nothing", async () => {
  let lapses = 0;
  const { client, calls, advance } = handDriven(["http://a", "http://b"], (call) => {
    if (call.url.startsWith("http://b")) return "hang"; // b is paused
    if (call.url.endsWith("/v1/sessions")) return { status: 201, body: { session: "s1", ttlMs: 300 } };
    // The first keepalive arrives while a's lease has lapsed for a moment.
    if (call.url.endsWith("/keepalive") && lapses++ === 0) return notPrimary("a", "http://a");
    return { status: 200, body: { session: "s1", ttlMs: 300 } };
  }, { requestTimeoutMs: 250, failoverTimeoutMs: 1_000 });
  const opening = client.openSession({ ttlMs: 300 });
  await advance(0);
  const session = await opening;
  await advance(125); // the keepalive at 100 ms, refused; its retry at 125 ms
  assert.equal(session.leaseEndsAtMs, 400, "acknowledged within its period: the lease runs from its send time (100 ms)");
  assert.ok(!calls.some((c) => c.url.startsWith("http://b")), "the paused backup was never asked");
  await advance(1_000);
  assert.equal(session.signal.aborted, false);
  assert.ok(session.leaseEndsAtMs >= 1_300);
  await session.close();
});

test("client ports: a watch refused by the primary naming itself opens there after the backoff, not at the paused backup", async () => {
  let lapsed = true;
  const { client, calls, advance, now } = handDriven(["http://a", "http://b"], (call) => {
    if (call.url.startsWith("http://b")) return "hang"; // b is paused
    if (lapsed) return (lapsed = false), notPrimary("a", "http://a");
    const snapshot = { name: "L", holders: [], waiters: [], lockDelayRemainingMs: 0 };
    return new Response(`event: snapshot\ndata: ${JSON.stringify(snapshot)}\n\n`, { status: 200, headers: { "content-type": "text/event-stream" } });
  }, { requestTimeoutMs: 100, failoverTimeoutMs: 1_000 });
  const stop = new AbortController();
  const events = client.watch("L", { signal: stop.signal });
  const first = watch(events.next());
  await advance(25);
  const seen = first();
  assert.equal(seen?.ok, true, `a snapshot by 25 ms (now ${now()} ms)`);
  const event = (seen as { value: IteratorResult<{ type: string; server: string }> }).value.value;
  assert.deepEqual([event?.type, event?.server], ["snapshot", "http://a"]);
  assert.deepEqual(calls.map((c) => c.url), ["http://a/v1/locks/L/watch", "http://a/v1/locks/L/watch"], "b was never asked");
  stop.abort();
  await events.return(undefined);
});
