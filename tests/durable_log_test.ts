/**
 * The lock server's durable log (cluster/lock/durable_log.ts) on a real temp dir: group commit
 * (entries written while an fsync runs go out in one batch), a restart reads back exactly the
 * copy written (table, tokens, queues, answered ids, view), a torn or bad tail is dropped while
 * damage before good records refuses the start, compaction keeps the copy, and a dropped copy
 * reads back as none. The backup's held ack is checked here on LockService with a sink the test
 * controls; the core's side (the commit gate) is in tests/lock_replica_test.ts and the process tests.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { SECRET_HASH } from "./_session.ts";
import {
  type DurableLog,
  encodeRecord,
  LOG_FILE,
  openDurableLog,
  readDurableCopy,
  SNAPSHOT_CHUNK_ITEMS,
  SnapshotEncoder,
} from "../cluster/lock/durable_log.ts";
import { LockMachine, type LogEntry } from "../lib/core/lock/lock_machine.ts";
import { LockTable } from "../lib/core/lock/lock_table.ts";
import type { PersistRecord } from "../lib/core/lock/durable_copy.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { manualClock } from "../cluster/clock.ts";
import { memoryLogger } from "../cluster/log.ts";
import { realTimers } from "../cluster/timers.ts";
import { LockService } from "../cluster/lock/service.ts";
import type { PeerMessage } from "../lib/core/lock/lock_replica.ts";
import { eventually, removeDir, tempDir } from "./_harness.ts";

const LIMITS = DEFAULT_SETTINGS;
const ANSWERED = { answeredMax: 100, answeredBytesMax: DEFAULT_SETTINGS.answeredBytesMax };

/** A copy being written: the machine, its log entries so far, and the records for the sink. */
class Writer {
  readonly machine = new LockMachine(new LockTable({ limits: LIMITS, sessionIdPrefix: "t-", tokenFloor: 1000 }), ANSWERED);
  readonly durable: Array<[number, number]> = [];
  private nextIndex = 1;
  readonly sessions: string[] = [];

  constructor(readonly log: DurableLog, readonly copyGen = 1) {
    log.start((gen, index) => this.durable.push([gen, index]));
  }

  /** `incarnation`: the id the copy is stored with (the process that made it). */
  base(epoch: number, primary: string | null, incarnation?: string): void {
    this.log.write([{ type: "base", copyGen: this.copyGen, machine: this.machine, epoch, primary, ...(incarnation ? { incarnation } : {}) }]);
  }

  /** Applies one command and writes its record, as the driver does after the core's step. */
  apply(command: LogEntry["command"], requestId?: string): void {
    const entry: LogEntry = { index: this.nextIndex++, epoch: 1, atMs: 1000 + this.nextIndex, command };
    if (requestId) entry.requestId = requestId;
    const output = this.machine.apply(entry);
    if (output.result.ok && output.result.type === "session") this.sessions.push(output.result.session);
    const records: PersistRecord[] = [{ type: "entry", copyGen: this.copyGen, entry }];
    this.log.write(records);
  }

  /** Sessions, some holding locks, some waiting behind them. */
  populate(sessions: number): void {
    for (let i = 0; i < sessions; i++) this.apply({ type: "openSession", secretHash: SECRET_HASH, ttlMs: 60_000 }, `open-${i}`);
    this.sessions.forEach((session, i) => {
      this.apply({
        type: "enter",
        secretHash: SECRET_HASH,
        name: `lock-${i % Math.ceil(sessions / 2)}`,
        session,
        mode: "exclusive",
        waitMs: 60_000,
        lockDelayMs: 0,
      });
    });
  }
}

function open(dir: string, compactEntries = 1_000_000, onFailure = (error: Error) => assert.fail(error)) {
  const opened = openDurableLog(dir, {
    limits: LIMITS,
    answered: ANSWERED,
    compactEntries,
    onFailure,
    defer: (fn) => setTimeout(fn, 0),
  });
  return { ...opened, log: Object.assign(opened.log, { close: () => (opened.log.stop(), opened.disk.close()) }) };
}

async function settled(writer: Writer): Promise<void> {
  await eventually("every entry on disk", () => writer.durable.at(-1)?.[1] === writer.machine.appliedIndex);
}

/** Runs `body` on a fresh temp dir, removed afterwards. */
async function inTempDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = tempDir();
  try {
    await body(dir);
  } finally {
    removeDir(dir);
  }
}

/** A log in `dir` with a copy (epoch 1, primary p) of `sessions` sessions written and synced. */
async function writtenCopy(dir: string, sessions: number, compactEntries?: number) {
  const { log } = open(dir, compactEntries);
  const writer = new Writer(log);
  writer.base(1, "p");
  writer.populate(sessions);
  await settled(writer);
  return { log, writer };
}

