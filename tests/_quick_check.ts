/**
 * The shared assertion of the quick-check tests (tests/client_body_check_test.ts,
 * tests/peer_quick_check_test.ts): lib/wire/quick_check.ts's verdict on a value is valibot's,
 * and a value it accepts is its own output. Not a test file.
 */
import assert from "node:assert/strict";
import type * as v from "valibot";
import { quickCheck } from "../lib/wire/quick_check.ts";

/** A value as an assertion message shows it (cut: a mutated body may be long). */
export function shown(what: string, value: unknown): string {
  return `${what}: ${String(JSON.stringify(value) ?? value).slice(0, 200)}`;
}

/**
 * Asserts that `schema`'s quick check exists and agrees with `slow`, valibot's verdict and output
 * on `value`: the same verdict, and an output deep-equal to the value when both accept (compared
 * as own fields at the top: a route's bodies are JSON.parse's plain objects, valibot's output
 * always is one). Arrays are no objects to the quick check (no route or answer is a top-level
 * array; valibot's object schemas would take one): it must refuse them. Returns its verdict.
 */
export function quickAgrees(schema: v.GenericSchema, value: unknown, what: string, slow: { ok: true; value: unknown } | { ok: false }): boolean {
  const quick = quickCheck(schema);
  assert.ok(quick !== null, `${what}: no quick check`);
  const verdict = quick(value);
  if (Array.isArray(value)) assert.equal(verdict, false, shown(what, value));
  else assert.equal(verdict, slow.ok, shown(what, value));
  if (verdict && slow.ok) assert.deepStrictEqual(ownFields(slow.value), ownFields(value), shown(what, value));
  return verdict;
}

/** An object's own fields in a plain object (its prototype aside); any other value as it is. */
function ownFields(value: unknown): unknown {
  return typeof value === "object" && value !== null && !Array.isArray(value) ? { ...value } : value;
}
