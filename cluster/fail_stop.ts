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
  log.event("failStop", { reason, ...fields }, "error");
  log.flush();
  process.exit(FAIL_STOP_EXIT);
}

/**
 * A bug is a fail-stop too: anything thrown that is not a refusal of a request (an assertion of
 * a core, an error of the driver), whether from a route handler (its app's `onInternalError`),
 * a timer's step (a tick) or the continuation of a peer's answer, means the state may be
 * half-applied. The process logs it and exits, so the backup (or a ring view change) takes over
 * and a restart starts from what is on disk or from a fresh copy; it never serves on.
 */
export function failStopOnBug(log: Logger, where: string): (error: unknown) => never {
  return (error) => {
    const fields = error instanceof Error ? { where, name: error.name, message: error.message, stack: error.stack } : { where, message: String(error) };
    return failStopProcess(log, "internal error", fields);
  };
}

/**
 * Installs the process-wide fail-stop for bugs outside a request: an exception no handler
 * caught (a timer's tick) or a promise rejection nobody handles (the continuation of a peer's
 * answer). `mutexd node` calls it before it starts its node.
 */
export function installFailStop(log: Logger): void {
  process.on("uncaughtException", failStopOnBug(log, "uncaughtException"));
  process.on("unhandledRejection", failStopOnBug(log, "unhandledRejection"));
}
