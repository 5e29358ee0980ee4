/**
 * The TypeScript client of the lock service, for Deno, Bun and Node (web-standard fetch only).
 *
 *   const client = connect({ servers: ["http://127.0.0.1:7101"] });
 *   await using lock = await client.lock("invoices", { waitMs: 5_000, ttlMs: 10_000 });
 *   await storage.write(data, { fencingToken: lock.token, signal: lock.signal });
 *
 * A lock lives in a session that the client keeps alive every TTL/3. The handle's `signal`
 * aborts when the lock is lost: the server expired the session, or no keepalive got through for
 * a whole TTL (then the server may already have given the lock away, so the client must stop).
 * `enter` and `leave` are the seed's mutex_enter and mutex_leave.
 *
 * The runtime (fetch, clock, timers, request ids) comes in through `ConnectOptions`, defaulting
 * to the real ones: the simulator runs this client as it is. Every call has a callback form
 * (`…Then`, answers through `done`, continues what the ports return with `.then` only; see
 * http.ts) that the Promise form wraps.
 *
 * This file holds LockClient (the lock calls) and `connect`, and exports the whole client: the
 * failover over the servers is in failover.ts, the session and its keepalive in lock_session.ts,
 * the held lock in lock_handle.ts, NotAcquiredError in lock_errors.ts, the options and answers in
 * lock_types.ts.
 */
import { MutexdError } from "../wire/errors.ts";
import { DEFAULT_SETTINGS } from "../settings.ts";
import { checkedToken, chooseFetch, type ClockPort, type Outcome, promised, realClock, realTimers, type TimersPort, WAIT_CHUNK_MS } from "./http.ts";
import { Failover, serverUrls } from "./failover.ts";
import { type WatchEvent, watchLock } from "./lock_watch.ts";
import { failed, NotAcquiredError } from "./lock_errors.ts";
import { LockHandle } from "./lock_handle.ts";
import { randomSessionSecret, Session, sessionFields } from "./lock_session.ts";
import type { ConnectOptions, Done, EnterOptions, EnterResult, LockOptions, Mode, SessionRef, StatusAnswer } from "./lock_types.ts";

export type { ConnectOptions, Done, EnterOptions, EnterResult, LockOptions, Mode, SessionRef, StatusAnswer } from "./lock_types.ts";
export { NotAcquiredError } from "./lock_errors.ts";
export { LockHandle } from "./lock_handle.ts";
export { randomSessionSecret, Session } from "./lock_session.ts";
export { WAIT_CHUNK_MS };
/** How long a server may hold a waiting enter when it has not said (its default). */
const DEFAULT_LONG_POLL_MS = DEFAULT_SETTINGS.longPollMaxMs;
/** Rounds of one enter; each returns or long-polls toward the deadline, so this is never reached. */
const ENTER_ROUNDS_MAX = 1_000_000;

type EnterAnswer =
  | { granted: true; name: string; session: string; token: number; mode: Mode }
  | { granted: false; waiting: boolean; name: string; position: number };

export class LockClient {
  /** Which server a request goes to, and each request's tries over the servers. */
  private readonly failover: Failover;
  readonly requestTimeoutMs: number;
  /** The longest a server holds a waiting enter (learnt when a session opens). */
  private longPollMs = DEFAULT_LONG_POLL_MS;
  readonly clock: ClockPort;
  readonly timers: TimersPort;
  /** A fresh idempotency key; one per call, the same on every retry of it. */
  readonly newRequestId: () => string;
  private readonly newSessionSecret: () => string;

