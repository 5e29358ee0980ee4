/**
 * The ring node's disk (cluster/ring/storage.ts, cluster/durable_file.ts), as docs/ring.md
 * ("On disk") and the storage's own doc promise:
 * - every write is checked for its length: a short write is continued, one that stops throws;
 * - a half-written LAST log line is dropped at restart and the node starts with the rest;
 * - a bad record anywhere (checksum, JSON, shape) cuts the log there, drops the uncommitted
 *   writes before it too, and rewrites the file; a ring of one refuses instead;
 * - a bad hard state refuses to start, naming the file; a bad snapshot is set aside with the log;
 * - files of format version 1 (as mutexd wrote them before versions) load with their data and
 *   are rewritten as version 2; a newer version is refused, naming both versions;
 * - the repair channel's incarnation grows at every start, stays at least the floor given, and
 *   survives a new RingStorage (it is on disk); a damaged file counts as none and says why.
 * Unit level on RingStorage, then a real `mutexd node` (a ring of one) killed -9 and restarted
 * over a torn log and over a bad one. The catch-up from peers: tests/ring_disk_process_test.ts.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { appendFileSync, existsSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connectRing } from "../lib/client/ring_client.ts";
import { RingReplica } from "../lib/core/ring/ring_replica.ts";
import type { RingEntry, RingLogRecord, RingSnapshot } from "../lib/core/ring/ring_types.ts";
import { crc32 } from "../cluster/checksum.ts";
import { writeAll } from "../cluster/durable_file.ts";
import { FORMAT_VERSION, INCARNATION_FILE, LOG_FILE, RingStorage, SNAPSHOT_FILE, STATE_FILE, VIEW_FILE } from "../cluster/ring/storage.ts";
import type { ViewHardState } from "../lib/core/ring/view_wire.ts";
import { eventually, freePort, QUICK_RING_SETTINGS, removeDir, startMutexd, tempDir, waitForHttp, writeCluster } from "./_harness.ts";

function write(wseq: number, value: string): RingEntry {
  return { epoch: 1, wseq, author: "r1", origin: "r1", op: { type: "put", key: `k${wseq}`, value } };
}

function entry(wseq: number, value: string): RingLogRecord {
  return { type: "entry", entry: write(wseq, value) };
}

function commit(wseq: number): RingLogRecord {
  return { type: "commit", wseq };
}

/** The first half of a record's line, as a crash in the middle of its append leaves it. */
function tornHalf(record: RingLogRecord): string {
  const line = JSON.stringify(record);
  return line.slice(0, Math.floor(line.length / 2));
}

/** Runs `body` with a fresh data directory, removed afterwards (also when it failed). */
function inDir(body: (dir: string) => void): void {
  const dir = tempDir("mutexd-ring-storage-");
  try {
    body(dir);
  } finally {
    removeDir(dir);
  }
}

/** Writes `records` through RingStorage (format version 2) and closes it. */
function store(dir: string, records: RingLogRecord[]): void {
  const storage = new RingStorage(dir);
  storage.apply(records.map((record) => ({ type: "log" as const, record })));
  storage.close();
}

/** Replaces line `line` (1-based) of `file` by what `edit` makes of it. */
function editLine(file: string, line: number, edit: (text: string) => string): void {
  const lines = readFileSync(file, "utf8").split("\n");
  const edited = edit(lines[line - 1]);
  assert.notEqual(edited, lines[line - 1], "the edit changes the line");
  lines[line - 1] = edited;
  writeFileSync(file, lines.join("\n"));
}

test("crc32: the standard check value (CRC-32/ISO-HDLC of '123456789' is cbf43926), so other tools can verify a record", () => {
  assert.equal(crc32("123456789"), 0xCBF43926);
  assert.equal(crc32(""), 0);
  assert.equal(crc32("é"), crc32(new Uint8Array([0xC3, 0xA9])), "a string is taken as its UTF-8 bytes");
});

