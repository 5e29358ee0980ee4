/**
 * Real processes: the lock service has no single point of failure. The arbiter is killed -9,
 * paused or restarted while clients take locks: the primary goes on serving on its backup's
 * promises, no acquire fails, sessions and held locks survive; and with the arbiter back, a
 * primary killed -9 is still taken over by the backup. Bounds come from the settings, and every
 * wait is on a condition.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "../lib/client/lock_client.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { eventually, startMutexd } from "./_harness.ts";
import { type Cluster, startCluster, status } from "./_lock_cluster.ts";

const S = DEFAULT_SETTINGS;

interface LeaseSupport {
  arbiterRemainingMs: number;
  backupRemainingMs: number;
}

async function leaseSupport(url: string): Promise<LeaseSupport | undefined> {
  const s = (await status(url)) as { server?: { leaseSupport?: LeaseSupport | null } } | undefined;
  return s?.server?.leaseSupport ?? undefined;
}

/** Clients taking and releasing locks in a loop until stopped; every grant and failure counted. */
function workload(c: Cluster, clients: number) {
  const servers = [c.urls.p1, c.urls.b1];
  const grants: Array<{ name: string; token: number; atMs: number }> = [];
  const failures: string[] = [];
  let running = true;
  const loops = Array.from({ length: clients }, async (_, i) => {
    const client = connect({ servers, failoverTimeoutMs: 8_000 });
    // Bounded: stops when told, and at most 10,000 rounds per client.
    for (let round = 0; running && round < 10_000; round++) {
      const name = `w${(i + round) % 3}`;
      try {
        const lock = await client.lock(name, { ttlMs: S.sessionTtlMinMs, waitMs: 10_000 });
        grants.push({ name, token: lock.token, atMs: Date.now() });
        await lock.release();
      } catch (error) {
        failures.push(`${name}: ${(error as Error).message}`);
      }
    }
  });
  return {
    grants,
    failures,
    grantsSince: (atMs: number) => grants.filter((g) => g.atMs >= atMs).length,
    async stop() {
      running = false;
      await Promise.all(loops);
    },
  };
}

function assertTokensRise(grants: Array<{ name: string; token: number }>): void {
  const last = new Map<string, number>();
  for (const g of grants) {
    assert.ok(g.token > (last.get(g.name) ?? 0), `${g.name}: token ${g.token} after ${last.get(g.name)}`);
    last.set(g.name, g.token);
  }
}

test("no single point of failure: the arbiter killed -9 under load costs no acquire; with it restarted, a killed primary is still taken over", { timeout: 90_000 }, async () => {
  const c = await startCluster();
  const work = workload(c, 4);
  try {
    await eventually("the workload runs", () => work.grants.length >= 20, 20_000);
    c.procs.get("a1")!.kill("SIGKILL");
    const killedAtMs = Date.now();
    // Long enough that the arbiter's lease has lapsed and only the backup's promises carry p1.
    await eventually("p1 serves on the backup's promises alone, and clients are granted", async () => {
      const support = await leaseSupport(c.urls.p1);
      return support?.arbiterRemainingMs === 0 && support.backupRemainingMs > 0 && work.grantsSince(killedAtMs) >= 50;
    }, 20_000);
    assert.deepEqual(work.failures, [], "no acquire failed while the arbiter was down");
    assert.equal((await status(c.urls.b1))?.server?.role, "backup", "no takeover");
    // `mutexd status` says who backs the lease: the backup alone, the arbiter unreachable.
    const shown = startMutexd(["status", "--config", c.file]);
    assert.equal(await shown.exited, 0, shown.stderr());
    assert.match(shown.stdout(), /^p1 .* primary .* yes .*\(backup \d+ms\)/m, shown.stdout());
    assert.match(shown.stdout(), /^b1 .* backup .* promised \d+ms/m, shown.stdout());
    assert.match(shown.stdout(), /ARBITER .*unreachable/, shown.stdout());

    await c.start("a1");
    await eventually("the arbiter's lease is back", async () => ((await leaseSupport(c.urls.p1))?.arbiterRemainingMs ?? 0) > 0, 10_000);
    assert.equal((await status(c.urls.p1))?.server?.epoch, 1, "the restarted arbiter kept the epoch");

    c.procs.get("p1")!.kill("SIGKILL");
    const takeoverAtMs = Date.now();
    await eventually("b1 took over in epoch 2 and clients are granted there", async () => {
      const s = await status(c.urls.b1);
      return s?.server?.serving === true && s.server.epoch === 2 && work.grantsSince(takeoverAtMs) >= 20;
    }, 20_000);
    await work.stop();
    // The clients' retries cover the takeover: failoverTimeoutMs is well above a takeover.
    assert.deepEqual(work.failures, [], "no acquire failed across the takeover either");
    assertTokensRise(work.grants);
  } finally {
    await work.stop();
    await c.stopAll();
  }
});

