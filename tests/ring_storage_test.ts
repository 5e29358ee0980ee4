/**
 * The ring node's durable log (cluster/ring/storage.ts) after a crash in the middle of an append,
 * as docs/ring.md and the storage's own doc promise: a half-written LAST line of ring-log.jsonl
 * is dropped at restart and the node starts with the rest; a corrupt line anywhere else stops
 * the node (fail-stop) instead of starting with a hole in its log. Unit level on RingStorage,
 * then a real `mutexd node` killed -9 and restarted over a torn log (and over a corrupt one).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connectRing } from "../lib/client/ring_client.ts";
import type { RingEntry, RingLogRecord } from "../lib/core/ring_types.ts";
import { RingStorage } from "../cluster/ring/storage.ts";
import { eventually, freePort, QUICK_RING_SETTINGS, removeDir, startMutexd, tempDir, waitForHttp, writeCluster } from "./_harness.ts";

const LOG_FILE = "ring-log.jsonl";

function entry(wseq: number, value: string): RingLogRecord {
  const e: RingEntry = { epoch: 1, wseq, author: "r1", origin: "r1", op: { type: "put", key: `k${wseq}`, value } };
  return { type: "entry", entry: e };
}

/** The first half of a record's line, as a crash in the middle of its append leaves it. */
function tornHalf(record: RingLogRecord): string {
  const line = JSON.stringify(record);
  return line.slice(0, Math.floor(line.length / 2));
}

test("ring storage: a half-written last log line is dropped at load and every whole line before it is kept", () => {
  const dir = tempDir("mutexd-ring-storage-");
  try {
    const storage = new RingStorage(dir);
    const written = [entry(1, "a"), entry(2, "b"), { type: "commit", wseq: 2 } as RingLogRecord];
    storage.apply(written.map((record) => ({ type: "log" as const, record })));
    storage.close();
    const whole = new RingStorage(dir).load();
    assert.deepEqual([whole.records, whole.tornLines], [written, 0], "the log as written");
    appendFileSync(join(dir, LOG_FILE), tornHalf(entry(3, "c")));
    const loaded = new RingStorage(dir).load();
    assert.deepEqual(loaded.records, written, "the torn record is dropped, the rest kept in order");
    assert.equal(loaded.tornLines, 1);
    // The torn half is cut from the file: the next append starts a line of its own, so the log
    // loads whole again (it used to continue the half line into a corrupt middle line).
    const again = new RingStorage(dir);
    assert.equal(again.load().tornLines, 0, "cut at the first load");
    again.apply([{ type: "log", record: entry(3, "c") }]);
    again.close();
    assert.deepEqual(new RingStorage(dir).load(), { ...loaded, records: [...written, entry(3, "c")], tornLines: 0 });
  } finally {
    removeDir(dir);
  }
});

test("ring storage: a corrupt line that is not the last stops the load, naming file and line (no start with a hole)", () => {
  const dir = tempDir("mutexd-ring-storage-");
  try {
    const lines = [entry(1, "a"), entry(2, "b"), entry(3, "c")].map((r) => JSON.stringify(r));
    lines[1] = tornHalf(entry(2, "b"));
    writeFileSync(join(dir, LOG_FILE), lines.join("\n") + "\n");
    assert.throws(() => new RingStorage(dir).load(), new RegExp(`${LOG_FILE}:2: `));
  } finally {
    removeDir(dir);
  }
});

test("ring node process: killed -9, its log's last line torn, it restarts, drops that line and serves every committed write; a corrupt first line stops it", { timeout: 60_000 }, async () => {
  const dir = tempDir("mutexd-ring-storage-");
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  // A ring of one: the token comes back to the node itself, so a put commits there.
  const file = writeCluster(dir, ["[settings]", ...QUICK_RING_SETTINGS, "[[nodes]]", 'id = "r1"', 'role = "ring"', `http = "127.0.0.1:${port}"`, 'dataDir = "data/r1"'].join("\n") + "\n");
  const logPath = join(dir, "data", "r1", LOG_FILE);
  const ring = connectRing({ server: url, requestTimeoutMs: 10_000 });
  let node = startMutexd(["node", "--config", file, "--id", "r1"]);
  try {
    await waitForHttp(`${url}/v1/health`);
    {
      await using section = await ring.lock({ waitMs: 20_000 });
      await section.put("a", "1");
      await section.put("b", "2");
    }
    const before = readFileSync(logPath, "utf8");
    node.kill("SIGKILL");
    await node.exited;
    // What a crash in the middle of the next append leaves: half a line, no newline.
    const lastLine = before.trimEnd().split("\n").pop()!;
    appendFileSync(logPath, lastLine.slice(0, Math.floor(lastLine.length / 2)));
    node = startMutexd(["node", "--config", file, "--id", "r1"]);
    await waitForHttp(`${url}/v1/health`);
    await eventually("the restarted node logged the torn line", () => /"event":"tornLogLine".*"lines":1/.test(node.stderr()));
    assert.deepEqual([(await ring.get("a"))?.value, (await ring.get("b"))?.value], ["1", "2"], "every committed write is kept");
    // And it runs on: a new section writes and commits.
    {
      await using section = await ring.lock({ waitMs: 20_000 });
      await section.put("c", "3");
    }
    assert.equal((await ring.get("c"))?.value, "3");
    assert.equal(node.child.exitCode, null, "still running");
    // Once more, with nothing torn: the writes after the torn line must not have made it corrupt.
    node.kill("SIGKILL");
    await node.exited;
    node = startMutexd(["node", "--config", file, "--id", "r1"]);
    await Promise.race([waitForHttp(`${url}/v1/health`), node.exited.then((code) => assert.fail(`exited ${code}: ${node.stderr().slice(-600)}`))]);
    assert.deepEqual([(await ring.get("a"))?.value, (await ring.get("c"))?.value], ["1", "3"], "kept over a second restart");
    // The other half of the promise: a corrupt line before the last one is not dropped but
    // stops the node at start, naming file and line.
    node.kill("SIGKILL");
    await node.exited;
    const lines = readFileSync(logPath, "utf8").split("\n");
    lines[0] = lines[0].slice(0, Math.floor(lines[0].length / 2));
    writeFileSync(logPath, lines.join("\n"));
    node = startMutexd(["node", "--config", file, "--id", "r1"]);
    assert.notEqual(await node.exited, 0, "a node with a hole in its log does not start");
    assert.match(node.stderr(), new RegExp(`${LOG_FILE}:1: `));
  } finally {
    node.kill("SIGKILL");
    await node.exited;
    removeDir(dir);
  }
});
