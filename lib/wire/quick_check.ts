/**
 * A quick check read off a valibot schema (issue 14): whether the schema accepts a value exactly as
 * it is, without running valibot. Only a yes is a verdict: a value the reader accepts passes the
 * schema with an output deep-equal to itself, so the caller may take the value as the output. A
 * no sends the value through valibot, which refuses it with its message (or accepts it). A schema
 * with a part this reader does not know has no quick check at all (`quickCheck` returns null).
 *
 * Known parts, read as valibot 1.5's dist/index.mjs runs them (valibot's own rules in brackets):
 * - string, number [not NaN], boolean, literal [===], picklist [options.includes];
 * - in a pipe after one of those (or after a pipe of them): min_length, max_length, safe_integer, min_value [>=],
 *   max_value [<=], finite; any other action (a transform) makes the schema unknown;
 * - optional and nullable without a default (a default changes the output);
 * - strict_object: every own key known, every required key present [`key in input`, own keys
 *   only in the `for…in` over the input: prototype keys are refused here, left to valibot];
 * - array of any known item, with a max_length in its pipe;
 * - variant: the first option whose discriminators (the keys of nested variants too) pass
 *   decides, as valibot's run stops at the first option that passes; if that option fails here,
 *   no verdict (valibot might try a later one).
 * Arrays are never objects here (valibot's object schemas would take one): no verdict.
 * Leaves (the first three items) are read as data, a `Scalar` that one switch checks, and a strict
 * object checks its leaf fields in its own loop: a flat body costs one loop, not a closure per part.
 *
 * The one reader of both the client bodies (lib/wire/client.ts checkBody) and the peer messages
 * (lib/wire/lock_peer.ts). The values are JSON.parse's (plain objects, no prototype keys of their
 * own); the proof that the verdicts are valibot's is tests/peer_quick_check_test.ts, over every
 * peer message kind, every command kind, boundary values and seeded mutations of real appends, and
 * tests/client_body_check_test.ts over every client schema.
 */
import type * as v from "valibot";

/** A value's verdict: true when the schema accepts it as it is (no verdict otherwise). */
export type QuickCheck = (value: unknown) => boolean;

/** The parts of a valibot schema this reader looks at. */
interface Part {
  kind: string;
  type: string;
  requirement?: unknown;
  options?: readonly unknown[];
  literal?: unknown;
  key?: string;
  entries?: Record<string, Part>;
  item?: Part;
  wrapped?: Part;
  default?: unknown;
  fallback?: unknown;
  pipe?: readonly Part[];
}

/** Schemas already read (a schema object is built once per settings: lib/wire/schema.ts perSettings). */
const readSchemas = new WeakMap<object, QuickCheck | null>();

/** `schema`'s quick check, or null if it has a part not known here (read once per schema). */
export function quickCheck(schema: v.GenericSchema): QuickCheck | null {
  let quick = readSchemas.get(schema);
  if (quick === undefined) {
    quick = read(schema as unknown as Part, 0);
    readSchemas.set(schema, quick);
  }
  return quick;
}

/** Deepest nesting read (the peer schemas nest 5 deep: append, entries, entry, command, field). */
const DEPTH_MAX = 16;

function read(schema: Part, depth: number): QuickCheck | null {
  if (depth > DEPTH_MAX || schema.fallback !== undefined) return null;
  const scalar = readScalar(schema, depth);
  if (scalar !== null) return (value) => passes(scalar, value);
  const [base, ...actions] = schema.pipe ?? [schema];
  if (base.kind !== "schema") return null;
  // A pipe's first part may be a pipe itself (`v.pipe(count(), v.minValue(1))`): valibot runs it whole first.
  const own = base === schema ? readBase(base, depth) : read(base, depth + 1);
  if (own === null || actions.length === 0) return own;
  const checks: QuickCheck[] = [];
  for (const action of actions) {
    const check = readAction(base.type, action);
    if (check === null) return null;
    checks.push(check);
  }
  return (value) => {
    if (!own(value)) return false;
    for (const check of checks) if (!check(value)) return false;
    return true;
  };
}

