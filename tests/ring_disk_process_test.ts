/**
 * A ring node's bad disk record, end to end with real processes on loopback (docs/ring.md, "On
 * disk"): three `mutexd node`s commit writes; one node is killed, a value in its log is edited on
 * disk (the checksum no longer matches), and it is started again. It must cut its log at that
 * record (logging file:line), never serve the edited value, catch up the writes it dropped from
 * its predecessor through the ring's own catch-up, and end with the PEERS' value and the same
 * committed log as they have; the ring then runs on, and the cut log loads clean at the next
 * start. Waits are bounded by the ring's settings (QUICK_RING_SETTINGS) plus a named slack; the
 * test stops the nodes it started and removes its temp dir.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connectRing, type RingClient } from "../lib/client/ring_client.ts";
import { LOG_FILE } from "../cluster/ring/storage.ts";
import { eventually, freePort, type Proc, QUICK_RING_SETTINGS, removeDir, startMutexd, tempDir, waitForHttp, writeCluster } from "./_harness.ts";

/** The ring settings this test runs with, read from the lines it writes into the file. */
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

type Committed = { commit: number; entries: unknown[] };

/** A node's committed log from wseq 1 (the test writes far fewer than one page). */
async function committedLog(client: RingClient): Promise<Committed> {
  const { commit, entries } = await client.log(1);
  return { commit, entries: entries.filter((e) => e.wseq <= commit) };
}

test("ring of 3: a value edited in a stopped node's log is cut at restart, caught up from a peer, and the node serves the peers' value with replicas equal", { timeout: 120_000 }, async () => {
  const dir = tempDir("mutexd-ring-disk-");
  const ports = await Promise.all(IDS.map(() => freePort()));
  const file = writeCluster(dir, [
    "[settings]",
    ...QUICK_RING_SETTINGS,
    ...IDS.flatMap((id, i) => ["[[nodes]]", `id = "${id}"`, 'role = "ring"', `http = "127.0.0.1:${ports[i]}"`, `dataDir = "data/${id}"`]),
  ].join("\n") + "\n");
  const clients = ports.map((port) => connectRing({ server: `http://127.0.0.1:${port}`, requestTimeoutMs: 10_000 }));
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
  /** Every node has committed everything it applied, the same log as the others. */
  const allEqual = async () => {
    const logs = await Promise.all(clients.map((c) => committedLog(c).catch(() => undefined)));
    const statuses = await Promise.all(clients.map((c) => c.status().catch(() => undefined)));
    if (logs.some((l) => l === undefined) || statuses.some((s) => s === undefined || s.commit !== s.lastApplied)) return false;
    return logs.every((log) => JSON.stringify(log) === JSON.stringify(logs[0]));
  };
  try {
    for (const id of IDS) await start(id);
    {
      await using section = await clients[0].lock({ waitMs: TOKEN_EVERYWHERE_MS });
      for (const [key, value] of [["a", "1"], ["b", "2"], ["c", "3"]]) await section.put(key, value);
    }
    // The commit watermark reaches every node with the token's next visit.
    await eventually("every node has committed a, b and c", async () => (await allEqual()) && (await clients[1].status()).commit === 3, TOKEN_EVERYWHERE_MS);
    const before = await committedLog(clients[0]);

    // r2 stopped, and the value of b edited in its log: the line's checksum no longer matches.
    await stop("r2", "SIGKILL");
    const logPath = join(dir, "data", "r2", LOG_FILE);
    const lines = readFileSync(logPath, "utf8").split("\n");
    const line = lines.findIndex((l) => l.includes('"key":"b","value":"2"'));
    assert.ok(line >= 0, "r2's log holds the write of b");
    lines[line] = lines[line].replace('"value":"2"', '"value":"X"');
    writeFileSync(logPath, lines.join("\n"));

    const r2 = await start("r2");
    const cutLogged = new RegExp(`"event":"badLogRecord".*"at":"[^"]*${LOG_FILE}:${line + 1}".*checksum`);
    await eventually("r2 logs the cut with file:line", () => cutLogged.test(r2.stderr()), SLACK_MS);
    // Until it has caught up, r2 may not have b at all; it must never serve the edited value.
    await eventually("r2 serves b = 2, the peers' value", async () => {
      const b = await clients[1].get("b").catch(() => undefined);
      assert.notEqual(b?.value, "X", "the edited value is never served");
      return b?.value === "2";
    }, TOKEN_EVERYWHERE_MS);
    await eventually("the three replicas are equal again", allEqual, TOKEN_EVERYWHERE_MS);
    assert.deepEqual(await committedLog(clients[1]), before, "r2's committed log is the peers' one");
    assert.match(r2.stderr(), /"event":"caughtUp"/, "r2 fetched what it dropped from its predecessor");

    // The ring runs on with r2 in it: a section on r2 writes, every node commits it.
    {
      await using section = await clients[1].lock({ waitMs: TOKEN_EVERYWHERE_MS });
      await section.put("d", "4");
    }
    await eventually("every node has committed d", async () => (await allEqual()) && (await clients[2].get("d"))?.value === "4", TOKEN_EVERYWHERE_MS);

    // The cut was written back: at the next start r2 finds nothing bad and keeps everything.
    await stop("r2", "SIGTERM");
    const again = await start("r2");
    await eventually("r2 serves b and d after a clean restart", async () => {
      const values = await Promise.all(["b", "d"].map((key) => clients[1].get(key).catch(() => undefined)));
      return values[0]?.value === "2" && values[1]?.value === "4";
    }, TOKEN_EVERYWHERE_MS);
    assert.doesNotMatch(again.stderr(), /badLogRecord|tornLogLine/);
  } finally {
    for (const proc of procs.values()) proc.kill("SIGKILL");
    await Promise.all([...procs.values()].map((p) => p.exited));
    removeDir(dir);
  }
});
