/**
 * Session secrets (issue 12): a session's secret is the client's own (sent with the open) or,
 * without one, a random one the lock routes make here; only its SHA-256 hash enters the core
 * (lib/core/lock/session_owners.ts compares it). The secret itself is in the open's request and
 * answer and nowhere else: not in the log, the backup, status or disk.
 */
import { createHash } from "node:crypto";

/** Bytes of randomness in a secret (256 bits; the brief asks at least 128). */
const SECRET_BYTES = 32;

/** A fresh secret from the runtime's cryptographic randomness, base64url without padding. */
export function randomSessionSecret(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(SECRET_BYTES));
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/**
 * The hash the core keeps and compares, in hex. A request without a secret hashes to "" (the
 * core matches it with nothing), so a missing secret is refused like a wrong one.
 */
export function hashSessionSecret(secret: string | undefined): string {
  if (secret === undefined) return "";
  return createHash("sha256").update(secret, "utf8").digest("hex");
}
