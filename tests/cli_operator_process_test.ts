/**
 * The command line tells the truth, as real processes (issue 16, "things that claim success or
 * hide the cause" and "errors a person can act on"). Before the fixes: a second `mutexd up` on
 * taken ports printed "running" and exited 0 (its probe reached the first instance); `mutexd
 * node` on a taken port dumped a stack trace and exited 1; `up --only` ignored unknown ids;
 * `status` after a failover called the serving server "backup" and named a dead one `?`; a
 * `--server` without a scheme failed after the failover window; a try-lock named the lock twice
 * and a queue position it never had; `ring put` printed a bare number and a lease end repeated
 * itself.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:net";
import { connect } from "../lib/client/lock_client.ts";
import { connectRing } from "../lib/client/ring_client.ts";
import { eventually, freePort, PACKAGE_VERSION, type Proc, removeDir, startMutexd, stdoutMatch, tempDir, TEST_SECRET, writeCluster } from "./_harness.ts";
import { startCluster, status } from "./_lock_cluster.ts";
import { startRing } from "./_ring_cluster.ts";

async function runMutexd(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = startMutexd(args);
  const code = await proc.exited;
  return { code, stdout: proc.stdout(), stderr: proc.stderr() };
}

/**
 * `mutexd up` with the given args, bounded: an `up` that (wrongly) keeps running is stopped with
 * SIGTERM after `boundMs`, which stops its children too (a SIGKILL would orphan them).
 */
async function runUpBounded(args: string[], boundMs: number): Promise<{ code: number; stdout: string; stderr: string; stillRan: boolean }> {
  const proc = startMutexd(["up", ...args]);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const bound = new Promise<"bound">((resolve) => (timer = setTimeout(() => resolve("bound"), boundMs)));
  const stillRan = (await Promise.race([proc.exited, bound])) === "bound";
  clearTimeout(timer);
  if (stillRan) proc.kill("SIGTERM");
  const code = await proc.exited;
  return { code, stdout: proc.stdout(), stderr: proc.stderr(), stillRan };
}

/** Stops an `up` with SIGTERM (it stops its nodes) and waits for it. */
async function stopUp(up: Proc): Promise<number> {
  up.kill("SIGTERM");
  return await up.exited;
}

/** No runtime stack trace ("    at f (file:…)") in a command's output. */
function assertNoStack(text: string, what: string): void {
  assert.doesNotMatch(text, /^\s+at /m, `${what}: no stack trace:\n${text}`);
}

/** A TCP listener on 127.0.0.1 that is not mutexd, holding a port. */
async function holdPort(): Promise<{ port: number; server: Server }> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { port: (server.address() as { port: number }).port, server };
}

/** A cluster file (with the test secret) of nodes given as [id, role, host:port]. */
function clusterOf(dir: string, nodes: Array<[string, string, string]>): string {
  const lines = ["[cluster]", `secret = "${TEST_SECRET}"`];
  for (const [id, role, address] of nodes) lines.push("[[nodes]]", `id = "${id}"`, `role = "${role}"`, `http = "${address}"`);
  return writeCluster(dir, lines.join("\n") + "\n");
}

/** host:port of a URL (`--server` without the scheme). */
const hostPort = (url: string) => new URL(url).host;

test("cli node: a port taken or an address not on this host is one line naming node and address, exit 2", { timeout: 60_000 }, async () => {
  const dir = tempDir("mutexd-cli-op-");
  const taken = await holdPort();
  try {
    // 203.0.113.0/24 is TEST-NET-3 (RFC 5737): never an address of this host. With a secret, a
    // node may listen beyond loopback, so the refusal comes from the bind, not the file check.
    const file = clusterOf(dir, [
      ["p1", "primary", `127.0.0.1:${taken.port}`],
      ["a1", "arbiter", `127.0.0.1:${await freePort()}`],
      ["x1", "ring", `203.0.113.7:${await freePort()}`],
    ]);
    const cases = [
      { id: "p1", want: new RegExp(`^mutexd: node p1 cannot listen on 127\\.0\\.0\\.1:${taken.port}: already in use`) },
      { id: "x1", want: /^mutexd: node x1 cannot listen on 203\.0\.113\.7:\d+: not an address of this host/ },
    ];
    for (const { id, want } of cases) {
      const result = await runMutexd(["node", "--config", file, "--id", id]);
      assert.equal(result.code, 2, `node ${id}: exit ${result.code}\n${result.stderr}`);
      assertNoStack(result.stderr, `node ${id}`);
      // Its JSON log lines may come first; mutexd's own line is plain text, and the only one.
      const plain = result.stderr.split("\n").filter((line) => line !== "" && !line.startsWith("{"));
      assert.equal(plain.length, 1, `node ${id}: one line besides the JSON log:\n${result.stderr}`);
      assert.match(plain[0], want);
    }
  } finally {
    taken.server.close();
    removeDir(dir);
  }
});

