/**
 * The stable error codes of the HTTP API and the status each maps to. Every error body is
 * `{ "error": { "code": ErrorCode, "message": string } }`; clients switch on `code`, never on text.
 */
export const ERROR_STATUS = {
  bad_request: 400, // malformed JSON, a missing or ill-typed field, a value out of bounds
  unauthorized: 401, // missing or invalid credentials: no or an unknown bearer token (cluster/client_auth.ts); a peer request without a valid MAC, a replay (cluster/peer_auth.ts)
  peer_challenge: 401, // a peer request under a nonce the receiver did not issue: retry under x-mutexd-challenge
  version_mismatch: 400, // a peer request of another major format version (lib/wire/version.ts); the message names both. The client also raises it for an answer of another major
  forbidden: 403, // valid credentials, but not allowed to do this (a token without the permission on the name; a session's secret that does not match)
  session_not_found: 404, // unknown or expired session
  lock_not_found: 404, // no such lock (nobody holds, waits for, or delays it)
  not_found: 404, // no such route
  not_holder: 409, // leave by a session that does not hold the lock with that token
  mode_conflict: 409, // enter asks a mode other than the one the session already holds
  not_primary: 421, // this server does not serve locks now (carries a hint to the primary)
  body_too_large: 413, // request body above bodyBytesMax
  limit_reached: 429, // sessions, locks or waiters at their configured maximum
  not_in_section: 409, // ring: the fence names no current critical section (left, lease ended, token lost)
  waiter_not_found: 404, // ring: the enter ticket is unknown (the wait ended or the client polled too late)
  key_not_found: 404, // ring: no such key (in the committed view, or the dirty one when asked)
  ring_unavailable: 503, // ring: the node cannot serve now (token of an older epoch, catching up)
  internal: 500, // a bug; the message names it, no stack trace is sent
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

/** The error half of every core and API result. */
export interface ApiError {
  code: ErrorCode;
  message: string;
}

export function apiError(code: ErrorCode, message: string): { error: ApiError } {
  return { error: { code, message } };
}

/** Thrown by the client for an error answer; carries the server's code and HTTP status. */
export class MutexdError extends Error {
  override name = "MutexdError";
  constructor(readonly code: ErrorCode | "unreachable" | "lock_lost" | "not_acquired", message: string, readonly status = 0) {
    super(message);
  }
}
