/**
 * The lock client's errors: NotAcquiredError (someone else held the lock for the whole wait), and
 * the failed outcome a `…Then` call answers with (its Promise form rejects with the error).
 */
import { MutexdError } from "../wire/errors.ts";
import type { Outcome } from "./http.ts";

/**
 * The lock was held by someone else for the whole wait. The message names no queue position: a
 * try (waitMs 0) never queued, and a wait that ran out has left the queue.
 */
export class NotAcquiredError extends MutexdError {
  constructor(readonly lockName: string, readonly position: number, readonly waitMs = 0) {
    super("not_acquired", waitMs === 0 ? `lock ${lockName} is taken` : `lock ${lockName} still taken after waiting ${waitMs} ms`);
    this.name = "NotAcquiredError";
  }
}

/** A `…Then` call's failed outcome. */
export function failed<T>(error: MutexdError): Outcome<T> {
  return { ok: false, error };
}
