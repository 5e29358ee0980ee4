/**
 * A lost lock is always reported, and a child cannot outlive its lock (issue 16), with real
 * processes: a lock server alone (it serves at once) with client tokens, and `mutexd lock`,
 * `mutexd release --force` as the user runs them. Proves:
 * - a force-release while `mutexd lock` runs its command: the holder notices within a keepalive
 *   period (TTL/3), stops the command and exits 4; before, it let the command run to its end and
 *   exited with its status (here 30 s later);
 * - a release that finds the lock gone exits 4 (before: "release … failed" and the command's 0);
 * - `mutexd release --force` needs --force and, with tokens, admin permission on the name;
 * - `mutexd lock NAME` without a command prints the token, holds until SIGTERM or SIGINT, releases;
 * - the command gets MUTEXD_DEADLINE and MUTEXD_DEADLINE_MS, and dies when `mutexd lock` is
 *   SIGKILLed (Linux with setpriv: a parent-death signal); before, it ran on as an orphan.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import process from "node:process";
import { eventually, freePort, type Proc, removeDir, startMutexd, stdoutMatch, tempDir, TEST_SECRET, waitForHttp, writeCluster, writeMutexdWrapper } from "./_harness.ts";

const TOKENS = {
  ops: { secret: "ops-".padEnd(40, "4"), permissions: '[{ prefix = "", allow = ["admin"] }]' },
  worker: { secret: "worker-".padEnd(40, "5"), permissions: '[{ prefix = "", allow = ["lock"] }]' },
};

interface World {
  dir: string;
  url: string;
  /** The environment every mutexd of the test gets: the server, and the worker's token. */
  env: Record<string, string>;
  tokenFile: (name: keyof typeof TOKENS) => string;
  node: Proc;
}

async function startWorld(): Promise<World> {
  const dir = tempDir("mutexd-lost-lock-");
  const port = await freePort();
  for (const [name, token] of Object.entries(TOKENS)) writeFileSync(`${dir}/${name}.token`, `${token.secret}\n`);
  const file = writeCluster(dir, [
    "[cluster]",
    `secret = "${TEST_SECRET}"`,
    "[[nodes]]", 'id = "p1"', 'role = "primary"', `http = "127.0.0.1:${port}"`,
    ...Object.entries(TOKENS).flatMap(([name, token]) => ["[[tokens]]", `name = "${name}"`, `secretFile = "${name}.token"`, `permissions = ${token.permissions}`]),
  ].join("\n") + "\n");
  const url = `http://127.0.0.1:${port}`;
  const world: World = {
    dir,
    url,
    env: { MUTEXD_SERVER: url, MUTEXD_AUTH_TOKEN: TOKENS.worker.secret, MUTEXD_CONFIG: "", PATH: `${writeMutexdWrapper(dir)}:${process.env.PATH}` },
    tokenFile: (name) => `${dir}/${name}.token`,
    node: startMutexd(["node", "--config", file, "--id", "p1"]),
  };
  try {
    await waitForHttp(`${url}/v1/health`, 20_000);
  } catch (error) {
    await stopWorld(world);
    throw error;
  }
  return world;
}

async function stopWorld(world: World): Promise<void> {
  world.node.kill("SIGKILL");
  await world.node.exited;
  removeDir(world.dir);
}

async function mutexd(world: World, args: string[]) {
  const proc = startMutexd(args, { env: world.env });
  const code = await proc.exited;
  return { code, stdout: proc.stdout(), stderr: proc.stderr() };
}

test("lost lock (process): a force-release while `mutexd lock` runs its command stops the command within a keepalive period and exits 4; release needs --force and admin", { timeout: 90_000 }, async () => {
  const world = await startWorld();
  let holder: Proc | undefined;
  try {
    // TTL 3 s: a keepalive every second. The command would run 30 s if nobody stopped it.
    holder = startMutexd(["lock", "job", "--ttl", "3s", "--", "sh", "-c", "echo started; sleep 30; echo finished"], { env: world.env });
    await stdoutMatch(holder, /started/, 20_000);

    const noForce = await mutexd(world, ["release", "job"]);
    assert.equal(noForce.code, 2, noForce.stderr);
    assert.match(noForce.stderr, /--force/);
    const notAdmin = await mutexd(world, ["release", "job", "--force"]);
    assert.equal(notAdmin.code, 5, `a token with lock permission only: ${notAdmin.stderr}`);
    assert.match(notAdmin.stderr, /forbidden/);

    const released = await mutexd(world, ["release", "job", "--force", "--json", "--token-file", world.tokenFile("ops")]);
    const releasedAtMs = Date.now();
    assert.equal(released.code, 0, released.stderr);
    const { tokens } = JSON.parse(released.stdout);
    assert.equal(tokens.length, 1, released.stdout);

    const code = await holder.exited;
    const noticedAfterMs = Date.now() - releasedAtMs;
    assert.equal(code, 4, `mutexd lock's exit after the force-release (${noticedAfterMs} ms)\n${holder.stderr()}`);
    assert.match(holder.stderr(), /lock job lost: .*no longer holds it .*; stopping the command/);
    assert.ok(!holder.stdout().includes("finished"), "the command was stopped, not run to its end");
    // The bound is the TTL (3 s) plus process start-up slack on a loaded machine; before the
    // change the holder exited only when its command ended (30 s).
    assert.ok(noticedAfterMs < 15_000, `noticed ${noticedAfterMs} ms after the force-release`);
    process.stderr.write(`# force-release noticed by mutexd lock after ${noticedAfterMs} ms (TTL 3000 ms, keepalive every 1000 ms)\n`);

    // The next holder's token is above the released one and the one the counter skipped.
    const next = await mutexd(world, ["lock", "job", "--wait", "5s", "--", "sh", "-c", 'echo "$MUTEXD_TOKEN"']);
    assert.equal(next.code, 0, next.stderr);
    assert.ok(Number(next.stdout) >= tokens[0] + 2, `next token ${next.stdout.trim()} after released ${tokens[0]}`);
    const nobody = await mutexd(world, ["release", "job", "--force", "--token-file", world.tokenFile("ops")]);
    assert.equal(nobody.code, 5, nobody.stderr);
    assert.match(nobody.stderr, /lock_not_found/);
  } finally {
    holder?.kill("SIGKILL");
    await holder?.exited;
    await stopWorld(world);
  }
});