test("writeAll: a short write is continued until every byte is written; a write that makes no progress throws, naming the file", () => {
  const written: number[] = [];
  // At most 3 bytes per call, as a full disk or a signal may leave it.
  writeAll(7, "f", "abcdefgh", (_fd, bytes, offset, length) => {
    const n = Math.min(3, length);
    written.push(...bytes.subarray(offset, offset + n));
    return n;
  });
  assert.equal(new TextDecoder().decode(new Uint8Array(written)), "abcdefgh");
  let calls = 0;
  assert.throws(() => writeAll(7, "some/file", "abcdefgh", (_fd, _bytes, _offset, length) => (calls++ === 0 ? length - 3 : 0)), /some\/file: write stopped at byte 5 of 8/);
});

test("ring storage: an append the disk refuses (a log on /dev/full) throws from apply: nothing is acknowledged", { skip: !existsSync("/dev/full") }, () => {
  inDir((dir) => {
    symlinkSync("/dev/full", join(dir, LOG_FILE));
    const storage = new RingStorage(dir);
    try {
      assert.throws(() => storage.apply([{ type: "log", record: entry(1, "a") }]), /ENOSPC|no space/i);
    } finally {
      storage.close();
    }
  });
});

test("ring storage: the repair channel's incarnation grows at each start (on disk), never below the floor; a damaged file counts as none", () => {
  inDir((dir) => {
    assert.deepEqual(new RingStorage(dir).nextIncarnation(0), { inc: 1 }, "a fresh directory starts at 1");
    assert.deepEqual(new RingStorage(dir).nextIncarnation(0), { inc: 2 }, "the next start, read from disk, is above it");
    assert.deepEqual(new RingStorage(dir).nextIncarnation(1_000), { inc: 1_000 }, "the floor (the wall clock) when it is higher");
    assert.deepEqual(new RingStorage(dir).nextIncarnation(5), { inc: 1_001 }, "a floor that went back changes nothing");
    writeFileSync(join(dir, INCARNATION_FILE), '{"v":2,"crc":1,"data":{"inc":1001}}');
    const damaged = new RingStorage(dir).nextIncarnation(7);
    assert.equal(damaged.inc, 7, "a damaged file: the floor alone");
    assert.match(damaged.damaged ?? "", /checksum/);
    assert.deepEqual(new RingStorage(dir).nextIncarnation(0), { inc: 8 }, "and the file is whole again");
  });
});

test("ring storage: a half-written last log line is dropped at load and every whole line before it is kept", () => {
  inDir((dir) => {
    const written = [entry(1, "a"), entry(2, "b"), commit(2)];
    store(dir, written);
    const whole = new RingStorage(dir).load();
    assert.deepEqual([whole.records, whole.tornLines, whole.badRecord], [written, 0, undefined], "the log as written");
    appendFileSync(join(dir, LOG_FILE), tornHalf(entry(3, "c")));
    const loaded = new RingStorage(dir).load();
    assert.deepEqual(loaded.records, written, "the torn record is dropped, the rest kept in order");
    assert.deepEqual([loaded.tornLines, loaded.badRecord], [1, undefined], "torn, not bad");
    // The torn half is cut from the file: the next append starts a line of its own, so the log
    // loads whole again (it used to continue the half line into a corrupt middle line).
    const again = new RingStorage(dir);
    assert.equal(again.load().tornLines, 0, "cut at the first load");
    again.apply([{ type: "log", record: entry(3, "c") }]);
    again.close();
    assert.deepEqual(new RingStorage(dir).load(), { ...loaded, records: [...written, entry(3, "c")], tornLines: 0 });
  });
});

/** A version-2 envelope around `value`, as the storage writes it. */
function envelopeOf(value: unknown): string {
  const data = JSON.stringify(value);
  return `{"v":${FORMAT_VERSION},"crc":${crc32(data)},"data":${data}}`;
}

/** Three ways a whole line goes bad on disk, each applied to one line of the log. */
const DAMAGES: Array<[string, (line: string) => string, RegExp]> = [
  ["a value edited (the checksum no longer matches)", (line) => line.replace('"value":"d"', '"value":"X"'), /checksum \d+ does not match/],
  ["half a line (not JSON)", (line) => line.slice(0, Math.floor(line.length / 2)), /not JSON/],
  ["a record of the wrong shape under a right checksum", (_line) => envelopeOf({ type: "entry", entry: { wseq: "4" } }), /not a log record/],
];