/** One validation of a pipe after an array (scalars' pipes are read by readScalar), or null if unknown there. */
function readAction(baseType: string, action: Part): QuickCheck | null {
  const requirement = action.requirement;
  if (action.kind !== "validation" || baseType !== "array" || typeof requirement !== "number") return null;
  if (action.type === "min_length") return (value) => (value as unknown[]).length >= requirement;
  if (action.type === "max_length") return (value) => (value as unknown[]).length <= requirement;
  return null;
}

function readBase(schema: Part, depth: number): QuickCheck | null {
  switch (schema.type) {
    case "optional":
    case "nullable": {
      if (schema.default !== undefined || schema.wrapped === undefined) return null;
      const wrapped = read(schema.wrapped, depth + 1);
      if (wrapped === null) return null;
      return schema.type === "optional" ? (value) => value === undefined || wrapped(value) : (value) => value === null || wrapped(value);
    }
    case "array": {
      const item = schema.item === undefined ? null : read(schema.item, depth + 1);
      if (item === null) return null;
      return (value) => {
        if (!Array.isArray(value)) return false;
        for (let i = 0; i < value.length; i++) if (!item(value[i])) return false;
        return true;
      };
    }
    case "strict_object":
      return readObject(schema, depth);
    case "variant":
      return readVariant(schema, depth);
    default:
      return null;
  }
}

/**
 * A leaf value's schema read as data rather than closures: its base type, its pipe's bounds and
 * whether undefined (optional) or null (nullable) pass. One `passes` call checks it, so an object
 * of such fields is one flat loop (the client bodies are: issue 14, docs/bench.md).
 */
interface Scalar {
  type: "string" | "number" | "boolean" | "literal" | "picklist";
  optional: boolean;
  nullable: boolean;
  lengthMin: number;
  lengthMax: number;
  integer: boolean;
  finite: boolean;
  valueMin: number;
  valueMax: number;
  literal: unknown;
  options: readonly unknown[];
}

/** `schema` as a scalar, or null if it is no scalar or has a part not known here. */
function readScalar(schema: Part, depth: number): Scalar | null {
  if (depth > DEPTH_MAX || schema.fallback !== undefined) return null;
  if (schema.type === "optional" || schema.type === "nullable") {
    if (schema.default !== undefined || schema.wrapped === undefined || schema.pipe !== undefined) return null;
    const wrapped = readScalar(schema.wrapped, depth + 1);
    if (wrapped === null) return null;
    return schema.type === "optional" ? { ...wrapped, optional: true } : { ...wrapped, nullable: true };
  }
  const [base, ...actions] = schema.pipe ?? [schema];
  if (base.kind !== "schema") return null;
  // A pipe's first part may be a pipe itself (`v.pipe(count(), v.minValue(1))`): valibot runs it whole first.
  const scalar = base === schema ? readScalarBase(base) : readScalar(base, depth + 1);
  if (scalar === null || actions.length === 0) return scalar;
  if (base.type !== "string" && base.type !== "number") return null;
  const bounded = { ...scalar };
  for (const action of actions) {
    const requirement = action.requirement;
    if (action.kind !== "validation") return null;
    if (action.type === "safe_integer" && base.type === "number") bounded.integer = true;
    else if (action.type === "finite" && base.type === "number") bounded.finite = true;
    else if (typeof requirement !== "number") return null;
    else if (action.type === "min_length" && base.type === "string") bounded.lengthMin = Math.max(bounded.lengthMin, requirement);
    else if (action.type === "max_length" && base.type === "string") bounded.lengthMax = Math.min(bounded.lengthMax, requirement);
    else if (action.type === "min_value" && base.type === "number") bounded.valueMin = Math.max(bounded.valueMin, requirement);
    else if (action.type === "max_value" && base.type === "number") bounded.valueMax = Math.min(bounded.valueMax, requirement);
    else return null;
  }
  return bounded;
}

function readScalarBase(schema: Part): Scalar | null {
  const type = schema.type;
  if (type !== "string" && type !== "number" && type !== "boolean" && type !== "literal" && type !== "picklist") return null;
  if (type === "picklist" && !Array.isArray(schema.options)) return null;
  const unbounded = Number.POSITIVE_INFINITY;
  return {
    type,
    optional: false,
    nullable: false,
    lengthMin: 0,
    lengthMax: unbounded,
    integer: false,
    finite: false,
    valueMin: -unbounded,
    valueMax: unbounded,
    literal: schema.literal,
    options: schema.options ?? [],
  };
}

