/**
 * The durable log of a lock server (`durable = true`), the driver's side of
 * lib/core/lock/durable_copy.ts: it writes the core's records to the node's dataDir and reports
 * back how far they are on disk, with group commit: one write and one fsync for everything that
 * gathered while the previous fsync ran, never one per entry, and one fsync in flight at a time.
 *
 * Files (format version 1; every record is one line `{"v":1,"format":F,"crc":C,"data":D}`, F the
 * disk format of the build that wrote it (cluster/format_version.ts; a record without it, from
 * a build before files carried one, is 1.0), C the CRC-32 of the text D, as the ring's storage does):
 * - `lock-snapshot.json`: `{fileGen, copy}`: the copy (epoch, primary, the incarnation of the
 *   process that made it, LockMachineSnapshot) or null. Written whole to a temporary name, fsynced, renamed, the directory fsynced.
 * - `lock-log.jsonl`: `{g, entry}` and `{g, view}` lines appended after the snapshot of fileGen g.
 *   Lines of another fileGen are left from before a snapshot replaced the log (a crash between
 *   the rename and the truncation) and are skipped.
 * Reading: a last line without its newline, or bad lines at the very end, were never fsynced
 * (so never acknowledged) and are dropped; a bad line followed by a good one, or a gap in the
 * entries, is damage to what was acknowledged, and the server refuses to start (exit 70 from the
 * caller: a copy with a hole must not be served). The first write after reading is a new
 * snapshot of the copy read, so the log the process appends to starts clean.
 *
 * Compaction: once `compactEntries` lines follow the snapshot, the next write is a new snapshot
 * of the current copy. Its point-in-time copy (LockMachine.snapshot, 20-100 ms at 100,000 locks
 * and 10,000 sessions on this machine, the one stall) is taken at once; its text and checksum
 * are made SNAPSHOT_CHUNK_ITEMS items per turn of the event loop (`defer`), a few ms each, while
 * the server goes on (encoding the whole at once took 130-270 ms); the file I/O is asynchronous.
 *
 * I/O is node:fs with callbacks (the port rule of cluster/timers.ts: no awaits). A write or fsync
 * that fails calls `onFailure`, which must stop the process (cluster/fail_stop.ts): nothing is
 * reported durable after a failure, so nothing that depends on it is answered.
 */
import { close, fsync, mkdirSync, open, rename, write } from "node:fs";
import { join } from "node:path";
import { crc32 } from "../checksum.ts";
import { readIfExists } from "../durable_file.ts";
import { checkFileFormat, FILE_FORMAT } from "../format_version.ts";
import type { AnsweredLimits } from "../../lib/core/lock/answered.ts";
import { LockMachine, type LockMachineSnapshot, type LogEntry } from "../../lib/core/lock/lock_machine.ts";
import type { PersistRecord, RestoredCopy } from "../../lib/core/lock/durable_copy.ts";
import type { LockTableLimits } from "../../lib/core/lock/lock_table.ts";
import type { DurableSink } from "./durable_acks.ts";

export const DURABLE_FORMAT_VERSION = 1;
/** Sessions, locks or answered ids of a snapshot encoded per turn of the event loop. */
export const SNAPSHOT_CHUNK_ITEMS = 2_000;
export const SNAPSHOT_FILE = "lock-snapshot.json";
export const LOG_FILE = "lock-log.jsonl";

export interface SnapshotData {
  fileGen: number;
  copy: { epoch: number; primary: string | null; incarnation?: string; machine: LockMachineSnapshot } | null;
}

type LineData = { g: number; entry: LogEntry } | { g: number; view: { epoch: number; primary: string | null } };

/** A record's text up to its data: the envelope's version, the disk format, the data's checksum. */
function recordHead(crc: number): string {
  return `{"v":${DURABLE_FORMAT_VERSION},"format":"${FILE_FORMAT}","crc":${crc},"data":`;
}

/** One record of either file: its line, newline included. */
export function encodeRecord(data: unknown): string {
  const text = JSON.stringify(data);
  return `${recordHead(crc32(text))}${text}}\n`;
}

/** The envelope; the format is optional: records of builds before files carried one are 1.0. */
const RECORD = /^\{"v":(\d+),(?:"format":"([^"\\]{0,40})",)?"crc":(\d+),"data":(.*)\}$/s;

