/**
 * The attacks of issue 12 on peer traffic, against real processes on loopback whose cluster
 * file has a secret (TEST_SECRET, the shared helpers' default): an outsider who can reach the
 * peer routes but does not know the secret, and a replay of a genuine peer message. Each test
 * says what the same request did on commit 2c9c5fa (before peer authentication), where it
 * succeeded, so each fails there. Each stops its processes and removes its temp dir.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "../lib/client/lock_client.ts";
import { DEFAULT_SETTINGS as S } from "../lib/settings.ts";
import { PEER_HEADER } from "../cluster/peer_head.ts";
import { peerKey } from "../cluster/peer_mac.ts";
import { PeerSigner } from "../cluster/peer_signer.ts";
import { encodePeerBody, PEER_CONTENT_TYPE } from "../cluster/peer_transport.ts";
import { eventually, TEST_SECRET } from "./_harness.ts";
import { startCluster, status } from "./_lock_cluster.ts";
import { type NodeStatus, roundMs, SLACK_MS, startRing } from "./_ring_cluster.ts";

/** One report of the primary to the arbiter (renewals run every leaseRenewMs), with room for two shared cores. */
const RENEWAL_MS = 2 * S.leaseRenewMs + S.peerTimeoutMs + 2_000;

/** An outsider's POST: the body as given, no authentication headers, or `headers` made up. */
async function post(url: string, body: string, contentType: string, headers: Record<string, string> = {}) {
  const response = await fetch(url, { method: "POST", headers: { "content-type": contentType, ...headers }, body, signal: AbortSignal.timeout(5_000) });
  return { status: response.status, body: await response.json() as { error?: { code: string } } };
}

/** Authentication headers an outsider can make up: any nonce and seq, a MAC of the right shape but no key. */
const MADE_UP = { [PEER_HEADER.from]: "p1", [PEER_HEADER.nonce]: "", [PEER_HEADER.seq]: "1", [PEER_HEADER.mac]: "ab".repeat(32) };

interface SecurityStatus {
  security?: Record<string, number>;
}

test("attack: a forged POST /v1/peer to the backup, as the primary one epoch ahead, is refused 401; the primary keeps serving its table, the backup stays in sync", { timeout: 60_000 }, async () => {
  // On 2c9c5fa the backup took the append (only the body's `from` was checked), moved to the
  // next epoch, and refused the real primary's appends from then on: the primary stepped down
  // and dropped its table while the arbiter still recorded the backup in sync, every lock lost.
  const c = await startCluster();
  try {
    const client = connect({ servers: [c.urls.p1, c.urls.b1] });
    const held = await client.lock("held", { ttlMs: 30_000 });
    const before = (await status(c.urls.b1))!.server!;
    const forged = encodePeerBody({ type: "append", from: "p1", epoch: before.epoch + 1, syncGen: 1, entries: [] });
    const bare = await post(`${c.urls.b1}/v1/peer`, forged, PEER_CONTENT_TYPE);
    assert.equal(bare.status, 401);
    assert.equal(bare.body.error?.code, "unauthorized");
    const madeUp = await post(`${c.urls.b1}/v1/peer`, forged, PEER_CONTENT_TYPE, MADE_UP);
    assert.equal(madeUp.status, 401, "made-up authentication headers");

    // A lock taken after the attack is replicated to the backup before it is granted: the
    // backup still takes the real primary's appends in the same epoch.
    const after = await client.lock("after", { ttlMs: 30_000 });
    assert.ok(after.token > held.token);
    const primary = (await status(c.urls.p1))!;
    assert.equal(primary.server?.serving, true);
    assert.equal(primary.server?.epoch, before.epoch);
    assert.deepEqual(primary.locks.map((l) => [l.name, l.holders[0].token]).sort(), [["after", after.token], ["held", held.token]]);
    const backup = (await status(c.urls.b1))! as Awaited<ReturnType<typeof status>> & SecurityStatus;
    assert.equal(backup.server?.epoch, before.epoch, "the backup's epoch did not move");
    assert.deepEqual(backup.locks.map((l) => l.name).sort(), ["after", "held"]);
    assert.equal(backup.security?.peerUnauthenticated, 1);
    assert.equal(backup.security?.peerForged, 1);
    await eventually("p1 still has b1 recorded in sync", async () => (await status(c.urls.p1))?.server?.backup?.arbiterRecordedInSync === true, RENEWAL_MS);
    await after.release();
    await held.release();
  } finally {
    await c.stopAll();
  }
});

