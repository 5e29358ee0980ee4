/**
 * One JSON object per line on stderr, one line per event: easy to grep, easy to parse.
 * `{"ts":"…","uptimeMs":5012,"node":"p1","event":"granted","name":"x","token":7}`
 * `ts` is the wall clock, which an NTP step moves (back, too); `uptimeMs`, the process's
 * monotonic milliseconds, keeps the order and spacing of a node's lines across such a step.
 *
 * Each event has a level (`debug`, `info`, `warn`, `error`); a logger writes the events at its
 * level and above (`mutexd node --log-level`, `[cluster] logLevel`; default `info`). Lines per
 * lock operation (a lock server's grant and release) are `debug`: at the default level a server
 * writes nothing per operation, which cost a lone primary a fifth of its CPU (docs/bench.md).
 *
 * Lines are gathered and written once per turn of the event loop: under load a server logs two
 * lines per lock operation, and one write per line cost a measurable share of its CPU
 * (docs/bench.md). `flush()` writes what is pending at once (before exit).
 */
import process from "node:process";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { monotonicClock } from "./clock.ts";

export type LogFields = Record<string, unknown>;

export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const DEFAULT_LOG_LEVEL: LogLevel = "info";

export interface Logger {
  /** Logs `event` at `level` (default info), if the logger's level lets it through. */
  event(event: string, fields?: LogFields, level?: LogLevel): void;
  /**
   * Whether an event of `level` would be written (absent: every level is). Per-operation callers
   * ask first, so the default level builds no fields for lines it drops.
   */
  wants?(level: LogLevel): boolean;
  /** Writes pending lines now. */
  flush(): void;
}

/** Whether `level` is at or above `threshold`. */
export function atLeast(level: LogLevel, threshold: LogLevel): boolean {
  return LOG_LEVELS.indexOf(level) >= LOG_LEVELS.indexOf(threshold);
}

/**
 * `pendingLinesMax` lines are kept before a write even within one turn, so a burst cannot grow
 * the buffer unbounded (settings.logPendingLinesMax).
 */
export function jsonLogger(
  node: string,
  pendingLinesMax: number = DEFAULT_SETTINGS.logPendingLinesMax,
  write: (text: string) => void = (text) => process.stderr.write(text),
  level: LogLevel = DEFAULT_LOG_LEVEL,
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
    event(event, fields = {}, eventLevel = "info") {
      if (!atLeast(eventLevel, level)) return;
      const line = { ts: new Date().toISOString(), uptimeMs: monotonicClock.nowMs(), node, event, ...fields };
      pending.push(JSON.stringify(line) + "\n");
      if (pending.length >= pendingLinesMax) flush();
      else if (!scheduled) {
        scheduled = true;
        setTimeout(flush, 0);
      }
    },
    wants: (eventLevel) => atLeast(eventLevel, level),
    flush,
  };
}

/** A logger that keeps every line, of every level, in memory (tests). */
export function memoryLogger(): Logger & { lines: LogFields[] } {
  const lines: LogFields[] = [];
  return { lines, event: (event, fields = {}) => void lines.push({ event, ...fields }), flush: () => {} };
}
