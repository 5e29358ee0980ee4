/**
 * Issue 11, real processes: a returning backup syncs a table of locksMax (100,000) held locks
 * without stopping the primary. Primary, backup and arbiter are `mutexd node` processes
 * (_lock_cluster.ts); the table is filled over HTTP; then the backup is killed with SIGKILL and
 * started again while a client keeps acquiring and releasing a lock (_resync.ts). p1 starts as
 * the primary; should a busy host pause it past the backup's lease during the fill, b1 takes over
 * and the fill and the scenario go on with b1 as the primary and p1 as the backup. The test stops
 * its processes and removes its temp dir.
 *
 * The bounds are correctness bounds with generous margins for two shared cores, not speed
 * targets (docs/bench.md has the measured figures):
 * - In sync with under RESYNC_CPU_BOUND_MS of CPU used by the two servers: the primary's from the
 *   restart until in sync (the copy and the load client's acquires meanwhile), the backup's since
 *   its start (the runtime's start, loading the copy): measured 200-530 ms and 520-1,330 ms
 *   (Bun, Deno, durable or not, load 5-11). The time it took is no bound, as others' work on the
 *   two cores stretches it (measured 0.9-1.4 s quiet, 2.0-7.9 s at load 10-18): RESYNC_DEADLINE_MS
 *   only ends a resync that never completes, as none did from 40,000 locks on before issue 11.
 * - A resync that waits rather than works: the CPU bound misses a copy paced by a timer, so the
 *   time the backup's event loop slept (neither on a CPU nor on the run queue: /proc/<pid>/schedstat
 *   of its main thread) from the restart until the test first sees the primary's status show it in
 *   sync (taken inside that wait: onInSync of _resync.ts, not after the wait for the arbiter's
 *   record, the last poll and the load's end) stays under COPY_IDLE_BOUND_MS once less what it
 *   may have waited on: the primary's run-queue wait (which stretches each chunk request), the
 *   time its own other threads ran or waited on the run queue (/proc/<pid>/task/*: Bun's fetch
 *   runs on its HTTP client thread), and the window's tail after the last status that did not show
 *   it in sync; with durable = true, all from the backup's `synced` line on if longer (its write
 *   of the copy starts then: a pool thread blocked on the disk is neither running nor queued).
 *   The backup does nothing but pull the copy, one chunk request at a time, so any pacing on
 *   either side shows as its sleep. Not subtracted: the primary's work on the chunks (~1-2 ms
 *   each, ~100 chunks), small beside the bound, and its whole run time, mostly the load client's
 *   beside the copy: subtracting it (with the queue time of all threads of both) hid the defect
 *   below (-1,595 ms). Measured: -185 to -1,073 ms in 13 healthy runs (in sync 0.9-1.3 s, the
 *   last poll 26-48 ms, the durable write's span 195-270 ms where counted, Bun and Deno, durable
 *   or not, load 4-6, three runs with three busy loops of ours). Injected locally (not kept):
 *   50 ms before each chunk request made it 3,524 ms (Bun), 3,949 ms (Deno) and 3,463 ms (Bun,
 *   durable; its write's span 351 ms) (the backup asleep 5.1-5.3 s of 6.3-6.9 s; 2,894 ms with
 *   the span after the `synced` line subtracted without the durable log too, 750 ms of catch-up
 *   there, which is why only the durable test subtracts it); before this count (the sleep less
 *   the primary's queue wait only, measured after the tail) 4,284 ms, while the CPU bound passed.
 * - The primary's own work in any one event-loop stall from the load client's start (just before
 *   the kill) until it logs the backup in sync under STALL_CPU_BOUND_MS of CPU: each stall of
 *   100 ms or more is a `loopStall` line of its log with the CPU time the process used in it
 *   (docs/http-api.md). The stall's length is not the bound: on a busy host the primary waits on
 *   the run queue, 587 ms with 11 ms of CPU at load 5 (others' work), and a bound on the length
 *   failed there without any defect, as did the wait for the fill's stalls to fade that it
 *   needed. Measured: no stall of the primary above 19 ms of CPU. Measured longest stalls
 *   41-54 ms under Bun and 144 ms under Deno on a loaded machine (one chunk of
 *   syncChunkItemsMax items is ~1-2 ms of work; the rest is the runtime's garbage collector on a
 *   heap of 100,000 locks and the other work on the machine); the single 21 MB snapshot it
 *   replaces froze the primary for 0.6-1 s of work per try. 250 ms of CPU is above every
 *   measurement and still fails on anything that serializes the whole table in one step
 *   (superjson of it: 1.1-1.5 s), however busy the host: the table's JSON made 8 times in the
 *   copy's first chunk (a local experiment, not kept) failed it with 668 ms of CPU in a 1,589 ms
 *   stall at load 11; made once (127 ms of CPU) it passes.
 * - The client's acquires do not fail (the primary keeps serving), but for the primary's refusals
 *   because its lease lapsed while a node that renews it (the primary or the arbiter) waited on
 *   the run queue past the lease's margin: a `stalledPastLeaseMargin` line of that time whose
 *   `cpuMs` is under half its `stallMs`. Other work on two shared cores causes those (a 231 ms
 *   wait of the primary with 9 ms of CPU cost one refusal at load 10-15). Each run of refusals
 *   (no other answer between them) is matched to a wait by the wall clock: the primary refused
 *   first between the client's sending of that request and its handling of the answer, an
 *   interval that must meet the wait's start until one lease (primaryLeaseMs) after its logged
 *   end; and the run lasted, at least (from that handling to the sending of the last refused
 *   request: the client's own delays only shorten it), at most that wait plus one renewal
 *   (leaseRenewMs) and one lease for the renewal's round trip through waits under the margin,
 *   which no line logs. A lapse with no such wait (renewals refused or starved by the copy), a run
 *   longer, or any other failure (an error, a timeout, another refusal) fails the test. Injected
 *   locally (not kept): enters answered as a lapsed lease from the primary's 40th chunk request on
 *   failed it (35 refusals, no wait logged; before, with an unrelated 177 ms wait of the primary
 *   842 ms earlier, the check by one lease after the wait failed it where "any wait in the
 *   window" passed it).
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
import { eventually } from "./_harness.ts";
import { cpuSeconds } from "./bench/lib/server.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { fillLocks, isEvent, type LapseRun, type LoggedStall, loggedStalls, resyncUnderLoad, schedMs, summary, threadsSchedMs, wholeLines } from "./_resync.ts";

/** locksMax less room for the load client's 8 locks. */
const LOCKS = 100_000 - 10;
const RESYNC_CPU_BOUND_MS = 10_000;
const RESYNC_DEADLINE_MS = 60_000;
const STALL_CPU_BOUND_MS = 250;
const COPY_IDLE_BOUND_MS = 2_000;

