/**
 * `make chaos`: the real mutexd binary under real faults, checked from a recorded history
 * (TigerBeetle's Vortex for the supervisor and nemesis, Jepsen's Maelstrom for record-then-check).
 *
 *   bun tests/chaos/run.ts [--seed N] [--seconds 60] [--lock-clients 6] [--ring-clients 3]
 *                          [--cli-lock-clients 2] [--cli-ring-clients 1]
 *   deno run -A tests/chaos/run.ts ...      (same flags)
 *
 * Line 1 is the seed, the binary, the network and the fault profile. The seed picks the fault
 * schedule; the timing is real and not replayable. Phases: start the cluster (p1, b1, a1; ring
 * r1..r5 each in its own network namespace, or r1..r3 on loopback) in a temp dir → faults and workload for --seconds (safety) → heal everything →
 * liveness (one grant per lock and per ring node) → final reads → stop every node → run the
 * offline checker (check.ts) on the history and print the end-of-run table (summary.ts). The last
 * line is the verdict and where the run's folder keeps the history and the per-node logs. Exit 0 clean, 1 violations, 2 usage, 3 the harness
 * itself failed (the cluster did not start, the run overran its time bound).
 */
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { connect } from "../../lib/client/lock_client.ts";
import { connectRing } from "../../lib/client/ring_client.ts";
import { Prng, SEED_MAX } from "../../lib/core/prng.ts";
import { eventually, sleep, tempDir } from "../_harness.ts";
import { degradeSupport, NetLab, netnsUnavailable } from "../_netns.ts";
import { checkFile } from "./check.ts";
import { CLOCK_RATE, describeStep, FAULT_KIND_NAMES, makeSchedule, runTrack } from "./faults.ts";
import { faketimeLibrary, NodeClocks } from "./clock.ts";
import { HistoryWriter, nodeLogRecords, wallMs } from "./history.ts";
import { StallMonitor } from "../../cluster/stall_monitor.ts";
import { monotonicClock } from "../../cluster/clock.ts";
import { realTimers } from "../../cluster/timers.ts";
import { ChaosHub } from "./hub.ts";
import { cliWorker, onClientFault } from "./cli_clients.ts";
import { chooseBinary, getJson, RING_SIZE, Supervisor } from "./supervisor.ts";
import { GuardedCounters, lockWorker, probeWorker, ringWorker, type WorkloadContext } from "./workload.ts";

const USAGE = `Usage: run.ts [--seed N] [--seconds N] [--network auto|netns|loopback] [--only K,K] [--lock-clients N] [--ring-clients N] [--locks N]
  --seed N          picks the fault schedule (default: random; printed on line 1)
  --network M       netns: every node in its own network namespace (root and ip; else exit 3);
                    loopback: every node on 127.0.0.1; auto (default): netns when it can be made
  --only K,K        only these fault kinds, each once first (e.g. ring-split,cut-arbiter;
                    clock-step,clock-rate need libfaketime: docs/chaos.md, Clock faults)
  --seconds N       length of the fault phase, 5..3600 (default 60)
  --lock-clients N  lock-service clients, 1..32 (default 6)
  --ring-clients N  ring clients, spread over the ring nodes, 0..12 (default: one per ring node, 3 or 5)
  --locks N         distinct lock names, 1..16 (default 3)
  --cli-lock-clients N  clients as processes, \`mutexd lock NAME -- CMD\`, 0..8 (default 2)
  --cli-ring-clients N  clients as processes, \`mutexd ring lock -- CMD\`, 0..4 (default 1)
  --inject-bug NAME every process runs main.ts through tests/_inject_bug.ts with this bug
                    (e.g. LockTable.reuseToken): the checker must report it (exit 1)
Exit: 0 no violation, 1 violations (printed with their window), 2 usage, 3 harness failure.
`;

