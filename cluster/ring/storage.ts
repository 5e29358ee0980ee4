/**
 * A ring node's durable state in its data directory, written and fsynced before the node
 * acknowledges anything that depends on it:
 *
 *   ring-state.json     { epoch, fenceMax, lastHop }     replaced atomically (tmp, fsync, rename)
 *   ring-snapshot.json  { wseq, kv }                     replaced atomically
 *   ring-log.jsonl      one RingLogRecord per line       appended, fsynced; rewritten at snapshots
 *   ring-view.json      { promised, view }               the view change's hard state (view.ts), replaced atomically
 *   ring-incarnation.json { inc }                        the repair channel's incarnation (udp.ts), replaced atomically at each start
 *
 * Format version 2: each file, and each line of the log, is one envelope
 *
 *   {"v":2,"format":"1.0","crc":<CRC-32 of the data's bytes, unsigned decimal>,"data":<the JSON as before>}
 *
 * `format` is the disk format of the build that wrote it (cluster/format_version.ts): one of
 * another major refuses the start (exit 2) naming the file (the log: its line) and both
 * versions; an envelope without it, from a build before files carried one, is 1.0.
 *
 * Why this shape: it stays one JSON value per file and per line (jq and the eye still read it),
 * the version comes first so any reader finds it before anything else, and the checksum covers
 * the exact bytes of `data` as written, taken out of the line by position (the writer puts the
 * fields in this order), so checking never depends on parsing and printing JSON again.
 * Version 1 is the same JSON without the envelope, as mutexd wrote it before versions: it is
 * read, and rewritten as version 2 at load. A newer version than FORMAT_VERSION is refused.
 *
 * At start the snapshot is installed and the log replayed in order, with these rules:
 * - A torn last line (no newline: a crash in the middle of an append) was never acknowledged
 *   (the fsync follows the write): it is dropped, and cut from the file.
 * - A bad record (checksum, JSON or shape wrong; a line of version 1 after one of version 2)
 *   anywhere: that record was acknowledged once, so this node lost a write it promised to keep.
 *   The log is cut there: the record and every later one are dropped, and so are the writes
 *   above the commit watermark of what is left (a dropped record may have replaced one of them
 *   with a newer epoch's version, and keeping the older one could commit it). The node starts
 *   with the committed prefix and fetches the rest from its predecessor when the token shows
 *   it behind (docs/ring.md, Durability).
 * - A bad snapshot: it is set aside (renamed *.corrupt) together with the whole log, whose
 *   entries follow it; the node starts empty but for its hard state and catches up the same way.
 * - A bad hard state refuses to start: epoch, fenceMax and lastHop must never go back, and
 *   nothing on this node can tell the right values (an operator's decision). The same for a bad
 *   ring-view.json: a promise forgotten could be given twice for one epoch. That file is new in
 *   format version 2, so it is read in version 2 only.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync } from "node:fs";
import { join } from "node:path";
import { crc32 } from "../checksum.ts";
import { readIfExists, syncDir, writeAll, writeDurably } from "../durable_file.ts";
import { checkFileFormat, FILE_FORMAT } from "../format_version.ts";
import type { PersistOp, RingStored } from "../../lib/core/ring/ring_node.ts";
import type { RingEntry, RingHardState, RingLogRecord, RingSnapshot } from "../../lib/core/ring/ring_types.ts";
import { type Ballot, EPOCH_MAX, isVoterList, type View, type ViewHardState } from "../../lib/core/ring/view_wire.ts";

export const STATE_FILE = "ring-state.json";
export const SNAPSHOT_FILE = "ring-snapshot.json";
export const LOG_FILE = "ring-log.jsonl";
export const VIEW_FILE = "ring-view.json";
export const INCARNATION_FILE = "ring-incarnation.json";

/** The on-disk format version this code writes. It reads this one and version 1. */
export const FORMAT_VERSION = 2;

const ALONE_REFUSAL = "Refusing to start: a ring of one has no peer to catch up from";

/** What the driver needs of its storage: the port the simulator's disk also implements. */
export interface RingStore {
  /** Stores `ops` in order; returns only when everything is durable, throws if it cannot be. */
  apply(ops: readonly PersistOp[]): void;
  /** Replaces the view change's hard state; returns only when it is durable, throws if it cannot be. */
  storeView(state: ViewHardState): void;
}

/** What load found besides the stored state, for the daemon's log lines. */
export interface RingLoadReport {
  /** A half-written last log line dropped (0 or 1). */
  tornLines: number;
  /** Where the log was cut at a bad record: `file:line`, why, how many lines went. */
  badRecord?: { at: string; reason: string; droppedLines: number };
  /** The snapshot set aside as bad (the log went with it). */
  badSnapshot?: { file: string; reason: string; movedTo: string };
  /** Files rewritten from format version 1. */
  upgraded: string[];
}

