/**
 * What replication costs, measured in one run (issue 14): W1, W2 and W3 on a lone primary and on
 * arbiter + primary + backup, interleaved round by round (lone W1, replicated W1, lone W2, …),
 * each on a freshly started deployment. Prints per workload the medians of both, the ratio
 * replicated ÷ lone of the rates, and server CPU per operation (all server processes summed, from
 * /proc/PID/stat) with its ratio; the load average at the start and the end. Ratios from one run
 * on a shared machine say more than the rates.
 *
 *   bun tests/bench/replication.ts [--rounds 3] [--duration 3] [--plain] [--durable] [--json FILE]
 *   deno run -A tests/bench/replication.ts ...
 *
 * With a cluster secret by default (every peer message authenticated, as a deployment runs;
 * `--plain`: without). Servers run under this script's runtime. Every loop is bounded by its
 * counts; servers are stopped by PID.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { ROOT } from "../_harness.ts";
import { currentRuntime, removeServerDirs, type ServerHandle, startServer, type Topology } from "./lib/server.ts";
import { fmt, median } from "./lib/stats.ts";
import type { Metrics, Workload, WorkloadContext } from "./lib/workload.ts";
import w1 from "./workloads/w1.ts";
import w2 from "./workloads/w2.ts";
import w3 from "./workloads/w3.ts";

const { values: flags } = parseArgs({
  args: process.argv.slice(2),
  options: {
    rounds: { type: "string" },
    duration: { type: "string" },
    plain: { type: "boolean" },
    durable: { type: "boolean" },
    json: { type: "string" },
  },
});
const rounds = Number(flags.rounds ?? 3);
const durationMs = Number(flags.duration ?? 3) * 1000;
if (!(rounds >= 1 && rounds <= 20) || !(durationMs >= 500 && durationMs <= 60_000)) throw new Error("--rounds must be 1..20 and --duration 0.5..60 s");
const secret = !flags.plain;
const durable = flags.durable ?? false;
const jsonFile = flags.json ?? join(ROOT, "tests/bench/results/replication.json");

/** Each workload's rate and server CPU per operation, by the names its metrics use. */
const WORKLOADS: Array<{ workload: Workload; rate: string; usPerOp: string; unit: string }> = [
  { workload: w1, rate: "rate", usPerOp: "serverUsPerOp", unit: "a+r/s" },
  { workload: w2, rate: "rate", usPerOp: "serverUsPerOp", unit: "a+r/s" },
  { workload: w3, rate: "handoffsPerS", usPerOp: "serverUsPerGrant", unit: "handoffs/s" },
];
const TOPOLOGIES: Topology[] = ["single", "replicated"];

const log = (message: string) => process.stderr.write(`[replication] ${message}\n`);
const loadStart = loadavg();
log(`${currentRuntime}, ${rounds} round(s) × W1,W2,W3 × lone/replicated, ${durationMs / 1000} s phases${secret ? ", cluster secret" : ""}${durable ? ", durable" : ""}; load average ${loadStart.map((l) => l.toFixed(2)).join(" ")}`);

/** results[workload id][topology]: one Metrics per round. */
const results: Record<string, Record<Topology, Metrics[]>> = {};
const failures: string[] = [];
for (let round = 1; round <= rounds; round++) {
  for (const { workload, rate, usPerOp } of WORKLOADS) {
    for (const topology of TOPOLOGIES) {
      const servers: ServerHandle[] = [];
      const ctx: WorkloadContext = {
        client: "project",
        durationMs,
        run: round,
        serverRuntime: currentRuntime,
        topology,
        settings: {},
        keepLogs: false,
        startServer: async (options) => {
          const server = await startServer({ runtime: currentRuntime, topology, durable, secret, ...options });
          servers.push(server);
          return server;
        },
        adopt: (server) => void servers.push(server),
        log,
      };
      try {
        const { metrics, notes } = await workload.run(ctx);
        ((results[workload.id] ??= { single: [], replicated: [] })[topology]).push({ ...metrics, loadavg1: loadavg()[0] });
        log(`round ${round} ${workload.id} ${topology}: ${fmt(metrics[rate])}/s, ${fmt(metrics[usPerOp])} µs server CPU per op`);
        for (const note of notes ?? []) log(`  note: ${note}`);
      } catch (error) {
        failures.push(`round ${round} ${workload.id} ${topology}: ${(error as Error).message}`);
        log(`round ${round} ${workload.id} ${topology}: FAILED: ${(error as Error).message}`);
      } finally {
        await Promise.all(servers.map((s) => s.stop()));
        // Each deployment's folder (cluster file, logs); a failed round's notes say what went wrong.
        removeServerDirs(false);
      }
    }
  }
}
const loadEnd = loadavg();

const rows: string[][] = [["workload", "lone", "replicated", "ratio", "server µs/op lone", "replicated (all processes)", "ratio"]];
const summary: unknown[] = [];
for (const { workload, rate, usPerOp, unit } of WORKLOADS) {
  const cell = results[workload.id];
  if (!cell || cell.single.length === 0 || cell.replicated.length === 0) {
    rows.push([workload.id, "failed", "", "", "", "", ""]);
    continue;
  }
  const m = (topology: Topology, key: string) => median(cell[topology].map((r) => r[key]));
  const [lone, replicated] = [m("single", rate), m("replicated", rate)];
  const [loneUs, replicatedUs] = [m("single", usPerOp), m("replicated", usPerOp)];
  rows.push([`${workload.id} ${unit}`, fmt(lone), fmt(replicated), `${(replicated / lone).toFixed(2)}×`, fmt(loneUs), fmt(replicatedUs), `${(replicatedUs / loneUs).toFixed(2)}×`]);
  summary.push({ workload: workload.id, lone, replicated, rateRatio: replicated / lone, loneUsPerOp: loneUs, replicatedUsPerOp: replicatedUs, cpuRatio: replicatedUs / loneUs });
}
const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => [...r[c]].length)));
const line = (r: string[]) => `| ${r.map((cell, c) => cell.padEnd(widths[c])).join(" | ")} |`;
console.log(`replication cost, medians of ${rounds} round(s), ${currentRuntime}${secret ? ", cluster secret" : ""}${durable ? ", durable" : ""}; load average ${loadStart[0].toFixed(2)} at the start, ${loadEnd[0].toFixed(2)} at the end`);
console.log([line(rows[0]), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...rows.slice(1).map(line)].join("\n"));
for (const failure of failures) console.log(`FAILED: ${failure}`);

mkdirSync(dirname(jsonFile), { recursive: true });
writeFileSync(jsonFile, JSON.stringify({ runtime: currentRuntime, rounds, durationMs, secret, durable, loadStart, loadEnd, summary, results, failures }, null, 2));
log(`wrote ${jsonFile}`);
process.exit(failures.length > 0 ? 1 : 0);
