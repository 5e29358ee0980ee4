/**
 * Real processes: a primary, a backup and an arbiter started with `mutexd node`, killed with
 * SIGKILL or paused with SIGSTOP as real failures would. Clients are the TypeScript client,
 * in this process, recording a history that is checked afterwards (Jepsen-style): counters
 * exact, fencing tokens strictly increasing per lock, no two servers serving at one moment.
 * Time bounds come from the settings (DEFAULT_SETTINGS: leases, silences, timeouts) plus a
 * named slack for two shared cores; they are correctness bounds, not speed targets (see
 * docs/bench.md). Each test stops its processes and removes its temp dir.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect } from "../lib/client/lock_client.ts";
import { DEFAULT_SETTINGS as S } from "../lib/settings.ts";
import { eventually, type Proc, sleep } from "./_harness.ts";
import { startCluster, status } from "./_lock_cluster.ts";

/**
 * Room for scheduling: these processes share two cores with the rest of the suite. Added to
 * each bound below; a bound missed by more than this is a finding, not load.
 */
const SLACK_MS = 2_000;
/**
 * The backup hears nothing for primarySilenceMs, waits out the arbiter's lease and its own last
 * promise (they run side by side), one claim may time out.
 */
const TAKEOVER_MS = S.primarySilenceMs + Math.max(S.primaryLeaseMs, S.backupLeaseMs) + S.peerTimeoutMs + SLACK_MS;
/** The primary stops waiting for acks after replicationTimeoutMs and tells the arbiter at a renewal. */
const OUT_OF_SYNC_MS = S.replicationTimeoutMs + S.leaseRenewMs + S.peerTimeoutMs + SLACK_MS;
/** A returning backup syncs (one request) and is reported in sync at the next renewal. */
const RESYNC_MS = S.peerTimeoutMs + S.leaseRenewMs + S.primarySilenceMs + SLACK_MS;

/**
 * Resolves when this process issues a fetch to `base` (globalThis.fetch wrapped until then):
 * the event a test waits on instead of sleeping "long enough" for a client to ask a server.
 */
function fetchIssuedTo(base: string): Promise<void> {
  const original = globalThis.fetch;
  return new Promise((resolve) => {
    globalThis.fetch = ((input: RequestInfo | URL, init?: RequestInit) => {
      const url = input instanceof Request ? input.url : String(input);
      if (url.startsWith(base)) {
        globalThis.fetch = original;
        resolve();
      }
      return original(input, init);
    }) as typeof fetch;
  });
}

/** The grant lines are debug lines (cluster/log.ts): the tests that read them run their nodes at debug. */
const DEBUG_LOG = { clusterLines: ['logLevel = "debug"'] };

function grantEvents(proc: Proc): Array<{ epoch: number; token: number }> {
  return proc.stderr().split("\n").filter((l) => l.includes('"event":"granted"')).map((l) => JSON.parse(l));
}