interface Flags {
  seed: number;
  seconds: number;
  network: "auto" | "netns" | "loopback";
  only?: string[];
  lockClients: number;
  /** Undefined: one per ring node (the ring's size on this network). */
  ringClients?: number;
  locks: number;
  cliLockClients: number;
  cliRingClients: number;
  injectBug?: string;
}

function parseFlags(): Flags {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      seed: { type: "string" },
      seconds: { type: "string" },
      network: { type: "string" },
      only: { type: "string" },
      "lock-clients": { type: "string" },
      "ring-clients": { type: "string" },
      locks: { type: "string" },
      "cli-lock-clients": { type: "string" },
      "cli-ring-clients": { type: "string" },
      "inject-bug": { type: "string" },
      help: { type: "boolean" },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const int = (text: string | undefined, fallback: number, min: number, max: number, name: string) => {
    const n = text === undefined ? fallback : Number(text);
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      process.stderr.write(`--${name} must be an integer in ${min}..${max}\n${USAGE}`);
      process.exit(2);
    }
    return n;
  };
  const usage = (why: string): never => {
    process.stderr.write(`${why}\n${USAGE}`);
    process.exit(2);
  };
  const network = values.network ?? "auto";
  if (network !== "auto" && network !== "netns" && network !== "loopback") usage("--network must be auto, netns or loopback");
  const only = values.only?.split(",").filter((k) => k !== "");
  const unknown = only?.find((k) => !FAULT_KIND_NAMES.includes(k));
  if (unknown) usage(`--only: no fault kind ${unknown} (kinds: ${FAULT_KIND_NAMES.join(", ")})`);
  const randomSeed = crypto.getRandomValues(new Uint32Array(1))[0];
  return {
    seed: int(values.seed, randomSeed, 0, SEED_MAX, "seed"),
    seconds: int(values.seconds, 60, 5, 3_600, "seconds"),
    network: network as Flags["network"],
    only,
    lockClients: int(values["lock-clients"], 6, 1, 32, "lock-clients"),
    ringClients: values["ring-clients"] === undefined ? undefined : int(values["ring-clients"], 0, 0, 12, "ring-clients"),
    locks: int(values.locks, 3, 1, 16, "locks"),
    cliLockClients: int(values["cli-lock-clients"], 2, 0, 8, "cli-lock-clients"),
    cliRingClients: int(values["cli-ring-clients"], 1, 0, 4, "cli-ring-clients"),
    injectBug: values["inject-bug"],
  };
}

const flags = parseFlags();
const binary = chooseBinary(flags.injectBug);
const runtime = (globalThis as { Deno?: unknown }).Deno ? "deno" : "bun";

/**
 * The network: a NetLab with one namespace per node (a1, p1, b1, r1..r5) when it can be made and
 * --network allows, else loopback with the reason. The lab goes at exit, however the run ends
 * (after the supervisor's own exit hook has killed the nodes inside it).
 */
