/**
 * The lock server's HTTP API (`/v1`, JSON). Handlers only decode, call the service, and encode;
 * the lock semantics live in lib/core/lock/lock_table.ts, the enter long-poll in lock_service.ts. See
 * docs/http-api.md.
 */
import { Hono } from "hono";
import type { ClientAnswer, PeerMessage } from "../../lib/core/lock/lock_replica.ts";
import type { Command } from "../../lib/core/lock/lock_table.ts";
import { requestIdProblem } from "../../lib/core/lock/answered.ts";
import type { Settings } from "../../lib/settings.ts";
import { errorOf, errorResponse, field, installErrorHandlers, onlyFields, parseJsonObject, readBodyText, readJsonObject, readPeerRequest, RequestError } from "../http_util.ts";
import type { EnterCommand, LockService, StatusView } from "./service.ts";
import { encodePeerBody, PEER_CONTENT_TYPE } from "../peer_transport.ts";
import { apiError, ERROR_STATUS } from "../../lib/wire/errors.ts";
import type { LoopStallView } from "../stall_monitor.ts";
import { ANONYMOUS, type Caller, callerOf } from "../caller.ts";
import type { SecurityLog } from "../security_log.ts";
import { hashSessionSecret, randomSessionSecret, SESSION_SECRET_LENGTH_MAX } from "./session_secret.ts";

/** The answer of `GET /v1/status`: `mutexd status` reads it with this type. */
/** `security`: refusals by reason since the process started (cluster/security_log.ts). */
export type LockStatus = { node: { id: string; role: string }; security: Record<string, number> } & StatusView & Partial<LoopStallView>;

export interface LockApiOptions {
  nodeId: string;
  role: string;
  settings: Settings;
  /** Base URL of a cluster member, for "not primary" hints. */
  urlOf?: (id: string) => string | undefined;
  onInternalError?: (error: Error) => void;
  /** The event loop's longest stalls (the server process; absent in the simulator). */
  loopStall?: () => LoopStallView;
  /**
   * A new session's secret: cryptographic randomness (session_secret.ts randomSessionSecret) by
   * default, a seeded generator in the simulator. Only its hash reaches the core.
   */
  newSessionSecret?: () => string;
  /** Counts and logs refusals (`security` in status): here, actions with a wrong session secret. */
  securityLog?: SecurityLog;
}

/** A "not primary" refusal: the client moves to the hinted server and retries. */
class NotPrimaryError extends RequestError {
  constructor(readonly answer: Extract<ClientAnswer, { code: "not_primary" }>) {
    super("not_primary", answer.message);
  }
}

/** One answer of the client API: HTTP status and JSON body. */
export interface ApiAnswer {
  status: number;
  body: unknown;
}

/**
 * One route of the client API that changes state: decode the body (`fields` are all it may
 * have), call the service, encode its answer through `done`. The Hono app below serves these;
 * the simulator (tests/sim/lock/server.ts) calls `answerRequest` with the request's JSON text,
 * because a Hono handler continues in native promises, which a synchronous simulation never
 * drains.
 */
export interface LockRoute {
  method: "POST" | "DELETE";
  path: string;
  fields: readonly string[];
  /** `caller`: who sent it (cluster/caller.ts); the simulator's requests are ANONYMOUS. */
  handle(params: Record<string, string>, input: Record<string, unknown>, done: (answer: ApiAnswer) => void, caller?: Caller): void;
}

