/**
 * What idle sessions cost (issue 14, docs/bench.md "Keepalives"): a replicated deployment
 * (arbiter + primary + backup, peer traffic authenticated with a cluster secret unless
 * `--no-secret`), `--sessions` sessions opened at the default TTL and each kept alive every TTL/3
 * as mutexd's client does, spread evenly over the period; then the CPU time of each server process
 * (/proc/PID/stat) over `--seconds`, in % of one core (and idle, before any session, over up to
 * 10 s) and in µs per keepalive above idle, and how many keepalives found their session gone.
 *
 *   bun tests/bench/keepalive_cost.ts [--sessions 10000] [--seconds 20] [--no-secret]
 *
 * One driver process sends every keepalive (plain fetch, at most IN_FLIGHT_MAX at once; a refused
 * one, 421 when the primary's lease lapsed under load, counts as failed and the session's next
 * one goes a period later, as a real client's would be retried); its own CPU is printed too, so a client limit is not mistaken for a server cost. Stops its processes by
 * PID and removes its folder.
 */
import process from "node:process";
import { dirname } from "node:path";
import { parseArgs } from "node:util";
import { removeDir } from "../_harness.ts";
import { DEFAULT_SETTINGS } from "../../lib/settings.ts";
import { cpuSeconds, startServer } from "./lib/server.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: { sessions: { type: "string" }, seconds: { type: "string" }, "no-secret": { type: "boolean" } },
});
const sessionsWanted = Number(values.sessions ?? 10_000);
const measureMs = Number(values.seconds ?? 20) * 1_000;
if (!(sessionsWanted >= 1 && sessionsWanted <= 50_000) || !(measureMs >= 1_000 && measureMs <= 300_000)) {
  throw new Error("--sessions 1..50000, --seconds 1..300");
}
const TTL_MS = DEFAULT_SETTINGS.sessionTtlMs;
const PERIOD_MS = Math.floor(TTL_MS / 3);
/** Keepalives the driver has open at once, and opens (a budget of their own: sessions opened first must be kept alive meanwhile). */
const IN_FLIGHT_MAX = 64;
const OPENS_IN_FLIGHT_MAX = 16;
const TICK_MS = 10;

interface Held {
  id: string;
  secret: string;
  nextAtMs: number;
}

const loadAtStart = (await import("node:fs")).readFileSync("/proc/loadavg", "utf8").trim();
const server = await startServer({ topology: "replicated", secret: !values["no-secret"] });
const [arbiterPid, primaryPid, backupPid] = server.pids;
const sessions: Held[] = [];
let inFlight = 0; // keepalives
let keptAlive = 0;
let failed = 0;
let lost = 0;

/** Where requests go: the primary, or the server a 421 answer names (a takeover under load). */
let baseUrl = server.url;
let moved = 0;

async function post(path: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`${baseUrl}${path}`, { method: "POST", body: JSON.stringify(body) });
  const answer = await response.json().catch(() => ({}));
  const primaryUrl = response.status === 421 ? answer?.error?.primaryUrl : undefined;
  if (typeof primaryUrl === "string" && server.urls.includes(primaryUrl) && primaryUrl !== baseUrl) {
    baseUrl = primaryUrl;
    moved += 1;
  }
  return { status: response.status, body: answer };
}

/**
 * Opens one session; a lease that lapsed under load (421) is retried after a pause, at most 50
 * times, with the same requestId (a retry of an open that did commit gets that session).
 */
async function openOne(): Promise<{ status: number; body: Record<string, unknown> }> {
  const body = { requestId: crypto.randomUUID() };
  let answer = await post("/v1/sessions", body);
  for (let attempt = 1; attempt < 50 && answer.status === 421; attempt++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    answer = await post("/v1/sessions", body);
  }
  return answer;
}

function keepAlive(held: Held): void {
  inFlight += 1;
  post(`/v1/sessions/${encodeURIComponent(held.id)}/keepalive`, { sessionSecret: held.secret }).then(({ status }) => {
    if (status === 200) keptAlive += 1;
    else if (status === 404) lost += 1;
    else failed += 1;
  }, () => (failed += 1)).finally(() => (inFlight -= 1));
}

