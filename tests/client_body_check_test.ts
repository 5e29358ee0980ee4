/**
 * The client bodies' quick check (lib/wire/quick_check.ts, as lib/wire/client.ts checkBody asks it,
 * issue 14): a body it accepts goes through no valibot run, so it must accept exactly what the
 * route's valibot schema accepts, with the same fields. This proves it, for every client schema of
 * the lock server and the ring node, on a corpus of boundary values (lengths at and past each bound, integers at 2^53, fractions, NaN,
 * ±Infinity, -0, wrong types, prototype keys, missing and unknown fields, non-objects) and on the
 * fuzzers' mutated bodies (tests/_fuzz.ts mutatedObject, seeded), each both as built and after a
 * JSON round trip (what a route parses). valibot's verdict is the one checkBody gave before:
 * unknown own keys refused, then `v.safeParse`. And `checkBody` answers as valibot does: the same
 * value, or the same message; a known field the body only inherits is left to valibot.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import * as v from "valibot";
import { type BodySchema, checkBody, clientSchemas } from "../lib/wire/client.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { acceptedBothWays, BOUNDARY_NUMBERS, fuzz, FUZZ_TEST_TIMEOUT_MS, mutatedObject, roundTripped } from "./_fuzz.ts";
import { quickCheck } from "../lib/wire/quick_check.ts";
import { quickAgrees, shown } from "./_quick_check.ts";

const SCHEMAS = clientSchemas(DEFAULT_SETTINGS);
const SECRET = "s".repeat(43);

/** Each schema with a body that has every field and one with only the required ones. */
const CASES: Array<{ what: string; schema: BodySchema; full: Record<string, unknown>; least: Record<string, unknown> }> = [
  { what: "lock openSession", schema: SCHEMAS.lock.openSession, full: { ttlMs: 5_000, requestId: "r-1", sessionSecret: SECRET }, least: {} },
  { what: "lock keepAlive", schema: SCHEMAS.lock.keepAlive, full: { sessionSecret: SECRET }, least: {} },
  { what: "lock closeSession", schema: SCHEMAS.lock.closeSession, full: { requestId: "r-1", sessionSecret: SECRET }, least: {} },
  {
    what: "lock enter",
    schema: SCHEMAS.lock.enter,
    full: { name: "L", session: "p1-0badcafe-3-17", sessionSecret: SECRET, mode: "shared", waitMs: 10_000, lockDelayMs: 0, callId: "c-1" },
    least: { name: "L", session: "p1-0badcafe-3-17" },
  },
  {
    what: "lock leave",
    schema: SCHEMAS.lock.leave,
    full: { name: "L", session: "p1-0badcafe-3-17", sessionSecret: SECRET, token: 1_764_000_000_000_000, requestId: "r-1" },
    least: { name: "L", session: "p1-0badcafe-3-17" },
  },
  { what: "lock forceRelease", schema: SCHEMAS.lock.forceRelease, full: { name: "L", requestId: "r-1" }, least: { name: "L" } },
  { what: "ring enter", schema: SCHEMAS.ring.enter, full: { waitMs: 100, leaseMs: 1_000, ticket: "t-1" }, least: {} },
  { what: "ring leave", schema: SCHEMAS.ring.leave, full: { fence: 3, ticket: "t-1" }, least: {} },
  { what: "ring put", schema: SCHEMAS.ring.put, full: { fence: 3, key: "k", value: "" }, least: { fence: 3, key: "k", value: "" } },
  { what: "ring delete", schema: SCHEMAS.ring.delete, full: { fence: 3, key: "k" }, least: { fence: 3, key: "k" } },
];

/** Values at and around every bound and type the client schemas have. */
const BOUNDARY_VALUES: unknown[] = [
  ...[0, 1, 31, 32, 35, 36, 37, 43, 127, 128, 129, 255, 256, 257, 1_024, 1_025].map((length) => "x".repeat(length)),
  "é".repeat(256),
  "😀".repeat(128),
  "😀".repeat(129),
  "exclusive",
  "shared",
  "EXCLUSIVE",
  " shared",
  ...BOUNDARY_NUMBERS,
  "1",
  "",
  null,
  true,
  false,
  [],
  ["x"],
  {},
  { length: 3 },
  undefined,
];

