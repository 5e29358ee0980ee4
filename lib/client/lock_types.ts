/**
 * The lock client's options, arguments and answers (lock_client.ts uses them; users import them
 * from there or from the package's `mutexd/client`).
 */
import type { ClockPort, FetchPort, Outcome, TimersPort } from "./http.ts";
import type { Session } from "./lock_session.ts";
import type { TlsOptions } from "./tls.ts";

export type Mode = "exclusive" | "shared";

export interface ConnectOptions {
  /** Base URLs of the lock servers, tried in order (primary first). */
  servers: string | string[];
  /**
   * One HTTP request gives up after this (long-polls get their wait on top; a keepalive gives up
   * after one keepalive period, TTL/3, if that is shorter), even at a server that never answers.
   */
  requestTimeoutMs?: number;
  /**
   * How long a call keeps trying while no server serves (a takeover in progress): it moves to
   * the other server on a connection failure or a "not primary" answer, with a short backoff.
   */
  failoverTimeoutMs?: number;
  /** Servers on HTTPS with a private CA: its certificate(s) as PEM text (ignored when `fetch` is given). */
  tls?: TlsOptions;
  /** Ports, for tests and the simulator: the web `fetch`, `performance.now`, `setTimeout` by default. */
  fetch?: FetchPort;
  clock?: ClockPort;
  timers?: TimersPort;
  /** A fresh idempotency key per call (crypto.randomUUID by default). */
  newRequestId?: () => string;
  /**
   * Makes the secret of each session this client opens (the server keeps only its hash); default
   * 256 bits of Web Crypto randomness. Tests and the simulator pass a seeded one.
   */
  newSessionSecret?: () => string;
  /**
   * The bearer token (a `[[tokens]]` secret's value) when the cluster requires client tokens.
   * The client reads no files: the caller passes the value. A 401 `unauthorized` or 403
   * `forbidden` answer rejects the call at once (no other server is tried).
   */
  token?: string;
}

/**
 * The session a call acts on: a `Session` this client opened (it carries its secret), or a
 * session id with the `sessionSecret` its open answered (a session opened elsewhere).
 */
export interface SessionRef {
  session: Session | string;
  sessionSecret?: string;
}

export interface EnterOptions extends SessionRef {
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

/** What `…Then` calls answer with: the value, or the MutexdError the Promise form rejects with. */
export type Done<T> = (outcome: Outcome<T>) => void;

export interface StatusAnswer {
  /** `role`: the server's role now (after a failover the configured backup serves as primary); `configuredRole`: the cluster file's. */
  /** `formats`: the wire and disk format versions of the node's build (`1.0`; docs/deploy.md, "Upgrades and format versions"). */
  node: { id: string; role: string; configuredRole?: string; version?: string; formats?: { wire: string; disk: string } };
  /** Refused input by reason (forged, malformed, …: docs/security.md). */
  security?: Record<string, number>;
  /** Replication state of this server (see lib/core/lock/lock_replica.ts ReplicaStatus). */
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
  /** `owner`: the token name of the caller that opened the session (absent without client tokens). */
  sessions: Array<{ session: string; owner?: string; ttlMs: number; ageMs: number; expiresInMs: number; locks: string[] }>;
  locks: Array<{
    name: string;
    holders: Array<{ session: string; owner?: string; token: number; mode: Mode; heldForMs: number; lockDelayMs: number }>;
    waiters: Array<{ position: number; session: string; owner?: string; mode: Mode; waitingForMs: number }>;
    lockDelayRemainingMs: number;
  }>;
}
