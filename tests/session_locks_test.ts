/**
 * session_locks.ts: a session's index of its locks is a list up to SESSION_LOCKS_LIST_MAX entries
 * (W4's memory) and a Set beyond, and answers the same either way: what was added and not
 * removed, each once. Deterministic (a fixed order of adds and removes).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { LockState } from "../lib/core/lock/lock_table.ts";
import { SESSION_LOCKS_LIST_MAX, SessionLocks } from "../lib/core/lock/session_locks.ts";

const lock = (i: number) => new LockState(i, `L${i}`, [], [], 0);

function names(index: SessionLocks): string[] {
  return [...index].map((l) => l.name).sort();
}

test("session index as a list: removing from the middle, the end and twice keeps exactly the others", () => {
  const index = new SessionLocks();
  const locks = [0, 1, 2, 3, 4].map(lock);
  for (const l of locks) index.add(l);
  index.delete(locks[1]);
  index.delete(locks[4]);
  index.delete(locks[4]); // not in it any more: nothing happens
  index.delete(lock(9)); // never in it
  assert.deepEqual(names(index), ["L0", "L2", "L3"]);
  assert.equal(index.size, 3);
  assert.ok(index.has(locks[3]) && !index.has(locks[1]));
  // Another lock object of the same name is another lock (the table made a new one).
  assert.ok(!index.has(lock(0)));
  index.clear();
  assert.equal(index.size, 0);
});

test("session index beyond SESSION_LOCKS_LIST_MAX becomes a Set and answers the same", () => {
  const index = new SessionLocks();
  const locks = Array.from({ length: SESSION_LOCKS_LIST_MAX + 10 }, (_, i) => lock(i));
  for (const l of locks) index.add(l);
  assert.equal(index.size, locks.length);
  assert.ok((index as unknown as { set?: Set<LockState> }).set instanceof Set, "a Set past the bound");
  for (let i = 0; i < locks.length; i += 2) index.delete(locks[i]);
  assert.equal(index.size, locks.length / 2);
  assert.ok(index.has(locks[1]) && !index.has(locks[0]));
  assert.deepEqual(names(index), locks.filter((_, i) => i % 2 === 1).map((l) => l.name).sort());
  index.clear();
  assert.equal(index.size, 0);
  index.add(locks[0]);
  assert.deepEqual(names(index), ["L0"]);
});
