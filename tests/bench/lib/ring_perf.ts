/**
 * The ring's speed (docs/bench.md, "Ring speed"): one fresh ring of N real `mutexd node`
 * processes with the default settings, then four phases of `durationMs` each, in this order:
 *
 *   idle      no client: CPU per node, the token's rotation and hop times
 *   1 client  one client at r1 entering and leaving without a pause: sections/s, hop times
 *             under load, ring CPU per section (all nodes' CPU over the phase ÷ sections)
 *   8 clients eight clients spread over the nodes (r1, r2, …, round robin), the same loop
 *   puts      one client at r1 in a section writing one key after another: put latency (the
 *             write's trip around the ring) and committed puts/s, ring CPU per put
 *
 * CPU is user + system time from /proc/<pid>/stat (10 ms ticks) of every node, and of this
 * driver (so a client limit is not taken for a server limit). Hop times come from each node's
 * status (`hopMs`: its last 256 hand-offs, pass to acknowledgement), read at the end of a phase:
 * the cell shows the median of the nodes' p50s and the largest of their p99s.
 */
import { connectRing, type RingClient } from "../../../lib/client/ring_client.ts";
import { type Ring, samplesOf, startRing } from "./ring.ts";
import { cpuSeconds } from "./server.ts";
import { fmt, latency, median } from "./stats.ts";
import { type Metrics, now, putLatency, type Row, sleep, type Workload, type WorkloadContext } from "./workload.ts";

/** After the ring formed: let the bootstrap's work (view change, first rounds, JIT) settle first. */
const SETTLE_MS = 2_000;
/** Clients of the contended phase. */
const MANY_CLIENTS = 8;
/** A section's lease: it leaves at once; the lease only bounds a client that died. */
const SECTION_LEASE_MS = 1_000;
/**
 * The put phase's section lease; the writer leaves and enters again once less than PUT_MARGIN_MS
 * is left, so the token moves on about once a second (a section holds it; far below tokenLossMs).
 */
const PUT_LEASE_MS = 1_000;
const PUT_MARGIN_MS = 200;
/** After a failed request (a view change under load: ring_unavailable) a client asks again after this. */
const RETRY_PAUSE_MS = 50;
/** One enter waits at most this long (then the loop asks again; bounds the end of a phase after a fault). */
const ENTER_WAIT_MS = 5_000;
/** Operations per client and phase at most (a bound on the loops; a phase takes far fewer). */
const OPS_MAX = 10_000_000;

type Phase = "idle" | "one" | "many" | "put";

/** Requests that failed in a phase (counted, then asked again; a note says how many). */
interface Failures {
  count: number;
  last: string;
}

/** Runs `body`; a failure is counted and followed by a pause (the loop then goes on). */
async function tolerant(failures: Failures, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (error) {
    failures.count += 1;
    failures.last = (error as Error).message;
    // A client's backoff after a failed section, not a wait for a condition.
    await sleep(RETRY_PAUSE_MS);
  }
}

/** CPU seconds of every node and of this driver, now. */
function cpuNow(ring: Ring): { nodes: number[]; driver: number } {
  return { nodes: ring.nodes.map((n) => cpuSeconds(n.pid)), driver: cpuSeconds("self") };
}

/**
 * Counters summed over every node's `GET /metrics`: token hops taken and HTTP answers given (every
 * route: clients' enters and leaves, hand-offs, wakes, view messages). Read before and after a
 * phase, so each phase reports them per operation (where a section's CPU goes: hops, requests).
 */
async function counters(ring: Ring): Promise<{ hops: number; httpAnswers: number }> {
  const texts = await Promise.all(ring.urls.map(async (url) => {
    const answer = await fetch(`${url}/metrics`);
    // A refused scrape (401, 404) would count as no hops: fail loudly instead.
    if (!answer.ok) throw new Error(`${url}/metrics: ${answer.status}`);
    return await answer.text();
  }));
  const sum = (name: string) => texts.reduce((total, text) => {
    for (const line of text.split("\n")) if (line.startsWith(name)) total += Number(line.slice(line.lastIndexOf(" ") + 1)) || 0;
    return total;
  }, 0);
  return { hops: sum("mutexd_ring_token_hops_total"), httpAnswers: sum("mutexd_http_responses_total") };
}

/** Hop p50 (median over the nodes) and p99 (the largest) from every node's status, and the rotation at r1. */
async function hopsAndRotation(ring: Ring, metrics: Metrics, phase: Phase): Promise<void> {
  const statuses = await Promise.all(ring.clients.map((c) => c.status()));
  const p50s = statuses.map((s) => s.hopMs?.p50).filter((v): v is number => typeof v === "number");
  const p99s = statuses.map((s) => s.hopMs?.p99).filter((v): v is number => typeof v === "number");
  metrics[`${phase}.hopP50Ms`] = median(p50s);
  metrics[`${phase}.hopP99Ms`] = p99s.length > 0 ? Math.max(...p99s) : Number.NaN;
  metrics[`${phase}.rotationMs`] = statuses[0].lastRotationMs ?? Number.NaN;
}

