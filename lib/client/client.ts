/**
 * `mutexd/client`: the lock service's client, as the package exports it (package.json and
 * deno.json "exports"). Web-standard APIs only (fetch, AbortSignal, crypto.randomUUID, timers):
 * it runs on Node, Bun and Deno. See lock_client.ts for how to use it; docs/http-api.md for the API.
 * @module
 */
export { connect, LockClient, LockHandle, NotAcquiredError, Session } from "./lock_client.ts";
export type { ConnectOptions, EnterOptions, EnterResult, LockOptions, Mode, StatusAnswer } from "./lock_client.ts";
export type { ClockPort, FetchPort, HttpInit, HttpResponse, TimersPort } from "./http.ts";
export { MutexdError } from "../wire/errors.ts";
export type { ApiError, ErrorCode } from "../wire/errors.ts";
export { fetchTrusting, type TlsOptions, type TrustingFetch } from "./tls.ts";
