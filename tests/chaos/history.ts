/**
 * The chaos history: one JSON object per line, Jepsen-style. Every client operation is written
 * twice, an `invoke` record before it starts and a completion record (`ok`, `fail` or `info`)
 * after it, sharing one `id`. `fail` means the operation certainly did not take effect; `info`
 * means it is unknown (a timeout, a connection cut mid-request). Faults are written by the
 * nemesis the same way, so the checker can print them next to an offending window.
 *
 * Times are wall-clock milliseconds (`performance.timeOrigin + performance.now()`, so with
 * sub-millisecond precision). All clients live in the runner's process, so all times are read
 * from one clock and comparable with each other; nothing compares them with server clocks.
 */
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";

export type RecordType = "invoke" | "ok" | "fail" | "info";

/**
 * Operation names.
 * - acquire / release: `lock(name)` and `release()` of the lock client; ok of acquire has `token`.
 * - lost: the handle's signal aborted (one `info` record, no invoke); `token` names the grant.
 * - read / write: the guarded resource of a lock, with the grant's `token`; `value` is the
 *   counter read or written. A write the resource refused (stale token) is a `fail`.
 * - ring-enter / ring-release / ring-lost / ring-read / ring-put: the same for ring sections;
 *   `token` is the section's fence and `lock` is "ring".
 * - fault: the nemesis (`client` "nemesis"); `fault` names the kind, `node` the target.
 * - final: after the run, the resource's counter (`lock`) or a ring node's counter (`node`).
 * - liveness: after the final heal, one grant per lock and per ring node must succeed.
 * - probe: the availability probe's try-lock of its own lock (ok: granted, with `token`).
 * - stall: a process's event loop stalled (a lone `info`): `node` is a node (from its log's
 *   `loopStall` lines, added at the end of the run) or "runner" (the clients' own process);
 *   `start`..`end` is the stall and `value` its length in ms.
 * - sync: a serving lock server's log said its backup is in sync (`value` 1, `backupInSync`) or
 *   out of sync (`value` 0, `backupOutOfSync`); `node` is the serving server. Added at the end.
 */
export type OpName =
  | "acquire"
  | "release"
  | "lost"
  | "read"
  | "write"
  | "ring-enter"
  | "ring-release"
  | "ring-lost"
  | "ring-read"
  | "ring-put"
  | "fault"
  | "final"
  | "liveness"
  | "probe"
  | "stall"
  | "sync";

export interface HistoryRecord {
  id: number;
  type: RecordType;
  op: OpName;
  client: string;
  lock?: string;
  token?: number;
  value?: number;
  node?: string;
  fault?: string;
  /** Fault records: the schedule's step kind (kill-arbiter, double, …) the fault belongs to. */
  step?: string;
  /** Fault records of p1/b1: true when the faulted server was the serving one as the fault began. */
  primary?: boolean;
  /** Network fault records: the fault in words (`cut p1 -> a1 (one-way)`, `degrade r2 (…)`). */
  detail?: string;
  /** The session TTL (acquire) or section lease (ring-enter) the client asked for. */
  leaseMs?: number;
  /**
   * Ring grants (ok of ring-enter): the client's own end of the section's lease, wall ms. The
   * section is over for the client then (its signal aborts, its guard refuses), even when a
   * busy runner processes the abort, or the node's notice, later. Lock loss notices (`lost`):
   * the end of the session's lease by the client's clock, for the same reason.
   */
  leaseEnd?: number;
  /** Wall-clock ms when the operation was invoked. */
  start: number;
  /** Wall-clock ms when it completed (completion records only). */
  end?: number;
  error?: string;
}

export function wallMs(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 100) / 100;
}

/**
 * Appends records to a file, one line each, synchronously: a record is on disk before the next
 * step of its client, so a run that dies midway still leaves a checkable prefix.
 */
export class HistoryWriter {
  private nextId = 1;
  count = 0;

  constructor(readonly file: string) {
    writeFileSync(file, "");
  }

  write(record: HistoryRecord): void {
    appendFileSync(this.file, JSON.stringify(record) + "\n");
    this.count += 1;
  }

  /** Writes the invoke record and returns a completion function for the same operation. */
  invoke(
    fields: Omit<HistoryRecord, "id" | "type" | "start" | "end">,
  ): (type: Exclude<RecordType, "invoke">, more?: Partial<HistoryRecord>) => HistoryRecord {
    const id = this.nextId++;
    const start = wallMs();
    this.write({ id, type: "invoke", ...fields, start });
    let done = false;
    return (type, more = {}) => {
      if (done) throw new Error(`history: operation ${id} completed twice`);
      done = true;
      const record: HistoryRecord = { id, type, ...fields, ...more, start, end: wallMs() };
      this.write(record);
      return record;
    };
  }

  /** A single `info` record for an event that has no invocation (a lock reported lost); `span` for one that lasted (a stall). */
  event(fields: Omit<HistoryRecord, "id" | "type" | "start" | "end">, span?: { startMs: number; endMs: number }): void {
    const now = wallMs();
    this.write({ id: this.nextId++, type: "info", ...fields, start: span?.startMs ?? now, end: span?.endMs ?? now });
  }
}

/**
 * The lines of a node's log the checker uses, as history records (without ids): `loopStall`
 * (cluster/stall_monitor.ts) as `stall`, `backupInSync` / `backupOutOfSync` as `sync`.
 */
export function nodeLogRecords(logFile: string, node: string): Array<Omit<HistoryRecord, "id" | "type">> {
  let text: string;
  try {
    text = readFileSync(logFile, "utf8");
  } catch {
    return []; // a node that never started has no log
  }
  const out: Array<Omit<HistoryRecord, "id" | "type">> = [];
  for (const line of text.split("\n")) {
    if (!/"event":"(loopStall|backupInSync|backupOutOfSync)"/.test(line)) continue;
    try {
      const entry = JSON.parse(line) as { ts?: string; event?: string; stallMs?: number };
      const endMs = Date.parse(entry.ts ?? "");
      if (!Number.isFinite(endMs)) continue;
      if (entry.event === "loopStall" && typeof entry.stallMs === "number") {
        out.push({ op: "stall", client: "node-log", node, value: entry.stallMs, start: endMs - entry.stallMs, end: endMs });
      } else if (entry.event !== "loopStall") {
        out.push({ op: "sync", client: "node-log", node, value: entry.event === "backupInSync" ? 1 : 0, start: endMs, end: endMs });
      }
    } catch {
      // a torn last line of a killed node
    }
  }
  return out;
}

/** Parses a history file; a torn last line (the runner killed mid-write) is skipped. */
export function readHistory(file: string): HistoryRecord[] {
  const lines = readFileSync(file, "utf8").split("\n");
  const records: HistoryRecord[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() === "") continue;
    try {
      records.push(JSON.parse(lines[i]) as HistoryRecord);
    } catch (error) {
      if (i < lines.length - 2) throw new Error(`${file}:${i + 1}: not JSON: ${(error as Error).message}`);
    }
  }
  return records;
}
