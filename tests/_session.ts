/**
 * The secret hash the core tests' sessions open with and act with: they drive the core below the
 * API, which would hash a real secret (cluster/lock/session_secret.ts). Tests of the secret check
 * itself use other values (session_owners_test.ts).
 */
export const SECRET_HASH = "test-secret-hash";
