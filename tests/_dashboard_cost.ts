/**
 * What an open dashboard costs a lock server (docs/dashboard.md): a local cluster (p1, b1, a1)
 * with one session holding 10,000 locks; the CPU ticks of p1 and b1 (/proc/PID/stat, utime +
 * stime) over 10 s without a dashboard stream, then over 10 s with one stream open on p1 (20
 * snapshots; p1 builds its part and reads b1's and a1's). Prints one JSON line: the extra CPU
 * per snapshot, and the load average. Not a test (it takes about 40 s):
 *   node node_modules/deno/bin.cjs run -A tests/_dashboard_cost.ts
 */
import { readFileSync } from "node:fs";
import process from "node:process";
import { startCluster } from "./_lock_cluster.ts";
import { eventually, sleep } from "./_harness.ts";

const ticks = (pid: number) => {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return Number(f[11]) + Number(f[12]);
};
const cluster = await startCluster(["sessionTtlMs = 600000"]);
try {
  const post = (path: string, body: unknown) => fetch(`${cluster.urls.p1}${path}`, { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" } }).then((r) => r.json());
  const s = await post("/v1/sessions", { ttlMs: 600000 });
  for (let i = 0; i < 10_000; i += 100) {
    await Promise.all(Array.from({ length: 100 }, (_, j) => post("/v1/enter", { name: `lock/${i + j}`, session: s.session, sessionSecret: s.sessionSecret })));
  }
  const pid = cluster.procs.get("p1")!.pid;
  const bpid = cluster.procs.get("b1")!.pid;
  // The fill is replicated before the idle window: b1 has every entry (the condition, bounded).
  await eventually("b1 acknowledged every entry of the fill", async () => {
    const status = await fetch(`${cluster.urls.p1}/v1/status?summary=1`).then((r) => r.json());
    return status.server?.backup?.lagEntries === 0;
  }, 30_000);
  // Measurement windows: CPU over a fixed time, not waits for a condition.
  const windowMs = 10_000;
  let t0 = ticks(pid), b0 = ticks(bpid);
  await sleep(windowMs);
  const idle = ticks(pid) - t0, bidle = ticks(bpid) - b0;
  const ac = new AbortController();
  const answer = await fetch(`${cluster.urls.p1}/v1/dashboard/events`, { signal: ac.signal });
  const reader = answer.body!.getReader();
  let bytes = 0;
  let reads = 0;
  const pump = (async () => {
    try {
      // Bounded by the window: the stream is aborted after it.
      for (;;) {
        const r = await reader.read();
        if (r.done) break;
        bytes += r.value.byteLength;
        reads++;
      }
    } catch {
      // aborted at the window's end
    }
  })();
  t0 = ticks(pid); b0 = ticks(bpid);
  await sleep(windowMs);
  const streamed = ticks(pid) - t0, bstreamed = ticks(bpid) - b0;
  ac.abort();
  await pump;
  const snapshots = windowMs / 500;
  console.log(JSON.stringify({ locks: 10000, windowMs, reads, p1IdleTicks: idle, p1StreamTicks: streamed, b1IdleTicks: bidle, b1StreamTicks: bstreamed, bytes, snapshots, p1ExtraMsPerSnapshot: ((streamed - idle) * 10) / snapshots, b1ExtraMsPerSnapshot: ((bstreamed - bidle) * 10) / snapshots, loadavg: readFileSync("/proc/loadavg", "utf8").trim() }));
} finally {
  await cluster.stopAll();
}
process.exit(0);