/**
 * Runs `loops` (one per client) for `durationMs` and measures: the operations they count, the
 * nodes' and the driver's CPU per operation, hop times and rotation at the end.
 */
async function measure(
  ring: Ring,
  ctx: WorkloadContext,
  phase: Phase,
  metrics: Metrics,
  loops: Array<(until: () => boolean, count: () => void, failures: Failures) => Promise<void>>,
  notes: string[],
): Promise<void> {
  const failures: Failures = { count: 0, last: "" };
  let ops = 0;
  let running = true;
  const countsBefore = await counters(ring);
  const before = cpuNow(ring);
  const t0 = now();
  const done = Promise.all(loops.map((loop) => loop(() => running, () => void (ops += 1), failures)));
  // The measured phase: the loops run for a fixed time.
  await sleep(ctx.durationMs);
  running = false;
  const seconds = (now() - t0) / 1000;
  const counted = ops;
  const after = cpuNow(ring);
  await hopsAndRotation(ring, metrics, phase);
  await done;
  const countsAfter = await counters(ring);
  const nodeCpu = after.nodes.reduce((sum, v, i) => sum + v - before.nodes[i], 0);
  metrics[`${phase}.perS`] = counted / seconds;
  metrics[`${phase}.ringCpuMsPerOp`] = counted > 0 ? (1000 * nodeCpu) / counted : Number.NaN;
  metrics[`${phase}.driverCpuMsPerOp`] = counted > 0 ? (1000 * (after.driver - before.driver)) / counted : Number.NaN;
  metrics[`${phase}.ringCpuPct`] = (100 * nodeCpu) / seconds;
  // Counted to the end of the loops (their last requests included) and over the status reads
  // of hopsAndRotation (one per node): a few answers against thousands per phase.
  metrics[`${phase}.hopsPerOp`] = counted > 0 ? (countsAfter.hops - countsBefore.hops) / counted : Number.NaN;
  metrics[`${phase}.httpAnswersPerOp`] = counted > 0 ? (countsAfter.httpAnswers - countsBefore.httpAnswers) / counted : Number.NaN;
  metrics[`${phase}.failures`] = failures.count;
  if (failures.count > 0) notes.push(`${phase}: ${failures.count} requests failed and were asked again (last: ${failures.last})`);
}

/** A client taking sections (enter, leave) without a pause while `until()` holds. */
function sectionLoop(client: RingClient) {
  return async (until: () => boolean, count: () => void, failures: Failures) => {
    for (let n = 0; n < OPS_MAX && until(); n++) {
      await tolerant(failures, async () => {
        const result = await client.enter({ waitMs: ENTER_WAIT_MS, leaseMs: SECTION_LEASE_MS });
        if (!result.granted) return;
        if (until()) count();
        await client.leave({ fence: result.fence });
      });
    }
  };
}

/** One client in a section writing one key after another; each put's latency goes into `samples`. */
function putLoop(client: RingClient, samples: number[]) {
  return async (until: () => boolean, count: () => void, failures: Failures) => {
    let n = 0;
    for (let sections = 0; sections < OPS_MAX && n < OPS_MAX && until(); sections++) {
      await tolerant(failures, async () => {
        const result = await client.enter({ waitMs: ENTER_WAIT_MS, leaseMs: PUT_LEASE_MS });
        if (!result.granted) return;
        const endMs = now() + result.leaseMs - PUT_MARGIN_MS;
        for (; n < OPS_MAX && until() && now() < endMs; n++) {
          const t0 = now();
          await client.put(result.fence, `bench-${n % 100}`, `value ${n}`);
          if (!until()) break;
          samples.push(now() - t0);
          count();
        }
        await client.leave({ fence: result.fence });
      });
    }
  };
}

