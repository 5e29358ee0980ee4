/**
 * Fail-stop (TigerBeetle's rule): a node that cannot keep a promise it is about to make (a
 * decision that did not reach the disk, a broken invariant) logs why and exits at once, so no
 * answer rests on state that would not survive a restart, and a healthy peer or a restart (from
 * what is on disk) takes over. Never serve on half-applied state.
 */
import process from "node:process";
import type { Logger } from "./log.ts";

/** The exit status of a fail-stop (EX_SOFTWARE of sysexits.h). */
export const FAIL_STOP_EXIT = 70;

/** Logs `reason` (with `fields`), flushes the log and exits the process with FAIL_STOP_EXIT. */
export function failStopProcess(log: Logger, reason: string, fields: Record<string, unknown> = {}): never {
  log.event("failStop", { reason, ...fields });
  log.flush();
  process.exit(FAIL_STOP_EXIT);
}
