/**
 * Each file mutexd writes carries its own disk format (cluster/format_version.ts, checkFileFormat),
 * so a file copied in from another build's dataDir is caught even under a dataDir marker of ours:
 * the lock server's snapshot and log (lock/durable_log.ts, a "format" in each record's envelope),
 * the arbiter's arbiter.json (a "format" field), the ring's state, snapshot, log, view and
 * incarnation files (ring/storage.ts, the same in each envelope). Per file: what is written names
 * 1.0 and reads back the same (round trip); a file of a build before files carried a format (no
 * field) loads; one of format 2.0 is refused with a DiskFormatError naming the file (the log: its
 * line) and both versions, also when it is a log's last line (not dropped as a torn append) and
 * when its checksum does not match ours (another major may checksum otherwise). Then a real
 * `mutexd node` (an arbiter) with a 2.0 arbiter.json in a dataDir marked 1.0 exits 2 with one line.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { DiskFormatError } from "../cluster/format_version.ts";
import { encodeRecord, LOG_FILE as LOCK_LOG_FILE, readDurableCopy, SNAPSHOT_FILE as LOCK_SNAPSHOT_FILE } from "../cluster/lock/durable_log.ts";
import { fileArbiterStore, loadArbiterState } from "../cluster/arbiter/server.ts";
import { INCARNATION_FILE, LOG_FILE, RingStorage, SNAPSHOT_FILE, STATE_FILE, VIEW_FILE } from "../cluster/ring/storage.ts";
import type { ArbiterState } from "../lib/core/arbiter/arbiter.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { removeDir, startMutexd, tempDir, writeCluster } from "./_harness.ts";

const OURS = '"format":"1.0"';
const NEWER = '"format":"2.0"';

/** Runs `body` with a fresh directory, removed afterwards (also when it failed). */
function inDir(body: (dir: string) => void): void {
  const dir = tempDir("mutexd-file-format-");
  try {
    body(dir);
  } finally {
    removeDir(dir);
  }
}

/** Replaces every `from` in `file` by `to` (the test's own edit must change the file). */
function edit(file: string, from: string, to: string): void {
  const text = readFileSync(file, "utf8");
  assert.ok(text.includes(from), `${file} holds ${from}: ${text}`);
  writeFileSync(file, text.replaceAll(from, to));
}

/** `read` throws a DiskFormatError naming `where` and both versions. */
function refused(read: () => unknown, where: string): void {
  assert.throws(read, (error: Error) => {
    assert.ok(error instanceof DiskFormatError, `${error.name}: ${error.message}`);
    assert.ok(error.message.includes(`${where} has format version 2.0, this build reads 1.0`), error.message);
    return true;
  });
}

const ANSWERED = DEFAULT_SETTINGS;

test("lock server's durable files: each record names format 1.0 and reads back; records without it load; a 2.0 snapshot or log line is refused naming it", () => {
  inDir((dir) => {
    const snapshot = join(dir, LOCK_SNAPSHOT_FILE);
    const log = join(dir, LOCK_LOG_FILE);
    const view = { g: 3, view: { epoch: 4, primary: "p1" } };
    writeFileSync(snapshot, encodeRecord({ fileGen: 3, copy: null }));
    writeFileSync(log, encodeRecord(view));
    assert.ok(readFileSync(snapshot, "utf8").startsWith(`{"v":1,${OURS},"crc":`), "the snapshot names its format");
    assert.ok(readFileSync(log, "utf8").startsWith(`{"v":1,${OURS},"crc":`), "each log line names its format");
    assert.deepEqual(readDurableCopy(dir, DEFAULT_SETTINGS, ANSWERED), { restored: null, tornLines: 0, replayed: 0, fileGen: 3 });

    // As a build before files carried a format wrote them: the same records without the field.
    edit(snapshot, `${OURS},`, "");
    edit(log, `${OURS},`, "");
    assert.deepEqual(readDurableCopy(dir, DEFAULT_SETTINGS, ANSWERED), { restored: null, tornLines: 0, replayed: 0, fileGen: 3 }, "no format: 1.0");

    writeFileSync(snapshot, encodeRecord({ fileGen: 3, copy: null }).replace(OURS, NEWER));
    refused(() => readDurableCopy(dir, DEFAULT_SETTINGS, ANSWERED), join(dir, LOCK_SNAPSHOT_FILE));
    writeFileSync(snapshot, encodeRecord({ fileGen: 3, copy: null }));
    // The log's only (so last) line: refused, not dropped as a torn append; its checksum too is not ours.
    writeFileSync(log, encodeRecord(view).replace(OURS, NEWER).replace(/"crc":\d+/, '"crc":1'));
    refused(() => readDurableCopy(dir, DEFAULT_SETTINGS, ANSWERED), `${join(dir, LOCK_LOG_FILE)}: line 1`);
    // A 2.0 line of another shape that still names its format.
    writeFileSync(log, JSON.stringify({ format: "2.0", records: [] }) + "\n");
    refused(() => readDurableCopy(dir, DEFAULT_SETTINGS, ANSWERED), `${join(dir, LOCK_LOG_FILE)}: line 1`);
  });
});

