/**
 * Issue 12, red-team review: attacks on the merged security work that its own tests did not try,
 * each written so that it FAILS on the code before its fix (the comment says what happened
 * there). docs/security.md "Attacks and their tests" lists these and the attacks that held.
 *
 * 1. A request whose body never completes (the client resets its connection mid-body, or sends
 *    fewer bytes than its Content-Length and closes): the body stream's error was no refusal,
 *    so it reached the app's onInternalError and `mutexd node` exited 70 (fail-stop). Anyone
 *    who can open a TCP connection to a node stopped it: the peer routes read the body before
 *    their MAC is checked, and the client routes read it before their permission check.
 * 2. Client tokens without a cluster secret: the bearer middleware lets the peer routes through
 *    (the secret's MAC guards them), so without a secret a caller with no token at all could
 *    forge peer messages and read every ring value (GET /v1/ring/peer/log), past every token's
 *    permissions. `mutexd node` now refuses such a cluster file (exit 2).
 * 3. A log flood past SecurityLog's rate limit: a refused peer request was logged under the
 *    sender id its header claimed, which is the forger's to choose: a new id on every request
 *    made every forged request a log line. Unproven senders are now one sender, "unauthenticated".
 * 4. A captured challenge answer replayed to a restarted sender: every sender process began with
 *    the nonce "" and seq 1, so its first request (same body) had the same MAC as an earlier
 *    process's, and the answer to that one verified. It carried the nonce the old process then
 *    used, whose window had seen the new process's seqs: every request of the restarted sender
 *    refused as a replay (a lasting partition of the pair from one injected answer, by an
 *    attacker on the path). A sender now starts with a nonce of its own.
 * 5. Section watches without a bound: `GET /v1/ring/section/:fence` long-polls (a timer and a
 *    callback each) were kept without limit, and after their client had left, until waitMs. Now
 *    at most ringWaitersMax wait, and one ends when its client leaves.
 * 6. (todo) Memory before authentication: the peer middleware reads a request's whole body before
 *    it can check the MAC (the MAC covers the body), up to the route's limit: 16 MiB on a lock
 *    server (peerBodyBytesMax), ~4.6 MB on a ring node. Any outsider can make a node hold that
 *    per connection, with no bound on connections.
 * 7. (todo) Idle connections past the process's file limit: nothing bounds the connections a
 *    node accepts (Deno has no idle timeout; Bun's is 255 s, for the long-polls). Past the limit
 *    Deno's server rejects (EMFILE, an unhandled rejection: exit 70; without the fail-stop it
 *    would accept nothing more), and under Bun the arbiter's next record write fails (exit 70).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { Hono } from "hono";
import { manualClock } from "../cluster/clock.ts";
import { installErrorHandlers, readBodyBytes } from "../cluster/http_util.ts";
import { memoryLogger } from "../cluster/log.ts";
import { peerAuthMiddleware } from "../cluster/peer_auth.ts";
import { PEER_HEADER } from "../cluster/peer_head.ts";
import { peerKey } from "../cluster/peer_mac.ts";
import { PeerSigner } from "../cluster/peer_signer.ts";
import { PeerVerifier, UNAUTHENTICATED_SENDER } from "../cluster/peer_verifier.ts";
import { SecurityLog } from "../cluster/security_log.ts";
import { createLockApp } from "../cluster/lock/api.ts";
import { createRingApp } from "../cluster/ring/api.ts";
import { FUZZ_RING_SETTINGS, ringNode, withSection } from "./_ring_app.ts";
import { FUZZ_LOCK_SETTINGS } from "./_fuzz_apps.ts";
import { soloLockService } from "./_lock_service.ts";
import { realTimers } from "../cluster/timers.ts";
import { startCluster, status } from "./_lock_cluster.ts";
import { eventually, freePort, removeDir, startMutexd, tempDir, waitForHttp, writeCluster } from "./_harness.ts";

/** A request body that sends `{"a":` and then fails, as a reset connection does in both runtimes. */
function brokenBody(): ReadableStream<Uint8Array> {
  let sent = false;
  return new ReadableStream({
    pull(controller) {
      if (sent) return controller.error(new Error("connection reset by peer"));
      sent = true;
      controller.enqueue(new TextEncoder().encode('{"a":'));
    },
  });
}

function postBroken(app: { request(path: string, init: RequestInit): Response | Promise<Response> }, path: string): Promise<Response> {
  return Promise.resolve(app.request(path, { method: "POST", headers: { "content-type": "application/json" }, body: brokenBody(), duplex: "half" } as RequestInit));
}

