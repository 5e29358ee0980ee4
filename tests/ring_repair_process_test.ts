/**
 * Ring repair's suspicion over the real UDP channel, as real processes on loopback: a ring of
 * three (r1 → r2 → r3 → r1), r2 killed -9 while r1 holds the token (a section, so the next
 * hand-off is certainly r1's to r2). Proves: a healthy ring shows no suspicion; after the kill,
 * r1 suspects r2 and r3 (r2's successor) confirms it, both in status and as one log line each,
 * within a bound derived from the settings; r1's next live node is r3; and once r2 is back the
 * ring runs on as before (the token reaches r2 again) and the suspicion is cleared. `mutexd ring
 * status` prints the suspicion.
 * Each run stops the nodes it started (by PID) and removes its temp dir.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";
import { connectRing, type RingStatus } from "../lib/client/ring_client.ts";
import { eventually, freePort, freeUdpPort, type Proc, QUICK_RING_SETTINGS, removeDir, startMutexd, tempDir, waitForHttp, writeCluster } from "./_harness.ts";

const RING = Object.fromEntries(QUICK_RING_SETTINGS.map((line) => line.split(" = ")).map(([key, value]) => [key, Number(value)]));
const REPAIR_RETRIES = 3;
/** Room for scheduling (three node processes on two shared cores) and for a node's start. */
const SLACK_MS = 5_000;
/** A hand-off failing REPAIR_RETRIES times in a row: the link's backoff (tokenRetryMs doubling, capped at the hop timeout). */
const failuresMs = Array.from({ length: REPAIR_RETRIES }, (_, i) => Math.min(RING.tokenHopTimeoutMs, RING.tokenRetryMs * 2 ** i))
  .reduce((a, b) => a + b, 0) + REPAIR_RETRIES * RING.tokenHopTimeoutMs;
/** The successor answers after suspectMs of silence; the asker re-asks every askEveryMs (lib/core/ring/repair.ts). */
const suspectMs = RING.tokenHopTimeoutMs * REPAIR_RETRIES;
const askEveryMs = RING.tokenHopTimeoutMs;
/** From the start until the first regeneration's token has gone round (see ring_process_test.ts). */
const tokenEverywhereMs = RING.tokenLossMs + RING.ringRegenRetryMs + 3 * (RING.tokenHopTimeoutMs + RING.tokenIdlePaceMs) + SLACK_MS;

const lines = (proc: Proc, event: string) =>
  proc.stderr().split("\n").filter((l) => l.includes(`"event":"${event}"`)).map((l) => JSON.parse(l) as Record<string, unknown>);

