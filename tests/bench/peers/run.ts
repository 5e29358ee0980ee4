/**
 * `make bench-peers`: mutexd side by side with etcd, Redis and ZooKeeper in ONE run, through ONE
 * driver (this process), interleaved round by round: round 1 runs W1 on mutexd lone, mutexd
 * replicated, etcd, Redis, ZooKeeper, then W2 on each, then W3 on each (then F1 on mutexd
 * replicated); round 2 the same, and so on; the table is of medians over rounds, so every number
 * comes from one run on one machine. mutexd runs with a cluster secret (peer traffic
 * authenticated), as deployed; its client is mutexd's own (lib/client/lock_client.ts). The
 * workloads are tests/bench/workloads/ (W1–W3, F1) with the peers' adapters (tests/bench/peers/)
 * in place of mutexd's client. See docs/bench.md, "mutexd beside its peers".
 *
 *   bun tests/bench/peers/run.ts [--rounds 3] [--duration 10] [--only W1,W2,W3,F1]
 *                                [--systems lone,replicated,etcd,redis,zk] [--members 3|1] [--json FILE] [--svg FILE]
 *   bun tests/bench/peers/run.ts --chart-from FILE [--svg FILE]     (table and chart of a saved run)
 *
 * Exit status 1 if a workload failed, a correctness check failed or W3 saw a violation.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { basename, dirname, join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { removeDir, ROOT } from "../../_harness.ts";
import { type BenchClient, makeClient } from "../lib/clients.ts";
import { currentRuntime, type ServerHandle, startServer } from "../lib/server.ts";
import type { Metrics, Workload, WorkloadContext } from "../lib/workload.ts";
import { checkClient } from "./check.ts";
import { peerF1 } from "./f1.ts";
import { type PeersRun, peersMarkdown, peersSvg, type SystemResult } from "./report.ts";
import { ensureInstalled, PEERS, type PeerId } from "./servers.ts";

const { values: flags } = parseArgs({
  args: process.argv.slice(2),
  options: {
    rounds: { type: "string" },
    duration: { type: "string" },
    only: { type: "string" },
    systems: { type: "string" },
    members: { type: "string" },
    json: { type: "string" },
    svg: { type: "string" },
    "chart-from": { type: "string" },
    help: { type: "boolean" },
  },
});
if (flags.help) {
  process.stdout.write(`Usage: tests/bench/peers/run.ts [--rounds 3] [--duration 10] [--only W1,W2,W3,F1] [--systems lone,replicated,etcd,redis,zk]
                               [--members 3|1] [--json FILE] [--svg FILE] | --chart-from FILE [--svg FILE]
Defaults: etcd and ZooKeeper with 3 members each (--members 1: one), JSON to tests/bench/results/peers.json,
chart to docs/bench-peers.svg.
`);
  process.exit(0);
}
const jsonFile = flags.json ?? join(ROOT, "tests/bench/results/peers.json");
const svgFile = flags.svg ?? join(ROOT, "docs/bench-peers.svg");
const log = (message: string) => process.stderr.write(`[bench-peers] ${message}\n`);

function publish(run: PeersRun): void {
  process.stdout.write(`\n${peersMarkdown(run)}\n`);
  mkdirSync(dirname(svgFile), { recursive: true });
  writeFileSync(svgFile, peersSvg(run));
  log(`wrote ${svgFile}`);
}

if (flags["chart-from"]) {
  publish(JSON.parse(readFileSync(flags["chart-from"], "utf8")) as PeersRun);
  process.exit(0);
}

const rounds = Number(flags.rounds ?? 3);
const durationMs = Number(flags.duration ?? 10) * 1000;
if (!(rounds >= 1 && rounds <= 20) || !(durationMs >= 500 && durationMs <= 60_000)) throw new Error("--rounds must be 1..20 and --duration 0.5..60 s");
/** The workloads whose clients come from ctx.makeClient (W4 and F2 make mutexd's clients themselves). */
const PEER_WORKLOADS = ["W1", "W2", "W3", "F1"];
const workloadIds = (flags.only ?? PEER_WORKLOADS.join(",")).split(",").map((s) => s.trim().toUpperCase());
for (const id of workloadIds) if (!PEER_WORKLOADS.includes(id)) throw new Error(`--only: ${id} is not one of ${PEER_WORKLOADS.join(", ")}`);
/** etcd's and ZooKeeper's members in W1–W3: 3 (replicated, as mutexd replicated and peer-bench.md) or 1. */
const members = Number(flags.members ?? 3);
if (members !== 1 && members !== 3) throw new Error("--members must be 1 or 3");
const systemIds = (flags.systems ?? "lone,replicated,etcd,redis,zk").split(",").map((s) => s.trim());