for (const [damage, edit, reason] of DAMAGES) {
  test(`ring storage: ${damage} in the middle of the log cuts it there, drops the uncommitted writes before it, and rewrites the file`, () => {
    inDir((dir) => {
      // Writes 1-2 committed, 3 pending, then the bad line (write 4) and what follows it.
      store(dir, [entry(1, "a"), entry(2, "b"), commit(2), entry(3, "c"), entry(4, "d"), commit(4), entry(5, "e")]);
      const logPath = join(dir, LOG_FILE);
      editLine(logPath, 5, edit);
      const loaded = new RingStorage(dir).load();
      const kept = [entry(1, "a"), entry(2, "b"), commit(2), entry(3, "c"), { type: "truncate", from: 3 } as RingLogRecord];
      assert.deepEqual(loaded.records, kept, "the records before the bad one, then the cut of the pending write 3");
      assert.equal(loaded.badRecord?.at, `${logPath}:5`);
      assert.match(loaded.badRecord?.reason ?? "", reason);
      assert.equal(loaded.badRecord?.droppedLines, 3, "the bad line and the two after it");
      // What the node starts with: the committed prefix only; 3, 4 and 5 come from a peer.
      const replica = new RingReplica();
      replica.replay(loaded.records);
      assert.deepEqual([replica.lastApplied, replica.commit, replica.read("k2", true), replica.read("k3", true)], [2, 2, "b", undefined]);
      // The file was rewritten without the bad part: the next load finds nothing to cut.
      const again = new RingStorage(dir).load();
      assert.deepEqual([again.records, again.badRecord, again.tornLines], [kept, undefined, 0]);
    });
  });
}

test("ring storage: a ring of one (alone) refuses a bad log record, naming file and line, and leaves the file as it was", () => {
  inDir((dir) => {
    store(dir, [entry(1, "a"), commit(1), entry(2, "d")]);
    const logPath = join(dir, LOG_FILE);
    editLine(logPath, 3, DAMAGES[0][1]);
    const before = readFileSync(logPath, "utf8");
    assert.throws(() => new RingStorage(dir).load({ alone: true }), new RegExp(`${LOG_FILE}:3: checksum .*no peer to catch up from`));
    assert.equal(readFileSync(logPath, "utf8"), before, "nothing dropped");
  });
});

test("ring storage: a bad hard state refuses to start, naming the file and why (an epoch or fence must never go back)", () => {
  const damages: Array<[(text: string) => string, RegExp]> = [
    [(text) => text.replace('"epoch":7', '"epoch":1'), /checksum/],
    [(text) => text.slice(0, 10), /not JSON/],
    [() => JSON.stringify({ epoch: -1, fenceMax: 3 }), /not \{epoch, fenceMax, lastHop\}/],
  ];
  for (const [edit, reason] of damages) {
    inDir((dir) => {
      new RingStorage(dir).apply([{ type: "hardState", state: { epoch: 7, fenceMax: 30, lastHop: 4 } }]);
      assertRefusesToStart(join(dir, STATE_FILE), edit, reason, () => new RingStorage(dir).load());
    });
  }
});

/** `load` throws for `file` damaged by `edit`, naming it and `reason`, and leaves the file as it was. */
function assertRefusesToStart(file: string, edit: (text: string) => string, reason: RegExp, load: () => unknown): void {
  writeFileSync(file, edit(readFileSync(file, "utf8")));
  const before = readFileSync(file, "utf8");
  assert.throws(load, (error: Error) => {
    assert.ok(error.message.startsWith(`${file}: `), error.message);
    assert.match(error.message, reason);
    assert.match(error.message, /Refusing to start/);
    return true;
  });
  assert.equal(readFileSync(file, "utf8"), before, "left for the operator as it was");
}

