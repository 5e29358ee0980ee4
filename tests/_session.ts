/**
 * The secret hash the core tests' sessions open with and act with: they drive the core below the
 * API, which would hash a real secret (cluster/lock/session_secret.ts). Tests of the secret check
 * itself use other values (session_owners_test.ts).
 */
import type { FetchPort } from "../lib/client/http.ts";

export const SECRET_HASH = "test-secret-hash";

/**
 * A fetch port for `connect` that records, per session id, the `sessionSecret` the client sends
 * with it (the client keeps secrets off its objects): tests that act on a client's session by
 * hand, as its owner would, read them here.
 */
export function recordingSecrets(secrets: Map<string, string>): FetchPort {
  return (url, init) => {
    try {
      const body = JSON.parse(init.body ?? "null");
      if (typeof body?.session === "string" && typeof body.sessionSecret === "string") secrets.set(body.session, body.sessionSecret);
    } catch {
      // not JSON: nothing to record
    }
    return fetch(url, init);
  };
}