// Before the fix: 500 internal, and onInternalError (in `mutexd node`: exit 70) was called.
test("a body that breaks off mid-stream is a 400 refusal, never an internal error (lock API, a MAC-guarded peer route, a ring node)", async () => {
  const internal: Error[] = [];
  const onInternal = (error: Error) => void internal.push(error);

  // The lock server's client route (the body is read before any permission check).
  const service = soloLockService(FUZZ_LOCK_SETTINGS, realTimers, manualClock(1_000));
  const lockApp = createLockApp(service, { nodeId: "p1", role: "primary", settings: FUZZ_LOCK_SETTINGS, onInternalError: onInternal });
  const before = JSON.stringify(service.view());
  const answer = await postBroken(lockApp, "/v1/sessions");
  assert.equal(answer.status, 400);
  assert.equal(((await answer.json()) as { error: { code: string } }).error.code, "bad_request");
  assert.equal(JSON.stringify(service.view()), before, "nothing changed");

  // A peer route: the MAC middleware reads the body before it can check anything.
  const security = new SecurityLog(manualClock(0), memoryLogger(), 10_000);
  const peerApp = new Hono();
  installErrorHandlers(peerApp, onInternal);
  peerApp.use("/v1/peer", peerAuthMiddleware(new PeerVerifier(await peerKey("redteam-secret-0123456789abcdef0123"), "b1", () => true), security, (c) => readBodyBytes(c, 65_536)));
  peerApp.post("/v1/peer", (c) => c.json({ reached: true }));
  const peerAnswer = await postBroken(peerApp, "/v1/peer");
  assert.equal(peerAnswer.status, 400);
  assert.equal(((await peerAnswer.json()) as { error: { code: string } }).error.code, "bad_request");

  // A ring node's client route (its peer routes read bodies the same way, readBodyBytes).
  const dirs: string[] = [];
  const ring = ringNode(dirs);
  try {
    const ringApp = createRingApp(ring.service, { nodeId: "b", settings: ring.settings, onInternalError: onInternal });
    const ringBefore = ring.state();
    const ringAnswer = await postBroken(ringApp, "/v1/ring/enter");
    assert.equal(ringAnswer.status, 400);
    assert.equal(ring.state(), ringBefore, "nothing changed");
  } finally {
    ring.close();
    for (const dir of dirs) removeDir(dir);
  }

  assert.deepEqual(internal.map((e) => e.message), [], "no internal error (no fail-stop)");
});

/** Opens a connection to `url` and starts a POST to `path` whose body never completes: `how` ends it. */
function brokenPost(url: string, path: string, how: "reset" | "short"): Promise<void> {
  const { hostname, port, host } = new URL(url);
  return new Promise((resolve) => {
    const socket = net.connect(Number(port), hostname, () => {
      if (how === "reset") {
        // A chunked body: one chunk, then a reset (RST) once the server has begun reading it.
        socket.write(`POST ${path} HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\n`);
        setImmediate(() => socket.resetAndDestroy());
      } else {
        // Content-Length 100, 6 bytes sent, then the client's half of the connection closed.
        socket.end(`POST ${path} HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"a":1`);
      }
    });
    socket.on("data", () => {});
    // Resolved when the connection is gone: for "short", once the server answered or dropped it.
    socket.on("close", () => resolve());
    socket.on("error", () => resolve());
  });
}

// Before the fix each of these three processes logged failStop ("AbortError: The connection was
// closed." under Bun, "Http: unexpected EOF while reading HTTP/1 body" under Deno) and exited 70:
// an outsider without the secret or a token stopped the whole service with three connections.
test("real processes: bodies broken off mid-stream (reset, short of Content-Length) to the backup's peer route, the arbiter and the primary stop no process", { timeout: 60_000 }, async () => {
  const cluster = await startCluster();
  try {
    const { p1, b1, a1 } = cluster.urls;
    const targets = [["b1", b1, "/v1/peer"], ["a1", a1, "/v1/arbiter"], ["p1", p1, "/v1/sessions"]] as const;
    for (const [, url, path] of targets) await brokenPost(url, path, "reset");
    // The servers read each "short" body to its end of stream and then close the connection: when
    // all three are closed, every server has met a broken body (the resets were sent before).
    for (const [, url, path] of targets) await brokenPost(url, path, "short");
    for (const [id, url] of targets) {
      assert.ok((await status(url)) !== undefined, `${id} answers status`);
      const exited = await Promise.race([cluster.procs.get(id)!.exited, Promise.resolve("running")]);
      assert.equal(exited, "running", `${id} still runs`);
      assert.doesNotMatch(cluster.procs.get(id)!.stdout(), /failStop/, `${id} logged no failStop`);
    }
    const primary = await status(p1);
    assert.equal(primary?.server?.serving, true, "p1 still serves");
    assert.equal(primary?.server?.backup?.arbiterRecordedInSync, true, "with b1 in sync");
  } finally {
    await cluster.stopAll();
  }
});

