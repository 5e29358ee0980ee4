/**
 * mutexd's library inside this repository: the TypeScript client (what the package exports as
 * `mutexd/client`, lib/client/client.ts), and the pure protocol cores for those who embed or
 * simulate them.
 * @module
 */
export * from "./client/client.ts";
export type { WatchedLock, WatchEvent } from "./client/lock_watch.ts";
export { LockTable } from "./core/lock/lock_table.ts";
export { DEFAULT_SETTINGS, type Settings } from "./settings.ts";