/**
 * The run-queue waits a run of lapse refusals may come from: its first refusal (answered between
 * its request's sending and the client's handling of it) from the wait's start until one lease
 * after its end.
 */
function waitsCausing(run: LapseRun, waits: LoggedStall[]): LoggedStall[] {
  return waits.filter((wait) => run.firstMs >= wait.endMs - wait.stallMs && run.firstSentMs <= wait.endMs + DEFAULT_SETTINGS.primaryLeaseMs);
}

/**
 * What a run of lapse refusals may last beyond the wait it comes from: the renewal that ends it
 * is sent within one leaseRenewMs, and its round trip through the primary and the arbiter may
 * meet further waits of a busy host under the margin, which no line logs: one primaryLeaseMs for
 * those (a renewal starved or refused by a defect keeps a run going for good).
 */
const LAPSE_RUN_SLACK_MS = DEFAULT_SETTINGS.leaseRenewMs + DEFAULT_SETTINGS.primaryLeaseMs;

type Sched = { runMs: number; queuedMs: number };
/** The growth of a process's scheduler times (schedMs or threadsSchedMs) from `before` to `after`, in whole ms. */
function schedDelta(before: Sched, after: Sched): Sched {
  return { runMs: Math.round(after.runMs - before.runMs), queuedMs: Math.round(after.queuedMs - before.queuedMs) };
}

