/**
 * Issue 12, "a bogus replication entry": real processes (primary p1, backup b1, arbiter a1) and
 * forged appends to the backup's `POST /v1/peer`, as an outsider on the network could send them
 * before peer messages were authenticated.
 * - A malformed entry is refused by its schema (400, naming the field) and changes nothing.
 * - A bug in a request handler, or outside any request (a core step run by a timer, or by the
 *   continuation of an answer), stops the process the same way, for lock servers, the arbiter
 *   and ring nodes (an assertion injected on the test side: tests/_inject_bug.ts).
 * - A well-formed entry that breaks a core invariant (its time goes backwards) trips a core
 *   assertion: the backup logs `failStop` and exits 70 (it never serves on half-applied state),
 *   the primary goes on, and the backup restarted gets a fresh copy and counts as in sync again.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";
import { startCluster, status } from "./_lock_cluster.ts";
import { eventually, freePort, removeDir, ROOT, startMutexd, startProcess, tempDir, writeCluster } from "./_harness.ts";
import { FAIL_STOP_EXIT } from "../cluster/fail_stop.ts";
import { PEER_CONTENT_TYPE } from "../cluster/peer_transport.ts";

/** POSTs a forged peer message to `url` (JSON, as the lock servers send them). */
async function forge(url: string, message: unknown): Promise<{ status: number; text: string }> {
  const response = await fetch(`${url}/v1/peer`, {
    method: "POST",
    headers: { "content-type": PEER_CONTENT_TYPE },
    body: JSON.stringify(message),
    signal: AbortSignal.timeout(5_000),
  });
  return { status: response.status, text: await response.text() };
}

/** An entry of the primary's log: a session opened and closed, so the backup's clock is past 0. */
async function oneRoundTrip(url: string): Promise<void> {
  const opened = await fetch(`${url}/v1/sessions`, { method: "POST", body: JSON.stringify({ ttlMs: 60_000 }) });
  assert.equal(opened.status, 201);
  const { session, sessionSecret } = await opened.json();
  assert.equal((await fetch(`${url}/v1/sessions/${session}`, { method: "DELETE", body: JSON.stringify({ sessionSecret }) })).status, 200);
}

/** The backup's copy as its status shows it (the index and the table), to compare before and after. */
async function backupState(url: string) {
  const s = await status(url);
  assert.ok(s?.server, "the backup answers status");
  return { lastIndex: s.server.lastIndex, epoch: s.server.epoch, sessions: s.sessions, locks: s.locks };
}

// On commit 2c9c5fa the first append passed isPeerRequest (it checked only that `entries` was an
// array): the backup applied the entry, its applied index moved past the primary's log, and the
// copy no longer matched the primary's. The second got a 500 and the backup went on serving.
// Without a cluster secret, so the forged appends reach the schema and the core (with one they
// get 401 before: tests/peer_auth_process_test.ts); what a member's bug could send, too.
test("forged appends to a real backup: a malformed entry changes nothing; an invariant-breaking one is a fail-stop, and the pair recovers", async () => {
  const cluster = await startCluster([], { secret: null });
  try {
    const { p1, b1 } = cluster.urls;
    await oneRoundTrip(p1);
    const primary = await status(p1);
    await eventually("b1 has p1's log", async () => (await status(b1))?.server?.lastIndex === primary?.server?.lastIndex);
    const before = await backupState(b1);

    // 1. Malformed: an enter without a lock name, at the next index.
    const malformed = {
      type: "append",
      from: "p1",
      epoch: before.epoch,
      syncGen: 0,
      entries: [{ index: before.lastIndex + 1, epoch: before.epoch, atMs: 1e12, command: { type: "enter", session: "x" } }],
    };
    const refused = await forge(b1, malformed);
    assert.equal(refused.status, 400, refused.text);
    const error = JSON.parse(refused.text).error;
    assert.equal(error.code, "bad_request");
    assert.match(error.message, /entries\.0\.command/, "the message names the field");
    assert.deepEqual(await backupState(b1), before, "the backup's copy is as it was");
    assert.equal((await status(b1))?.security?.peerMalformed, 1, "the refusal is counted");

    // 2. Well-formed but breaking an invariant: an entry whose time is before the table's.
    const backwards = { ...malformed, entries: [{ index: before.lastIndex + 1, epoch: before.epoch, atMs: 0, command: { type: "tick" } }] };
    await forge(b1, backwards).catch(() => undefined); // the process exits without answering
    const code = await Promise.race([cluster.procs.get("b1")!.exited, new Promise<string>((r) => setTimeout(() => r("still running"), 10_000))]);
    assert.equal(code, FAIL_STOP_EXIT, "the backup stops itself");
    const stderr = cluster.procs.get("b1")!.stderr();
    assert.match(stderr, /"failStop"/);
    assert.match(stderr, /time went backwards/);

    // The primary goes on (once the arbiter records the backup out of sync) ...
    await eventually("p1 answers a client without its backup", async () => {
      const opened = await fetch(`${p1}/v1/sessions`, { method: "POST", body: "{}", signal: AbortSignal.timeout(2_000) }).catch(() => undefined);
      return opened?.status === 201;
    }, 15_000);
    // ... and the backup restarted gets a fresh copy and counts as in sync again.
    await cluster.start("b1");
    await eventually("b1 back in sync", async () => {
      const s = await status(p1);
      return s?.server?.backup?.arbiterRecordedInSync === true && (await status(b1))?.server?.lastIndex === s.server.lastIndex;
    }, 15_000);
  } finally {
    await cluster.stopAll();
  }
});

