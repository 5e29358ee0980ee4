/**
 * F3 (issue 11): a returning backup under a large table. For 10,000, 40,000 and 99,990 held
 * locks (locksMax less the load client's room): arbiter + primary + backup, the table filled over
 * HTTP (2,000 sessions, 32 enters at once), then `kill -9` of the backup and a restart while a
 * client acquires and releases a lock in a loop (tests/_resync.ts). Measured: the time from the
 * restart until the primary counts the backup in sync (and the arbiter recorded it), the
 * primary's longest event-loop stall meanwhile (`loopStallRecentMaxMs` of its status), and the
 * client's slowest acquire. Before issue 11 the backup never synced from 40,000 locks on and the
 * primary froze 0.6-1 s per snapshot.
 */
import { join } from "node:path";
import { freePort, writeCluster } from "../../_harness.ts";
import { fillLocks, LOAD_LOCKS, resyncUnderLoad } from "../../_resync.ts";
import { serverDir, type ServerHandle, signal, startNode } from "../lib/server.ts";
import { fmt } from "../lib/stats.ts";
import type { Metrics, Workload, WorkloadContext } from "../lib/workload.ts";

const SIZES = [10_000, 40_000, 100_000 - LOAD_LOCKS - 2];
const RESYNC_DEADLINE_MS = 30_000;

async function measure(ctx: WorkloadContext, locks: number): Promise<Metrics> {
  const dir = serverDir();
  const [pa, pp, pb] = [await freePort(), await freePort(), await freePort()];
  const settings = Object.entries(ctx.settings).map(([k, v]) => `${k} = ${v}\n`).join("");
  const node = (id: string, role: string, port: number, extra = "") => `[[nodes]]\nid = "${id}"\nrole = "${role}"\nhttp = "127.0.0.1:${port}"\n${extra}\n`;
  const file = writeCluster(
    dir,
    `[cluster]\nname = "bench"\n\n[settings]\n${settings}\n` + node("a1", "arbiter", pa, `dataDir = "${join(dir, "a1")}"\n`) +
      node("p1", "primary", pp) + node("b1", "backup", pb),
  );
  const url = (port: number) => `http://127.0.0.1:${port}`;
  const start = async (id: string, port: number) => {
    const handle = await startNode(file, id, url(port), ctx.serverRuntime, dir);
    ctx.adopt(handle);
    return handle;
  };
  await start("a1", pa);
  const primary = await start("p1", pp);
  let backup: ServerHandle = await start("b1", pb);
  const fillStartMs = performance.now();
  await fillLocks(primary.url, { locks, sessions: 2_000, concurrency: 32, deadlineMs: 120_000 });
  const fillMs = performance.now() - fillStartMs;
  ctx.log(`F3 ${locks} locks filled in ${fmt(fillMs)} ms`);
  const result = await resyncUnderLoad(
    primary.url,
    async () => {
      signal(backup.pid, "SIGKILL");
      await backup.exited;
    },
    async () => void (backup = await start("b1", pb)),
    RESYNC_DEADLINE_MS,
  );
  return {
    [`resync${locks}`]: result.resyncMs,
    [`stall${locks}`]: result.stallMaxMs,
    [`acquireMax${locks}`]: result.acquireMaxMs,
    [`failures${locks}`]: result.failures,
    [`fill${locks}`]: fillMs,
  };
}

const workload: Workload = {
  id: "F3",
  title: "kill -9 + restart of the backup under a large table: resync time and the primary's worst stall",
  clients: "one",
  killsServers: true,
  async run(ctx) {
    const metrics: Metrics = {};
    const notes: string[] = [];
    for (const locks of SIZES) {
      Object.assign(metrics, await measure(ctx, locks));
      if (metrics[`failures${locks}`] > 0) notes.push(`${locks} locks: ${metrics[`failures${locks}`]} acquires failed during the resync`);
    }
    return { metrics, notes };
  },
  rows: SIZES.map((locks) => ({
    label: `F3 backup kill -9 + restart, ${locks.toLocaleString("en-US")} held locks: in sync after ms; primary's worst stall ms; slowest acquire ms`,
    show: (m: Metrics) => `${fmt(m[`resync${locks}`])}; ${fmt(m[`stall${locks}`])}; ${fmt(m[`acquireMax${locks}`])}`,
  })),
};
export default workload;