test("attack: a forged POST /v1/arbiter renewal with a huge seq and backupInSync is refused 401; the record is unchanged and genuine renewals go on", { timeout: 60_000 }, async () => {
  // On 2c9c5fa the arbiter took it (the primary's id and epoch in the body were all it
  // checked): reportSeq jumped to 2^50, so every genuine report after it lost on seq, and a
  // stale backup would stay recorded in sync and be promoted.
  const c = await startCluster();
  try {
    type ArbiterStatus = { arbiter: { epoch: number; primary: string; backupInSync: boolean; reportSeq: number } } & SecurityStatus;
    const read = async () => (await (await fetch(`${c.urls.a1}/v1/status`)).json()) as ArbiterStatus;
    const before = (await read()).arbiter;
    const huge = 2 ** 50;
    const forged = encodePeerBody({ type: "renew", from: "p1", epoch: before.epoch, backupInSync: true, seq: huge });
    for (const headers of [{}, MADE_UP]) {
      const answer = await post(`${c.urls.a1}/v1/arbiter`, forged, PEER_CONTENT_TYPE, headers);
      assert.equal(answer.status, 401);
      assert.equal(answer.body.error?.code, "unauthorized");
    }
    // A genuine renewal after the attack is recorded: its seq wins, the forged one never counted.
    await eventually("a genuine renewal is recorded after the attack", async () => (await read()).arbiter.reportSeq > before.reportSeq, RENEWAL_MS);
    const after = await read();
    assert.ok(after.arbiter.reportSeq < huge);
    assert.equal(after.arbiter.epoch, before.epoch);
    assert.equal(after.arbiter.primary, "p1");
    // (Genuine first contacts are counted as peerChallenged: not an attack.)
    assert.deepEqual([after.security?.peerUnauthenticated, after.security?.peerForged], [1, 1]);
    assert.equal((await status(c.urls.p1))?.server?.serving, true, "the primary keeps its lease");
  } finally {
    await c.stopAll();
  }
});

test("attack: forged ring tokens from the predecessor's id (a hop ahead, epoch 2^53-1) are refused 401; the epoch is unchanged, real tokens are still taken, fences stay unique", { timeout: 60_000 }, async () => {
  // On 2c9c5fa r2 took the first as the next token: two nodes granted sections at once under
  // the same fence. It stored the second's epoch on disk and refused every real token after it.
  const ring = await startRing({ size: 3 });
  try {
    const r2 = () => ring.client("r2").status() as Promise<NodeStatus & SecurityStatus>;
    const before = await r2();
    assert.equal(before.predecessor, "r1");
    const token = { epoch: before.epoch, hop: before.lastHop + 1_000, wseq: before.lastApplied, commit: before.commit, fence: before.fenceMax, idleHops: 0 };
    const url = `${ring.urls[1]}/v1/ring/peer/token`;
    for (const forged of [token, { ...token, epoch: 2 ** 53 - 1 }]) {
      const answer = await post(url, JSON.stringify({ from: "r1", token: forged }), "application/json");
      assert.equal(answer.status, 401, `token ${JSON.stringify(forged)}`);
      assert.equal(answer.body.error?.code, "unauthorized");
    }
    assert.equal((await post(url, JSON.stringify({ from: "r1", token }), "application/json", { ...MADE_UP, [PEER_HEADER.from]: "r1" })).status, 401);
    // The catch-up route (a GET) is a peer route too.
    assert.equal((await fetch(`${ring.urls[1]}/v1/ring/peer/log?from=1`, { signal: AbortSignal.timeout(5_000) })).status, 401);
    await eventually("r2 takes a real token after the attack", async () => (await r2()).lastHop > before.lastHop, roundMs(3) + SLACK_MS);
    const after = await r2();
    assert.equal(after.epoch, before.epoch, "the epoch did not move");
    assert.ok(after.lastHop < before.lastHop + 1_000, "the forged hop was never taken");
    assert.deepEqual([after.security?.peerUnauthenticated, after.security?.peerForged], [3, 1]);
    // Sections on every node, one after the other: each fence once, rising.
    const fences: number[] = [];
    for (const id of ring.ids) {
      const section = await ring.client(id).lock({ waitMs: 10_000 });
      fences.push(section.token);
      await section.release();
    }
    assert.deepEqual([...fences].sort((a, b) => a - b), fences);
    assert.equal(new Set(fences).size, fences.length);
  } finally {
    await ring.remove();
  }
});

test("attack: a genuine peer request captured and replayed is refused 401; a member's body claiming another member is refused too", { timeout: 60_000 }, async () => {
  // On 2c9c5fa any copy of a peer request was taken again (nothing but the body was checked).
  // Here the test plays r1 with its copy of the secret, as r1's transport signs, and records
  // what it sent: a recording proxy between r1 and r2 would see the same bytes.
  const ring = await startRing({ size: 3 });
  try {
    const sent: Request[] = [];
    const r1 = new PeerSigner(await peerKey(TEST_SECRET), "r1", (url, init) => {
      const request = new Request(url, init);
      sent.push(request.clone());
      return fetch(request);
    });
    const wake = await r1.fetch("r2", `${ring.urls[1]}/v1/ring/peer/wake`, { method: "POST", contentType: "application/json", body: JSON.stringify({ from: "r1" }), timeoutMs: 5_000 });
    assert.equal(wake.status, 200, `the genuine request is taken: ${wake.text}`);
    const replayed = await fetch(sent.at(-1)!);
    assert.equal(replayed.status, 401);
    assert.equal(((await replayed.json()) as { error: { code: string } }).error.code, "unauthorized");

    // r1 signs, but the body says r3: the body's `from` proves nothing.
    const spoofed = await r1.fetch("r2", `${ring.urls[1]}/v1/ring/peer/wake`, { method: "POST", contentType: "application/json", body: JSON.stringify({ from: "r3" }), timeoutMs: 5_000 });
    assert.equal(spoofed.status, 401);
    const security = ((await ring.client("r2").status()) as SecurityStatus).security;
    assert.equal(security?.peerReplayed, 1);
    assert.equal(security?.peerFromMismatch, 1);
  } finally {
    await ring.remove();
  }
});
