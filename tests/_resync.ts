/**
 * A returning backup under a large table (issue 11), for the process test (resync_process_test.ts)
 * and the bench (workloads/f3.ts): fill the primary's table with held locks, then kill -9 the
 * backup and start it again while a client keeps acquiring, and measure how long the backup takes
 * to be in sync again and the primary's longest event-loop stall meanwhile (`loopStallRecentMaxMs`
 * of `GET /v1/status?summary=1`, cluster/stall_monitor.ts); and read a node's stalls from its
 * log, each with the CPU time the node used in it. Not a test file.
 */
import { readdirSync, readFileSync } from "node:fs";
import { eventually, sleep } from "./_harness.ts";

/** Sessions of the filler and the load client outlive any test (no keepalives needed). */
const LONG_TTL_MS = 600_000;
const REQUEST_TIMEOUT_MS = 10_000;

async function post(url: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  return { status: response.status, body: await response.json() as Record<string, unknown> };
}

/** Runs `count` jobs with at most `concurrency` at once. */
async function pool(count: number, concurrency: number, job: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < count) await job(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}

/**
 * Fills the table at `url` (the primary, or the server a takeover made primary meanwhile) with
 * `locks` held locks over `sessions` sessions, `concurrency` enters at once; bounded by
 * `deadlineMs`. Returns the locks granted.
 */
export async function fillLocks(url: string, options: { locks: number; sessions: number; concurrency: number; deadlineMs: number }): Promise<number> {
  const { locks, sessions, concurrency, deadlineMs } = options;
  const endMs = Date.now() + deadlineMs;
  const opened: Array<{ session: string; sessionSecret: string }> = [];
  await pool(sessions, concurrency, async () => {
    const answer = await post(`${url}/v1/sessions`, { ttlMs: LONG_TTL_MS });
    if (answer.status !== 201) throw new Error(`open session: ${answer.status} ${JSON.stringify(answer.body)}`);
    opened.push({ session: String(answer.body.session), sessionSecret: String(answer.body.sessionSecret) });
  });
  let granted = 0;
  let target = url;
  let lastRefusal = "none";
  await pool(locks, concurrency, async (i) => {
    // A loaded machine may pause the primary past its lease ("not primary") or a request past
    // its timeout: ask again (an enter of a lock the session holds answers the same grant). A
    // pause past the backup's lease is a takeover (docs/bench.md, issue 14): the refusal names
    // the new primary, and the fill goes on there (the sessions are replicated).
    for (;;) {
      if (Date.now() > endMs) throw new Error(`filling ${locks} locks took over ${deadlineMs} ms (${granted} granted; the last refusal: ${lastRefusal})`);
      const answer = await post(`${target}/v1/enter`, { name: `fill/${i}`, ...opened[i % opened.length] }).catch((error: Error) => ({ status: 0, body: { error: error.message } as Record<string, unknown> }));
      if (answer.body.granted === true) break;
      if (answer.status !== 0 && answer.status !== 421) throw new Error(`enter fill/${i}: ${answer.status} ${JSON.stringify(answer.body)}`);
      lastRefusal = JSON.stringify(answer.body);
      const named = (answer.body.error as { primaryUrl?: unknown } | undefined)?.primaryUrl;
      if (answer.status === 421 && typeof named === "string" && named !== "") target = named;
      // A pause before the retry (not a wait for a condition: the loop asks again, bounded by endMs).
      await sleep(50);
    }
    granted += 1;
  });
  return granted;
}

export interface SummaryStatus {
  loopStallMaxMs: number;
  loopStallRecentMaxMs: number;
  lockCount: number;
  server: { role: string; serving: boolean; backup: { id: string; mode: string; arbiterRecordedInSync: boolean } | null };
}

