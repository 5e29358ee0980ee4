/**
 * The client as a package (issue 17): `npm pack` (its prepack builds dist/client/ with
 * tools/build_client.ts, as `make client` does) makes a tarball of only the built client; it
 * installs offline into a temporary project; Node, Bun and Deno each import `mutexd/client` and
 * `mutexd/ring` from that project's node_modules (no path into this repository), take a lock on a
 * live local node, see a second session refused while it is held, and release it; then enter a
 * live ring node's section, write in it and read the value back. Every node's health, the lock
 * status and the ring status name package.json's version. Deno checks a
 * TypeScript file against the shipped .d.ts, and rejects one that misuses the API (so the types
 * are really read). The test removes its temporary folder (tarball, project, node data); it
 * leaves dist/client/, the build output (git-ignored, like `make build`'s dist/mutexd).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { reachable } from "../tools/build_client.ts";
import { eventually, freePort, PACKAGE_VERSION, type Proc, QUICK_RING_SETTINGS, removeDir, ROOT, startProcess, tempDir, waitForHttp, writeCluster } from "./_harness.ts";

/** Give-up bound (not a speed target). */
const PROCESS_START_MS = 15_000;

const BUN = `${ROOT}/node_modules/.bin/bun`;
const DENO = `${ROOT}/node_modules/.bin/deno`;

async function run(cmd: string, args: string[], cwd: string, env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = startProcess(cmd, args, { cwd, env });
  const code = await proc.exited;
  return { code, stdout: proc.stdout(), stderr: proc.stderr() };
}

/** What the application does, the same file under each runtime: lock, a refused try, release, status. */
const APP = `import process from "node:process";
import { connect, MutexdError, NotAcquiredError } from "mutexd/client";
import { connectRing, RingNotAcquiredError } from "mutexd/ring";

const [server, ringServer, name] = process.argv.slice(-3);
const client = connect({ servers: [server], failoverTimeoutMs: 2_000 });
const lock = await client.lock(name, { waitMs: 5_000, ttlMs: 10_000 });
let refused = "no";
try {
  const other = await connect({ servers: [server] }).lock(name, { waitMs: 0 });
  await other.release();
} catch (error) {
  refused = error instanceof NotAcquiredError && error instanceof MutexdError ? "NotAcquiredError" : String(error);
}
await lock.release();
const again = await client.lock(name, { waitMs: 0 });
await again.release();
const status = await client.status();
// The ring: a section, a write in it that went around the ring, read back after.
const ring = connectRing({ server: ringServer });
const section = await ring.lock({ waitMs: 10_000 });
await section.put(name, "written in section " + section.token);
await section.release();
const read = await ring.get(name);
console.log(JSON.stringify({
  token: lock.token,
  refused,
  againToken: again.token,
  version: status.node.version,
  ringValue: read?.value,
  ringFence: section.token,
  ringVersion: (await ring.status()).version,
  ringError: RingNotAcquiredError.prototype instanceof MutexdError,
}));
`;

/** A TypeScript user of the types: checks under \`deno check\` against the shipped .d.ts. */
const TYPED = `import { connect, type LockOptions } from "mutexd/client";
import { connectRing, type RingStatus } from "mutexd/ring";
const options: LockOptions = { waitMs: 0, ttlMs: 1_000 };
export async function fenced(server: string): Promise<number> {
  const lock = await connect({ servers: [server] }).lock("x", options);
  const token: number = lock.token;
  await lock.release();
  return token;
}
export const epoch = (status: RingStatus): number => status.epoch;
export const ring = connectRing({ server: "http://127.0.0.1:1" });
`;

