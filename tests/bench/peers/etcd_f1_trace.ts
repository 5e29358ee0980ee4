/**
 * Traces one etcd F1 kill, request by request (a diagnosis, not part of `make bench-peers`):
 * three members as F1 starts them, a client holding a lock as F1's, `kill -9` of the leader, then
 * F1's probe loop, with every request of the client logged (member, path, outcome, when it ended
 * and how long it took, in ms from the kill) and, beside it, each survivor's
 * `/v3/maintenance/status` asked every 20 ms (when it first names a leader, and which).
 *   bun tests/bench/peers/etcd_f1_trace.ts [--kills 3] [--try-ms N[,N…]] [--request-ms 10000]
 * --try-ms bounds each try of a request (default: F1's client, ETCD_F1_TRY_MS); several take turns,
 * kill by kill, so that settings compare under the same load; --try-ms 1000 times as F1's client
 * did before (1 s per request, then the next member after 10 ms); both 10000, a client with no deadline of its own (etcd's Go client without
 * a context deadline). Ends with a line per kill: the survivors' new leader, the acquire, ms.
 */
import { parseArgs } from "node:util";
import process from "node:process";
import { signal } from "../lib/server.ts";
import { now, sleep } from "../lib/workload.ts";
import { ETCD_F1_TRY_MS, PEERS } from "./servers.ts";
import { EtcdLockClient } from "./etcd.ts";

const { values: flags } = parseArgs({ args: process.argv.slice(2), options: { kills: { type: "string" }, "try-ms": { type: "string" }, "request-ms": { type: "string" } } });
const kills = Number(flags.kills ?? 3);
const requestMs = Number(flags["request-ms"] ?? 10_000);
const tryMsList = (flags["try-ms"] ?? String(ETCD_F1_TRY_MS)).split(",").map(Number);
if (!(kills >= 1 && kills <= 20) || !(requestMs >= 10 && requestMs <= 10_000) || !tryMsList.every((t) => t >= 10 && t <= requestMs)) {
  throw new Error("--kills 1..20, --request-ms 10..10000, --try-ms 10..request-ms");
}
const PROBE_LIMIT_MS = 10_000;
const STATUS_EVERY_MS = 20;

const realFetch = globalThis.fetch;
let killedAt = Infinity;
const port = (url: string) => new URL(url).port;
/** The client's requests after the kill, logged as they end. */
globalThis.fetch = (async (input: string | URL | Request, init?: RequestInit) => {
  const url = String(input);
  const started = now();
  const since = () => (now() - killedAt).toFixed(0).padStart(5);
  try {
    const response = await realFetch(input, init);
    const said = response.ok ? "" : ` ${(await response.clone().text()).slice(0, 160)}`;
    if (started >= killedAt - 1) console.log(`${since()} ms  :${port(url)} ${new URL(url).pathname} → ${response.status}${said} after ${(now() - started).toFixed(0)} ms`);
    return response;
  } catch (error) {
    if (started >= killedAt - 1) console.log(`${since()} ms  :${port(url)} ${new URL(url).pathname} → ${(error as Error).name}: ${(error as Error).message.slice(0, 80)} after ${(now() - started).toFixed(0)} ms`);
    throw error;
  }
}) as typeof fetch;

const peer = PEERS.etcd;
const summary: string[] = [];
for (let k = 0; k < kills; k++) {
  const cluster = await peer.startCluster!();
  try {
    const tryMs = tryMsList[k % tryMsList.length];
    const client = new EtcdLockClient(cluster.urls, requestMs, tryMs);
    const session = await client.openSession(10_000);
    const held = await client.enter("f1-held", session, 5_000);
    // Workload, not a wait for a condition: the lock is held a while before the kill, and each
    // kill falls at another point of etcd's 100 ms heartbeat cycle (a fixed offset per kill, no clock seed).
    await sleep(300 + (k * 37) % 100);
    const leader = await cluster.leaderPid();
    const statusOf = (url: string) =>
      realFetch(`${url}/v3/maintenance/status`, { method: "POST", body: "{}", signal: AbortSignal.timeout(500) }).then((r) => r.json()).catch(() => undefined);
    const oldLeader = (await statusOf(cluster.urls[cluster.pids.indexOf(leader)]))?.leader;
    const survivors = cluster.urls.filter((_, i) => cluster.pids[i] !== leader);
    console.log(`kill ${k} (try ${tryMs} ms): members ${cluster.urls.map(port).join(", ")}; leader :${port(cluster.urls[cluster.pids.indexOf(leader)])}; held token ${held.granted ? held.token : "-"}`);
    killedAt = now();
    signal(leader, "SIGKILL");
    // Each survivor's view of the leader, asked on the side (not logged as the client's), until it
    // names a new one: after the acquire too, which can come first (the poll's 20 ms pause).
    /** When a survivor first named the new leader, ms after the kill. */
    let leaderAt = NaN;
    const seen = survivors.map(async (url) => {
      while (now() - killedAt < PROBE_LIMIT_MS) {
        const status = await statusOf(url);
        if (status?.leader && status.leader !== "0" && status.leader !== oldLeader) {
          if (Number.isNaN(leaderAt)) leaderAt = now() - killedAt;
          console.log(`${(now() - killedAt).toFixed(0).padStart(5)} ms  [status] :${port(url)} names leader ${status.leader}, term ${status.raftTerm}`);
          return;
        }
        await sleep(STATUS_EVERY_MS);
      }
    });
    let granted = false;
    while (!granted && now() - killedAt < PROBE_LIMIT_MS) {
      granted = (await client.enter(`f1-probe-${k}`, session, 0).catch(async () => {
        await sleep(10);
        return { granted: false };
      })).granted;
    }
    const acquiredAt = now() - killedAt;
    console.log(`${acquiredAt.toFixed(0).padStart(5)} ms  probe ${granted ? "granted" : "not granted"}`);
    await Promise.all(seen);
    summary.push(`kill ${k}: try ${tryMs} ms, new leader named at ${leaderAt.toFixed(0)} ms, acquire ${granted ? "at" : "failed at"} ${acquiredAt.toFixed(0)} ms`);
    killedAt = Infinity;
    await session.close().catch(() => {});
  } finally {
    await cluster.stop(500);
  }
}
for (const line of summary) console.log(line);
process.exit(0);
