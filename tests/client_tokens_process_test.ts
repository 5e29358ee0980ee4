/**
 * Client tokens end to end: a real lock server and a real ring node (`mutexd node`) from a
 * cluster file with `[[tokens]]`, driven by the CLI and the TypeScript clients. Proves: the CLI
 * takes a token from --token-file, --token and MUTEXD_AUTH_TOKEN; without one it exits 5 with
 * one line saying a token is required; a read-only token cannot lock (403) and the lock stays
 * free; the ring's section, writes and reads are checked per key; listings are filtered; the
 * refusals are counted in status under `security`; `arbiter recover` says a token is missing.
 * On commit 2c9c5fa the cluster file refused `[[tokens]]`, and without them every call below
 * succeeded without any credential.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import process from "node:process";
import { connect } from "../lib/client/lock_client.ts";
import { connectRing } from "../lib/client/ring_client.ts";
import type { MutexdError } from "../lib/wire/errors.ts";
import { eventually, freePort, type Proc, QUICK_RING_SETTINGS, removeDir, startMutexd, tempDir, TEST_SECRET, waitForHttp, writeCluster, writeMutexdWrapper } from "./_harness.ts";

/** Each token's secret (distinct, ≥ 32 characters) and permissions. */
const TOKENS = {
  ci: { secret: "ci-".padEnd(40, "1"), permissions: '[{ prefix = "ci/", allow = ["lock"] }, { prefix = "", allow = ["read"] }]' },
  viewer: { secret: "viewer-".padEnd(40, "2"), permissions: '[{ prefix = "", allow = ["read"] }]' },
  ring: { secret: "ring-".padEnd(40, "3"), permissions: '[{ prefix = "@ring", allow = ["lock"] }, { prefix = "kv/", allow = ["lock"] }]' },
  ops: { secret: "ops-".padEnd(40, "4"), permissions: '[{ prefix = "", allow = ["admin"] }]' },
};
type TokenName = keyof typeof TOKENS;

interface World {
  dir: string;
  file: string;
  lockUrl: string;
  ringUrl: string;
  /** The path of a file holding `name`'s secret. */
  tokenFile(name: TokenName): string;
  procs: Proc[];
}

/** p1 (a lock server alone: it serves at once) and r1 (a ring of one), with the tokens in files. */
async function startWorld(): Promise<World> {
  const dir = tempDir("mutexd-tokens-proc-");
  const [p, r] = [await freePort(), await freePort()];
  for (const [name, token] of Object.entries(TOKENS)) writeFileSync(`${dir}/${name}.token`, `${token.secret}\n`);
  const file = writeCluster(dir, [
    // Tokens need the cluster secret (mutexd node refuses them without one: the peer routes would be open).
    "[cluster]",
    `secret = "${TEST_SECRET}"`,
    "[settings]",
    ...QUICK_RING_SETTINGS,
    "[[nodes]]", 'id = "p1"', 'role = "primary"', `http = "127.0.0.1:${p}"`,
    "[[nodes]]", 'id = "r1"', 'role = "ring"', `http = "127.0.0.1:${r}"`, 'dataDir = "data/r1"',
    ...Object.entries(TOKENS).flatMap(([name, token]) => ["[[tokens]]", `name = "${name}"`, `secretFile = "${name}.token"`, `permissions = ${token.permissions}`]),
  ].join("\n") + "\n");
  const world: World = {
    dir,
    file,
    lockUrl: `http://127.0.0.1:${p}`,
    ringUrl: `http://127.0.0.1:${r}`,
    tokenFile: (name) => `${dir}/${name}.token`,
    procs: [startMutexd(["node", "--config", file, "--id", "p1"]), startMutexd(["node", "--config", file, "--id", "r1"])],
  };
  // /v1/health needs no token (liveness probes).
  await waitForHttp(`${world.lockUrl}/v1/health`);
  await waitForHttp(`${world.ringUrl}/v1/health`);
  await eventually("r1 serves (a view of one, its token)", async () => {
    const health = await (await fetch(`${world.ringUrl}/v1/health`)).json();
    return health.ring?.serving === true;
  }, 20_000);
  return world;
}

