/**
 * Shared pieces of the property-based fuzzers (tests/fuzz_*_test.ts, fast-check): the seed and
 * run counts (fixed by default, so a run is deterministic; FUZZ_SEED and FUZZ_RUNS change them),
 * a runner that logs how many cases ran, and arbitraries for hostile values and mutated bodies.
 * Not a test file.
 */
import fc from "fast-check";
import process from "node:process";
import { encodePeerBody } from "../cluster/peer_transport.ts";

/** The seed of every fuzzer unless FUZZ_SEED names another (never the wall clock). */
export const FUZZ_SEED = envInteger("FUZZ_SEED") ?? 1_207;

/**
 * A fuzz test's time limit: its default runs take seconds, but Bun's default limit is 5 s and
 * FUZZ_RUNS may raise the count many times over.
 */
export const FUZZ_TEST_TIMEOUT_MS = 600_000;

/** A fuzzer's number of runs: `runs` by default, FUZZ_RUNS (the same for every fuzzer) to raise it locally. */
export function fuzzRuns(runs: number): number {
  return envInteger("FUZZ_RUNS") ?? runs;
}

function envInteger(name: string): number | undefined {
  const text = process.env[name];
  if (text === undefined || text === "") return undefined;
  const value = Number(text);
  if (!Number.isSafeInteger(value)) throw new Error(`${name} must be an integer, got ${JSON.stringify(text)}`);
  return value;
}

/**
 * Checks `property` on `runs` generated cases (fc.assert: a failure is shrunk and reported with
 * its seed and path) and logs the number of cases it ran, which the docs' totals add up.
 * Returns that number, so a test can assert it did run.
 */
export async function fuzz<T>(name: string, arbitrary: fc.Arbitrary<T>, property: (value: T) => Promise<void> | void, runs: number): Promise<number> {
  const numRuns = fuzzRuns(runs);
  let cases = 0;
  await fc.assert(
    fc.asyncProperty(arbitrary, async (value) => {
      cases += 1;
      await property(value);
    }),
    { seed: FUZZ_SEED, numRuns },
  );
  console.log(`fuzz ${name}: ${cases} cases (numRuns ${numRuns}, seed ${FUZZ_SEED})`);
  return cases;
}

/** Numbers a decoder must handle: huge, negative, fractional, unsafe, signed zero. */
export const hostileNumber: fc.Arbitrary<number> = fc.oneof(
  fc.constantFrom(0, -0, -1, 1, 0.5, -0.5, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 - 1, -(2 ** 53), 1e308, -1e308, Number.MIN_VALUE, Number.MAX_SAFE_INTEGER + 2),
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
);

/** Numbers at the bounds a schema checks: signs, zero and -0, a fraction, ±2^53 and one inside, the non-finite ones. */
export const BOUNDARY_NUMBERS: readonly number[] = [0, -0, -1, 1, 1.5, -1.5, 2 ** 53 - 1, 2 ** 53, -(2 ** 53 - 1), -(2 ** 53), 1e308, NaN, Infinity, -Infinity];

/** Strings a decoder must handle: empty, long, control characters, lone surrogates, non-ASCII, path-like. */
export const hostileString: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom("", " ", "\u0000", "\ud800", "é", "💥", "../../etc/passwd", "a/b", "%00", "__proto__", "constructor", "x".repeat(5_000)),
  fc.string({ maxLength: 40 }),
  fc.string({ unit: "binary", maxLength: 40 }),
);

/** JSON nested `depth` deep (arrays or objects). */
export const deepJson: fc.Arbitrary<unknown> = fc.tuple(fc.integer({ min: 1, max: 3_000 }), fc.boolean()).map(([depth, arrays]) => {
  let value: unknown = 1;
  for (let i = 0; i < depth; i++) value = arrays ? [value] : { a: value };
  return value;
});

/** Any value a JSON field may hold in a hostile request. */
export const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: hostileNumber },
  { weight: 3, arbitrary: hostileString },
  { weight: 1, arbitrary: fc.constantFrom(null, true, false, [], {}) },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 1, arbitrary: deepJson },
);

/**
 * `valid` changed the ways a hostile client changes a body: a field dropped, a field's value
 * replaced by a hostile one, an unknown field added, or several of these at once. The result
 * may also be the valid body itself (every change picked is optional), which the properties
 * must hold for too.
 */
export function mutatedObject(valid: Record<string, unknown>): fc.Arbitrary<Record<string, unknown>> {
  const keys = Object.keys(valid);
  const change = fc.oneof(
    fc.record({ kind: fc.constant("drop" as const), key: fc.constantFrom(...keys, "none") }),
    fc.record({ kind: fc.constant("set" as const), key: fc.constantFrom(...keys, "none"), value: hostileValue }),
    fc.record({ kind: fc.constant("add" as const), key: fc.oneof(fc.constantFrom("extra", "__proto__", "constructor", "toString"), fc.string({ maxLength: 12 })), value: hostileValue }),
  );
  return fc.array(change, { maxLength: 3 }).map((changes) => {
    const body: Record<string, unknown> = { ...valid };
    for (const c of changes) {
      if (c.kind === "drop") delete body[c.key];
      else if (c.key !== "none") Object.defineProperty(body, c.key, { value: c.value, enumerable: true, configurable: true, writable: true });
    }
    return body;
  });
}

/** `value` as a route or a peer reads it (its JSON text parsed), or undefined if it has no JSON form. */
export function roundTripped(value: unknown): unknown {
  const text = JSON.stringify(value);
  return text === undefined ? undefined : JSON.parse(text);
}

/** How many of `body` as built and as parsed from its JSON `accepts` accepts (0..2): a quick check's fuzz tests run both. */
export function acceptedBothWays(accepts: (body: unknown, what: string) => boolean, body: unknown, what: string): number {
  const parsed = roundTripped(body);
  return (accepts(body, what) ? 1 : 0) + (parsed !== undefined && accepts(parsed, `${what} (JSON)`) ? 1 : 0);
}

/** Bytes that are not a JSON object: random bytes, truncated JSON, arrays, scalars, bad UTF-8. */
export const nonObjectText: fc.Arbitrary<string | Uint8Array> = fc.oneof(
  fc.uint8Array({ maxLength: 200 }),
  fc.constantFrom("{", "{\"a\":", "[1,2]", "1", "\"x\"", "null", "true", "{}}", "\u0000", "{\"a\":1,}", "NaN"),
  fc.string({ maxLength: 60 }),
  fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v) ?? "null"),
);

/** Content types a request may claim (the servers must not depend on them). */
export const contentType: fc.Arbitrary<string | undefined> = fc.constantFrom(
  undefined,
  "application/json",
  "text/plain",
  "application/x-www-form-urlencoded",
  "multipart/form-data; boundary=x",
  "application/x-superjson",
  "application/json; charset=latin1",
);

/** The wire's text of `message` (plain JSON, cluster/peer_transport.ts). */
export function peerText(message: Record<string, unknown>): string {
  return encodePeerBody(message);
}
