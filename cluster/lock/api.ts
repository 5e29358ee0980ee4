/**
 * The lock server's HTTP API (`/v1`, JSON). Handlers only decode, call the service, and encode;
 * the lock semantics live in lib/core/lock/lock_table.ts, the enter long-poll in lock_service.ts. See
 * docs/http-api.md.
 */
import { Hono, type MiddlewareHandler } from "hono";
import type { ClientAnswer, PeerMessage } from "../../lib/core/lock/lock_replica.ts";
import type { Command } from "../../lib/core/lock/lock_table.ts";
import type { Settings } from "../../lib/settings.ts";
import { brokenOff, checkDeclaredLength, declaredLength, errorOf, errorResponse, installErrorHandlers, parseJsonObject, parseJsonText, readBodyText, readJsonObject, readPeerRequest, RequestError } from "../http_util.ts";
import type { EnterCommand, LockService, StatusView } from "./service.ts";
import { encodePeerBody, PEER_CONTENT_TYPE } from "../peer_transport.ts";
import { STREAM_PATH } from "../peer_stream.ts";
import { apiError, ERROR_STATUS } from "../../lib/wire/errors.ts";
import { checkPeerRequest } from "../../lib/wire/lock_peer.ts";
import { type BodySchema, checkBody, clientSchemas } from "../../lib/wire/client.ts";
import type * as v from "valibot";
import type { LoopStallView } from "../stall_monitor.ts";
import { type Access, ClientAuth } from "../client_auth.ts";
import { type AuthenticatedSender, authenticatedSender } from "../peer_auth.ts";
import { answerFormatMiddleware, peerFormatMiddleware } from "../format_version.ts";
import { FORMAT_HEADER, FORMATS, formatText, WIRE_FORMAT } from "../../lib/wire/version.ts";
import type { SecurityLog } from "../security_log.ts";
import { ANONYMOUS, type Caller, callerOf } from "../caller.ts";
import { hashSessionSecret, randomSessionSecret } from "./session_secret.ts";
import { VERSION } from "../version.ts";
import { jsonResponder } from "../runtime.ts";
import type { LockWatchHub } from "./watch.ts";

/** The answer of `GET /v1/status`: `mutexd status` reads it with this type. */
/** `security`: refusals by reason since the process started (cluster/security_log.ts). */
/**
 * `node.role` is the role the server has now (after a failover the backup of the cluster file
 * is the primary); `node.configuredRole` is the cluster file's.
 */
export type LockStatus = { node: { id: string; role: string; configuredRole: string; version: string; formats: typeof FORMATS }; security: Record<string, number> } & StatusView & Partial<LoopStallView>;

