/**
 * R5: an idle 5-node ring (default settings, no client): CPU per node over one phase (10 s by
 * default), user + system time from /proc/<pid>/stat (10 ms ticks: ±0.1% of a core over 10 s).
 * The token keeps circulating, resting tokenIdlePaceMs at each node; that is the cost measured.
 * Also each node's voluntary context switches per second (about its wake-ups: ticks, hops).
 */
import { samplesOf, startRing } from "../lib/ring.ts";
import { cpuSeconds, voluntarySwitches } from "../lib/server.ts";
import { fmt, median } from "../lib/stats.ts";
import { type Metrics, now, sleep, type Workload } from "../lib/workload.ts";

/** After the ring formed: let the bootstrap's work (view change, first rounds, JIT) settle first. */
const SETTLE_MS = 2_000;

const workload: Workload = {
  id: "R5",
  title: "an idle 5-node ring (defaults): CPU per node",
  clients: "one",
  table: "ring",
  async run(ctx) {
    const ring = await startRing(ctx);
    try {
      await sleep(SETTLE_MS);
      const before = ring.nodes.map((n) => cpuSeconds(n.pid));
      const switchesBefore = ring.nodes.map((n) => voluntarySwitches(n.pid));
      const t0 = now();
      await sleep(ctx.durationMs);
      const seconds = (now() - t0) / 1000;
      const metrics: Metrics = {};
      ring.nodes.forEach((n, i) => {
        metrics[`cpuPct${i}`] = (100 * (cpuSeconds(n.pid) - before[i])) / seconds;
        metrics[`wakeupsPerS${i}`] = (voluntarySwitches(n.pid) - switchesBefore[i]) / seconds;
      });
      const rotation = (await ring.clients[0].status()).lastRotationMs;
      metrics.rotationMs = rotation ?? Number.NaN;
      const perNode = (key: string) => ring.nodes.map((_, i) => fmt(metrics[`${key}${i}`])).join(", ");
      return { metrics, notes: [`CPU per node: ${perNode("cpuPct")} %; wake-ups per node: ${perNode("wakeupsPerS")} /s; token rotation ${fmt(metrics.rotationMs)} ms`] };
    } finally {
      await ring.stop();
    }
  },
  rows: [
    {
      label: "R5 idle ring, CPU per node, % of a core",
      show: (m, runs) => {
        const all = samplesOf(runs, /^cpuPct\d+$/);
        return `${fmt(median(all))}% median, max ${fmt(Math.max(...all))}% (${all.length} node-phases; token rotation ${fmt(m.rotationMs)} ms)`;
      },
      value: (_m, runs) => median(samplesOf(runs, /^cpuPct\d+$/)),
      target: "< 1%",
    },
  ],
};
export default workload;