/**
 * The data of one line (without its newline), or why it is not a good record. A record of
 * another major disk format throws a DiskFormatError naming `where` (checked before the
 * checksum: a build of another format may checksum otherwise, and its whole log must not be
 * dropped as a torn tail); so does a line that is no envelope of ours but JSON naming a format.
 */
export function decodeRecord(line: string, where = "a record"): { ok: true; data: unknown } | { ok: false; reason: string } {
  const match = RECORD.exec(line);
  if (!match) {
    checkFileFormat(where, formatOfJson(line));
    return { ok: false, reason: "not an envelope" };
  }
  checkFileFormat(where, match[2]);
  if (Number(match[1]) !== DURABLE_FORMAT_VERSION) {
    if (Number(match[1]) > DURABLE_FORMAT_VERSION) throw new Error(`${where}: format version ${match[1]} is newer than this mutexd's (${DURABLE_FORMAT_VERSION})`);
    return { ok: false, reason: `unknown format version ${match[1]}` };
  }
  if (crc32(match[4]) !== Number(match[3])) return { ok: false, reason: "checksum mismatch" };
  try {
    return { ok: true, data: JSON.parse(match[4]) };
  } catch {
    return { ok: false, reason: "not JSON" };
  }
}

/** The "format" of a line that is a JSON object naming one, else undefined. */
function formatOfJson(line: string): unknown {
  try {
    const value = JSON.parse(line) as unknown;
    return typeof value === "object" && value !== null ? (value as { format?: unknown }).format : undefined;
  } catch {
    return undefined;
  }
}

export interface OpenedLog {
  /** The copy on disk (null: none); the core takes it as `durable.restored`. */
  restored: RestoredCopy | null;
  /** Lines dropped at the end (never fsynced, so never acknowledged). */
  tornLines: number;
  /** Entries replayed after the snapshot. */
  replayed: number;
}

/** The two files, as the log uses them (FileLogDisk here; a simulated disk in the simulator). */
export interface LogDisk {
  /** Appends `text` to the log file and fsyncs it; `done` once it is on disk (or failed). */
  append(text: string, done: (error: Error | null) => void): void;
  /**
   * Replaces the snapshot file with the text `parts` make (in order) and starts an empty log
   * file, durably; then `done`. In parts: one string of a large snapshot would take a while to
   * join.
   */
  replace(parts: string[], done: (error: Error | null) => void): void;
}

export interface DurableLogOptions {
  limits: LockTableLimits;
  /** The remembered answers' bounds (count and bytes), as the machine keeps them. */
  answered: AnsweredLimits;
  /** Lines after the snapshot before the next write compacts (a new snapshot). */
  compactEntries: number;
  /** A write, fsync or rename failed: stop the process (never answer what the disk may lack). */
  onFailure: (error: Error) => void;
  /** Runs `fn` in a later turn of the event loop (a timers port's setTimeout 0). */
  defer: (fn: () => void) => void;
}

/** Reads the copy in `dir` (throws on damage to acknowledged records). Changes nothing on disk. */
export function readDurableCopy(dir: string, limits: LockTableLimits, answered: AnsweredLimits): OpenedCopy {
  const files = { snapshot: join(dir, SNAPSHOT_FILE), log: join(dir, LOG_FILE) };
  return parseDurableCopy(readIfExists(files.snapshot), readIfExists(files.log) ?? "", limits, answered, files);
}

export type OpenedCopy = OpenedLog & { fileGen: number };

/**
 * The copy in the two files' texts (undefined: no snapshot file). `names` name the files in
 * errors. The simulator's disk (tests/sim/failover/disk.ts) reads its texts with this too.
 */
