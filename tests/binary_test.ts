/**
 * The single binary: `bun build --compile` (what `make build` runs) makes a self-contained
 * executable that prints its help, runs a lock server and takes a lock; and `mutexd up` started
 * from it runs every node of a cluster file and stops them all on SIGINT. Each test removes its
 * temp dir (the binary is about 100 MB).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import process from "node:process";
import { join } from "node:path";
import { eventually, freePort, removeDir, ROOT, startProcess, tempDir, waitForHttp, writeCluster } from "./_harness.ts";

/** Give-up bound for starting processes (not a speed target): waitForHttp's own default. */
const PROCESS_START_MS = 15_000;

const BUN = `${ROOT}/node_modules/.bin/bun`;

async function compile(dir: string): Promise<string> {
  const binary = join(dir, "mutexd");
  const build = startProcess(BUN, ["build", "--compile", `${ROOT}/main.ts`, "--outfile", binary]);
  assert.equal(await build.exited, 0, build.stderr());
  assert.ok(existsSync(binary));
  return binary;
}

test("binary: the compiled mutexd prints help, serves locks and passes a command's status through", { timeout: 60_000 }, async () => {
  const dir = tempDir();
  try {
    const binary = await compile(dir);
    const help = startProcess(binary, ["--help"]);
    assert.equal(await help.exited, 0);
    assert.match(help.stdout(), /Usage: mutexd <command>/);
    const port = await freePort();
    const file = writeCluster(dir, `[[nodes]]\nid = "p1"\nrole = "primary"\nhttp = "127.0.0.1:${port}"\n`);
    const server = startProcess(binary, ["node", "--config", file, "--id", "p1"], { cwd: dir });
    try {
      await waitForHttp(`http://127.0.0.1:${port}/v1/health`, PROCESS_START_MS);
      const locker = startProcess(binary, ["lock", "x", "--config", file, "--", "sh", "-c", 'test -n "$MUTEXD_TOKEN" && exit 9'], { cwd: dir });
      assert.equal(await locker.exited, 9, locker.stderr());
    } finally {
      server.kill("SIGTERM");
      assert.equal(await server.exited, 0, "SIGTERM stops the node cleanly");
    }
  } finally {
    removeDir(dir);
  }
});

test("binary: `mutexd up` starts every node of the file, prints where each listens and the dashboard, which the binary serves, every node answers /metrics, and SIGINT stops them all", { timeout: 60_000 }, async () => {
  const dir = tempDir();
  const binary = await compile(dir).catch((error) => {
    removeDir(dir);
    throw error;
  });
  const [p, b, a] = [await freePort(), await freePort(), await freePort()];
  const file = writeCluster(
    dir,
    `[[nodes]]\nid = "p1"\nrole = "primary"\nhttp = "127.0.0.1:${p}"\n\n[[nodes]]\nid = "b1"\nrole = "backup"\nhttp = "127.0.0.1:${b}"\n\n` +
      `[[nodes]]\nid = "a1"\nrole = "arbiter"\nhttp = "127.0.0.1:${a}"\n`,
  );
  const up = startProcess(binary, ["up", "--config", file], { cwd: dir });
  try {
    await eventually("up reports the cluster running", () => up.stdout().includes("is running (3 nodes)"), PROCESS_START_MS);
    for (const [id, port] of [["p1", p], ["b1", b], ["a1", a]] as const) {
      assert.match(up.stdout(), new RegExp(`${id}\\s+\\w+\\s+http://127\\.0\\.0\\.1:${port}\\s+pid \\d+`));
    }
    const pids = [...up.stdout().matchAll(/pid (\d+)/g)].map((m) => Number(m[1]));
    assert.equal(pids.length, 3);
    await waitForHttp(`http://127.0.0.1:${p}/v1/health`, PROCESS_START_MS);
    // The dashboard works in the compiled binary: its page, and a snapshot of every member.
    assert.match(up.stdout(), new RegExp(`Dashboard: http://127\\.0\\.0\\.1:${p}/ `), "up names the first node's dashboard");
    assert.match(await (await fetch(`http://127.0.0.1:${p}/`)).text(), /<svg id="ring"/);
    const stream = await fetch(`http://127.0.0.1:${p}/v1/dashboard/events`);
    const reader = stream.body!.pipeThrough(new TextDecoderStream()).getReader();
    let events = "";
    // Bounded: one snapshot of three members is a few kB.
    for (let reads = 0; reads < 1_000 && !events.includes("\n\n"); reads++) events += (await reader.read()).value ?? "";
    await reader.cancel();
    const snapshot = JSON.parse(events.split("\n").find((line) => line.startsWith("data:"))!.slice(5));
    assert.deepEqual(snapshot.parts.map((part: { id: string }) => part.id), ["p1", "b1", "a1"]);
    // prom-client works inside the compiled binary: every role answers /metrics.
    for (const port of [p, b, a]) {
      const metrics = await fetch(`http://127.0.0.1:${port}/metrics`);
      assert.equal(metrics.status, 200);
      assert.match(await metrics.text(), /^mutexd_http_responses_total\{/m);
    }
    up.kill("SIGINT");
    assert.equal(await up.exited, 0);
    for (const pid of pids) {
      assert.throws(() => process.kill(pid, 0), "every node process is gone");
    }
  } finally {
    up.kill("SIGKILL");
    await up.exited;
    // Node processes `up` started that a failed run left behind (the pids it printed).
    for (const m of up.stdout().matchAll(/pid (\d+)/g)) {
      try {
        process.kill(Number(m[1]), "SIGKILL");
      } catch {
        // gone, as it should be
      }
    }
    removeDir(dir);
  }
});