// Before the fix the node started: GET /v1/status without a token was 401, but POST /v1/peer
// without one reached the replication route (a 400 for this empty message, a forged append
// with a real one), and a ring node's GET /v1/ring/peer/log gave every key and value.
test("[[tokens]] without a cluster secret: `mutexd node` refuses to start (exit 2, says why)", { timeout: 30_000 }, async () => {
  const dir = tempDir();
  try {
    const port = await freePort();
    const file = writeCluster(dir, `[[nodes]]
id = "p1"
role = "primary"
http = "127.0.0.1:${port}"

[[tokens]]
name = "viewer"
secret = "${"v".repeat(40)}"
permissions = [{ prefix = "", allow = ["read"] }]
`);
    const proc = startMutexd(["node", "--config", file, "--id", "p1"]);
    try {
      const started = waitForHttp(`http://127.0.0.1:${port}/v1/health`).then(async () => {
        const forged = await fetch(`http://127.0.0.1:${port}/v1/peer`, { method: "POST", body: "{}" });
        return `started; POST /v1/peer without a token answered ${forged.status}: ${await forged.text()}`;
      }, (error) => `neither answered nor exited: ${error}`);
      const outcome = await Promise.race([proc.exited, started]);
      assert.equal(outcome, 2, String(outcome));
      assert.match(proc.stderr(), /defines \[\[tokens\]\] but no cluster secret/);
    } finally {
      proc.kill("SIGKILL");
      await proc.exited;
    }
  } finally {
    removeDir(dir);
  }
});

// Before the fix: 200 forged requests with 200 sender ids made 200 "refused" lines (100 per
// reason) in the interval that allows one per sender and reason.
test("forged peer requests claiming a new sender id each: counted each, logged once per reason and interval", async () => {
  const log = memoryLogger();
  const security = new SecurityLog(manualClock(0), log, 10_000);
  const app = new Hono();
  installErrorHandlers(app, () => {});
  app.use("/v1/peer", peerAuthMiddleware(new PeerVerifier(await peerKey("redteam-secret-0123456789abcdef0123"), "b1", () => true), security, (c) => readBodyBytes(c, 65_536)));
  app.post("/v1/peer", (c) => c.json({ reached: true }));
  const forgeries = 100;
  for (let i = 0; i < forgeries; i++) {
    const from = `forger-${i}`;
    // A MAC that does not verify (peerForged), and headers that are not all there (peerUnauthenticated).
    const forged = await app.request("/v1/peer", { method: "POST", body: "{}", headers: { [PEER_HEADER.from]: from, [PEER_HEADER.nonce]: "", [PEER_HEADER.seq]: "1", [PEER_HEADER.mac]: "00".repeat(32) } });
    assert.equal(forged.status, 401);
    const bare = await app.request("/v1/peer", { method: "POST", body: "{}", headers: { [PEER_HEADER.from]: from } });
    assert.equal(bare.status, 401);
  }
  assert.deepEqual(security.view(), { peerForged: forgeries, peerUnauthenticated: forgeries }, "every refusal is counted");
  const lines = log.lines.filter((line) => line.event === "refused");
  assert.deepEqual(lines.map((line) => [line.reason, line.sender, line.claimed]), [
    ["peerForged", UNAUTHENTICATED_SENDER, "forger-0"],
    ["peerUnauthenticated", UNAUTHENTICATED_SENDER, "forger-0"],
  ], "one line per reason: the claimed id is no sender of its own");
});

