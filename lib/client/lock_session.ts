/**
 * A lock client's session (Session): opened by LockClient.openSession, kept alive every TTL/3
 * through the client's failover (`requestThen`), lost when the server expires it or no keepalive
 * got through for a whole TTL. Its secret is kept outside the object (SECRETS).
 */
import { MutexdError } from "../wire/errors.ts";
import { promised } from "./http.ts";
import type { LockClient } from "./lock_client.ts";
import type { Done, SessionRef } from "./lock_types.ts";

/**
 * A secret of 256 bits of the runtime's cryptographic randomness (Web Crypto), as 64 hex
 * characters: a session's (the client's own, or the server's when a client sends none).
 */
export function randomSessionSecret(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(32)), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/**
 * Each Session's secret, outside the object: so no log, `console.log` or JSON of a Session
 * shows it (issue 12). Sent only in the bodies of the session's own requests.
 */
const SECRETS = new WeakMap<Session, string>();

/** The id and secret a request on `ref`'s session carries. */
export function sessionFields(ref: SessionRef): { session: string; sessionSecret?: string } {
  if (typeof ref.session === "string") return { session: ref.session, ...(ref.sessionSecret === undefined ? {} : { sessionSecret: ref.sessionSecret }) };
  return { session: ref.session.id, sessionSecret: SECRETS.get(ref.session) };
}

/** A server session kept alive every TTL/3; `signal` aborts when it is lost. */
export class Session {
  private readonly controller = new AbortController();
  private keepaliveTimer: unknown;
  private leaseTimer: unknown;
  /** Local end of the lease (client clock): send time of the last acknowledged keepalive plus the TTL. */
  private leaseEndMs: number;
  private closed = false;
  /** Keepalives sent so far; a watch counts only the answers of those sent after it began. */
  private keepAliveRound = 0;
  private readonly heldWatches = new Map<string, { sinceRound: number; onGone: (reason: MutexdError) => void }>();

  /** `secret`: what the open answered; every request on the session sends it (kept in SECRETS). */
  constructor(private readonly client: LockClient, readonly id: string, readonly ttlMs: number, sentAtMs: number, secret: string) {
    SECRETS.set(this, secret);
    this.leaseEndMs = sentAtMs + ttlMs;
    this.scheduleKeepAlive();
    this.armLeaseTimer();
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Until when (the client's clock) the session is surely alive on the server. */
  get leaseEndsAtMs(): number {
    return this.leaseEndMs;
  }

  /** Milliseconds until `leaseEndsAtMs` by the client's clock (0 once it passed). */
  get leaseRemainingMs(): number {
    return Math.max(0, this.leaseEndMs - this.client.clock.nowMs());
  }

  private scheduleKeepAlive(): void {
    this.keepaliveTimer = this.client.timers.setTimeout(() => {
      if (this.closed) return;
      this.scheduleKeepAlive();
      this.keepAlive();
    }, this.keepAlivePeriodMs());
  }

  private armLeaseTimer(): void {
    this.client.timers.clearTimeout(this.leaseTimer);
    this.leaseTimer = this.client.timers.setTimeout(() => this.checkLease(), Math.max(0, this.leaseEndMs - this.client.clock.nowMs()) + 1);
  }

  /** Whether the lease still runs by the clock now (a late lease timer is not waited for). */
  stillLeased(): boolean {
    this.checkLease();
    return !this.lost;
  }

  private checkLease(): void {
    if (this.closed) return;
    // Timers fire late after a pause (SIGSTOP, GC): the clock decides, not the timer.
    if (this.client.clock.nowMs() >= this.leaseEndMs) {
      this.lose("no keepalive reached the server for a whole TTL");
    } else {
      this.armLeaseTimer();
    }
  }

  private keepAlive(): void {
    this.checkLease();
    if (this.closed) return;
    const sentAtMs = this.client.clock.nowMs();
    // Each try gives up within one keepalive period: a try stuck at a paused primary must leave
    // room, before the lease ends, for the next one at the server that takes over.
    const attemptTimeoutMs = Math.min(this.client.requestTimeoutMs, this.keepAlivePeriodMs());
    const round = ++this.keepAliveRound;
    this.client.requestThen<{ locks?: unknown }>("POST", `/v1/sessions/${encodeURIComponent(this.id)}/keepalive`, { sessionSecret: SECRETS.get(this) }, 0, (outcome) => {
      if (this.closed) return;
      if (outcome.ok) {
        this.leaseEndMs = Math.max(this.leaseEndMs, sentAtMs + this.ttlMs);
        this.armLeaseTimer();
        this.checkHeld(round, outcome.value.locks);
      } else if (outcome.error.code === "session_not_found") {
        this.lose("the server expired the session");
      }
      // Other failures: try again on the next round; the lease timer bounds how long.
    }, attemptTimeoutMs);
  }

  /**
   * Watches a lock this session holds: `onGone` runs once when a keepalive sent after this call
   * answers that the session no longer holds `name` (another party released it: a force-release).
   * Returns the function that stops watching (before a leave, whose keepalives must not count).
   */
  watchHeld(name: string, onGone: (reason: MutexdError) => void): () => void {
    const watch = { sinceRound: this.keepAliveRound, onGone };
    this.heldWatches.set(name, watch);
    return () => {
      if (this.heldWatches.get(name) === watch) this.heldWatches.delete(name);
    };
  }

  /** The keepalive of `round` answered `locks`: a watched lock missing from it is gone. */
  private checkHeld(round: number, locks: unknown): void {
    // A server without the list (an older one) or a malformed answer tells nothing.
    if (!Array.isArray(locks) || !locks.every((name) => typeof name === "string")) return;
    for (const [name, watch] of [...this.heldWatches]) {
      // A keepalive sent before the grant was seen may have been applied before it.
      if (watch.sinceRound >= round || locks.includes(name)) continue;
      this.heldWatches.delete(name);
      watch.onGone(new MutexdError("lock_lost", `lock ${name} lost: the server says session ${this.id} no longer holds it (released by another party)`));
    }
  }

  private keepAlivePeriodMs(): number {
    return Math.max(1, Math.floor(this.ttlMs / 3));
  }

  private lose(reason: string): void {
    if (this.closed) return;
    this.stopTimers();
    this.closed = true;
    this.controller.abort(new MutexdError("lock_lost", `session ${this.id} lost: ${reason}`));
  }

  private stopTimers(): void {
    this.client.timers.clearTimeout(this.keepaliveTimer);
    this.client.timers.clearTimeout(this.leaseTimer);
  }

  /** Whether the session was lost (the signal fired) rather than closed. */
  get lost(): boolean {
    return this.controller.signal.aborted;
  }

  /** Closes the session on the server, releasing whatever it holds. */
  close(): Promise<void> {
    return promised((done) => this.closeThen(done));
  }

  closeThen(done: Done<void>): void {
    if (this.closed) return done({ ok: true, value: undefined });
    this.closed = true;
    this.stopTimers();
    const path = `/v1/sessions/${encodeURIComponent(this.id)}`;
    this.client.requestThen<unknown>("DELETE", path, { requestId: this.client.newRequestId(), sessionSecret: SECRETS.get(this) }, 0, (outcome) => {
      if (outcome.ok || outcome.error.code === "session_not_found") return done({ ok: true, value: undefined });
      done(outcome);
    });
  }
}
