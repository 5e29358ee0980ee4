/**
 * The TypeScript client against a real lock server process: `await using` releases, the
 * handle's signal fires when the server expires the session, try-lock throws NotAcquiredError,
 * and the seed's enter/leave work on an explicit session.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect, NotAcquiredError } from "../lib/mod.ts";
import { freePort, type Proc, startMutexd, tempDir, waitForHttp, writeCluster } from "./_harness.ts";

async function withPrimary(body: (url: string) => Promise<void>): Promise<void> {
  const port = await freePort();
  const file = writeCluster(tempDir(), `[[nodes]]\nid = "p1"\nrole = "primary"\nhttp = "127.0.0.1:${port}"\n`);
  const proc: Proc = startMutexd(["node", "--config", file, "--id", "p1"]);
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitForHttp(`${url}/v1/health`);
    await body(url);
  } finally {
    proc.kill("SIGTERM");
    await proc.exited;
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
    const client = connect({ servers: url });
    const lock = await client.lock("lost", { ttlMs: 1_500 });
    assert.equal(lock.signal.aborted, false);
    // Another party ends the session (as an expiry would): the next keepalive learns it.
    const closed = await fetch(`${url}/v1/sessions/${lock.session.id}`, { method: "DELETE" });
    assert.equal(closed.status, 200);
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
    const granted = await client.enter("seed", { session: a.id });
    assert.ok(granted.granted);
    const taken = await client.enter("seed", { session: b.id, waitMs: 0 });
    assert.deepEqual(taken, { granted: false, name: "seed", position: 1 });
    const waiting = client.enter("seed", { session: b.id, waitMs: 10_000 });
    await client.leave("seed", { session: a.id, token: granted.token });
    const next = await waiting;
    assert.ok(next.granted && next.token > granted.token);
    await a.close();
    await b.close();
  });
});
