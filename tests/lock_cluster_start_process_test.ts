/**
 * tests/_lock_cluster.ts `startCluster` when its start fails: the test harness itself, under both
 * runtimes. b1 is given an HTTP port this test holds, so a1 and p1 start and answer, and b1 cannot
 * bind and exits at once. startCluster must then reject with the exit named (not after waiting out
 * the 15 s health wait), every process it started must be gone and its temporary folder removed.
 *
 * Each check fails without the code it guards (tried once locally): without the exit watch in
 * `healthyOrExited` the rejection is the health wait's timeout, which does not name b1's exit;
 * without `stopAll` in startCluster's catch, a1's and p1's processes still run and the folder stays.
 * The test closes the port it held, and when startCluster left a process or its folder behind (the
 * assertions failed), it kills that process and removes the folder.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { ClusterStartError, startCluster } from "./_lock_cluster.ts";
import { removeDir } from "./_harness.ts";

/** Whether a process with `pid` exists (signal 0 only asks). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * A TCP listener on 127.0.0.1 at a free port, to hold that port taken. It ends every connection at
 * once: the harness's health checks reach it before b1 exits, and an open one would hold up its close.
 */
function holdPort(): Promise<{ server: Server; port: number }> {
  return new Promise((resolve, reject) => {
    const server = createServer((socket) => socket.destroy());
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      resolve({ server, port: typeof address === "object" && address ? address.port : 0 });
    });
  });
}

test("startCluster: when a node cannot bind (its port taken) the start fails at its exit, stops every process it started and removes its folder", async () => {
  const held = await holdPort();
  let failure: unknown;
  try {
    try {
      const cluster = await startCluster([], { ports: { b1: held.port } });
      // Not expected: stop it so the failed assertion below leaves nothing behind.
      await cluster.stopAll();
    } catch (error) {
      failure = error;
    }
    assert.ok(failure instanceof ClusterStartError, `startCluster did not fail as expected: ${failure}`);
    assert.match(failure.message, /b1 exited with \d+ before it answered/, "the failure is b1's exit, not the health wait's timeout");
    assert.equal(failure.pids.length, 3, "a1, p1 and b1 were started");
    assert.deepEqual(failure.pids.filter(alive), [], "every process it started is stopped");
    assert.equal(existsSync(failure.dir), false, "its temporary folder is removed");
  } finally {
    await new Promise((resolve) => held.server.close(resolve));
    // What startCluster should have cleaned up and did not (the assertions above failed): not left behind.
    if (failure instanceof ClusterStartError) {
      for (const pid of failure.pids.filter(alive)) process.kill(pid, "SIGKILL");
      removeDir(failure.dir);
    }
  }
});
