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
 */
import { MutexdError } from "../wire/errors.ts";

export type Mode = "exclusive" | "shared";

export interface ConnectOptions {
  /** Base URLs of the lock servers, tried in order (primary first). */
  servers: string | string[];
  /** One HTTP request gives up after this (long-polls get their wait on top). */
  requestTimeoutMs?: number;
  /**
   * How long a call keeps trying while no server serves (a takeover in progress): it moves to
   * the other server on a connection failure or a "not primary" answer, with a short backoff.
   */
  failoverTimeoutMs?: number;
}

export interface EnterOptions {
  session: string;
  mode?: Mode;
  /** How long to wait in the queue; 0 is a try-lock. */
  waitMs?: number;
  /** After a holder dies (not on leave), nobody gets the lock for this long (Chubby lock-delay). */
  lockDelayMs?: number;
}

export type EnterResult =
  | { granted: true; name: string; session: string; token: number; mode: Mode }
  | { granted: false; name: string; position: number };

export interface LockOptions {
  waitMs?: number;
  ttlMs?: number;
  shared?: boolean;
  lockDelayMs?: number;
}

/**
 * The wait one enter asks for; longer waits are split into several. The server keeps the queue
 * place while the client keeps asking (every long-poll), so a client that vanishes leaves the
 * queue within this time even before its session expires. Settings keep waitMaxMs above it.
 */
export const WAIT_CHUNK_MS = 60_000;
/** How long a server may hold a waiting enter when it has not said (its default). */
const DEFAULT_LONG_POLL_MS = 5_000;

function nowMs(): number {
  return performance.now();
}

export class LockClient {
  private readonly servers: string[];
  private current = 0;
  private readonly requestTimeoutMs: number;
  private readonly failoverTimeoutMs: number;
  /** The longest a server holds a waiting enter (learnt when a session opens). */
  private longPollMs = DEFAULT_LONG_POLL_MS;

  constructor(options: ConnectOptions) {
    this.servers = (Array.isArray(options.servers) ? options.servers : [options.servers]).map((s) => s.replace(/\/$/, ""));
    if (this.servers.length === 0) throw new MutexdError("bad_request", "connect: no servers given");
    this.requestTimeoutMs = options.requestTimeoutMs ?? 3_000;
    this.failoverTimeoutMs = options.failoverTimeoutMs ?? 5_000;
  }

  /** The server the next request goes to first. */
  get server(): string {
    return this.servers[this.current];
  }

  /**
   * Sends one request; on a connection failure or a "not primary" answer it moves to the hinted
   * or the next server and tries again, until failoverTimeoutMs has passed. Requests that must
   * not apply twice carry an idempotency key (`requestId`), so a retry is safe.
   */
  async request<T>(method: string, path: string, body?: unknown, extraTimeoutMs = 0): Promise<T> {
    let lastError: MutexdError | undefined;
    const deadlineMs = nowMs() + this.failoverTimeoutMs;
    let backoffMs = 25;
    // Bounded by the deadline; every failed round sleeps, so this never spins.
    for (let attempt = 0; attempt === 0 || nowMs() < deadlineMs; attempt++) {
      if (attempt > 0 && attempt % this.servers.length === 0) {
        await new Promise((resolve) => setTimeout(resolve, backoffMs));
        backoffMs = Math.min(backoffMs * 2, 250);
      }
      const base = this.servers[this.current];
      let response: Response;
      try {
        response = await fetch(base + path, {
          method,
          headers: body === undefined ? undefined : { "content-type": "application/json" },
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(this.requestTimeoutMs + extraTimeoutMs),
        });
      } catch (error) {
        lastError = new MutexdError("unreachable", `${base}: ${(error as Error).message}`);
        this.current = (this.current + 1) % this.servers.length;
        continue;
      }
      const text = await response.text();
      let data: unknown;
      try {
        data = text ? JSON.parse(text) : {};
      } catch {
        throw new MutexdError("internal", `${base}${path}: answer is not JSON (status ${response.status})`, response.status);
      }
      if (response.ok) return data as T;
      const error = (data as { error?: { code?: string; message?: string; primaryUrl?: string } }).error;
      const failure = new MutexdError(
        (error?.code ?? "internal") as MutexdError["code"],
        error?.message ?? `status ${response.status}`,
        response.status,
      );
      if (failure.code !== "not_primary") throw failure;
      lastError = failure;
      const hinted = error?.primaryUrl ? this.servers.indexOf(error.primaryUrl.replace(/\/$/, "")) : -1;
      this.current = hinted >= 0 && hinted !== this.current ? hinted : (this.current + 1) % this.servers.length;
    }
    throw lastError ?? new MutexdError("unreachable", "no server answered");
  }