test("cli up: a second up on taken ports exits 1 naming node and address; --only refuses unknown ids and says why a lone lock server waits", { timeout: 120_000 }, async () => {
  const dir = tempDir("mutexd-cli-op-");
  const [p, b, a] = [await freePort(), await freePort(), await freePort()];
  const file = clusterOf(dir, [["p1", "primary", `127.0.0.1:${p}`], ["b1", "backup", `127.0.0.1:${b}`], ["a1", "arbiter", `127.0.0.1:${a}`]]);
  const first = startMutexd(["up", "--config", file]);
  try {
    await stdoutMatch(first, /is running \(3 nodes\)/, 30_000);
    // upStartTimeoutMs (20 s) bounds how long an up waits for its nodes; it fails well before.
    const second = await runUpBounded(["--config", file], 25_000);
    assert.ok(!second.stillRan, `the second up exited by itself:\n${second.stdout}\n${second.stderr}`);
    assert.equal(second.code, 1, `second up: exit ${second.code}\nstdout: ${second.stdout}\nstderr: ${second.stderr}`);
    assert.doesNotMatch(second.stdout, /is running/, "the second up claims nothing");
    assert.match(second.stderr, new RegExp(`mutexd up: node p1 did not start: 127\\.0\\.0\\.1:${p} is taken: another process answers there \\(node p1, pid ${first.stdout().match(/p1 .* pid (\d+)/)![1]}\\)`));
    assertNoStack(second.stderr, "second up");
    // The first one still serves: the second stopped only its own children.
    assert.equal((await status(`http://127.0.0.1:${p}`))?.node.id, "p1");
    assert.equal(await stopUp(first), 0);

    const unknown = await runUpBounded(["--config", file, "--only", "p1,zz"], 25_000);
    assert.equal(unknown.code, 2, unknown.stderr);
    assert.match(unknown.stderr, /^mutexd: --only: no node zz in .* \(its nodes: p1, b1, a1\)/);

    const lone = startMutexd(["up", "--config", file, "--only", "p1"]);
    try {
      await stdoutMatch(lone, /Ctrl-C stops the cluster/, 30_000);
      assert.match(lone.stdout(), /is running \(1 nodes\)/);
      assert.match(lone.stdout(), /Note: p1 \(primary\) may not serve locks: it works with its backup b1 and its arbiter a1, which this up did not start/);
    } finally {
      await stopUp(lone);
    }
  } finally {
    await stopUp(first);
    removeDir(dir);
  }
});