  constructor(options: ConnectOptions) {
    const servers = serverUrls(options.servers);
    this.requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_SETTINGS.requestTimeoutMs;
    this.clock = options.clock ?? realClock;
    this.timers = options.timers ?? realTimers;
    const ports = { fetch: chooseFetch(options.fetch, options.tls), timers: this.timers };
    this.newRequestId = options.newRequestId ?? (() => crypto.randomUUID());
    this.newSessionSecret = options.newSessionSecret ?? randomSessionSecret;
    this.failover = new Failover({
      servers,
      ports,
      clock: this.clock,
      timers: this.timers,
      token: checkedToken(options.token),
      requestTimeoutMs: this.requestTimeoutMs,
      failoverTimeoutMs: options.failoverTimeoutMs ?? DEFAULT_SETTINGS.failoverTimeoutMs,
    });
  }

  /** The server the next request goes to first. */
  get server(): string {
    return this.failover.currentServer().base;
  }

  /**
   * Sends one request; on a connection failure or a "not primary" answer it moves to the hinted
   * or the next server and tries again, until failoverTimeoutMs has passed and every server was
   * asked once. Requests that must not apply twice carry an idempotency key (`requestId`), so a
   * retry is safe.
   */
  request<T>(method: string, path: string, body?: unknown, extraTimeoutMs = 0): Promise<T> {
    return promised((done) => this.requestThen(method, path, body, extraTimeoutMs, done));
  }

  /** `request` with a callback (Failover.requestThen: every try sends the same body; `attemptTimeoutMs` bounds each). */
  requestThen<T>(method: string, path: string, body: unknown, extraTimeoutMs: number, done: Done<T>, attemptTimeoutMs?: number): void {
    this.failover.requestThen(method, path, body, extraTimeoutMs, done, attemptTimeoutMs);
  }

  /**
   * Follows lock `name`'s holders and queue (`GET /v1/locks/:name/watch`): an async iterator of a
   * `snapshot`, then a `change` per change, moving to the new primary after a failover (an `end`
   * event, then a new `snapshot`). Ends when `signal` aborts or the loop leaves; throws a refusal
   * (401, 403, 429) at once, and "unreachable" when no server took the watch for failoverTimeoutMs.
   * See lock_watch.ts.
   */
  watch(name: string, options: { signal?: AbortSignal } = {}): AsyncGenerator<WatchEvent, void, undefined> {
    return watchLock(this.failover, name, options.signal);
  }

  /** Opens a session and keeps it alive until closed or lost. */
  openSession(options: { ttlMs?: number } = {}): Promise<Session> {
    return promised((done) => this.openSessionThen(options, done));
  }

  openSessionThen(options: { ttlMs?: number }, done: Done<Session>): void {
    const sentAtMs = this.clock.nowMs();
    // The client makes the session's secret itself (the server keeps only its hash): a retry of
    // this open after a lost answer (same requestId) then finds the same session, still usable.
    const body = { ...(options.ttlMs === undefined ? {} : { ttlMs: options.ttlMs }), requestId: this.newRequestId(), sessionSecret: this.newSessionSecret() };
    this.requestThen<{ session: string; sessionSecret: string; ttlMs: number; longPollMaxMs?: number }>("POST", "/v1/sessions", body, 0, (outcome) => {
      if (!outcome.ok) return done(outcome);
      const opened = outcome.value;
      if (opened.longPollMaxMs !== undefined) this.longPollMs = opened.longPollMaxMs;
      done({ ok: true, value: new Session(this, opened.session, opened.ttlMs, sentAtMs, opened.sessionSecret) });
    });
  }

  /** mutex_enter: waits up to `waitMs` (long-polling, keeping the queue place) for a grant. */
  enter(name: string, options: EnterOptions): Promise<EnterResult> {
    return promised((done) => this.enterThen(name, options, done));
  }