test("failover: 10 clients on 5 locks, primary killed -9 mid-run: counters exact, tokens rise per lock, a lock held across the takeover is released normally", { timeout: 60_000 }, async () => {
  const c = await startCluster();
  try {
    const servers = [c.urls.p1, c.urls.b1];
    const locks = ["l0", "l1", "l2", "l3", "l4"];
    for (const name of locks) {
      writeFileSync(join(c.dir, `${name}.counter`), "0");
      writeFileSync(join(c.dir, `${name}.fence`), "0");
    }
    const violations: string[] = [];
    let increments = 0;
    let failures = 0;
    const errors: string[] = [];
    // The resource: it rejects a write whose fencing token is not above the last one it saw.
    const guardedIncrement = (name: string, token: number) => {
      const fence = Number(readFileSync(join(c.dir, `${name}.fence`), "utf8"));
      if (token <= fence) violations.push(`${name}: token ${token} after ${fence}`);
      const counter = Number(readFileSync(join(c.dir, `${name}.counter`), "utf8"));
      writeFileSync(join(c.dir, `${name}.counter`), String(counter + 1));
      writeFileSync(join(c.dir, `${name}.fence`), String(token));
      increments += 1;
    };
    // One client holds a lock across the takeover, then releases it at the new primary.
    const holder = connect({ servers });
    const held = await holder.lock("held", { ttlMs: 3_000, waitMs: 5_000 });
    const opsPerClient = 12;
    const worker = async (id: number) => {
      const client = connect({ servers, failoverTimeoutMs: 8_000 });
      for (let op = 0; op < opsPerClient; op++) {
        const name = locks[(id + op) % locks.length];
        try {
          const lock = await client.lock(name, { ttlMs: 3_000, waitMs: 15_000 });
          try {
            guardedIncrement(name, lock.token);
            await sleep(5);
          } finally {
            await lock.release();
          }
        } catch (error) {
          failures += 1; // an operation that failed before its write did not count
          errors.push(String(error));
        }
      }
    };
    const running = Promise.all(Array.from({ length: 10 }, (_, i) => worker(i)));
    await eventually("a third of the operations are done", () => increments >= 40, 30_000);
    c.procs.get("p1")!.kill("SIGKILL");
    await running;
    const counted = locks.reduce((sum, name) => sum + Number(readFileSync(join(c.dir, `${name}.counter`), "utf8")), 0);
    assert.equal(counted, increments, "every increment done under a lock is in the counters: none lost or doubled");
    assert.deepEqual(violations, [], "fencing tokens strictly increase per lock");
    assert.ok(increments >= 100, `grants resumed after the takeover (${increments} of 120 done, ${failures} failed: ${errors.slice(0, 5)})`);
    const after = await status(c.urls.b1);
    assert.equal(after?.server?.role, "primary");
    assert.equal(after?.server?.epoch, 2);
    assert.ok(!held.signal.aborted, "the lock held across the takeover was not lost");
    // The session's secret hash came with the replicated open (issue 12): at the new primary the
    // session id and token alone leave nothing; the holder's own leave, with its secret, works.
    const outsider = await fetch(`${c.urls.b1}/v1/leave`, { method: "POST", body: JSON.stringify({ name: "held", session: held.session.id, token: held.token }) });
    assert.equal(outsider.status, 403, "a leave without the session's secret is refused at the new primary");
    await outsider.body?.cancel();
    await held.release(); // leave at the new primary with the old token and the secret: accepted
    assert.equal(after?.locks.find((l) => l.name === "held")?.holders[0].token, held.token);
    assert.equal((await status(c.urls.b1))?.locks.find((l) => l.name === "held"), undefined, "released");
  } finally {
    await c.stopAll();
  }
});

test("failover: the backup killed -9 and restarted catches up, counts as in sync again, and can take over", { timeout: 60_000 }, async () => {
  const c = await startCluster();
  try {
    const client = connect({ servers: [c.urls.p1, c.urls.b1] });
    const before = await client.lock("before", { ttlMs: 10_000 });
    c.procs.get("b1")!.kill("SIGKILL");
    await eventually("p1 records b1 out of sync", async () => (await status(c.urls.p1))?.server?.backup?.mode === "outOfSync", OUT_OF_SYNC_MS);
    const during = await client.lock("during", { ttlMs: 10_000 }); // committed with p1 alone
    await c.start("b1");
    // Only a backup the arbiter has recorded in sync may take over.
    await eventually("b1 is in sync again", async () => (await status(c.urls.p1))?.server?.backup?.arbiterRecordedInSync === true, RESYNC_MS);
    const copy = await status(c.urls.b1);
    assert.deepEqual(copy?.locks.map((l) => [l.name, l.holders[0].token]).sort(), [["before", before.token], ["during", during.token]].sort());
    c.procs.get("p1")!.kill("SIGKILL");
    await eventually("b1 took over", async () => (await status(c.urls.b1))?.server?.serving === true, TAKEOVER_MS);
    const after = await client.lock("after", { ttlMs: 10_000 });
    assert.ok(after.token > during.token);
    await during.release();
    await before.release();
  } finally {
    await c.stopAll();
  }
});

