/**
 * The command line as real processes: everything after the first `--` belongs to the command
 * that `mutexd lock` and `mutexd ring lock` run, even `--help`, `-h` or `--config`. Before the
 * fix, `mutexd lock L -- cmd --help` printed mutexd's help and exited 0 without running cmd: a
 * scheduled job was skipped silently. A help flag before `--` still asks for mutexd's help.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { connectRing } from "../lib/client/ring_client.ts";
import { eventually, freePort, type Proc, QUICK_RING_SETTINGS, startMutexd, tempDir, waitForHttp, writeCluster } from "./_harness.ts";

// The command proves it ran: it echoes its arguments and exits with a status mutexd never uses.
const RAN_STATUS = 7;
const SCRIPT = `echo "ran:$*"; exit ${RAN_STATUS}`;

/** Arguments after `-- sh -c SCRIPT sh` that mutexd must hand to the command untouched. */
const COMMAND_ARGS: string[][] = [["--help"], ["-h"], ["--config", "/nonexistent/cluster.toml"], ["x", "--", "--help"]];

interface Cluster {
  dir: string;
  file: string;
  procs: Proc[];
}

/** A cluster file with one lock server and a one-node ring, both running. */
async function startCluster(): Promise<Cluster> {
  const dir = tempDir("mutexd-cli-");
  const [lockPort, ringPort] = [await freePort(), await freePort()];
  const file = writeCluster(dir, [
    "[settings]",
    ...QUICK_RING_SETTINGS,
    "[[nodes]]",
    'id = "p1"',
    'role = "primary"',
    `http = "127.0.0.1:${lockPort}"`,
    "[[nodes]]",
    'id = "r1"',
    'role = "ring"',
    `http = "127.0.0.1:${ringPort}"`,
  ].join("\n") + "\n");
  const procs = ["p1", "r1"].map((id) => startMutexd(["node", "--config", file, "--id", id]));
  const cluster = { dir, file, procs };
  try {
    await waitForHttp(`http://127.0.0.1:${lockPort}/v1/health`, 20_000);
    await waitForHttp(`http://127.0.0.1:${ringPort}/v1/health`, 20_000);
    const ring = connectRing({ server: `http://127.0.0.1:${ringPort}` });
    await eventually("the ring node holds a token", async () => (await ring.status()).epoch > 0, 20_000);
  } catch (error) {
    await stopCluster(cluster);
    throw error;
  }
  return cluster;
}

async function stopCluster(cluster: Cluster): Promise<void> {
  for (const proc of cluster.procs) proc.kill("SIGTERM");
  await Promise.all(cluster.procs.map((p) => p.exited));
  rmSync(cluster.dir, { recursive: true, force: true });
}

async function runMutexd(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = startMutexd(args);
  const code = await proc.exited;
  return { code, stdout: proc.stdout(), stderr: proc.stderr() };
}

const LOCKERS: Array<{ name: string; own: (file: string) => string[] }> = [
  { name: "lock", own: (file) => ["lock", "cli-test", "--config", file] },
  { name: "ring lock", own: (file) => ["ring", "lock", "--config", file] },
];

test("cli: after `--`, --help, -h, --config and a second -- belong to the command of `lock` and `ring lock`; it runs and its status passes through", { timeout: 120_000 }, async () => {
  const cluster = await startCluster();
  try {
    for (const locker of LOCKERS) {
      for (const args of COMMAND_ARGS) {
        const what = `mutexd ${locker.name} … -- sh -c … sh ${args.join(" ")}`;
        const result = await runMutexd([...locker.own(cluster.file), "--", "sh", "-c", SCRIPT, "sh", ...args]);
        assert.equal(result.code, RAN_STATUS, `${what}: exit ${result.code}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`);
        assert.equal(result.stdout, `ran:${args.join(" ")}\n`, `${what}: the command's own output only, no mutexd help`);
      }
    }
  } finally {
    await stopCluster(cluster);
  }
});

test("cli: a help flag before `--` (or without one) still prints mutexd's help and exits 0 without running anything", { timeout: 60_000 }, async () => {
  const cases = [
    { args: ["lock", "--help"], usage: "Usage: mutexd lock NAME" },
    { args: ["lock", "L", "-h", "--", "sh", "-c", SCRIPT], usage: "Usage: mutexd lock NAME" },
    { args: ["ring", "lock", "--help"], usage: "Usage: mutexd ring lock" },
    { args: ["ring", "lock", "--help", "--", "sh", "-c", SCRIPT], usage: "Usage: mutexd ring lock" },
  ];
  // No server is running: help must come before any attempt to reach one.
  for (const { args, usage } of cases) {
    const result = await runMutexd(args);
    assert.equal(result.code, 0, `mutexd ${args.join(" ")}: ${result.stderr}`);
    assert.ok(result.stdout.startsWith(usage), `mutexd ${args.join(" ")} printed:\n${result.stdout}`);
    assert.ok(!result.stdout.includes("ran:"), "the command did not run");
  }
});

// `lock L` without `--` holds the lock until a signal (tests/cli_lost_lock_process_test.ts); a `--` with nothing after it is a mistake.
test("cli: a `lock` or `ring lock` with `--` but no command is a usage error (exit 2), not a silent success", { timeout: 60_000 }, async () => {
  for (const args of [["lock", "L", "--server", "http://127.0.0.1:1", "--"], ["ring", "lock", "--server", "http://127.0.0.1:1", "--"]]) {
    const result = await runMutexd(args);
    assert.equal(result.code, 2, `mutexd ${args.join(" ")}: ${result.stderr}`);
    assert.match(result.stderr, /missing (-- before )?the command to run/);
  }
});