/** Whether `value` passes `scalar` (all its parts: valibot's abort-early verdict is their conjunction). */
function passes(scalar: Scalar, value: unknown): boolean {
  if (value === undefined && scalar.optional) return true;
  if (value === null && scalar.nullable) return true;
  switch (scalar.type) {
    case "string":
      return typeof value === "string" && value.length >= scalar.lengthMin && value.length <= scalar.lengthMax;
    case "number":
      // NaN fails valibot's number() and every comparison; min/max default to ±Infinity.
      return typeof value === "number" && value >= scalar.valueMin && value <= scalar.valueMax &&
        (!scalar.integer || Number.isSafeInteger(value)) && (!scalar.finite || Number.isFinite(value));
    case "boolean":
      return typeof value === "boolean";
    case "literal":
      return value === scalar.literal;
    case "picklist":
      return scalar.options.includes(value);
  }
}

/**
 * A strict object's check: known own keys only, each value passing, every required key present.
 * Its scalar fields are checked in its own loop by `passes` (no closure call per field: a flat
 * object, as a client body is, is one loop; docs/bench.md has the cost).
 */
function readObject(schema: Part, depth: number): QuickCheck | null {
  if (schema.entries === undefined) return null;
  const fields: Array<{ key: string; required: boolean; scalar: Scalar | null; check: QuickCheck }> = [];
  for (const [key, entry] of Object.entries(schema.entries)) {
    const scalar = readScalar(entry, depth + 1);
    const check = scalar === null ? read(entry, depth + 1) : NO_CHECK;
    if (check === null) return null;
    fields.push({ key, required: entry.type !== "optional", scalar, check });
  }
  const known = new Set(fields.map((field) => field.key));
  return (value) => {
    if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
    const input = value as Record<string, unknown>;
    // for…in sees inherited enumerable keys as valibot's own loop does: an unknown one is refused
    // here, a known one must be own (below: an inherited one is no verdict, as is a required one missing).
    for (const key in input) if (!known.has(key)) return false;
    for (const field of fields) {
      if (Object.hasOwn(input, field.key)) {
        const item = input[field.key];
        if (field.scalar === null ? !field.check(item) : !passes(field.scalar, item)) return false;
      } else if (field.required || field.key in input) return false;
    }
    return true;
  };
}

/** The place of a field's check when its scalar is checked instead (never called). */
const NO_CHECK: QuickCheck = () => false;

/** An option of a variant with the discriminators that select it (those of enclosing variants too). */
interface Option {
  discriminators: Array<{ key: string; optional: boolean; check: QuickCheck }>;
  check: QuickCheck;
}

/** A variant's check: the first option whose discriminators all pass decides (valibot's order). */
function readVariant(schema: Part, depth: number): QuickCheck | null {
  const options: Option[] = [];
  if (!flatten(schema, [], options, depth)) return null;
  return (value) => {
    if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
    const input = value as Record<string, unknown>;
    for (const option of options) {
      if (selects(option, input)) return option.check(input);
    }
    return false;
  };
}

/** Whether `option`'s discriminators pass on `input` (a missing one passes if it is optional). */
function selects(option: Option, input: Record<string, unknown>): boolean {
  for (const discriminator of option.discriminators) {
    if (discriminator.key in input ? !discriminator.check(input[discriminator.key]) : !discriminator.optional) return false;
  }
  return true;
}

/** The options of `variant` (nested variants' options in place, with their keys added), in order. */
function flatten(variant: Part, outerKeys: readonly string[], options: Option[], depth: number): boolean {
  if (depth > DEPTH_MAX || typeof variant.key !== "string" || !Array.isArray(variant.options)) return false;
  const keys = outerKeys.includes(variant.key) ? outerKeys : [...outerKeys, variant.key];
  for (const option of variant.options as Part[]) {
    if (option.type === "variant") {
      if (!flatten(option, keys, options, depth + 1)) return false;
      continue;
    }
    const check = read(option, depth + 1);
    if (check === null || option.entries === undefined) return false;
    const discriminators = [];
    for (const key of keys) {
      const entry = option.entries[key];
      const entryCheck = entry === undefined ? null : read(entry, depth + 2);
      if (entryCheck === null) return false;
      discriminators.push({ key, optional: entry.type === "optional", check: entryCheck });
    }
    options.push({ discriminators, check });
  }
  return true;
}