/** argv that runs tests/_inject_bug.ts (main.ts with a bug injected) under this test's runtime. */
function injectedArgv(): string[] {
  // deno-lint-ignore no-explicit-any
  const g = globalThis as any;
  if (g.Deno) return [g.Deno.execPath(), "run", "-A", `${ROOT}/tests/_inject_bug.ts`];
  return [process.execPath, `${ROOT}/tests/_inject_bug.ts`];
}

// On commit 2c9c5fa none was a fail-stop: the runtime's default for an uncaught exception or an
// unhandled rejection ended the process with another status and no `failStop` line, and the
// arbiter answered its handler's assertion with a 500 and went on (these tests fail there,
// under Deno and Bun).
const INJECTIONS = [
  { bug: "LockReplica.tick", node: "p1", where: "uncaughtException" },
  { bug: "LockReplica.reply", node: "p1", where: "unhandledRejection" },
  { bug: "ArbiterCore.step", node: "a1", where: "arbiter API" },
  { bug: "RingNode.tick", node: "r1", where: "uncaughtException" },
] as const;

for (const { bug, node, where } of INJECTIONS) {
  test(`a core assertion (${bug}, caught as ${where}) is a fail-stop: the process logs failStop and exits 70`, async () => {
    const dir = tempDir();
    const [p, a, r] = [await freePort(), await freePort(), await freePort()];
    // A primary with an arbiter (its tick runs on a timer, its renewal is a request to the
    // arbiter whose answer is a continuation), and a ring node of its own ring (its tick).
    const file = writeCluster(
      dir,
      `[[nodes]]\nid = "p1"\nrole = "primary"\nhttp = "127.0.0.1:${p}"\n\n` +
        `[[nodes]]\nid = "a1"\nrole = "arbiter"\nhttp = "127.0.0.1:${a}"\ndataDir = "data/a1"\n\n` +
        `[[nodes]]\nid = "r1"\nrole = "ring"\nhttp = "127.0.0.1:${r}"\ndataDir = "data/r1"\n`,
    );
    const [cmd, ...pre] = injectedArgv();
    const injected = startProcess(cmd, [...pre, "node", "--config", file, "--id", node], { env: { INJECT_BUG: bug }, cwd: dir });
    // The other lock-side node, plain (the ring node needs nobody).
    const other = node === "r1" ? undefined : startMutexd(["node", "--config", file, "--id", node === "p1" ? "a1" : "p1"], { cwd: dir });
    try {
      const code = await Promise.race([injected.exited, new Promise<string>((r) => setTimeout(() => r("still running"), 15_000))]);
      assert.equal(code, FAIL_STOP_EXIT, injected.stderr());
      assert.match(injected.stderr(), /"failStop"/);
      assert.ok(injected.stderr().includes(`injected bug in ${bug}`), injected.stderr());
      assert.ok(injected.stderr().includes(`"where":"${where}"`), `caught as ${where}`);
    } finally {
      injected.kill("SIGKILL");
      other?.kill("SIGKILL");
      await Promise.all([injected.exited, other?.exited]);
      removeDir(dir);
    }
  });
}
