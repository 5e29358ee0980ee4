/**
 * A ring node's durable state in its data directory, written and fsynced before the node
 * acknowledges anything that depends on it:
 *
 *   ring-state.json     { epoch, fenceMax, lastHop }     replaced atomically (tmp, fsync, rename)
 *   ring-snapshot.json  { wseq, kv }                     replaced atomically
 *   ring-log.jsonl      one RingLogRecord per line       appended, fsynced; rewritten at snapshots
 *
 * At start the snapshot is installed and the log replayed in order. A torn last line (a crash
 * in the middle of an append) is ignored, and cut from the file: its write was never
 * acknowledged.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, writeSync } from "node:fs";
import { join } from "node:path";
import { readIfExists, writeDurably } from "../durable_file.ts";
import type { PersistOp, RingStored } from "../../lib/core/ring_node.ts";
import type { RingEntry, RingHardState, RingLogRecord, RingSnapshot } from "../../lib/core/ring_types.ts";

const STATE_FILE = "ring-state.json";
const SNAPSHOT_FILE = "ring-snapshot.json";
const LOG_FILE = "ring-log.jsonl";

/** What the driver needs of its storage: the port the simulator's disk also implements. */
export interface RingStore {
  /** Stores `ops` in order; returns only when everything is durable, throws if it cannot be. */
  apply(ops: readonly PersistOp[]): void;
}

export class RingStorage implements RingStore {
  private logFd: number | null = null;

  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true });
  }

  /** Reads what a previous incarnation stored (nothing on a fresh directory). */
  load(): RingStored & { tornLines: number } {
    const stateText = readIfExists(join(this.dir, STATE_FILE));
    // lastHop came later: a file without it reads as 0 (no hop of its epoch accepted yet).
    const hardState: RingHardState = {
      epoch: 0,
      fenceMax: 0,
      lastHop: 0,
      ...(stateText !== undefined ? JSON.parse(stateText) : {}),
    };
    const snapshotText = readIfExists(join(this.dir, SNAPSHOT_FILE));
    const snapshot: RingSnapshot | undefined = snapshotText !== undefined ? JSON.parse(snapshotText) : undefined;
    const logPath = join(this.dir, LOG_FILE);
    const logText = readIfExists(logPath);
    const records: RingLogRecord[] = [];
    let tornLines = 0;
    if (logText !== undefined) {
      const lines = logText.split("\n");
      for (const [index, line] of lines.entries()) {
        if (line.trim() === "") continue;
        try {
          records.push(JSON.parse(line));
        } catch (error) {
          // Only the last line can be torn; anything else is corruption and must stop the node.
          if (index < lines.length - 2) throw new Error(`${logPath}:${index + 1}: ${(error as Error).message}`);
          tornLines += 1;
          // Cut it off (the log rewritten with the whole lines only), or the next append would
          // continue it into a corrupt line in the middle of the log, which stops the node at
          // its next start.
          writeDurably(logPath, lines.slice(0, index).map((l) => `${l}\n`).join(""));
        }
      }
    }
    return { hardState, snapshot, records, tornLines };
  }

  /** Stores `ops` in order and fsyncs; returns only when everything is on disk. */
  apply(ops: readonly PersistOp[]): void {
    let lines: string[] = [];
    let hardState: RingHardState | undefined;
    for (const op of ops) {
      if (op.type === "log") {
        lines.push(JSON.stringify(op.record));
      } else if (op.type === "hardState") {
        hardState = op.state;
      } else {
        this.appendLog(lines);
        lines = [];
        this.writeSnapshot(op.snapshot, op.tail);
      }
    }
    this.appendLog(lines);
    if (hardState) writeDurably(join(this.dir, STATE_FILE), JSON.stringify(hardState));
  }

  close(): void {
    if (this.logFd !== null) closeSync(this.logFd);
    this.logFd = null;
  }

  private appendLog(lines: string[]): void {
    if (lines.length === 0) return;
    this.logFd ??= openSync(join(this.dir, LOG_FILE), "a");
    writeSync(this.logFd, lines.join("\n") + "\n");
    fsyncSync(this.logFd);
  }

  private writeSnapshot(snapshot: RingSnapshot, tail: RingEntry[]): void {
    writeDurably(join(this.dir, SNAPSHOT_FILE), JSON.stringify(snapshot));
    // The log keeps only what follows the snapshot; a crash between the two renames leaves the
    // old log, whose entries up to the snapshot are skipped at replay.
    const text = tail.map((entry) => JSON.stringify({ type: "entry", entry } satisfies RingLogRecord) + "\n").join("");
    this.close();
    writeDurably(join(this.dir, LOG_FILE), text);
  }
}