// Before the fix: a2's calls after the injected challenge answer were each 401 unauthorized
// ("seq 2 from a: seen before (a replay)"), and b took nothing more from a.
test("a challenge answer captured from a sender's first contact, replayed to the sender after its restart, does not lock it out", async () => {
  const key = await peerKey("redteam-secret-0123456789abcdef0123");
  const taken: number[] = [];
  const b = new Hono();
  installErrorHandlers(b, () => {});
  b.use("/v1/peer", peerAuthMiddleware(new PeerVerifier(key, "b", (id) => id === "a"), new SecurityLog(manualClock(0), memoryLogger(), 10_000), (c) => readBodyBytes(c, 65_536)));
  b.post("/v1/peer", async (c) => {
    taken.push(((await c.req.json()) as { n: number }).n);
    return c.json({ ok: true });
  });
  /** Sender `a` (one process) whose first answer the attacker on the path records, or replaces. */
  const senderProcess = (inject?: Response) => {
    let first: Response | undefined;
    const signer = new PeerSigner(key, "a", async (url, init) => {
      if (inject && first === undefined) return (first = inject.clone());
      const answer = await b.fetch(new Request(url, init));
      first ??= answer.clone();
      return answer;
    });
    const call = (n: number) => signer.fetch("b", "http://b.test/v1/peer", { method: "POST", body: JSON.stringify({ n }), timeoutMs: 5_000 });
    return { call, first: () => first! };
  };
  const a1 = senderProcess();
  // The same body each time: what a sender's first message may well be (a heartbeat, a catch-up).
  for (let i = 0; i < 3; i++) assert.equal((await a1.call(1)).status, 200);
  const captured = a1.first();
  assert.equal(captured.status, 401, "the first contact's answer is a challenge");

  const a2 = senderProcess(captured); // a restarts; its first request gets the captured answer
  await a2.call(1).then((answer) => assert.equal(answer.status, 200), (error) => assert.match(String(error), /without a valid MAC/));
  for (const n of [2, 3, 4]) assert.equal((await a2.call(n)).status, 200, `a2's call ${n}`);
  assert.deepEqual(taken.slice(3).filter((n) => n !== 1), [2, 3, 4], "b takes the restarted sender's messages");
});

// Measured once with a scratch script (Deno, a real backup b1 of tests/_lock_cluster.ts): 16 connections each sending
// 16 MiB - 1 of a declared 16 MiB to POST /v1/peer, without any valid header, took b1's RSS from
// 60 to 196 MiB; the process holds what it read until the body ends, so 100 such connections
// hold ~1.6 GB. (Bun answered those 401 before the body's end.)
test("redteam finding 6: a peer request whose authentication headers do not verify is refused before its body is read", {
  todo: "the MAC covers the body, so today the whole body (up to peerBodyBytesMax, 16 MiB) is read first. A budget of bytes read before authentication would turn the memory into a starvation of genuine peers by a few slow connections (worse). The fix is in the protocol: a second MAC over the head (from, to, nonce, seq, method, path, Content-Length) checked with the nonce and seq window before the body is read, the body's MAC after",
}, async () => {
  let bodiesRead = 0;
  const app = new Hono();
  installErrorHandlers(app, () => {});
  const security = new SecurityLog(manualClock(0), memoryLogger(), 10_000);
  app.use("/v1/peer", peerAuthMiddleware(new PeerVerifier(await peerKey("redteam-secret-0123456789abcdef0123"), "b1", () => true), security, (c) => {
    bodiesRead += 1;
    return readBodyBytes(c, 65_536);
  }));
  app.post("/v1/peer", (c) => c.json({ reached: true }));
  const body = "x".repeat(60_000);
  const noHeaders = await app.request("/v1/peer", { method: "POST", body });
  const forgedHeaders = await app.request("/v1/peer", { method: "POST", body, headers: { [PEER_HEADER.from]: "p1", [PEER_HEADER.nonce]: "n", [PEER_HEADER.seq]: "1", [PEER_HEADER.mac]: "00".repeat(32) } });
  assert.deepEqual([noHeaders.status, forgedHeaders.status], [401, 401]);
  assert.equal(bodiesRead, 0, "no body read for a request that does not authenticate");
});