const ARBITER_STATE: ArbiterState = {
  epoch: 5,
  primary: "p1",
  backup: "b1",
  backupInSync: true,
  reportSeq: 2,
  backupIncarnation: "b1-x",
  ttlMaxMs: 30_000,
  tokenCeiling: 900,
  behindEpoch: 0,
} as ArbiterState;

test("arbiter.json: saved with format 1.0 and loaded without it in the state; a record without it loads; a 2.0 record is refused naming the file", () => {
  inDir((dir) => {
    const file = join(dir, "arbiter.json");
    fileArbiterStore(file).save(ARBITER_STATE);
    assert.equal(JSON.parse(readFileSync(file, "utf8")).format, "1.0");
    assert.deepEqual(fileArbiterStore(file).load(), ARBITER_STATE, "round trip; the format is not part of the state");
    writeFileSync(file, JSON.stringify(ARBITER_STATE));
    assert.deepEqual(loadArbiterState(file), ARBITER_STATE, "a record of a build before files carried a format");
    writeFileSync(file, JSON.stringify({ format: "2.0", ...ARBITER_STATE }));
    refused(() => loadArbiterState(file), file);
  });
});

test("ring files: state, snapshot, log, view and incarnation name format 1.0 and read back; without it they load; one of 2.0 is refused naming it", () => {
  const fill = (dir: string) => {
    const storage = new RingStorage(dir);
    storage.apply([
      { type: "hardState", state: { epoch: 3, fenceMax: 9, lastHop: 2 } },
      { type: "snapshot", snapshot: { wseq: 1, kv: [["k1", "a"]] }, tail: [] },
      { type: "log", record: { type: "commit", wseq: 1 } },
    ]);
    storage.storeView({ promised: { epoch: 3, coordinator: "r1" }, view: null });
    storage.close();
    assert.equal(new RingStorage(dir).nextIncarnation(0).inc, 1);
  };
  const read = (dir: string) => {
    const storage = new RingStorage(dir);
    const { hardState, snapshot, records } = storage.load();
    return { hardState, snapshot, records, view: storage.loadView(), inc: storage.nextIncarnation(0) };
  };
  const expected = {
    hardState: { epoch: 3, fenceMax: 9, lastHop: 2 },
    snapshot: { wseq: 1, kv: [["k1", "a"]] },
    records: [{ type: "commit", wseq: 1 }],
    view: { promised: { epoch: 3, coordinator: "r1" }, view: null },
    inc: { inc: 2 },
  };
  const files = [STATE_FILE, SNAPSHOT_FILE, LOG_FILE, VIEW_FILE, INCARNATION_FILE];
  inDir((dir) => {
    fill(dir);
    for (const name of files) assert.ok(readFileSync(join(dir, name), "utf8").includes(`,${OURS},`), `${name} names its format`);
    assert.deepEqual(read(dir), expected, "round trip");
    for (const name of files) edit(join(dir, name), `${OURS},`, "");
    assert.deepEqual(read(dir), { ...expected, inc: { inc: 3 } }, "files of a build before files carried a format");
  });
  for (const name of files) {
    inDir((dir) => {
      fill(dir);
      edit(join(dir, name), OURS, NEWER);
      refused(() => read(dir), name === LOG_FILE ? `${join(dir, name)}:1` : join(dir, name));
    });
  }
});

test("mutexd node: an arbiter whose arbiter.json is of format 2.0 (in a dataDir marked 1.0) does not start: exit 2, one line naming the file and both versions", { timeout: 30_000 }, async () => {
  const dir = tempDir("mutexd-file-format-");
  try {
    const data = join(dir, ".data", "a9");
    mkdirSync(data, { recursive: true });
    const file = writeCluster(dir, `[cluster]\ndurable = true\n\n[[nodes]]\nid = "a9"\nrole = "arbiter"\nhttp = "127.0.0.1:1"\n`);
    writeFileSync(join(data, "format.json"), JSON.stringify({ format: "1.0" }));
    writeFileSync(join(data, "arbiter.json"), JSON.stringify({ format: "2.0", ...ARBITER_STATE }));
    const node = startMutexd(["node", "--config", file, "--id", "a9"]);
    assert.equal(await node.exited, 2);
    const lines = node.stderr().split("\n").filter((l) => l.startsWith("mutexd:"));
    assert.equal(lines.length, 1, node.stderr());
    assert.match(lines[0], /^mutexd: node a9 cannot start: .*\.data\/a9\/arbiter\.json has format version 2\.0, this build reads 1\.0/);
  } finally {
    removeDir(dir);
  }
});
