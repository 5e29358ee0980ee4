/**
 * Real processes: the arbiter's disk replaced by an empty one, and the documented procedure
 * (docs/failover.md, "The arbiter loses its disk"). Started on an empty disk in a cluster that
 * already ran, the arbiter learns from the primary's renewals that its record is behind and
 * decides nothing (the primary serves on its backup's promises); `mutexd arbiter recover` refuses
 * while it answers, and with it stopped writes the record from the lock servers; restarted on
 * it, the arbiter renews the primary in its epoch, and a killed primary is taken over with
 * tokens above every earlier one. At no sampled moment do two servers serve, and no epoch goes
 * back. Every wait is on a condition; the test stops its processes and removes its temp dir.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect } from "../lib/client/lock_client.ts";
import type { ArbiterStatus } from "../cluster/arbiter/server.ts";
import { eventually, startMutexd } from "./_harness.ts";
import { startCluster, status } from "./_lock_cluster.ts";

test("the arbiter's disk replaced by an empty one: it decides nothing until `mutexd arbiter recover`; then epoch and tokens continue, no second primary", { timeout: 90_000 }, async () => {
  const c = await startCluster();
  const client = connect({ servers: [c.urls.p1, c.urls.b1], failoverTimeoutMs: 8_000 });
  const tokens: number[] = [];
  const take = async () => {
    const lock = await client.lock("L", { waitMs: 10_000 });
    tokens.push(lock.token);
    await lock.release();
  };
  // Samples both servers the whole time: never both serving, epochs never back.
  const problems: string[] = [];
  let sampling = true;
  let epochMax = 0;
  const sampler = (async () => {
    for (let i = 0; sampling && i < 10_000; i++) {
      const [p, b] = await Promise.all([status(c.urls.p1, 500), status(c.urls.b1, 500)]);
      if (p?.server?.serving && b?.server?.serving) problems.push(`both serve (epochs ${p.server.epoch}, ${b.server.epoch})`);
      for (const s of [p, b]) {
        if (s?.server?.serving) {
          if (s.server.epoch < epochMax) problems.push(`${s.node.id} serves epoch ${s.server.epoch} after ${epochMax}`);
          epochMax = Math.max(epochMax, s.server.epoch);
        }
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  const arbiterFile = join(c.dir, ".data", "a1", "arbiter.json");
  const arbiterRecord = async () => ((await status(c.urls.a1)) as unknown as ArbiterStatus | undefined)?.arbiter;
  try {
    await take();
    assert.ok(existsSync(arbiterFile), `the arbiter keeps its record at ${arbiterFile}`);
    const before = JSON.parse(readFileSync(arbiterFile, "utf8"));

    // The disk is lost: the arbiter comes back on an empty one.
    c.procs.get("a1")!.kill("SIGKILL");
    await c.procs.get("a1")!.exited;
    rmSync(join(c.dir, ".data", "a1"), { recursive: true, force: true });
    await c.start("a1");
    await eventually("the empty arbiter learns from the renewals that its record is behind", async () => {
      const r = await arbiterRecord();
      return r?.epoch === 0 && r.behindEpoch === before.epoch;
    });
    await take(); // the primary serves on its backup's promises
    const shown = startMutexd(["status", "--config", c.file]);
    assert.equal(await shown.exited, 0, shown.stderr());
    assert.match(shown.stdout(), new RegExp(`its record is behind epoch ${before.epoch}: run mutexd arbiter recover`), shown.stdout());
    assert.equal((await status(c.urls.p1))?.server?.epoch, before.epoch, "no new epoch");

    // The procedure: refused while the arbiter answers; with it stopped, the record is written.
    const early = startMutexd(["arbiter", "recover", "--config", c.file, "--id", "a1"]);
    assert.equal(await early.exited, 5, early.stderr());
    assert.match(early.stderr(), /a1 answers: stop it first/);
    c.procs.get("a1")!.kill("SIGKILL");
    await c.procs.get("a1")!.exited;
    // Not into a dataDir of another major disk format (docs/deploy.md, "Upgrades and format versions").
    const marker = join(c.dir, ".data", "a1", "format.json");
    const markerText = readFileSync(marker, "utf8");
    writeFileSync(marker, JSON.stringify({ format: "2.0" }));
    const otherMajor = startMutexd(["arbiter", "recover", "--config", c.file, "--id", "a1"]);
    assert.equal(await otherMajor.exited, 2, otherMajor.stderr());
    assert.match(otherMajor.stderr(), /not recovered: .*format\.json has format version 2\.0, this build reads 1\.0/);
    writeFileSync(marker, markerText);
    const recover = startMutexd(["arbiter", "recover", "--config", c.file, "--id", "a1"]);
    assert.equal(await recover.exited, 0, recover.stderr());
    const written = JSON.parse(readFileSync(arbiterFile, "utf8"));
    assert.equal(written.epoch, before.epoch);
    assert.equal(written.primary, "p1");
    assert.equal(written.backupInSync, true, "the primary counts its backup in sync (it holds every committed change)");
    assert.ok(written.tokenCeiling >= Math.max(...tokens) && written.tokenCeiling >= before.tokenCeiling, JSON.stringify(written));
    assert.ok(written.ttlMaxMs >= before.ttlMaxMs, JSON.stringify(written));

    await c.start("a1");
    await eventually("the arbiter renews the primary again", async () => {
      const s = await status(c.urls.p1) as { server?: { leaseSupport?: { arbiterRemainingMs: number } | null } } | undefined;
      return (s?.server?.leaseSupport?.arbiterRemainingMs ?? 0) > 0;
    });
    c.procs.get("p1")!.kill("SIGKILL");
    await eventually("b1 takes over in the next epoch", async () => {
      const s = await status(c.urls.b1);
      return s?.server?.serving === true && s.server.epoch === before.epoch + 1;
    }, 20_000);
    await take();
    for (let i = 1; i < tokens.length; i++) assert.ok(tokens[i] > tokens[i - 1], `tokens rise: ${tokens.join(", ")}`);
    sampling = false;
    await sampler;
    assert.deepEqual(problems, []);
  } finally {
    sampling = false;
    await sampler;
    await c.stopAll();
  }
});
