/**
 * Where F1's time goes (issue 14): arbiter + primary + backup, `kill -9` of the primary as the F1
 * workload does it (tests/bench/workloads/f1.ts), and per kill, in ms after the kill:
 * - `takeover`: the backup's "primary" log line (it serves from then on);
 * - `tries`: every HTTP request of the client's next acquire (server, answer, when it was sent and
 *   when it was answered), from a fetch port that records them;
 * - `granted`: when the acquire returned; `gap` = granted − takeover (the client's part);
 * - `lease`: what was left at the kill of the later of the arbiter's lease (a1's status) and the
 *   backup's last promise (b1's status), both read just before it; `claim` = takeover − lease
 *   (the backup's part: its tick, its claims, the arbiter's answer).
 * Log lines carry wall-clock milliseconds; so does the kill's time here.
 *
 *   node_modules/.bin/bun tests/bench/f1_breakdown.ts [--kills 6] [--set key=value,...]
 */
import { dirname, join } from "node:path";
import { readFileSync } from "node:fs";
import { connect } from "../../lib/client/lock_client.ts";
import { type FetchPort, realFetch } from "../../lib/client/http.ts";
import { removeServerDirs, signal, startServer } from "./lib/server.ts";
import { median } from "./lib/stats.ts";
import { eventually } from "../_harness.ts";
import { sleep } from "./lib/workload.ts";

const args = process.argv.slice(2);
const arg = (name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const kills = Number(arg("--kills") ?? 6);
if (!Number.isInteger(kills) || kills < 1 || kills > 50) throw new Error("--kills must be 1..50");
const settings: Record<string, number> = {};
for (const pair of (arg("--set") ?? "").split(",").filter(Boolean)) {
  const [key, value] = pair.split("=");
  settings[key] = Number(value);
}

interface Try {
  server: string;
  sentMs: number;
  answeredMs: number;
  outcome: string;
}

/** Wall-clock ms of the first log line of `node` with `event` at or after `afterMs`. */
function eventAt(logFile: string, event: string, afterMs: number): number | undefined {
  for (const line of readFileSync(logFile, "utf8").split("\n")) {
    if (!line.includes(`"event":"${event}"`)) continue;
    const ms = Date.parse((JSON.parse(line) as { ts: string }).ts);
    if (ms >= afterMs) return ms;
  }
  return undefined;
}

/** `GET url/v1/status` as JSON (bounded by the runtime's fetch; the servers are on loopback). */
async function status(url: string): Promise<Record<string, Record<string, unknown>>> {
  return await (await fetch(`${url}/v1/status`)).json();
}

const rows: Array<{ takeover: number; granted: number; gap: number; lease: number; claim: number }> = [];
try {
  for (let k = 0; k < kills; k++) {
    const server = await startServer({ topology: "replicated", settings });
    const names = new Map([[server.urls[0], "p1"], [server.urls[1], "b1"]]);
    // Only a backup the arbiter recorded in sync may take over: a kill before would measure nothing.
    await eventually("the backup recorded in sync", async () => {
      const status = await (await fetch(`${server.url}/v1/status`)).json() as { server?: { backup?: { arbiterRecordedInSync?: boolean } } };
      return status.server?.backup?.arbiterRecordedInSync === true;
    }, 5_000);
    let killedAtMs = Number.POSITIVE_INFINITY;
    const tries: Try[] = [];
    const recording: FetchPort = (url, init) => {
      const sentMs = Date.now();
      const server = names.get(url.replace(/(https?:\/\/[^/]+).*/, "$1")) ?? url;
      const record = (outcome: string) => {
        if (sentMs >= killedAtMs) tries.push({ server, sentMs: sentMs - killedAtMs, answeredMs: Date.now() - killedAtMs, outcome });
      };
      return Promise.resolve(realFetch(url, init)).then(
        (response) => (record(String(response.status)), response),
        (error) => (record(error instanceof Error ? error.name : "error"), Promise.reject(error)),
      );
    };
    const client = connect({ servers: server.urls, failoverTimeoutMs: 10_000, fetch: recording });
    const held = await client.lock("f1-held", { ttlMs: 10_000 });
    // A timed phase, not a wait for a condition: each kill lands at another phase of the
    // primary's 100 ms renewal cycle, as F1 does.
    await sleep(300 + (k * 37) % 100);
    const arbiterUrl = `http://${/id = "a1"\nrole = "arbiter"\nhttp = "([^"]+)"/.exec(readFileSync(join(dirname(server.logFile), "cluster.toml"), "utf8"))![1]}`;
    const readAtMs = Date.now();
    const [a1, b1] = await Promise.all([status(arbiterUrl), status(server.urls[1])]);
    killedAtMs = Date.now();
    signal(server.pid, "SIGKILL");
    const probe = await client.lock(`f1-probe-${k}`, { ttlMs: 10_000, waitMs: 0 });
    const grantedMs = Date.now() - killedAtMs;
    const backupLog = join(dirname(server.logFile), "b1.log");
    // The log is written after the event (cluster/log.ts): wait for the line, bounded.
    let takeoverAtMs: number | undefined;
    await eventually("b1's `primary` log line", () => (takeoverAtMs = eventAt(backupLog, "primary", killedAtMs)) !== undefined, 2_000);
    const takeoverMs = takeoverAtMs! - killedAtMs;
    const leaseMs = Math.max(Number(a1.arbiter.leaseRemainingMs), Number(b1.server.promisedRemainingMs)) - (killedAtMs - readAtMs);
    rows.push({ takeover: takeoverMs, granted: grantedMs, gap: grantedMs - takeoverMs, lease: leaseMs, claim: takeoverMs - leaseMs });
    const shown = tries.map((t) => `${t.server}@${t.sentMs}→${t.answeredMs}:${t.outcome}`).join(" ");
    console.log(
      `kill ${k}: lease left ${leaseMs} ms (arbiter ${a1.arbiter.leaseRemainingMs}, promise ${b1.server.promisedRemainingMs}, read ${killedAtMs - readAtMs} ms before), ` +
        `takeover ${takeoverMs} ms, granted ${grantedMs} ms, gap ${grantedMs - takeoverMs} ms; tries ${shown}`,
    );
    await probe.release();
    await held.release();
    await server.stop(500);
  }
} finally {
  removeServerDirs(false);
}
const col = (key: keyof (typeof rows)[number]) => rows.map((r) => r[key]);
console.log(
  `median of ${rows.length}: lease left ${median(col("lease"))} ms (${Math.min(...col("lease"))}–${Math.max(...col("lease"))}), claim ${median(col("claim"))} ms (${Math.min(...col("claim"))}–${Math.max(...col("claim"))}), takeover ${median(col("takeover"))} ms (${Math.min(...col("takeover"))}–${Math.max(...col("takeover"))}), ` +
    `granted ${median(col("granted"))} ms (${Math.min(...col("granted"))}–${Math.max(...col("granted"))}), gap ${median(col("gap"))} ms`,
);