/** Sends every keepalive that is due, as long as fewer than IN_FLIGHT_MAX requests are open. */
function pump(nowMs: number): void {
  // Bounded: one pass over the sessions; each is sent at most once per pass.
  for (const held of sessions) {
    if (inFlight >= IN_FLIGHT_MAX) return;
    if (held.nextAtMs > nowMs) continue;
    held.nextAtMs += PERIOD_MS;
    keepAlive(held);
  }
}

// p1 serves at the start, b1 is its backup (movedToAnotherPrimary > 0: a takeover swapped them).
const pids = { a1: arbiterPid, p1: primaryPid, b1: backupPid };
const cpuNow = () => Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuSeconds(pid)]));
/** CPU seconds of each process over `ms`, and the seconds that took. */
async function cpuOver(ms: number): Promise<{ cpu: Record<string, number>; seconds: number }> {
  const [before, t0] = [cpuNow(), performance.now()];
  await new Promise((resolve) => setTimeout(resolve, ms));
  const after = cpuNow();
  return { cpu: Object.fromEntries(Object.keys(pids).map((k) => [k, after[k] - before[k]])), seconds: (performance.now() - t0) / 1_000 };
}
// The deployment idle, without sessions (heartbeats, lease renewals, ticks): what keepalives add to.
const idle = await cpuOver(Math.min(measureMs, 10_000));

const timer = setInterval(() => pump(performance.now()), TICK_MS);
try {
  // Open the sessions (IN_FLIGHT_MAX at once); each is kept alive from its open on, with its
  // phase spread evenly over the period.
  const openStartMs = performance.now();
  for (let next = 0; next < sessionsWanted;) {
    const batch = Math.min(OPENS_IN_FLIGHT_MAX, sessionsWanted - next);
    const opened = await Promise.all(Array.from({ length: batch }, () => openOne()));
    for (const { status, body } of opened) {
      if (status !== 201) throw new Error(`open: ${status} ${JSON.stringify(body)}`);
      const phaseMs = (sessions.length * PERIOD_MS) / sessionsWanted;
      sessions.push({ id: String(body.session), secret: String(body.sessionSecret), nextAtMs: performance.now() + Math.min(phaseMs, PERIOD_MS - 1) });
    }
    next += batch;
  }
  const openSeconds = (performance.now() - openStartMs) / 1_000;
  // One whole period of keepalives before the measurement: the sends are spread by then.
  await new Promise((resolve) => setTimeout(resolve, PERIOD_MS + 500));
  const driverBefore = cpuSeconds("self");
  const keptBefore = keptAlive;
  const { cpu, seconds } = await cpuOver(measureMs);
  const kept = keptAlive - keptBefore;
  const driverCpu = cpuSeconds("self") - driverBefore;
  const pct = (cpuSeconds: number, overSeconds: number) => Number(((100 * cpuSeconds) / overSeconds).toFixed(1));
  const loadAtEnd = (await import("node:fs")).readFileSync("/proc/loadavg", "utf8").trim();
  const result = {
    sessions: sessions.length,
    secret: !values["no-secret"],
    openSeconds: Number(openSeconds.toFixed(1)),
    measuredSeconds: Number(seconds.toFixed(1)),
    keepalivesPerSecond: Math.round(kept / seconds),
    keepalivesLost404: lost,
    keepalivesFailed: failed,
    movedToAnotherPrimary: moved,
    idleCpuPctOfCore: Object.fromEntries(Object.keys(pids).map((k) => [k, pct(idle.cpu[k], idle.seconds)])),
    cpuPctOfCore: Object.fromEntries(Object.keys(pids).map((k) => [k, pct(cpu[k], seconds)])),
    // Above idle: what the keepalives cost.
    cpuUsPerKeepalive: Object.fromEntries(Object.keys(pids).map((k) => [k, Math.round(((cpu[k] - (idle.cpu[k] * seconds) / idle.seconds) * 1e6) / Math.max(1, kept))])),
    driverCpuPct: Number(((100 * driverCpu) / seconds).toFixed(1)),
    loadavg: { start: loadAtStart, end: loadAtEnd },
  };
  console.log(JSON.stringify(result, null, 2));
} finally {
  clearInterval(timer);
  await server.stop(1_000);
  removeDir(dirname(server.logFile));
}