/** valibot's verdict as checkBody reached it before the quick check: unknown own keys first, then the schema. */
function valibotVerdict(schema: BodySchema, body: unknown): { ok: true; value: unknown } | { ok: false } {
  if (typeof body === "object" && body !== null) {
    for (const key of Object.keys(body)) if (!Object.hasOwn(schema.entries, key)) return { ok: false };
  }
  const result = v.safeParse(schema, body, { abortEarly: true });
  return result.success ? { ok: true, value: result.output } : { ok: false };
}

/** Checks one body against one schema; returns whether the quick check accepted it. */
function same(schema: BodySchema, body: unknown, what: string): boolean {
  const slow = valibotVerdict(schema, body);
  const quick = quickAgrees(schema, body, what, slow);
  const checked = checkBody(schema, body);
  assert.equal(checked.ok, slow.ok, shown(what, body));
  if (checked.ok && slow.ok) assert.deepStrictEqual({ ...checked.value as object }, { ...slow.value as object }, shown(what, body));
  return quick;
}

test("the quick check accepts exactly what valibot accepts, with the same fields: boundary values in every field, missing and unknown fields, non-objects", () => {
  let accepted = 0;
  let refused = 0;
  const count = (quick: boolean) => (quick ? accepted++ : refused++);
  for (const { what, schema, full, least } of CASES) {
    for (const body of [full, least]) count(same(schema, body, what));
    for (const key of Object.keys(full)) {
      for (const value of BOUNDARY_VALUES) {
        for (const base of [full, least]) {
          const body = { ...base, [key]: value };
          count(same(schema, body, `${what} ${key}`));
          const parsed = roundTripped(body);
          if (parsed !== undefined) count(same(schema, parsed, `${what} ${key} (JSON)`));
        }
      }
      const { [key]: _dropped, ...without } = full;
      count(same(schema, without, `${what} without ${key}`));
    }
    for (const key of ["extra", "__proto__", "constructor", "toString", "hasOwnProperty", "valueOf", ""]) {
      count(same(schema, JSON.parse(`{${JSON.stringify(key)}: 1}`), `${what} only ${key}`));
      count(same(schema, JSON.parse(JSON.stringify(full).replace("{", `{${JSON.stringify(key)}: "x",`)), `${what} + ${key}`));
    }
    for (const body of [null, undefined, 0, "x", true, [], [full], Object.create(null), Object.assign(Object.create(null), least)]) {
      count(same(schema, body, `${what} non-object`));
    }
  }
  // Both verdicts occur often: the check is neither always on nor always off.
  assert.ok(accepted > 500 && refused > 1_000, `accepted ${accepted}, refused ${refused}`);
});

test("the quick check accepts exactly what valibot accepts on the fuzzers' mutated bodies (seeded), as built and after a JSON round trip", { timeout: FUZZ_TEST_TIMEOUT_MS }, async () => {
  let accepted = 0;
  const arbitrary = fc.constantFrom(...CASES).chain((c) => fc.tuple(fc.constant(c), fc.oneof(mutatedObject(c.full), mutatedObject(c.least))));
  const cases = await fuzz("client body check", arbitrary, ([{ what, schema }, body]) => {
    accepted += acceptedBothWays((b, w) => same(schema, b, w), body, what);
  }, 3_000);
  assert.ok(cases >= 3_000 || cases === Number(process.env.FUZZ_RUNS), `ran ${cases}`);
  assert.ok(accepted > 100, `accepted ${accepted}`);
});

test("a known field the body only inherits gets no quick verdict: valibot decides, and its output has the field as its own", () => {
  // JSON.parse never makes such a body; the quick check's yes would give the body itself, without the field of its own.
  const schema = SCHEMAS.lock.forceRelease;
  for (const body of [Object.create({ name: "L" }), Object.assign(Object.create({ requestId: "r-1" }), { name: "L" })] as object[]) {
    assert.equal(quickCheck(schema)?.(body), false, JSON.stringify(body));
    const checked = checkBody(schema, body);
    assert.ok(checked.ok, JSON.stringify(checked));
    assert.deepStrictEqual(Object.keys(checked.value), [...Object.keys(body), ...Object.keys(Object.getPrototypeOf(body))].sort());
  }
});
