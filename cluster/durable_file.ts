/**
 * Small durable files: written to a temporary name, fsynced, renamed over the old one, and the
 * directory fsynced, so a crash leaves either the old or the new content, never a torn one.
 * The one writer of the arbiter's epoch record and the ring's state, snapshot and rewritten log.
 * A directory that cannot be fsynced throws (Deno and Bun both can): a rename that may not
 * survive a crash must not be acknowledged as durable. Every write is checked for its length
 * (`writeAll`): a short write is continued, a write that makes no progress throws.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import { dirname } from "node:path";

const encoder = new TextEncoder();

/** Writes one chunk at the file's position; returns how many bytes it wrote (writeSync's shape). */
export type WriteChunk = (fd: number, bytes: Uint8Array, offset: number, length: number) => number;

const writeChunk: WriteChunk = (fd, bytes, offset, length) => writeSync(fd, bytes, offset, length);

/**
 * Writes every byte of `content` to `fd` (open on `file`, named in the error), or throws. A
 * write may return fewer bytes than it was given (a full disk, a signal): the rest is written
 * again, else the caller would take a partly written record for a whole one and acknowledge
 * it. A write that makes no progress throws, so the loop ends after at most one round per
 * byte. `write` is a port for the tests.
 */
export function writeAll(fd: number, file: string, content: string | Uint8Array, write: WriteChunk = writeChunk): void {
  const bytes = typeof content === "string" ? encoder.encode(content) : content;
  let offset = 0;
  while (offset < bytes.length) {
    const written = write(fd, bytes, offset, bytes.length - offset);
    if (!Number.isSafeInteger(written) || written <= 0 || written > bytes.length - offset) {
      throw new Error(`${file}: write stopped at byte ${offset} of ${bytes.length} (wrote ${written})`);
    }
    offset += written;
  }
}

export function writeDurably(file: string, content: string): void {
  mkdirSync(dirname(file), { recursive: true });
  const temporary = `${file}.tmp`;
  const fd = openSync(temporary, "w");
  try {
    writeAll(fd, temporary, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temporary, file);
  syncDir(dirname(file));
}

/** Fsyncs a directory, so a rename or a new name in it survives a crash. */
export function syncDir(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
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
