/**
 * A rolling upgrade between two builds that differ in a minor format version, on real
 * processes: this tree (wire format 1.2, disk 1.0) and a copy of it whose lib/wire/version.ts says
 * wire 1.3 and disk 1.1, run as one lock service (primary, backup, arbiter with a durable log), upgraded one node
 * at a time in the order docs/deploy.md gives (arbiter, backup, primary). Locks keep working with
 * the old build as primary and the new as backup, then the other way round, and after; no node
 * refuses a peer request. Then a copy whose wire major is 2 is refused (`version_mismatch`,
 * counted), and a dataDir marked 2.0 stops a start with exit 2 naming the file and both versions.
 * A ring of three is upgraded one node at a time from a copy that is the build before the
 * section bound (wire 1.0, schemas without `renew.sectionMaxMs` and the promise's
 * `holdSectionMaxMs`, nor the `section` message of 1.2) to this tree: no node refuses a message of
 * the other build, so the new nodes send those fields and that message only to the upgraded ones. Each test stops its processes
 * and removes its temp dirs (the copies too).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { cpSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect } from "../lib/client/lock_client.ts";
import { DEFAULT_SETTINGS as S } from "../lib/settings.ts";
import { eventually, removeDir, ROOT, startMutexd, tempDir, writeCluster } from "./_harness.ts";
import { type Cluster, startCluster, status } from "./_lock_cluster.ts";
import { makeRing } from "./_ring_cluster.ts";

/** Room for scheduling on shared cores, added to each bound below (as failover_process_test.ts). */
const SLACK_MS = 2_000;
/** A stopped primary's backup takes over: silence, the leases, one claim timing out. */
const TAKEOVER_MS = S.primarySilenceMs + Math.max(S.primaryLeaseMs, S.backupLeaseMs) + S.peerTimeoutMs + SLACK_MS;
/** The primary stops waiting for acks and tells the arbiter at a renewal (as failover_process_test.ts). */
const OUT_OF_SYNC_MS = S.replicationTimeoutMs + S.leaseRenewMs + S.peerTimeoutMs + SLACK_MS;
/** A (re)started backup syncs and is recorded in sync at the next renewal. */
const RESYNC_MS = S.peerTimeoutMs + S.leaseRenewMs + S.primarySilenceMs + SLACK_MS;

/**
 * A copy of this tree (what `mutexd` runs: main.ts, cluster/, lib/, the package files; the shared
 * node_modules linked) in `dir` whose format constants are `wire` and `disk`; returns its main.ts.
 * `beforeSectionBound`: its view-message schemas lack the section bound's optional fields and the
 * `section` and `sectionEnd` messages, as a 1.0 build's did (strict: it refuses a message that carries them).
 */
function buildWithFormats(dir: string, wire: string, disk: string, options: { beforeSectionBound?: boolean } = {}): string {
  mkdirSync(dir, { recursive: true });
  for (const part of ["main.ts", "package.json", "deno.json", "bunfig.toml", "cluster", "lib"]) cpSync(join(ROOT, part), join(dir, part), { recursive: true });
  symlinkSync(join(ROOT, "node_modules"), join(dir, "node_modules"));
  const file = join(dir, "lib/wire/version.ts");
  const source = readFileSync(file, "utf8");
  const constant = (name: string, version: string) => {
    const [major, minor] = version.split(".");
    return [new RegExp(`(export const ${name}: FormatVersion = )\\{ major: \\d+, minor: \\d+ \\}`), `$1{ major: ${major}, minor: ${minor} }`] as const;
  };
  const bumped = source.replace(...constant("WIRE_FORMAT", wire)).replace(...constant("DISK_FORMAT", disk));
  assert.notEqual(bumped, source, "the copy's format constants were found and changed");
  assert.ok(bumped.includes(`WIRE_FORMAT: FormatVersion = { major: ${wire.replace(".", ", minor: ")} }`), "wire format of the copy");
  writeFileSync(file, bumped);
  if (options.beforeSectionBound) {
    const schemas = join(dir, "lib/wire/ring_peer.ts");
    const source = readFileSync(schemas, "utf8");
    const older = source.replace(", sectionMaxMs: v.optional(ms())", "").replace("      holdSectionMaxMs: v.optional(msByNode()),\n", "");
    assert.equal(older.length, source.length - ", sectionMaxMs: v.optional(ms())".length - "      holdSectionMaxMs: v.optional(msByNode()),\n".length, "both fields taken out of the copy's schemas");
    const sectionVariants = [
      '  v.strictObject({ type: v.literal("section"), from: nodeId(), epoch: epoch(), leaseMs: ms(), n: count() }),\n',
      '  v.strictObject({ type: v.literal("sectionEnd"), from: nodeId(), epoch: epoch(), n: count() }),\n',
    ];
    for (const variant of sectionVariants) assert.ok(older.includes(variant), `the schema is found: ${variant.trim()}`);
    writeFileSync(schemas, sectionVariants.reduce((text, variant) => text.replace(variant, ""), older));
  }
  return join(dir, "main.ts");
}