  /** Opens a session and keeps it alive until closed or lost. */
  async openSession(options: { ttlMs?: number } = {}): Promise<Session> {
    const sentAtMs = nowMs();
    const opened = await this.request<{ session: string; ttlMs: number; longPollMaxMs?: number }>("POST", "/v1/sessions", {
      ...(options.ttlMs === undefined ? {} : { ttlMs: options.ttlMs }),
      requestId: crypto.randomUUID(),
    });
    if (opened.longPollMaxMs !== undefined) this.longPollMs = opened.longPollMaxMs;
    return new Session(this, opened.session, opened.ttlMs, sentAtMs);
  }

  /** mutex_enter: waits up to `waitMs` (long-polling, keeping the queue place) for a grant. */
  async enter(name: string, options: EnterOptions): Promise<EnterResult> {
    const waitMs = options.waitMs ?? 0;
    const deadlineMs = nowMs() + waitMs;
    // Each round either returns or moves toward the deadline by a long-poll; the count bounds it.
    for (let round = 0; round < 1_000_000; round++) {
      const remainingMs = Math.max(0, Math.round(deadlineMs - nowMs()));
      const chunkMs = Math.min(remainingMs, WAIT_CHUNK_MS);
      const answer = await this.request<
        { granted: true; name: string; session: string; token: number; mode: Mode } | {
          granted: false;
          waiting: boolean;
          name: string;
          position: number;
        }
      >("POST", "/v1/enter", {
        name,
        session: options.session,
        mode: options.mode ?? "exclusive",
        waitMs: chunkMs,
        lockDelayMs: options.lockDelayMs ?? 0,
      }, Math.min(chunkMs, this.longPollMs));
      if (answer.granted) return answer;
      if (!answer.waiting || remainingMs === 0) {
        if (answer.waiting) await this.leave(name, { session: options.session }).catch(() => {});
        return { granted: false, name, position: answer.position };
      }
    }
    throw new MutexdError("internal", "enter: too many rounds");
  }

  /** mutex_leave: releases a held lock (with its token) or withdraws a queued request (without). */
  async leave(name: string, options: { session: string; token?: number }): Promise<void> {
    await this.request("POST", "/v1/leave", {
      name,
      session: options.session,
      token: options.token,
      requestId: crypto.randomUUID(),
    });
  }

  /**
   * Takes `name` in a session of its own and returns a handle; throws NotAcquiredError (code
   * "not_acquired") when someone else held it for the whole wait.
   */
  async lock(name: string, options: LockOptions = {}): Promise<LockHandle> {
    const session = await this.openSession({ ttlMs: options.ttlMs });
    try {
      const result = await this.enter(name, {
        session: session.id,
        mode: options.shared ? "shared" : "exclusive",
        waitMs: options.waitMs ?? 0,
        lockDelayMs: options.lockDelayMs,
      });
      if (!result.granted) {
        throw new NotAcquiredError(name, result.position);
      }
      session.signal.throwIfAborted();
      return new LockHandle(this, session, name, result.token);
    } catch (error) {
      await session.close().catch(() => {});
      throw error;
    }
  }

  status(): Promise<StatusAnswer> {
    return this.request<StatusAnswer>("GET", "/v1/status");
  }
}

/** The lock was held by someone else for the whole wait. */
export class NotAcquiredError extends MutexdError {
  constructor(readonly lockName: string, readonly position: number) {
    super("not_acquired", `lock ${lockName} is taken (queue position ${position})`);
    this.name = "NotAcquiredError";
  }
}

/** A server session kept alive every TTL/3; `signal` aborts when it is lost. */
export class Session {
  private readonly controller = new AbortController();
  private keepaliveTimer: ReturnType<typeof setInterval> | undefined;
  private leaseTimer: ReturnType<typeof setTimeout> | undefined;
  /** Local end of the lease: send time of the last acknowledged keepalive plus the TTL. */
  private leaseEndsAtMs: number;
  private closed = false;

