/**
 * Where a replicated W1 change's CPU goes, per process and per thread, and what each process's
 * system calls are per change (docs/bench.md "Replication cost", sixth pass). One client, one lock,
 * acquire+release in a loop against a fresh deployment (`--topology replicated|single`):
 *   phase 1 (measured, no tracing): CPU per a+r of each server process and of each of its threads
 *     (/proc/PID/task/TID/stat, by thread name: the JS thread, JIT workers, the GC's, Bun's pools);
 *   phase 2 (`--strace`): `strace -f -c` attached to each server process, system calls per a+r.
 *
 *   bun tests/bench/repl_probe.ts [--topology replicated] [--duration 5] [--warmup 2] [--strace] [--plain]
 *
 * Loops bounded by duration and MAX_OPS; servers stopped by PID, strace by its own PID.
 */
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { spawn } from "node:child_process";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { eventually, removeDir } from "../_harness.ts";
import { makeClient } from "./lib/clients.ts";
import { currentRuntime, removeServerDirs, startServer, type Topology } from "./lib/server.ts";

const { values: flags } = parseArgs({ args: process.argv.slice(2), options: { topology: { type: "string" }, duration: { type: "string" }, warmup: { type: "string" }, strace: { type: "boolean" }, plain: { type: "boolean" } } });
const topology = (flags.topology ?? "replicated") as Topology;
const durationMs = Number(flags.duration ?? 5) * 1_000;
const warmupMs = Number(flags.warmup ?? 2) * 1_000;
if (!(durationMs >= 1_000 && durationMs <= 60_000) || !(warmupMs >= 0 && warmupMs <= 60_000)) throw new Error("--duration must be 1..60 s, --warmup 0..60 s");
const MAX_OPS = 2_000_000;
const TICK_US = 1e6 / 100; // USER_HZ

/** Whether every thread of `pid` is traced by `tracerPid` (strace -f has attached to all of them). */
function tracedBy(pid: number, tracerPid: number): boolean {
  return readdirSync(`/proc/${pid}/task`).every((tid) => {
    try {
      return new RegExp(`^TracerPid:\\s+${tracerPid}$`, "m").test(readFileSync(`/proc/${pid}/task/${tid}/status`, "utf8"));
    } catch {
      return true; // the thread ended
    }
  });
}

/** utime+stime ticks of every thread of `pid`, by thread name (threads of one name summed). */
function threadTicks(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
    } catch {
      continue; // the thread ended
    }
    const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")).replace(/[0-9]+$/, "#");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    out.set(name, (out.get(name) ?? 0) + Number(fields[11]) + Number(fields[12]));
    out.set(`${name}:sys`, (out.get(`${name}:sys`) ?? 0) + Number(fields[12]));
  }
  return out;
}

const server = await startServer({ runtime: currentRuntime, topology, secret: !flags.plain });
const names = topology === "replicated" ? ["arbiter", "primary", "backup"] : ["primary"];
try {
  const client = makeClient("project", server.urls);
  const session = await client.openSession(10_000);
  const loop = async (ms: number) => {
    let ops = 0;
    const end = performance.now() + ms;
    while (performance.now() < end && ops < MAX_OPS) {
      const answer = await client.enter("probe", session, 10_000);
      if (!answer.granted) throw new Error("not granted");
      await client.leave("probe", session, answer.token);
      ops++;
    }
    return ops;
  };
  await loop(warmupMs); // warm-up: JIT, connections
  const before = server.pids.map(threadTicks);
  const load0 = loadavg()[0];
  const ops = await loop(durationMs);
  const after = server.pids.map(threadTicks);
  console.log(`${currentRuntime} ${topology}${flags.plain ? " plain" : ", cluster secret"}: ${ops} a+r in ${durationMs / 1000} s (${(ops / (durationMs / 1000)).toFixed(0)}/s); load ${load0.toFixed(2)} → ${loadavg()[0].toFixed(2)}`);
  let total = 0;
  after.forEach((_ticks, i) => {
    const rows = [...after[i]].map(([name, ticks]) => [name, (ticks - (before[i].get(name) ?? 0)) * TICK_US / ops] as const).filter(([n, us]) => us > 0 && !n.endsWith(":sys")).sort((a, b) => b[1] - a[1]);
    const sum = rows.reduce((s, [, us]) => s + us, 0);
    total += sum;
    console.log(`  ${names[i].padEnd(8)} ${sum.toFixed(1).padStart(6)} µs/a+r  (${rows.map(([n, us]) => `${n} ${us.toFixed(1)} (sys ${(((after[i].get(`${n}:sys`) ?? 0) - (before[i].get(`${n}:sys`) ?? 0)) * TICK_US / ops).toFixed(1)})`).join(", ")})`);
  });
  console.log(`  all      ${total.toFixed(1).padStart(6)} µs/a+r`);
  if (flags.strace) {
    const straceDir = mkdtempSync(join(tmpdir(), "mutexd-repl-probe-"));
    const tracers = server.pids.map((pid, i) => spawn("strace", ["-f", "-c", "-o", join(straceDir, `strace-${names[i]}.txt`), "-p", String(pid)], { stdio: "ignore" }));
    try {
      // Counted from the moment strace has attached to every thread, not after a guessed wait.
      await eventually("strace attached to every thread of the servers", () => server.pids.every((pid, i) => tracers[i].exitCode === null && tracedBy(pid, tracers[i].pid!)), 10_000);
      const traced = await loop(durationMs);
      for (const t of tracers) t.kill("SIGINT");
      await Promise.all(tracers.map((t) => t.exitCode !== null ? undefined : new Promise((r) => t.once("exit", r))));
      console.log(`  strace: ${traced} a+r traced; calls per a+r:`);
      names.forEach((name) => {
        const lines = readFileSync(join(straceDir, `strace-${name}.txt`), "utf8").split("\n").filter((l) => /^\s*[0-9.]+\s+[0-9.]+\s+[0-9]+\s+[0-9]+/.test(l));
        const calls = lines.map((l) => l.trim().split(/\s+/)).map((f) => [f[f.length - 1], Number(f[3]), Number(f.length > 5 ? f[4] : 0)] as const).filter(([, n]) => n / traced >= 0.05);
        console.log(`  ${name.padEnd(8)} ${calls.map(([c, n, e]) => `${c} ${(n / traced).toFixed(2)}${e ? ` (${e} err)` : ""}`).join(", ")}`);
      });
    } finally {
      for (const t of tracers) if (t.exitCode === null) t.kill("SIGINT");
      removeDir(straceDir);
    }
  }
  await session.close();
  client.close();
} finally {
  await server.stop();
  removeServerDirs(false);
}
process.exit(0);