/** The wire and disk formats a node's build says it runs (its `/v1/health`). */
async function formatsOf(c: Cluster, id: "p1" | "b1" | "a1"): Promise<{ wire: string; disk: string }> {
  return (await (await fetch(`${c.urls[id]}/v1/health`)).json()).formats;
}

/** The format a node's dataDir is marked with (cluster/format_version.ts). */
function diskMarker(c: Cluster, id: string): string {
  return JSON.parse(readFileSync(join(c.dir, ".data", id, "format.json"), "utf8")).format;
}

/** Stops `id` as an operator would (SIGTERM, waits for its exit). */
async function stop(c: Cluster, id: "p1" | "b1" | "a1"): Promise<void> {
  const proc = c.procs.get(id)!;
  proc.kill("SIGTERM");
  assert.equal(await proc.exited, 0, `${id} stopped cleanly`);
}

/** Stops `id` and starts it from `main` (this tree's build when absent). */
async function upgrade(c: Cluster, id: "p1" | "b1" | "a1", main?: string): Promise<void> {
  await stop(c, id);
  await c.start(id, main);
}

/**
 * `eventually(what, check, boundMs)`; when it times out, the error also says what each of `ids`
 * reports and the end of its log, so a failure explains itself.
 */
async function explained(c: Cluster, ids: Array<"p1" | "b1" | "a1">, what: string, check: () => Promise<boolean>, boundMs: number): Promise<void> {
  try {
    await eventually(what, check, boundMs);
  } catch (error) {
    const views = await Promise.all(ids.map(async (id) => `${id}: ${JSON.stringify((await status(c.urls[id]))?.server)}`));
    const logs = ids.map((id) => `${id} log tail:\n${c.procs.get(id)!.stderr().split("\n").slice(-15).join("\n")}`);
    throw new Error(`${(error as Error).message}\n${views.join("\n")}\n${logs.join("\n")}`);
  }
}

/** The arbiter's record (its `/v1/status`): whom it counts as the backup in sync, by incarnation. */
async function arbiterRecord(c: Cluster): Promise<{ epoch: number; primary: string; backupInSync: boolean; backupIncarnation: string | null }> {
  return (await (await fetch(`${c.urls.a1}/v1/status`)).json()).arbiter;
}

/**
 * Resolves when `primary` serves and the arbiter records `backup` in sync in an incarnation
 * other than `before` (the one recorded before `backup` restarted): only then may it take over.
 * The primary's own "in sync" flag is not enough: it still shows the backup's previous process
 * until it notices the restart, and a takeover by the new process is then refused.
 */
function inSync(c: Cluster, primary: "p1" | "b1", backup: "p1" | "b1", before: string | null): Promise<void> {
  return explained(c, [primary, backup, "a1"], `${primary} serves with ${backup} in sync in its new incarnation`, async () => {
    const s = await status(c.urls[primary]);
    const record = await arbiterRecord(c);
    return s?.server?.serving === true && record.primary === primary && record.backupInSync && record.backupIncarnation !== before;
  }, RESYNC_MS);
}

