/**
 * The peer messages' quick check (lib/wire/quick_check.ts, issue 14): a message it accepts goes
 * through no valibot run and is its own output, so it must accept exactly what the schema accepts,
 * with the same fields. This proves it for the lock peer schemas (every message kind, an append
 * of every command kind, the chunk items, the core's results with their nested variants) on a
 * corpus (each field of each message set to values at and past every bound and type, dropped, and
 * joined by unknown and prototype keys; non-objects) and on seeded mutations of real messages at
 * any depth (tests/_fuzz.ts hostile values), each as built and after a JSON round trip. And that
 * checkPeerRequest / checkPeerAnswer answer as valibot alone does: the same value or message.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import * as v from "valibot";
import { checkPeerAnswer, checkPeerRequest, lockPeerSchemas } from "../lib/wire/lock_peer.ts";
import { check } from "../lib/wire/schema.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { acceptedBothWays, BOUNDARY_NUMBERS, fuzz, FUZZ_TEST_TIMEOUT_MS, hostileValue, roundTripped } from "./_fuzz.ts";
import { quickAgrees, shown } from "./_quick_check.ts";

const LIMITS = { ...DEFAULT_SETTINGS, replicationBatchMax: 4, lockNameLengthMax: 128, syncChunkBytesMax: 64, syncChunkItemsMax: 10 };
const SCHEMAS = lockPeerSchemas(LIMITS);
const HASH = "h".repeat(43);
const SESSION = "p1-0badcafe-2-1";

/** One command of every kind, every optional field present. */
const COMMANDS: Array<Record<string, unknown>> = [
  { type: "openSession", ttlMs: 60_000, secretHash: HASH, owner: "team-a", ownerSessionsMax: 10 },
  { type: "keepAlive", session: SESSION, secretHash: HASH },
  { type: "closeSession", session: SESSION, secretHash: "" },
  { type: "enter", name: "db/main", session: SESSION, secretHash: HASH, mode: "shared", waitMs: 10, lockDelayMs: 5, callId: "c-1", ownerWaitersMax: 3 },
  { type: "leave", name: "db/main", session: SESSION, secretHash: HASH, token: 17 },
  { type: "forceRelease", name: "db/main" },
  { type: "tick" },
  { type: "expire", sessions: [SESSION, "p1-0badcafe-2-2"] },
  { type: "restartLeases" },
  { type: "holdGrants", untilMs: 12_000 },
];

const entry = (command: Record<string, unknown>, index = 7) => ({ index, epoch: 2, atMs: 12_345, requestId: `r-${index}`, command });
const append = (entries: unknown[]) => ({ type: "append", from: "p1", epoch: 2, syncGen: 1, entries });

