/**
 * `make bench`: mutexd's lock server under the peer benchmark's workloads (W1–W4, F1, F2; see
 * docs/bench.md and /work/shared/research/peer-bench.md), each run on a freshly started server,
 * printed as a table of medians next to etcd, Redis and ZooKeeper; then the ring's repair
 * (R1–R5: faults on a 5-node ring with the default settings) in a table of its own beside the
 * issue's targets; all of it written as JSON.
 *
 *   deno run -A tests/bench/run.ts [--only W1,W3|lock|ring] [--runs 3] [--duration 10] [--clients project,http]
 *                                  [--server-runtime bun|deno] [--topology single|replicated] [--json FILE]
 *   bun tests/bench/run.ts ...      (same flags)
 *
 * --quick is --runs 1 --duration 2. Every load loop is bounded in time and count; servers are
 * stopped by PID; everything is on 127.0.0.1.
 */
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { mergeSettings } from "../../lib/settings.ts";
import { ROOT } from "../_harness.ts";
import { CLIENT_KINDS, type ClientKind } from "./lib/clients.ts";
import { currentRuntime, removeServerDirs, type RuntimeName, type ServerHandle, startServer, type Topology } from "./lib/server.ts";
import { fmt, markdown, median, spread } from "./lib/stats.ts";
import { type Metrics, PEER_TITLES, type PeerName, type Workload, type WorkloadContext } from "./lib/workload.ts";

const { values: flags } = parseArgs({
  args: process.argv.slice(2),
  options: {
    only: { type: "string" },
    runs: { type: "string" },
    duration: { type: "string" },
    clients: { type: "string" },
    "server-runtime": { type: "string" },
    topology: { type: "string" },
    durable: { type: "boolean" },
    secret: { type: "boolean" },
    json: { type: "string" },
    label: { type: "string" },
    set: { type: "string" },
    "keep-logs": { type: "boolean" },
    quick: { type: "boolean" },
    help: { type: "boolean" },
  },
});

if (flags.help) {
  process.stdout.write(`Usage: tests/bench/run.ts [--only W1,W3|lock|ring] [--runs N] [--duration SECONDS] [--clients project,http]
                         [--server-runtime bun|deno] [--topology single|replicated] [--durable] [--secret]
                         [--json FILE] [--label TEXT] [--quick] [--set key=value,...] [--keep-logs]
Defaults: all workloads (--only lock: W* and F*; --only ring: R*, as make bench-ring), 3 runs, 10 s
per measured phase, both clients, server under the runtime running this script, one node (--topology replicated: arbiter + primary + backup), JSON to
tests/bench/results/latest.json. --quick = --runs 1 --duration 2. --set overrides settings of the
servers' cluster files (e.g. --set tokenIdlePaceMs=400): experiments only, the targets are about defaults.
--durable: the lock servers' cluster files say durable = true (a log fsynced before every answer).
--secret: the cluster files carry a cluster secret: every peer message is authenticated (HMAC).
--keep-logs: keep each server's and ring's folder (cluster file, data, one log per node) and print where;
without it they are removed after each run, except those of a failed run (its notes name the logs).
`);
  process.exit(0);
}

const runs = Number(flags.runs ?? (flags.quick ? 1 : 3));
const durationMs = Number(flags.duration ?? (flags.quick ? 2 : 10)) * 1000;
const clientKinds = (flags.clients ?? CLIENT_KINDS.join(",")).split(",").map((s) => s.trim()) as ClientKind[];
const serverRuntime = (flags["server-runtime"] ?? currentRuntime) as RuntimeName;
const topology = (flags.topology ?? "single") as Topology;
if (topology !== "single" && topology !== "replicated") throw new Error("--topology must be single or replicated");
const durable = flags.durable ?? false;
const secret = flags.secret ?? false;
const jsonFile = flags.json ?? join(ROOT, "tests/bench/results/latest.json");
if (!(runs >= 1 && runs <= 20) || !(durationMs >= 500 && durationMs <= 60_000)) {
  throw new Error("--runs must be 1..20 and --duration 0.5..60 s");
}
for (const kind of clientKinds) if (!CLIENT_KINDS.includes(kind)) throw new Error(`unknown client ${kind}`);
if (serverRuntime !== "bun" && serverRuntime !== "deno") throw new Error("--server-runtime must be bun or deno");
const settings: Record<string, number> = Object.fromEntries(
  (flags.set ?? "").split(",").filter(Boolean).map((pair) => pair.split("=").map((s) => s.trim())).map(([k, v]) => [k, Number(v)]),
);
const settingProblems = mergeSettings(settings).problems;
if (settingProblems.length > 0) {
  throw new Error(`--set: ${settingProblems.map((p) => `${p.key}: ${p.message}`).join("; ")}`.slice(0, 500));
}
const settingsText = Object.entries(settings).map(([k, v]) => `${k}=${v}`).join(",");