/** A system under test: how to start it and how to make one of its clients. */
interface System {
  id: string;
  title: string;
  start(): Promise<ServerHandle>;
  client(server: ServerHandle): BenchClient;
  /** Workloads that make no sense for it (F1 needs a leader to kill: not a lone node). */
  skips: string[];
  /** Its own F1 (a peer's three members), in place of mutexd's. */
  f1?: Workload;
}

const mutexd = (id: "lone" | "replicated"): System => ({
  id,
  title: id === "lone" ? "mutexd lone" : "mutexd replicated",
  start: () => startServer({ topology: id === "lone" ? "single" : "replicated", secret: true }),
  client: (server) => makeClient("project", server.urls),
  skips: id === "lone" ? ["F1"] : [],
});

const known = ["lone", "replicated", ...Object.keys(PEERS)];
for (const id of systemIds) if (!known.includes(id)) throw new Error(`unknown system ${id} (known: ${known.join(", ")})`);
const peerIds = systemIds.filter((id): id is PeerId => id in PEERS);
const skipped = ensureInstalled(peerIds.map((id) => PEERS[id]), log);

const results: SystemResult[] = [];
const systems: System[] = [];
for (const id of systemIds) {
  if (id === "lone" || id === "replicated") {
    systems.push(mutexd(id));
    results.push({ id, title: mutexd(id).title, short: mutexd(id).title, runs: {} });
    continue;
  }
  const peer = PEERS[id as PeerId];
  const why = skipped.get(peer.id);
  const short = { etcd: "etcd", redis: "Redis", zk: "ZooKeeper" }[peer.id];
  const size = members === 3 && peer.startCluster ? " ×3" : "";
  const title = why ? short : `${short} ${peer.version()}${size}`;
  results.push({ id, title, short, runs: {}, ...(why ? { skipped: why } : {}) });
  if (why) log(`${id}: skipped: ${why}`);
  else {
    const f1 = peer.startCluster ? peerF1(peer) : undefined;
    const start = members === 3 && peer.startCluster ? peer.startCluster : peer.start;
    systems.push({ id, title, start, client: (server) => peer.client(server), skips: f1 ? [] : ["F1"], f1 });
  }
}
const resultOf = (id: string) => results.find((r) => r.id === id)!;

const workloadDir = join(dirname(dirname(new URL(import.meta.url).pathname)), "workloads");
const workloads: Workload[] = [];
for (const id of workloadIds) {
  workloads.push((await import(join(workloadDir, `${id.toLowerCase()}.ts`))).default as Workload);
}

const commit = (() => {
  try {
    const head = execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT, encoding: "utf8" }).trim();
    // A work tree with changes is not that commit: say so beside its number.
    const changed = execFileSync("git", ["status", "--porcelain", "--untracked-files=no"], { cwd: ROOT, encoding: "utf8" }).trim();
    return changed ? `${head} with changes` : head;
  } catch {
    return "unknown";
  }
})();
const started = new Date();
const loadavgStart = loadavg()[0];
let failed = false;
log(`${currentRuntime} driver; ${rounds} round(s) × ${workloadIds.join(",")} × ${systems.map((s) => s.id).join(",")}; ` +
  `${durationMs / 1000} s phases; load average ${loadavg().map((l) => l.toFixed(2)).join(" ")}`);

/** Every server this run has started and not yet stopped: stopped by PID if the run is interrupted. */
const live = new Set<ServerHandle>();
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    log(`${sig}: stopping ${live.size} server(s)`);
    void Promise.all([...live].map((s) => s.stop(500))).finally(() => process.exit(130));
  });
}