/** Real messages of every kind (requests, answers), chunk items and results, with the schema that reads each. */
const CASES: Array<{ what: string; schema: v.GenericSchema; value: Record<string, unknown> | unknown[] }> = [
  ...COMMANDS.map((command) => ({ what: `append ${command.type}`, schema: SCHEMAS.request, value: append([entry(command)]) })),
  { what: "append of a full batch", schema: SCHEMAS.request, value: append(COMMANDS.slice(0, LIMITS.replicationBatchMax).map((c, i) => entry(c, i + 1))) },
  { what: "append heartbeat", schema: SCHEMAS.request, value: append([]) },
  { what: "syncRequest", schema: SCHEMAS.request, value: { type: "syncRequest", from: "b1", epoch: 2, incarnation: "b1-12345678-" } },
  { what: "syncNext", schema: SCHEMAS.request, value: { type: "syncNext", from: "b1", epoch: 2, syncGen: 1, position: 10 } },
  { what: "appendAck", schema: SCHEMAS.answer, value: { type: "appendAck", from: "b1", epoch: 2, ok: true, appliedIndex: 7, promiseMs: 500 } },
  {
    what: "syncStart",
    schema: SCHEMAS.answer,
    value: { type: "syncStart", from: "p1", epoch: 2, syncGen: 1, start: { appliedIndex: 7, table: { nowMs: 5, lastToken: 9, sessionSeq: 3, sessionIdPrefix: "p1-x-2-", grantsFromMs: 0 }, sessions: 1, locks: 1, answered: 1 } },
  },
  { what: "syncChunk", schema: SCHEMAS.answer, value: { type: "syncChunk", from: "p1", epoch: 2, syncGen: 1, chunk: { position: 0, count: 1, payload: "[]" } } },
  { what: "nack", schema: SCHEMAS.answer, value: { type: "nack", from: "b1", epoch: 2, primary: null, reason: "epoch 1 is over" } },
  { what: "session item", schema: SCHEMAS.copyItems.session, value: { id: SESSION, ttlMs: 1, createdAtMs: 0, expiresAtMs: 1, leftCalls: ["c-1"], secretHash: HASH, owner: "o" } },
  {
    what: "lock item",
    schema: SCHEMAS.copyItems.lock,
    value: {
      name: "db/main",
      holders: [{ session: SESSION, token: 3, mode: "exclusive", sinceMs: 1, lockDelayMs: 0, callId: "c" }],
      queue: [{ session: SESSION, mode: "shared", queuedAtMs: 1, deadlineMs: 2, lockDelayMs: 0 }],
      delayUntilMs: 0,
    },
  },
  { what: "result granted", schema: SCHEMAS.result, value: { ok: true, type: "granted", grant: { name: "L", session: SESSION, token: 4, mode: "shared" } } },
  { what: "result session", schema: SCHEMAS.result, value: { ok: true, type: "session", session: SESSION, ttlMs: 5, expiresAtMs: 9, secretHash: HASH, held: ["L"] } },
  { what: "result notGranted", schema: SCHEMAS.result, value: { ok: true, type: "notGranted", name: "L", position: 2, callLeft: true } },
  { what: "result error", schema: SCHEMAS.result, value: { ok: false, error: { code: "not_found", message: "no such session" } } },
];

/** Values at and past every bound and type of the peer schemas (LIMITS: names of 128, batches of 4). */
const BOUNDARY_VALUES: unknown[] = [
  ...[0, 1, 43, 44, 64, 65, 127, 128, 129, 256, 257, 1_024, 1_025].map((length) => "x".repeat(length)),
  "😀".repeat(64),
  "😀".repeat(65),
  "exclusive",
  "shared",
  "append",
  "enter",
  "tick",
  "not_found",
  ...BOUNDARY_NUMBERS,
  10,
  11,
  "1",
  null,
  true,
  false,
  [],
  [1],
  [SESSION],
  ["x".repeat(257)],
  Array.from({ length: 4 }, () => SESSION),
  Array.from({ length: 5 }, () => SESSION),
  {},
  { type: "tick" },
  undefined,
];

/** Every path into `value` (keys and array indexes), inner ones included, the root as []. */
function paths(value: unknown, prefix: Array<string | number> = []): Array<Array<string | number>> {
  const found = [prefix];
  if (Array.isArray(value)) value.forEach((item, i) => found.push(...paths(item, [...prefix, i])));
  else if (typeof value === "object" && value !== null) for (const [key, item] of Object.entries(value)) found.push(...paths(item, [...prefix, key]));
  return found;
}

type Change = { kind: "set"; value: unknown } | { kind: "drop" } | { kind: "add"; key: string; value: unknown };

/** `value` copied with `change` made at `path` (own enumerable keys, even `__proto__`). */
function changed(value: unknown, path: ReadonlyArray<string | number>, change: Change): unknown {
  if (path.length === 0) {
    if (change.kind === "set") return change.value;
    if (change.kind === "add" && typeof value === "object" && value !== null && !Array.isArray(value)) {
      return Object.defineProperty({ ...value }, change.key, { value: change.value, enumerable: true, configurable: true, writable: true });
    }
    return value;
  }
  const copy = (Array.isArray(value) ? [...value] : { ...value as object }) as Record<string | number, unknown>;
  const [key, ...rest] = path;
  if (rest.length === 0 && change.kind === "drop") {
    if (Array.isArray(copy)) copy.splice(key as number, 1);
    else delete copy[key];
    return copy;
  }
  return Object.defineProperty(copy, key, { value: changed(copy[key], rest, change), enumerable: true, configurable: true, writable: true });
}

