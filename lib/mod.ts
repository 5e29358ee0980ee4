/**
 * mutexd's library: the TypeScript client, and the pure protocol cores for those who embed or
 * simulate them.
 * @module
 */
export { connect, LockClient, LockHandle, NotAcquiredError, Session } from "./client/lock_client.ts";
export type { ConnectOptions, EnterOptions, EnterResult, LockOptions, Mode, StatusAnswer } from "./client/lock_client.ts";
export type { WatchedLock, WatchEvent } from "./client/lock_watch.ts";
export { MutexdError } from "./wire/errors.ts";
export type { ApiError, ErrorCode } from "./wire/errors.ts";
export { LockTable } from "./core/lock/lock_table.ts";
export { DEFAULT_SETTINGS, type Settings } from "./settings.ts";
export { fetchTrusting, type TlsOptions, type TrustingFetch } from "./client/tls.ts";