// Every file in workloads/ is a workload (default export); order: W* by number, then F*, then R*.
const workloadDir = join(dirname(new URL(import.meta.url).pathname), "workloads");
const loaded: Workload[] = [];
for (const file of readdirSync(workloadDir).filter((f) => f.endsWith(".ts")).sort()) {
  loaded.push((await import(join(workloadDir, file))).default as Workload);
}
const order = (w: Workload) => "WFR".indexOf(w.id[0]) * 1000 + Number(w.id.slice(1));
loaded.sort((a, b) => order(a) - order(b));
const tableOf = (w: Workload) => w.table ?? "lock";
// --only takes ids and the names of the two tables ("lock", "ring") for all of a table's workloads.
const only = flags.only?.split(",").map((s) => s.trim().toUpperCase()).flatMap((id) =>
  id === "LOCK" || id === "RING" ? loaded.filter((w) => tableOf(w) === id.toLowerCase()).map((w) => w.id) : [id]
);
const workloads = only ? loaded.filter((w) => only.includes(w.id)) : loaded;
if (only && workloads.length !== new Set(only).size) {
  throw new Error(`unknown workload in --only (known: ${loaded.map((w) => w.id).join(", ")}, lock, ring)`);
}

const log = (message: string) => process.stderr.write(`[bench] ${message}\n`);

interface Cell {
  runs: Metrics[];
  notes: string[];
}
/** results[workload][client] */
const results: Record<string, Partial<Record<ClientKind, Cell>>> = {};
const kindsOf = (w: Workload): ClientKind[] => (w.clients === "each" ? clientKinds : [clientKinds[0]]);

const started = new Date();
log(
  `${currentRuntime} driver, ${serverRuntime} server (${topology}${durable ? ", durable" : ""}${secret ? ", secret" : ""}), ${runs} run(s) × ${
    workloads.map((w) => w.id).join(",")
  }, ${durationMs / 1000} s phases, clients ${clientKinds.join(",")}${settingsText ? `, settings ${settingsText}` : ""}; load average ${
    loadavg().map((l) => l.toFixed(2)).join(" ")
  }`,
);