/** Upgrades the backup `id` (stop, start from `main`) and waits until the arbiter records its new process in sync. */
async function upgradeBackup(c: Cluster, id: "p1" | "b1", primary: "p1" | "b1", main?: string): Promise<void> {
  const before = (await arbiterRecord(c)).backupIncarnation;
  await upgrade(c, id, main);
  await inSync(c, primary, id, before);
}

test("rolling upgrade 1.2 → 1.3: arbiter, backup, primary one at a time; locks work in each mix and across the takeover", { timeout: 120_000 }, async () => {
  const builds = tempDir("mutexd-builds-");
  const c = await startCluster([], { durable: true });
  try {
    const newer = buildWithFormats(join(builds, "v1.3"), "1.3", "1.1");
    const client = connect({ servers: [c.urls.p1, c.urls.b1], failoverTimeoutMs: TAKEOVER_MS });
    const lockOnce = async (name: string) => {
      const lock = await client.lock(name, { ttlMs: 10_000, waitMs: 5_000 });
      await lock.release();
      return lock.token;
    };
    await lockOnce("before");
    assert.equal(diskMarker(c, "p1"), "1.0");

    await upgrade(c, "a1", newer);
    await upgradeBackup(c, "b1", "p1", newer);
    assert.deepEqual([diskMarker(c, "a1"), diskMarker(c, "b1"), diskMarker(c, "p1")], ["1.1", "1.1", "1.0"], "two builds in one cluster");
    assert.deepEqual(await Promise.all((["a1", "b1", "p1"] as const).map((id) => formatsOf(c, id))), [
      { wire: "1.3", disk: "1.1" },
      { wire: "1.3", disk: "1.1" },
      { wire: "1.2", disk: "1.0" },
    ], "each node's health says which build it runs");
    // Held from here across the old primary's stop, released at the new one.
    const held = await client.lock("held", { ttlMs: 30_000 });
    await lockOnce("old-primary-new-backup");

    // The primary (old) stops: the backup (new) takes over (waited for: a p1 back before it
    // would take its role back, a race docs/deploy.md's order avoids the same way). The old
    // build comes back first, as the backup of the new: the other mix.
    await stop(c, "p1");
    await explained(c, ["b1", "a1"], "b1 took over", async () => (await status(c.urls.b1))?.server?.serving === true, TAKEOVER_MS);
    const before = (await arbiterRecord(c)).backupIncarnation;
    await c.start("p1");
    await inSync(c, "b1", "p1", before);
    await lockOnce("new-primary-old-backup");
    // The last node takes the new build.
    await upgradeBackup(c, "p1", "b1", newer);
    assert.equal(diskMarker(c, "p1"), "1.1");
    assert.deepEqual(await formatsOf(c, "p1"), { wire: "1.3", disk: "1.1" });
    await lockOnce("after");
    await held.release();

    assert.deepEqual((await status(c.urls.b1))?.locks.map((l) => l.name), [], "every lock released");
    for (const id of ["p1", "b1", "a1"] as const) {
      const security = (await (await fetch(`${c.urls[id]}/v1/status?summary=1`)).json()).security;
      assert.equal(security?.versionMismatch, undefined, `${id} refused no peer request of the other build`);
    }
  } finally {
    await c.stopAll();
    removeDir(builds);
  }
});

