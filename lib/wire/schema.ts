/**
 * What every message schema of mutexd shares (valibot): the building blocks with their bounds,
 * the check that turns a refusal into one message naming the field, and the compile-time check
 * that a schema's output is exactly the core's type (so neither can drift from the other).
 *
 * The schemas live in the drivers' half of lib/ (lib/wire/): a core never imports valibot (its
 * allow-list of packages is empty, tests/core_purity_test.ts); a driver checks a message here
 * before the core sees it, so a refused message changes nothing.
 */
import * as v from "valibot";

/** Node ids: the cluster file's ids (cluster/config.ts ID_PATTERN allows 1..64 characters). */
export const NODE_ID_LENGTH_MAX = 64;
/** Session ids: a node id, the incarnation's 8 hex digits, the epoch and a counter, with room. */
export const SESSION_ID_LENGTH_MAX = 256;
/** Free-text reasons in refusals (nack, refused): a sentence, never a payload. */
export const REASON_LENGTH_MAX = 1_024;

/** True when A and B are the same type (each assignable to the other, optional keys included). */
export type Same<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false;

/** An intersection type as one object type (so `Same` compares its keys, not its form). */
export type Flat<T> = { [K in keyof T]: T[K] };

/**
 * A compile-time check: `sameType<Same<InferOutput<typeof schema>, CoreType>>()` fails to
 * type-check when the schema and the core's type differ. Costs nothing at run time.
 */
export function sameType<T extends true>(): T | undefined {
  return undefined;
}

/** A non-negative safe integer (epochs, indexes, sequence numbers, tokens, counts). */
export const count = (message?: string) => v.pipe(v.number(message), v.safeInteger(message), v.minValue(0, message));
/** Any safe integer (a client's value the core judges, e.g. a ttlMs out of range gets its own error). */
export const integer = (message?: string) => v.pipe(v.number(message), v.safeInteger(message));
/** A time on a monotonic scale, in ms: finite, within ±2^53 (not NaN, not ±Infinity). */
export const time = (message?: string) =>
  v.pipe(v.number(message), v.finite(message), v.minValue(-Number.MAX_SAFE_INTEGER, message), v.maxValue(Number.MAX_SAFE_INTEGER, message));
/** A string of 1..lengthMax characters. */
export const text = (lengthMax: number, message?: string) => v.pipe(v.string(message), v.minLength(1, message), v.maxLength(lengthMax, message));
/** A node id. */
export const nodeId = () => text(NODE_ID_LENGTH_MAX);

/**
 * The first issue as one line that names the field (`entries.0.command.name: Invalid type: …`);
 * an unknown key of a strict object says so by name. `prefix` goes before a message without a path.
 */
export function describeIssue(issue: v.BaseIssue<unknown>, what: string): string {
  const path = v.getDotPath(issue);
  if (issue.type === "strict_object" && path !== null) {
    // strictObject reports an unknown key (expected "never") and a missing one with the key's path.
    if (issue.expected !== "never") return `${path}: missing`;
    const dot = path.lastIndexOf(".");
    const parent = dot < 0 ? what : path.slice(0, dot);
    return `unknown field ${path.slice(dot + 1)} in ${parent}`;
  }
  return path === null ? `${what}: ${issue.message}` : `${path}: ${issue.message}`;
}

/** The parsed value, or the message of its first issue (`what` names the whole message). */
export function check<S extends v.GenericSchema>(
  schema: S,
  value: unknown,
  what: string,
): { ok: true; value: v.InferOutput<S> } | { ok: false; message: string } {
  const result = v.safeParse(schema, value, { abortEarly: true });
  if (result.success) return { ok: true, value: result.output };
  return { ok: false, message: describeIssue(result.issues[0], what) };
}

/**
 * `build` once per settings object: the schemas bounded by a node's settings are made at its
 * first message and kept (a WeakMap, so a test's settings object takes its schemas with it).
 */
export function perSettings<L extends object, S>(build: (limits: L) => S): (limits: L) => S {
  const cache = new WeakMap<L, S>();
  return (limits) => {
    let schemas = cache.get(limits);
    if (!schemas) {
      schemas = build(limits);
      cache.set(limits, schemas);
    }
    return schemas;
  };
}
