/**
 * etcd's W1 measured on this machine now, for a same-load comparison with mutexd's durable log
 * (docs/bench.md, "With the durable log"): a fresh single-member etcd (the Debian package
 * `etcd-server`, 3.4) on a temp data dir on 127.0.0.1, and one client doing the uncontended path
 * of etcd's Mutex recipe (one Txn "put my key with my lease if it has no create revision", then
 * one DeleteRange: two Raft writes, each fsynced) through etcd's JSON gateway with fetch, for
 * `--duration` seconds after a 1 s warm-up, `--runs` times, each on a fresh etcd. The gateway's
 * JSON costs more per request than peer-bench.md's gRPC client: a lower bound on etcd's rate.
 *
 *   bun tests/bench/etcd_w1.ts [--runs 3] [--duration 10]
 *
 * Stops its etcd by PID and removes its dir.
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { freePort, removeDir, startProcess, tempDir, waitForHttp } from "../_harness.ts";
import { median } from "./lib/stats.ts";

const { values } = parseArgs({ args: process.argv.slice(2), options: { runs: { type: "string" }, duration: { type: "string" } } });
const runs = Number(values.runs ?? 3);
const durationMs = Number(values.duration ?? 10) * 1000;
if (!(runs >= 1 && runs <= 20) || !(durationMs >= 500 && durationMs <= 60_000)) throw new Error("--runs 1..20, --duration 0.5..60");

const b64 = (text: string) => Buffer.from(text).toString("base64");

async function post(base: string, path: string, body: unknown): Promise<Record<string, unknown>> {
  const response = await fetch(`${base}${path}`, { method: "POST", body: JSON.stringify(body) });
  const text = await response.text();
  if (!response.ok) throw new Error(`${path}: ${response.status} ${text.slice(0, 200)}`);
  return JSON.parse(text);
}

async function oneRun(): Promise<{ rate: number; p50Ms: number; p99Ms: number }> {
  const dir = tempDir("mutexd-etcd-");
  const [client, peer] = [await freePort(), await freePort()];
  const base = `http://127.0.0.1:${client}`;
  const etcd = startProcess("etcd", [
    "--data-dir", `${dir}/data`, "--listen-client-urls", base, "--advertise-client-urls", base,
    "--listen-peer-urls", `http://127.0.0.1:${peer}`, "--initial-advertise-peer-urls", `http://127.0.0.1:${peer}`,
    "--initial-cluster", `default=http://127.0.0.1:${peer}`,
  ]);
  let keepAlive: ReturnType<typeof setInterval> | undefined;
  try {
    await waitForHttp(`${base}/health`);
    const lease = await post(base, "/v3/lease/grant", { TTL: 10 });
    // Kept alive every TTL/3 beside the loop, as the peers' clients and mutexd's do.
    keepAlive = setInterval(() => void post(base, "/v3/lease/keepalive", { ID: lease.ID }).catch(() => {}), 3_333);
    const key = b64(`w1/lock/${lease.ID}`);
    const cycle = async () => {
      const txn = await post(base, "/v3/kv/txn", {
        compare: [{ key, target: "CREATE", create_revision: "0" }],
        success: [{ request_put: { key, value: b64(""), lease: lease.ID } }],
        failure: [{ request_range: { key } }],
      });
      if (txn.succeeded !== true) throw new Error("the lock key existed: a release was lost");
      await post(base, "/v3/kv/deleterange", { key });
    };
    const warmupEnd = performance.now() + 1_000;
    for (let i = 0; i < 100_000 && performance.now() < warmupEnd; i++) await cycle();
    const latencies: number[] = [];
    const start = performance.now();
    for (let i = 0; i < 1_000_000 && performance.now() - start < durationMs; i++) {
      const t0 = performance.now();
      await cycle();
      latencies.push(performance.now() - t0);
    }
    const seconds = (performance.now() - start) / 1000;
    latencies.sort((a, b) => a - b);
    return { rate: latencies.length / seconds, p50Ms: latencies[Math.floor(latencies.length / 2)], p99Ms: latencies[Math.floor(latencies.length * 0.99)] };
  } finally {
    clearInterval(keepAlive);
    etcd.kill("SIGKILL");
    await etcd.exited;
    removeDir(dir);
  }
}

const results = [];
for (let run = 1; run <= runs; run++) {
  const result = await oneRun();
  process.stdout.write(`[etcd W1] run ${run}: ${result.rate.toFixed(0)}/s, a+r p50 ${result.p50Ms.toFixed(2)} ms, p99 ${result.p99Ms.toFixed(2)} ms\n`);
  results.push(result);
}
process.stdout.write(`etcd 3.4 W1 (JSON gateway, 1 member), median of ${runs}: ${median(results.map((r) => r.rate)).toFixed(0)}/s, ` +
  `a+r p50 ${median(results.map((r) => r.p50Ms)).toFixed(2)} ms\n`);