export async function summary(url: string): Promise<SummaryStatus | undefined> {
  try {
    const response = await fetch(`${url}/v1/status?summary=1`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    return response.ok ? await response.json() as SummaryStatus : undefined;
  } catch {
    return undefined;
  }
}

/** A stall line of a node's log (docs/http-api.md, cluster/metrics.ts) and the CPU the process used in it. */
export interface LoggedStall {
  stallMs: number;
  /** Near `stallMs`: the node worked through the stall; near 0: it waited (a busy host's run queue, a stop). */
  cpuMs: number;
  /** When the node logged it, the stall's end (its `ts`, the wall clock: Date.now() of the same host). */
  endMs: number;
}

/**
 * The lines of `log` (a node's stderr, one JSON object per line: cluster/log.ts) that start at or
 * after `offset`, the last one only if ended: the pipe may cut a line anywhere.
 */
export function wholeLines(log: string, offset: number): string[] {
  const cut = offset === 0 || log[offset - 1] === "\n" ? offset - 1 : log.indexOf("\n", offset);
  if (cut === -1 && offset > 0) return [];
  return log.slice(cut + 1, log.lastIndexOf("\n") + 1).split("\n").filter((line) => line !== "");
}

/** Whether `line` is a log line of `event`. */
export function isEvent(line: string, event: string): boolean {
  return line.includes(`"event":"${event}"`);
}

/**
 * The stalls `lines` log as `event`: `loopStall` (a lock server's, 100 ms or more) or
 * `stalledPastLeaseMargin` (any node's, past `leaseSafetyMs`). Each must carry `cpuMs` (the
 * nodes' stall monitors have a CPU clock): a line without it is a broken log.
 */
export function loggedStalls(lines: string[], event: "loopStall" | "stalledPastLeaseMargin"): LoggedStall[] {
  return lines.filter((line) => isEvent(line, event)).map((line) => {
    const fields = JSON.parse(line) as { stallMs?: unknown; cpuMs?: unknown; ts?: unknown };
    const endMs = typeof fields.ts === "string" ? Date.parse(fields.ts) : Number.NaN;
    if (typeof fields.stallMs !== "number" || typeof fields.cpuMs !== "number" || Number.isNaN(endMs)) throw new Error(`a ${event} line without stallMs, cpuMs and ts: ${line}`);
    return { stallMs: fields.stallMs, cpuMs: fields.cpuMs, endMs };
  });
}

/**
 * The scheduler's times of a process's main thread (its event loop) so far, from
 * /proc/<pid>/schedstat: on a CPU (field 1) and runnable but waiting on the run queue (field 2),
 * in ms. Over a window, its length less both is the time the thread slept (waited on I/O or a timer).
 */
export function schedMs(pid: number): { runMs: number; queuedMs: number } {
  return schedstatMs(readFileSync(`/proc/${pid}/schedstat`, "utf8"), `/proc/${pid}/schedstat`);
}

/** The first two fields of a schedstat file's `text` in ms (`path` names it in the error). */
function schedstatMs(text: string, path: string): { runMs: number; queuedMs: number } {
  const [runNs, queuedNs] = text.trim().split(/\s+/).map(Number);
  if (!Number.isFinite(runNs) || !Number.isFinite(queuedNs)) throw new Error(`${path} unreadable`);
  return { runMs: runNs / 1e6, queuedMs: queuedNs / 1e6 };
}

/**
 * The same summed over every thread of the process (/proc/<pid>/task/<tid>/schedstat): the work
 * a runtime moves off its event loop (Bun's HTTP client thread, node:fs's pool) and those
 * threads' run-queue waits count too. A thread that ended since is missing from the sum (its
 * time then looks like sleep: the sum errs toward less work, never more).
 */
export function threadsSchedMs(pid: number): { runMs: number; queuedMs: number } {
  const total = { runMs: 0, queuedMs: 0 };
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    const path = `/proc/${pid}/task/${tid}/schedstat`;
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch {
      continue; // the thread ended between the listing and the read
    }
    const thread = schedstatMs(text, path);
    total.runMs += thread.runMs;
    total.queuedMs += thread.queuedMs;
  }
  return total;
}

