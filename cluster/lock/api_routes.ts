/**
 * The lock API's client routes that change state (sessions, enter, leave, force-release): each
 * decodes its body, calls the service and encodes its answer (api_answers.ts); the lock semantics
 * live in lib/core/lock/lock_table.ts, the enter long-poll in service.ts. Served by the Hono app
 * (api.ts), its fast path (api_fast_path.ts), and the simulator (`answerRequest`).
 */
import type { Command } from "../../lib/core/lock/lock_table.ts";
import { parseJsonObject, RequestError } from "../http_util.ts";
import type { EnterCommand, LockService } from "./service.ts";
import { apiError, ERROR_STATUS } from "../../lib/wire/errors.ts";
import { type BodySchema, checkBody, clientSchemas } from "../../lib/wire/client.ts";
import type * as v from "valibot";
import type { Access } from "../client_auth.ts";
import { ANONYMOUS, type Caller } from "../caller.ts";
import { hashSessionSecret, randomSessionSecret } from "./session_secret.ts";
import { answerOf, type ApiAnswer, errorAnswer, grantAnswer, type Result, unwrap } from "./api_answers.ts";
import type { LockApiOptions } from "./api_options.ts";

/**
 * One route of the client API that changes state: decode the body (its schema, lib/wire/client.ts),
 * call the service, encode its answer through `done`. The Hono app (api.ts) serves these; the
 * simulator (tests/sim/lock/server.ts) calls `answerRequest` with the request's JSON text,
 * because a Hono handler continues in native promises, which a synchronous simulation never
 * drains.
 */
export interface LockRoute {
  method: "POST" | "DELETE";
  path: string;
  /** The permission the caller's token needs (cluster/client_auth.ts), from the body before its schema check. */
  access(input: Record<string, unknown>): Access;
  /**
   * Checks the body against the route's schema and handles it; a refusal throws a RequestError.
   * `caller`: who sent it (cluster/caller.ts); the simulator's requests are ANONYMOUS.
   */
  handle(params: Record<string, string>, body: Record<string, unknown>, done: (answer: ApiAnswer) => void, caller?: Caller): void;
}

/** A route whose handler gets its body as `schema` reads it (a refused body is 400, naming the field). */
function bodyRoute<S extends BodySchema>(
  method: LockRoute["method"],
  path: string,
  schema: S,
  access: LockRoute["access"],
  handle: (params: Record<string, string>, input: v.InferOutput<S>, done: (answer: ApiAnswer) => void, caller: Caller) => void,
): LockRoute {
  return {
    method,
    path,
    access,
    handle(params, body, done, caller = ANONYMOUS) {
      const checked = checkBody(schema, body);
      if (!checked.ok) throw new RequestError("bad_request", checked.message);
      handle(params, checked.value, done, caller);
    },
  };
}

