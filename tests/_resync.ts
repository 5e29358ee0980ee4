/**
 * A returning backup under a large table (issue 11), for the process test (resync_process_test.ts)
 * and the bench (workloads/f3.ts): fill the primary's table with held locks, then kill -9 the
 * backup and start it again while a client keeps acquiring, and measure how long the backup takes
 * to be in sync again and the primary's longest event-loop stall meanwhile (`loopStallRecentMaxMs`
 * of `GET /v1/status?summary=1`, cluster/stall_monitor.ts). Not a test file.
 */
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
 * Fills the table at `url` (the primary) with `locks` held locks over `sessions` sessions,
 * `concurrency` enters at once; bounded by `deadlineMs`. Returns the locks granted.
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
  await pool(locks, concurrency, async (i) => {
    // A loaded machine may pause the primary past its lease ("not primary") or a request past
    // its timeout: ask again (an enter of a lock the session holds answers the same grant).
    for (;;) {
      if (Date.now() > endMs) throw new Error(`filling ${locks} locks took over ${deadlineMs} ms (${granted} granted)`);
      const answer = await post(`${url}/v1/enter`, { name: `fill/${i}`, ...opened[i % opened.length] }).catch((error: Error) => ({ status: 0, body: { error: error.message } as Record<string, unknown> }));
      if (answer.body.granted === true) break;
      if (answer.status !== 0 && answer.status !== 421) throw new Error(`enter fill/${i}: ${answer.status} ${JSON.stringify(answer.body)}`);
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
  server: { role: string; backup: { mode: string; arbiterRecordedInSync: boolean } | null };
}

export async function summary(url: string): Promise<SummaryStatus | undefined> {
  try {
    const response = await fetch(`${url}/v1/status?summary=1`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    return response.ok ? await response.json() as SummaryStatus : undefined;
  } catch {
    return undefined;
  }
}

export interface ResyncResult {
  /** From the backup's restart (its HTTP answering) until the primary counts it in sync and the arbiter recorded it. */
  resyncMs: number;
  /** The primary's longest event-loop stall from the kill until in sync. */
  stallMaxMs: number;
  /** The load client's acquires (enter + leave) from the kill until in sync, and the slowest of them. */
  acquires: number;
  acquireMaxMs: number;
  /** Acquires that failed (an error or "not primary"): the primary stopped serving. */
  failures: number;
}

/** Acquires the load client makes before the kill: it runs steadily by then. */
const WARM_ACQUIRES = 10;

/** The load client's lock names: the table needs room for them beside the filled ones. */
export const LOAD_LOCKS = 8;

/**
 * Kills the backup (`killBackup`), starts it again (`startBackup`, resolving once it answers
 * HTTP), and waits until `primaryUrl` counts it in sync again (at most `deadlineMs` after the
 * restart), while a client acquires and releases a lock in a loop. The primary's recent stalls
 * must have faded before (the fill's own), so the figure is the resync's.
 */
export async function resyncUnderLoad(
  primaryUrl: string,
  killBackup: () => Promise<void>,
  startBackup: () => Promise<void>,
  deadlineMs: number,
): Promise<ResyncResult> {
  await eventually("the primary's recent stalls faded (the fill's)", async () => ((await summary(primaryUrl))?.loopStallRecentMaxMs ?? 1e9) < 50, 15_000);
  const { body: opened } = await post(`${primaryUrl}/v1/sessions`, { ttlMs: LONG_TTL_MS });
  const [session, sessionSecret] = [String(opened.session), String(opened.sessionSecret)];
  let loading = true;
  let acquires = 0;
  let failures = 0;
  let acquireMaxMs = 0;
  // Bounded by `loading` (cleared below) and by each request's timeout.
  const load = (async () => {
    for (let i = 0; loading; i++) {
      const t0 = performance.now();
      try {
        const enter = await post(`${primaryUrl}/v1/enter`, { name: `load/${i % LOAD_LOCKS}`, session, sessionSecret, waitMs: 1_000 });
        if (enter.body.granted !== true) throw new Error(JSON.stringify(enter.body));
        const leave = await post(`${primaryUrl}/v1/leave`, { name: `load/${i % LOAD_LOCKS}`, session, sessionSecret, token: enter.body.token });
        if (leave.status !== 200) throw new Error(JSON.stringify(leave.body));
        acquires += 1;
        acquireMaxMs = Math.max(acquireMaxMs, performance.now() - t0);
      } catch {
        failures += 1;
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
    await eventually("the returning backup is in sync again", async () => {
      const backup = (await watchStalls())?.server.backup;
      return backup?.mode === "inSync" && backup.arbiterRecordedInSync;
    }, deadlineMs);
    const resyncMs = performance.now() - restartedAtMs;
    await watchStalls();
    return { resyncMs, stallMaxMs, acquires: acquires - acquiresBeforeKill, acquireMaxMs, failures };
  } finally {
    loading = false;
    await load;
  }
}
