/**
 * `mutexd/ring`: the token ring's client, as the package exports it (package.json and deno.json
 * "exports"). Web-standard APIs only: it runs on Node, Bun and Deno. See ring_client.ts for how
 * to use it; docs/ring.md for the ring.
 * @module
 */
export { connectRing, RingClient, RingLock, RingNotAcquiredError } from "./ring_client.ts";
export type { RingConnectOptions, RingEnterOptions, RingEnterResult, RingGetResult, RingStatus } from "./ring_client.ts";
export { MutexdError } from "../wire/errors.ts";
export type { ApiError, ErrorCode } from "../wire/errors.ts";
export { fetchTrusting, type TlsOptions, type TrustingFetch } from "./tls.ts";
