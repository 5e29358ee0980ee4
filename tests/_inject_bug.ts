/**
 * Test-side only (tests/fail_stop_process_test.ts): runs `mutexd` (main.ts, with this script's
 * arguments) with one method of the lock server's core replaced by one that throws an
 * AssertionError, as a bug would: INJECT_BUG names the method of LockReplica (`tick`: a step
 * driven by a timer; `reply`: the continuation of a peer's or the arbiter's answer). Not a test file.
 */
import process from "node:process";
import { LockReplica } from "../lib/core/lock/lock_replica.ts";
import { AssertionError } from "../lib/core/assert.ts";

const method = process.env.INJECT_BUG as "tick" | "reply";
if (method !== "tick" && method !== "reply") throw new Error("INJECT_BUG must be tick or reply");
LockReplica.prototype[method] = function () {
  throw new AssertionError(`injected bug in LockReplica.${method}`);
};
await import("../main.ts");
