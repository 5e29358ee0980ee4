/** W1 and W2: N clients, each on its own lock, acquire then release as fast as they can. */
import { makeClient } from "./clients.ts";
import { CpuMeter, type ServerHandle } from "./server.ts";
import { latency } from "./stats.ts";
import { type Metrics, now, putLatency, range, type RunResult, type WorkloadContext } from "./workload.ts";

/** Session TTL in W1–W4, as in the peer runs (etcd lease, ZooKeeper session: 10 s). */
export const SESSION_TTL_MS = 10_000;
/** Hard cap on operations per measured phase, whatever the duration (bounds memory too). */
export const MAX_OPS = 2_000_000;

/**
 * `clientCount` clients, each on its own lock, enter then leave in a loop; measured after a
 * warm-up. `server`: one the workload started (the bare baseline), else a fresh deployment of
 * the selected topology.
 */
export async function uncontended(ctx: WorkloadContext, clientCount: number, prefix: string, started?: ServerHandle): Promise<RunResult> {
  const server = started ?? await ctx.startServer();
  const clients = range(clientCount).map(() => ctx.makeClient?.(server) ?? makeClient(ctx.client, server.urls));
  const sessions = await Promise.all(clients.map((c) => c.openSession(SESSION_TTL_MS)));
  const notes: string[] = [];

  const phase = async (ms: number, record: boolean) => {
    const acquire: number[] = [];
    const cycle: number[] = [];
    let ops = 0;
    let errors = 0;
    const start = now();
    const end = start + ms;
    await Promise.all(clients.map(async (client, i) => {
      const name = `${prefix}-${i}`;
      while (now() < end && ops < MAX_OPS) {
        const t0 = now();
        try {
          const answer = await client.enter(name, sessions[i], 10_000);
          if (!answer.granted) throw new Error(`${name} not granted (position ${answer.position})`);
          const t1 = now();
          await client.leave(name, sessions[i], answer.token);
          const t2 = now();
          if (record) {
            acquire.push(t1 - t0);
            cycle.push(t2 - t0);
          }
          ops++;
        } catch (error) {
          errors++;
          if (errors <= 3) notes.push(`${name}: ${(error as Error).message}`);
          if (errors > 100) throw new Error(`too many errors: ${notes.join("; ")}`);
        }
      }
    }));
    return { acquire, cycle, ops, errors, elapsedMs: now() - start };
  };

  // Warm-up (JIT, connection pools), not measured.
  await phase(Math.min(1_000, ctx.durationMs / 5), false);
  const cpu = new CpuMeter(server);
  cpu.start();
  const measured = await phase(ctx.durationMs, true);
  const usage = cpu.stop();
  await Promise.all(sessions.map((s) => s.close().catch(() => {})));
  clients.forEach((c) => c.close());

  const metrics: Metrics = {
    rate: (measured.ops / measured.elapsedMs) * 1000,
    ops: measured.ops,
    errors: measured.errors,
    ...usage,
    // Server CPU time per acquire+release (µs): steadier than rates on a shared machine.
    serverUsPerOp: (usage.serverCpuPct / 100) * 1e6 / ((measured.ops / measured.elapsedMs) * 1000),
  };
  putLatency(metrics, "acquire", latency(measured.acquire));
  putLatency(metrics, "cycle", latency(measured.cycle));
  return { metrics, notes };
}