test("another major is refused: a wire 2.0 backup gets version_mismatch from the 1.2 primary, a dataDir marked 2.0 does not start (exit 2)", { timeout: 60_000 }, async () => {
  const builds = tempDir("mutexd-builds-");
  const c = await startCluster([], { durable: true });
  try {
    const major2 = buildWithFormats(join(builds, "v2.0"), "2.0", "1.0");
    c.procs.get("b1")!.kill("SIGTERM");
    await c.procs.get("b1")!.exited;
    await c.start("b1", major2);
    await eventually("a 1.2 node refuses the 2.0 backup's or answers its refusal", async () => {
      const counts = await Promise.all(["p1", "b1"].map(async (id) => (await (await fetch(`${c.urls[id as "p1"]}/v1/status?summary=1`)).json()).security?.versionMismatch ?? 0));
      return counts.some((n) => n > 0);
    }, RESYNC_MS);
    // The log is flushed after the counter moves (cluster/log.ts batches lines): wait for the line.
    const refusalLine = () => [...c.procs.values()].map((p) => p.stderr()).join("\n").split("\n").find((l) => l.includes('"reason":"versionMismatch"'));
    await eventually("the refusal is logged", () => refusalLine() !== undefined, RESYNC_MS);
    const refusal = refusalLine();
    assert.ok(refusal, "the refusal is logged");
    assert.match(refusal, /"theirs":"(1\.2|2\.0)","ours":"(2\.0|1\.2)"/, "naming both versions");
    // Locks keep working at the 1.2 primary: its replication is refused, so it records the 2.0
    // backup out of sync (which then may not take over) and serves alone.
    const lock = await connect({ servers: [c.urls.p1] }).lock("alone", { ttlMs: 10_000 });
    await lock.release();
    await eventually("p1 records the 2.0 backup out of sync", async () => (await status(c.urls.p1))?.server?.backup?.arbiterRecordedInSync === false, OUT_OF_SYNC_MS);

    // On disk: a dataDir marked with a newer major stops the start, naming the file and both versions.
    const dir = join(builds, "disk");
    mkdirSync(join(dir, ".data", "a9"), { recursive: true });
    const file = writeCluster(dir, `[cluster]\ndurable = true\n\n[[nodes]]\nid = "a9"\nrole = "arbiter"\nhttp = "127.0.0.1:1"\n`);
    writeFileSync(join(dir, ".data", "a9", "format.json"), JSON.stringify({ format: "2.0" }));
    const refused = startMutexd(["node", "--config", file, "--id", "a9"]);
    assert.equal(await refused.exited, 2);
    assert.match(refused.stderr(), /node a9 cannot start: .*\.data\/a9\/format\.json has format version 2\.0, this build reads 1\.0/);
  } finally {
    await c.stopAll();
    removeDir(builds);
  }
});

test("rolling upgrade of a ring from the build before the section bound (1.0) to this one (1.2), one node at a time: sections and their writes go on in every mix, nobody refuses a message", { timeout: 180_000 }, async () => {
  const builds = tempDir("mutexd-builds-");
  const ring = await makeRing({ size: 3, udp: true });
  try {
    const older = buildWithFormats(join(builds, "v1.0"), "1.0", "1.0", { beforeSectionBound: true });
    for (const id of ring.ids) await ring.start(id, older);
    await ring.waitTokenEverywhere();
    let count = 0;
    const increment = async () => {
      const section = await ring.clients[0].lock({ waitMs: 30_000 });
      await section.put("counter", String(++count));
      await section.release();
    };
    await increment();
    for (const id of ring.ids) {
      await ring.stop(id, "SIGTERM");
      await ring.start(id);
      await ring.waitTokenEverywhere();
      await increment();
      const statuses = await ring.statuses();
      const formats = statuses.map((s) => s?.formats?.wire);
      const upgraded = ring.ids.slice(0, ring.ids.indexOf(id) + 1);
      assert.deepEqual(formats, ring.ids.map((n) => (upgraded.includes(n) ? "1.2" : "1.0")), `after ${id}: ${ring.logTails()}`);
      for (const [i, s] of statuses.entries()) {
        const refused = (s as { security?: Record<string, number> } | undefined)?.security ?? {};
        // peerMalformed: what a 1.0 node counts for a renewal or promise with a field it does not know.
        assert.deepEqual([refused.versionMismatch, refused.datagramVersionMismatch, refused.peerMalformed], [undefined, undefined, undefined], `${ring.ids[i]} refused nothing of the other build: ${JSON.stringify(refused)}`);
      }
    }
    await eventually("every node reads the last write", async () => {
      const values = await Promise.all(ring.clients.map((client) => client.get("counter").catch(() => undefined)));
      return values.every((v) => v?.value === String(count));
    }, 10_000);
  } finally {
    await ring.remove();
    removeDir(builds);
  }
});