async function stopWorld(world: World): Promise<void> {
  for (const proc of world.procs) proc.kill("SIGKILL");
  await Promise.all(world.procs.map((proc) => proc.exited));
  removeDir(world.dir);
}

/** Runs `mutexd ...args` to its end: exit code, stdout, stderr. */
async function mutexd(args: string[], env: Record<string, string> = {}) {
  const proc = startMutexd(args, { env: { MUTEXD_AUTH_TOKEN: "", ...env } });
  const code = await proc.exited;
  return { code, stdout: proc.stdout(), stderr: proc.stderr() };
}

/** A command that exits 7 only when run under a lock (MUTEXD_TOKEN is the fencing token). */
const UNDER_LOCK = ["--", "sh", "-c", 'test -n "$MUTEXD_TOKEN" && exit 7'];

test("client tokens (process): the CLI locks with --token-file, --token or MUTEXD_AUTH_TOKEN; without one, or with a read-only one, it exits 5 saying why and the lock stays free", { timeout: 60_000 }, async () => {
  const world = await startWorld();
  try {
    const where = ["--config", world.file];
    const missing = await mutexd(["lock", "ci/job", ...where, "--wait", "0", ...UNDER_LOCK]);
    assert.equal(missing.code, 5, missing.stderr);
    assert.equal(missing.stderr, "mutexd: unauthorized: missing bearer token: this cluster requires client tokens (Authorization: Bearer …)\n");

    assert.equal((await mutexd(["lock", "ci/job", ...where, "--token-file", world.tokenFile("ci"), ...UNDER_LOCK])).code, 7);
    assert.equal((await mutexd(["lock", "ci/job", ...where, ...UNDER_LOCK], { MUTEXD_AUTH_TOKEN: TOKENS.ci.secret })).code, 7);
    assert.equal((await mutexd(["lock", "ci/job", ...where, "--token", TOKENS.ci.secret, ...UNDER_LOCK])).code, 7);

    const unknown = await mutexd(["lock", "ci/job", ...where, ...UNDER_LOCK], { MUTEXD_AUTH_TOKEN: "not-a-token-of-this-cluster" });
    assert.equal(unknown.code, 5);
    assert.equal(unknown.stderr, "mutexd: unauthorized: unknown bearer token\n");

    // The viewer may read everything but lock nothing: refused at its session already.
    const readOnly = await mutexd(["lock", "ci/job", ...where, "--token-file", world.tokenFile("viewer"), ...UNDER_LOCK]);
    assert.equal(readOnly.code, 5);
    assert.equal(readOnly.stderr, 'mutexd: forbidden: token viewer may not lock any name; it may read ""\n');
    // ci may lock ci/… only.
    const otherPrefix = await mutexd(["lock", "jobs/x", ...where, "--token-file", world.tokenFile("ci"), ...UNDER_LOCK]);
    assert.equal(otherPrefix.code, 5);
    assert.match(otherPrefix.stderr, /^mutexd: forbidden: token ci may not lock jobs\/x; it may lock "ci\/", read ""\n$/);

    // Nothing is held: every lock above was released or never taken.
    const ops = connect({ servers: world.lockUrl, token: TOKENS.ops.secret });
    assert.deepEqual((await ops.request<{ locks: unknown[] }>("GET", "/v1/locks")).locks, []);

    // `mutexd status` with the admin token shows the refusals; with the viewer's, it is refused.
    const status = await mutexd(["status", ...where, "--token-file", world.tokenFile("ops"), "--json"]);
    assert.equal(status.code, 0, status.stderr);
    const security = JSON.parse(status.stdout).security;
    assert.equal(security.clientUnauthorized, 2, JSON.stringify(security));
    assert.equal(security.clientForbidden, 2, JSON.stringify(security));
    const viewerStatus = await mutexd(["status", ...where, "--token-file", world.tokenFile("viewer")]);
    assert.equal(viewerStatus.code, 5);
    assert.match(viewerStatus.stderr, /forbidden: token viewer may not admin every name/);
  } finally {
    await stopWorld(world);
  }
});