function makeNetwork(): { lab?: NetLab; label: string } {
  if (flags.network === "loopback") return { label: "loopback (--network loopback)" };
  const why = netnsUnavailable();
  if (why === null) {
    const lab = new NetLab();
    try {
      lab.create(3 + RING_SIZE.netns);
      return { lab, label: `netns ${lab.addresses[0].replace(/\.\d+$/, ".0/24")}` };
    } catch (error) {
      lab.remove();
      const first = (error as Error).message.split("\n")[0];
      if (flags.network === "netns") {
        process.stderr.write(`harness: --network netns: ${first}\n`);
        process.exit(3);
      }
      return { label: `loopback (namespaces failed: ${first})` };
    }
  }
  if (flags.network === "netns") {
    process.stderr.write(`harness: --network netns: ${why}\n`);
    process.exit(3);
  }
  return { label: `loopback (${why})` };
}
const network = makeNetwork();
const degrade = network.lab ? degradeSupport() : { mode: null, why: "loopback" };
const faketime = faketimeLibrary();
let schedule;
try {
  schedule = makeSchedule(flags.seed, flags.seconds, {
    ring: Array.from({ length: network.lab ? RING_SIZE.netns : RING_SIZE.loopback }, (_, i) => `r${i + 1}`),
    netnsOff: network.lab ? null : "loopback",
    degradeOff: degrade.mode === null ? degrade.why : null,
    clockOff: "path" in faketime ? null : faketime.why,
    only: flags.only,
  });
} catch (error) {
  network.lab?.remove();
  process.stderr.write(`${(error as Error).message}\n${USAGE}`);
  process.exit(2);
}
const profile = Object.entries(schedule.profile).map(([k, w]) => `${k}=${schedule.off[k] ? "off" : w}`).join(" ");
// Line 1: everything needed to run this schedule again, and where it runs.
console.log(`chaos seed=${flags.seed} seconds=${flags.seconds} runtime=${runtime} binary=${binary.label} network: ${network.label} profile: ${profile}`);
if (network.lab && degrade.mode !== null) console.log(`links degraded by ${degrade.why}`);
const offWhy = [...new Set(Object.values(schedule.off))];
const rated = Object.entries(schedule.rates);
if (rated.length > 0) console.log(`clock rates for the whole run, monotonic clock too: ${rated.map(([id, rate]) => `${id} x${rate}`).join(", ")}`);
if (offWhy.length > 0) console.log(`off: ${offWhy.map((why) => `${Object.keys(schedule.off).filter((k) => schedule.off[k] === why).join(", ")} (${why})`).join("; ")}`);

const t0 = Date.now();
const stamp = () => `+${((Date.now() - t0) / 1000).toFixed(1).padStart(6)}s`;
const print = (line: string) => console.log(`${stamp()} ${line}`);
const dir = tempDir("mutexd-chaos-");
// The clock preload only when a clock kind runs: other runs keep the real clock and its cost.
const clockKinds = schedule.profile["clock-step"] > 0 || rated.length > 0;
const clocks = clockKinds && "path" in faketime ? new NodeClocks(faketime.path, dir, schedule.rates) : undefined;
const supervisor = await Supervisor.create(dir, binary.argv, network.lab, clocks);
// One in-process ring client per ring node by default, so a fault of any node (r4, r5 too) hits a client.
const ringClients = flags.ringClients ?? supervisor.ringNodes.length;
// Registered after the supervisor's hook, so the nodes are killed before their namespaces go.
process.on("exit", () => network.lab?.remove());
const history = new HistoryWriter(join(dir, "history.jsonl"));
// The runner's own event-loop stalls: a stall delays every client's record by as much (check.ts
// counts a long one as a second fault, like a node's).
const runnerStalls = new StallMonitor(monotonicClock, realTimers, (stallMs) =>
  history.event({ op: "stall", client: "runner", node: "runner", value: stallMs }, { startMs: wallMs() - stallMs, endMs: wallMs() }));
runnerStalls.start();
let stopping = false;
let interrupts = 0;

async function abort(code: number, why: string): Promise<never> {
  stopping = true;
  print(why);
  await supervisor.stopAll(1_000);
  network.lab?.remove();
  print(`history: ${history.file}`);
  process.exit(code);
}

process.on("SIGINT", () => {
  interrupts += 1;
  if (interrupts > 1) {
    supervisor.killAllSync();
    network.lab?.remove();
    process.exit(130);
  }
  void abort(130, "interrupted: stopping every node");
});
// The whole run has a bound: faults + stopping workers + heal + liveness + final reads.
const watchdog = setTimeout(() => void abort(3, "harness: run overran its time bound"), (flags.seconds + 180) * 1_000);

print(`dir ${dir}`);
for (const track of ["lock", "ring", "client", "clock"] as const) {
  const steps = schedule.steps[track];
  print(`${track} schedule: ${steps.length} steps; first: ${steps.slice(0, 3).map(describeStep).join("; ")}`);
}

