/**
 * The lone primary's CPU per acquire+release in process (issue 14, docs/bench.md "The lone primary's HTTP
 * path"): a lock service without peer or arbiter, its app (cluster/lock/api.ts, fast path on (api_fast_path.ts): no client
 * tokens) wrapped as the server wraps it (answers counted, lock metrics fed), driven by W1's requests
 * (an enter and a leave with a requestId, as mutexd's client sends them) on `fetch` directly, without
 * sockets. What this leaves out is the runtime's HTTP server, which W0 measures.
 *
 *   bun tests/bench/lone_primary_cost.ts          deno run -A tests/bench/lone_primary_cost.ts
 *
 * Prints the median over ROUNDS rounds of the process's CPU time (user + system) per a+r, after a warm-up
 * that fills the remembered answers (answeredMax) as a long W1 run does. Also run under
 * `bun --cpu-prof-md` for a profile of the path alone. Every loop is bounded by its count.
 *
 * The script's own part (building each Request, reading each answer's JSON) is measured in the same
 * rounds against a fetch that answers at once with a fixed `Response.json`, and subtracted: it is
 * not the server's work, and it differs by runtime (Deno about 8 µs per a+r, Bun about 3: docs/bench.md,
 * seventh pass), so the total alone overstates Deno's route by about 5 µs against Bun's.
 */
import process from "node:process";
import { monotonicClock } from "../../cluster/clock.ts";
import { createLockApp } from "../../cluster/lock/api.ts";
import { LockService } from "../../cluster/lock/service.ts";
import { jsonLogger } from "../../cluster/log.ts";
import { nodeInstruments } from "../../cluster/metrics.ts";
import { LockMetrics } from "../../cluster/lock/metrics.ts";
import { SecurityLog } from "../../cluster/security_log.ts";
import { realTimers } from "../../cluster/timers.ts";
import { DEFAULT_SETTINGS } from "../../lib/settings.ts";
import { median } from "./lib/stats.ts";

const ROUNDS = 5;
const PER_ROUND = 20_000;
const WARM_UP = 12_000;
const settings = DEFAULT_SETTINGS;
// As a server at the default level (info): nothing per operation is written.
const log = jsonLogger("p1", settings.logPendingLinesMax, () => {}, "info");
const security = new SecurityLog(monotonicClock, log, settings.securityLogIntervalMs);
const instruments = nodeInstruments({ nodeId: "p1", log, security, leaseSafetyMs: settings.leaseSafetyMs });
const service: LockService = new LockService({
  settings,
  security,
  clock: monotonicClock,
  log,
  nodeId: "p1",
  peer: null,
  arbiter: null,
  transport: { send: () => Promise.reject(new Error("no peers")) },
  timers: realTimers,
  sessionIdPrefix: "p1-0badcafe-",
  tokenFloor: 0,
  metrics: new LockMetrics(instruments.metrics, monotonicClock, () => ({ sessionCount: 0, lockCount: 0, epoch: 0, lagEntries: null })),
});
const app = createLockApp(service, { nodeId: "p1", role: "primary", settings, security });
const lockFetch = instruments.metrics.countingFetch(app.fetch);
type Fetch = (request: Request) => Response | Promise<Response>;
/** The script's own part alone: no route, an answer of the enter's shape (the loop reads its token). */
const ownPartFetch: Fetch = () => Response.json({ granted: true, token: 1 });

const BASE = "http://127.0.0.1:7001";
const SECRET = "b".repeat(43);
async function post(fetch: Fetch, path: string, body: unknown): Promise<Record<string, unknown>> {
  const text = JSON.stringify(body);
  const request = new Request(BASE + path, { method: "POST", headers: { "content-type": "application/json", "content-length": String(text.length) }, body: text });
  const response = await fetch(request);
  const answer = await response.json() as Record<string, unknown>;
  if (response.status >= 300) throw new Error(`${path}: ${response.status} ${JSON.stringify(answer)}`);
  return answer;
}

// The service needs its first tick to take the primary role.
for (let i = 0; i < 100 && service.summary().server.role !== "primary"; i++) {
  service.tick();
  await new Promise((resolve) => setTimeout(resolve, 10)); // retry backoff while the role is taken
}
const { session } = await post(lockFetch, "/v1/sessions", { ttlMs: 60_000, sessionSecret: SECRET }) as { session: string };
let call = 0;
async function cycles(fetch: Fetch, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const id = `${(call++).toString(16).padStart(8, "0")}-2f4d-4c1b-9a57-3d2e1f0a9b8c`;
    const grant = await post(fetch, "/v1/enter", { name: "w1-0", session, sessionSecret: SECRET, waitMs: 10_000, callId: id });
    await post(fetch, "/v1/leave", { name: "w1-0", session, sessionSecret: SECRET, token: grant.token, requestId: id });
    if (i % 1_000 === 0) service.tick(); // sessions stay alive; the tick runs as the server's would
  }
}
const cpuUs = () => {
  const usage = process.cpuUsage();
  return usage.user + usage.system;
};
/** CPU µs per a+r of `count` cycles through `fetch`. */
async function measured(fetch: Fetch, count: number): Promise<number> {
  const startUs = cpuUs();
  await cycles(fetch, count);
  return (cpuUs() - startUs) / count;
}
await cycles(lockFetch, WARM_UP);
await cycles(ownPartFetch, WARM_UP / 4);
const totals: number[] = [];
const ownParts: number[] = [];
for (let round = 0; round < ROUNDS; round++) {
  totals.push(await measured(lockFetch, PER_ROUND));
  ownParts.push(await measured(ownPartFetch, PER_ROUND / 4));
}
service.stop();
// Each round's route is its total less its own part, so a load swing between rounds does not mix in.
const routes = totals.map((total, round) => total - ownParts[round]);
const list = (values: number[]) => values.map((value) => value.toFixed(1)).join(", ");
process.stdout.write(
  `lone primary in process: ${median(totals).toFixed(1)} µs CPU per acquire+release (rounds: ${list(totals)}); ` +
    `the script's own part ${median(ownParts).toFixed(1)} µs (${list(ownParts)}); ` +
    `the route alone ${median(routes).toFixed(1)} µs (${list(routes)})\n`,
);
process.exit(0);
