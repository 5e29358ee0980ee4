/**
 * The ring as real processes on loopback: `mutexd node` per ring node, clients on different
 * nodes running read-add-write critical sections, and a full restart of every node.
 *
 * Five clients run 20 sections each. Four drive the ring through the TypeScript client in this
 * process (each mutexd start costs 100-300 ms, and the suite runs on two cores); the fifth uses
 * the real CLI: `mutexd ring lock -- sh -c 'v=$(mutexd ring get counter); mutexd ring put …'`.
 * Waits are bounded by the ring's own settings (QUICK_RING_SETTINGS) plus a named slack; each
 * test stops its nodes and removes its temp dir. The counter scenario's sections get a lease that
 * covers their work with that slack (SECTION_LEASE_MS), not QUICK_RING_SETTINGS' 3 s.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";
import type { RingClient } from "../lib/client/ring_client.ts";
import { eventually, startMutexd, writeMutexdWrapper } from "./_harness.ts";
import {
  committedLog,
  RING,
  type RingCluster,
  ringSettings,
  roundMs,
  settingsLines,
  SLACK_MS,
  startRing,
  tokenEverywhereMs,
  unknownTokenWaitMs,
} from "./_ring_cluster.ts";

const SECTIONS_PER_CLIENT = 20;
// Bun's node:test ignores bunfig's timeout (5 s default): each test names its own bound.
const CLIENTS = 5;
/**
 * The counter scenario's sections last as long as their work, which a loaded machine stretches;
 * what is asserted is their mutual exclusion and order, so neither their lease nor the others'
 * wait for the token may end them on machine speed alone:
 * - the lease: a section's work is two steps (the CLI client's two mutexd starts, `ring get` and
 *   `ring put`; a TypeScript client's read and write around the ring), each given the harness's
 *   room for one process start on the shared cores (SLACK_MS). QUICK_RING_SETTINGS' 3 s did not
 *   hold two starts under Deno at load 10+ (`ring lock` exited 4, a TypeScript client's write
 *   found its section lost).
 * - tokenLossMs: the other members see no token while a section runs; after tokenLossMs they ask,
 *   and take the token for lost if its holder does not answer within viewPromiseWaitMs (100 ms),
 *   which a holder starting processes at load 17 missed (a view change ended its section). They
 *   ask only once a section could have run its whole lease, and a process start's slack more.
 * Both only make a new view's grant wait longer (the restart below waits it out); no token is lost
 * here (the full restart brings the ring back by a view change of its own).
 */
const SECTION_LEASE_MS = 2 * SLACK_MS;
const COUNTER_SETTINGS = [
  `ringLeaseMs = ${SECTION_LEASE_MS}`,
  `ringLeaseMaxMs = ${SECTION_LEASE_MS}`,
  `tokenLossMs = ${SECTION_LEASE_MS + SLACK_MS}`,
];
const COUNTER_RING = ringSettings(settingsLines(COUNTER_SETTINGS));

/** One client: `count` sections on `client`'s node, each reading the counter and adding one. */
async function tsClient(client: RingClient, count: number): Promise<number[]> {
  const fences: number[] = [];
  for (let i = 0; i < count; i++) {
    await using section = await client.lock({ waitMs: 60_000 });
    const value = Number((await section.get("counter")) ?? "0");
    await section.put("counter", String(value + 1));
    fences.push(section.token);
  }
  return fences;
}

/** The same through the CLI: `mutexd ring lock -- sh -c '… mutexd ring get/put …'`. */
async function cliClient(ring: RingCluster, bin: string, nodeIndex: number, count: number): Promise<void> {
  const env = { PATH: `${bin}:${process.env.PATH}` };
  const body = 'v=$(mutexd ring get counter 2>/dev/null || echo 0); mutexd ring put counter $((v + 1)) >/dev/null';
  for (let i = 0; i < count; i++) {
    const proc = startMutexd(["ring", "lock", "--config", ring.file, "--id", ring.ids[nodeIndex], "--wait", "60s", "--", "sh", "-c", body], { env });
    const code = await proc.exited;
    assert.equal(code, 0, `ring lock exited ${code}: ${proc.stderr()}`);
  }
}

async function everyNodeReads(ring: RingCluster, expected: string): Promise<void> {
  // A committed write reaches every node within about two rounds (the write, then the commit
  // watermark on the token); after a restart, the token must first be regenerated.
  await eventually(`every node reads counter = ${expected}`, async () => {
    const values = await Promise.all(ring.clients.map((c) => c.get("counter").catch(() => undefined)));
    return values.every((v) => v?.value === expected);
  }, tokenEverywhereMs(ring.ids.length, COUNTER_RING) + unknownTokenWaitMs(COUNTER_RING) + roundMs(ring.ids.length, COUNTER_RING));
}

