/**
 * Session secrets (issue 12): a session's secret is the client's own (sent with the open) or,
 * without one, a random one the lock routes make here; only its SHA-256 hash enters the core
 * (lib/core/lock/session_owners.ts compares it). The secret itself is in the open's request and
 * answer and nowhere else: not in the log, the backup, status or disk.
 */
import { sha256Hex } from "../runtime.ts";

/** The secret the routes make when a client sends none: the client's own generator (256 bits, hex). */
export { randomSessionSecret } from "../../lib/client/lock_client.ts";

/**
 * The hash the core keeps and compares, in hex. A request without a secret hashes to "" (the
 * core matches it with nothing), so a missing secret is refused like a wrong one.
 */
export function hashSessionSecret(secret: string | undefined): string {
  if (secret === undefined) return "";
  // A one-shot hash: no Hash object per request (a native object the collector must finalize),
  // which made SHA-256 a tenth of a lone primary's JavaScript per acquire+release (docs/bench.md).
  return sha256Hex(secret);
}
