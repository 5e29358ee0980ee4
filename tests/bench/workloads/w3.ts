/**
 * W3: 32 clients, 1 lock. Each client enters (long-polling in the FIFO queue), releases at once
 * and enters again. Handoffs/s, wait for the lock, fairness, and safety: sorted by fencing token,
 * no two grants share a token and each grant arrives after the previous holder sent its release
 * (same clock: this process's performance.now()).
 */
import { makeClient } from "../lib/clients.ts";
import { CpuMeter } from "../lib/server.ts";
import { fmt, fmtLatency, jain, latency } from "../lib/stats.ts";
import { MAX_OPS, SESSION_TTL_MS } from "../lib/uncontended.ts";
import { getLatency, type Metrics, now, putLatency, range, total, type Workload } from "../lib/workload.ts";

const CLIENTS = 32;
const LOCK = "w3";

interface Grant {
  client: number;
  token: number;
  enterAt: number;
  grantAt: number;
  releaseAt: number;
}

const workload: Workload = {
  id: "W3",
  title: "32 clients, 1 lock: handoffs, wait, fairness, safety",
  clients: "each",
  async run(ctx) {
    const server = await ctx.startServer();
    const clients = range(CLIENTS).map(() => ctx.makeClient?.(server) ?? makeClient(ctx.client, server.urls));
    const sessions = await Promise.all(clients.map((c) => c.openSession(SESSION_TTL_MS)));
    const notes: string[] = [];
    const grants: Grant[] = [];
    let errors = 0;
    let notGranted = 0;

    const phase = async (ms: number, record: boolean) => {
      const start = now();
      const end = start + ms;
      let ops = 0;
      await Promise.all(clients.map(async (client, i) => {
        while (now() < end && ops < MAX_OPS) {
          const enterAt = now();
          try {
            const answer = await client.enter(LOCK, sessions[i], 10_000);
            const grantAt = now();
            if (!answer.granted) {
              notGranted++;
              continue;
            }
            const releaseAt = now();
            await client.leave(LOCK, sessions[i], answer.token);
            ops++;
            if (record) grants.push({ client: i, token: answer.token, enterAt, grantAt, releaseAt });
          } catch (error) {
            errors++;
            if (errors <= 3) notes.push(`client ${i}: ${(error as Error).message}`);
            if (errors > 100) throw new Error(`too many errors: ${notes.join("; ")}`);
          }
        }
      }));
      return { start, end };
    };

    await phase(Math.min(1_000, ctx.durationMs / 5), false);
    const cpu = new CpuMeter(server);
    cpu.start();
    const window = await phase(ctx.durationMs, true);
    const usage = cpu.stop();
    await Promise.all(sessions.map((s) => s.close().catch(() => {})));
    clients.forEach((c) => c.close());

    // Safety over every recorded grant, including those of the drain after the window.
    const byToken = [...grants].sort((a, b) => a.token - b.token);
    let duplicates = 0;
    let overlaps = 0;
    for (let k = 1; k < byToken.length; k++) {
      const prev = byToken[k - 1];
      const next = byToken[k];
      if (next.token === prev.token) duplicates++;
      else if (next.grantAt < prev.releaseAt) overlaps++;
    }
    if (duplicates + overlaps > 0) notes.push(`SAFETY: ${duplicates} duplicate tokens, ${overlaps} overlapping grants`);

    // Rates and fairness over grants inside the measured window.
    const inWindow = byToken.filter((g) => g.grantAt >= window.start && g.grantAt <= window.end);
    let handoffs = 0;
    for (let k = 1; k < inWindow.length; k++) if (inWindow[k].client !== inWindow[k - 1].client) handoffs++;
    const perClient = range(CLIENTS).map((i) => inWindow.filter((g) => g.client === i).length);
    const seconds = (window.end - window.start) / 1000;
    const metrics: Metrics = {
      handoffsPerS: handoffs / seconds,
      grantsPerS: inWindow.length / seconds,
      grantsMin: Math.min(...perClient),
      grantsMax: Math.max(...perClient),
      jain: jain(perClient),
      starved: perClient.filter((n) => n === 0).length,
      checked: byToken.length,
      duplicates,
      overlaps,
      errors,
      notGranted,
      ...usage,
      serverUsPerGrant: (usage.serverCpuPct / 100) * 1e6 / (inWindow.length / seconds),
    };
    putLatency(metrics, "wait", latency(inWindow.map((g) => g.grantAt - g.enterAt)));
    return { metrics, notes };
  },
  rows: [
    {
      label: "W3 handoffs/s (grants/s)",
      show: (m) => `${fmt(m.handoffsPerS)}/s (${fmt(m.grantsPerS)})`,
      value: (m) => m.handoffsPerS,
      peers: {
        etcd: { text: "268/s (268)", value: 268 },
        redis: { text: "1,218/s (6,083)", value: 1218 },
        zk: { text: "905/s (905)", value: 905 },
      },
    },
    {
      label: "W3 wait for the lock p50/p99/max ms",
      show: (m) => fmtLatency(getLatency(m, "wait")),
      value: (m) => m["wait.p50"],
      peers: {
        etcd: { text: "113/163/177", value: 113 },
        redis: { text: "0.09/137/565", value: 0.09 },
        zk: { text: "31/64/80", value: 31 },
      },
    },
    {
      label: "W3 grants per client, Jain, starved",
      show: (m) => `${fmt(m.grantsMin)}–${fmt(m.grantsMax)}, ${m.jain.toFixed(3)}, ${m.starved}`,
      peers: {
        etcd: { text: "83–84, 1.000, 0" },
        redis: { text: "1,449–2,381, 0.984, 0" },
        zk: { text: "282–283, 1.000, 0" },
      },
    },
    {
      label: "W3 safety: overlapping/duplicate grants (all runs)",
      show: (_m, runs) => `${total(runs, "overlaps")}/${total(runs, "duplicates")} of ${fmt(total(runs, "checked"))}`,
      peers: { etcd: { text: "0 of 8,591" }, redis: { text: "0 of 198,626" }, zk: { text: "0 of 28,045" } },
    },
    {
      label: "W3 CPU server / client (server µs per grant)",
      show: (m) => `${fmt(m.serverCpuPct)}% / ${fmt(m.clientCpuPct)}% (${fmt(m.serverUsPerGrant)} µs)`,
    },
  ],
};
export default workload;