test("lost lock (process): a release that finds the lock released by another party exits 4, not the command's 0", { timeout: 90_000 }, async () => {
  const world = await startWorld();
  try {
    // TTL 60 s: no keepalive (every 20 s) comes between the command's force-release and its end,
    // so the release is the first to find the lock gone.
    const ops = world.tokenFile("ops");
    const result = await mutexd(world, ["lock", "job", "--ttl", "60s", "--", "sh", "-c", `mutexd release job --force --token-file '${ops}' >/dev/null`]);
    assert.equal(result.code, 4, result.stderr);
    assert.match(result.stderr, /release of lock job failed: lock job was no longer held at release/);
  } finally {
    await stopWorld(world);
  }
});

test("hold mode (process): `mutexd lock NAME` without a command prints the token, holds until SIGTERM or SIGINT, then releases (exit 0)", { timeout: 90_000 }, async () => {
  const world = await startWorld();
  let holder: Proc | undefined;
  try {
    for (const signal of ["SIGTERM", "SIGINT"] as const) {
      holder = startMutexd(["lock", "job"], { env: world.env });
      await stdoutMatch(holder, /^\d+\n$/, 20_000);
      const taken = await mutexd(world, ["lock", "job", "--wait", "0", "--", "true"]);
      assert.equal(taken.code, 3, `while held: ${taken.stderr}`);
      holder.kill(signal);
      assert.equal(await holder.exited, 0, `after ${signal}: ${holder.stderr()}`);
      assert.match(holder.stderr(), /holding lock job; SIGINT \(Ctrl-C\) or SIGTERM releases it/);
      const free = await mutexd(world, ["lock", "job", "--wait", "0", "--", "true"]);
      assert.equal(free.code, 0, `released after ${signal}: ${free.stderr}`);
    }
  } finally {
    holder?.kill("SIGKILL");
    await holder?.exited;
    await stopWorld(world);
  }
});

const SETPRIV = ["/usr/bin/setpriv", "/bin/setpriv", "/usr/sbin/setpriv", "/sbin/setpriv"].some((path) => existsSync(path));

/** Whether process `pid` is gone (a zombie no init reaps counts as gone: it runs nothing). */
function gone(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /, "").startsWith("Z");
  } catch {
    return true;
  }
}

test("child (process): the command sees MUTEXD_DEADLINE(_MS) of the lease, and dies when `mutexd lock` is SIGKILLed (Linux, setpriv --pdeathsig)", { timeout: 90_000, skip: process.platform !== "linux" || !SETPRIV ? "needs Linux with setpriv" : false }, async () => {
  const world = await startWorld();
  let holder: Proc | undefined;
  let childPid = 0;
  try {
    holder = startMutexd(["lock", "job", "--ttl", "3s", "--", "sh", "-c", 'echo "deadline $MUTEXD_DEADLINE $MUTEXD_DEADLINE_MS pid $$"; exec sleep 60'], { env: world.env });
    await stdoutMatch(holder, /pid \d+\n/, 20_000);
    const seenAtMs = Date.now();
    const [, deadline, remainingMs, pid] = /deadline (\S+) (\d+) pid (\d+)/.exec(holder.stdout())!;
    childPid = Number(pid);
    assert.ok(Number(remainingMs) > 0 && Number(remainingMs) <= 3_000, `MUTEXD_DEADLINE_MS ${remainingMs} within the 3 s TTL`);
    // The wall-clock deadline and the milliseconds left say the same (both taken at the start).
    const deadlineMs = Date.parse(deadline);
    assert.ok(deadlineMs <= seenAtMs + 3_000 && deadlineMs > seenAtMs - 20_000, `MUTEXD_DEADLINE ${deadline}`);
    assert.ok(!gone(childPid), "the command runs");

    holder.kill("SIGKILL");
    await holder.exited;
    await eventually(`the command (pid ${childPid}) dies with mutexd lock`, () => gone(childPid), 10_000);
  } finally {
    holder?.kill("SIGKILL");
    await holder?.exited;
    if (childPid > 0 && !gone(childPid)) process.kill(childPid, "SIGKILL");
    await stopWorld(world);
  }
});