for (let run = 1; run <= runs; run++) {
  for (const workload of workloads) {
    for (const client of kindsOf(workload)) {
      const servers: ServerHandle[] = [];
      const ctx: WorkloadContext = {
        client,
        durationMs,
        run,
        serverRuntime,
        topology,
        settings,
        keepLogs: flags["keep-logs"] ?? false,
        startServer: async (options) => {
          const server = await startServer({ runtime: serverRuntime, topology, durable, secret, ...options, settings: { ...settings, ...options?.settings } });
          servers.push(server);
          return server;
        },
        adopt: (server) => void servers.push(server),
        log,
      };
      const cell = ((results[workload.id] ??= {})[client] ??= { runs: [], notes: [] });
      const notesBefore = cell.notes.length;
      const hardLimitMs = 2 * durationMs + 60_000;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const t0 = performance.now();
      try {
        const result = await Promise.race([
          workload.run(ctx),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error(`gave up after ${hardLimitMs} ms`)), hardLimitMs);
          }),
        ]);
        // The machine is shared: keep the 1-minute load average next to each run's numbers, and
        // the run's number, so the bare baseline is compared with mutexd of the same run.
        cell.runs.push({ ...result.metrics, loadavg1: loadavg()[0], run });
        for (const note of result.notes ?? []) cell.notes.push(`run ${run}: ${note}`);
        const summary = workload.rows.slice(0, 2).map((r) => r.show(result.metrics, [result.metrics])).join("; ");
        log(`run ${run} ${workload.id} ${client}: ${summary} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
        for (const note of result.notes ?? []) log(`  note: ${note}`);
      } catch (error) {
        cell.notes.push(`run ${run}: FAILED: ${(error as Error).message}`);
        log(`run ${run} ${workload.id} ${client}: FAILED: ${(error as Error).message}`);
      } finally {
        clearTimeout(timer);
        for (const s of servers) {
          if (s.exitCode !== undefined && !s.stopRequested && !workload.killsServers) {
            cell.notes.push(`run ${run}: server pid ${s.pid} ended by itself with ${s.exitCode} (log ${s.logFile})`);
            log(`  server pid ${s.pid} ended by itself with ${s.exitCode}; log ${s.logFile}`);
          }
        }
        await Promise.all(servers.map((s) => s.stop()));
        // The servers' folders go with the run, unless a note names a log in them.
        const troubled = cell.notes.slice(notesBefore).some((n) => /FAILED|SAFETY|ended by itself/.test(n));
        for (const dir of removeServerDirs(troubled || ctx.keepLogs)) log(`  kept ${dir}`);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Medians, table, JSON.

function medianMetrics(list: Metrics[]): Metrics {
  const keys = new Set(list.flatMap((m) => Object.keys(m)));
  const out: Metrics = {};
  for (const key of keys) out[key] = median(list.map((m) => m[key]));
  return out;
}

const PEERS: PeerName[] = ["etcd", "redis", "zk"];
const clientTitle = (k: ClientKind) => (k === "project" ? "mutexd (project client)" : "mutexd (node:http client)");
const ratio = (a: number, b: number | undefined) =>
  b === undefined || !Number.isFinite(a) || !b ? "" : `${a / b >= 10 ? (a / b).toFixed(0) : (a / b).toFixed(2)}×`;

const mainTable: string[][] = [["metric", ...clientKinds.map(clientTitle), ...PEERS.map((p) => PEER_TITLES[p])]];
const ratioTable: string[][] = [[
  "mutexd ÷ peer",
  ...clientKinds.flatMap((k) => PEERS.map((p) => `${k} ÷ ${PEER_TITLES[p].split(" ")[0]}`)),
  "run spread",
]];
const jsonRows: unknown[] = [];
for (const workload of workloads.filter((w) => tableOf(w) === "lock")) {
  for (const row of workload.rows) {
    const cells: Record<string, { text: string; value?: number; ratios: Record<string, number> }> = {};
    const texts = clientKinds.map((k) => {
      if (!kindsOf(workload).includes(k)) return "(same)";
      const cell = results[workload.id]?.[k];
      if (!cell || cell.runs.length === 0) return "failed";
      const m = medianMetrics(cell.runs);
      const value = row.value?.(m, cell.runs);
      const ratios: Record<string, number> = {};
      for (const p of PEERS) {
        const pv = row.peers?.[p]?.value;
        if (value !== undefined && pv) ratios[p] = value / pv;
      }
      cells[k] = { text: row.show(m, cell.runs), value, ratios };
      return cells[k].text;
    });
    mainTable.push([row.label, ...texts, ...PEERS.map((p) => row.peers?.[p]?.text ?? "")]);
    if (row.value && row.peers) {
      const firstCell = results[workload.id]?.[kindsOf(workload)[0]];
      const spreads = firstCell ? spread(firstCell.runs.map((m) => row.value!(m, [m]))) : Number.NaN;
      ratioTable.push([
        row.label,
        ...clientKinds.flatMap((k) =>
          PEERS.map((p) => (cells[k] ? ratio(cells[k].value ?? Number.NaN, row.peers?.[p]?.value) : ""))
        ),
        runs > 1 && Number.isFinite(spreads) ? `${(spreads * 100).toFixed(0)}%` : "",
      ]);
    }
    jsonRows.push({ workload: workload.id, label: row.label, mutexd: cells, peers: row.peers ?? {} });
  }
}

// The ring's figures: one cell each (its workloads run with one client) beside the issue's target.
const ringTable: string[][] = [["ring (default settings): repair R1-R5 on 5 nodes, speed R6-R8, kills R9-R12 on 3 and 9", "mutexd", "target (issues 9, 14)"]];
for (const workload of workloads.filter((w) => tableOf(w) === "ring")) {
  const cell = results[workload.id]?.[kindsOf(workload)[0]];
  for (const row of workload.rows) {
    const text = !cell || cell.runs.length === 0 ? "failed" : row.show(medianMetrics(cell.runs), cell.runs);
    const value = cell && cell.runs.length > 0 ? row.value?.(medianMetrics(cell.runs), cell.runs) : undefined;
    ringTable.push([row.label, text, row.target ?? ""]);
    jsonRows.push({ workload: workload.id, label: row.label, mutexd: { text, value }, target: row.target ?? "" });
  }
}

// mutexd against the bare server (W0) of the same run: server µs per acquire+release ÷ the cost of
// its two requests on a server without lock logic, run by run, then the median of those ratios.
const BARE_PAIRS: Array<{ id: string; usKey: string; bareKey: string; label: string }> = [
  { id: "W1", usKey: "serverUsPerOp", bareKey: "serverUsPerRequest", label: "W1 (1 client)" },
  { id: "W2", usKey: "serverUsPerOp", bareKey: "serverUsPerRequestMany", label: "W2 (32 clients, own locks)" },
  { id: "W3", usKey: "serverUsPerGrant", bareKey: "serverUsPerRequestMany", label: "W3 (32 clients, one lock; per grant)" },
];
const bareTable: string[][] = [["server µs per a+r, same run", "client", "mutexd", "bare, per request", "mutexd ÷ (2 × bare)"]];
for (const pair of BARE_PAIRS) {
  for (const kind of clientKinds) {
    const mutexdRuns = results[pair.id]?.[kind]?.runs ?? [];
    const bareRuns = results.W0?.[kind]?.runs ?? [];
    const ratios = mutexdRuns.flatMap((m) => {
      const bare = bareRuns.find((b) => b.run === m.run);
      return bare ? [m[pair.usKey] / (2 * bare[pair.bareKey])] : [];
    });
    if (ratios.length === 0) continue;
    const text = {
      mutexd: `${fmt(median(mutexdRuns.map((m) => m[pair.usKey])))} µs`,
      bare: `${fmt(median(bareRuns.map((b) => b[pair.bareKey])))} µs`,
      ratio: `${median(ratios).toFixed(2)}× (${ratios.map((r) => r.toFixed(2)).join(", ")})`,
    };
    bareTable.push([pair.label, kind, text.mutexd, text.bare, text.ratio]);
    jsonRows.push({ workload: pair.id, label: `${pair.label}: server µs per a+r ÷ (2 × bare µs per request)`, client: kind, ratios, ...text });
  }
}

const overridden = settingsText ? ` NOT the defaults: ${settingsText};` : "";
const header = `mutexd lock server (${topology}${durable ? ", durable = true" : ""}${secret ? ", cluster secret" : ""}), medians of ${runs} run(s); driver ${currentRuntime}, server ${serverRuntime};${overridden} ` +
  `${cpus().length} CPUs; peers from peer-bench.md (Node.js driver, median of 3).`;
if (mainTable.length > 1) {
  process.stdout.write(`\n${header}\n\n${markdown(mainTable)}\n\n${markdown(ratioTable)}\n`);
  process.stdout.write(`(ratios: mutexd ÷ peer; >1 is better for rates, worse for latencies and RSS. ` +
    `"run spread": (max − min) / median over runs, first client.)\n`);
}
if (bareTable.length > 1) {
  process.stdout.write(`\nmutexd's server CPU against the bare server (W0: ${serverRuntime}'s own HTTP server, no lock logic, the same client ` +
    `and loop) in the same run; ratio: median over runs of each run's ratio (each run's in brackets).\n\n${markdown(bareTable)}\n`);
}
if (ringTable.length > 1) {
  process.stdout.write(`\nmutexd ring, ${runs} run(s), each on a fresh ring; driver ${currentRuntime}, server ${serverRuntime};${overridden} ` +
    `${cpus().length} CPUs. Cells: median (samples, min–max) over every run.\n\n${markdown(ringTable)}\n`);
}
const allNotes = Object.entries(results).flatMap(([id, byClient]) =>
  Object.entries(byClient).flatMap(([k, cell]) => cell!.notes.map((n) => `${id} ${k} ${n}`))
);
if (allNotes.length > 0) process.stdout.write(`\nNotes:\n${allNotes.map((n) => `- ${n}`).join("\n")}\n`);

mkdirSync(dirname(jsonFile), { recursive: true });
writeFileSync(
  jsonFile,
  JSON.stringify(
    {
      label: flags.label ?? "",
      started: started.toISOString(),
      finished: new Date().toISOString(),
      driverRuntime: currentRuntime,
      driverVersion: (globalThis as { Deno?: { version: { deno: string } } }).Deno?.version.deno ?? process.versions.bun,
      serverRuntime,
      topology,
      durable,
      settings,
      runs,
      durationMs,
      clients: clientKinds,
      cpus: cpus().length,
      loadavgAtEnd: loadavg(),
      rows: jsonRows,
      results,
    },
    null,
    2,
  ) + "\n",
);
log(`wrote ${jsonFile}`);
process.exit(allNotes.some((n) => n.includes("FAILED") || n.includes("SAFETY")) ? 1 : 0);
