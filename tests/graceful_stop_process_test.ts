/**
 * Real processes: SIGTERM stops a node at once, whatever its clients have open. The servers run
 * with longPollMaxMs at its maximum (60 s) and keep idle connections for minutes (Bun's
 * idleTimeout is 255 s), so a node that exits well inside those bounds cannot have waited for
 * its long-poll or its idle keep-alive connection: the bounds below are far below both, and no
 * assertion depends on the machine's speed. A stopping primary answers its long-poll with
 * "not primary" (the client asks the other server), and its log says it stopped by itself, not
 * by the stopGraceMs bound.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect as connectTcp, type Socket } from "node:net";
import { ERROR_STATUS } from "../lib/wire/errors.ts";
import { eventually, type Proc } from "./_harness.ts";
import { type Cluster, startCluster, status } from "./_lock_cluster.ts";
import { startRing } from "./_ring_cluster.ts";
import { stopWithin } from "../cluster/running_node.ts";

const LONG_POLL_MS = 60_000;
/** Far below LONG_POLL_MS and any idle timeout: an exit within it waited for neither. */
const EXIT_BOUND_MS = 20_000;

/** A raw HTTP/1.1 connection that asked one question, got its answer and stays open, idle. */
async function idleKeepAlive(url: string): Promise<{ socket: Socket; closed: Promise<void> }> {
  const { hostname, port } = new URL(url);
  const socket = connectTcp(Number(port), hostname);
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  socket.on("error", () => {}); // a reset on close is a close too
  let received = "";
  const answered = new Promise<void>((resolve) => {
    socket.on("data", (chunk) => {
      received += chunk;
      if (/\r\n\r\n[\s\S]*"ok":true/.test(received)) resolve();
    });
  });
  socket.write(`GET /v1/health HTTP/1.1\r\nHost: ${hostname}:${port}\r\nConnection: keep-alive\r\n\r\n`);
  await answered;
  assert.doesNotMatch(received, /connection: close/i, "the server keeps the connection open");
  return { socket, closed };
}

function within<T>(what: string, promise: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const bound = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)));
  return Promise.race([promise, bound]).finally(() => clearTimeout(timer));
}

async function post(url: string, path: string, body: unknown): Promise<Response> {
  return await fetch(url + path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
}

/** SIGTERM to `id`; resolves once it exited (0, by itself: the log says "stopped"). */
async function stopsAtOnce(c: Cluster, id: "p1" | "b1" | "a1"): Promise<void> {
  const idle = await idleKeepAlive(c.urls[id]);
  const proc: Proc = c.procs.get(id)!;
  proc.kill("SIGTERM");
  assert.equal(await within(`${id} exits`, proc.exited, EXIT_BOUND_MS), 0, proc.stderr());
  await within(`${id}'s idle connection is closed`, idle.closed, EXIT_BOUND_MS);
  assert.match(proc.stderr(), /"event":"stopped"/, `${id} stopped by itself`);
  assert.doesNotMatch(proc.stderr(), /stopForced/, `${id} did not need the stopGraceMs bound`);
}

test("graceful stop: SIGTERM ends a primary's open long-poll with not_primary and closes an idle keep-alive connection; backup and arbiter stop at once too", { timeout: 90_000 }, async () => {
  const c = await startCluster([`longPollMaxMs = ${LONG_POLL_MS}`, "sessionTtlMs = 30000"]);
  try {
    const holder = await (await post(c.urls.p1, "/v1/sessions", {})).json();
    const waiter = await (await post(c.urls.p1, "/v1/sessions", {})).json();
    const granted = await (await post(c.urls.p1, "/v1/enter", { name: "held", session: holder.session, sessionSecret: holder.sessionSecret })).json();
    assert.equal(granted.granted, true);
    const poll = post(c.urls.p1, "/v1/enter", { name: "held", session: waiter.session, sessionSecret: waiter.sessionSecret, waitMs: 50_000 });
    await eventually("the waiter's enter is queued (its long-poll open)", async () =>
      (await status(c.urls.p1))?.locks.find((l) => l.name === "held")?.waiters.length === 1);

    await stopsAtOnce(c, "p1");
    const answer = await within("the long-poll is answered", poll, EXIT_BOUND_MS);
    assert.equal(answer.status, ERROR_STATUS.not_primary, "the client is told to ask the other server");
    const body = await answer.json();
    assert.equal(body.error.code, "not_primary");
    assert.match(body.error.message, /p1 is stopping/);

    // The backup takes over with the replicated table: the wait the client now asks for there
    // finds the holder still holding (nothing was lost or half-applied by the stop).
    await eventually("b1 took over", async () => (await status(c.urls.b1))?.server?.serving === true, 20_000);
    const table = await status(c.urls.b1);
    assert.equal(table?.locks.find((l) => l.name === "held")?.holders[0]?.session, holder.session);
    await stopsAtOnce(c, "b1");
    await stopsAtOnce(c, "a1");
  } finally {
    await c.stopAll();
  }
});

test("graceful stop: SIGTERM ends a ring node's open long-poll (an enter waiting behind a section) with an error answer, and it exits by itself", { timeout: 90_000 }, async () => {
  const ring = await startRing({ size: 3, settings: [`longPollMaxMs = ${LONG_POLL_MS}`] });
  try {
    const holding = await ring.client("r1").enter({ waitMs: 10_000, leaseMs: 3_000 });
    assert.equal(holding.granted, true);
    const poll = post(ring.urls[0], "/v1/ring/enter", { waitMs: 50_000 });
    // A second enter at r1 waits behind the held section; its long-poll is open once it is queued.
    await eventually("the second enter waits at r1", async () => ((await ring.statuses(["r1"]))[0] as { waiters?: number } | undefined)?.waiters === 1);
    const idle = await idleKeepAlive(ring.urls[0]);
    const r1 = ring.procs.get("r1")!;
    r1.kill("SIGTERM");
    assert.equal(await within("r1 exits", r1.exited, EXIT_BOUND_MS), 0, r1.stderr());
    await within("r1's idle connection is closed", idle.closed, EXIT_BOUND_MS);
    const answer = await within("the long-poll is answered", poll, EXIT_BOUND_MS);
    assert.ok(answer.status >= 400, `an error answer the client retries on (status ${answer.status})`);
    assert.match(r1.stderr(), /"event":"stopped"/);
    assert.doesNotMatch(r1.stderr(), /stopForced/);
  } finally {
    await ring.remove();
  }
});

test("graceful stop: a stop that never finishes is cut off after the grace (stopForced); one that finishes is \"stopped\"", async () => {
  assert.equal(await stopWithin(() => new Promise<void>(() => {}), 20), "stopForced");
  assert.equal(await stopWithin(() => Promise.resolve(), 60_000), "stopped", "and its grace timer does not hold the test");
});