export interface ResyncOptions {
  /**
   * Wait before the kill until the primary's recent stall figure (10 s window) is under 50 ms,
   * so that `stallMaxMs` is the resync's and not the fill's (default true: the bench's figure,
   * on a quiet machine). On a busy host the run queue's waits keep that figure up for good, so
   * a test that reads the stalls from the log since the kill does not wait on it.
   */
  waitStallsFade?: boolean;
  /**
   * Called once, inside the wait for the end of the resync, as soon as a status of the primary
   * shows the backup in sync (before the wait for the arbiter's record and the rest of the
   * function): a test takes its closing measurements of the copy there, not after the tail.
   * `notInSyncAtMs` (performance.now()) is when the request for the last status that did not
   * show it in sync was sent (or the restart): the backup came in sync after that.
   */
  onInSync?: (notInSyncAtMs: number) => void;
}

export interface ResyncResult {
  /** From the backup's restart (its HTTP answering) until the primary counts it in sync and the arbiter recorded it. */
  resyncMs: number;
  /**
   * The primary's longest event-loop stall from the kill until in sync (with `waitStallsFade`
   * false, possibly one of the 10 s before the kill).
   */
  stallMaxMs: number;
  /** The load client's acquires (enter + leave) from the kill until in sync, and the slowest of them. */
  acquires: number;
  acquireMaxMs: number;
  /** Acquires that failed (an error or "not primary"): the primary stopped serving. */
  failures: number;
  /**
   * Of `failures`, the primary's refusals because its own lease lapsed: `not_primary` naming
   * itself as the primary (lib/core/lock/replica_state.ts). A node that waits on a busy host's
   * run queue past the lease's margin (the primary or the arbiter that renews it) causes them.
   */
  lapses: number;
  /** What the first failures failed with (at most FAILURES_KEPT). */
  failureReasons: string[];
  /**
   * The lapses in runs (refusals with no other answer between them), at most LAPSE_RUNS_KEPT: a
   * test compares them with the logged waits that cause lapses.
   */
  lapseRuns: LapseRun[];
}

/**
 * A run of lapse refusals, by the wall clock (Date.now()) of the client. A refusal was answered
 * after its request was sent and before the client handled it, so the primary refused first
 * between `firstSentMs` and `firstMs`, and the run lasted at least `lastSentMs - firstMs` (the
 * client's own delays in handling answers only shorten that).
 */
export interface LapseRun {
  /** When the client sent the first refused request. */
  firstSentMs: number;
  /** When the client handled the first refusal. */
  firstMs: number;
  /** When the client sent the last refused request. */
  lastSentMs: number;
  refusals: number;
}

const FAILURES_KEPT = 5;
/** Runs of lapses kept: each costs the client at least one lease, so a resync has few; more are counted only (`lapses`). */
const LAPSE_RUNS_KEPT = 100;

/** An answer of the primary that failed a step of the load client, and whether it was a lapse (ResyncResult). */
class LoadFailure extends Error {
  readonly lapse: boolean;
  /** When the refused request was sent (Date.now()). */
  readonly sentMs: number;
  constructor(primaryUrl: string, answer: Record<string, unknown>, sentMs: number) {
    super(JSON.stringify(answer));
    const error = answer.error as { code?: unknown; primaryUrl?: unknown } | undefined;
    this.lapse = error?.code === "not_primary" && error.primaryUrl === primaryUrl;
    this.sentMs = sentMs;
  }
}

/** Acquires the load client makes before the kill: it runs steadily by then. */
const WARM_ACQUIRES = 10;

/** The load client's lock names: the table needs room for them beside the filled ones. */
export const LOAD_LOCKS = 8;

/**
 * Kills the backup (`killBackup`), starts it again (`startBackup`, resolving once it answers
 * HTTP), and waits until `primaryUrl` counts it in sync again (at most `deadlineMs` after the
 * restart), while a client acquires and releases a lock in a loop. With `waitStallsFade`
 * the primary's recent stalls must have faded before (the fill's own), so `stallMaxMs` is the
 * resync's.
 */
