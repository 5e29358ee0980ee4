/**
 * W4: 10,000 locks held by 100 clients (100 each, own session each). All clients acquire their
 * locks at once (each one after the other), the server's RSS is read while all are held, then
 * all are released. RSS is VmRSS of the server process from /proc/<pid>/status.
 */
import { makeClient } from "../lib/clients.ts";
import { CpuMeter, rssMiB } from "../lib/server.ts";
import { fmt, fmtLatency, latency } from "../lib/stats.ts";
import { SESSION_TTL_MS } from "../lib/uncontended.ts";
import { getLatency, type Metrics, now, putLatency, range, sleep, type Workload } from "../lib/workload.ts";

const CLIENTS = 100;
const LOCKS_PER_CLIENT = 100;
/** Each phase gives up after this, whatever is left (bounded in time as well as count). */
const PHASE_MAX_MS = 10_000;

const workload: Workload = {
  id: "W4",
  title: "10,000 locks held by 100 clients",
  clients: "each",
  async run(ctx) {
    const server = await ctx.startServer();
    await sleep(300); // let the fresh server settle before the "before" reading
    const rssBefore = rssMiB(server.pid);
    const backupRssBefore = server.backupPid === undefined ? Number.NaN : rssMiB(server.backupPid);
    const clients = range(CLIENTS).map(() => makeClient(ctx.client, server.urls));
    const sessions = await Promise.all(clients.map((c) => c.openSession(SESSION_TTL_MS)));
    const notes: string[] = [];
    const tokens = range(CLIENTS).map(() => [] as number[]);
    const acquireMs: number[] = [];
    const cpu = new CpuMeter(server);

    cpu.start();
    let start = now();
    let deadline = start + PHASE_MAX_MS;
    await Promise.all(clients.map(async (client, c) => {
      for (let k = 0; k < LOCKS_PER_CLIENT && now() < deadline; k++) {
        const t0 = now();
        const answer = await client.enter(`w4-${c}-${k}`, sessions[c], 10_000);
        if (!answer.granted) throw new Error(`w4-${c}-${k} not granted`);
        acquireMs.push(now() - t0);
        tokens[c].push(answer.token);
      }
    }));
    const acquireElapsed = now() - start;
    const acquireCpu = cpu.stop();
    const held = tokens.reduce((n, t) => n + t.length, 0);
    if (held < CLIENTS * LOCKS_PER_CLIENT) notes.push(`only ${held} locks acquired within ${PHASE_MAX_MS} ms`);
    const rssHolding = rssMiB(server.pid);
    const backupRssHolding = server.backupPid === undefined ? Number.NaN : rssMiB(server.backupPid);
    const status = await (await fetch(`${server.url}/v1/status`)).json() as { locks: unknown[] };
    if (status.locks.length !== held) notes.push(`server reports ${status.locks.length} locks, client holds ${held}`);

    cpu.start();
    start = now();
    deadline = start + PHASE_MAX_MS;
    let released = 0;
    await Promise.all(clients.map(async (client, c) => {
      for (let k = 0; k < tokens[c].length && now() < deadline; k++) {
        await client.leave(`w4-${c}-${k}`, sessions[c], tokens[c][k]);
        released++;
      }
    }));
    const releaseElapsed = now() - start;
    const releaseCpu = cpu.stop();
    const rssAfter = rssMiB(server.pid);
    await Promise.all(sessions.map((s) => s.close().catch(() => {})));
    clients.forEach((c) => c.close());

    const metrics: Metrics = {
      acquirePerS: (held / acquireElapsed) * 1000,
      releasePerS: (released / releaseElapsed) * 1000,
      held,
      rssBefore,
      rssHolding,
      rssAfter,
      backupRssBefore,
      backupRssHolding,
      serverCpuPct: acquireCpu.serverCpuPct,
      clientCpuPct: acquireCpu.clientCpuPct,
      releaseServerCpuPct: releaseCpu.serverCpuPct,
      releaseClientCpuPct: releaseCpu.clientCpuPct,
    };
    putLatency(metrics, "acquire", latency(acquireMs));
    return { metrics, notes };
  },
  rows: [
    {
      label: "W4 acquire/s, release/s",
      show: (m) => `${fmt(m.acquirePerS)}/s, ${fmt(m.releasePerS)}/s`,
      value: (m) => m.acquirePerS,
      peers: {
        etcd: { text: "4,448/s, 8,294/s", value: 4448 },
        redis: { text: "27,497/s, 49,935/s", value: 27497 },
        zk: { text: "3,139/s, 17,679/s", value: 3139 },
      },
    },
    {
      label: "W4 acquire p50/p99/max ms",
      show: (m) => fmtLatency(getLatency(m, "acquire")),
      value: (m) => m["acquire.p50"],
      peers: {
        etcd: { text: "18/69/105", value: 18 },
        redis: { text: "2.8/11.9/17", value: 2.8 },
        zk: { text: "28/111/144", value: 28 },
      },
    },
    {
      label: "W4 server RSS before → holding (→ released) MiB",
      show: (m) => `${fmt(m.rssBefore)} → ${fmt(m.rssHolding)} (→ ${fmt(m.rssAfter)})`,
      value: (m) => m.rssHolding,
      peers: {
        etcd: { text: "28 → 48", value: 48 },
        redis: { text: "13.4 → 16.0", value: 16 },
        zk: { text: "67 → 274", value: 274 },
      },
    },
    {
      label: "W4 backup RSS before → holding MiB (replicated)",
      show: (m) => Number.isNaN(m.backupRssBefore) ? "n/a" : `${fmt(m.backupRssBefore)} → ${fmt(m.backupRssHolding)}`,
    },
    {
      label: "W4 CPU server / client (acquire phase)",
      show: (m) => `${fmt(m.serverCpuPct)}% / ${fmt(m.clientCpuPct)}%`,
    },
  ],
};
export default workload;