export interface LockApiOptions {
  nodeId: string;
  role: string;
  settings: Settings;
  /** The server's process id, in /v1/health: `mutexd up` checks that the node answering is the process it started. */
  pid?: number;
  /** Base URL of a cluster member, for "not primary" hints. */
  urlOf?: (id: string) => string | undefined;
  onInternalError?: (error: Error) => void;
  /** The event loop's longest stalls (the server process; absent in the simulator). */
  loopStall?: () => LoopStallView;
  /** Client bearer tokens (the Hono app only; the simulator's calls are not authenticated). Default: open. */
  auth?: ClientAuth;
  /** The process's refusal counters, shown in status under `security`. */
  security?: SecurityLog;
  /** Authenticates `POST /v1/peer` (peer_auth.ts) when the cluster has a secret. */
  peerAuth?: MiddlewareHandler;
  /**
   * A new session's secret when the client chose none: cryptographic randomness
   * (session_secret.ts randomSessionSecret) by default, a seeded generator in the simulator.
   * Only its hash reaches the core.
   */
  newSessionSecret?: () => string;
  /** Serves `GET /v1/locks/:name/watch` (watch.ts); absent: that route answers 404. */
  watch?: LockWatchHub;
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
 * One route of the client API that changes state: decode the body (its schema, lib/wire/client.ts),
 * call the service, encode its answer through `done`. The Hono app below serves these; the
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
          if (result.type === "granted") return ok({ granted: true, ...result.grant });
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

type Result = Extract<ClientAnswer, { ok: true }>["result"];

/** Sessions belong to no lock name: any token that may lock something may have them. */
const lockOnSomeName = (): Access => ({ level: "lock", on: "some" });
/** `admin` on the body's name (a missing or ill-typed name: on some name; the route then refuses it). */
const adminOnName = (input: Record<string, unknown>): Access =>
  typeof input.name === "string" ? { level: "admin", name: input.name } : { level: "admin", on: "some" };
/** `lock` on the body's name (a missing or ill-typed name: on some name; the route then refuses it). */
const lockOnName = (input: Record<string, unknown>): Access =>
  typeof input.name === "string" ? { level: "lock", name: input.name } : lockOnSomeName();

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

/** Runs `route` on a decoded body: checks it, then handles; every failure is an answer. */
function runRoute(route: LockRoute, params: Record<string, string>, input: Record<string, unknown>, options: LockApiOptions, done: (answer: ApiAnswer) => void, caller: Caller = ANONYMOUS): void {
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

export function createLockApp(service: LockService, options: LockApiOptions): Hono {
  const { settings } = options;
  const auth = options.auth ?? ClientAuth.open();
  const app = new Hono();
  app.use(answerFormatMiddleware());
  installErrorHandlers(app, options.onInternalError ?? (() => {}), (error) => {
    const answer = error instanceof NotPrimaryError ? errorAnswer(error, options) : undefined;
    return answer ? Response.json(answer.body, { status: answer.status }) : undefined;
  });
  // Bearer tokens before every route (health and /v1/peer pass); each route below says what it needs.
  app.use(auth.middleware);

  // Before the route: the middleware refuses what does not authenticate and signs the answers.
  for (const path of ["/v1/peer", STREAM_PATH]) {
    if (options.peerAuth) app.use(path, options.peerAuth);
    app.use(path, peerFormatMiddleware(options.security ?? service.security));
  }

  // The role now (joining, primary or backup), not only the cluster file's.
  const node = () => ({ id: options.nodeId, role: service.summary().server.role, configuredRole: options.role, version: VERSION, formats: FORMATS });
  app.get("/v1/health", (c) => c.json({ ok: true, ...node(), ...(options.pid === undefined ? {} : { pid: options.pid }) }));

  app.get("/v1/status", (c) => {
    const head = { node: node(), ...options.loopStall?.(), security: (options.security ?? service.security).view() };
    // `?summary=1`: without the sessions and locks, cheap at any table size (benches poll it);
    // counts and replication state only, so `read` on any name suffices.
    if (c.req.query("summary") === "1") {
      auth.require(c, { level: "read", on: "some" });
      return c.json({ ...head, ...service.summary() });
    }
    // Every session and lock of every name: admin on every name.
    auth.require(c, { level: "admin", on: "every" });
    return c.json({ ...head, ...service.view() } satisfies LockStatus);
  });

  app.get("/v1/sessions", (c) => {
    auth.require(c, { level: "admin", on: "every" });
    return c.json({ sessions: service.view().sessions });
  });

  const routes = lockRoutes(service, options);
  for (const route of routes) {
    app.on(route.method, route.path, async (c) => {
      const input = await readJsonObject(c, settings.bodyBytesMax);
      auth.require(c, route.access(input));
      const answer = await new Promise<ApiAnswer>((done) => runRoute(route, c.req.param() as Record<string, string>, input, options, done, callerOf(c)));
      return c.json(answer.body, answer.status as 200);
    });
  }

  // Only the locks whose names the token may read.
  app.get("/v1/locks", (c) => {
    auth.require(c, { level: "read", on: "some" });
    return c.json({ locks: service.view().locks.filter((lock) => auth.may(c, { level: "read", name: lock.name })) });
  });

  // Before `/v1/locks/:name`, whose pattern would take `NAME/watch` for a name. (Hono matches the
  // raw path: a name sent percent-encoded, as the client sends it, may itself end in "/watch".)
  app.get("/v1/locks/:path{.+/watch}", (c) => {
    const name = c.req.param("path").slice(0, -"/watch".length);
    auth.require(c, { level: "read", name });
    const hub = options.watch;
    if (!hub) return errorResponse(c, { code: "not_found", message: "this server serves no watches" });
    if (name.length === 0 || name.length > settings.lockNameLengthMax) throw new RequestError("bad_request", `a lock name has 1 to ${settings.lockNameLengthMax} characters`);
    // Only the primary knows every change when it happens (a backup learns them later).
    const { role, epoch, primary } = service.summary().server;
    if (role !== "primary") throw new NotPrimaryError({ ok: false, code: "not_primary", message: `${options.nodeId} is not the primary`, epoch, primary });
    if (hub.full) throw new RequestError("limit_reached", "too many watches on this server");
    return new Response(hub.open(name), { headers: { "content-type": "text/event-stream", "cache-control": "no-store" } });
  });

  app.get("/v1/locks/:name{.+}", (c) => {
    const name = c.req.param("name");
    auth.require(c, { level: "read", name });
    const lock = service.view().locks.find((l) => l.name === name);
    if (!lock) return errorResponse(c, { code: "lock_not_found", message: `lock ${name} is not held or waited for` });
    return c.json(lock);
  });

  // Replication and sync between the two lock servers (JSON, peer_transport.ts).
  app.post("/v1/peer", async (c) => {
    const text = await readBodyText(c, settings.peerBodyBytesMax);
    const body = await new Promise<string>((done) => answerPeer(service, settings, text, done, authenticatedSender(c)));
    return c.body(body, 200, { "content-type": PEER_CONTENT_TYPE });
  });
  // The probe before the replication stream opens (peer_stream.ts): the route is here, and the
  // signed GET leaves the sender with this process's nonce. The upgrade itself never reaches Hono.
  app.get(STREAM_PATH, (c) => c.json({ stream: true }));

  if (!auth.enabled) installFastPath(app, routes, options);
  return app;
}

/**
 * The client routes without a path parameter (open a session, enter, leave, force-release)
 * answered without Hono's routing, context and middleware, which cost a lone primary about a
 * third of its CPU per request (docs/bench.md, "The lone primary's HTTP path"). Only without
 * client tokens: the bearer middleware then has nothing to check, so the route's work is the
 * same as through Hono: the body read within `bodyBytesMax`, parsed, checked by the route's schema
 * (runRoute), the same answers and errors. A body without a declared length (chunked) and every
 * other request go to Hono. `app.fetch` is replaced, so `app.request` (the tests) takes it too.
 */
function installFastPath(app: Hono, routes: readonly LockRoute[], options: LockApiOptions): void {
  const fast = new Map(routes.filter((r) => r.method === "POST" && !r.path.includes(":")).map((r) => [r.path, r]));
  const bytesMax = options.settings.bodyBytesMax;
  const honoFetch = app.fetch;
  app.fetch = (request, env, executionCtx) => {
    const route = request.method === "POST" ? fast.get(pathOf(request.url)) : undefined;
    const declared = route === undefined ? null : request.headers.get("content-length");
    if (route === undefined || declared === null) return honoFetch(request, env, executionCtx);
    return answerFast(route, request, declared, bytesMax, options);
  };
}

/**
 * `contentLength`: the request's Content-Length header (declaredLength reads it, as readBodyBytes
 * does); a length past `bytesMax` is refused before the body is read, which the runtime then reads
 * whole as text. Promise callbacks on the body's own promise rather than async functions: two
 * promises per request, the body's and its `then`.
 */
function answerFast(route: LockRoute, request: Request, contentLength: string, bytesMax: number, options: LockApiOptions): Promise<Response> {
  let text: Promise<string>;
  try {
    checkDeclaredLength(declaredLength(contentLength), bytesMax);
    text = request.text();
  } catch (error) {
    return Promise.resolve(jsonAnswer(errorAnswer(error instanceof RequestError ? error : brokenOff(error), options)));
  }
  return text.then((body) => answerBody(route, body, options), (error) => jsonAnswer(errorAnswer(brokenOff(error), options)));
}

/** The answer to a fast-path body's text: at once when decided within the call (a grant, a release), else promised. */
function answerBody(route: LockRoute, text: string, options: LockApiOptions): Response | Promise<Response> {
  let input: Record<string, unknown>;
  try {
    input = parseJsonText(text);
  } catch (error) {
    return jsonAnswer(errorAnswer(error as Error, options));
  }
  let now: ApiAnswer | undefined;
  let later: ((answer: ApiAnswer) => void) | undefined;
  runRoute(route, {}, input, options, (answer) => (later ? later(answer) : (now = answer)));
  if (now) return jsonAnswer(now);
  return new Promise<ApiAnswer>((resolve) => (later = resolve)).then(jsonAnswer);
}

/**
 * A fast-path answer as Hono's route answers it: the same body, status and headers (c.json's
 * content type and answerFormatMiddleware's format header; lock_fast_path_test compares them byte
 * for byte), made the runtime's cheapest way (runtime.ts jsonResponder).
 */
const fastAnswer = jsonResponder({ "content-type": "application/json", [FORMAT_HEADER]: formatText(WIRE_FORMAT) });

function jsonAnswer(answer: ApiAnswer): Response {
  return fastAnswer(answer.body, answer.status);
}

/** The path of an absolute request URL (`http://host:port/path?query` → `/path`), as Hono routes it. */
function pathOf(url: string): string {
  const start = url.indexOf("/", url.indexOf("://") + 3);
  if (start < 0) return "/";
  const query = url.indexOf("?", start);
  return query < 0 ? url.slice(start) : url.slice(start, query);
}

/**
 * `POST /v1/peer` on the body's text: `done` gets the answer's JSON text (at once, or with
 * a durable log once the disk has what an ack acknowledges), and the message is returned (the
 * simulator's observers read its epoch). The core checks the sender and the epoch; here only
 * the shape is checked, so a malformed message throws a RequestError and changes nothing.
 * `sender`: who the request authenticated as (peer_auth.ts); a body claiming another is refused.
 * The simulator's network is trusted: it passes none.
 */
export function answerPeer(service: LockService, settings: Settings, text: string, done: (body: string) => void, sender?: AuthenticatedSender): PeerMessage {
  let message: PeerMessage;
  try {
    message = readPeerRequest(text, settings.peerBodyBytesMax, (value) => checkPeerRequest(value, settings));
  } catch (error) {
    if (error instanceof RequestError) service.security.refused("peerMalformed", sender?.id ?? "peer", { message: error.message });
    throw error;
  }
  sender?.check(message.from);
  service.peerMessageThen(message, (answer) => done(encodePeerBody(answer)));
  return message;
}


/**
 * `answerPeer` for a frame of the replication stream (peer_stream.ts): `done` gets the status and
 * body the HTTP route would answer (200 and the answer, or the error a refusal is).
 */
export function answerPeerFrame(service: LockService, options: LockApiOptions, text: string, sender: AuthenticatedSender | undefined, done: (status: number, body: string) => void): void {
  // The answer may come within the call; an error thrown by `done` itself (the socket's send) is
  // not the request's refusal: the frame is answered once, never twice.
  let answered = false;
  try {
    answerPeer(service, options.settings, text, (body) => {
      answered = true;
      done(200, body);
    }, sender);
  } catch (error) {
    if (answered) throw error;
    const answer = errorAnswer(error as Error, options);
    done(answer.status, JSON.stringify(answer.body));
  }
}

/** The result of a committed answer; refusals become their HTTP answer. */
function unwrap(answer: ClientAnswer) {
  if (answer.ok) return answer.result;
  if (answer.code === "not_primary") throw new NotPrimaryError(answer);
  throw new RequestError(answer.code, answer.message);
}
