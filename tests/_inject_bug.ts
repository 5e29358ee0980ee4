/**
 * Test-side only (tests/fail_stop_process_test.ts): runs `mutexd` (main.ts, with this script's
 * arguments) with one method of a core replaced by one that throws an AssertionError, as a bug
 * would. INJECT_BUG names it:
 * - `LockReplica.tick`: a lock server's step driven by a timer;
 * - `LockReplica.reply`: the continuation of a peer's or the arbiter's answer;
 * - `ArbiterCore.step`: the arbiter's step inside a request (`POST /v1/arbiter`);
 * - `RingNode.tick`: a ring node's step driven by its timer (RingNode.step of a tick input).
 * And one that breaks safety without stopping anything, for chaos's "proof it bites"
 * (docs/chaos.md; the simulator's twin is in tests/sim_bugs_test.ts):
 * - `LockTable.reuseToken`: when the holder of the newest fencing token leaves, the table's
 *   counter steps back over it, so the next grant of any lock gets that token again.
 * Not a test file.
 */
import process from "node:process";
import { LockReplica } from "../lib/core/lock/lock_replica.ts";
import { ArbiterCore } from "../lib/core/arbiter/arbiter.ts";
import { RingNode } from "../lib/core/ring/ring_node.ts";
import { LockTable } from "../lib/core/lock/lock_table.ts";
import { AssertionError } from "../lib/core/assert.ts";

const bug = process.env.INJECT_BUG;
const fail = (): never => {
  throw new AssertionError(`injected bug in ${bug}`);
};
if (bug === "LockReplica.tick") LockReplica.prototype.tick = fail;
else if (bug === "LockReplica.reply") LockReplica.prototype.reply = fail;
else if (bug === "ArbiterCore.step") ArbiterCore.prototype.step = fail;
else if (bug === "RingNode.tick") {
  const step = RingNode.prototype.step;
  RingNode.prototype.step = function (input, nowMs) {
    return input.type === "tick" ? fail() : step.call(this, input, nowMs);
  };
} else if (bug === "LockTable.reuseToken") {
  // deno-lint-ignore no-explicit-any
  const table = LockTable.prototype as any;
  const leave = table.leave;
  table.leave = function (this: { lastToken: number }, command: { token?: number }, effects: unknown[]) {
    const output = leave.call(this, command, effects);
    if (output.result.ok && output.result.wasHolder && command.token === this.lastToken) this.lastToken -= 1;
    return output;
  };
} else throw new Error(`INJECT_BUG ${bug} is not one of the injections`);
await import("../main.ts");