test("failover: backup paused (cut off from the primary): the primary goes on alone, at no moment do both serve, the backup resyncs", { timeout: 60_000 }, async () => {
  const c = await startCluster([], DEBUG_LOG);
  try {
    const client = connect({ servers: [c.urls.p1, c.urls.b1] });
    const samples: Array<[boolean, boolean]> = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        // A paused server does not answer: it cannot serve either; short timeouts keep sampling.
        const [p, b] = await Promise.all([status(c.urls.p1, 150), status(c.urls.b1, 150)]);
        samples.push([p?.server?.serving === true, b?.server?.serving === true]);
        await sleep(20);
      }
    })();
    const tokens: number[] = [];
    c.procs.get("b1")!.kill("SIGSTOP");
    const [pausedAtMs, samplesBefore] = [Date.now(), samples.length];
    for (let i = 0; i < 15; i++) {
      const lock = await client.lock("x", { ttlMs: 5_000, waitMs: 5_000 });
      tokens.push(lock.token);
      await lock.release();
    }
    // The pause lasted until the primary went on alone (not "long enough" by a sleep).
    await eventually("p1 records b1 out of sync", async () => (await status(c.urls.p1))?.server?.backup?.mode === "outOfSync", OUT_OF_SYNC_MS);
    // The fault's length is the point here, not a stand-in for a condition: paused past the
    // primary's silence and lease, the resumed backup has every reason to claim (and must be refused).
    await sleep(Math.max(0, pausedAtMs + S.primarySilenceMs + S.primaryLeaseMs - Date.now()));
    await eventually("the sampler looked at the pair during the pause", () => samples.length - samplesBefore >= 5, SLACK_MS);
    c.procs.get("b1")!.kill("SIGCONT");
    await eventually("b1 is in sync again", async () => (await status(c.urls.p1))?.server?.backup?.mode === "inSync", RESYNC_MS);
    for (let i = 0; i < 3; i++) {
      const lock = await client.lock("x", { ttlMs: 5_000, waitMs: 5_000 });
      tokens.push(lock.token);
      await lock.release();
    }
    sampling = false;
    await sampler;
    assert.ok(samples.length > 5, `sampled ${samples.length} times`);
    assert.equal(samples.filter(([p, b]) => p && b).length, 0, "never both serving");
    assert.equal(samples.filter(([, b]) => b).length, 0, "the cut-off backup never served");
    for (let i = 1; i < tokens.length; i++) assert.ok(tokens[i] > tokens[i - 1]);
    assert.equal(grantEvents(c.procs.get("b1")!).length, 0, "the backup granted nothing");
  } finally {
    await c.stopAll();
  }
});

test("failover: the primary paused past its lease grants nothing in the old epoch once resumed and becomes a backup", { timeout: 60_000 }, async () => {
  const c = await startCluster([], DEBUG_LOG);
  try {
    const client = connect({ servers: [c.urls.p1, c.urls.b1], failoverTimeoutMs: 8_000 });
    const first = await client.lock("x", { ttlMs: 5_000 });
    await first.release();
    const p1 = c.procs.get("p1")!;
    // The first grant's log line may come after its answer: count the grants before the pause only
    // once it is in p1's log (else it counts as a grant after the pause: a race, not a defect).
    await eventually("p1 logged the first grant", () => grantEvents(p1).some((g) => String(g.token) === String(first.token)), TAKEOVER_MS);
    const grantsBefore = grantEvents(p1).length;
    p1.kill("SIGSTOP");
    await eventually("b1 took over", async () => (await status(c.urls.b1))?.server?.serving === true, TAKEOVER_MS);
    const second = await client.lock("x", { ttlMs: 5_000 });
    // Resume the old primary while a client asks it first for the lock.
    const askedP1 = fetchIssuedTo(`${c.urls.p1}/v1/sessions`); // the third client's first call
    const third = connect({ servers: [c.urls.p1, c.urls.b1], failoverTimeoutMs: 8_000 }).lock("x", { ttlMs: 5_000, waitMs: 10_000 });
    await askedP1;
    p1.kill("SIGCONT");
    await eventually("p1 became a backup in epoch 2", async () => {
      const s = await status(c.urls.p1);
      return s?.server?.role === "backup" && s.server.epoch === 2;
    }, TAKEOVER_MS);
    await second.release();
    const thirdLock = await third;
    assert.ok(thirdLock.token > second.token && second.token > first.token);
    await thirdLock.release();
    assert.equal(grantEvents(p1).length, grantsBefore, "no grant by the old primary after its pause");
    assert.ok(grantEvents(c.procs.get("b1")!).every((g) => g.epoch === 2), "every grant of b1 is in epoch 2");
    assert.ok(existsSync(c.file));
  } finally {
    await c.stopAll();
  }
});