export async function resyncUnderLoad(
  primaryUrl: string,
  killBackup: () => Promise<void>,
  startBackup: () => Promise<void>,
  deadlineMs: number,
  options: ResyncOptions = {},
): Promise<ResyncResult> {
  if (options.waitStallsFade ?? true) {
    await eventually("the primary's recent stalls faded (the fill's)", async () => ((await summary(primaryUrl))?.loopStallRecentMaxMs ?? 1e9) < 50, 15_000);
  }
  const { body: opened } = await post(`${primaryUrl}/v1/sessions`, { ttlMs: LONG_TTL_MS });
  const [session, sessionSecret] = [String(opened.session), String(opened.sessionSecret)];
  let loading = true;
  let acquires = 0;
  let failures = 0;
  let lapses = 0;
  const failureReasons: string[] = [];
  const lapseRuns: LapseRun[] = [];
  /** The run the last failure was in (undefined after any other answer, or past LAPSE_RUNS_KEPT). */
  let lapseRun: LapseRun | undefined;
  let acquireMaxMs = 0;
  // Bounded by `loading` (cleared below) and by each request's timeout.
  const load = (async () => {
    for (let i = 0; loading; i++) {
      const t0 = performance.now();
      try {
        const enterSentMs = Date.now();
        const enter = await post(`${primaryUrl}/v1/enter`, { name: `load/${i % LOAD_LOCKS}`, session, sessionSecret, waitMs: 1_000 });
        if (enter.body.granted !== true) throw new LoadFailure(primaryUrl, enter.body, enterSentMs);
        const leaveSentMs = Date.now();
        const leave = await post(`${primaryUrl}/v1/leave`, { name: `load/${i % LOAD_LOCKS}`, session, sessionSecret, token: enter.body.token });
        if (leave.status !== 200) throw new LoadFailure(primaryUrl, leave.body, leaveSentMs);
        acquires += 1;
        acquireMaxMs = Math.max(acquireMaxMs, performance.now() - t0);
        lapseRun = undefined;
      } catch (error) {
        failures += 1;
        if (error instanceof LoadFailure && error.lapse) {
          lapses += 1;
          if (lapseRun) {
            lapseRun.lastSentMs = error.sentMs;
            lapseRun.refusals += 1;
          } else if (lapseRuns.length < LAPSE_RUNS_KEPT) {
            lapseRun = { firstSentMs: error.sentMs, firstMs: Date.now(), lastSentMs: error.sentMs, refusals: 1 };
            lapseRuns.push(lapseRun);
          }
        } else {
          lapseRun = undefined;
        }
        if (failureReasons.length < FAILURES_KEPT) failureReasons.push((error as Error).message);
        // Back off before the next round (counted as a failure; the loop ends with `loading`).
        await sleep(10);
      }
    }
  })();
  let stallMaxMs = 0;
  const watchStalls = async () => {
    const status = await summary(primaryUrl);
    stallMaxMs = Math.max(stallMaxMs, status?.loopStallRecentMaxMs ?? 0);
    return status;
  };
  try {
    // The load runs before the kill; what it did until then is not the resync's.
    await eventually("the load client acquires before the kill", () => acquires >= WARM_ACQUIRES, 10_000);
    const acquiresBeforeKill = acquires;
    acquireMaxMs = 0;

    await killBackup();
    await eventually("the primary drops the killed backup", async () => (await watchStalls())?.server.backup?.mode !== "inSync", 10_000);
    await startBackup();
    const restartedAtMs = performance.now();
    let inSyncSeen = false;
    let notInSyncAtMs = restartedAtMs;
    await eventually("the returning backup is in sync again", async () => {
      const askedAtMs = performance.now();
      const backup = (await watchStalls())?.server.backup;
      if (backup?.mode !== "inSync") {
        notInSyncAtMs = askedAtMs;
      } else if (!inSyncSeen) {
        inSyncSeen = true;
        options.onInSync?.(notInSyncAtMs);
      }
      return backup?.mode === "inSync" && backup.arbiterRecordedInSync;
    }, deadlineMs);
    const resyncMs = performance.now() - restartedAtMs;
    await watchStalls();
    return { resyncMs, stallMaxMs, acquires: acquires - acquiresBeforeKill, acquireMaxMs, failures, lapses, failureReasons, lapseRuns: lapseRuns.map((run) => ({ ...run })) };
  } finally {
    loading = false;
    await load;
  }
}
