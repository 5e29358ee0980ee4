/**
 * A ring node's damaged disk, end to end with real processes on loopback (docs/ring.md, "On
 * disk"): three `mutexd node`s commit writes; one node is killed, a value in its log (or in its
 * snapshot) is edited on disk, so the checksum no longer matches, and it is started again. It must
 * drop the damaged part (logging where and why), never serve the edited value, catch up what it
 * dropped from its predecessor through the ring's own catch-up, and end with the PEERS' value
 * and the same committed map as they have; the ring then runs on, and the node loads clean at
 * its next start. Waits are bounded by the ring's settings (QUICK_RING_SETTINGS) plus a named
 * slack; each test stops the nodes it started and removes its temp dir.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connectRing, type RingClient } from "../lib/client/ring_client.ts";
import { LOG_FILE, SNAPSHOT_FILE } from "../cluster/ring/storage.ts";
import { eventually, freePort, type Proc, QUICK_RING_SETTINGS, removeDir, startMutexd, tempDir, waitForHttp, writeCluster } from "./_harness.ts";

/** The ring settings these tests run with, read from the lines they write into the file. */
const RING = Object.fromEntries(QUICK_RING_SETTINGS.map((line) => line.split(" = ")).map(([key, value]) => [key, Number(value)]));
/** Room for scheduling (every node is a process on two shared cores), and for a node's start. */
const SLACK_MS = 5_000;
const IDS = ["r1", "r2", "r3"];
/**
 * From a (re)start until the token has been everywhere: regeneration waits tokenLossMs after the
 * last sighting (a restarted node counts its start as one), retries every ringRegenRetryMs, then
 * the token goes round, each hop at worst at its timeout and idle pause.
 */
const TOKEN_EVERYWHERE_MS = RING.tokenLossMs + RING.ringRegenRetryMs + IDS.length * (RING.tokenHopTimeoutMs + RING.tokenIdlePaceMs) + SLACK_MS;

/** What a test damages on the disk of one stopped node. */
interface Damage {
  /** The node whose disk is damaged. */
  node: string;
  /** Lines added to [settings]. */
  settings: string[];
  /** Edits the stopped node's data dir; returns what its log must say at the restart. */
  apply(dataDir: string): RegExp;
  /** The event by which the node tells it took what it dropped from its predecessor. */
  fetched: "caughtUp" | "snapshotInstalled";
}

/** A node's committed map: its watermark, and every key with its value (the test writes a few). */
async function committedMap(client: RingClient): Promise<{ commit: number; kv: Array<[string, string | undefined]> }> {
  const { commit, lastApplied } = await client.status();
  assert.equal(lastApplied, commit, "nothing pending");
  const keys = await client.keys();
  return { commit, kv: await Promise.all(keys.map(async (key) => [key, (await client.get(key))?.value] as [string, string | undefined])) };
}