export function lockRoutes(service: LockService, options: LockApiOptions): LockRoute[] {
  const { settings } = options;
  const schemas = clientSchemas(settings).lock;
  const ok = (body: unknown, status = 200): ApiAnswer => ({ status, body });
  /** Submits a command and answers `encode` of the committed result (refusals become errors). */
  const submit = (command: Command, requestId: string | undefined, done: (answer: ApiAnswer) => void, encode: (result: Result) => ApiAnswer) =>
    service.submitThen(command, requestId, (answer) => done(answerOf(() => encode(unwrap(answer)), options)));
  const unexpected = (result: Result): never => {
    throw new Error(`unexpected result ${result.type}`);
  };
  return [
    bodyRoute("POST", "/v1/sessions", schemas.openSession, lockOnSomeName, (_params, input, done, caller) => {
      const ttlMs = input.ttlMs ?? settings.sessionTtlMs;
      // The client's own secret (ours send one), else a fresh one.
      const secret = input.sessionSecret ?? (options.newSessionSecret ?? randomSessionSecret)();
      const command: Extract<Command, { type: "openSession" }> = { type: "openSession", ttlMs, secretHash: hashSessionSecret(secret) };
      if (caller.token !== null) command.owner = caller.token;
      if (caller.sessionsMax !== null) command.ownerSessionsMax = caller.sessionsMax;
      // longPollMaxMs tells the client how long a waiting enter may be held, so it can time out
      // a lost answer soon after that instead of after its whole wait.
      const encode = (result: Result) =>
        result.type === "session" ? ok({ session: result.session, sessionSecret: secret, ttlMs: result.ttlMs, longPollMaxMs: settings.longPollMaxMs }, 201) : unexpected(result);
      service.submitThen(command, input.requestId, (answer) => {
        // A retried open finds the first open's session. With the client's own secret that is its
        // session. With a secret made here, the first one went out only in the lost answer and is
        // kept nowhere (only its hash): that session is useless to its client and expires; a new
        // one (without the key, so it is not this answer again) takes its place.
        if (answer.ok && answer.result.type === "session" && answer.result.secretHash !== command.secretHash && input.requestId !== undefined) {
          return submit(command, undefined, done, encode);
        }
        done(answerOf(() => encode(unwrap(answer)), options));
      });
    }),
    bodyRoute("POST", "/v1/sessions/:id/keepalive", schemas.keepAlive, lockOnSomeName, (params, input, done) => {
      submit({ type: "keepAlive", session: params.id, secretHash: hashSessionSecret(input.sessionSecret) }, undefined, done, (result) =>
        // `locks`: what the session still holds, so the client notices a lock gone while its session lives.
        // A result without the list answers none (the client then concludes nothing), never an empty
        // list, which would tell the client that every lock it holds is gone.
        result.type === "session" ? ok({ session: result.session, ttlMs: result.ttlMs, ...(result.held ? { locks: result.held } : {}) }) : unexpected(result));
    }),
    bodyRoute("DELETE", "/v1/sessions/:id", schemas.closeSession, lockOnSomeName, (params, input, done) => {
      submit({ type: "closeSession", session: params.id, secretHash: hashSessionSecret(input.sessionSecret) }, input.requestId, done, (result) =>
        result.type === "closed" ? ok({ session: result.session, released: result.released }) : unexpected(result));
    }),
    // mutex_enter (LockService.enter: grant now, long-poll, or not granted); waitMs = 0 is a try-lock.
    // callId (optional) names the client's call, so an enter arriving after its leave grants nothing.
    bodyRoute("POST", "/v1/enter", schemas.enter, lockOnName, (_params, input, done, caller) => {
      const { name, session, mode = "exclusive", waitMs = 0, lockDelayMs = 0, callId } = input;
      const command: EnterCommand = { type: "enter", name, session, secretHash: hashSessionSecret(input.sessionSecret), mode, waitMs, lockDelayMs };
      if (callId !== undefined) command.callId = callId;
      if (caller.waitersMax !== null) command.ownerWaitersMax = caller.waitersMax;
      service.enterThen(command, (answer) =>
        done(answerOf(() => {
          const result = unwrap(answer);
          if (result.type === "granted") return ok(grantAnswer(result.grant));
          if (result.type === "notGranted") {
            return ok({ granted: false, waiting: false, name, position: result.position, ...(result.callLeft ? { callLeft: true } : {}) });
          }
          if (result.type === "waiting") return ok({ granted: false, waiting: true, name, position: result.position });
          return unexpected(result);
        }, options)));
    }),
    // mutex_leave: by the holder with its token; a waiter without a token withdraws its request.
    bodyRoute("POST", "/v1/leave", schemas.leave, lockOnName, (_params, input, done) => {
      const { name, session, token } = input;
      submit({ type: "leave", name, session, secretHash: hashSessionSecret(input.sessionSecret), token }, input.requestId, done, (result) =>
        result.type === "left" ? ok({ left: true, name, wasHolder: result.wasHolder }) : unexpected(result));
    }),
    // An operator's release of whoever holds `name` (mutexd release NAME --force): admin permission.
    bodyRoute("POST", "/v1/force-release", schemas.forceRelease, adminOnName, (_params, input, done, caller) => {
      // Without client tokens (an anonymous caller) anyone who reaches the server could take any
      // lock from its holder, which session secrets otherwise prevent: an open cluster has none.
      if (caller.token === null) {
        throw new RequestError("forbidden", "force-release needs client tokens: only a token with admin on the name may take a lock from its holder ([[tokens]], docs/security.md)");
      }
      submit({ type: "forceRelease", name: input.name }, input.requestId, done, (result) =>
        result.type === "forceReleased" ? ok({ released: true, name: result.name, tokens: result.tokens }) : unexpected(result));
    }),
  ];
}

