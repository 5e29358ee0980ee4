/**
 * A node asks the OS to run it ahead of ordinary work before anything else it does (issue 14,
 * cluster/scheduling.ts): on a busy host a node at the ordinary priority waited 170–940 ms on the
 * run queue, long enough for the backup to take over a live primary. Real processes: the nice
 * values of the node's threads read from /proc, and the order of its log lines; and a stall's
 * log line says how much CPU the node used in it, which told that wait from the node's own work.
 * Each test stops its node and removes its temp dir.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import os from "node:os";
import { lowerNice, NODE_NICE } from "../cluster/scheduling.ts";
import { eventually, freePort, type Proc, removeDir, sleep, startMutexd, tempDir, waitForHttp, writeCluster } from "./_harness.ts";

/** The nice value of a thread, from its stat file (/proc/PID/stat or /proc/PID/task/TID/stat, field 19). */
function niceIn(statFile: string): number {
  const stat = readFileSync(statFile, "utf8");
  // The command name (field 2) is in parentheses and may hold spaces ("V8 DefaultWorker"): count from after it.
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16]);
}

/** The nice values of every thread of process `pid`. */
function threadNices(pid: number): number[] {
  return readdirSync(`/proc/${pid}/task`).map((thread) => niceIn(`/proc/${pid}/task/${thread}/stat`));
}

/** Whether this process may lower nice values (CAP_SYS_NICE, bit 23 of the effective set); a node started from it inherits the set. */
function maySetNice(): boolean {
  const line = readFileSync("/proc/self/status", "utf8").split("\n").find((l) => l.startsWith("CapEff:"));
  return line !== undefined && (BigInt(`0x${line.split(/\s+/)[1]}`) & (1n << 23n)) !== 0n;
}

test("lowerNice never raises a nice value: asked for one above the current, it changes nothing", () => {
  const before = os.getPriority(0);
  assert.deepEqual(lowerNice(before + 1), { nice: before });
  assert.equal(os.getPriority(0), before);
});

/**
 * Runs `body` with a lone primary started from a temp cluster file (it takes its first lease,
 * standalone, as soon as it starts), once it answers health; then kills it and removes the dir.
 */
async function withLonePrimary(body: (proc: Proc) => Promise<void>): Promise<void> {
  const dir = tempDir();
  let proc: Proc | undefined;
  try {
    const port = await freePort();
    const file = writeCluster(dir, `[[nodes]]\nid = "p1"\nrole = "primary"\nhttp = "127.0.0.1:${port}"\n`);
    proc = startMutexd(["node", "--config", file, "--id", "p1"]);
    await waitForHttp(`http://127.0.0.1:${port}/v1/health`);
    await body(proc);
  } finally {
    if (proc) {
      proc.kill("SIGCONT");
      proc.kill("SIGKILL");
      await proc.exited;
    }
    removeDir(dir);
  }
}

/** The node's log lines, parsed. */
const logLines = (proc: Proc) => proc.stderr().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));

test("a node lowers its nice value to NODE_NICE before it loads its role or takes a lease, or logs the refusal and runs on", { timeout: 30_000 }, async () => {
  await withLonePrimary(async (proc) => {
    const nice = niceIn(`/proc/${proc.pid}/stat`);
    const threads = threadNices(proc.pid);
    const own = os.getPriority(0);
    proc.kill("SIGTERM");
    assert.equal(await proc.exited, 0);

    const lines = logLines(proc);
    const at = (event: string) => lines.findIndex((l) => l.event === event);
    const line = lines[at("schedulingPriority")];
    assert.ok(line !== undefined, `a schedulingPriority line: ${proc.stderr()}`);
    // Start-up order: the priority comes before the node listens and before its first lease.
    assert.ok(at("schedulingPriority") < at("listening"), "before the node listens");
    assert.ok(at("primary") >= 0 && at("schedulingPriority") < at("primary"), "before its first lease (the 'primary' line)");
    assert.equal(line.nice, nice, "the line says the nice value in force");
    if (maySetNice()) {
      assert.equal(nice, Math.min(own, NODE_NICE), "lowered to NODE_NICE (never raised)");
      // The runtime's helper threads too (GC, compiling, I/O), started before the script ran.
      assert.ok(threads.length > 1 && threads.every((n) => n === nice), `every thread at ${nice}: ${threads.join(", ")}`);
      assert.equal(line.refused, undefined);
    } else {
      // Without the privilege the node keeps the nice value it inherited, and says why.
      assert.equal(nice, own);
      assert.ok(threads.every((n) => n === own), `every thread keeps ${own}: ${threads.join(", ")}`);
      if (own <= NODE_NICE) assert.equal(line.refused, undefined);
      else assert.equal(line.refused, "EACCES", `the OS's code: ${JSON.stringify(line)}`);
    }
  });
});

test("a node stopped (SIGSTOP) for 300 ms logs a loopStall whose cpuMs says it waited: far below its stallMs", { timeout: 30_000 }, async () => {
  await withLonePrimary(async (proc) => {
    // Only lines after the stop count: on a busy host the node may have waited before it too.
    const linesBefore = logLines(proc).length;
    proc.kill("SIGSTOP");
    await sleep(300); // the fault's length, a timed phase
    proc.kill("SIGCONT");
    const stopStall = () => logLines(proc).slice(linesBefore).find((l) => l.event === "loopStall" && l.stallMs >= 250);
    await eventually("the node logs a stall spanning the stop (250 ms or more)", () => stopStall() !== undefined);
    const line = stopStall();
    assert.ok(typeof line.cpuMs === "number" && line.cpuMs < line.stallMs / 2, `little CPU while stopped: ${JSON.stringify(line)}`);
  });
});