test("group commit: what is written while an fsync runs goes to disk in one batch, reported in order", () =>
  inTempDir(async (dir) => {
    const { log, writer } = await writtenCopy(dir, 50);
    // The first snapshot and the base went alone (the disk was idle), everything after gathered
    // behind them: at most one more write for the 100 entries, not one per entry.
    assert.ok(
      writer.durable.length <= 3,
      `${writer.durable.length} writes for 100 entries: ${JSON.stringify(writer.durable)}`,
    );
    const indexes = writer.durable.map(([, index]) => index);
    assert.deepEqual(indexes, [...indexes].sort((a, b) => a - b), "reported in order");
    log.close();
  }));

test("a restart reads back the copy written: table, tokens, queues, answered ids, view, the copy's incarnation", () =>
  inTempDir(async (dir) => {
    const { log } = open(dir);
    const writer = new Writer(log);
    writer.base(3, "p", "b-proc-1");
    writer.populate(20);
    log.write([{ type: "view", copyGen: 1, epoch: 4, primary: "b" }]);
    writer.apply({ type: "tick" });
    await settled(writer);
    log.close();
    const read = readDurableCopy(dir, LIMITS, ANSWERED);
    assert.equal(read.tornLines, 0);
    assert.deepEqual(read.restored?.machine.snapshot(), writer.machine.snapshot());
    assert.equal(read.restored?.epoch, 4);
    assert.equal(read.restored?.primary, "b");
    assert.equal(read.restored?.incarnation, "b-proc-1", "the id stored with the copy, kept across a view");
    assert.ok(read.restored!.machine.table.snapshot().locks.some((l) => l.queue.length > 0), "waiters were queued");
    // And it opens again (the read copy rewritten as a snapshot), with the same copy.
    const again = open(dir);
    assert.deepEqual(again.opened.restored?.machine.snapshot(), writer.machine.snapshot());
    assert.equal(again.opened.restored?.incarnation, "b-proc-1");
    // Its first write rewrites the copy read; waited for, so no write runs into the temp dir's
    // removal (it did: ENOTEMPTY), and the rewrite keeps the copy's id.
    let rewritten = false;
    again.log.start(() => (rewritten = true));
    await eventually("the copy read rewritten", () => rewritten);
    assert.equal(readDurableCopy(dir, LIMITS, ANSWERED).restored?.incarnation, "b-proc-1");
    again.log.close();
  }));

test("a torn or bad tail is dropped; damage before a good record refuses the start", () =>
  inTempDir(async (dir) => {
    const { log, writer } = await writtenCopy(dir, 6);
    log.close();
    const file = join(dir, LOG_FILE);
    const good = readFileSync(file, "utf8");
    const lines = good.split("\n").filter((l) => l.length > 0);

    appendFileSync(file, lines[0].slice(0, 20)); // a torn append: no newline
    let read = readDurableCopy(dir, LIMITS, ANSWERED);
    assert.equal(read.tornLines, 1);
    assert.deepEqual(read.restored?.machine.snapshot(), writer.machine.snapshot());

    // The last line complete but its checksum wrong (a write that never reached the disk whole).
    const flipped = (line: string) => line.replace(/"crc":(\d+)/, (_m, crc) => `"crc":${(Number(crc) + 1) % 2 ** 32}`);
    writeFileSync(file, lines.slice(0, -1).join("\n") + "\n" + flipped(lines.at(-1)!) + "\n");
    read = readDurableCopy(dir, LIMITS, ANSWERED);
    assert.equal(read.tornLines, 1);
    assert.equal(
      read.restored?.machine.appliedIndex,
      writer.machine.appliedIndex - 1,
      "only the bad last entry is lost",
    );

    // A bad record with good ones after it: acknowledged data is damaged, the start is refused.
    writeFileSync(file, [lines[0], flipped(lines[1]), ...lines.slice(2)].join("\n") + "\n");
    assert.throws(() => readDurableCopy(dir, LIMITS, ANSWERED), /line 2: checksum mismatch, and good lines follow it/);
    assert.throws(() => open(dir), /checksum mismatch/);

    // A gap in the entries (a line lost in the middle) is damage too.
    writeFileSync(file, [lines[0], ...lines.slice(2)].join("\n") + "\n");
    assert.throws(() => readDurableCopy(dir, LIMITS, ANSWERED), /line 2: entry 3 after 1/);
  }));

test("compaction: past compactEntries a snapshot replaces the log, and the copy reads back whole", () =>
  inTempDir(async (dir) => {
    const { log, writer } = await writtenCopy(dir, 30, 10);
    log.close();
    const lines = readFileSync(join(dir, LOG_FILE), "utf8").split("\n").filter((l) => l.length > 0);
    assert.ok(lines.length <= 10, `${lines.length} lines after compaction at 10`);
    const read = readDurableCopy(dir, LIMITS, ANSWERED);
    assert.deepEqual(read.restored?.machine.snapshot(), writer.machine.snapshot());
  }));

