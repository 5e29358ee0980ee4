/**
 * Log levels (issue 14): a node writes the events at its level and above; a lock server's grant
 * and release lines are debug, so at the default level (info) it writes nothing per lock
 * operation, and at `--log-level debug` (or `[cluster] logLevel = "debug"`) it writes both, in
 * the same JSON-lines format. Real processes for the flag and the cluster file; each test stops
 * its node and removes its temp dir.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "../lib/client/lock_client.ts";
import { jsonLogger } from "../cluster/log.ts";
import { freePort, type Proc, removeDir, startMutexd, tempDir, waitForHttp, writeCluster } from "./_harness.ts";

test("jsonLogger writes the events at its level and above, each as one JSON line", () => {
  const written: string[] = [];
  const log = jsonLogger("n1", 1_000, (text) => void written.push(text), "warn");
  log.event("granted", { token: 1 }, "debug");
  log.event("listening", {});
  log.event("refused", { reason: "x" }, "warn");
  log.event("failStop", { reason: "y" }, "error");
  log.flush();
  const lines = written.join("").trim().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(lines.map((l) => l.event), ["refused", "failStop"]);
  assert.equal(lines[0].node, "n1");
});

test("jsonLogger says which levels it wants, so a per-operation caller builds no fields for a dropped line", () => {
  const log = jsonLogger("n1", 1_000, () => {}, "info");
  assert.deepEqual(["debug", "info", "warn", "error"].map((level) => log.wants?.(level as "debug")), [false, true, true, true]);
});

/** Runs a lone primary (`extraToml` in [cluster], `flags` on the command line), does 3 acquire+release, stops it; its stderr. */
async function logOfThreeLocks(extraToml: string, flags: string[]): Promise<string> {
  const dir = tempDir();
  let proc: Proc | undefined;
  try {
    const port = await freePort();
    const file = writeCluster(dir, `[cluster]\n${extraToml}\n[[nodes]]\nid = "p1"\nrole = "primary"\nhttp = "127.0.0.1:${port}"\n`);
    proc = startMutexd(["node", "--config", file, "--id", "p1", ...flags]);
    const url = `http://127.0.0.1:${port}`;
    await waitForHttp(`${url}/v1/health`);
    const client = connect({ servers: [url] });
    const session = await client.openSession({ ttlMs: 10_000 });
    for (let i = 0; i < 3; i++) {
      const answer = await client.enter("L", { session, waitMs: 1_000 });
      assert.ok(answer.granted, "a free lock is granted");
      await client.leave("L", { session, token: answer.token });
    }
    await session.close();
    proc.kill("SIGTERM");
    // The node flushes its log before it exits (the "stopped" line is written last).
    assert.equal(await proc.exited, 0);
    return proc.stderr();
  } finally {
    if (proc) {
      proc.kill("SIGKILL");
      await proc.exited;
    }
    removeDir(dir);
  }
}

const events = (stderr: string) => stderr.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l).event as string);

test("a lone primary at the default level writes no line per grant or release; at --log-level debug it writes each", { timeout: 30_000 }, async () => {
  const quiet = events(await logOfThreeLocks("", []));
  assert.ok(quiet.includes("listening"), "info lines are written");
  assert.equal(quiet.filter((e) => e === "granted" || e === "released").length, 0, `no per-operation line at info: ${quiet.join(",")}`);
  const loud = events(await logOfThreeLocks("", ["--log-level", "debug"]));
  assert.equal(loud.filter((e) => e === "granted").length, 3);
  assert.equal(loud.filter((e) => e === "released").length, 3);
});

test("[cluster] logLevel sets the level; --log-level overrides it; a level that does not exist is refused (exit 2)", { timeout: 30_000 }, async () => {
  const fromFile = events(await logOfThreeLocks('logLevel = "debug"', []));
  assert.equal(fromFile.filter((e) => e === "granted").length, 3);
  const overridden = events(await logOfThreeLocks('logLevel = "debug"', ["--log-level", "info"]));
  assert.equal(overridden.filter((e) => e === "granted").length, 0);
  const dir = tempDir();
  try {
    const file = writeCluster(dir, `[[nodes]]\nid = "p1"\nrole = "primary"\nhttp = "127.0.0.1:${await freePort()}"\n`);
    const bad = startMutexd(["node", "--config", file, "--id", "p1", "--log-level", "verbose"]);
    assert.equal(await bad.exited, 2);
    assert.match(bad.stderr(), /--log-level must be one of debug, info, warn, error/);
    const badFile = writeCluster(dir, `[cluster]\nlogLevel = "loud"\n[[nodes]]\nid = "p1"\nrole = "primary"\nhttp = "127.0.0.1:1"\n`, "bad.toml");
    const refused = startMutexd(["node", "--config", badFile, "--id", "p1"]);
    assert.equal(await refused.exited, 2);
    assert.match(refused.stderr(), /logLevel/);
  } finally {
    removeDir(dir);
  }
});