/** Sessions belong to no lock name: any token that may lock something may have them. */
const lockOnSomeName = (): Access => ({ level: "lock", on: "some" });
/** `admin` on the body's name (a missing or ill-typed name: on some name; the route then refuses it). */
const adminOnName = (input: Record<string, unknown>): Access =>
  typeof input.name === "string" ? { level: "admin", name: input.name } : { level: "admin", on: "some" };
/** `lock` on the body's name (a missing or ill-typed name: on some name; the route then refuses it). */
const lockOnName = (input: Record<string, unknown>): Access =>
  typeof input.name === "string" ? { level: "lock", name: input.name } : lockOnSomeName();

/** Runs `route` on a decoded body: checks it, then handles; every failure is an answer. */
export function runRoute(route: LockRoute, params: Record<string, string>, input: Record<string, unknown>, options: LockApiOptions, done: (answer: ApiAnswer) => void, caller: Caller = ANONYMOUS): void {
  // A wrong secret is someone acting on a session not theirs (or a client bug): counted, logged.
  const answered = (answer: ApiAnswer) => {
    if (answer.status === ERROR_STATUS.forbidden && options.security) {
      const session = params.id ?? (typeof input.session === "string" ? input.session.slice(0, 128) : undefined);
      options.security.refused("sessionSecretMismatch", caller.token ?? "anonymous", { session });
    }
    done(answer);
  };
  try {
    route.handle(params, input, answered, caller);
  } catch (error) {
    done(errorAnswer(error as Error, options));
  }
}

/**
 * Answers one request of `routes` from its body's JSON text, as the Hono app does (the
 * simulator's port): the route by method and path (`:param` segments), the body size-limited
 * and parsed, the fields checked. An unknown route is a 404 answer.
 */
export function answerRequest(
  routes: readonly LockRoute[],
  options: LockApiOptions,
  request: { method: string; path: string; body: string | undefined },
  done: (answer: ApiAnswer) => void,
): void {
  for (const route of routes) {
    const params = route.method === request.method ? matchPath(route.path, request.path) : undefined;
    if (!params) continue;
    let input: Record<string, unknown>;
    try {
      input = parseJsonObject(new TextEncoder().encode(request.body ?? ""), options.settings.bodyBytesMax);
    } catch (error) {
      return done(errorAnswer(error as Error, options));
    }
    return runRoute(route, params, input, options, done);
  }
  done({ status: ERROR_STATUS.not_found, body: apiError("not_found", `no route ${request.method} ${request.path}`) });
}

/** The params of `path` if it matches `pattern` (literal segments and `:name` segments only). */
function matchPath(pattern: string, path: string): Record<string, string> | undefined {
  const want = pattern.split("/");
  const have = path.split("/");
  if (want.length !== have.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < want.length; i++) {
    if (want[i].startsWith(":")) {
      try {
        params[want[i].slice(1)] = decodeURIComponent(have[i]);
      } catch {
        return undefined;
      }
    } else if (want[i] !== have[i]) {
      return undefined;
    }
  }
  return params;
}
