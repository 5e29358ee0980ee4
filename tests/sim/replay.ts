/**
 * Replay files: a failing run saved as the options that reproduce it (seed, kinds, phases, fault
 * overrides) plus what it found and the trace hash, so `vopr.ts --replay FILE` runs it again and
 * says whether it still fails the same way. The run is a function of these options and the code;
 * the trace tail is kept for the reader, not for the replay.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import type { Violation } from "./checkers.ts";
import type { SimResult } from "./simulator.ts";

export interface RunSpec {
  seed: number;
  kinds?: string[];
  safetyMs?: number;
  healMs?: number;
  faultOverrides?: string[];
  /** "kind.param" → value, forced after the seed's draw. */
  params?: Record<string, number | string | boolean>;
}

export interface ReplayFile {
  spec: RunSpec;
  header: string;
  violation?: Violation;
  traceHash: string;
  traceTail: string[];
}

export const REPLAY_DIR = new URL("./replay/", import.meta.url).pathname;

/**
 * The known failures: `replay/index.json` lists each replay file that must still fail. A list,
 * not a directory listing, so a deleted file is noticed and a stray one is not taken for a
 * known bug.
 */
export const REPLAY_INDEX = `${REPLAY_DIR}index.json`;

export interface KnownFailure {
  /** A file name in replay/, e.g. "36.json". */
  file: string;
  /** What bug it stands for. */
  note: string;
}

/**
 * Failing fresh seeds of the test suite land here (git-ignored), never in replay/: a run of
 * `make test` must not change the source tree. Listing one as a known failure is a decision
 * (move the file to replay/ and add it to the index).
 */
export const FAILED_DIR = new URL("./failed/", import.meta.url).pathname;

export function replayPath(seed: number): string {
  return `${REPLAY_DIR}${seed}.json`;
}

export function failedRunPath(seed: number, kinds?: string[]): string {
  return `${FAILED_DIR}${kinds ? `${kinds.join("+")}-` : ""}${seed}.json`;
}

/** Reads replay/index.json; throws when it is missing or not a list of { file, note }. */
export function loadKnownFailures(indexPath = REPLAY_INDEX): KnownFailure[] {
  const index = JSON.parse(readFileSync(indexPath, "utf8")) as { knownFailures?: KnownFailure[] };
  const list = index.knownFailures;
  if (!Array.isArray(list) || !list.every((k) => typeof k.file === "string" && typeof k.note === "string")) {
    throw new Error(`${indexPath}: knownFailures must be a list of { file, note }`);
  }
  return list;
}

export function saveReplay(path: string, spec: RunSpec, result: SimResult): void {
  const file: ReplayFile = {
    spec,
    header: result.header,
    violation: result.violation,
    traceHash: result.traceHash,
    traceTail: result.lines.slice(-40),
  };
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, JSON.stringify(file, null, 2) + "\n");
}

export function loadReplay(path: string): ReplayFile {
  const file = JSON.parse(readFileSync(path, "utf8")) as ReplayFile;
  if (!file.spec || !Number.isSafeInteger(file.spec.seed)) throw new Error(`${path}: not a replay file (no spec.seed)`);
  return file;
}
