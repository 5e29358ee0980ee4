/**
 * The commands a lock table applies, its answers and its effects (lock_table.ts applies them;
 * the peer protocol carries them in log entries, lib/wire/lock_peer.ts).
 */
import type { ApiError } from "../../wire/errors.ts";

export type Mode = "exclusive" | "shared";

/**
 * Every command on a session carries `secretHash`, the hash of the secret its request presented
 * (session_owners.ts). `owner` and the `owner…Max` limits are the caller's (cluster/caller.ts),
 * absent without client tokens.
 */
export type Command =
  | { type: "openSession"; ttlMs: number; secretHash: string; owner?: string; ownerSessionsMax?: number }
  | { type: "keepAlive"; session: string; secretHash: string }
  | { type: "closeSession"; session: string; secretHash: string }
  | {
    type: "enter";
    name: string;
    session: string;
    secretHash: string;
    mode: Mode;
    waitMs: number;
    lockDelayMs: number;
    callId?: string;
    ownerWaitersMax?: number;
  }
  | { type: "leave"; name: string; session: string; secretHash: string; token?: number }
  /**
   * An operator's release (`mutexd release NAME --force`, admin permission when client tokens
   * exist): every holder loses the lock as if its session had died: the lock-delay applies and
   * the fencing counter moves on, so a write of the old holder is refused even before the next
   * grant.
   */
  | { type: "forceRelease"; name: string }
  | { type: "tick" }
  /** The primary found these sessions' leases lapsed on its clock (session_leases.ts); unknown ids change nothing. */
  | { type: "expire"; sessions: string[] }
  /** A new primary took over: every session and wait restarts its full TTL (Chubby, etcd, Consul). */
  | { type: "restartLeases" }
  /**
   * A fresh table after a lost one: no grant before `untilMs` (the grace in which every session
   * of the lost table expires on its client's clock); sessions open and enters queue meanwhile.
   */
  | { type: "holdGrants"; untilMs: number };

export interface Grant {
  name: string;
  session: string;
  token: number;
  mode: Mode;
}

export type Result =
  /**
   * `secretHash`: an open's answer says which secret the session has (a retry's may not be its).
   * `held`: a keepalive's answer names the locks the session holds, so a client notices a lock
   * it lost while its session lived (a force-release) within a keepalive period.
   */
  | { ok: true; type: "session"; session: string; ttlMs: number; expiresAtMs: number; secretHash?: string; held?: string[] }
  | { ok: true; type: "closed"; session: string; released: string[] }
  | { ok: true; type: "granted"; grant: Grant }
  | { ok: true; type: "waiting"; name: string; position: number }
  /** `callLeft`: the enter's call was already left; it changed nothing (position 0). */
  | { ok: true; type: "notGranted"; name: string; position: number; callLeft?: true }
  | { ok: true; type: "left"; name: string; wasHolder: boolean }
  /** `tokens`: the fencing tokens of the holders the force-release removed. */
  | { ok: true; type: "forceReleased"; name: string; tokens: number[] }
  | { ok: true; type: "ticked" }
  | { ok: true; type: "leasesRestarted"; sessions: number }
  | { ok: false; error: ApiError };

/**
 * What happened besides the answer: the driver resolves long-polls and logs from these. Every
 * new grant (at once or from the queue) appears as a "granted" effect; a repeated enter of a
 * holder does not.
 */
export type Effect =
  | { type: "granted"; grant: Grant }
  | { type: "waitEnded"; name: string; session: string; reason: "deadline" | "sessionDead" | "withdrawn" }
  | { type: "sessionExpired"; session: string; released: string[] }
  | { type: "released"; name: string; session: string; token: number; reason: "leave" | "expired" | "closed" | "forced" };

export interface Output {
  result: Result;
  effects: Effect[];
}