// A rated node runs at its rate from its first start to the stop: one fault record each, for the whole run.
const rateFaults = rated.map(([id, rate]) =>
  history.invoke({ op: "fault", client: "nemesis", fault: "rate", node: id, step: CLOCK_RATE, detail: `rate ${id} x${rate} (whole run)` })
);
// Start-up: every node, then wait for a serving primary with its backup in sync, and a token.
for (const id of supervisor.order) {
  if (!(await supervisor.start(id))) await abort(3, `harness: ${id} did not start; see ${dir}/logs/${id}.log`);
}
try {
  await eventually("p1 serves with b1 in sync", async () => {
    const s = await getJson<{ server?: { serving?: boolean; backup?: { arbiterRecordedInSync?: boolean } } }>(`${supervisor.url("p1")}/v1/status`);
    return s?.server?.serving === true && s.server.backup?.arbiterRecordedInSync === true;
  }, 20_000);
  await eventually("the token reaches every ring node", async () => {
    const all = await Promise.all(supervisor.ringNodes.map((id) => getJson<{ epoch: number; lastTokenAgeMs: number | null }>(`${supervisor.url(id)}/v1/ring/status`)));
    return all.every((s) => s && s.epoch > 0 && s.epoch === all[0]!.epoch && s.lastTokenAgeMs !== null);
  }, 20_000);
} catch (error) {
  await abort(3, `harness: ${(error as Error).message}`);
}
print(`cluster up: ${supervisor.starts} processes`);

// Safety phase: workload and nemesis side by side until the deadline.
const prng = new Prng(flags.seed).fork("workload");
const deadlineMs = Date.now() + flags.seconds * 1_000;
const ctx: WorkloadContext = { history, prng, stopped: () => stopping || Date.now() >= deadlineMs };
const counters = new GuardedCounters(join(dir, "resource"));
const locks = Array.from({ length: flags.locks }, (_, i) => `l${i}`);
const servers = [supervisor.url("p1"), supervisor.url("b1")];
const workers: Promise<number>[] = [];
for (let i = 0; i < flags.lockClients; i++) {
  workers.push(lockWorker({ ...ctx, prng: prng.fork(`c${i}`) }, { client: `c${i}`, servers, locks, counters }));
}
// The availability probe: how long the service could not grant under each fault (check.ts).
workers.push(probeWorker(ctx, { servers }));
for (let i = 0; i < ringClients; i++) {
  const node = supervisor.ringNodes[i % supervisor.ringNodes.length];
  workers.push(ringWorker({ ...ctx, prng: prng.fork(`q${i}`) }, { client: `q${i}`, node, server: supervisor.url(node) }));
}
// Clients as processes, through the hub (their CMD's storage server and history).
const hub = await ChaosHub.start(history, counters);
for (let i = 0; i < flags.cliLockClients; i++) {
  workers.push(cliWorker({ ...ctx, prng: prng.fork(`cli-l${i}`) }, { client: `cli-l${i}`, mutexd: binary.argv, supervisor, hub, locks, clusterFile: supervisor.clusterFile }));
}
for (let i = 0; i < flags.cliRingClients; i++) {
  // Each client process asks the ring nodes in turn, from its own one on: every node gets CLI clients.
  const n = supervisor.ringNodes.length;
  const ringNodes = Array.from({ length: n }, (_, k) => supervisor.ringNodes[(i + k) % n]).map((node) => ({ node, server: supervisor.url(node) }));
  workers.push(cliWorker({ ...ctx, prng: prng.fork(`cli-r${i}`) }, { client: `cli-r${i}`, mutexd: binary.argv, supervisor, hub, ringNodes }));
}
const nemesis = { supervisor, history, print, deadlineMs, stopped: () => stopping, onClientFault, degradeMode: degrade.mode };
const progress = setInterval(() => print(`progress: ${history.count} records`), 10_000);
// A fault that cannot be applied (ip, tc or iptables failing) is the harness's failure, not a violation.
const tracks = await Promise.all((["lock", "ring", "client", "clock"] as const).map((track) => runTrack(schedule.steps[track], nemesis)))
  .catch((error) => abort(3, `harness: the nemesis failed: ${(error as Error).message.split("\n")[0]}`));