/** An envelope's content, or why it is not one. */
type Decoded = { ok: true; version: number; value: unknown } | { ok: false; reason: string };

/** The format (the disk format of the build that wrote it) is optional: envelopes of builds before it are 1.0. */
const ENVELOPE = /^\{"v":(\d+),(?:"format":"([^"\\]{0,40})",)?"crc":(\d+),"data":(.*)\}$/;

function envelope(value: unknown): string {
  const data = JSON.stringify(value);
  return `{"v":${FORMAT_VERSION},"format":"${FILE_FORMAT}","crc":${crc32(data)},"data":${data}}`;
}

/**
 * Opens an envelope (version 2) or takes the text as version 1. Throws for a version newer than
 * this code: that is not damage to repair but a file this binary must not touch.
 */
function decode(text: string, where: string): Decoded {
  const match = ENVELOPE.exec(text);
  // The disk format before the checksum: a build of another major may checksum otherwise, and
  // its records must be refused (DiskFormatError, exit 2), not dropped as damage.
  if (match) checkFileFormat(where, match[2]);
  if (match && Number(match[1]) === FORMAT_VERSION) {
    const crc = crc32(match[4]);
    if (crc !== Number(match[3])) return { ok: false, reason: `checksum ${match[3]} does not match the data's ${crc}` };
    return parse(match[4], FORMAT_VERSION);
  }
  const whole = parse(text, 1);
  if (!whole.ok) return whole;
  // An envelope of another shape (it has "v") that names its format.
  if (isObject(whole.value) && whole.value.v !== undefined) checkFileFormat(where, whole.value.format);
  const version = isObject(whole.value) ? whole.value.v : undefined;
  if (typeof version === "number" && version > FORMAT_VERSION) {
    throw new Error(`${where}: format version ${version} is newer than this mutexd's (${FORMAT_VERSION}); run a mutexd that knows it`);
  }
  if (version !== undefined) return { ok: false, reason: "not a well-formed envelope" };
  return whole;
}