export function parseDurableCopy(
  snapshotText: string | undefined,
  logText: string,
  limits: LockTableLimits,
  answered: AnsweredLimits,
  names = { snapshot: SNAPSHOT_FILE, log: LOG_FILE },
): OpenedCopy {
  let fileGen = 0;
  let copy: SnapshotData["copy"] = null;
  if (snapshotText !== undefined) {
    const decoded = decodeRecord(snapshotText.replace(/\n$/, ""), names.snapshot);
    // Written whole and renamed: a bad snapshot is damage, not a torn write.
    if (!decoded.ok) throw new Error(`${names.snapshot}: ${decoded.reason}`);
    ({ fileGen, copy } = decoded.data as SnapshotData);
  }
  const machine = copy ? LockMachine.fromSnapshot(copy.machine, limits, answered) : null;
  let view = copy ? { epoch: copy.epoch, primary: copy.primary } : null;
  const lines = logText.split("\n");
  // What follows the last newline is a torn append ("" when none).
  let tornLines = lines.pop() === "" ? 0 : 1;
  const decoded = lines.map((line, i) => decodeRecord(line, `${names.log}: line ${i + 1}`));
  let goodEnd = decoded.length;
  while (goodEnd > 0 && !decoded[goodEnd - 1].ok) goodEnd -= 1;
  tornLines += decoded.length - goodEnd;
  let replayed = 0;
  for (let i = 0; i < goodEnd; i++) {
    const record = decoded[i];
    if (!record.ok) throw new Error(`${names.log}: line ${i + 1}: ${record.reason}, and good lines follow it`);
    const data = record.data as LineData;
    if (data.g !== fileGen) continue;
    if ("view" in data) {
      view = data.view;
      continue;
    }
    if (!machine) throw new Error(`${names.log}: line ${i + 1}: an entry without a copy`);
    if (data.entry.index <= machine.appliedIndex) continue; // in the snapshot already
    if (data.entry.index !== machine.appliedIndex + 1) {
      throw new Error(`${names.log}: line ${i + 1}: entry ${data.entry.index} after ${machine.appliedIndex}`);
    }
    machine.apply(data.entry);
    replayed += 1;
  }
  const restored: RestoredCopy | null = machine && view ? { machine, epoch: view.epoch, primary: view.primary } : null;
  if (restored && copy?.incarnation !== undefined) restored.incarnation = copy.incarnation;
  return { restored, tornLines, replayed, fileGen };
}

type Op =
  | { kind: "lines"; text: string; copyGen: number; index: number }
  | { kind: "snapshot"; encoder: SnapshotEncoder; copyGen: number; index: number };

/** A piece of a snapshot's JSON text: literal text, or an array whose items are encoded in chunks. */
type Piece = string | unknown[];

/**
 * encodeRecord of a snapshot, made in steps: each `step()` encodes at most SNAPSHOT_CHUNK_ITEMS
 * items of the big arrays (sessions, locks, answered ids) and returns the record's text once
 * done. The text is exactly encodeRecord's (tests/durable_log_test.ts checks it): the JSON of a
 * shell whose big arrays are placeholders, with the arrays' items spliced in, and the CRC-32
 * continued over each piece.
 */
export class SnapshotEncoder {
  private readonly pieces: Piece[];
  private readonly parts: string[] = [];
  private crc = 0;
  private piece = 0;
  private item = 0;

  constructor(data: SnapshotData) {
    const copy = data.copy;
    if (!copy) {
      this.pieces = [JSON.stringify(data)];
      return;
    }
    const { machine } = copy;
    const arrays = { sessions: machine.table.sessions, locks: machine.table.locks, answered: machine.answered };
    const shell = {
      ...data,
      copy: {
        ...copy,
        machine: { ...machine, table: { ...machine.table, sessions: "\u0000sessions", locks: "\u0000locks" }, answered: "\u0000answered" },
      },
    };
    // The placeholders are the only strings with a NUL: the shell's other strings are node ids.
    let text = JSON.stringify(shell);
    const pieces: Piece[] = [];
    for (const [name, items] of Object.entries(arrays)) {
      const marker = JSON.stringify(`\u0000${name}`);
      const at = text.indexOf(marker);
      pieces.push(text.slice(0, at), items);
      text = text.slice(at + marker.length);
    }
    pieces.push(text);
    this.pieces = pieces;
  }

