/**
 * F1: kill -9 the primary of arbiter + primary + backup; time from the kill until a new acquire
 * (of a lock nobody holds) succeeds through the client, which moves to the backup by itself.
 * Also checks what the peers' F1 checked: the lock held across the takeover is kept (not lost,
 * not granted twice) and the next token is higher. Always the replicated topology.
 */
import { connect } from "../../../lib/client/lock_client.ts";
import { signal } from "../lib/server.ts";
import { fmt, median } from "../lib/stats.ts";
import { type Metrics, now, sleep, total, type Workload } from "../lib/workload.ts";

const KILLS_PER_RUN = 3;

function allTakeovers(runs: Metrics[]): number[] {
  return runs.flatMap((m) => Object.keys(m).filter((k) => /^takeover\d+$/.test(k)).map((k) => m[k]));
}

const workload: Workload = {
  id: "F1",
  title: "kill -9 the primary (arbiter + primary + backup): time until a new acquire succeeds",
  clients: "one",
  killsServers: true,
  async run(ctx) {
    const takeovers: number[] = [];
    const notes: string[] = [];
    let kept = 0;
    for (let k = 0; k < KILLS_PER_RUN; k++) {
      const server = await ctx.startServer({ topology: "replicated" });
      // Wait until the backup is recorded in sync: only then may it take over.
      for (let i = 0; i < 200; i++) {
        const status = await (await fetch(`${server.url}/v1/status`)).json() as { server?: { backup?: { arbiterRecordedInSync?: boolean } } };
        if (status.server?.backup?.arbiterRecordedInSync) break;
        await sleep(25);
      }
      const client = connect({ servers: server.urls, failoverTimeoutMs: 10_000 });
      const held = await client.lock("f1-held", { ttlMs: 10_000 });
      // Kill at another phase of the 100 ms lease renewal each time.
      await sleep(300 + ((ctx.run * KILLS_PER_RUN + k) * 37) % 100);
      const killedAt = now();
      signal(server.pid, "SIGKILL");
      const probe = await client.lock(`f1-probe-${k}`, { ttlMs: 10_000, waitMs: 0 });
      takeovers.push(now() - killedAt);
      if (held.signal.aborted) notes.push(`kill ${k}: the held lock was lost`);
      if (probe.token <= held.token) notes.push(`kill ${k}: token ${probe.token} ≤ held ${held.token}`);
      const info = await (await fetch(`${server.urls[1]}/v1/locks/f1-held`)).json() as { holders?: Array<{ token: number }> };
      const keptAsItWas = !held.signal.aborted && info.holders?.length === 1 && info.holders[0].token === held.token;
      if (keptAsItWas && probe.token > held.token) kept += 1;
      else notes.push(`kill ${k}: held lock not kept as it was`);
      await probe.release();
      await held.release();
      await server.stop(500);
    }
    const metrics: Metrics = { takeoverMedian: median(takeovers), kills: takeovers.length, kept };
    takeovers.forEach((t, i) => (metrics[`takeover${i}`] = t));
    return { metrics, notes };
  },
  rows: [
    {
      label: "F1 kill -9 primary → new acquire succeeds, ms",
      show: (_m, runs) => {
        const all = allTakeovers(runs);
        return `${fmt(median(all))} (${all.length} kills, ${fmt(Math.min(...all))}–${fmt(Math.max(...all))})`;
      },
      value: (_m, runs) => median(allTakeovers(runs)),
      peers: {
        etcd: { text: "1,461 (1,322–1,612)", value: 1461 },
        zk: { text: "459 (408–479)", value: 459 },
      },
    },
    {
      label: "F1 held lock afterwards",
      show: (_m, runs) => `kept, not double-granted, next token higher (${total(runs, "kept")}/${total(runs, "kills")})`,
      peers: {
        etcd: { text: "kept, not double-granted, lease alive (3/3)" },
        zk: { text: "kept, not double-granted, session alive (3/3)" },
      },
    },
  ],
};
export default workload;