async function runDamageScenario(damage: Damage): Promise<void> {
  const dir = tempDir("mutexd-ring-disk-");
  const ports = await Promise.all(IDS.map(() => freePort()));
  const file = writeCluster(dir, [
    "[settings]",
    ...QUICK_RING_SETTINGS,
    ...damage.settings,
    ...IDS.flatMap((id, i) => ["[[nodes]]", `id = "${id}"`, 'role = "ring"', `http = "127.0.0.1:${ports[i]}"`, `dataDir = "data/${id}"`]),
  ].join("\n") + "\n");
  const clients = ports.map((port) => connectRing({ server: `http://127.0.0.1:${port}`, requestTimeoutMs: 10_000 }));
  const damaged = clients[IDS.indexOf(damage.node)];
  const procs = new Map<string, Proc>();
  const start = async (id: string) => {
    const proc = startMutexd(["node", "--config", file, "--id", id]);
    procs.set(id, proc);
    await Promise.race([
      waitForHttp(`${clients[IDS.indexOf(id)].server}/v1/health`, SLACK_MS * IDS.length),
      proc.exited.then((code) => assert.fail(`${id} exited ${code}: ${proc.stderr().slice(-600)}`)),
    ]);
    return proc;
  };
  const stop = async (id: string, signal: NodeJS.Signals) => {
    procs.get(id)!.kill(signal);
    await procs.get(id)!.exited;
  };
  /** Every node has committed all it applied, and holds the same committed map as the others. */
  const allEqual = async () => {
    const maps = await Promise.all(clients.map((c) => committedMap(c).catch(() => undefined)));
    return maps.every((map) => map !== undefined && JSON.stringify(map) === JSON.stringify(maps[0]));
  };
  try {
    for (const id of IDS) await start(id);
    {
      await using section = await clients[0].lock({ waitMs: TOKEN_EVERYWHERE_MS });
      for (const [key, value] of [["a", "1"], ["b", "2"], ["c", "3"]]) await section.put(key, value);
    }
    // The commit watermark reaches every node with the token's next visit.
    await eventually("every node has committed a, b and c", async () => (await allEqual()) && (await damaged.status()).commit === 3, TOKEN_EVERYWHERE_MS);
    const before = await committedMap(clients[0]);

    await stop(damage.node, "SIGKILL");
    const logged = damage.apply(join(dir, "data", damage.node));
    const restarted = await start(damage.node);
    await eventually(`${damage.node} logs what it dropped`, () => logged.test(restarted.stderr()), SLACK_MS);
    // Until it has caught up, the node may not have b at all; it must never serve the edited value.
    await eventually(`${damage.node} serves b = 2, the peers' value`, async () => {
      const b = await damaged.get("b").catch(() => undefined);
      assert.notEqual(b?.value, "X", "the edited value is never served");
      return b?.value === "2";
    }, TOKEN_EVERYWHERE_MS);
    await eventually("the three replicas are equal again", allEqual, TOKEN_EVERYWHERE_MS);
    assert.deepEqual(await committedMap(damaged), before, "the damaged node's committed map is the peers' one");
    assert.match(restarted.stderr(), new RegExp(`"event":"${damage.fetched}"`), "it fetched what it dropped from its predecessor");

    // The ring runs on with the node in it: a section there writes, every node commits it.
    {
      await using section = await damaged.lock({ waitMs: TOKEN_EVERYWHERE_MS });
      await section.put("d", "4");
    }
    await eventually("every node has committed d", async () => (await allEqual()) && (await clients[0].get("d"))?.value === "4", TOKEN_EVERYWHERE_MS);

    // The repair was written back: at the next start the node finds nothing bad and keeps everything.
    await stop(damage.node, "SIGTERM");
    const again = await start(damage.node);
    await eventually(`${damage.node} serves b and d after a clean restart`, async () => {
      const values = await Promise.all(["b", "d"].map((key) => damaged.get(key).catch(() => undefined)));
      return values[0]?.value === "2" && values[1]?.value === "4";
    }, TOKEN_EVERYWHERE_MS);
    assert.doesNotMatch(again.stderr(), /badLogRecord|badSnapshot|tornLogLine/);
  } finally {
    for (const proc of procs.values()) proc.kill("SIGKILL");
    await Promise.all([...procs.values()].map((p) => p.exited));
    removeDir(dir);
  }
}

test("ring of 3: a value edited in a stopped node's log is cut at restart (file:line logged), caught up from a peer, and the node serves the peers' value with replicas equal", { timeout: 120_000 }, async () => {
  await runDamageScenario({
    node: "r2",
    settings: [],
    fetched: "caughtUp",
    apply(dataDir) {
      const logPath = join(dataDir, LOG_FILE);
      const lines = readFileSync(logPath, "utf8").split("\n");
      const line = lines.findIndex((l) => l.includes('"key":"b","value":"2"'));
      assert.ok(line >= 0, "the log holds the write of b");
      lines[line] = lines[line].replace('"value":"2"', '"value":"X"');
      writeFileSync(logPath, lines.join("\n"));
      return new RegExp(`"event":"badLogRecord".*"at":"[^"]*${LOG_FILE}:${line + 1}".*checksum`);
    },
  });
});

test("ring of 3: a value edited in a stopped node's snapshot sets it aside with the log; the node catches up (a snapshot from its predecessor) and serves the peers' value", { timeout: 120_000 }, async () => {
  await runDamageScenario({
    node: "r3",
    // A snapshot after every 2 commits, and the predecessor's log compacted to 2 entries: the
    // catch-up must bring a snapshot, not the log from wseq 1.
    settings: ["ringSnapshotEveryWrites = 2", "ringLogRetainMax = 2"],
    fetched: "snapshotInstalled",
    apply(dataDir) {
      const snapshotPath = join(dataDir, SNAPSHOT_FILE);
      assert.ok(existsSync(snapshotPath), "the node wrote a snapshot");
      const text = readFileSync(snapshotPath, "utf8");
      assert.ok(text.includes('["b","2"]'), `the snapshot holds b: ${text}`);
      writeFileSync(snapshotPath, text.replace('["b","2"]', '["b","X"]'));
      return new RegExp(`"event":"badSnapshot".*${SNAPSHOT_FILE}.*checksum`);
    },
  });
});