export function lockRoutes(service: LockService, options: LockApiOptions): LockRoute[] {
  const { settings } = options;
  const ok = (body: unknown, status = 200): ApiAnswer => ({ status, body });
  /** Submits a command and answers `encode` of the committed result (refusals become errors). */
  const submit = (command: Command, requestId: string | undefined, done: (answer: ApiAnswer) => void, encode: (result: Result) => ApiAnswer) =>
    service.submitThen(command, requestId, (answer) => done(answerOf(() => encode(unwrap(answer)), options)));
  const unexpected = (result: Result): never => {
    throw new Error(`unexpected result ${result.type}`);
  };
  return [
    {
      method: "POST",
      path: "/v1/sessions",
      fields: ["ttlMs", "requestId"],
      handle(_params, input, done, caller = ANONYMOUS) {
        const ttlMs = field.integer(input, "ttlMs", settings.sessionTtlMs);
        const secret = (options.newSessionSecret ?? randomSessionSecret)();
        const command: Extract<Command, { type: "openSession" }> = { type: "openSession", ttlMs, secretHash: hashSessionSecret(secret) };
        if (caller.token !== null) command.owner = caller.token;
        if (caller.sessionsMax !== null) command.ownerSessionsMax = caller.sessionsMax;
        // longPollMaxMs tells the client how long a waiting enter may be held, so it can time out
        // a lost answer soon after that instead of after its whole wait.
        const encode = (result: Result) =>
          result.type === "session" ? ok({ session: result.session, sessionSecret: secret, ttlMs: result.ttlMs, longPollMaxMs: settings.longPollMaxMs }, 201) : unexpected(result);
        const requestId = requestIdOf(input);
        service.submitThen(command, requestId, (answer) => {
          // A retry of an open whose answer was lost gets the first open's session, whose secret
          // went out in that lost answer and is kept nowhere: that session is useless to its client
          // and expires; a new one (without the key, so it is not this answer again) takes its place.
          if (answer.ok && answer.result.type === "session" && answer.result.secretHash !== command.secretHash && requestId !== undefined) {
            return submit(command, undefined, done, encode);
          }
          done(answerOf(() => encode(unwrap(answer)), options));
        });
      },
    },
    {
      method: "POST",
      path: "/v1/sessions/:id/keepalive",
      fields: ["sessionSecret"],
      handle(params, input, done) {
        submit({ type: "keepAlive", session: params.id, secretHash: secretHashOf(input) }, undefined, done, (result) =>
          result.type === "session" ? ok({ session: result.session, ttlMs: result.ttlMs }) : unexpected(result));
      },
    },
    {
      method: "DELETE",
      path: "/v1/sessions/:id",
      fields: ["requestId", "sessionSecret"],
      handle(params, input, done) {
        submit({ type: "closeSession", session: params.id, secretHash: secretHashOf(input) }, requestIdOf(input), done, (result) =>
          result.type === "closed" ? ok({ session: result.session, released: result.released }) : unexpected(result));
      },
    },
    {
      // mutex_enter (LockService.enter: grant now, long-poll, or not granted); waitMs = 0 is a try-lock.
      // callId (optional) names the client's call, so an enter arriving after its leave grants nothing.
      method: "POST",
      path: "/v1/enter",
      fields: ["name", "session", "sessionSecret", "mode", "waitMs", "lockDelayMs", "callId"],
      handle(_params, input, done, caller = ANONYMOUS) {
        const name = field.string(input, "name");
        const session = field.string(input, "session");
        const mode = field.oneOf(input, "mode", ["exclusive", "shared"] as const, "exclusive");
        const waitMs = field.integer(input, "waitMs", 0);
        const lockDelayMs = field.integer(input, "lockDelayMs", 0);
        const callId = field.optionalString(input, "callId");
        const secretHash = secretHashOf(input);
        const command: EnterCommand = { type: "enter", name, session, secretHash, mode, waitMs, lockDelayMs };
        if (callId !== undefined) command.callId = callId;
        if (caller.waitersMax !== null) command.ownerWaitersMax = caller.waitersMax;
        service.enterThen(command, (answer) =>
          done(answerOf(() => {
            const result = unwrap(answer);
            if (result.type === "granted") return ok({ granted: true, ...result.grant });
            if (result.type === "notGranted") {
              return ok({ granted: false, waiting: false, name, position: result.position, ...(result.callLeft ? { callLeft: true } : {}) });
            }
            if (result.type === "waiting") return ok({ granted: false, waiting: true, name, position: result.position });
            return unexpected(result);
          }, options)));
      },
    },
    {
      // mutex_leave: by the holder with its token; a waiter without a token withdraws its request.
      method: "POST",
      path: "/v1/leave",
      fields: ["name", "session", "sessionSecret", "token", "requestId"],
      handle(_params, input, done) {
        const name = field.string(input, "name");
        const session = field.string(input, "session");
        const token = field.optionalInteger(input, "token");
        submit({ type: "leave", name, session, secretHash: secretHashOf(input), token }, requestIdOf(input), done, (result) =>
          result.type === "left" ? ok({ left: true, name, wasHolder: result.wasHolder }) : unexpected(result));
      },
    },
  ];
}

type Result = Extract<ClientAnswer, { ok: true }>["result"];

/** The idempotency key, checked here as the core checks it again (lib/core/lock/answered.ts). */
function requestIdOf(input: Record<string, unknown>): string | undefined {
  const problem = requestIdProblem(input.requestId);
  if (problem !== undefined) throw new RequestError("bad_request", problem);
  return input.requestId as string | undefined;
}

/** The hash of the request's `sessionSecret` ("" without one: the core refuses it as it refuses a wrong one). */
function secretHashOf(input: Record<string, unknown>): string {
  const secret = field.optionalString(input, "sessionSecret");
  if (secret !== undefined && secret.length > SESSION_SECRET_LENGTH_MAX) {
    throw new RequestError("bad_request", `sessionSecret must be at most ${SESSION_SECRET_LENGTH_MAX} characters`);
  }
  return hashSessionSecret(secret);
}

/** `encode()`, or the error answer of what it threw (as the app's onError answers). */
function answerOf(encode: () => ApiAnswer, options: LockApiOptions): ApiAnswer {
  try {
    return encode();
  } catch (error) {
    return errorAnswer(error as Error, options);
  }
}

