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
 * This file holds LockClient (failover over the servers, the lock calls) and `connect`, and
 * exports the whole client: the session and its keepalive are in lock_session.ts, the held lock
 * in lock_handle.ts, NotAcquiredError in lock_errors.ts, the options and answers in lock_types.ts.
 */
import { MutexdError } from "../wire/errors.ts";
import { DEFAULT_SETTINGS } from "../settings.ts";
import {
  checkedToken,
  chooseFetch,
  type ClockPort,
  exchange,
  type HttpPorts,
  type Outcome,
  promised,
  realClock,
  realTimers,
  type TimersPort,
  WAIT_CHUNK_MS,
} from "./http.ts";
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
/**
 * LockClient.request's backoff after each round over all servers: 25, 50, 100, 100… ms. A
 * takeover ends 450–550 ms after a kill -9 of the primary (docs/bench.md, F1); with a 250 ms cap
 * the tries came at 375 and 625 ms, so up to 250 ms passed after the new primary served (issue
 * 14). 100 ms bounds that, for at most 10 rounds (20 requests) a second per client meanwhile.
 */
const BACKOFF_FIRST_MS = 25;
const BACKOFF_MAX_MS = 100;
/** Rounds of one enter; each returns or long-polls toward the deadline, so this is never reached. */
const ENTER_ROUNDS_MAX = 1_000_000;

type EnterAnswer =
  | { granted: true; name: string; session: string; token: number; mode: Mode }
  | { granted: false; waiting: boolean; name: string; position: number };

export class LockClient {
  private readonly servers: string[];
  private current = 0;
  readonly requestTimeoutMs: number;
  private readonly failoverTimeoutMs: number;
  /** The longest a server holds a waiting enter (learnt when a session opens). */
  private longPollMs = DEFAULT_LONG_POLL_MS;
  readonly clock: ClockPort;
  readonly timers: TimersPort;
  private readonly ports: HttpPorts;
  /** A fresh idempotency key; one per call, the same on every retry of it. */
  readonly newRequestId: () => string;
  private readonly newSessionSecret: () => string;
  private readonly token: string | undefined;

  constructor(options: ConnectOptions) {
    this.servers = (Array.isArray(options.servers) ? options.servers : [options.servers]).map((s) => s.replace(/\/$/, ""));
    if (this.servers.length === 0) throw new MutexdError("bad_request", "connect: no servers given");
    this.requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_SETTINGS.requestTimeoutMs;
    this.failoverTimeoutMs = options.failoverTimeoutMs ?? DEFAULT_SETTINGS.failoverTimeoutMs;
    this.clock = options.clock ?? realClock;
    this.timers = options.timers ?? realTimers;
    this.ports = { fetch: chooseFetch(options.fetch, options.tls), timers: this.timers };
    this.newRequestId = options.newRequestId ?? (() => crypto.randomUUID());
    this.newSessionSecret = options.newSessionSecret ?? randomSessionSecret;
    this.token = checkedToken(options.token);
  }

  /** The server the next request goes to first. */
  get server(): string {
    return this.servers[this.current];
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

  /**
   * `request` with a callback. Every try sends the same `body` (so the same idempotency key).
   * Each try gives up after `attemptTimeoutMs` (requestTimeoutMs plus `extraTimeoutMs` by default).
   */
  requestThen<T>(method: string, path: string, body: unknown, extraTimeoutMs: number, done: Done<T>, attemptTimeoutMs?: number): void {
    const deadlineMs = this.clock.nowMs() + this.failoverTimeoutMs;
    let lastError: MutexdError | undefined;
    let backoffMs = BACKOFF_FIRST_MS;
    let attempt = 0;
    // Bounded by the deadline; every failed round over the servers sleeps, so this never spins.
    // Every server is tried once even after the deadline: a try that hung until its timeout (a
    // paused server, a long-poll) must not use the window up before the other one was asked.
    const next = (): void => {
      if (attempt >= this.servers.length && this.clock.nowMs() >= deadlineMs) {
        return done(failed(lastError ?? new MutexdError("unreachable", "no server answered")));
      }
      if (attempt > 0 && attempt % this.servers.length === 0) {
        this.timers.setTimeout(send, backoffMs);
        backoffMs = Math.min(backoffMs * 2, BACKOFF_MAX_MS);
      } else {
        send();
      }
    };
    const send = (): void => {
      attempt += 1;
      const tried = this.current;
      const base = this.servers[tried];
      const timeoutMs = attemptTimeoutMs ?? this.requestTimeoutMs + extraTimeoutMs;
      exchange<T>(this.ports, { base, method, path, body, timeoutMs, token: this.token }, (outcome) => {
        // Any other answer is the call's: a refusal (401, 403, 404, 409, 429…) would be the same at
        // the other server.
        if (outcome.ok || (outcome.error.code !== "unreachable" && outcome.error.code !== "not_primary")) return done(outcome);
        lastError = outcome.error;
        this.moveOn(tried, outcome.detail?.primaryUrl);
        next();
      });
    };
    next();
  }

  /**
   * After a failure at server `tried`: the next request goes to the hinted primary when it is one
   * of the servers, else to the next one. Only if no other request moved on meanwhile: concurrent
   * failures at the same server (a keepalive and a long-poll at a paused primary) must not move
   * the client back to it.
   */
  private moveOn(tried: number, primaryUrl: unknown): void {
    const hinted = typeof primaryUrl === "string" ? this.servers.indexOf(primaryUrl.replace(/\/$/, "")) : -1;
    if (this.current === tried) {
      this.current = hinted >= 0 && hinted !== tried ? hinted : (tried + 1) % this.servers.length;
    }
  }

  /**
   * Follows lock `name`'s holders and queue (`GET /v1/locks/:name/watch`): an async iterator of a
   * `snapshot`, then a `change` per change, moving to the new primary after a failover (an `end`
   * event, then a new `snapshot`). Ends when `signal` aborts or the loop leaves; throws a refusal
   * (401, 403, 429) at once, and "unreachable" when no server took the watch for failoverTimeoutMs.
   * See lock_watch.ts.
   */
  watch(name: string, options: { signal?: AbortSignal } = {}): AsyncGenerator<WatchEvent, void, undefined> {
    return watchLock({
      ports: this.ports,
      clock: this.clock,
      token: this.token,
      requestTimeoutMs: this.requestTimeoutMs,
      failoverTimeoutMs: this.failoverTimeoutMs,
      serverCount: this.servers.length,
      currentServer: () => ({ index: this.current, base: this.servers[this.current] }),
      moveOn: (tried, primaryUrl) => this.moveOn(tried, primaryUrl),
    }, name, options.signal);
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