test("a dropped copy (a base without a machine) reads back as none; lines of an older snapshot are skipped", () =>
  inTempDir(async (dir) => {
    const { log, writer } = await writtenCopy(dir, 4);
    const before = readFileSync(join(dir, LOG_FILE), "utf8");
    log.write([{ type: "base", copyGen: 2, machine: null, epoch: 2, primary: null }]);
    await eventually("the drop on disk", () => writer.durable.some(([gen]) => gen === 2));
    log.close();
    assert.equal(readDurableCopy(dir, LIMITS, ANSWERED).restored, null);
    // A crash between the new snapshot's rename and the log's truncation leaves the old lines.
    writeFileSync(join(dir, LOG_FILE), before);
    assert.equal(readDurableCopy(dir, LIMITS, ANSWERED).restored, null);
  }));

test("a snapshot's text made in chunks, one per turn, is exactly the record encoded at once", () => {
  const { machine } = new Writer({ start() {}, write() {} } as unknown as DurableLog);
  const table = new LockTable({ limits: LIMITS, sessionIdPrefix: "t-", tokenFloor: 1000 });
  const big = new LockMachine(table, ANSWERED);
  // More sessions than one chunk holds, so it takes several steps; locks and answered ids too.
  for (let i = 1; i <= SNAPSHOT_CHUNK_ITEMS + 10; i++) {
    const entry: LogEntry = {
      index: i,
      epoch: 1,
      atMs: i,
      command: { type: "openSession", secretHash: SECRET_HASH, ttlMs: 60_000 },
      requestId: `r${i}`,
    };
    big.apply(entry);
  }
  const session = [...big.table.snapshot().sessions][0].id;
  const atMs = big.appliedIndex + 1;
  big.apply({
    index: atMs,
    epoch: 1,
    atMs,
    command: { type: "enter", secretHash: SECRET_HASH, name: "L", session, mode: "exclusive", waitMs: 0, lockDelayMs: 0 },
  });
  for (
    const copy of [null, { epoch: 2, primary: "p", machine: machine.snapshot() }, {
      epoch: 3,
      primary: "b",
      machine: big.snapshot(),
    }]
  ) {
    const data = { fileGen: 7, copy };
    const encoder = new SnapshotEncoder(data);
    let parts: string[] | undefined;
    let steps = 0;
    for (; steps < 100 && parts === undefined; steps++) parts = encoder.step();
    assert.equal(parts?.join(""), encodeRecord(data));
    if (copy?.epoch === 3) assert.ok(steps > 1, `${steps} step(s) for more than a chunk`);
  }
});

test("a durable backup's ack waits until its disk has the entries it acknowledges; at stop a held ack is answered claiming nothing", () => {
  // A backup restarted with a copy of epoch 1 under p (kept: case 2), on a sink that reports
  // only what the test says is on disk.
  let onDurable: (copyGen: number, index: number) => void = () => {};
  const written: PersistRecord[] = [];
  const restored = { machine: new LockMachine(new LockTable({ limits: LIMITS, sessionIdPrefix: "r-", tokenFloor: 0 }), ANSWERED), epoch: 1, primary: "p" };
  const service = new LockService({
    settings: LIMITS,
    clock: manualClock(1_000),
    log: memoryLogger(),
    nodeId: "b",
    peer: { id: "p", url: "http://127.0.0.1:1" },
    arbiter: { id: "a", url: "http://127.0.0.1:2" },
    transport: { send: () => new Promise(() => {}) }, // nothing answers: only the test's appends arrive
    timers: realTimers,
    sessionIdPrefix: "b-",
    tokenFloor: 0,
    durable: { restored, sink: { start: (fn) => (onDurable = fn), write: (records) => written.push(...records) } },
  });
  const answers: PeerMessage[] = [];
  const append = (index: number) => {
    const entry: LogEntry = { index, epoch: 1, atMs: 1_000 + index, command: { type: "tick" } };
    service.peerMessageThen({ type: "append", from: "p", epoch: 1, syncGen: 0, entries: [entry] }, (answer) => answers.push(answer));
  };
  try {
    append(1);
    assert.equal(answers.length, 0, "held: entry 1 is not on disk");
    const entry = written.find((r) => r.type === "entry");
    assert.ok(entry?.type === "entry" && entry.entry.index === 1, "entry 1 was given to the log");
    onDurable(entry.copyGen, 1);
    assert.equal(answers.length, 1);
    assert.ok(answers[0].type === "appendAck" && answers[0].ok && answers[0].appliedIndex === 1, "acked once on disk");
    append(2);
    assert.equal(answers.length, 1, "entry 2 held");
    service.stop();
    assert.equal(answers.length, 2, "answered at stop");
    assert.ok(answers[1].type === "appendAck" && !answers[1].ok && answers[1].appliedIndex === 0, "claiming nothing");
  } finally {
    service.stop();
  }
});