test("no single point of failure: the arbiter paused for twice the session TTL: sessions, a held lock and every acquire survive", { timeout: 60_000 }, async () => {
  const c = await startCluster();
  const work = workload(c, 2);
  try {
    const holder = connect({ servers: [c.urls.p1, c.urls.b1] });
    const held = await holder.lock("held", { ttlMs: S.sessionTtlMinMs });
    await eventually("the workload runs", () => work.grants.length >= 10, 20_000);
    const a1 = c.procs.get("a1")!;
    a1.kill("SIGSTOP");
    const pausedAtMs = Date.now();
    // The property is about a duration: an outage longer than every session's TTL.
    await eventually("the arbiter has been paused for twice the session TTL", () => Date.now() - pausedAtMs > 2 * S.sessionTtlMinMs, 20_000);
    a1.kill("SIGCONT");
    await eventually("the arbiter's lease is back", async () => ((await leaseSupport(c.urls.p1))?.arbiterRemainingMs ?? 0) > 0, 10_000);
    assert.ok(!held.signal.aborted, "the held lock was never lost");
    const table = await status(c.urls.p1);
    assert.equal(table?.locks.find((l) => l.name === "held")?.holders[0].token, held.token, "still held with its token");
    await held.release();
    await work.stop();
    assert.deepEqual(work.failures, [], "no acquire failed while the arbiter was paused");
    assert.ok(work.grants.filter((g) => g.atMs > pausedAtMs && g.atMs < pausedAtMs + 2 * S.sessionTtlMinMs).length > 0, "grants went on during the pause");
    assertTokensRise(work.grants);
  } finally {
    await work.stop();
    await c.stopAll();
  }
});

test("no single point of failure: the arbiter killed -9 for longer than the session TTL, then restarted: no session expires, the holders keep their locks", { timeout: 60_000 }, async () => {
  const c = await startCluster();
  try {
    const holder = connect({ servers: [c.urls.p1, c.urls.b1] });
    const held = await holder.lock("held", { ttlMs: S.sessionTtlMinMs });
    const idle = await holder.openSession({ ttlMs: S.sessionTtlMinMs });
    c.procs.get("a1")!.kill("SIGKILL");
    await c.procs.get("a1")!.exited;
    const killedAtMs = Date.now();
    // The property is about a duration: an outage longer than every session's TTL.
    await eventually("the arbiter has been down for twice the session TTL", () => Date.now() - killedAtMs > 2 * S.sessionTtlMinMs, 20_000);
    await c.start("a1");
    const backAtMs = Date.now();
    await eventually("the arbiter's lease is back", async () => ((await leaseSupport(c.urls.p1))?.arbiterRemainingMs ?? 0) > 0, 10_000);
    // The finding: the sessions expired when the arbiter came back. Wait out a whole TTL after it.
    await eventually("a session TTL has passed since the arbiter came back", () => Date.now() - backAtMs > S.sessionTtlMinMs, 20_000);
    assert.ok(!held.signal.aborted && !idle.signal.aborted, "no session was lost on the client");
    const table = await status(c.urls.p1);
    assert.equal(table?.server?.epoch, 1, "no takeover: the restarted arbiter kept the epoch");
    assert.deepEqual(table?.sessions.map((s) => s.session).sort(), [held.session.id, idle.id].sort(), "both sessions are still open");
    assert.equal(table?.locks.find((l) => l.name === "held")?.holders[0].token, held.token, "still held with its token");
    assert.doesNotMatch(c.procs.get("p1")!.stderr(), /"event":"sessionExpired"/, "the primary expired no session");
    await held.release();
    await idle.close();
  } finally {
    await c.stopAll();
  }
});