// Before the fix the third watch was taken too (no bound): it answered 200 after its 5 s wait
// instead of 429 at once; and an aborted watch held its place until its wait ended.
test("section watches on a ring node: at most ringWaitersMax wait at once (429 beyond), and a client that leaves frees its place", async () => {
  const dirs: string[] = [];
  const node = ringNode(dirs, { ...FUZZ_RING_SETTINGS, longPollMaxMs: 5_000, ringWaitersMax: 2 });
  try {
    const app = createRingApp(node.service, { nodeId: "b", settings: node.settings });
    const fence = await withSection(node);
    const watchers = [new AbortController(), new AbortController()];
    const waiting = watchers.map((w) => Promise.resolve(app.request(`/v1/ring/section/${fence}?waitMs=5000`, { signal: w.signal })));
    const third = await app.request(`/v1/ring/section/${fence}?waitMs=5000`);
    assert.equal(third.status, 429);
    assert.equal(((await third.json()) as { error: { code: string } }).error.code, "limit_reached");
    for (const w of watchers) w.abort();
    await Promise.allSettled(waiting);
    const again = new AbortController();
    const fourth = Promise.resolve(app.request(`/v1/ring/section/${fence}?waitMs=5000`, { signal: again.signal }));
    // Taken (waiting), not refused: the left watches gave their places back. The section's end answers it.
    assert.equal((await app.request("/v1/ring/leave", { method: "POST", body: JSON.stringify({ fence }), headers: { "content-type": "application/json" } })).status, 200);
    const answer = await fourth;
    assert.equal(answer.status, 200);
    assert.deepEqual(await answer.json(), { fence, active: false });
  } finally {
    node.close();
    for (const dir of dirs) removeDir(dir);
  }
});

// Run with the todo on (both runtimes, at this commit): the arbiter a1, its file limit lowered
// to 200 with prlimit, and 260 idle connections opened to it; then b1 restarted, so the arbiter
// must write its record. Deno: failStop "internal error", unhandledRejection "Http: Error: Too
// many open files (os error 24)" (from Deno.serve's accept loop), exit 70. Bun: failStop "the
// arbiter's record could not be written" (EMFILE on arbiter.json.tmp), exit 70. Either way p1
// then stops serving: ~1,000 idle connections (a common default limit) from anyone stop the
// lock service.
const PRLIMIT = "/usr/bin/prlimit";
test("redteam finding 7: more idle connections than the arbiter's file limit do not stop it", {
  timeout: 60_000,
  skip: existsSync(PRLIMIT) ? undefined : `needs ${PRLIMIT}`,
  todo: "no bound on accepted connections: Deno.serve has no idle timeout and its accept loop dies on EMFILE; Bun keeps idle connections 255 s. Needs a connection limit below the file limit in serveHttp (or in front of the node: a proxy, a firewall's connlimit) and a file limit well above it",
}, async () => {
  const cluster = await startCluster();
  const sockets: net.Socket[] = [];
  try {
    const a1 = cluster.procs.get("a1")!;
    execFileSync(PRLIMIT, ["--nofile=200:200", "--pid", String(a1.pid)]);
    const { port } = new URL(cluster.urls.a1);
    for (let i = 0; i < 260; i++) {
      await new Promise<void>((resolve) => {
        const socket = net.connect(Number(port), "127.0.0.1", () => resolve());
        socket.on("error", () => resolve());
        sockets.push(socket);
      });
    }
    // The arbiter has taken connections up to its limit: a new one (a status request) gets no answer.
    await eventually("a1 answers no more", async () => (await status(cluster.urls.a1, 500)) === undefined);
    const before = (await recordAtPrimary(cluster.urls.p1))?.backupIncarnation;
    await cluster.start("b1"); // a new b1 process: the arbiter must record it (a write of its record)
    assert.ok(before, "p1 knows the arbiter's record");
    const running = await Promise.race([a1.exited, newBackupInSync(cluster.urls.p1, before).then(() => "in sync")]);
    assert.equal(running, "in sync", `a1: ${(a1.stdout() + a1.stderr()).split("\n").filter((l) => l.includes("failStop")).join("\n")}`);
  } finally {
    for (const socket of sockets) socket.destroy();
    await cluster.stopAll();
  }
});

/** The arbiter's record as the primary last heard it (`server.arbiterRecord` of its status). */
async function recordAtPrimary(p1: string): Promise<{ backupInSync: boolean; backupIncarnation: string } | undefined> {
  const server = (await status(p1))?.server as { arbiterRecord?: { backupInSync: boolean; backupIncarnation: string } } | undefined;
  return server?.arbiterRecord;
}

/** Resolves once p1 serves with a b1 process other than `before` recorded in sync by the arbiter (bounded by `eventually`). */
function newBackupInSync(p1: string, before: string | undefined): Promise<void> {
  return eventually("p1 serves with the new b1 recorded in sync", async () => {
    const record = await recordAtPrimary(p1);
    return (await status(p1))?.server?.serving === true && record?.backupInSync === true && record.backupIncarnation !== before;
  }, 20_000);
}