  constructor(private readonly client: LockClient, readonly id: string, readonly ttlMs: number, sentAtMs: number) {
    this.leaseEndsAtMs = sentAtMs + ttlMs;
    this.keepaliveTimer = setInterval(() => void this.keepAlive(), Math.max(1, Math.floor(ttlMs / 3)));
    this.armLeaseTimer();
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  private armLeaseTimer(): void {
    clearTimeout(this.leaseTimer);
    this.leaseTimer = setTimeout(() => this.checkLease(), Math.max(0, this.leaseEndsAtMs - nowMs()) + 1);
  }

  private checkLease(): void {
    if (this.closed) return;
    // Timers fire late after a pause (SIGSTOP, GC): the clock decides, not the timer.
    if (nowMs() >= this.leaseEndsAtMs) {
      this.lose("no keepalive reached the server for a whole TTL");
    } else {
      this.armLeaseTimer();
    }
  }

  private async keepAlive(): Promise<void> {
    if (this.closed) return;
    this.checkLease();
    if (this.closed) return;
    const sentAtMs = nowMs();
    try {
      await this.client.request("POST", `/v1/sessions/${encodeURIComponent(this.id)}/keepalive`);
      if (this.closed) return;
      this.leaseEndsAtMs = Math.max(this.leaseEndsAtMs, sentAtMs + this.ttlMs);
      this.armLeaseTimer();
    } catch (error) {
      if (error instanceof MutexdError && error.code === "session_not_found") {
        this.lose("the server expired the session");
      }
      // Other failures: try again on the next round; the lease timer bounds how long.
    }
  }

  private lose(reason: string): void {
    if (this.closed) return;
    this.stopTimers();
    this.closed = true;
    this.controller.abort(new MutexdError("lock_lost", `session ${this.id} lost: ${reason}`));
  }

  private stopTimers(): void {
    clearInterval(this.keepaliveTimer);
    clearTimeout(this.leaseTimer);
  }

  /** Whether the session was lost (the signal fired) rather than closed. */
  get lost(): boolean {
    return this.controller.signal.aborted;
  }

  /** Closes the session on the server, releasing whatever it holds. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopTimers();
    await this.client.request("DELETE", `/v1/sessions/${encodeURIComponent(this.id)}`, {
      requestId: crypto.randomUUID(),
    }).catch((error) => {
      if (!(error instanceof MutexdError && error.code === "session_not_found")) throw error;
    });
  }
}

/** A held lock. `await using` releases it; `signal` aborts if it is lost first. */
export class LockHandle {
  constructor(
    private readonly client: LockClient,
    readonly session: Session,
    readonly name: string,
    /** The fencing token: pass it to the resource, which rejects smaller ones. */
    readonly token: number,
  ) {}

  get signal(): AbortSignal {
    return this.session.signal;
  }

  /** Leaves the lock and closes its session. Safe to call twice. */
  async release(): Promise<void> {
    if (this.session.lost) {
      await this.session.close();
      return;
    }
    try {
      await this.client.leave(this.name, { session: this.session.id, token: this.token });
    } finally {
      await this.session.close();
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.release().catch(() => {});
  }
}

export function connect(options: ConnectOptions): LockClient {
  return new LockClient(options);
}

export interface StatusAnswer {
  node: { id: string; role: string };
  /** Replication state of this server (see lib/core/lock_replica.ts ReplicaStatus). */
  server?: {
    role: "joining" | "primary" | "backup";
    epoch: number;
    primary: string | null;
    serving: boolean;
    leaseRemainingMs: number;
    backup: { id: string; mode: string; ackedIndex: number; lagEntries: number; arbiterRecordedInSync: boolean } | null;
    lastIndex: number;
    commitIndex: number;
    hasState: boolean;
    lastHeardFromPrimaryMs: number | null;
  };
  lastToken: number;
  sessions: Array<{ session: string; ttlMs: number; ageMs: number; expiresInMs: number; locks: string[] }>;
  locks: Array<{
    name: string;
    holders: Array<{ session: string; token: number; mode: Mode; heldForMs: number; lockDelayMs: number }>;
    waiters: Array<{ position: number; session: string; mode: Mode; waitingForMs: number }>;
    lockDelayRemainingMs: number;
  }>;
}