/** Checks one value: the quick verdict is valibot's and its output the value; returns the quick verdict. */
function same(schema: v.GenericSchema, value: unknown, what: string): boolean {
  const slow = v.safeParse(schema, value, { abortEarly: true });
  const verdict = quickAgrees(schema, value, what, slow.success ? { ok: true, value: slow.output } : { ok: false });
  // The peer checks answer as valibot alone: the same value, or the same message.
  const peer = schema === SCHEMAS.request ? checkPeerRequest : schema === SCHEMAS.answer ? checkPeerAnswer : undefined;
  if (peer !== undefined) {
    const expected = check(schema, value, schema === SCHEMAS.request ? "peer request" : "peer answer");
    const got = peer(value, LIMITS);
    // A chunk's items are checked after its frame (validation_test.ts): compared up to there.
    if (expected.ok && (expected.value as { type: string }).type === "syncChunk") return verdict;
    if (expected.ok && got.ok) assert.deepStrictEqual(got.value, expected.value, shown(what, value));
    else assert.deepStrictEqual(got, expected, shown(what, value));
  }
  return verdict;
}

test("the peer quick check accepts exactly what valibot accepts, with the same fields: every message and command kind, boundary values at every depth, dropped and unknown keys, non-objects", () => {
  let accepted = 0;
  let refused = 0;
  const count = (verdict: boolean) => (verdict ? accepted++ : refused++);
  for (const { what, schema, value } of CASES) {
    assert.equal(same(schema, value, what), true, `${what}: the real message is accepted`);
    for (const path of paths(value)) {
      const where = `${what} ${path.join(".")}`;
      const variants: unknown[] = [changed(value, path, { kind: "drop" })];
      for (const key of ["extra", "__proto__", "constructor", "toString", ""]) variants.push(changed(value, path, { kind: "add", key, value: 1 }));
      for (const boundary of BOUNDARY_VALUES) variants.push(changed(value, path, { kind: "set", value: boundary }));
      for (const body of variants) {
        count(same(schema, body, where));
        const parsed = roundTripped(body);
        if (parsed !== undefined) count(same(schema, parsed, `${where} (JSON)`));
      }
    }
    for (const body of [null, undefined, 0, "x", true, [], [value], Object.create(null)]) count(same(schema, body, `${what} non-object`));
  }
  // Both verdicts occur often: the check is neither always on nor always off.
  assert.ok(accepted > 1_000 && refused > 5_000, `accepted ${accepted}, refused ${refused}`);
});

test("the peer quick check accepts exactly what valibot accepts on seeded mutations of real messages at any depth, as built and after a JSON round trip", { timeout: FUZZ_TEST_TIMEOUT_MS }, async () => {
  let accepted = 0;
  const change: fc.Arbitrary<Change> = fc.oneof(
    fc.record({ kind: fc.constant("set" as const), value: hostileValue }),
    fc.record({ kind: fc.constant("drop" as const) }),
    fc.record({ kind: fc.constant("add" as const), key: fc.oneof(fc.constantFrom("extra", "__proto__", "constructor", "type", "ok"), fc.string({ maxLength: 8 })), value: hostileValue }),
  );
  const arbitrary = fc.constantFrom(...CASES).chain((c) =>
    fc.tuple(fc.constant(c), fc.array(fc.tuple(fc.constantFrom(...paths(c.value)), change), { maxLength: 3 }))
  );
  const cases = await fuzz("peer quick check", arbitrary, ([{ what, schema, value }, changes]) => {
    let body: unknown = value;
    for (const [path, c] of changes) body = changed(body, path, c);
    accepted += acceptedBothWays((b, w) => same(schema, b, w), body, what);
  }, 3_000);
  assert.ok(cases >= 3_000 || cases === Number(process.env.FUZZ_RUNS), `ran ${cases}`);
  assert.ok(accepted > 100, `accepted ${accepted}`);
});