test("cli status after a failover: the serving server shows as primary (table, --json, client status()); the dead one by its id; --server takes host:port", { timeout: 120_000 }, async () => {
  const c = await startCluster();
  try {
    c.procs.get("p1")!.kill("SIGKILL");
    await c.procs.get("p1")!.exited;
    await eventually("b1 serves as primary", async () => (await status(c.urls.b1))?.server?.serving === true, 30_000);

    const table = await runMutexd(["status", "--config", c.file]);
    assert.equal(table.code, 0, table.stderr);
    const version = PACKAGE_VERSION.replace(/\./g, "\\.");
    assert.match(table.stdout, new RegExp(`^node b1 \\(primary, backup in the cluster file\\), version ${version},`, "m"), table.stdout);
    // Each server's and the arbiter's own version (a rolling upgrade shows which runs what).
    assert.match(table.stdout, new RegExp(`^b1 +${c.urls.b1.replace(/\./g, "\\.")} +primary .* ${version}$`, "m"), table.stdout);
    assert.match(table.stdout, new RegExp(`^ARBITER \\S+ \\(version ${version}\\): epoch`, "m"), table.stdout);
    assert.match(table.stdout, new RegExp(`^p1 +${c.urls.p1.replace(/\./g, "\\.")} +unreachable`, "m"), table.stdout);
    assert.doesNotMatch(table.stdout, /^\? /m);

    const json = await runMutexd(["status", "--config", c.file, "--json"]);
    assert.equal(json.code, 0, json.stderr);
    const shown = JSON.parse(json.stdout);
    assert.deepEqual(shown.node, { id: "b1", role: "primary", configuredRole: "backup", version: PACKAGE_VERSION, formats: { wire: "1.2", disk: "1.0" } });
    assert.equal(shown.servers[0].id, "p1");
    assert.ok(shown.servers[0].error, "p1 is reported unreachable");

    const answer = await connect({ servers: [c.urls.b1] }).status();
    assert.equal(answer.node.role, "primary");
    assert.equal(answer.node.configuredRole, "backup");

    const bare = await runMutexd(["status", "--server", hostPort(c.urls.b1)]);
    assert.equal(bare.code, 0, `status --server host:port: ${bare.stderr}`);
    assert.match(bare.stdout, /^node b1 \(primary/m);
  } finally {
    await c.stopAll();
  }
});

test("cli lock: a try that finds the lock taken, or a wait that ran out, names the lock once and no queue position", { timeout: 120_000 }, async () => {
  const c = await startCluster();
  const holder = await connect({ servers: [c.urls.p1, c.urls.b1] }).lock("job", { ttlMs: 10_000 });
  try {
    // --server as host:port (no scheme), as etcdctl takes it.
    const servers = `${hostPort(c.urls.p1)},${hostPort(c.urls.b1)}`;
    const tried = await runMutexd(["lock", "job", "--server", servers, "--wait", "0", "--", "true"]);
    assert.equal(tried.code, 3, tried.stderr);
    assert.equal(tried.stderr, "mutexd: not acquired: lock job is taken\n");
    const waited = await runMutexd(["lock", "job", "--server", servers, "--wait", "300ms", "--", "true"]);
    assert.equal(waited.code, 3, waited.stderr);
    assert.equal(waited.stderr, "mutexd: not acquired: lock job still taken after waiting 300 ms\n");
  } finally {
    await holder.release();
    await c.stopAll();
  }
});

test("cli ring: put and delete say what they wrote (and --json); a lease end is said once", { timeout: 120_000 }, async () => {
  const ring = await startRing({ size: 1 });
  try {
    const server = hostPort(ring.urls[0]);
    const put = await runMutexd(["ring", "put", "k", "v1", "--server", server]);
    assert.equal(put.code, 0, put.stderr);
    const written = /^put k at write (\d+) \(section (\d+)\), applied by every ring node\n$/.exec(put.stdout);
    assert.ok(written, `ring put printed ${JSON.stringify(put.stdout)}`);
    const asJson = await runMutexd(["ring", "delete", "k", "--server", server, "--json"]);
    assert.equal(asJson.code, 0, asJson.stderr);
    const deleted = JSON.parse(asJson.stdout);
    assert.equal(deleted.op, "delete");
    assert.equal(deleted.key, "k");
    assert.ok(deleted.wseq > Number(written[1]), "a later write");
    assert.equal(await connectRing({ server: ring.urls[0] }).get("k"), undefined);

    const outlived = await runMutexd(["ring", "lock", "--server", server, "--lease", "400ms", "--grace", "200ms", "--", "sleep", "30"]);
    assert.equal(outlived.code, 4, outlived.stderr);
    assert.match(outlived.stderr, /^mutexd: ring section \d+ lost: the lease ended; stopping the command$/m);
    assert.equal(outlived.stderr.match(/lost/g)?.length, 1, `said once: ${outlived.stderr}`);
  } finally {
    await ring.remove();
  }
});
