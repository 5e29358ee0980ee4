/**
 * Idle CPU of the lock service's processes (issue 14: "also report the lock servers' and the
 * arbiter's idle CPU"; the ring's is R5): a fresh arbiter + primary + backup, no client, settled
 * for SETTLE_MS, then per process over PHASE_MS: CPU (user + system, /proc/<pid>/stat, 10 ms
 * ticks) and voluntary context switches per second (/proc/<pid>/status), which count the times the
 * process went to sleep, so about its wake-ups (timers, peer messages).
 *
 *   bun tests/bench/idle_cpu.ts [--runs N] [--set tickMs=50,...]
 *
 * Every process it starts is stopped by pid at the end (ServerHandle.stop).
 */
import { readFileSync } from "node:fs";
import process from "node:process";
import { cpuSeconds, removeServerDirs, startServer, voluntarySwitches } from "./lib/server.ts";
import { median } from "./lib/stats.ts";

const SETTLE_MS = 2_000;
const PHASE_MS = 10_000;
const ROLES = ["arbiter", "primary", "backup"];

function flag(name: string): string | undefined {
  const at = process.argv.indexOf(name);
  return at >= 0 ? process.argv[at + 1] : undefined;
}

const runs = Number(flag("--runs") ?? "3");
const settings = Object.fromEntries((flag("--set") ?? "").split(",").filter(Boolean).map((kv) => {
  const [key, value] = kv.split("=");
  return [key, Number(value)];
}));
const cpuPct: number[][] = ROLES.map(() => []);
const wakeupsPerS: number[][] = ROLES.map(() => []);
for (let run = 0; run < runs; run++) {
  const server = await startServer({ topology: "replicated", settings });
  try {
    // Timed phases, not waits for a condition: start-up work (JIT, first renewals) fades over
    // SETTLE_MS, then idle CPU is measured over PHASE_MS.
    await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
    const cpu0 = server.pids.map((pid) => cpuSeconds(pid));
    const switches0 = server.pids.map(voluntarySwitches);
    const t0 = performance.now();
    await new Promise((resolve) => setTimeout(resolve, PHASE_MS));
    const seconds = (performance.now() - t0) / 1000;
    server.pids.forEach((pid, i) => {
      cpuPct[i].push((100 * (cpuSeconds(pid) - cpu0[i])) / seconds);
      wakeupsPerS[i].push((voluntarySwitches(pid) - switches0[i]) / seconds);
    });
  } finally {
    await server.stop();
    removeServerDirs(false);
  }
}
const load = readFileSync("/proc/loadavg", "utf8").trim();
console.log(`idle lock service, ${runs} run(s) of ${PHASE_MS / 1000} s, settings ${JSON.stringify(settings)}; load average ${load}`);
ROLES.forEach((role, i) => {
  const cells = cpuPct[i].map((v) => v.toFixed(2)).join(", ");
  console.log(`${role.padEnd(8)} CPU ${median(cpuPct[i]).toFixed(2)}% of a core median (${cells}); ${Math.round(median(wakeupsPerS[i]))} voluntary context switches/s`);
});
