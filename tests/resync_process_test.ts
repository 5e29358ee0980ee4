/**
 * Issue 11, real processes: a returning backup syncs a table of locksMax (100,000) held locks
 * without stopping the primary. Primary, backup and arbiter are `mutexd node` processes
 * (_lock_cluster.ts); the table is filled over HTTP; then the backup is killed with SIGKILL and
 * started again while a client keeps acquiring and releasing a lock (_resync.ts). The test stops
 * its processes and removes its temp dir.
 *
 * The bounds are correctness bounds with generous margins for two shared cores, not speed
 * targets (docs/bench.md has the measured figures):
 * - In sync within RESYNC_BOUND_MS of the restart: measured 0.9-1.2 s (Bun) and 1.4 s (Deno)
 *   at 99,990 locks on this shared machine; before issue 11 it never synced from 40,000 on.
 * - The primary's longest event-loop stall from the kill until in sync under STALL_BOUND_MS:
 *   measured 41-54 ms under Bun and 144 ms under Deno on a loaded machine (one chunk of
 *   syncChunkItemsMax items is ~1-2 ms of work; the rest is the runtime's garbage collector on a
 *   heap of 100,000 locks and the other work on the machine); the single 21 MB snapshot it
 *   replaces froze the primary for 0.6-1 s per try. 250 ms is above every measurement and still
 *   fails on anything that serializes the whole table in one step (superjson of it: 1.1-1.5 s).
 * - The client's acquires never fail (the primary keeps serving).
 *
 * The same with `durable = true` (the merge of the durable log with the streamed copy): the
 * backup writes the copy whole once its last chunk is loaded and acks nothing of it before
 * (docs/failover.md, "The durable log"); the primary's bounds are the same. Measured at the
 * merge (two runs each): in sync 1.1-1.2 s (Bun) and 1.2 s (Deno) after the restart (0.7-0.9 s
 * without), the primary's longest stall 32-57 ms; the backup's longest stall 64-66 ms (31-43 ms
 * without: its point-in-time copy of the installed table for the log).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { startCluster } from "./_lock_cluster.ts";
import { fillLocks, resyncUnderLoad, summary } from "./_resync.ts";

/** locksMax less room for the load client's 8 locks. */
const LOCKS = 100_000 - 10;
const RESYNC_BOUND_MS = 20_000;
const STALL_BOUND_MS = 250;

/** The scenario of this file, on a cluster with or without the durable log. */
async function resyncUnderKill(durable: boolean): Promise<void> {
  const cluster = await startCluster([], { durable });
  try {
    const granted = await fillLocks(cluster.urls.p1, { locks: LOCKS, sessions: 2_000, concurrency: 32, deadlineMs: 150_000 });
    assert.equal(granted, LOCKS);
    const result = await resyncUnderLoad(
      cluster.urls.p1,
      async () => {
        const backup = cluster.procs.get("b1")!;
        backup.kill("SIGKILL");
        await backup.exited;
      },
      () => cluster.start("b1"),
      RESYNC_BOUND_MS,
    );
    console.log(`measured${durable ? " (durable)" : ""}: ${LOCKS} locks, in sync ${Math.round(result.resyncMs)} ms after the restart, primary's longest stall ${result.stallMaxMs} ms, ` +
      `${result.acquires} acquires (slowest ${Math.round(result.acquireMaxMs)} ms), ${result.failures} failed`);
    assert.ok(result.resyncMs < RESYNC_BOUND_MS, `in sync after ${result.resyncMs} ms`);
    assert.ok(result.stallMaxMs < STALL_BOUND_MS, `the primary stalled ${result.stallMaxMs} ms`);
    assert.equal(result.failures, 0, "every acquire during the resync succeeded");
    assert.ok(result.acquires > 0, "the client acquired during the resync");
    const backup = await summary(cluster.urls.b1);
    assert.ok(backup && backup.lockCount >= LOCKS, `the backup holds the table (${backup?.lockCount} locks)`);
    console.log(`measured${durable ? " (durable)" : ""}: the backup's longest stall since its start ${backup.loopStallMaxMs} ms`);
  } finally {
    await cluster.stopAll();
  }
}

test("resync: a backup killed and restarted under load syncs 100,000 held locks in time while the primary keeps serving without a long stall", { timeout: 240_000 }, () => resyncUnderKill(false));

test("resync, durable = true: the same, the backup writing the copy to its log before it acks it", { timeout: 240_000 }, () => resyncUnderKill(true));