test("ring storage: a bad snapshot is set aside (*.corrupt) with the whole log; the node starts from its hard state alone; a ring of one refuses", () => {
  inDir((dir) => {
    const storage = new RingStorage(dir);
    const snapshot: RingSnapshot = { wseq: 2, kv: [["k1", "a"], ["k2", "b"]] };
    storage.apply([
      { type: "hardState", state: { epoch: 2, fenceMax: 5, lastHop: 9 } },
      { type: "snapshot", snapshot, tail: [write(3, "c")] },
      { type: "log", record: commit(3) },
    ]);
    storage.close();
    const file = join(dir, SNAPSHOT_FILE);
    const good = readFileSync(file, "utf8");
    writeFileSync(file, good.replace('"b"', '"X"'));
    assert.throws(() => new RingStorage(dir).load({ alone: true }), new RegExp(`${SNAPSHOT_FILE}: checksum .*no peer to catch up from`));
    const loaded = new RingStorage(dir).load();
    assert.deepEqual([loaded.hardState, loaded.snapshot, loaded.records], [{ epoch: 2, fenceMax: 5, lastHop: 9 }, undefined, []]);
    assert.equal(loaded.badSnapshot?.file, file);
    assert.match(loaded.badSnapshot?.reason ?? "", /checksum/);
    assert.equal(readFileSync(`${file}.corrupt`, "utf8"), good.replace('"b"', '"X"'), "kept for the operator");
    assert.equal(readFileSync(join(dir, LOG_FILE), "utf8"), "", "the log, whose entries follow the snapshot, went with it");
    const again = new RingStorage(dir).load();
    assert.deepEqual([again.snapshot, again.records, again.badSnapshot], [undefined, [], undefined]);
  });
});

test("ring storage: files of format version 1 (no envelope, as mutexd wrote them before) load with their data and are rewritten as version 2", () => {
  inDir((dir) => {
    // Exactly what the writer of version 1 made: JSON.stringify of the value, the log one record
    // per line with "\n", and a hard state from before lastHop existed.
    const snapshot: RingSnapshot = { wseq: 2, kv: [["k1", "a"], ["k2", "b"]] };
    const records = [entry(3, "c"), commit(3), entry(4, "d"), { type: "truncate", from: 4 } as RingLogRecord, entry(4, "e")];
    writeFileSync(join(dir, STATE_FILE), JSON.stringify({ epoch: 3, fenceMax: 12 }));
    writeFileSync(join(dir, SNAPSHOT_FILE), JSON.stringify(snapshot));
    writeFileSync(join(dir, LOG_FILE), records.map((r) => JSON.stringify(r) + "\n").join(""));
    const loaded = new RingStorage(dir).load();
    assert.deepEqual([loaded.hardState, loaded.snapshot, loaded.records], [{ epoch: 3, fenceMax: 12, lastHop: 0 }, snapshot, records]);
    assert.deepEqual([loaded.badRecord, loaded.badSnapshot, loaded.tornLines], [undefined, undefined, 0]);
    assert.deepEqual(loaded.upgraded.sort(), [STATE_FILE, SNAPSHOT_FILE, LOG_FILE].map((f) => join(dir, f)).sort());
    for (const f of [STATE_FILE, SNAPSHOT_FILE, LOG_FILE]) {
      for (const line of readFileSync(join(dir, f), "utf8").split("\n").filter((l) => l !== "")) {
        assert.ok(line.startsWith(`{"v":${FORMAT_VERSION},"format":"1.0","crc":`), `${f} rewritten as version ${FORMAT_VERSION}: ${line}`);
      }
    }
    // The same data from the rewritten files, nothing left to upgrade; and appends go on.
    const storage = new RingStorage(dir);
    assert.deepEqual(storage.load(), { ...loaded, upgraded: [] });
    storage.apply([{ type: "log", record: commit(4) }]);
    storage.close();
    assert.deepEqual(new RingStorage(dir).load().records, [...records, commit(4)]);
  });
});

test("ring storage: a file of a newer format version is refused, naming the file and both versions", () => {
  const newer = `{"v":${FORMAT_VERSION + 1},"crc":1,"data":{}}`;
  for (const name of [STATE_FILE, SNAPSHOT_FILE, LOG_FILE]) {
    inDir((dir) => {
      writeFileSync(join(dir, name), name === LOG_FILE ? newer + "\n" : newer);
      const where = name === LOG_FILE ? `${name}:1` : name;
      const message = `${where}: format version ${FORMAT_VERSION + 1} is newer than this mutexd's (${FORMAT_VERSION})`;
      assert.throws(() => new RingStorage(dir).load(), (error: Error) => error.message.includes(message));
    });
  }
});