/** The scenario of this file, on a cluster with or without the durable log. */
async function resyncUnderKill(durable: boolean): Promise<void> {
  const cluster = await startCluster([], { durable });
  try {
    const granted = await fillLocks(cluster.urls.p1, { locks: LOCKS, sessions: 2_000, concurrency: 32, deadlineMs: 150_000 });
    assert.equal(granted, LOCKS);
    // p1 starts as the primary, but a pause past the backup's lease on a busy host is a takeover
    // (docs/bench.md, issue 14): the scenario runs on whichever server serves after the fill.
    let primary: "p1" | "b1" = "p1";
    await eventually("a server serves with the other in sync", async () => {
      for (const id of ["p1", "b1"] as const) {
        const server = (await summary(cluster.urls[id]))?.server;
        if (server?.role === "primary" && server.serving && server.backup?.mode === "inSync" && server.backup.arbiterRecordedInSync) {
          primary = id;
          return true;
        }
      }
      return false;
    }, RESYNC_DEADLINE_MS);
    const backupId = primary === "p1" ? "b1" : "p1";
    // The stalls are read from the logs of the primary and the arbiter, from the start of the load
    // client (whose failures count from then on) until the primary logs the backup in sync.
    const logs = { primary: () => cluster.procs.get(primary)!.stderr(), a1: () => cluster.procs.get("a1")!.stderr() };
    const atLoad = { primary: logs.primary().length, a1: logs.a1().length };
    let primaryAtKill = 0;
    let primaryCpuAtRestartS = 0;
    // The scheduler's times of both servers' main threads and of all the backup's threads, at the
    // restart and when the primary's status first shows the backup in sync (onInSync).
    const schedNow = () => {
      const [primaryPid, backupPid] = [cluster.procs.get(primary)!.pid, cluster.procs.get(backupId)!.pid];
      return { wallMs: performance.now(), dateMs: Date.now(), primary: schedMs(primaryPid), backup: schedMs(backupPid), backupAll: threadsSchedMs(backupPid) };
    };
    let atRestart: ReturnType<typeof schedNow> | undefined;
    let atInSync: ReturnType<typeof schedNow> | undefined;
    /** The part of the window after the last status that did not show the backup in sync: it came in sync in there. */
    let pollTailMs = 0;
    const result = await resyncUnderLoad(
      cluster.urls[primary],
      async () => {
        primaryAtKill = logs.primary().length;
        const backup = cluster.procs.get(backupId)!;
        backup.kill("SIGKILL");
        await backup.exited;
      },
      async () => {
        await cluster.start(backupId);
        primaryCpuAtRestartS = cpuSeconds(cluster.procs.get(primary)!.pid);
        atRestart = schedNow();
      },
      RESYNC_DEADLINE_MS,
      {
        waitStallsFade: false,
        onInSync: (notInSyncAtMs) => {
          atInSync = schedNow();
          pollTailMs = Math.round(atInSync.wallMs - notInSyncAtMs);
        },
      },
    );
    assert.ok(atRestart && atInSync, "the closing measurements were taken");
    // What each server's main thread (its event loop) did from the restart until the status showed
    // the backup in sync: on a CPU, on the run queue, and asleep (neither).
    const windowMs = Math.round(atInSync.wallMs - atRestart.wallMs);
    // The window's tail the backup may sleep through with no pacing: the test's last poll, and with
    // durable = true everything from the backup's `synced` line (its last chunk loaded and
    // installed; the write of the copy starts then, on a thread blocked on the disk, neither on a
    // CPU nor queued) until the closing measurements. A node writes its lines in order, so the
    // last one before the closing measurements is the copy's. (Without the durable log that span
    // is work, the catch-up of the appends made during the copy: a copy paced 50 ms a chunk
    // spent 750 ms there, which would hide a quarter of the margin the defect shows by.)
    const closedAtMs = atInSync.dateMs;
    const syncedAtMs = () => {
      const lines = wholeLines(cluster.procs.get(backupId)!.stderr(), 0).filter((line) => isEvent(line, "synced"));
      const times = lines.map((line) => Date.parse((JSON.parse(line) as { ts: string }).ts)).filter((ms) => ms <= closedAtMs);
      return times.length > 0 ? times[times.length - 1] : undefined;
    };
    await eventually("the backup's log shows its copy loaded", () => syncedAtMs() !== undefined, 10_000);
    const tailMs = durable ? Math.max(pollTailMs, closedAtMs - syncedAtMs()!) : pollTailMs;
    const mainSched = (before: Sched, after: Sched) => {
      const delta = schedDelta(before, after);
      return { ...delta, sleptMs: windowMs - delta.runMs - delta.queuedMs };
    };
    const resyncSched = { primary: mainSched(atRestart.primary, atInSync.primary), backup: mainSched(atRestart.backup, atInSync.backup) };
    const backupAll = schedDelta(atRestart.backupAll, atInSync.backupAll);
    /** The backup's threads other than its event loop (Bun's HTTP client, node:fs's pool, the collector's helpers). */
    const backupHelpers = { runMs: backupAll.runMs - resyncSched.backup.runMs, queuedMs: backupAll.queuedMs - resyncSched.backup.queuedMs };
    // The backup does nothing but load the copy, one chunk request at a time: its event loop
    // sleeps while a request waits on the primary, which others' work on the cores stretches by
    // the primary's run-queue wait, or on a thread of its own (the fetch). What none of those
    // explains, nor the tail after the copy, the copy waited on no work at all (a timer). The primary's own work on the chunks (~1-2 ms each) stays in it: small beside the
    // bound. Its work for the load client does not: that runs beside the copy, and subtracting it
    // hid a copy paced 50 ms a chunk.
    const copyIdleMs = resyncSched.backup.sleptMs - resyncSched.primary.queuedMs - backupHelpers.runMs - backupHelpers.queuedMs - tailMs;
    // The CPU of the resync: the primary's from the restart until now, the backup's since its start.
    const resyncCpuMs = {
      primary: Math.round(1_000 * (cpuSeconds(cluster.procs.get(primary)!.pid) - primaryCpuAtRestartS)),
      backup: Math.round(1_000 * cpuSeconds(cluster.procs.get(backupId)!.pid)),
    };
    // Lines come through a pipe, perhaps after the status that said "in sync": a node writes them in
    // order, so once the primary's backupInSync line of this resync is there, so is every stall
    // before it (the copy's work on the primary ends with the backup's last ack).
    await eventually("the primary's log shows the backup in sync", () => wholeLines(logs.primary(), primaryAtKill).some((line) => isEvent(line, "backupInSync")), 10_000);
    const sinceLoad = (log: "primary" | "a1") => wholeLines(logs[log](), atLoad[log]);
    const stalls = loggedStalls(sinceLoad("primary"), "loopStall");
    const waits = [...loggedStalls(sinceLoad("primary"), "stalledPastLeaseMargin"), ...loggedStalls(sinceLoad("a1"), "stalledPastLeaseMargin")]
      .filter((stall) => stall.cpuMs < stall.stallMs / 2);
    const shown = stalls.map((s) => `${s.stallMs} ms (${s.cpuMs} ms CPU)`).join(", ") || "none";
    const measured = `measured${durable ? " (durable)" : ""}${primary === "p1" ? "" : " (b1 took over during the fill)"}`;
    console.log(`${measured}: ${LOCKS} locks, in sync ${Math.round(result.resyncMs)} ms after the restart (CPU meanwhile: primary ${resyncCpuMs.primary} ms, backup ${resyncCpuMs.backup} ms since its start; ` +
      `of its ${windowMs} ms the main threads ran/queued/slept: primary ${JSON.stringify(resyncSched.primary)}, backup ${JSON.stringify(resyncSched.backup)}; ` +
      `the backup's other threads ran/queued ${JSON.stringify(backupHelpers)}, the tail ${tailMs} ms (the last poll ${pollTailMs} ms, after the backup's synced line ${closedAtMs - syncedAtMs()!} ms); copy idle ${copyIdleMs} ms), ` +
      `primary's stalls of 100 ms or more: ${shown}, ${result.acquires} acquires (slowest ${Math.round(result.acquireMaxMs)} ms), ` +
      `${result.failures} failed (${result.lapses} lapses in runs ${JSON.stringify(result.lapseRuns.map((run) => [run.firstSentMs, run.firstMs - run.firstSentMs, run.lastSentMs - run.firstMs, run.refusals]))}; ` +
      `run-queue waits past the margin on the primary and a1: ${JSON.stringify(waits.map((wait) => [wait.endMs, wait.stallMs]))})`);
    assert.ok(copyIdleMs < COPY_IDLE_BOUND_MS, `the backup slept ${resyncSched.backup.sleptMs} ms of the resync's ${windowMs} ms, the primary waited on the run queue ${resyncSched.primary.queuedMs} ms of it, the backup's other threads ran/queued ${JSON.stringify(backupHelpers)}, the tail ${tailMs} ms`);
    assert.ok(resyncCpuMs.primary + resyncCpuMs.backup < RESYNC_CPU_BOUND_MS, `the resync took ${resyncCpuMs.primary} ms of the primary's CPU and ${resyncCpuMs.backup} ms of the backup's`);
    for (const stall of stalls) assert.ok(stall.cpuMs < STALL_CPU_BOUND_MS, `the primary worked ${stall.cpuMs} ms in a stall of ${stall.stallMs} ms`);
    assert.equal(result.failures, result.lapses, `every failed acquire was a lapse of the primary's lease: ${JSON.stringify(result.failureReasons)}`);
    // Each run of lapse refusals comes from one wait of the primary or the arbiter (it started in
    // that wait or within a lease after it) and lasts at most that wait plus LAPSE_RUN_SLACK_MS.
    // The run's length is the least the client's times allow (from the first refusal's handling
    // to the last refused request's sending), so the client's own delays do not stretch it.
    assert.equal(result.lapseRuns.reduce((sum, run) => sum + run.refusals, 0), result.lapses, "every lapse is in a run kept");
    for (const run of result.lapseRuns) {
      const causes = waitsCausing(run, waits);
      assert.ok(causes.length > 0, `${run.refusals} lapse refusals from ${new Date(run.firstSentMs).toISOString()}-${new Date(run.firstMs).toISOString()} with no wait of the primary or the arbiter past the margin in the lease before`);
      const longestMs = Math.max(...causes.map((wait) => wait.stallMs));
      assert.ok(run.lastSentMs - run.firstMs <= longestMs + LAPSE_RUN_SLACK_MS, `a run of ${run.refusals} lapse refusals lasted at least ${run.lastSentMs - run.firstMs} ms after a wait of ${longestMs} ms`);
    }
    assert.ok(result.acquires > 0, "the client acquired during the resync");
    const backup = await summary(cluster.urls[backupId]);
    assert.ok(backup && backup.lockCount >= LOCKS, `the backup holds the table (${backup?.lockCount} locks)`);
    console.log(`${measured}: the backup's longest stall since its start ${backup.loopStallMaxMs} ms`);
  } finally {
    await cluster.stopAll();
  }
}

test("resync: a backup killed and restarted under load syncs 100,000 held locks in time while the primary keeps serving without a long stall", { timeout: 300_000 }, () => resyncUnderKill(false));

test("resync, durable = true: the same, the backup writing the copy to its log before it acks it", { timeout: 300_000 }, () => resyncUnderKill(true));
