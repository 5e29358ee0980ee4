/**
 * One JSON object per line on stderr, one line per event: easy to grep, easy to parse.
 * `{"ts":"…","uptimeMs":5012,"node":"p1","event":"granted","name":"x","token":7}`
 * `ts` is the wall clock, which an NTP step moves (back, too); `uptimeMs`, the process's
 * monotonic milliseconds, keeps the order and spacing of a node's lines across such a step.
 *
 * Lines are gathered and written once per turn of the event loop: under load a server logs two
 * lines per lock operation, and one write per line cost a measurable share of its CPU
 * (docs/bench.md). `flush()` writes what is pending at once (before exit).
 */
import process from "node:process";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { monotonicClock } from "./clock.ts";

export type LogFields = Record<string, unknown>;

export interface Logger {
  event(event: string, fields?: LogFields): void;
  /** Writes pending lines now. */
  flush(): void;
}

/**
 * `pendingLinesMax` lines are kept before a write even within one turn, so a burst cannot grow
 * the buffer unbounded (settings.logPendingLinesMax).
 */
export function jsonLogger(
  node: string,
  pendingLinesMax: number = DEFAULT_SETTINGS.logPendingLinesMax,
  write: (text: string) => void = (text) => process.stderr.write(text),
): Logger {
  let pending: string[] = [];
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    if (pending.length === 0) return;
    const text = pending.join("");
    pending = [];
    write(text);
  };
  process.on("exit", flush);
  return {
    event(event, fields = {}) {
      const line = { ts: new Date().toISOString(), uptimeMs: monotonicClock.nowMs(), node, event, ...fields };
      pending.push(JSON.stringify(line) + "\n");
      if (pending.length >= pendingLinesMax) flush();
      else if (!scheduled) {
        scheduled = true;
        setTimeout(flush, 0);
      }
    },
    flush,
  };
}

/** A logger that keeps lines in memory (tests). */
export function memoryLogger(): Logger & { lines: LogFields[] } {
  const lines: LogFields[] = [];
  return { lines, event: (event, fields = {}) => void lines.push({ event, ...fields }), flush: () => {} };
}