test("client tokens (process): the TypeScript clients send their token; 401 and 403 reject at once; listings keep what the token may read", { timeout: 60_000 }, async () => {
  const world = await startWorld();
  try {
    const ci = connect({ servers: world.lockUrl, token: TOKENS.ci.secret });
    {
      await using held = await ci.lock("ci/lib", { waitMs: 0 });
      assert.ok(held.token > 0);
      // The ring token may lock @ring and kv/… only, so read nothing else: ci/lib is not listed to it.
      const ringToken = connect({ servers: world.lockUrl, token: TOKENS.ring.secret });
      assert.deepEqual((await ringToken.request<{ locks: unknown[] }>("GET", "/v1/locks")).locks, []);
      const viewer = connect({ servers: world.lockUrl, token: TOKENS.viewer.secret });
      assert.deepEqual((await viewer.request<{ locks: { name: string }[] }>("GET", "/v1/locks")).locks.map((l) => l.name), ["ci/lib"]);
    }
    const anonymous = connect({ servers: world.lockUrl });
    await assert.rejects(anonymous.lock("ci/lib", { waitMs: 0 }), (error: MutexdError) => error.code === "unauthorized" && error.status === 401);
    const viewer = connect({ servers: world.lockUrl, token: TOKENS.viewer.secret });
    await assert.rejects(viewer.lock("ci/lib", { waitMs: 0 }), (error: MutexdError) => error.code === "forbidden" && error.status === 403);

    // The ring: section and kv/ writes with the ring token; reads per key; keys filtered.
    const ring = connectRing({ server: world.ringUrl, token: TOKENS.ring.secret });
    const ops = connectRing({ server: world.ringUrl, token: TOKENS.ops.secret });
    for (const [client, key] of [[ring, "kv/a"], [ops, "other/b"]] as const) {
      await using section = await client.lock({ waitMs: 10_000 });
      await section.put(key, "1");
    }
    await assert.rejects(connectRing({ server: world.ringUrl }).lock({ waitMs: 0 }), (error: MutexdError) => error.code === "unauthorized");
    await assert.rejects(connectRing({ server: world.ringUrl, token: TOKENS.viewer.secret }).lock({ waitMs: 0 }), (error: MutexdError) => error.code === "forbidden");
    assert.deepEqual(await ops.keys(), ["kv/a", "other/b"]);
    const kvReader = connectRing({ server: world.ringUrl, token: TOKENS.ring.secret });
    assert.deepEqual(await kvReader.keys(), ["kv/a"], "lock on kv/ includes read on kv/, and nothing else is listed");
    await assert.rejects(kvReader.get("other/b"), (error: MutexdError) => error.code === "forbidden");
    {
      // A section is no licence to write outside the token's prefixes.
      await using section = await ring.lock({ waitMs: 10_000 });
      await assert.rejects(section.put("other/b", "2"), (error: MutexdError) => error.code === "forbidden");
    }
    assert.equal((await ops.get("other/b"))?.value, "1");
    const status = await ops.status() as unknown as { security: Record<string, number> };
    assert.ok(status.security.clientUnauthorized >= 1 && status.security.clientForbidden >= 3, JSON.stringify(status.security));
  } finally {
    await stopWorld(world);
  }
});