  /** Encodes the next chunk; the record's text (in parts) once everything is encoded. */
  step(): string[] | undefined {
    let budget = SNAPSHOT_CHUNK_ITEMS;
    while (this.piece < this.pieces.length && budget > 0) {
      const piece = this.pieces[this.piece];
      if (typeof piece === "string") {
        this.add(piece);
        this.piece += 1;
        continue;
      }
      const end = Math.min(piece.length, this.item + budget);
      const items = JSON.stringify(piece.slice(this.item, end));
      // "[a,b" for the first chunk, ",c,d" for the next; "]" after the last.
      this.add((this.item === 0 ? "[" : ",") + items.slice(1, -1));
      budget -= end - this.item;
      this.item = end;
      if (this.item >= piece.length) {
        this.add("]");
        this.piece += 1;
        this.item = 0;
      }
    }
    if (this.piece < this.pieces.length) return undefined;
    return [recordHead(this.crc), ...this.parts, "}\n"];
  }

  private add(text: string): void {
    this.parts.push(text);
    this.crc = crc32(text, this.crc);
  }
}

/** The log of one server process: `open` reads what is there, then it takes the core's records. */
export class DurableLog implements DurableSink {
  /**
   * Writes waiting for the running one: batches of lines between snapshots. Bounded by what the
   * core applies while one write runs, which its own limits bound (the answers it holds back,
   * replicationLogMax); a new copy or a compaction adds one snapshot.
   */
  private readonly queue: Op[] = [];
  private busy = false;
  private failed = false;
  private fileGen: number;
  private linesSinceSnapshot = 0;
  /** The current copy (for compaction) and its view, as the records left them. */
  private machine: LockMachine | null;
  private view: { epoch: number; primary: string | null };
  /** The id the current copy is stored with (DurableCopy.reportedIncarnation). */
  private incarnation: string | undefined;
  private copyGen = 0;
  private onDurable: (copyGen: number, index: number) => void = () => {};

  /**
   * Starts on what was read (`opened`): its first write is a new snapshot of that copy, so the
   * appends that follow start on a clean log file (no torn tail before them). Until it is on
   * disk the old files still hold the same copy.
   */
  constructor(private readonly options: DurableLogOptions, private readonly disk: LogDisk, opened: OpenedCopy) {
    this.fileGen = opened.fileGen;
    this.machine = opened.restored?.machine ?? null;
    this.view = opened.restored ? { epoch: opened.restored.epoch, primary: opened.restored.primary } : { epoch: 0, primary: null };
    this.incarnation = opened.restored?.incarnation;
    this.queueSnapshot();
    this.pump();
  }

  /** `onDurable(copyGen, index)`: the copy of copyGen is on disk up to index (in order). */
  start(onDurable: (copyGen: number, index: number) => void): void {
    this.onDurable = onDurable;
  }

  write(records: readonly PersistRecord[]): void {
    for (const record of records) {
      if (record.type === "base") {
        this.copyGen = record.copyGen;
        this.machine = record.machine;
        this.view = { epoch: record.epoch, primary: record.primary };
        this.incarnation = record.incarnation;
        this.queueSnapshot();
      } else if (record.type === "view") {
        this.view = { epoch: record.epoch, primary: record.primary };
        this.queueLine({ g: this.fileGen, view: this.view }, record.copyGen, 0);
      } else {
        this.queueLine({ g: this.fileGen, entry: record.entry }, record.copyGen, record.entry.index);
      }
    }
    if (this.linesSinceSnapshot >= this.options.compactEntries && this.machine !== null) this.queueSnapshot();
    this.pump();
  }

  /** Stops writing (a graceful stop); what is queued is not waited for. */
  stop(): void {
    this.failed = true;
  }

  private snapshotData(): SnapshotData {
    const id = this.incarnation !== undefined ? { incarnation: this.incarnation } : {};
    const copy = this.machine ? { ...this.view, ...id, machine: this.machine.snapshot() } : null;
    return { fileGen: this.fileGen, copy };
  }

  /**
   * A new snapshot of the current copy, taken now (the entries applied so far are in it); its
   * text is made later, a chunk per turn, when its turn to be written comes.
   */
  private queueSnapshot(): void {
    this.fileGen += 1;
    this.linesSinceSnapshot = 0;
    this.queue.push({ kind: "snapshot", encoder: new SnapshotEncoder(this.snapshotData()), copyGen: this.copyGen, index: this.machine?.appliedIndex ?? 0 });
  }