test("client package: npm pack, offline install, import from Node, Bun and Deno, lock and release on a live node", { timeout: 300_000 }, async () => {
  const dir = tempDir("mutexd-package-");
  const nodes: Proc[] = [];
  try {
    const pack = await run("npm", ["pack", "--json", "--pack-destination", dir], ROOT);
    assert.equal(pack.code, 0, `npm pack: ${pack.stderr}`);
    const [packed] = JSON.parse(pack.stdout.slice(pack.stdout.indexOf("[")));
    const paths: string[] = packed.files.map((f: { path: string }) => f.path).sort();
    // Only the built client: its .js and .d.ts, and npm's package.json and README; no source, no server.
    for (const path of paths) assert.match(path, /^(dist\/client\/lib\/.*\.(js|d\.ts)|package\.json|README\.md)$/, `in the tarball: ${path}`);
    for (const entry of ["client", "ring"]) {
      assert.ok(paths.includes(`dist/client/lib/client/${entry}.js`) && paths.includes(`dist/client/lib/client/${entry}.d.ts`), `the ${entry} entry`);
    }
    assert.ok(!paths.some((p) => /cluster\/|core\/lock|hono|valibot/.test(p)), "nothing of the server");

    const app = join(dir, "app");
    mkdirSync(app);
    writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
    const install = await run("npm", ["install", join(dir, packed.filename), "--offline", "--no-audit", "--no-fund", "--ignore-scripts"], app);
    assert.equal(install.code, 0, `npm install: ${install.stderr}`);
    writeFileSync(join(app, "app.mjs"), APP);
    writeFileSync(join(app, "typed.ts"), TYPED);
    writeFileSync(join(app, "mistyped.ts"), `import { connect } from "mutexd/client";\nconnect({ servers: 7101 });\n`);

    // A lock server alone (it serves at once) and a ring of one node.
    const [port, ringPort] = [await freePort(), await freePort()];
    const cluster = writeCluster(dir, [
      "[settings]", ...QUICK_RING_SETTINGS,
      "[[nodes]]", 'id = "p1"', 'role = "primary"', `http = "127.0.0.1:${port}"`,
      "[[nodes]]", 'id = "r1"', 'role = "ring"', `http = "127.0.0.1:${ringPort}"`, 'dataDir = "data/r1"',
    ].join("\n") + "\n");
    const [server, ringServer] = [`http://127.0.0.1:${port}`, `http://127.0.0.1:${ringPort}`];
    nodes.push(startProcess(BUN, [`${ROOT}/main.ts`, "node", "--config", cluster, "--id", "p1"], { cwd: dir }));
    nodes.push(startProcess(BUN, [`${ROOT}/main.ts`, "node", "--config", cluster, "--id", "r1"], { cwd: dir }));
    for (const url of [server, ringServer]) await waitForHttp(`${url}/v1/health`, PROCESS_START_MS);
    await eventually("r1 serves (a view of one, its token)", async () => (await (await fetch(`${ringServer}/v1/health`)).json()).ring?.serving === true, 20_000);
    for (const url of [server, ringServer]) {
      const health = await (await fetch(`${url}/v1/health`)).json();
      assert.equal(health.version, PACKAGE_VERSION, `${health.id}'s health names its version`);
    }

    // Node from PATH; Deno resolves "mutexd/client" through the project's package.json and node_modules.
    const runtimes: [string, string[]][] = [
      ["node", ["app.mjs"]],
      [BUN, ["app.mjs"]],
      [DENO, ["run", "--allow-net", "--allow-env", "--allow-read", "app.mjs"]],
    ];
    const tokens: number[] = [];
    for (const [cmd, args] of runtimes) {
      const name = `package-${cmd.split("/").pop()}`;
      const result = await run(cmd, [...args, server, ringServer, name], app);
      assert.equal(result.code, 0, `${cmd}: ${result.stderr}`);
      const answer = JSON.parse(result.stdout.trim().split("\n").pop()!);
      assert.equal(answer.refused, "NotAcquiredError", `${cmd}: a second session is refused while the lock is held`);
      assert.ok(answer.againToken > answer.token, `${cmd}: released, then taken again with a larger fencing token`);
      assert.equal(answer.version, PACKAGE_VERSION, `${cmd}: status through the package`);
      assert.equal(answer.ringValue, `written in section ${answer.ringFence}`, `${cmd}: a ring write in a section, read back`);
      assert.equal(answer.ringVersion, PACKAGE_VERSION, `${cmd}: ring status through the package`);
      assert.equal(answer.ringError, true, `${cmd}: the ring's errors are MutexdErrors`);
      tokens.push(answer.token);
    }
    assert.ok(tokens[0] < tokens[1] && tokens[1] < tokens[2], `one node's fencing tokens only grow: ${tokens}`);

    const typed = await run(DENO, ["check", "typed.ts"], app);
    assert.equal(typed.code, 0, `deno check against the .d.ts: ${typed.stderr}`);
    const mistyped = await run(DENO, ["check", "mistyped.ts"], app);
    assert.notEqual(mistyped.code, 0, "a wrong argument type is an error: the .d.ts are read");
    assert.match(mistyped.stderr, /servers/);
  } finally {
    for (const node of nodes) node.kill("SIGTERM");
    await Promise.all(nodes.map((node) => node.exited));
    removeDir(dir);
  }
});

test("client package build: the files an entry reaches by relative imports are kept; a package or node: import is refused", () => {
  const dir = tempDir("mutexd-package-walk-");
  try {
    mkdirSync(join(dir, "lib", "client"), { recursive: true });
    mkdirSync(join(dir, "lib", "wire"), { recursive: true });
    writeFileSync(join(dir, "lib", "client", "client.js"), `/** a comment */ import { a } from "./a.js";\nexport * from "../wire/errors.js";\n`);
    writeFileSync(join(dir, "lib", "client", "client.d.ts"), `export type { A } from "./a.js";\n`);
    writeFileSync(join(dir, "lib", "client", "a.js"), `export const a = 1;\n`);
    writeFileSync(join(dir, "lib", "client", "a.d.ts"), `export type A = number;\n`);
    writeFileSync(join(dir, "lib", "client", "unused.js"), `export const u = 1;\n`);
    writeFileSync(join(dir, "lib", "wire", "errors.js"), `export class E extends Error {}\n`);
    assert.deepEqual(reachable(dir, ["lib/client/client.js", "lib/client/client.d.ts"]), [
      "lib/client/a.d.ts", "lib/client/a.js", "lib/client/client.d.ts", "lib/client/client.js", "lib/wire/errors.js",
    ]);
    writeFileSync(join(dir, "lib", "client", "a.js"), `import { readFileSync } from "node:fs";\nexport const a = readFileSync;\n`);
    assert.throws(() => reachable(dir, ["lib/client/client.js"]), /lib\/client\/a\.js imports "node:fs": the client may import only its own files/);
    writeFileSync(join(dir, "lib", "client", "a.js"), `export const a = await import("valibot");\n`);
    assert.throws(() => reachable(dir, ["lib/client/client.js"]), /imports "valibot"/);
  } finally {
    removeDir(dir);
  }
});