function errorAnswer(error: Error, options: LockApiOptions): ApiAnswer {
  if (error instanceof NotPrimaryError) {
    const { epoch, primary } = error.answer;
    const hint = { epoch, primary, primaryUrl: primary ? options.urlOf?.(primary) : undefined };
    return { status: ERROR_STATUS.not_primary, body: { error: { ...apiError("not_primary", error.message).error, ...hint } } };
  }
  const { code, message } = errorOf(error, options.onInternalError ?? (() => {}));
  return { status: ERROR_STATUS[code], body: apiError(code, message) };
}

/** Runs `route` on a decoded body: checks the fields, then handles; every failure is an answer. */
function runRoute(route: LockRoute, params: Record<string, string>, input: Record<string, unknown>, options: LockApiOptions, done: (answer: ApiAnswer) => void, caller: Caller = ANONYMOUS): void {
  // A wrong secret is someone acting on a session not theirs (or a client bug): counted, logged.
  const answered = (answer: ApiAnswer) => {
    if (answer.status === ERROR_STATUS.forbidden && options.securityLog) {
      const session = params.id ?? (typeof input.session === "string" ? input.session.slice(0, 128) : undefined);
      options.securityLog.refused("sessionSecretMismatch", caller.token ?? "anonymous", { session });
    }
    done(answer);
  };
  try {
    onlyFields(input, route.fields);
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

export function createLockApp(service: LockService, options: LockApiOptions): Hono {
  const { settings } = options;
  const app = new Hono();
  installErrorHandlers(app, options.onInternalError ?? (() => {}), (error) => {
    const answer = error instanceof NotPrimaryError ? errorAnswer(error, options) : undefined;
    return answer ? Response.json(answer.body, { status: answer.status }) : undefined;
  });

  app.get("/v1/health", (c) => c.json({ ok: true, id: options.nodeId, role: options.role }));

  app.get("/v1/status", (c) => {
    const head = { node: { id: options.nodeId, role: options.role }, ...options.loopStall?.() };
    // `?summary=1`: without the sessions and locks, cheap at any table size (benches poll it).
    const security = options.securityLog?.view() ?? {};
    if (c.req.query("summary") === "1") return c.json({ ...head, ...service.summary(), security });
    return c.json({ ...head, ...service.view(), security } satisfies LockStatus);
  });

  app.get("/v1/sessions", (c) => c.json({ sessions: service.view().sessions }));

  for (const route of lockRoutes(service, options)) {
    app.on(route.method, route.path, async (c) => {
      const input = await readJsonObject(c, settings.bodyBytesMax);
      const answer = await new Promise<ApiAnswer>((done) => runRoute(route, c.req.param() as Record<string, string>, input, options, done, callerOf(c)));
      return c.json(answer.body, answer.status as 200);
    });
  }

  app.get("/v1/locks", (c) => c.json({ locks: service.view().locks }));

  app.get("/v1/locks/:name{.+}", (c) => {
    const name = c.req.param("name");
    const lock = service.view().locks.find((l) => l.name === name);
    if (!lock) return errorResponse(c, { code: "lock_not_found", message: `lock ${name} is not held or waited for` });
    return c.json(lock);
  });

  // Replication and sync between the two lock servers (superjson).
  app.post("/v1/peer", async (c) => {
    const text = await readBodyText(c, settings.peerBodyBytesMax);
    const body = await new Promise<string>((done) => answerPeer(service, settings, text, done));
    return c.body(body, 200, { "content-type": PEER_CONTENT_TYPE });
  });

  return app;
}

/**
 * `POST /v1/peer` on the body's text: `done` gets the answer's superjson text (at once, or with
 * a durable log once the disk has what an ack acknowledges), and the message is returned (the
 * simulator's observers read its epoch). The core checks the sender and the epoch; here only
 * the shape is checked, so a malformed message throws a RequestError and changes nothing.
 */
export function answerPeer(service: LockService, settings: Settings, text: string, done: (body: string) => void): PeerMessage {
  const message = readPeerRequest(text, settings.peerBodyBytesMax, isPeerRequest, "a peer request (append, syncRequest or syncNext)");
  service.peerMessageThen(message, (answer) => done(encodePeerBody(answer)));
  return message;
}

/** The result of a committed answer; refusals become their HTTP answer. */
function unwrap(answer: ClientAnswer) {
  if (answer.ok) return answer.result;
  if (answer.code === "not_primary") throw new NotPrimaryError(answer);
  throw new RequestError(answer.code, answer.message);
}

function isPeerRequest(message: Record<string, unknown>): message is PeerMessage & Record<string, unknown> {
  if (typeof message.from !== "string" || !Number.isSafeInteger(message.epoch)) return false;
  if (message.type === "syncRequest") return true;
  if (message.type === "syncNext") return Number.isSafeInteger(message.syncGen) && Number.isSafeInteger(message.position);
  return message.type === "append" && Number.isSafeInteger(message.syncGen) && Array.isArray(message.entries);
}