function parse(text: string, version: number): Decoded {
  try {
    return { ok: true, version, value: JSON.parse(text) };
  } catch (error) {
    return { ok: false, reason: `not JSON (${(error as Error).message})` };
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isCount(value: unknown, min = 0): value is number {
  return Number.isSafeInteger(value) && (value as number) >= min;
}

function isEntry(value: unknown): value is RingEntry {
  if (!isObject(value) || !isObject(value.op)) return false;
  const { op } = value;
  const opOk = (op.type === "noop" && op.key === "") ||
    (typeof op.key === "string" && (op.type === "delete" || (op.type === "put" && typeof op.value === "string")));
  return opOk && isCount(value.epoch) && isCount(value.wseq, 1) && typeof value.author === "string" && typeof value.origin === "string";
}

function isLogRecord(value: unknown): value is RingLogRecord {
  if (!isObject(value)) return false;
  if (value.type === "entry") return isEntry(value.entry);
  if (value.type === "truncate") return isCount(value.from, 1);
  return value.type === "commit" && isCount(value.wseq);
}

function isBallot(value: unknown): value is Ballot {
  return isObject(value) && isCount(value.epoch) && (value.epoch as number) <= EPOCH_MAX && typeof value.coordinator === "string";
}

function isView(value: unknown): value is View {
  if (!isObject(value) || !Array.isArray(value.members) || value.members.length === 0) return false;
  const members = value.members as unknown[];
  return isBallot(value) && members.every((m) => typeof m === "string") && new Set(members).size === members.length &&
    typeof value.regenerator === "string" && members.includes(value.regenerator) &&
    isCount(value.startWseq) && isCount(value.resendFromWseq) && isCount(value.grantWaitMs) &&
    // Absent in views stored by earlier versions (unknown); a file's ring is not bounded here.
    (value.voters === undefined || isVoterList(value.voters, Number.MAX_SAFE_INTEGER));
}

/** The view change's hard state as stored: a ballot, and a view (or null) not newer than it. */
function isViewHardState(value: unknown): value is ViewHardState {
  if (!isObject(value) || !isBallot(value.promised)) return false;
  return value.view === null || (isView(value.view) && value.view.epoch <= value.promised.epoch);
}

function isSnapshot(value: unknown): value is RingSnapshot {
  return isObject(value) && isCount(value.wseq) && (value.epoch === undefined || isCount(value.epoch)) && Array.isArray(value.kv) &&
    value.kv.every((pair) => Array.isArray(pair) && pair.length === 2 && typeof pair[0] === "string" && typeof pair[1] === "string");
}

export class RingStorage implements RingStore {
  private logFd: number | null = null;

  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true });
  }

  /**
   * Reads what a previous incarnation stored (nothing on a fresh directory), repairs what the
   * rules above allow (the files rewritten durably), and throws for what they do not. `alone`:
   * this node is a ring of one, with no peer to catch up from, so a bad record or snapshot
   * refuses to start instead (dropping it would lose acknowledged writes for good).
   */
  load(options: { alone?: boolean } = {}): RingStored & RingLoadReport {
    const report: RingLoadReport = { tornLines: 0, upgraded: [] };
    const hardState = this.loadHardState(report);
    const snapshot = this.loadSnapshot(report, options.alone ?? false);
    const records = report.badSnapshot ? [] : this.loadLog(report, snapshot?.wseq ?? 0, options.alone ?? false);
    return { hardState, snapshot, records, ...report };
  }

  /** Stores `ops` in order and fsyncs; returns only when everything is on disk. */
  apply(ops: readonly PersistOp[]): void {
    let lines: string[] = [];
    let hardState: RingHardState | undefined;
    for (const op of ops) {
      if (op.type === "log") {
        lines.push(envelope(op.record));
      } else if (op.type === "hardState") {
        hardState = op.state;
      } else {
        this.appendLog(lines);
        lines = [];
        this.writeSnapshot(op.snapshot, op.tail);
      }
    }
    this.appendLog(lines);
    if (hardState) writeDurably(join(this.dir, STATE_FILE), envelope(hardState));
  }

  /** Replaces ring-view.json durably (tmp, fsync, rename, directory fsync) before it returns. */
  storeView(state: ViewHardState): void {
    writeDurably(join(this.dir, VIEW_FILE), envelope(state));
  }

  /**
   * The view change's hard state (null on a node that never promised), or throws: a damaged
   * promise refuses to start, as a damaged hard state does (see the top).
   */
  loadView(): ViewHardState | null {
    const file = join(this.dir, VIEW_FILE);
    const text = readIfExists(file);
    if (text === undefined) return null;
    const decoded = decode(text, file);
    let reason = decoded.ok ? "not {promised, view} with a view no newer than the promise" : decoded.reason;
    if (decoded.ok && decoded.version !== FORMAT_VERSION) reason = `format version ${decoded.version}, but this file exists only from version ${FORMAT_VERSION} on`;
    else if (decoded.ok && isViewHardState(decoded.value)) return decoded.value;
    throw new Error(
      `${file}: ${reason}. Refusing to start: a promise forgotten could be given twice for one epoch, ` +
        "and nothing on this node can tell what it promised (restore the file, or take the node out of the ring)",
    );
  }

  /**
   * This start's incarnation of the repair channel, stored durably before it returns (so before
   * the first datagram): above the stored one, and at least `floorInc` (the daemon gives the
   * wall clock in ms, so a node whose directory was lost still starts above its earlier
   * incarnations unless its clock went back; docs/security.md, "Repair datagrams (UDP)"). A
   * damaged file counts as none (`damaged` says why): the price is only that peers may drop
   * this node's datagrams as replays while the floor is below what they saw.
   */
  nextIncarnation(floorInc: number): { inc: number; damaged?: string } {
    const file = join(this.dir, INCARNATION_FILE);
    const text = readIfExists(file);
    let stored = 0;
    let damaged: string | undefined;
    if (text !== undefined) {
      const decoded = decode(text, file);
      const value = decoded.ok && decoded.version === FORMAT_VERSION && isObject(decoded.value) ? decoded.value.inc : undefined;
      if (isCount(value) && value < Number.MAX_SAFE_INTEGER) stored = value;
      else damaged = decoded.ok ? "not {inc} as a count in format version 2" : decoded.reason;
    }
    const inc = Math.max(stored + 1, floorInc);
    writeDurably(file, envelope({ inc }));
    return damaged === undefined ? { inc } : { inc, damaged };
  }

  close(): void {
    if (this.logFd !== null) closeSync(this.logFd);
    this.logFd = null;
  }

  private loadHardState(report: RingLoadReport): RingHardState {
    const file = join(this.dir, STATE_FILE);
    const text = readIfExists(file);
    if (text === undefined) return { epoch: 0, fenceMax: 0, lastHop: 0 };
    const decoded = decode(text, file);
    const value = decoded.ok && isObject(decoded.value) ? decoded.value : {};
    // lastHop came later than version 1 did: such a file without it reads as 0 (no hop accepted yet).
    const lastHop = value.lastHop ?? (decoded.ok && decoded.version === 1 ? 0 : undefined);
    const state = { epoch: value.epoch, fenceMax: value.fenceMax, lastHop };
    if (!decoded.ok || !isCount(state.epoch) || !isCount(state.fenceMax) || !isCount(state.lastHop)) {
      const reason = decoded.ok ? "not {epoch, fenceMax, lastHop} as counts" : decoded.reason;
      throw new Error(
        `${file}: ${reason}. Refusing to start: the epoch, fencing counter and last hop stored there must never go back, ` +
          "and nothing on this node can tell their right values (restore the file, or take the node out of the ring)",
      );
    }
    const hardState = state as RingHardState;
    if (decoded.version === 1) this.upgrade(file, envelope(hardState), report);
    return hardState;
  }

  private loadSnapshot(report: RingLoadReport, alone: boolean): RingSnapshot | undefined {
    const file = join(this.dir, SNAPSHOT_FILE);
    const text = readIfExists(file);
    if (text === undefined) return undefined;
    const decoded = decode(text, file);
    if (decoded.ok && isSnapshot(decoded.value)) {
      if (decoded.version === 1) this.upgrade(file, envelope(decoded.value), report);
      return decoded.value;
    }
    const reason = decoded.ok ? "not {wseq, kv}" : decoded.reason;
    if (alone) throw new Error(`${file}: ${reason}. ${ALONE_REFUSAL}`);
    // The log goes first (emptied durably), then the snapshot: a crash between the two leaves
    // the bad snapshot and an empty log, which this path handles again; the other order could
    // leave a log that starts after a snapshot that is gone.
    writeDurably(join(this.dir, LOG_FILE), "");
    const movedTo = `${file}.corrupt`;
    renameSync(file, movedTo);
    syncDir(this.dir);
    report.badSnapshot = { file, reason, movedTo };
    return undefined;
  }

  private loadLog(report: RingLoadReport, snapshotWseq: number, alone: boolean): RingLogRecord[] {
    const file = join(this.dir, LOG_FILE);
    const text = readIfExists(file);
    if (text === undefined) return [];
    // Every append ends its lines with "\n": what follows the last one is a torn append ("" when none).
    const lines = text.split("\n");
    const torn = lines.pop()!;
    const records: RingLogRecord[] = [];
    let sawVersion2 = false;
    let sawVersion1 = false;
    let bad: { index: number; reason: string } | undefined;
    for (const [index, line] of lines.entries()) {
      const decoded = decode(line, `${file}:${index + 1}`);
      if (!decoded.ok) bad = { index, reason: decoded.reason };
      else if (!isLogRecord(decoded.value)) bad = { index, reason: "not a log record" };
      // The writer upgrades a version-1 log at load: a version-1 line after a version-2 one is damage.
      else if (decoded.version === 1 && sawVersion2) bad = { index, reason: "a version 1 line after version 2 ones" };
      if (bad || !decoded.ok) break;
      sawVersion2 ||= decoded.version === FORMAT_VERSION;
      sawVersion1 ||= decoded.version === 1;
      records.push(decoded.value as RingLogRecord);
    }
    if (bad && alone) throw new Error(`${file}:${bad.index + 1}: ${bad.reason}. ${ALONE_REFUSAL}`);
    if (bad) {
      // The commit watermark of the records kept: writes above it are dropped too (see the top).
      let commit = snapshotWseq;
      for (const record of records) if (record.type === "commit") commit = Math.max(commit, record.wseq);
      records.push({ type: "truncate", from: commit + 1 });
      report.badRecord = { at: `${file}:${bad.index + 1}`, reason: bad.reason, droppedLines: lines.length - bad.index };
    }
    if (torn !== "") report.tornLines = 1;
    if (bad || torn !== "" || sawVersion1) {
      // Cut (or upgraded) now, or the next append would continue a torn line into a bad one.
      writeDurably(file, records.map((record) => envelope(record) + "\n").join(""));
      if (sawVersion1) report.upgraded.push(file);
    }
    return records;
  }

  /** Rewrites a file read in version 1 as version 2, at once: the next reader sees one format. */
  private upgrade(file: string, content: string, report: RingLoadReport): void {
    writeDurably(file, content);
    report.upgraded.push(file);
  }

  private appendLog(lines: string[]): void {
    if (lines.length === 0) return;
    const file = join(this.dir, LOG_FILE);
    this.logFd ??= openSync(file, "a");
    writeAll(this.logFd, file, lines.join("\n") + "\n");
    fsyncSync(this.logFd);
  }

  private writeSnapshot(snapshot: RingSnapshot, tail: RingEntry[]): void {
    writeDurably(join(this.dir, SNAPSHOT_FILE), envelope(snapshot));
    // The log keeps only what follows the snapshot; a crash between the two renames leaves the
    // old log, whose entries up to the snapshot are skipped at replay.
    const text = tail.map((entry) => envelope({ type: "entry", entry } satisfies RingLogRecord) + "\n").join("");
    this.close();
    writeDurably(join(this.dir, LOG_FILE), text);
  }
}
