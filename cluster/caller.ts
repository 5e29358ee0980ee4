/**
 * Who sent a client request, as its bearer token says (cluster/client_auth.ts checks the token;
 * the lock routes count sessions and waiters per caller). Without client tokens in the cluster
 * file every request is ANONYMOUS and only the server-wide limits apply.
 */
import type { Context } from "hono";

export interface Caller {
  /** The token's name from the cluster file, or null without client tokens. */
  token: string | null;
  /** Most sessions this caller may have open at once (null: only the server's sessionsMax). */
  sessionsMax: number | null;
  /** Most enters this caller may have waiting at once (null: only the server's limits). */
  waitersMax: number | null;
}

export const ANONYMOUS: Caller = { token: null, sessionsMax: null, waitersMax: null };

const CALLER_KEY = "mutexdCaller";

/** Records the authenticated caller on the request (the bearer middleware does it). */
export function setCaller(c: Context, caller: Caller): void {
  (c.set as (key: string, value: unknown) => void)(CALLER_KEY, caller);
}

/** The request's caller: what setCaller recorded, else ANONYMOUS. */
export function callerOf(c: Context): Caller {
  return ((c.get as (key: string) => unknown)(CALLER_KEY) as Caller | undefined) ?? ANONYMOUS;
}