/** One run at one ring size: the four phases on one fresh ring. */
export async function ringSpeed(ctx: WorkloadContext, size: number): Promise<{ metrics: Metrics; notes: string[] }> {
  const ring = await startRing(ctx, { size });
  const extra: RingClient[] = [];
  try {
    // Timed phases, not waits for a condition: start-up work fades over SETTLE_MS, then each
    // phase measures over ctx.durationMs.
    await sleep(SETTLE_MS);
    const metrics: Metrics = { size };
    // Idle: no client.
    const before = cpuNow(ring);
    const t0 = now();
    await sleep(ctx.durationMs);
    const seconds = (now() - t0) / 1000;
    const after = cpuNow(ring);
    ring.nodes.forEach((_, i) => (metrics[`idle.cpuPct${i}`] = (100 * (after.nodes[i] - before.nodes[i])) / seconds));
    await hopsAndRotation(ring, metrics, "idle");
    // One client at r1, then eight over the nodes (each its own connection settings: a client per loop).
    const notes: string[] = [];
    await measure(ring, ctx, "one", metrics, [sectionLoop(ring.clients[0])], notes);
    for (let i = 0; i < MANY_CLIENTS; i++) extra.push(connectRing({ server: ring.urls[i % size], requestTimeoutMs: 5_000 }));
    await measure(ring, ctx, "many", metrics, extra.map(sectionLoop), notes);
    const putSamples: number[] = [];
    await measure(ring, ctx, "put", metrics, [putLoop(ring.clients[0], putSamples)], notes);
    putLatency(metrics, "put.latencyMs", latency(putSamples));
    const idle = samplesOf([metrics], /^idle\.cpuPct\d+$/);
    notes.unshift(
      `${size} nodes: idle CPU per node ${idle.map(fmt).join(", ")} %, rotation ${fmt(metrics["idle.rotationMs"])} ms; ` +
      `1 client ${fmt(metrics["one.perS"])}/s (ring CPU ${fmt(metrics["one.ringCpuMsPerOp"])} ms, driver ${fmt(metrics["one.driverCpuMsPerOp"])} ms per section); ` +
      `${MANY_CLIENTS} clients ${fmt(metrics["many.perS"])}/s (ring CPU ${fmt(metrics["many.ringCpuMsPerOp"])} ms per section, hop p50 ${fmt(metrics["many.hopP50Ms"])} ms); ` +
      `per section, 1 · ${MANY_CLIENTS} clients: hops ${fmt(metrics["one.hopsPerOp"])} · ${fmt(metrics["many.hopsPerOp"])}, HTTP answers ${fmt(metrics["one.httpAnswersPerOp"])} · ${fmt(metrics["many.httpAnswersPerOp"])}; ` +
      `puts ${fmt(metrics["put.perS"])}/s, p50 ${fmt(metrics["put.latencyMs.p50"])} ms`,
    );
    return { metrics, notes };
  } finally {
    await ring.stop();
  }
}

/** p50/p99 of the hop times of a phase (ms). */
const hops = (m: Metrics, phase: Phase) => `${fmt(m[`${phase}.hopP50Ms`])} / ${fmt(m[`${phase}.hopP99Ms`])}`;

/** The workload of one ring size (its rows carry the size in their labels). */
export function ringSpeedWorkload(id: string, size: number): Workload {
  const rows: Row[] = [
    {
      label: `${id} ${size} nodes, idle: CPU per node, % of a core (median, max); rotation, ms`,
      show: (m, runs) => {
        const all = samplesOf(runs, /^idle\.cpuPct\d+$/);
        return `${fmt(median(all))}%, max ${fmt(Math.max(...all))}%; rotation ${fmt(m["idle.rotationMs"])}`;
      },
      value: (_m, runs) => median(samplesOf(runs, /^idle\.cpuPct\d+$/)),
      target: "< 1%",
    },
    {
      label: `${id} ${size} nodes: hop p50 / p99, ms: idle · 1 client · ${MANY_CLIENTS} clients`,
      show: (m) => `${hops(m, "idle")} · ${hops(m, "one")} · ${hops(m, "many")}`,
      value: (m) => m["many.hopP50Ms"],
      target: "p50 ≤ 0.5 under load",
    },
    {
      label: `${id} ${size} nodes: rotation under load, ms: 1 client · ${MANY_CLIENTS} clients`,
      show: (m) => `${fmt(m["one.rotationMs"])} · ${fmt(m["many.rotationMs"])}`,
    },
    {
      label: `${id} ${size} nodes: sections/s with 1 client`,
      show: (m) => fmt(m["one.perS"]),
      value: (m) => m["one.perS"],
      target: size === 5 ? "≥ 1,000" : "",
    },
    {
      label: `${id} ${size} nodes: sections/s with ${MANY_CLIENTS} clients`,
      show: (m) => fmt(m["many.perS"]),
      value: (m) => m["many.perS"],
      target: size === 5 ? "≥ 2,500" : "",
    },
    {
      label: `${id} ${size} nodes: ring CPU per section, ms (all nodes; driver's): 1 client · ${MANY_CLIENTS} clients`,
      show: (m) =>
        `${fmt(m["one.ringCpuMsPerOp"])} (${fmt(m["one.driverCpuMsPerOp"])}) · ${fmt(m["many.ringCpuMsPerOp"])} (${fmt(m["many.driverCpuMsPerOp"])})`,
      value: (m) => m["one.ringCpuMsPerOp"],
      target: "≤ 0.5",
    },
    {
      label: `${id} ${size} nodes: put p50 / p99, ms; committed puts/s (1 client); ring CPU per put, ms`,
      show: (m) => `${fmt(m["put.latencyMs.p50"])} / ${fmt(m["put.latencyMs.p99"])}; ${fmt(m["put.perS"])}/s; ${fmt(m["put.ringCpuMsPerOp"])}`,
      value: (m) => m["put.perS"],
    },
  ];
  return {
    id,
    title: `the ring's speed on ${size} nodes (defaults): idle, 1 and ${MANY_CLIENTS} clients taking sections, one client writing`,
    clients: "one",
    table: "ring",
    rows,
    run: (ctx) => ringSpeed(ctx, size),
  };
}