test("ring repair: r2 killed -9 is suspected by r1 and confirmed by r3 (status and log), then cleared when it is back", { timeout: 120_000 }, async () => {
  const dir = tempDir("mutexd-ring-repair-");
  const ids = ["r1", "r2", "r3"];
  const procs = new Map<string, Proc>();
  try {
    const http: number[] = [];
    const udp: number[] = [];
    for (const _ of ids) {
      http.push(await freePort());
      udp.push(await freeUdpPort());
    }
    const file = writeCluster(dir, [
      "[cluster]",
      'name = "repairtest"',
      'broadcast = "127.255.255.255"',
      "[settings]",
      ...QUICK_RING_SETTINGS,
      `ringRepairRetries = ${REPAIR_RETRIES}`,
      ...ids.flatMap((id, i) => ["[[nodes]]", `id = "${id}"`, 'role = "ring"', `http = "127.0.0.1:${http[i]}"`, `udp = ${udp[i]}`, `dataDir = "data/${id}"`]),
    ].join("\n") + "\n");
    const clients = http.map((p) => connectRing({ server: `http://127.0.0.1:${p}`, requestTimeoutMs: 10_000 }));
    const status = (i: number) => clients[i].status();
    const start = (id: string) => procs.set(id, startMutexd(["node", "--config", file, "--id", id]));
    ids.forEach(start);
    await Promise.all(http.map((p) => waitForHttp(`http://127.0.0.1:${p}/v1/health`, SLACK_MS * ids.length)));
    await eventually("the token reaches every node", async () => {
      const all = await Promise.all(clients.map((c) => c.status()));
      return all.every((s) => s.epoch > 0 && s.epoch === all[0].epoch && s.lastTokenAgeMs !== null);
    }, tokenEverywhereMs);
    for (const [i, s] of (await Promise.all(clients.map((c) => c.status()))).entries()) {
      assert.deepEqual(s.suspicions, [], `${ids[i]}: a healthy ring suspects nobody`);
    }

    // r1 holds the token (a section) while r2 dies, so r1's next hand-off goes to a dead r2.
    const section = await clients[0].lock({ waitMs: 30_000 });
    const r2 = procs.get("r2")!;
    r2.kill("SIGKILL");
    await r2.exited;
    procs.delete("r2");
    await section.release();
    const releasedAt = Date.now();

    const suspicionOf = (s: RingStatus) => s.suspicions.find((x) => x.node === "r2");
    await eventually("r1 and r3 show r2 suspected by r1 and confirmed by r3", async () => {
      const [s1, s3] = [suspicionOf(await status(0)), suspicionOf(await status(2))];
      return [s1, s3].every((s) => s !== undefined && s.suspectedBy.includes("r1") && s.confirmedBy.includes("r3"));
    }, failuresMs + suspectMs + askEveryMs + SLACK_MS);
    const confirmedAfterMs = Date.now() - releasedAt;
    const s1 = suspicionOf(await status(0))!;
    assert.equal(s1.newSuccessor, "r3", "r1 would hand to the next live node in file order");
    assert.deepEqual(s1.confirmedBy, ["r3"], "only r2's successor confirms");
    const r1 = procs.get("r1")!;
    const r3 = procs.get("r3")!;
    // One line per suspicion and per confirmation, not one per ask or answer.
    await eventually("the log lines are written", () => lines(r1, "ringSuspicionConfirmed").length > 0 && lines(r3, "ringSuspicionConfirmed").length > 0, SLACK_MS);
    assert.deepEqual(lines(r1, "ringSuspected").map((l) => [l.suspect, l.by]), [["r2", "r1"]]);
    assert.deepEqual(lines(r1, "ringSuspicionConfirmed").map((l) => [l.suspect, l.confirmedBy]), [["r2", "r3"]]);
    assert.deepEqual(lines(r3, "ringSuspected").map((l) => [l.suspect, l.by]), [["r2", "r1"]]);
    assert.deepEqual(lines(r3, "ringSuspicionConfirmed").map((l) => [l.suspect, l.confirmedBy]), [["r2", "r3"]]);
    // The CLI's status shows it too.
    const cli = startMutexd(["ring", "status", "--server", `http://127.0.0.1:${http[0]}`]);
    assert.equal(await cli.exited, 0, cli.stderr());
    assert.match(cli.stdout(), /suspicion\s+r2 suspected by r1 for \d+ ms \(epoch \d+\), confirmed by r3; next live node r3/);
    process.stdout.write(`# r2 confirmed suspected ${confirmedAfterMs} ms after r1's section ended (bound ${failuresMs + suspectMs + askEveryMs + SLACK_MS} ms)\n`);

    // r2 back: the ring runs on as before (r1 still retried), and the suspicion goes.
    const beforeEpoch = (await status(0)).epoch;
    start("r2");
    await waitForHttp(`http://127.0.0.1:${http[1]}/v1/health`, SLACK_MS * ids.length);
    await eventually("r2 gets the token again and r1 and r3 clear the suspicion", async () => {
      const all = await Promise.all(clients.map((c) => c.status()));
      return all[1].lastTokenAgeMs !== null && all.every((s) => s.suspicions.length === 0);
    }, RING.tokenHopTimeoutMs + 3 * (RING.tokenHopTimeoutMs + RING.tokenIdlePaceMs) + SLACK_MS);
    assert.equal((await status(0)).epoch, beforeEpoch, "the same token went on: no regeneration was needed");
    assert.deepEqual(lines(r1, "ringSuspicionCleared").map((l) => [l.suspect, l.why]), [["r2", "heard"]]);
  } finally {
    for (const proc of procs.values()) proc.kill("SIGTERM");
    await Promise.all([...procs.values()].map((p) => p.exited));
    removeDir(dir);
  }
});