  enterThen(name: string, options: EnterOptions, done: Done<EnterResult>): void {
    const deadlineMs = this.clock.nowMs() + (options.waitMs ?? 0);
    // One id for the whole call (every round and retry): once the call's grant or wait is left,
    // a late copy of any of its requests grants nothing (docs/http-api.md, `callId`).
    const callId = this.newRequestId();
    let round = 0;
    const ask = (): void => {
      if (round++ >= ENTER_ROUNDS_MAX) return done(failed(new MutexdError("internal", "enter: too many rounds")));
      const remainingMs = Math.max(0, Math.round(deadlineMs - this.clock.nowMs()));
      const chunkMs = Math.min(remainingMs, WAIT_CHUNK_MS);
      const body = {
        name,
        ...sessionFields(options),
        mode: options.mode ?? "exclusive",
        waitMs: chunkMs,
        lockDelayMs: options.lockDelayMs ?? 0,
        callId,
      };
      this.requestThen<EnterAnswer>("POST", "/v1/enter", body, Math.min(chunkMs, this.longPollMs), (outcome) => {
        if (!outcome.ok) return done(outcome);
        const answer = outcome.value;
        if (answer.granted) return done(outcome as Outcome<EnterResult>);
        if (answer.waiting && remainingMs > 0) return ask();
        const notGranted: Outcome<EnterResult> = { ok: true, value: { granted: false, name, position: answer.position } };
        // Still queued when the wait ran out: withdraw, whatever the withdrawal's fate.
        if (answer.waiting) return this.leaveThen(name, { session: options.session, sessionSecret: options.sessionSecret }, () => done(notGranted));
        done(notGranted);
      });
    };
    ask();
  }

  /** mutex_leave: releases a held lock (with its token) or withdraws a queued request (without). */
  leave(name: string, options: SessionRef & { token?: number }): Promise<void> {
    return promised((done) => this.leaveThen(name, options, done));
  }

  leaveThen(name: string, options: SessionRef & { token?: number }, done: Done<void>): void {
    const body = { name, ...sessionFields(options), token: options.token, requestId: this.newRequestId() };
    this.requestThen<unknown>("POST", "/v1/leave", body, 0, (outcome) => done(outcome.ok ? { ok: true, value: undefined } : outcome));
  }

  /**
   * Takes `name` in a session of its own and returns a handle; throws NotAcquiredError (code
   * "not_acquired") when someone else held it for the whole wait.
   */
  lock(name: string, options: LockOptions = {}): Promise<LockHandle> {
    return promised((done) => this.lockThen(name, options, done));
  }

  lockThen(name: string, options: LockOptions, done: Done<LockHandle>): void {
    this.openSessionThen({ ttlMs: options.ttlMs }, (opened) => {
      if (!opened.ok) return done(opened);
      const session = opened.value;
      const enter = { session, mode: (options.shared ? "shared" : "exclusive") as Mode, waitMs: options.waitMs ?? 0, lockDelayMs: options.lockDelayMs };
      this.enterThen(name, enter, (entered) => {
        let outcome: Outcome<LockHandle>;
        if (!entered.ok) outcome = entered;
        else if (!entered.value.granted) outcome = failed(new NotAcquiredError(name, entered.value.position, enter.waitMs));
        // A grant that arrives after the lease ran out (its answer or this client was stalled
        // longer than the TTL) holds nothing: the lease timer may not have fired yet.
        else if (!session.stillLeased()) outcome = failed(session.signal.reason as MutexdError);
        else return done({ ok: true, value: new LockHandle(this, session, name, entered.value.token) });
        // Not acquired: the session goes, whatever its closing's fate.
        session.closeThen(() => done(outcome));
      });
    });
  }

  /**
   * An operator's release of `name` from whoever holds it (admin permission when the cluster has
   * client tokens). The holders' tokens are answered; the fencing counter moves past them, the
   * holders' lock-delay applies, and the queue moves on. Rejects with "lock_not_found" when
   * nobody holds it.
   */
  forceRelease(name: string): Promise<{ name: string; tokens: number[] }> {
    return this.request<{ name: string; tokens: number[] }>("POST", "/v1/force-release", { name, requestId: this.newRequestId() });
  }

  status(): Promise<StatusAnswer> {
    return this.request<StatusAnswer>("GET", "/v1/status");
  }
}

export function connect(options: ConnectOptions): LockClient {
  return new LockClient(options);
}