  private queueLine(data: LineData, copyGen: number, index: number): void {
    this.linesSinceSnapshot += 1;
    const text = encodeRecord(data);
    const last = this.queue[this.queue.length - 1];
    // Group commit: lines gather into one write while the disk is busy.
    if (last?.kind === "lines" && last.copyGen === copyGen) {
      last.text += text;
      last.index = Math.max(last.index, index);
    } else {
      this.queue.push({ kind: "lines", text, copyGen, index });
    }
  }

  /** Starts the next write if none runs: one batch of lines (one write, one fsync), or one snapshot. */
  private pump(): void {
    if (this.busy || this.failed || this.queue.length === 0) return;
    const op = this.queue.shift()!;
    this.busy = true;
    const done = (error: Error | null) => {
      this.busy = false;
      if (this.failed) return;
      if (error) {
        this.failed = true;
        return this.options.onFailure(error);
      }
      if (op.kind === "snapshot" || op.index > 0) this.onDurable(op.copyGen, op.index);
      this.pump();
    };
    if (op.kind === "lines") return this.disk.append(op.text, done);
    const encode = () => {
      if (this.failed) return;
      const parts = op.encoder.step();
      if (parts === undefined) return this.options.defer(encode);
      this.disk.replace(parts, done);
    };
    encode();
  }
}

/**
 * The log's files in `dir`, with node:fs callbacks. One operation at a time (DurableLog sees
 * to it). The log file is open from the first `replace` on (DurableLog's first operation).
 */
export class FileLogDisk implements LogDisk {
  private fd: number | null = null;

  constructor(private readonly dir: string) {}

  append(text: string, done: (error: Error | null) => void): void {
    if (this.fd === null) return done(new Error("the log file is not open"));
    appendAndSync(this.fd, [text], done);
  }

  /** The snapshot to a temporary name, fsynced, renamed; a new, empty log; the directory fsynced. */
  replace(parts: string[], done: (error: Error | null) => void): void {
    const dir = this.dir;
    const temporary = join(dir, `${SNAPSHOT_FILE}.tmp`);
    open(temporary, "w", (error, fd) => {
      if (error) return done(error);
      appendAndSync(fd, parts, (error) => {
        close(fd, () => {
          if (error) return done(error);
          rename(temporary, join(dir, SNAPSHOT_FILE), (error) => {
            if (error) return done(error);
            open(join(dir, LOG_FILE), "w", (error, logFd) => {
              if (error) return done(error);
              if (this.fd !== null) close(this.fd, () => {});
              this.fd = logFd;
              // The rename and the new log file must survive a crash before anything counts.
              syncDirThen(dir, done);
            });
          });
        });
      });
    });
  }

  close(): void {
    if (this.fd !== null) close(this.fd, () => {});
    this.fd = null;
  }
}

/**
 * Reads the durable log in `dir` (throws on damage) and starts it on files there: what
 * cluster/lock/server.ts runs with `durable = true`.
 */
export function openDurableLog(dir: string, options: DurableLogOptions): { log: DurableLog; disk: FileLogDisk; opened: OpenedLog } {
  mkdirSync(dir, { recursive: true });
  const opened = readDurableCopy(dir, options.limits, options.answered);
  const disk = new FileLogDisk(dir);
  return { log: new DurableLog(options, disk, opened), disk, opened };
}

const encoder = new TextEncoder();

function syncDirThen(dir: string, done: (error: Error | null) => void): void {
  open(dir, "r", (error, fd) => {
    if (error) return done(error);
    fsync(fd, (error) => close(fd, () => done(error)));
  });
}

/** Writes every byte of `parts` in order, a part per write (a short write is continued), then fsyncs. */
function appendAndSync(fd: number, parts: string[], done: (error: Error | null) => void): void {
  const next = (part: number) => {
    if (part >= parts.length) return fsync(fd, (error) => done(error));
    const bytes = encoder.encode(parts[part]);
    const from = (offset: number) => {
      if (offset >= bytes.length) return next(part + 1);
      write(fd, bytes, offset, bytes.length - offset, null, (error, written) => {
        if (error) return done(error);
        if (!(written > 0)) return done(new Error(`write stopped at byte ${offset} of ${bytes.length}`));
        from(offset + written);
      });
    };
    from(0);
  };
  next(0);
}
