/**
 * F2: kill -9 the holder (session TTL 2 s); time from the kill until the waiter, already queued,
 * gets the lock. The holder is a separate process (tests/bench/holder.ts, mutexd's client); the
 * kill comes at a different point of its keepalive cycle each time (keepalive every TTL/3).
 */
import { spawn } from "node:child_process";
import { join } from "node:path";
import { ROOT } from "../../_harness.ts";
import { makeClient } from "../lib/clients.ts";
import { runtimeArgv, signal } from "../lib/server.ts";
import { fmt, median } from "../lib/stats.ts";
import { type Metrics, now, sleep, type Workload } from "../lib/workload.ts";

const KILLS_PER_RUN = 3;

function allTakeovers(runs: Metrics[]): number[] {
  return runs.flatMap((m) => Object.keys(m).filter((k) => /^takeover\d+$/.test(k)).map((k) => m[k]));
}
const TTL_MS = 2_000;

/** Starts the holder and resolves with its pid and token once it holds the lock. */
function startHolder(url: string, name: string): Promise<{ pid: number; token: number; exited: Promise<void> }> {
  const [cmd, ...pre] = runtimeArgv();
  const child = spawn(cmd, [...pre, join(ROOT, "tests/bench/holder.ts"), url, name, String(TTL_MS)], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  return new Promise((resolve, reject) => {
    let out = "";
    let err = "";
    const timer = setTimeout(() => {
      signal(child.pid!, "SIGKILL");
      reject(new Error(`holder did not take ${name} within 15 s: ${err}`));
    }, 15_000);
    child.stderr!.on("data", (d) => (err += d));
    child.stdout!.on("data", (d) => {
      out += d;
      const match = /held (\d+)/.exec(out);
      if (match) {
        clearTimeout(timer);
        resolve({ pid: child.pid!, token: Number(match[1]), exited });
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`holder exited with ${code} before holding ${name}: ${err}`));
    });
  });
}

const workload: Workload = {
  id: "F2",
  title: "kill -9 the holder (TTL 2 s): time until the waiter gets the lock",
  clients: "one",
  async run(ctx) {
    const server = await ctx.startServer();
    const client = makeClient(ctx.client, server.urls);
    const session = await client.openSession(10_000);
    const notes: string[] = [];
    const takeovers: number[] = [];
    for (let k = 0; k < KILLS_PER_RUN; k++) {
      const name = `f2-${k}`;
      const holder = await startHolder(server.urls.join(","), name);
      const waiting = client.enter(name, session, 15_000);
      // Hold a little longer each time, so the kill lands at another phase of the keepalive cycle.
      await sleep(700 + ((ctx.run * KILLS_PER_RUN + k) * 263) % 700);
      const lock = await (await fetch(`${server.url}/v1/locks/${name}`)).json() as { waiters?: unknown[] };
      if ((lock.waiters?.length ?? 0) !== 1) notes.push(`${name}: waiter not queued before the kill`);
      const killedAt = now();
      signal(holder.pid, "SIGKILL");
      const answer = await waiting;
      const takeover = now() - killedAt;
      await holder.exited;
      if (!answer.granted) {
        notes.push(`${name}: waiter not granted within 15 s`);
        continue;
      }
      if (answer.token <= holder.token) notes.push(`${name}: waiter's token ${answer.token} ≤ holder's ${holder.token}`);
      takeovers.push(takeover);
      await client.leave(name, session, answer.token);
    }
    await session.close().catch(() => {});
    client.close();
    const metrics: Metrics = {
      takeoverMedian: median(takeovers),
      takeoverMin: Math.min(...takeovers),
      takeoverMax: Math.max(...takeovers),
      kills: takeovers.length,
    };
    takeovers.forEach((t, i) => (metrics[`takeover${i}`] = t));
    return { metrics, notes };
  },
  rows: [
    {
      label: "F2 kill -9 holder (TTL 2 s) → waiter has it, ms",
      // Like the peer report: median and max over every kill of every run.
      show: (_m, runs) => {
        const all = allTakeovers(runs);
        return `${fmt(median(all))} (${all.length} kills, ${fmt(Math.min(...all))}–${fmt(Math.max(...all))})`;
      },
      value: (_m, runs) => median(allTakeovers(runs)),
      peers: {
        etcd: { text: "1,790 (9 kills, max 1,906)", value: 1790 },
        redis: { text: "1,675 (max 1,681)", value: 1675 },
        zk: { text: "1,889 (max 2,054)", value: 1889 },
      },
    },
  ],
};
export default workload;
