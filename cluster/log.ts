/**
 * One JSON object per line on stderr, one line per event: easy to grep, easy to parse.
 * `{"ts":"…","node":"p1","event":"granted","name":"x","token":7}`
 */
import process from "node:process";

export type LogFields = Record<string, unknown>;

export interface Logger {
  event(event: string, fields?: LogFields): void;
}

export function jsonLogger(node: string, write: (line: string) => void = (line) => process.stderr.write(line)): Logger {
  return {
    event(event, fields = {}) {
      write(JSON.stringify({ ts: new Date().toISOString(), node, event, ...fields }) + "\n");
    },
  };
}

/** A logger that keeps lines in memory (tests). */
export function memoryLogger(): Logger & { lines: LogFields[] } {
  const lines: LogFields[] = [];
  return { lines, event: (event, fields = {}) => void lines.push({ event, ...fields }) };
}