test("failover: the backup answers a lock request 421 not_primary with the primary's id, epoch and URL, and changes nothing", { timeout: 60_000 }, async () => {
  const c = await startCluster();
  try {
    const before = await status(c.urls.b1);
    for (const [path, body] of [["/v1/sessions", { ttlMs: 5_000 }], ["/v1/enter", { name: "L", session: "s" }]] as const) {
      const response = await fetch(`${c.urls.b1}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
      assert.equal(response.status, 421, path);
      const { error } = await response.json();
      assert.deepEqual({ code: error.code, primary: error.primary, epoch: error.epoch, primaryUrl: error.primaryUrl }, {
        code: "not_primary",
        primary: "p1",
        epoch: 1,
        primaryUrl: c.urls.p1,
      }, path);
      assert.equal(typeof error.message, "string");
    }
    assert.equal((await fetch(`${c.urls.b1}/v1/health`).then((r) => r.json())).ok, true, "health is answered by every server");
    const after = await status(c.urls.b1);
    assert.deepEqual([after?.sessions, after?.locks], [before?.sessions, before?.locks], "the backup's copy is unchanged");
    // The hint works: a client given only the backup first lands on the primary.
    const lock = await connect({ servers: [c.urls.b1, c.urls.p1] }).lock("L", { ttlMs: 5_000 });
    assert.equal((await status(c.urls.p1))?.locks.find((l) => l.name === "L")?.holders[0].token, lock.token);
    await lock.release();
  } finally {
    await c.stopAll();
  }
});

test("failover: a restarted arbiter reloads its state file: the epoch and record of a takeover survive a kill -9", { timeout: 60_000 }, async () => {
  const c = await startCluster();
  try {
    c.procs.get("p1")!.kill("SIGKILL");
    await eventually("b1 took over in epoch 2", async () => (await status(c.urls.b1))?.server?.epoch === 2, TAKEOVER_MS);
    const arbiterRecord = async () => {
      const response = await fetch(`${c.urls.a1}/v1/status`);
      const { arbiter } = await response.json();
      return { epoch: arbiter.epoch, primary: arbiter.primary, backup: arbiter.backup };
    };
    const recorded = await arbiterRecord();
    assert.deepEqual(recorded, { epoch: 2, primary: "b1", backup: "p1" });
    const file = join(c.dir, ".data", "a1", "arbiter.json");
    assert.equal(JSON.parse(readFileSync(file, "utf8")).epoch, 2, "written to its state file");
    const a1 = c.procs.get("a1")!;
    a1.kill("SIGKILL");
    await a1.exited;
    await c.start("a1");
    // A fresh arbiter would start at epoch 0 and could reach at most epoch 1 with one claim.
    assert.deepEqual(await arbiterRecord(), recorded, "the record after the restart");
    assert.match(c.procs.get("a1")!.stderr(), /"event":"restored".*"epoch":2/);
    // b1's renewals in epoch 2 are accepted: it keeps serving and grants.
    const lock = await connect({ servers: [c.urls.b1] }).lock("after-restart", { ttlMs: 5_000 });
    const after = await status(c.urls.b1);
    assert.deepEqual([after?.server?.role, after?.server?.epoch, after?.server?.serving], ["primary", 2, true]);
    assert.deepEqual(await arbiterRecord(), recorded, "no new epoch");
    await lock.release();
  } finally {
    await c.stopAll();
  }
});
