/**
 * F1 for the peers with a leader (etcd, ZooKeeper), as mutexd's F1 (tests/bench/workloads/f1.ts)
 * measures it: three members on this machine; a client holds a lock; `kill -9` of the leader at
 * another moment each time; the time until the same client's next acquire of a free lock
 * succeeds (retried after 10 ms on every error: the client moves to another member by itself);
 * then whether the held lock was kept as it was and its next grant's token is higher. Same metrics and rows as
 * mutexd's F1, so the table puts them side by side. Redis is one node: no F1.
 */
import f1 from "../workloads/f1.ts";
import { signal } from "../lib/server.ts";
import { median } from "../lib/stats.ts";
import { type Metrics, now, sleep, type Workload } from "../lib/workload.ts";
import type { Peer } from "./servers.ts";

const KILLS_PER_RUN = 3;
/** The probe gives up after this long (mutexd's F1 client: failoverTimeoutMs 10 s). */
const PROBE_LIMIT_MS = 10_000;
const TTL_MS = 10_000;
/** A failed probe (refused by the dead member, or no leader yet) is tried again after this pause. */
const RETRY_MS = 10;
const MAX_TRIES = 5_000;

export function peerF1(peer: Peer): Workload {
  const { startCluster, clusterClient } = peer;
  if (!startCluster || !clusterClient) throw new Error(`${peer.id} has no cluster for F1`);
  return {
    ...f1,
    async run(ctx) {
      const takeovers: number[] = [];
      const notes: string[] = [];
      let kept = 0;
      for (let k = 0; k < KILLS_PER_RUN; k++) {
        const cluster = await startCluster();
        ctx.adopt(cluster);
        const client = clusterClient(cluster);
        const session = await client.openSession(TTL_MS);
        const held = await client.enter("f1-held", session, 5_000);
        if (!held.granted) throw new Error("the held lock was not granted");
        // Kill at another moment of the leader's heartbeat each time, as mutexd's F1 does.
        await sleep(300 + ((ctx.run * KILLS_PER_RUN + k) * 37) % 100);
        const leader = await cluster.leaderPid();
        const killedAt = now();
        signal(leader, "SIGKILL");
        let probe: { granted: boolean; token?: number } = { granted: false };
        let tries = 0;
        while (!probe.granted && now() - killedAt < PROBE_LIMIT_MS && tries < MAX_TRIES) {
          tries++;
          probe = await client.enter(`f1-probe-${k}`, session, 0).catch(async () => {
            // The probe's backoff while the cluster elects: a retry pause, bounded by PROBE_LIMIT_MS.
            await sleep(RETRY_MS);
            return { granted: false };
          });
        }
        if (!probe.granted) {
          notes.push(`kill ${k}: no acquire within ${PROBE_LIMIT_MS} ms (${tries} tries)`);
          await session.close().catch(() => {});
          client.close();
          await cluster.stop(500);
          continue;
        }
        takeovers.push(now() - killedAt);
        const keptAsItWas = await client.isHeld("f1-held", session, held.token).catch(() => false);
        // The held lock's next grant must carry a higher token (ZooKeeper's sequence numbers are
        // per lock, so the probe's token says nothing about the held lock's).
        await client.leave("f1-held", session, held.token);
        const again = await client.enter("f1-held", session, 5_000);
        if (keptAsItWas && again.granted && again.token > held.token) kept++;
        else notes.push(`kill ${k}: held lock kept ${keptAsItWas}, next token ${again.granted ? again.token : "none"} after ${held.token}`);
        await session.close().catch(() => {});
        client.close();
        await cluster.stop(500);
      }
      const metrics: Metrics = { takeoverMedian: median(takeovers), kills: takeovers.length, kept };
      takeovers.forEach((t, i) => (metrics[`takeover${i}`] = t));
      return { metrics, notes };
    },
  };
}
