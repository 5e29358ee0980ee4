/**
 * The lock client's failover over its servers: which server a request goes to (the one that last
 * answered, or the primary a "not primary" answer named; a server that named itself is asked
 * again once first), and one request's tries until a server serves it or failoverTimeoutMs has
 * passed. LockClient sends every call through it; a watch (lock_watch.ts) moves on with it. The
 * rule is in docs/failover.md, "The client's failover rule".
 */
import { MutexdError } from "../wire/errors.ts";
import { type ClockPort, exchange, type HttpPorts, type TimersPort } from "./http.ts";
import { failed } from "./lock_errors.ts";
import type { Done } from "./lock_types.ts";
import type { WatchHost } from "./lock_watch.ts";

/**
 * LockClient.request's backoff after each round over all servers: 25, 50, 100, 100… ms. A
 * takeover ends 450–550 ms after a kill -9 of the primary (docs/bench.md, F1); with a 250 ms cap
 * the tries came at 375 and 625 ms, so up to 250 ms passed after the new primary served (issue
 * 14). 100 ms bounds that, for at most 10 rounds (20 requests) a second per client meanwhile.
 */
const BACKOFF_FIRST_MS = 25;
const BACKOFF_MAX_MS = 100;

/**
 * A "not primary" that names the server itself comes from the primary of record whose lease
 * lapsed for a moment (a stall, a renewal late; or the arbiter's record does not cover a TTL yet):
 * it serves again once its next renewal is answered, about one of its round trips to the arbiter
 * later. So the client asks it once more, after twice the round trip of the refused try (at least
 * SELF_RETRY_MIN_MS; at most SELF_RETRY_MAX_MS, as a try that waited at a paused server says
 * nothing of the network), before it moves on: moving at once sent keepalives to a paused backup,
 * where each lost a whole period. A cut-off primary whose epoch the backup has taken over names
 * itself too; each try there costs that one backoff and one more refusal, then the client moves on.
 */
const SELF_RETRY_MIN_MS = 25;
const SELF_RETRY_MAX_MS = 100;

/** How long after a "not primary" naming the server itself, answered `tryMs` after its send, to ask that server again. */
export function selfRetryMs(tryMs: number): number {
  return Math.min(SELF_RETRY_MAX_MS, Math.max(SELF_RETRY_MIN_MS, 2 * tryMs));
}

/** The base URLs of `servers` (ConnectOptions.servers), without a trailing slash; throws when none is given. */
export function serverUrls(servers: string | string[]): string[] {
  const urls = (Array.isArray(servers) ? servers : [servers]).map((s) => s.replace(/\/$/, ""));
  if (urls.length === 0) throw new MutexdError("bad_request", "connect: no servers given");
  return urls;
}

export interface FailoverOptions {
  servers: string[];
  ports: HttpPorts;
  clock: ClockPort;
  timers: TimersPort;
  token: string | undefined;
  requestTimeoutMs: number;
  failoverTimeoutMs: number;
}

export class Failover implements WatchHost {
  private readonly servers: string[];
  private current = 0;
  readonly ports: HttpPorts;
  readonly clock: ClockPort;
  private readonly timers: TimersPort;
  readonly token: string | undefined;
  readonly requestTimeoutMs: number;
  readonly failoverTimeoutMs: number;

  constructor(options: FailoverOptions) {
    this.servers = options.servers;
    this.ports = options.ports;
    this.clock = options.clock;
    this.timers = options.timers;
    this.token = options.token;
    this.requestTimeoutMs = options.requestTimeoutMs;
    this.failoverTimeoutMs = options.failoverTimeoutMs;
  }

  get serverCount(): number {
    return this.servers.length;
  }

  /** The index and URL of the server the next request goes to first. */
  currentServer(): { index: number; base: string } {
    return { index: this.current, base: this.servers[this.current] };
  }

  /**
   * Sends one request; on a connection failure or a "not primary" answer it moves to the hinted
   * or the next server and tries again, until failoverTimeoutMs has passed and every server was
   * asked once. A "not primary" naming the server itself is asked again once first (selfRetryMs),
   * also past the window: each try answered after it (the one running when it ends, and the rest
   * of that round) may add up to SELF_RETRY_MAX_MS and one retry (two servers: at most two each). Every try sends
   * the same `body` (so the same idempotency key) and gives up after `attemptTimeoutMs`
   * (requestTimeoutMs plus `extraTimeoutMs` by default).
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
        this.timers.setTimeout(() => send(this.current, false), backoffMs);
        backoffMs = Math.min(backoffMs * 2, BACKOFF_MAX_MS);
      } else {
        send(this.current, false);
      }
    };
    // `again`: the retry of server `tried` after it named itself; it is not a try of the round,
    // and its own refusal moves on (one retry per try, so a cut-off primary costs one backoff).
    const send = (tried: number, again: boolean): void => {
      if (!again) attempt += 1;
      const base = this.servers[tried];
      const timeoutMs = attemptTimeoutMs ?? this.requestTimeoutMs + extraTimeoutMs;
      const sentAtMs = this.clock.nowMs();
      exchange<T>(this.ports, { base, method, path, body, timeoutMs, token: this.token }, (outcome) => {
        // A retry that was served: that server serves now, whatever another request concluded meanwhile.
        if (outcome.ok && again) this.current = tried;
        // Any other answer is the call's: a refusal (401, 403, 404, 409, 429…) would be the same at
        // the other server.
        if (outcome.ok || (outcome.error.code !== "unreachable" && outcome.error.code !== "not_primary")) return done(outcome);
        lastError = outcome.error;
        // Also past the window, as every server is asked once past it: a keepalive whose window a
        // paused server used up must still reach the primary that serves again (the simulator's
        // failover.keepalive-reaches-primary judges exactly that, seed 350876221).
        if (!again && this.namesItself(tried, outcome)) {
          this.timers.setTimeout(() => send(tried, true), selfRetryMs(this.clock.nowMs() - sentAtMs));
          return;
        }
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
  moveOn(tried: number, primaryUrl: unknown): void {
    const hinted = this.hintedServer(primaryUrl);
    if (this.current === tried) {
      this.current = hinted >= 0 && hinted !== tried ? hinted : (tried + 1) % this.servers.length;
    }
  }

  /**
   * Whether a failed try at server `tried` was a "not primary" naming that server itself (see
   * SELF_RETRY_MIN_MS). One naming another server, or none (a backup without a primary, a server
   * stopping), is no reason to stay.
   */
  namesItself(tried: number, outcome: { error: MutexdError; detail?: Record<string, unknown> }): boolean {
    return outcome.error.code === "not_primary" && this.hintedServer(outcome.detail?.primaryUrl) === tried;
  }

  /** The index of the server a "not primary" hint names (its URL), or -1. */
  private hintedServer(primaryUrl: unknown): number {
    return typeof primaryUrl === "string" ? this.servers.indexOf(primaryUrl.replace(/\/$/, "")) : -1;
  }
}