const VIEW_STATE: ViewHardState = {
  promised: { epoch: 5, coordinator: "r2" },
  view: { epoch: 4, coordinator: "r1", members: ["r1", "r2", "r4"], regenerator: "r2", startWseq: 17, resendFromWseq: 15, grantWaitMs: 240 },
};

test("ring storage: the view change's hard state (promised ballot, installed view) round-trips durably; none stored reads as null", () => {
  inDir((dir) => {
    assert.equal(new RingStorage(dir).loadView(), null, "a node that never promised");
    new RingStorage(dir).storeView({ promised: { epoch: 1, coordinator: "r1" }, view: null });
    new RingStorage(dir).storeView(VIEW_STATE);
    assert.deepEqual(new RingStorage(dir).loadView(), VIEW_STATE, "the last one stored");
    // A view with the voter list it was decided under (VIEW_STATE has none, as earlier versions stored).
    const withVoters: ViewHardState = { ...VIEW_STATE, view: { ...VIEW_STATE.view!, voters: ["r1", "r2", "r3", "r4"] } };
    new RingStorage(dir).storeView(withVoters);
    assert.deepEqual(new RingStorage(dir).loadView(), withVoters, "its voters kept");
    new RingStorage(dir).storeView(VIEW_STATE);
    const text = readFileSync(join(dir, VIEW_FILE), "utf8");
    assert.match(text, new RegExp(`^\\{"v":${FORMAT_VERSION},"format":"1\\.0","crc":\\d+,"data":`), "in the versioned envelope");
    assert.ok(!existsSync(join(dir, `${VIEW_FILE}.tmp`)), "replaced through a renamed temporary file");
  });
});

test("ring storage: a bad ring-view.json refuses to start, naming the file and why (a forgotten promise could be given twice)", () => {
  const damages: Array<[(text: string) => string, RegExp]> = [
    [(text) => text.replace('"epoch":5', '"epoch":3'), /checksum/],
    [(text) => text.slice(0, 12), /not JSON/],
    [() => JSON.stringify(VIEW_STATE), /format version 1/],
    [() => envelopeOf({ promised: { epoch: 3, coordinator: "r2" }, view: VIEW_STATE.view }), /no newer than the promise/],
    [() => envelopeOf({ ...VIEW_STATE, view: { ...VIEW_STATE.view!, regenerator: "r9" } }), /not \{promised, view\}/],
    [() => envelopeOf({ ...VIEW_STATE, view: { ...VIEW_STATE.view!, voters: ["r1", "r1"] } }), /not \{promised, view\}/],
    [() => envelopeOf({ ...VIEW_STATE, view: { ...VIEW_STATE.view!, voters: "r1,r2" } }), /not \{promised, view\}/],
  ];
  for (const [edit, reason] of damages) {
    inDir((dir) => {
      new RingStorage(dir).storeView(VIEW_STATE);
      assertRefusesToStart(join(dir, VIEW_FILE), edit, reason, () => new RingStorage(dir).loadView());
    });
  }
});

test("ring node process: killed -9, its log's last line torn, it restarts, drops that line and serves every committed write; a ring of one with a bad first line refuses to start", { timeout: 60_000 }, async () => {
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
    // A bad whole line in a ring of one: no peer has the writes it would drop, so the node
    // refuses to start, naming file and line (a ring of more catches up: ring_disk_process_test).
    node.kill("SIGKILL");
    await node.exited;
    const lines = readFileSync(logPath, "utf8").split("\n");
    lines[0] = lines[0].slice(0, Math.floor(lines[0].length / 2));
    writeFileSync(logPath, lines.join("\n"));
    node = startMutexd(["node", "--config", file, "--id", "r1"]);
    assert.notEqual(await node.exited, 0, "a ring of one with a bad record does not start");
    assert.match(node.stderr(), new RegExp(`${LOG_FILE}:1: .*no peer to catch up from`));
  } finally {
    node.kill("SIGKILL");
    await node.exited;
    removeDir(dir);
  }
});
