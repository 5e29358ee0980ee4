/**
 * Schemas of the client bodies of both APIs (the lock server's `/v1/sessions`, `/v1/enter`,
 * `/v1/leave`; the ring node's `/v1/ring/{enter,leave,put,delete}`). Each refuses unknown fields
 * (a typo is an error, not a silent default) and names the field in its message, as the
 * hand-written readers did: `name must be a non-empty string`, `unknown field x (allowed: …)`.
 * Defaults (ttlMs, waitMs, mode, …) are the handlers': they come from the settings.
 *
 * Values the cores judge (a ttlMs out of range, a lock name's characters) pass here as long as
 * their type is right, so the client gets the core's own message.
 */
import * as v from "valibot";
import { CALL_ID_LENGTH_MAX } from "../core/lock/lock_table.ts";
import { REQUEST_ID_LENGTH_MAX } from "../core/lock/answered.ts";
import type { Settings } from "../settings.ts";
import { quickCheck } from "./quick_check.ts";
import { describeIssue, perSettings, SESSION_ID_LENGTH_MAX } from "./schema.ts";

/** Longest `sessionSecret` a request may carry (the server's are 43 characters). */
export const SESSION_SECRET_LENGTH_MAX = 256;
/** Shortest secret a client may choose for its own session (128 bits as hex). */
export const SESSION_SECRET_LENGTH_MIN = 32;

const NON_EMPTY = "must be a non-empty string";
const INTEGER = "must be an integer";

/** A non-empty string of at most `lengthMax` characters (the message says which bound failed). */
const nonEmpty = (lengthMax: number) =>
  v.pipe(v.string(NON_EMPTY), v.minLength(1, NON_EMPTY), v.maxLength(lengthMax, `must be at most ${lengthMax} characters`));
const integer = () => v.pipe(v.number(INTEGER), v.safeInteger(INTEGER));
const optionalInteger = () => v.optional(integer());
/** An idempotency key, with the message the core gives (lib/core/lock/answered.ts). */
const requestId = () => {
  const message = `must be a string of 1..${REQUEST_ID_LENGTH_MAX} characters`;
  return v.optional(v.pipe(v.string(message), v.minLength(1, message), v.maxLength(REQUEST_ID_LENGTH_MAX, message)));
};

type ClientLimits = Pick<Settings, "lockNameLengthMax" | "ringKeyLengthMax">;

function build(limits: ClientLimits) {
  const name = nonEmpty(limits.lockNameLengthMax);
  const session = nonEmpty(SESSION_ID_LENGTH_MAX);
  const ticket = v.optional(nonEmpty(SESSION_ID_LENGTH_MAX));
  const key = nonEmpty(limits.ringKeyLengthMax);
  // The secret of the session acted on (a missing one is refused by the core like a wrong one).
  const sessionSecret = v.optional(nonEmpty(SESSION_SECRET_LENGTH_MAX));
  // A secret the client chose for the session it opens: a retried open then finds its session.
  const chosenSecret = v.optional(v.pipe(
    v.string(NON_EMPTY),
    v.minLength(SESSION_SECRET_LENGTH_MIN, `must have at least ${SESSION_SECRET_LENGTH_MIN} characters`),
    v.maxLength(SESSION_SECRET_LENGTH_MAX, `must be at most ${SESSION_SECRET_LENGTH_MAX} characters`),
  ));
  return {
    lock: {
      openSession: v.strictObject({ ttlMs: optionalInteger(), requestId: requestId(), sessionSecret: chosenSecret }),
      keepAlive: v.strictObject({ sessionSecret }),
      closeSession: v.strictObject({ requestId: requestId(), sessionSecret }),
      enter: v.strictObject({
        name,
        session,
        sessionSecret,
        mode: v.optional(v.picklist(["exclusive", "shared"], "must be one of exclusive, shared")),
        waitMs: optionalInteger(),
        lockDelayMs: optionalInteger(),
        callId: v.optional(nonEmpty(CALL_ID_LENGTH_MAX)),
      }),
      leave: v.strictObject({ name, session, sessionSecret, token: optionalInteger(), requestId: requestId() }),
      forceRelease: v.strictObject({ name, requestId: requestId() }),
    },
    ring: {
      enter: v.strictObject({ waitMs: optionalInteger(), leaseMs: optionalInteger(), ticket }),
      leave: v.strictObject({ fence: optionalInteger(), ticket }),
      // The value's size in bytes is the core's to judge (ringValueBytesMax, its own message).
      put: v.strictObject({ fence: integer(), key, value: v.string("must be a string") }),
      delete: v.strictObject({ fence: integer(), key }),
    },
  };
}

export type ClientSchemas = ReturnType<typeof build>;
/** The client schemas for `limits` (built once per settings object). */
export const clientSchemas = perSettings(build);

/** A client body's schema: a strict object of optional and required fields. */
export type BodySchema = v.StrictObjectSchema<v.ObjectEntries, undefined>;

/**
 * The body as its schema reads it, or the message of its first problem: `unknown field x
 * (allowed: a, b)`, `name must be a non-empty string`, `mode must be one of exclusive, shared`.
 */
export function checkBody<S extends BodySchema>(schema: S, body: unknown): { ok: true; value: v.InferOutput<S> } | { ok: false; message: string } {
  // A body the schema accepts as it is needs no valibot run: its output would be the same fields
  // (lib/wire/quick_check.ts, the reader the peer messages use too; tests/client_body_check_test.ts).
  if (quickCheck(schema)?.(body)) return { ok: true, value: body as v.InferOutput<S> };
  if (typeof body === "object" && body !== null) {
    // Unknown fields first, as the readers before: the message lists what is allowed.
    const allowed = Object.keys(schema.entries);
    for (const key of Object.keys(body)) {
      if (!allowed.includes(key)) return { ok: false, message: `unknown field ${key} (allowed: ${allowed.join(", ")})` };
    }
  }
  const result = v.safeParse(schema, body, { abortEarly: true });
  if (result.success) return { ok: true, value: result.output };
  let issue = result.issues[0];
  const path = v.getDotPath(issue);
  if (issue.type === "strict_object" && path !== null && path in schema.entries) {
    // A missing field: its own schema's message ("name must be a non-empty string"), as before.
    const own = v.safeParse(schema.entries[path], undefined);
    if (!own.success) issue = own.issues[0];
  }
  return { ok: false, message: path === null ? describeIssue(issue, "body") : `${path} ${issue.message}` };
}
