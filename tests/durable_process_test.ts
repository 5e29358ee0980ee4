/**
 * Real processes with `durable = true` (issue 11): every process of the lock service killed
 * with SIGKILL at once and restarted loses no lock (held locks keep their holder and token,
 * waiters their place, kept-alive sessions their locks, and the next token is higher), and a
 * lock server whose log cannot be written stops with exit 70 without answering the request
 * that needed the write. Each test stops its processes and removes its temp dir.
 */
import { test } from "node:test";
import { recordingSecrets } from "./_session.ts";
import assert from "node:assert/strict";
import { rmSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { connect, type Session } from "../lib/client/lock_client.ts";
import { FAIL_STOP_EXIT } from "../cluster/fail_stop.ts";
import { DEFAULT_SETTINGS as S } from "../lib/settings.ts";
import { eventually, freePort, removeDir, startMutexd, tempDir, waitForHttp, writeCluster } from "./_harness.ts";
import { startCluster, status } from "./_lock_cluster.ts";

/** Room for scheduling on two shared cores, added to the bound below. */
const SLACK_MS = 5_000;
/**
 * After the restart: the arbiter waits out the lease it may have granted (primaryLeaseMs), the
 * restarted backup takes part in no takeover for backupLeaseMs and hears nothing from a
 * primary for primarySilenceMs; a claim or two may be refused or time out.
 */
const SERVING_AGAIN_MS = S.primaryLeaseMs + S.backupLeaseMs + S.primarySilenceMs + 2 * S.peerTimeoutMs + SLACK_MS;

const HOLDERS = 300;
const HOLDER_BATCH = 25;
const WAITERS = 20;

test("durable: every process killed -9 and restarted: held locks keep holder and token, waiters stay queued, kept-alive sessions keep their locks, the next token is higher", { timeout: 90_000 }, async () => {
  const c = await startCluster([], { durable: true });
  const secrets = new Map<string, string>();
  const client = connect({ servers: [c.urls.p1, c.urls.b1], failoverTimeoutMs: SERVING_AGAIN_MS, fetch: recordingSecrets(secrets) });
  const sessions: Session[] = [];
  try {
    // Long TTLs: the clients' sessions must outlive the outage on their own clocks.
    const ttlMs = 60_000;
    const held = new Map<string, { session: string; token: number }>();
    // In parallel, a batch at a time: many changes gather into each fsync (group commit).
    for (let batch = 0; batch < HOLDERS; batch += HOLDER_BATCH) {
      await Promise.all(Array.from({ length: Math.min(HOLDER_BATCH, HOLDERS - batch) }, async (_, j) => {
        const name = `lock-${batch + j}`;
        const session = await client.openSession({ ttlMs });
        sessions.push(session);
        const result = await client.enter(name, { session, waitMs: 0 });
        assert.ok(result.granted, `${name} granted`);
        held.set(name, { session: session.id, token: result.token });
      }));
    }
    const waiting = new Map<string, string>();
    for (let i = 0; i < WAITERS; i++) {
      const session = await client.openSession({ ttlMs });
      sessions.push(session);
      // Queued behind the holder; the long-poll's failure when the servers die does not matter.
      client.enter(`lock-${i}`, { session, waitMs: ttlMs }).catch(() => {});
      waiting.set(`lock-${i}`, session.id);
    }
    await eventually("every waiter queued at the primary", async () => {
      const s = await status(c.urls.p1);
      return s?.locks.filter((l) => l.waiters.length > 0).length === WAITERS;
    });
    const before = await status(c.urls.p1);
    const lastToken = before!.lastToken;

    // Everything dies at once (a power cut), then comes back.
    for (const proc of c.procs.values()) proc.kill("SIGKILL");
    await Promise.all([...c.procs.values()].map((p) => p.exited));
    await c.start("a1");
    await c.start("p1");
    await c.start("b1");

    let serving = "";
    await eventually("a server serves again", async () => {
      for (const url of [c.urls.p1, c.urls.b1]) {
        if ((await status(url))?.server?.serving) serving = url;
      }
      return serving !== "";
    }, SERVING_AGAIN_MS);
    const after = (await status(serving))!;
    for (const [name, holder] of held) {
      const lock = after.locks.find((l) => l.name === name);
      assert.deepEqual(lock?.holders.map((h) => ({ session: h.session, token: h.token })), [holder], `${name} still held by the same session with its token`);
    }
    for (const [name, session] of waiting) {
      const lock = after.locks.find((l) => l.name === name);
      assert.deepEqual(lock?.waiters.map((w) => w.session), [session], `${name}'s waiter still queued`);
    }
    assert.ok(after.lastToken >= lastToken, `token counter ${after.lastToken} went back from ${lastToken}`);

    // The clients kept their sessions, secrets too (their hashes were on disk): a keepalive with
    // the secret succeeds and nothing was lost on their side.
    for (const session of sessions.slice(0, 5)) {
      const body = JSON.stringify({ sessionSecret: secrets.get(session.id) });
      const response = await fetch(`${serving}/v1/sessions/${encodeURIComponent(session.id)}/keepalive`, { method: "POST", body });
      assert.equal(response.status, 200, `keepalive of ${session.id} after the restart`);
      await response.body?.cancel();
    }
    assert.ok(sessions.every((s) => !s.lost), "no client saw its session lost");
    // A holder releases; its waiter gets the lock with a token above every earlier one.
    const first = sessions[0];
    await client.leave("lock-0", { session: first, token: held.get("lock-0")!.token });
    const newcomer = await client.openSession({ ttlMs });
    sessions.push(newcomer);
    const fresh = await client.enter("fresh-lock", { session: newcomer, waitMs: 0 });
    assert.ok(fresh.granted && fresh.token > lastToken, `new token ${fresh.granted && fresh.token} above ${lastToken}`);
  } finally {
    for (const session of sessions) session.close().catch(() => {});
    await c.stopAll();
  }
});

test("durable: a lock server whose log cannot be written (ENOSPC) stops with exit 70 and answers nothing", { timeout: 60_000 }, async () => {
  // A snapshot every 5 records: each opens the log file anew. Once the cluster runs, p1's log
  // file becomes /dev/full: the next snapshot opens it, and every write after fails with ENOSPC
  // (no mount, no privileges; a read-only dir would not do, the tests run as root).
  const c = await startCluster(["durableCompactEntries = 5"], { durable: true });
  try {
    const p1 = c.procs.get("p1")!;
    const log = join(c.dir, ".data", "p1", "lock-log.jsonl");
    rmSync(log);
    symlinkSync("/dev/full", log);
    // Changes straight to p1, no failover, so only p1 could answer them, until one is not.
    let answered = 0;
    let unanswered = "";
    for (let i = 0; i < 50 && unanswered === ""; i++) {
      let response: Response;
      try {
        response = await fetch(`${c.urls.p1}/v1/sessions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ ttlMs: 10_000 }),
          signal: AbortSignal.timeout(10_000),
        });
      } catch (error) {
        unanswered = (error as Error).name;
        break;
      }
      assert.equal(response.status, 201, await response.text());
      answered += 1;
    }
    assert.notEqual(unanswered, "", `p1 answered all ${answered} changes`);
    assert.equal(await p1.exited, FAIL_STOP_EXIT);
    assert.match(p1.stderr(), /"event":"failStop".*durable log write failed/);
    assert.ok(answered <= 10, `${answered} changes answered after the log broke (a snapshot comes every 5)`);
  } finally {
    await c.stopAll();
  }
});

test("durable: a single lock server (no backup, no arbiter) killed -9 and restarted serves its table again, holder and token kept", { timeout: 60_000 }, async () => {
  const dir = tempDir();
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const file = writeCluster(dir, `[cluster]\ndurable = true\n\n[[nodes]]\nid = "p1"\nrole = "primary"\nhttp = "127.0.0.1:${port}"\n`);
  let proc = startMutexd(["node", "--config", file, "--id", "p1"]);
  const client = connect({ servers: [url], failoverTimeoutMs: SERVING_AGAIN_MS });
  let session: Session | undefined;
  try {
    await waitForHttp(`${url}/v1/health`);
    session = await client.openSession({ ttlMs: 60_000 });
    const grant = await client.enter("solo", { session, waitMs: 0 });
    assert.ok(grant.granted);
    proc.kill("SIGKILL");
    await proc.exited;
    proc = startMutexd(["node", "--config", file, "--id", "p1"]);
    await waitForHttp(`${url}/v1/health`);
    const after = await status(url);
    const holder = after?.locks.find((l) => l.name === "solo")?.holders[0];
    assert.deepEqual([holder?.session, holder?.token], [session.id, grant.token], "the lock kept its holder and token");
    const next = await client.openSession({ ttlMs: 60_000 });
    const fresh = await client.enter("other", { session: next, waitMs: 0 });
    assert.ok(fresh.granted && fresh.token > grant.token, "the next token is higher");
    await next.close();
  } finally {
    await session?.close().catch(() => {});
    proc.kill("SIGKILL");
    await proc.exited;
    removeDir(dir);
  }
});
