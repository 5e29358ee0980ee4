/**
 * What replication costs, measured in one run (issue 14): W1, W2 and W3 on a lone primary and on
 * arbiter + primary + backup, interleaved round by round (lone W1, replicated W1, lone W2, …),
 * each on a freshly started deployment. Prints per workload the medians of both, the ratio
 * replicated ÷ lone of the rates, and server CPU per operation (all server processes summed, from
 * /proc/PID/stat) with its ratio; the load average at the start and the end. Ratios from one run
 * on a shared machine say more than the rates.
 *
 *   bun tests/bench/replication.ts [--rounds 3] [--duration 3] [--plain] [--durable] [--pipeline 1,4] [--json FILE]
 *   deno run -A tests/bench/replication.ts ...
 *
 * With a cluster secret by default (every peer message authenticated, as a deployment runs;
 * `--plain`: without). `--pipeline 1,4`: one replicated deployment per `replicationPipelineMax`
 * value, each in every round right after the lone one, each with its own column (else the default).
 * Servers run under this script's runtime. Every loop is bounded by its
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
    pipeline: { type: "string" },
    json: { type: "string" },
  },
});
const rounds = Number(flags.rounds ?? 3);
const durationMs = Number(flags.duration ?? 3) * 1000;
if (!(rounds >= 1 && rounds <= 20) || !(durationMs >= 500 && durationMs <= 60_000)) throw new Error("--rounds must be 1..20 and --duration 0.5..60 s");
const secret = !flags.plain;
const durable = flags.durable ?? false;
const pipelines = flags.pipeline === undefined ? [undefined] : flags.pipeline.split(",").map(Number);
if (pipelines.length > 4 || !pipelines.every((p) => p === undefined || (Number.isInteger(p) && p >= 1 && p <= 64))) throw new Error("--pipeline takes up to 4 integers 1..64");
const jsonFile = flags.json ?? join(ROOT, "tests/bench/results/replication.json");

/** Each workload's rate and server CPU per operation, by the names its metrics use. */
const WORKLOADS: Array<{ workload: Workload; rate: string; usPerOp: string; unit: string }> = [
  { workload: w1, rate: "rate", usPerOp: "serverUsPerOp", unit: "a+r/s" },
  { workload: w2, rate: "rate", usPerOp: "serverUsPerOp", unit: "a+r/s" },
  { workload: w3, rate: "handoffsPerS", usPerOp: "serverUsPerGrant", unit: "handoffs/s" },
];
/** The deployments of each workload in a round, in order: the lone primary, then one replicated per pipeline value. */
interface Deployment {
  name: string;
  topology: Topology;
  settings: Record<string, number>;
}
const DEPLOYMENTS: Deployment[] = [
  { name: "lone", topology: "single", settings: {} },
  ...pipelines.map((p): Deployment =>
    p === undefined ? { name: "replicated", topology: "replicated", settings: {} } : { name: `replicated p=${p}`, topology: "replicated", settings: { replicationPipelineMax: p } }
  ),
];

const log = (message: string) => process.stderr.write(`[replication] ${message}\n`);
const loadStart = loadavg();
log(`${currentRuntime}, ${rounds} round(s) × W1,W2,W3 × lone/replicated, ${durationMs / 1000} s phases${secret ? ", cluster secret" : ""}${durable ? ", durable" : ""}; load average ${loadStart.map((l) => l.toFixed(2)).join(" ")}`);

/** results[workload id][deployment name]: one Metrics per round. */
const results: Record<string, Record<string, Metrics[]>> = {};
const failures: string[] = [];
for (let round = 1; round <= rounds; round++) {
  for (const { workload, rate, usPerOp } of WORKLOADS) {
    for (const { name, topology, settings } of DEPLOYMENTS) {
      const servers: ServerHandle[] = [];
      const ctx: WorkloadContext = {
        client: "project",
        durationMs,
        run: round,
        serverRuntime: currentRuntime,
        topology,
        settings,
        keepLogs: false,
        startServer: async (options) => {
          const server = await startServer({ runtime: currentRuntime, topology, durable, secret, settings, ...options });
          servers.push(server);
          return server;
        },
        adopt: (server) => void servers.push(server),
        log,
      };
      try {
        const { metrics, notes } = await workload.run(ctx);
        ((results[workload.id] ??= {})[name] ??= []).push({ ...metrics, loadavg1: loadavg()[0] });
        log(`round ${round} ${workload.id} ${name}: ${fmt(metrics[rate])}/s, ${fmt(metrics[usPerOp])} µs server CPU per op`);
        for (const note of notes ?? []) log(`  note: ${note}`);
      } catch (error) {
        failures.push(`round ${round} ${workload.id} ${name}: ${(error as Error).message}`);
        log(`round ${round} ${workload.id} ${name}: FAILED: ${(error as Error).message}`);
      } finally {
        await Promise.all(servers.map((s) => s.stop()));
        // Each deployment's folder (cluster file, logs); a failed round's notes say what went wrong.
        removeServerDirs(false);
      }
    }
  }
}
const loadEnd = loadavg();

const replicatedNames = DEPLOYMENTS.slice(1).map((d) => d.name);
const rows: string[][] = [["workload", "lone", ...replicatedNames.flatMap((n) => [n, "ratio"]), "server µs/op lone", ...replicatedNames.flatMap((n) => [`${n} (all processes)`, "ratio"])]];
const summary: unknown[] = [];
for (const { workload, rate, usPerOp, unit } of WORKLOADS) {
  const cell = results[workload.id];
  if (!cell || !cell.lone?.length || replicatedNames.some((n) => !cell[n]?.length)) {
    rows.push([workload.id, "failed", ...rows[0].slice(2).map(() => "")]);
    continue;
  }
  const m = (name: string, key: string) => median(cell[name].map((r) => r[key]));
  const [lone, loneUs] = [m("lone", rate), m("lone", usPerOp)];
  const each = replicatedNames.map((name) => ({ name, replicated: m(name, rate), replicatedUs: m(name, usPerOp) }));
  rows.push([
    `${workload.id} ${unit}`,
    fmt(lone),
    ...each.flatMap((e) => [fmt(e.replicated), `${(e.replicated / lone).toFixed(2)}×`]),
    fmt(loneUs),
    ...each.flatMap((e) => [fmt(e.replicatedUs), `${(e.replicatedUs / loneUs).toFixed(2)}×`]),
  ]);
  for (const e of each) {
    summary.push({ workload: workload.id, deployment: e.name, lone, replicated: e.replicated, rateRatio: e.replicated / lone, loneUsPerOp: loneUs, replicatedUsPerOp: e.replicatedUs, cpuRatio: e.replicatedUs / loneUs });
  }
}
const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => [...r[c]].length)));
const line = (r: string[]) => `| ${r.map((cell, c) => cell.padEnd(widths[c])).join(" | ")} |`;
console.log(`replication cost, medians of ${rounds} round(s), ${currentRuntime}${secret ? ", cluster secret" : ""}${durable ? ", durable" : ""}; load average ${loadStart[0].toFixed(2)} at the start, ${loadEnd[0].toFixed(2)} at the end`);
console.log([line(rows[0]), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...rows.slice(1).map(line)].join("\n"));
for (const failure of failures) console.log(`FAILED: ${failure}`);

mkdirSync(dirname(jsonFile), { recursive: true });
writeFileSync(jsonFile, JSON.stringify({ runtime: currentRuntime, rounds, durationMs, secret, durable, pipelines, loadStart, loadEnd, summary, results, failures }, null, 2));
log(`wrote ${jsonFile}`);
process.exit(failures.length > 0 ? 1 : 0);