async function runCounterScenario(size: number): Promise<void> {
  const ring = await startRing({ size, settings: COUNTER_SETTINGS });
  try {
    const bin = writeMutexdWrapper(ring.dir);
    // Clients on different nodes (wrapping around when there are fewer nodes than clients).
    const runs: Promise<unknown>[] = [];
    for (let c = 0; c < CLIENTS - 1; c++) runs.push(tsClient(ring.clients[c % size], SECTIONS_PER_CLIENT));
    runs.push(cliClient(ring, bin, (CLIENTS - 1) % size, SECTIONS_PER_CLIENT));
    const results = await Promise.all(runs);

    const fences = results.slice(0, CLIENTS - 1).flat() as number[];
    assert.equal(new Set(fences).size, fences.length, "every section has its own fencing token");
    await everyNodeReads(ring, String(CLIENTS * SECTIONS_PER_CLIENT));

    // Writes from every node, in the same order on every node.
    const logs = await Promise.all(ring.clients.map(committedLog));
    assert.equal(logs[0].length, CLIENTS * SECTIONS_PER_CLIENT);
    for (const log of logs) assert.deepEqual(log, logs[0]);
    const authors = new Set(logs[0].map((e) => e.author));
    assert.deepEqual([...authors].sort(), [...ring.ids].sort(), "every node wrote");
    const values = logs[0].map((e) => Number((e.op as { value: string }).value));
    assert.deepEqual(values, values.map((_, i) => i + 1), "each section saw the one before it");

    // A full restart (kill -9 of every node) keeps every committed write, and the ring runs on.
    const fenceBefore = Math.max(...(await Promise.all(ring.clients.map((c) => c.status()))).map((s) => s.fenceMax));
    await ring.stopAll("SIGKILL");
    await ring.startAll();
    await everyNodeReads(ring, String(CLIENTS * SECTIONS_PER_CLIENT));
    const after = await Promise.all(ring.clients.map(committedLog));
    for (const log of after) assert.deepEqual(log, logs[0]);
    const section = await ring.clients[size - 1].lock({ waitMs: 30_000 });
    assert.ok(section.token > fenceBefore, `fencing tokens grow across the restart (${section.token} > ${fenceBefore})`);
    await section.put("counter", String(CLIENTS * SECTIONS_PER_CLIENT + 1));
    await section.release();
    await everyNodeReads(ring, String(CLIENTS * SECTIONS_PER_CLIENT + 1));
  } finally {
    await ring.remove();
  }
}

test("3 ring nodes: 5 clients × 20 read-add-write sections end at 100 on every node, same order everywhere, kept over a full restart", { timeout: 120_000 }, async () => {
  await runCounterScenario(3);
});

test("5 ring nodes: 5 clients × 20 read-add-write sections end at 100 on every node, same order everywhere, kept over a full restart", { timeout: 120_000 }, async () => {
  await runCounterScenario(5);
});

test("ring lock: a command outliving its lease is stopped and mutexd exits 4", { timeout: 60_000 }, async () => {
  const ring = await startRing({ size: 3 });
  try {
    const proc = startMutexd(["ring", "lock", "--server", ring.urls[1], "--lease", "400ms", "--grace", "200ms", "--", "sleep", "30"]);
    assert.equal(await proc.exited, 4);
    assert.match(proc.stderr(), /lease ended/);
    const ok = startMutexd(["ring", "lock", "--server", ring.urls[1], "--", "sh", "-c", "test -n \"$MUTEXD_TOKEN\" && exit 7"]);
    assert.equal(await ok.exited, 7, "the command's status passes through");
  } finally {
    await ring.remove();
  }
});


test("token lease: a node cut off from the majority (the other two of 3 killed -9) grants nothing and its status and health say minority", { timeout: 60_000 }, async () => {
  const ring = await startRing({ size: 3 });
  try {
    const before = await ring.clients[2].lock({ waitMs: 10_000 });
    await before.release();
    for (const id of ["r1", "r2"]) await ring.stop(id, "SIGKILL");
    // The token may rest at r3 (its client was the last to leave) inside a lease the majority
    // backed before the kill: granting in it is safe (no view can form before it ends), so wait
    // it out first.
    await eventually("r3's lease from before the kill ended", async () => (await ring.clients[2].status()).leaseValidUntilMs === null, SLACK_MS + RING.tokenLeaseMs);
    // Whether the token is at r3 or died with r1/r2: r3 must grant nothing. Its waiter makes it
    // renew; nobody answers, so the renewal fails after viewChangeTimeoutMs. The client waits
    // that long and a lease more (one r3 may have had at the kill).
    await assert.rejects(ring.clients[2].lock({ waitMs: RING.viewChangeTimeoutMs + RING.tokenLeaseMs }), "not granted in a minority");
    await eventually("r3's status says minority", async () => (await ring.clients[2].status()).lease?.quorum === "lost", SLACK_MS);
    const status = await ring.clients[2].status();
    assert.equal(status.lease.validUntilMs, null, "no valid lease");
    // The health endpoint says so too (still 200: the process is up).
    const health = await (await fetch(`${ring.urls[2]}/v1/health`)).json() as { ok: boolean; ring: { serving: boolean; quorum: string; reason?: string } };
    assert.equal(health.ok, true);
    assert.deepEqual([health.ring.serving, health.ring.quorum], [false, "lost"], `health: ${JSON.stringify(health)}`);
    assert.ok(health.ring.reason, "with the reason");
  } finally {
    await ring.remove();
  }
});
