/**
 * Small durable files: written to a temporary name, fsynced, renamed over the old one, and the
 * directory fsynced, so a crash leaves either the old or the new content, never a torn one.
 * The one writer of the arbiter's epoch record and the ring's state, snapshot and rewritten log.
 * A directory that cannot be fsynced throws (Deno and Bun both can): a rename that may not
 * survive a crash must not be acknowledged as durable.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import { dirname } from "node:path";

export function writeDurably(file: string, content: string): void {
  mkdirSync(dirname(file), { recursive: true });
  const temporary = `${file}.tmp`;
  const fd = openSync(temporary, "w");
  try {
    writeSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temporary, file);
  const dir = openSync(dirname(file), "r");
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}

/** The file's content, or undefined when it does not exist. */
export function readIfExists(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
}
