/**
 * A ring node's damaged disk, end to end with real processes on loopback (docs/ring.md, "On
 * disk"): three `mutexd node`s commit writes; one node is killed, a value in its log (or in its
 * snapshot) is edited on disk, so the checksum no longer matches, and it is started again. It must
 * drop the damaged part (logging where and why), never serve the edited value, take back what it
 * dropped from its peers (the writes its rejoin's view re-sends, or a snapshot from its
 * predecessor when their logs were compacted past it), and end with the PEERS' value
 * and the same committed map as they have; the ring then runs on, and the node loads clean at
 * its next start. Waits are bounded by the ring's settings (QUICK_RING_SETTINGS) plus a named
 * slack; each test stops the nodes it started and removes its temp dir.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { RingClient } from "../lib/client/ring_client.ts";
import { LOG_FILE, SNAPSHOT_FILE } from "../cluster/ring/storage.ts";
import { eventually, QUICK_RING_SETTINGS } from "./_harness.ts";
import { makeRing, ringSettings, SLACK_MS, tokenEverywhereMs, unknownTokenWaitMs } from "./_ring_cluster.ts";

const IDS = ["r1", "r2", "r3"];

/** What a test damages on the disk of one stopped node. */
interface Damage {
  /** The node whose disk is damaged. */
  node: string;
  /** Lines added to [settings]. */
  settings: string[];
  /** Edits the stopped node's data dir; returns what its log must say at the restart. */
  apply(dataDir: string): RegExp;
  /** Writes after a, b and c (x1, x2, …): enough of them push b out of the peers' logs into their snapshots. */
  extraWrites: number;
  /**
   * How the node takes back what it dropped: re-sent by the regenerator of the view it rejoins
   * through (docs/ring-view.md, step 6: the writes from the lowest member commit on), or, when
   * the peers' logs no longer reach back that far, a snapshot fetched from its predecessor.
   */
  refilled: "resent" | "snapshotInstalled";
}

/** A node's committed map: its watermark, and every key with its value (the test writes a few). */
async function committedMap(client: RingClient): Promise<{ commit: number; kv: Array<[string, string | undefined]> }> {
  const { commit, lastApplied } = await client.status();
  assert.equal(lastApplied, commit, "nothing pending");
  const keys = await client.keys();
  return { commit, kv: await Promise.all(keys.map(async (key) => [key, (await client.get(key))?.value] as [string, string | undefined])) };
}

async function runDamageScenario(damage: Damage): Promise<void> {
  const ring = await makeRing({ size: IDS.length, settings: damage.settings });
  const settings = ringSettings([...QUICK_RING_SETTINGS, ...damage.settings]);
  /** From the start until the token has been everywhere (a bootstrap: no grant wait). */
  const startedMs = tokenEverywhereMs(IDS.length, settings);
  /**
   * From a (re)start of one node until sections run everywhere again: the restarted node rejoins
   * through a view change (a new epoch), the token goes round, and a token nobody promising knew
   * (the restarted node may have held it) waits out its longest section before the next grant.
   */
  const recoverMs = startedMs + unknownTokenWaitMs(settings);
  const clients = ring.clients;
  const damaged = ring.client(damage.node);
  /** Every node has committed all it applied, and holds the same committed map as the others. */
  const allEqual = async () => {
    const maps = await Promise.all(clients.map((c) => committedMap(c).catch(() => undefined)));
    return maps.every((map) => map !== undefined && JSON.stringify(map) === JSON.stringify(maps[0]));
  };
  const writes = [["a", "1"], ["b", "2"], ["c", "3"], ...Array.from({ length: damage.extraWrites }, (_, i) => [`x${i + 1}`, "x"])];
  try {
    await ring.startAll();
    let lastWseq = 0;
    {
      await using section = await clients[0].lock({ waitMs: startedMs });
      for (const [key, value] of writes) lastWseq = await section.put(key, value);
    }
    // The commit watermark reaches every node with the token's next visit. (The writes' wseqs
    // follow the bootstrap regenerator's marker, one log entry per view change: docs/ring-view.md.)
    await eventually("every node has committed every write", async () => (await allEqual()) && (await damaged.status()).commit >= lastWseq, startedMs);
    const before = await committedMap(clients[0]);
    const epochBefore = Math.max(...(await ring.statuses()).map((s) => s?.epoch ?? 0));

    await ring.stop(damage.node, "SIGKILL");
    const logged = damage.apply(join(ring.dir, "data", damage.node));
    const restarted = await ring.start(damage.node);
    await eventually(`${damage.node} logs what it dropped`, () => logged.test(restarted.stderr()), SLACK_MS);
    // Until it has caught up, the node may not have b at all; it must never serve the edited value.
    await eventually(`${damage.node} serves b = 2, the peers' value`, async () => {
      const b = await damaged.get("b").catch(() => undefined);
      assert.notEqual(b?.value, "X", "the edited value is never served");
      return b?.value === "2";
    }, recoverMs);
    await eventually("the three replicas are equal again", allEqual, recoverMs);
    assert.deepEqual((await committedMap(damaged)).kv, before.kv, "the damaged node's committed map is the peers' one (its commit is higher: the rejoin's marker)");
    if (damage.refilled === "snapshotInstalled") {
      assert.match(restarted.stderr(), /"event":"snapshotInstalled"/, "it fetched a snapshot from its predecessor");
    } else {
      // b's line and everything after it were cut: the rejoin's regenerator re-sent at least b and c.
      const resent = IDS.filter((id) => id !== damage.node).flatMap((id) => ring.events(id, "tokenRegenerated"))
        .filter((e) => (e.epoch as number) > epochBefore).map((e) => e.resent as number);
      assert.ok(resent.some((n) => n >= writes.length - 1), `the rejoin's regenerator re-sent what was cut (resent: ${resent.join(", ")})`);
    }

    // The ring runs on with the node in it: a section there writes, every node commits it.
    {
      await using section = await damaged.lock({ waitMs: recoverMs });
      await section.put("d", "4");
    }
    await eventually("every node has committed d", async () => (await allEqual()) && (await clients[0].get("d"))?.value === "4", recoverMs);

    // The repair was written back: at the next start the node finds nothing bad and keeps everything.
    await ring.stop(damage.node, "SIGTERM");
    const again = await ring.start(damage.node);
    await eventually(`${damage.node} serves b and d after a clean restart`, async () => {
      const values = await Promise.all(["b", "d"].map((key) => damaged.get(key).catch(() => undefined)));
      return values[0]?.value === "2" && values[1]?.value === "4";
    }, recoverMs);
    assert.doesNotMatch(again.stderr(), /badLogRecord|badSnapshot|tornLogLine/);
  } finally {
    await ring.remove();
  }
}

test("ring of 3: a value edited in a stopped node's log is cut at restart (file:line logged), re-sent by its rejoin's regenerator, and the node serves the peers' value with replicas equal", { timeout: 120_000 }, async () => {
  await runDamageScenario({
    node: "r2",
    settings: [],
    extraWrites: 0,
    refilled: "resent",
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
    // A snapshot after every 2 commits, and the peers' logs compacted to 2 entries: with 6 writes
    // (after the bootstrap's marker) they hold only the last ones, so the rejoin's re-send leaves
    // a gap that only a snapshot fills.
    settings: ["ringSnapshotEveryWrites = 2", "ringLogRetainMax = 2"],
    extraWrites: 3,
    refilled: "snapshotInstalled",
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
