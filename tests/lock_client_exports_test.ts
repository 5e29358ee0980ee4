/**
 * What users import from the lock client stays where it was: lib/client/lock_client.ts, the
 * package's `mutexd/client` entry (lib/client/client.ts) and lib/mod.ts export the same values as
 * before the client was split into files by concept (lock_client.ts at d0a5826), and every type
 * the client exported still resolves from lock_client.ts (this file fails its type-check if one
 * does not). A new export updates the list here, deliberately.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as lockClient from "../lib/client/lock_client.ts";
import * as client from "../lib/client/client.ts";
import * as mod from "../lib/mod.ts";
import type {
  ConnectOptions,
  Done,
  EnterOptions,
  EnterResult,
  LockOptions,
  Mode,
  SessionRef,
  StatusAnswer,
} from "../lib/client/lock_client.ts";

test("lock_client.ts, client.ts and mod.ts export the values they exported before the split, and lock_client.ts every type", () => {
  assert.deepEqual(Object.keys(lockClient).sort(), [
    "LockClient",
    "LockHandle",
    "NotAcquiredError",
    "Session",
    "WAIT_CHUNK_MS",
    "connect",
    "randomSessionSecret",
  ]);
  assert.deepEqual(Object.keys(client).sort(), ["LockClient", "LockHandle", "MutexdError", "NotAcquiredError", "Session", "connect", "fetchTrusting"]);
  assert.deepEqual(Object.keys(mod).sort(), [
    "DEFAULT_SETTINGS",
    "LockClient",
    "LockHandle",
    "LockTable",
    "MutexdError",
    "NotAcquiredError",
    "Session",
    "connect",
    "fetchTrusting",
  ]);
  // The entry points hand out the very classes lock_client.ts defines (no second copy).
  for (const name of ["LockClient", "LockHandle", "NotAcquiredError", "Session", "connect"] as const) {
    assert.equal(client[name], lockClient[name], name);
    assert.equal(mod[name], lockClient[name], name);
  }
  // Each exported type, used once: a type that no longer resolves fails the type-check.
  const options: ConnectOptions = { servers: "http://127.0.0.1:1" };
  const mode: Mode = "shared";
  const enter: EnterOptions = { session: "s", sessionSecret: "x", mode };
  const ref: SessionRef = enter;
  const result: EnterResult = { granted: false, name: "n", position: 1 };
  const lock: LockOptions = { waitMs: 0 };
  const done: Done<void> = () => {};
  const status: Pick<StatusAnswer, "lastToken"> = { lastToken: 0 };
  assert.ok([options, ref, result, lock, done, status].every((value) => value !== undefined));
});