/** Starts `system`, runs `body` with it, stops it (by PID; a peer's folder is removed). */
async function withSystem<T>(system: System, body: (ctx: WorkloadContext) => Promise<T>, run: number): Promise<T> {
  const servers: ServerHandle[] = [];
  const ctx: WorkloadContext = {
    client: "project",
    durationMs,
    run,
    serverRuntime: currentRuntime,
    topology: system.id === "lone" ? "single" : "replicated",
    settings: {},
    keepLogs: false,
    startServer: async (options) => {
      // F1 asks for its own deployments (a fresh one per kill): mutexd replicated, with the secret.
      const server = options ? await startServer({ ...options, secret: true }) : await system.start();
      servers.push(server);
      live.add(server);
      return server;
    },
    makeClient: (server) => system.client(server),
    adopt: (server) => {
      servers.push(server);
      live.add(server);
    },
    log,
  };
  try {
    return await body(ctx);
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
    for (const s of servers) live.delete(s);
    // mutexd's folders (cluster file, logs); a peer's handle removes its own when it stops.
    for (const s of servers) if (basename(dirname(s.logFile)).startsWith("mutexd-bench-")) removeDir(dirname(s.logFile));
  }
}

// Each client's correctness in the same run: mutual exclusion on a few grants, tokens increase.
for (const system of systems) {
  const result = resultOf(system.id);
  try {
    result.check = await withSystem(system, async (ctx) => {
      const server = await ctx.startServer();
      return await checkClient(() => system.client(server));
    }, 0);
    log(`${system.id}: check ${result.check}`);
  } catch (error) {
    result.check = `FAILED: ${(error as Error).message}`.slice(0, 300);
    failed = true;
    log(`${system.id}: check ${result.check}`);
  }
}

for (let round = 1; round <= rounds; round++) {
  for (const workload of workloads) {
    for (const system of systems.filter((s) => !s.skips.includes(workload.id))) {
      const t0 = performance.now();
      const hardLimitMs = 2 * durationMs + 60_000;
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        const outcome = await withSystem(system, (ctx) =>
          Promise.race([
            (workload.id === "F1" && system.f1 ? system.f1 : workload).run(ctx),
            new Promise<never>((_, reject) => {
              timer = setTimeout(() => reject(new Error(`gave up after ${hardLimitMs} ms`)), hardLimitMs);
            }),
          ]), round);
        const m: Metrics = { ...outcome.metrics, loadavg1: loadavg()[0] };
        // The driver's own CPU per operation: a client limit is not a server limit.
        const opsPerS = m.rate ?? m.grantsPerS;
        if (Number.isFinite(m.clientCpuPct) && opsPerS > 0) m.clientUsPerOp = (m.clientCpuPct / 100) * 1e6 / opsPerS;
        (resultOf(system.id).runs[workload.id] ??= []).push(m);
        const notes = outcome.notes ?? [];
        if (notes.some((n) => n.includes("SAFETY"))) failed = true;
        log(`round ${round} ${workload.id} ${system.id}: ${workload.rows[0].show(m, [m])}; load ${m.loadavg1.toFixed(2)} ` +
          `(${((performance.now() - t0) / 1000).toFixed(1)} s)${notes.length ? `; notes: ${notes.join("; ").slice(0, 300)}` : ""}`);
      } catch (error) {
        failed = true;
        log(`round ${round} ${workload.id} ${system.id}: FAILED: ${(error as Error).message}`);
      } finally {
        clearTimeout(timer);
      }
    }
  }
}

const run: PeersRun = {
  started: started.toISOString(),
  commit,
  driver: `${currentRuntime} ${(globalThis as { Deno?: { version: { deno: string } } }).Deno?.version.deno ?? process.versions.bun}`,
  rounds,
  durationMs,
  cpus: cpus().length,
  loadavgStart,
  loadavgEnd: loadavg()[0],
  systems: results,
};
mkdirSync(dirname(jsonFile), { recursive: true });
writeFileSync(jsonFile, JSON.stringify(run, null, 2) + "\n");
log(`wrote ${jsonFile}`);
publish(run);
process.exit(failed ? 1 : 0);