test("client tokens (process): `mutexd ring` put, get, keys and lock take the token (and give it to CMD); a read-only token reads but cannot write", { timeout: 60_000 }, async () => {
  const world = await startWorld();
  try {
    const where = ["--config", world.file, "--id", "r1"];
    const put = await mutexd(["ring", "put", "kv/x", "42", ...where, "--token-file", world.tokenFile("ring")]);
    assert.equal(put.code, 0, put.stderr);
    const get = await mutexd(["ring", "get", "kv/x", ...where], { MUTEXD_AUTH_TOKEN: TOKENS.viewer.secret });
    assert.equal(get.code, 0, get.stderr);
    assert.equal(get.stdout, "42\n");
    const denied = await mutexd(["ring", "put", "kv/x", "43", ...where, "--token-file", world.tokenFile("viewer")]);
    assert.equal(denied.code, 5);
    assert.equal(denied.stderr, 'mutexd: forbidden: token viewer may not lock @ring; it may read ""\n');
    const noToken = await mutexd(["ring", "keys", ...where]);
    assert.equal(noToken.code, 5);
    assert.match(noToken.stderr, /^mutexd: unauthorized: missing bearer token/);
    // Inside `ring lock --token-file`, CMD's own `mutexd ring put` gets the token (MUTEXD_AUTH_TOKEN)
    // besides the fence (MUTEXD_TOKEN), and writes in that section.
    const bin = writeMutexdWrapper(world.dir);
    const inSection = await mutexd(["ring", "lock", ...where, "--token-file", world.tokenFile("ring"), "--", "sh", "-c", "mutexd ring put kv/y 7"], {
      PATH: `${bin}:${process.env.PATH}`,
    });
    assert.equal(inSection.code, 0, inSection.stderr);
    assert.equal((await mutexd(["ring", "get", "kv/y", ...where, "--token-file", world.tokenFile("ring")])).stdout, "7\n");
  } finally {
    await stopWorld(world);
  }
});

test("client tokens (process): /metrics needs a token that may read some name, on a lock server and a ring node; the refusal is counted there", { timeout: 60_000 }, async () => {
  const world = await startWorld();
  try {
    for (const url of [world.lockUrl, world.ringUrl]) {
      const bare = await fetch(`${url}/metrics`);
      assert.equal(bare.status, 401, `${url}: no token`);
      await bare.body?.cancel();
      const read = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${TOKENS.viewer.secret}` } });
      assert.equal(read.status, 200, `${url}: a read token`);
      assert.match(await read.text(), /^mutexd_security_refusals_total\{reason="clientUnauthorized",node="(p1|r1)"\} [1-9]/m);
    }
  } finally {
    await stopWorld(world);
  }
});

test("client tokens (process): `mutexd arbiter recover` without a token says the lock servers refused it, not that they did not answer", { timeout: 60_000 }, async () => {
  const dir = tempDir("mutexd-tokens-recover-");
  const [p, b, a] = [await freePort(), await freePort(), await freePort()];
  writeFileSync(`${dir}/ops.token`, `${TOKENS.ops.secret}\n`);
  const file = writeCluster(dir, [
    "[cluster]", `secret = "${TEST_SECRET}"`,
    "[[nodes]]", 'id = "p1"', 'role = "primary"', `http = "127.0.0.1:${p}"`,
    "[[nodes]]", 'id = "b1"', 'role = "backup"', `http = "127.0.0.1:${b}"`,
    "[[nodes]]", 'id = "a1"', 'role = "arbiter"', `http = "127.0.0.1:${a}"`,
    "[[tokens]]", 'name = "ops"', 'secretFile = "ops.token"', `permissions = ${TOKENS.ops.permissions}`,
  ].join("\n") + "\n");
  // The lock servers only: the arbiter is the one being recovered (stopped).
  const procs = ["p1", "b1"].map((id) => startMutexd(["node", "--config", file, "--id", id]));
  try {
    await waitForHttp(`http://127.0.0.1:${p}/v1/health`);
    await waitForHttp(`http://127.0.0.1:${b}/v1/health`);
    const refused = await mutexd(["arbiter", "recover", "--config", file, "--id", "a1"]);
    assert.equal(refused.code, 5);
    assert.match(refused.stderr, /^mutexd: not recovered: http:\/\/127\.0\.0\.1:\d+: unauthorized: missing bearer token/);
  } finally {
    for (const proc of procs) proc.kill("SIGKILL");
    await Promise.all(procs.map((proc) => proc.exited));
    removeDir(dir);
  }
});