print(`faults done: ${tracks[0]} lock steps, ${tracks[1]} ring steps, ${tracks[2]} client steps, ${tracks[3]} clock steps; waiting for the clients to finish`);
const results = await Promise.race([Promise.all(workers), sleep(60_000).then(() => undefined)]);
clearInterval(progress);
if (!results) await abort(3, "harness: clients did not finish within 60 s of the deadline");

// Liveness phase: everything healed; every lock and every ring node must grant once.
await supervisor.healAll();
print("healed: liveness phase");
await Promise.all([
  ...locks.map(async (lock) => {
    const done = history.invoke({ op: "liveness", client: "final", lock });
    try {
      const handle = await connect({ servers, failoverTimeoutMs: 20_000 }).lock(lock, { ttlMs: 5_000, waitMs: 20_000 });
      done("ok", { token: handle.token });
      await handle.release().catch(() => {});
    } catch (error) {
      done("fail", { error: String((error as Error).message) });
    }
  }),
  ...(ringClients > 0 ? supervisor.ringNodes : []).map(async (node) => {
    const done = history.invoke({ op: "liveness", client: "final", node });
    try {
      const section = await connectRing({ server: supervisor.url(node), requestTimeoutMs: 5_000 }).lock({ waitMs: 25_000 });
      done("ok", { token: section.token });
      await section.release().catch(() => {});
    } catch (error) {
      done("fail", { error: String((error as Error).message) });
    }
  }),
]);

// Final reads: each resource counter; the ring counter at every node once they agree (≤ 15 s).
for (const lock of locks) {
  history.invoke({ op: "final", client: "final", lock })("ok", { value: counters.value(lock) });
}
if (ringClients > 0) {
  const read = async () =>
    await Promise.all(supervisor.ringNodes.map(async (id) => {
      try {
        const got = await connectRing({ server: supervisor.url(id), requestTimeoutMs: 2_000 }).get("counter");
        return { id, value: Number(got?.value ?? "0") };
      } catch (error) {
        return { id, error: String((error as Error).message) };
      }
    }));
  let values = await read();
  const settleDeadline = Date.now() + 15_000;
  // Bounded by the deadline: nodes learn the commit watermark as the token passes.
  while (Date.now() < settleDeadline && new Set(values.map((v) => v.value ?? v.error)).size > 1) {
    await sleep(200);
    values = await read();
  }
  for (const v of values) {
    const done = history.invoke({ op: "final", client: "final", lock: "ring", node: v.id });
    if (v.value !== undefined) done("ok", { value: v.value });
    else done("info", { error: v.error });
  }
}

for (const finish of rateFaults) finish("ok");
await supervisor.stopAll();
runnerStalls.stop();
// Every node's event-loop stalls and its backup's sync state from its log, into the history
// (check.ts: a second fault).
for (const id of supervisor.order) {
  for (const { start, end, ...fields } of nodeLogRecords(join(dir, "logs", `${id}.log`), id)) {
    history.event(fields, { startMs: start, endMs: end! });
  }
}
await hub.close();
network.lab?.remove();
clearTimeout(watchdog);
const elapsedS = ((Date.now() - t0) / 1000).toFixed(1);
print(`stopped every node (${supervisor.starts} processes started in all); ${history.count} records in ${elapsedS} s`);
const status = checkFile(history.file);
// Last line: the verdict and the kept run folder (history.jsonl, logs/<node>.log, resource/).
console.log(`chaos seed=${flags.seed}: ${status === 0 ? "PASS" : "FAIL"}; history ${history.file}, node logs ${join(dir, "logs")}/`);
process.exit(status);
