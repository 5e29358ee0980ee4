/**
 * The lock API's answers and errors: a committed result unwrapped, a refusal or a thrown error
 * encoded as its HTTP status and JSON body (docs/http-api.md), "not primary" with its hint.
 */
import type { ClientAnswer } from "../../lib/core/lock/lock_replica.ts";
import type { Grant } from "../../lib/core/lock/lock_table.ts";
import { errorOf, RequestError } from "../http_util.ts";
import { apiError, ERROR_STATUS } from "../../lib/wire/errors.ts";
import type { LockApiOptions } from "./api_options.ts";

/** A "not primary" refusal: the client moves to the hinted server and retries. */
export class NotPrimaryError extends RequestError {
  constructor(readonly answer: Extract<ClientAnswer, { code: "not_primary" }>) {
    super("not_primary", answer.message);
  }
}

/** One answer of the client API: HTTP status and JSON body. */
export interface ApiAnswer {
  status: number;
  body: unknown;
}

export type Result = Extract<ClientAnswer, { ok: true }>["result"];

/** `encode()`, or the error answer of what it threw (as the app's onError answers). */
export function answerOf(encode: () => ApiAnswer, options: LockApiOptions): ApiAnswer {
  try {
    return encode();
  } catch (error) {
    return errorAnswer(error as Error, options);
  }
}

export function errorAnswer(error: Error, options: LockApiOptions): ApiAnswer {
  if (error instanceof NotPrimaryError) {
    const { epoch, primary } = error.answer;
    const hint = { epoch, primary, primaryUrl: primary ? options.urlOf?.(primary) : undefined };
    return { status: ERROR_STATUS.not_primary, body: { error: { ...apiError("not_primary", error.message).error, ...hint } } };
  }
  const { code, message } = errorOf(error, options.onInternalError ?? (() => {}));
  return { status: ERROR_STATUS[code], body: apiError(code, message) };
}

/** The result of a committed answer; refusals become their HTTP answer. */
export function unwrap(answer: ClientAnswer) {
  if (answer.ok) return answer.result;
  if (answer.code === "not_primary") throw new NotPrimaryError(answer);
  throw new RequestError(answer.code, answer.message);
}

/**
 * A granted enter's answer body: the grant's fields after `granted`, in the grant's order (the table
 * makes every grant as { name, session, token, mode }), as `{ granted: true, ...grant }` wrote them,
 * without the spread's property copy (about 40 ns per grant, docs/bench.md "Fifth pass (branch lone17)").
 */
export function grantAnswer(grant: Grant): { granted: true } & Grant {
  return { granted: true, name: grant.name, session: grant.session, token: grant.token, mode: grant.mode };
}

/** A field added to Grant fails to compile here until grantAnswer writes it too. */
const GRANT_FIELDS_ANSWERED: Record<Exclude<keyof Grant, "name" | "session" | "token" | "mode">, never> = {};
void GRANT_FIELDS_ANSWERED;
