/**
 * A held lock (LockHandle), as LockClient.lock returns it: its fencing token, a signal that aborts
 * when the lock is lost, and its release (leave, then close the session it was taken in).
 */
import { MutexdError } from "../wire/errors.ts";
import { type Outcome, promised } from "./http.ts";
import type { LockClient } from "./lock_client.ts";
import { failed } from "./lock_errors.ts";
import type { Session } from "./lock_session.ts";
import type { Done } from "./lock_types.ts";


/**
 * A held lock. `await using` releases it; `signal` aborts if it is lost first: its session was
 * lost, or a keepalive answered that the session no longer holds it (a force-release).
 */
export class LockHandle {
  private readonly controller = new AbortController();
  private readonly unwatch: () => void;

  constructor(
    private readonly client: LockClient,
    readonly session: Session,
    readonly name: string,
    /** The fencing token: pass it to the resource, which rejects smaller ones. */
    readonly token: number,
  ) {
    const lose = (reason: unknown) => {
      if (!this.controller.signal.aborted) this.controller.abort(reason);
    };
    if (session.signal.aborted) lose(session.signal.reason);
    else session.signal.addEventListener("abort", () => lose(session.signal.reason), { once: true });
    this.unwatch = session.watchHeld(name, lose);
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Leaves the lock and closes its session. Safe to call twice. */
  release(): Promise<void> {
    return promised((done) => this.releaseThen(done));
  }

  /**
   * `release` with a callback: the leave's failure if it failed, else the close's. A leave that
   * finds the lock no longer this session's fails with code "lock_lost": someone else released
   * it while it was believed held.
   */
  releaseThen(done: Done<void>): void {
    this.unwatch();
    if (this.controller.signal.aborted) return this.session.closeThen(done);
    this.client.leaveThen(this.name, { session: this.session, token: this.token }, (left) => {
      const outcome: Outcome<void> = left.ok || (left.error.code !== "not_holder" && left.error.code !== "lock_not_found")
        ? left
        : failed(new MutexdError("lock_lost", `lock ${this.name} was no longer held at release (${left.error.message})`));
      this.session.closeThen((closed) => done(outcome.ok ? closed : outcome));
    });
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.release().catch(() => {});
  }
}
