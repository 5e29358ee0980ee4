/**
 * Real processes: a primary started with `mutexd node` and clients that are `mutexd lock`
 * processes running shell commands, killed with SIGKILL or paused with SIGSTOP as a real
 * failure would. Bounds are the correctness bounds (TTL + 1 s), not speed targets.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { eventually, freePort, type Proc, sleep, startMutexd, tempDir, waitForHttp, writeCluster } from "./_harness.ts";

async function startPrimary(dir: string): Promise<{ url: string; file: string; proc: Proc }> {
  const port = await freePort();
  const file = writeCluster(dir, `[[nodes]]\nid = "p1"\nrole = "primary"\nhttp = "127.0.0.1:${port}"\n`);
  const proc = startMutexd(["node", "--config", file, "--id", "p1"]);
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/v1/health`);
  return { url, file, proc };
}

async function stop(proc: Proc): Promise<void> {
  proc.kill("SIGTERM");
  await proc.exited;
}

interface LockView {
  name: string;
  holders: Array<{ session: string; token: number }>;
  waiters: Array<{ session: string }>;
}

async function lockInfo(url: string, name: string): Promise<LockView | undefined> {
  const response = await fetch(`${url}/v1/locks/${name}`);
  if (response.status === 404) {
    await response.body?.cancel();
    return undefined;
  }
  return await response.json();
}

function killPid(pid: number, signal: NodeJS.Signals = "SIGKILL"): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

test("real processes: 20 parallel `mutexd lock` read-sleep-write a counter to exactly 20, with tokens rising in run order", { timeout: 60_000 }, async () => {
  const dir = tempDir();
  const { url, proc } = await startPrimary(dir);
  try {
    const counter = join(dir, "counter");
    const tokens = join(dir, "tokens");
    writeFileSync(counter, "0");
    writeFileSync(tokens, "");
    // Without the lock, the sleep between read and write loses updates.
    const script = `n=$(cat ${counter}); echo "$MUTEXD_TOKEN" >> ${tokens}; sleep 0.05; echo $((n + 1)) > ${counter}`;
    const clients = Array.from({ length: 20 }, () => startMutexd(["lock", "counter", "--server", url, "--ttl", "5s", "--", "sh", "-c", script]));
    const codes = await Promise.all(clients.map((c) => c.exited));
    assert.deepEqual(codes, Array(20).fill(0), clients.map((c) => c.stderr()).join("\n"));
    assert.equal(readFileSync(counter, "utf8").trim(), "20");
    const seen = readFileSync(tokens, "utf8").trim().split("\n").map(BigInt);
    assert.equal(seen.length, 20);
    for (let i = 1; i < seen.length; i++) assert.ok(seen[i] > seen[i - 1], `token ${seen[i]} after ${seen[i - 1]}`);
  } finally {
    await stop(proc);
  }
});

test("real processes: kill -9 of a `mutexd lock` holding the lock hands it to the waiter within TTL + 1 s", { timeout: 60_000 }, async () => {
  const dir = tempDir();
  const { url, proc } = await startPrimary(dir);
  const ttlMs = 2_000;
  const childPidFile = join(dir, "holder-child.pid");
  const got = join(dir, "waiter-got");
  const holder = startMutexd(["lock", "L", "--server", url, "--ttl", "2s", "--", "sh", "-c", `echo $$ > ${childPidFile}; exec sleep 30`]);
  let waiter: Proc | undefined;
  try {
    await eventually("the holder holds L", async () => (await lockInfo(url, "L"))?.holders.length === 1 && existsSync(childPidFile));
    waiter = startMutexd(["lock", "L", "--server", url, "--ttl", "2s", "--", "sh", "-c", `date +%s%3N > ${got}`]);
    await eventually("the waiter is queued", async () => (await lockInfo(url, "L"))?.waiters.length === 1);
    const killedAtMs = Date.now();
    holder.kill("SIGKILL");
    assert.equal(await waiter.exited, 0, waiter.stderr());
    const grantedAtMs = Number(readFileSync(got, "utf8").trim());
    const elapsedMs = grantedAtMs - killedAtMs;
    assert.ok(elapsedMs <= ttlMs + 1_000, `waiter got the lock ${elapsedMs} ms after the kill`);
    assert.ok(elapsedMs >= 0);
  } finally {
    holder.kill("SIGKILL");
    waiter?.kill("SIGKILL");
    if (existsSync(childPidFile)) killPid(Number(readFileSync(childPidFile, "utf8")));
    await stop(proc);
  }
});

test("real processes: a `mutexd lock` paused with SIGSTOP past its TTL stops its command when resumed and exits 4", { timeout: 60_000 }, async () => {
  const dir = tempDir();
  const { url, proc } = await startPrimary(dir);
  const childPidFile = join(dir, "child.pid");
  const termFile = join(dir, "child-got-term");
  const script = `echo $$ > ${childPidFile}; trap 'echo term > ${termFile}; exit 0' TERM; while true; do sleep 0.05; done`;
  const locker = startMutexd(["lock", "L", "--server", url, "--ttl", "1500ms", "--grace", "2s", "--", "sh", "-c", script]);
  try {
    await eventually("the command runs under the lock", async () => existsSync(childPidFile) && (await lockInfo(url, "L"))?.holders.length === 1);
    locker.kill("SIGSTOP");
    // The server frees the lock after the TTL: another client can take it.
    await eventually("the server expired the paused session", async () => (await lockInfo(url, "L")) === undefined, 5_000);
    await sleep(200);
    locker.kill("SIGCONT");
    const code = await Promise.race([locker.exited, sleep(8_000).then(() => -1)]);
    assert.equal(code, 4, `exit code; stderr: ${locker.stderr()}`);
    assert.match(locker.stderr(), /lock L lost/);
    assert.ok(existsSync(termFile), "the command got SIGTERM");
    const childPid = Number(readFileSync(childPidFile, "utf8"));
    await eventually("the command is gone", () => {
      try {
        process.kill(childPid, 0);
        return false;
      } catch {
        return true;
      }
    }, 5_000);
  } finally {
    locker.kill("SIGCONT");
    locker.kill("SIGKILL");
    if (existsSync(childPidFile)) killPid(Number(readFileSync(childPidFile, "utf8")));
    await stop(proc);
  }
});

test("real processes: --wait 0 on a held lock exits 3 without running the command", { timeout: 60_000 }, async () => {
  const dir = tempDir();
  const { url, proc } = await startPrimary(dir);
  const marker = join(dir, "ran");
  const holder = startMutexd(["lock", "L", "--server", url, "--", "sleep", "30"]);
  try {
    await eventually("the holder holds L", async () => (await lockInfo(url, "L"))?.holders.length === 1);
    const tryer = startMutexd(["lock", "L", "--server", url, "--wait", "0", "--", "touch", marker]);
    assert.equal(await tryer.exited, 3);
    assert.equal(existsSync(marker), false);
    assert.match(tryer.stderr(), /not acquired/);
  } finally {
    holder.kill("SIGTERM");
    await holder.exited;
    await stop(proc);
  }
});

test("real processes: `mutexd lock` passes the command's exit status through and releases the lock", { timeout: 60_000 }, async () => {
  const dir = tempDir();
  const { url, proc } = await startPrimary(dir);
  try {
    const locker = startMutexd(["lock", "L", "--server", url, "--", "sh", "-c", "exit 7"]);
    assert.equal(await locker.exited, 7);
    assert.equal(await lockInfo(url, "L"), undefined, "released after the command exited");
    const unreachable = startMutexd(["lock", "L", "--server", "http://127.0.0.1:1", "--", "true"]);
    assert.equal(await unreachable.exited, 5);
  } finally {
    await stop(proc);
  }
});

test("real processes: `mutexd status` shows the holder with its token, and --json parses", { timeout: 60_000 }, async () => {
  const dir = tempDir();
  const { url, file, proc } = await startPrimary(dir);
  const holder = startMutexd(["lock", "jobs/nightly", "--config", file, "--", "sleep", "30"]);
  try {
    await eventually("the holder holds the lock", async () => (await lockInfo(url, "jobs/nightly"))?.holders.length === 1);
    const info = (await lockInfo(url, "jobs/nightly"))!;
    const table = startMutexd(["status", "--config", file]);
    assert.equal(await table.exited, 0);
    assert.match(table.stdout(), new RegExp(`jobs/nightly\\s+${info.holders[0].session} ${info.holders[0].token} exclusive`));
    const json = startMutexd(["status", "--server", url, "--json"]);
    assert.equal(await json.exited, 0);
    assert.equal(JSON.parse(json.stdout()).locks[0].holders[0].token, info.holders[0].token);
  } finally {
    holder.kill("SIGTERM");
    await holder.exited;
    await stop(proc);
  }
});
