/**
 * Always-on assertions for the protocol cores. An assertion that fails means a bug in mutexd,
 * never bad input: bad input is answered with an error result, not a throw.
 */
export class AssertionError extends Error {
  override name = "AssertionError";
}

/** Throws when `condition` is false. Kept on in production: a crash beats a silent double grant. */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new AssertionError(message);
}

/** Marks a switch as exhaustive: adding a union member without handling it fails type-checking. */
export function assertNever(value: never, what: string): never {
  throw new AssertionError(`unhandled ${what}: ${JSON.stringify(value)}`);
}
