/**
 * The ring node's HTTP API. Clients: `/v1/ring/{enter,leave,put,delete,get,keys,status,section}`.
 * Neighbours: `/v1/ring/peer/{token,writes,log,view,wake}`. Handlers decode, call the
 * service and encode; the protocol lives in lib/core/ring/ring_node.ts. See docs/ring.md.
 *
 * The routes are a table (`ringRoutes`) that Hono serves (`createRingApp`: routing, reading the
 * body, JSON answers); without client tokens enter and leave take a fast path around Hono
 * (`installRingFastPath`). A handler gets the decoded body and answers through a callback, never
 * through a promise, so the simulator (tests/sim/ring/http.ts) runs the same handlers inside its
 * synchronous event loop, on the same route patterns and body checks.
 */
import { type Context, Hono, type MiddlewareHandler } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { ClientReply, RingResult } from "../../lib/core/ring/ring_node.ts";
import type { RingOp } from "../../lib/core/ring/ring_types.ts";
import type { ViewMessage } from "../../lib/core/ring/view_wire.ts";
import type { Settings } from "../../lib/settings.ts";
import { apiError, type ApiError, ERROR_STATUS } from "../../lib/wire/errors.ts";
import { errorOf, installErrorHandlers, readJsonObject, RequestError } from "../http_util.ts";
import { type BodySchema, checkBody, clientSchemas } from "../../lib/wire/client.ts";
import { ringPeerSchemas, viewMessageSchema } from "../../lib/wire/ring_peer.ts";
import type { SecurityLog } from "../security_log.ts";
import { check } from "../../lib/wire/schema.ts";
import type * as v from "valibot";
import type { ClientInput } from "./client_waits.ts";
import type { RingService } from "./service.ts";
import { type Access, ClientAuth, isUncheckedPath, RING_SECTION_NAME } from "../client_auth.ts";
import { type AuthenticatedSender, authenticatedSender } from "../peer_auth.ts";
import { answerFormatMiddleware, peerFormatMiddleware } from "../format_version.ts";
import { FORMAT_HEADER, FORMATS } from "../../lib/wire/version.ts";
import { VERSION } from "../version.ts";
import { type FastRoute, installPostFastPath } from "../post_fast_path.ts";

export interface RingApiOptions {
  nodeId: string;
  /** The process id, in /v1/health (`mutexd up` checks it is the process it started). */
  pid?: number;
  settings: Settings;
  /** Extra fields for status (e.g. the URLs of the neighbours). */
  describe?: () => Record<string, unknown>;
  onInternalError?: (error: Error) => void;
  /** Client bearer tokens (the Hono app only; the simulator's calls are not authenticated). Default: open. */
  auth?: ClientAuth;
  /** The process's refusal counters, shown in status under `security`. */
  security?: SecurityLog;
  /** Authenticates `/v1/ring/peer/*` (peer_auth.ts) when the cluster has a secret. */
  peerAuth?: MiddlewareHandler;
  /**
   * A view message from ring node `from` named wire format `format` (its x-mutexd-format; absent:
   * none): the daemon's peers learn from it which optional fields that node reads (http_peers.ts).
   */
  onPeerFormat?(from: string, format: string | undefined): void;
}

/** One decoded request: the JSON body (`{}` for a GET), query and path parameters. */
export interface RingRequest {
  body: Record<string, unknown>;
  query(name: string): string | undefined;
  param(name: string): string | undefined;
  /** Fires when the caller goes away (a long-poll then ends early). */
  signal?: AbortSignal;
  /** Whether the caller's token has `access` (listings keep only what it may read); absent: all allowed. */
  may?(access: Access): boolean;
  /** Who sent a peer request, as its MAC says (peer_auth.ts); none without a secret or in the simulator. */
  sender?: AuthenticatedSender;
  /** The request's wire format (x-mutexd-format); absent: none, or the simulator. */
  format?: string;
}

/** An answer: the status and the JSON body. */
export interface RingAnswer {
  status: number;
  body: unknown;
}

export interface RingRoute {
  method: "GET" | "POST";
  /** A Hono route pattern. */
  path: string;
  /** Bodies above this many bytes get 413 (peer batches may be larger than client bodies). */
  bodyBytesMax: number;
  /**
   * The permission a client's token needs (cluster/client_auth.ts), from the decoded request;
   * "unchecked" for health and the peer routes, which carry no client token.
   */
  access: "unchecked" | ((request: RingRequest) => Access);
  /** Answers through `reply`, once, now or later. What it throws is answered as an error. */
  handle(request: RingRequest, reply: (answer: RingAnswer) => void): void;
}

const ok = (body: unknown): RingAnswer => ({ status: 200, body });

/** An error answer: the code's status and `{ error: { code, message } }`. */
function errorBody({ code, message }: ApiError): RingAnswer {
  return { status: ERROR_STATUS[code], body: apiError(code, message) };
}

/** A thrown error as the app answers it (RequestError: its code; anything else: internal). */
export function errorAnswer(error: Error, onInternal: (error: Error) => void): RingAnswer {
  return errorBody(errorOf(error, onInternal));
}

/** A client body as `schema` reads it; else 400 naming the field (lib/wire/client.ts). */
function checked<S extends BodySchema>(schema: S, body: unknown): v.InferOutput<S> {
  const result = checkBody(schema, body);
  if (!result.ok) throw new RequestError("bad_request", result.message);
  return result.value;
}

/** Unwraps a client reply: errors become their HTTP answer. */
function okReply(reply: ClientReply): Extract<ClientReply, { ok: true }> {
  if (!reply.ok) throw new RequestError(reply.error.code, reply.error.message);
  return reply;
}

/** A peer's protocol answer: bad requests become 400, everything else is a 200 with the result. */
function peerAnswer(result: RingResult): RingAnswer {
  if (!result.ok && result.type === "error") return errorBody(result.error);
  return ok(result);
}

/** What `GET /v1/ring/status` answers (the dashboard shows it too). */
export function ringStatusBody(service: RingService, options: Pick<RingApiOptions, "describe" | "security">) {
  return {
    ...service.node.status(service.now()),
    version: VERSION,
    formats: FORMATS,
    linkQueue: service.linkLength,
    hopMs: service.hopTimes(),
    lease: service.lease(),
    view: service.viewStatus(),
    suspicions: service.suspicions(),
    ...(options.describe?.() ?? {}),
    security: (options.security ?? service.security).view(),
  };
}

export function ringRoutes(service: RingService, options: RingApiOptions): RingRoute[] {
  const { settings } = options;
  const onInternal = options.onInternalError ?? (() => {});
  const node = service.node;
  const client = clientSchemas(settings).ring;
  const peer = ringPeerSchemas(settings);
  /** A peer's body as its schema reads it; a refusal is counted (status `security`) and answered 400. */
  const peerChecked = <S extends v.GenericSchema>(schema: S, body: unknown, what: string): v.InferOutput<S> => {
    const result = check(schema, body, what);
    if (result.ok) return result.value;
    // The sender is not known yet (its `from` is part of what was refused).
    service.security.refused("peerMalformed", "peer", { route: what, message: result.message });
    throw new RequestError("bad_request", result.message);
  };
  const peerBytesMax = ringPeerBytesMax(settings);
  const routes: RingRoute[] = [];
  /** A route answered at once. */
  const now = (method: RingRoute["method"], path: string, access: RingRoute["access"], handle: (request: RingRequest) => RingAnswer, bodyBytesMax = settings.bodyBytesMax) =>
    routes.push({ method, path, bodyBytesMax, access, handle: (request, reply) => reply(handle(request)) });
  /** A client request to the service; `encode` turns its reply into the answer (what it throws too). */
  const viaService = (input: ClientInput, reply: (answer: RingAnswer) => void, encode: (reply: ClientReply) => RingAnswer, abort?: AbortSignal) =>
    service.request(input, (answer) => reply(guarded(() => encode(answer), onInternal)), abort);

  // Alive (200) whatever the ring's state; `ring` says whether this node can grant: in a view, with
  // a majority behind it (a minority or a node rejoining says so here and in status).
  now("GET", "/v1/health", "unchecked", () => {
    const view = service.viewStatus();
    const lease = service.lease();
    const serving = view.member && lease.quorum === "ok";
    return ok({
      ok: true,
      id: options.nodeId,
      role: "ring",
      version: VERSION,
      formats: FORMATS,
      ...(options.pid === undefined ? {} : { pid: options.pid }),
      ring: { serving, member: view.member, quorum: lease.quorum, epoch: view.view?.epoch ?? 0, ...(serving ? {} : { reason: view.member ? lease.reason : "not a member of the current view (rejoining)" }) },
    });
  });

  now("GET", "/v1/ring/status", readSomeName, () => ok(ringStatusBody(service, options)));

  // Enter: granted now, at the token's visit, or "waiting" after a long-poll (ask again with the
  // ticket to keep the place). waitMs = 0 tries: it waits for the next visit only if nobody is
  // ahead. The lease bounds the section; the server revokes it at the end.
  routes.push({
    method: "POST",
    path: "/v1/ring/enter",
    bodyBytesMax: settings.bodyBytesMax,
    access: lockTheSection,
    handle({ body, signal }, reply) {
      const { waitMs = 0, leaseMs = settings.ringLeaseMs, ticket } = checked(client.enter, body);
      viaService({ type: "enter", waitMs, leaseMs, ticket }, reply, (answer) => {
        const reply = okReply(answer);
        if (reply.type === "granted") {
          return ok({ granted: true, fence: reply.fence, leaseMs: reply.leaseMs, epoch: reply.epoch, ticket: reply.ticket });
        }
        if (reply.type === "waiting") return ok({ granted: false, waiting: true, ticket: reply.ticket, position: reply.position });
        if (reply.type === "notGranted") return ok({ granted: false, waiting: false, reason: reply.reason });
        throw new Error(`unexpected reply ${reply.type}`);
      }, signal);
    },
  });

  // Leave: the holder with its fence; a waiter with its ticket withdraws.
  routes.push({
    method: "POST",
    path: "/v1/ring/leave",
    bodyBytesMax: settings.bodyBytesMax,
    access: lockTheSection,
    handle({ body }, reply) {
      const { fence, ticket } = checked(client.leave, body);
      if ((fence === undefined) === (ticket === undefined)) throw new RequestError("bad_request", "give exactly one of fence, ticket");
      viaService({ type: "leave", fence, ticket }, reply, (answer) => {
        const reply = okReply(answer);
        if (reply.type !== "left") throw new Error(`unexpected reply ${reply.type}`);
        return ok({ left: true, wasHolder: reply.wasHolder });
      });
    },
  });

  // Is section `fence` still running? Long-polls up to waitMs (≤ longPollMaxMs) for its end.
  routes.push({
    method: "GET",
    path: "/v1/ring/section/:fence{[0-9]+}",
    bodyBytesMax: settings.bodyBytesMax,
    access: lockTheSection,
    handle(request, reply) {
      const fence = Number(request.param("fence"));
      const waitMs = Math.min(queryInteger(request, "waitMs", 0), settings.longPollMaxMs);
      if (!service.watch(fence, waitMs, (active) => reply(ok({ fence, active })), request.signal)) {
        throw new RequestError("limit_reached", `at most ${settings.ringWaitersMax} section watches wait at once on a ring node`);
      }
    },
  });

  const writeRoute = (type: "put" | "delete"): RingRoute => ({
    method: "POST",
    path: `/v1/ring/${type}`,
    bodyBytesMax: settings.bodyBytesMax,
    access: ({ body }) => (typeof body.key === "string" ? { level: "lock", name: body.key } : { level: "lock", on: "some" }),
    handle({ body }, reply) {
      let fence: number;
      let op: RingOp;
      if (type === "put") {
        const input = checked(client.put, body);
        fence = input.fence;
        op = { type, key: input.key, value: input.value };
      } else {
        const input = checked(client.delete, body);
        fence = input.fence;
        op = { type, key: input.key };
      }
      const key = op.key;
      viaService({ type: "write", fence, op }, reply, (answer) => {
        const reply = okReply(answer);
        if (reply.type !== "written") throw new Error(`unexpected reply ${reply.type}`);
        return ok({ written: true, key, wseq: reply.wseq });
      });
    },
  });
  routes.push(writeRoute("put"), writeRoute("delete"));

  // Reads: committed data (every node has it, it went around the ring); ?dirty=1 adds writes
  // still travelling. At the holder inside a section, committed reads are linearizable.
  now("GET", "/v1/ring/get", (request) => {
    const key = request.query("key");
    return key ? { level: "read", name: key } : readSomeName();
  }, (request) => {
    const key = request.query("key");
    if (!key) throw new RequestError("bad_request", "query parameter key is required");
    const dirty = queryFlag(request, "dirty");
    const value = node.read(key, dirty);
    if (value === undefined) {
      throw new RequestError("key_not_found", `no key ${JSON.stringify(key)} in the ${dirty ? "dirty" : "committed"} view`);
    }
    return ok({ key, value, dirty, commit: node.replica.commit });
  });

  now("GET", "/v1/ring/keys", readSomeName, (request) => {
    const dirty = queryFlag(request, "dirty");
    // Only the keys the caller may read.
    const keys = node.keys(dirty).filter((key) => request.may?.({ level: "read", name: key }) ?? true);
    return ok({ keys, dirty, commit: node.replica.commit });
  });

  // The write log from `from` on (committed and pending, with epochs): neighbours catch up from
  // it, operators and tests compare it between nodes.
  // Every key and value: read on every name.
  now("GET", "/v1/ring/log", () => ({ level: "read", on: "every" }), (request) => ok(node.catchUp(queryInteger(request, "from", 1))));

  // ---- Peer endpoints ----

  now("POST", "/v1/ring/peer/token", "unchecked", ({ body, sender }) => {
    const { from, token } = peerChecked(peer.token, body, "token");
    sender?.check(from);
    return peerAnswer(service.stepPeer({ type: "token", from, token }));
  }, peerBytesMax);

  now("POST", "/v1/ring/peer/writes", "unchecked", ({ body, sender }) => {
    const { from, epoch, entries } = peerChecked(peer.writes, body, "writes");
    sender?.check(from);
    return peerAnswer(service.stepPeer({ type: "writes", from, epoch, entries }));
  }, peerBytesMax);

  now("GET", "/v1/ring/peer/log", "unchecked", (request) => ok(node.catchUp(queryInteger(request, "from", 1))));

  routes.push(viewRoute(service, settings, service.security, options.onPeerFormat));

  now("POST", "/v1/ring/peer/wake", "unchecked", ({ body, sender }) => {
    sender?.check(peerChecked(peer.wake, body, "wake").from);
    return peerAnswer(service.stepPeer({ type: "wake" }));
  });

  return routes;
}

/**
 * The view change's messages (lib/core/ring/view.ts): one-way, answered by messages of their
 * own; the core checks each against its schema and the cluster's ids before it looks at it.
 * Served by every ring node and by the arbiter, which coordinates view changes without a vote
 * (cluster/arbiter/ring_coordinator.ts).
 */
export function viewRoute(
  receiver: { onViewMessage(message: ViewMessage): void },
  settings: Settings,
  security?: SecurityLog,
  onPeerFormat?: RingApiOptions["onPeerFormat"],
): RingRoute {
  return {
    method: "POST",
    path: "/v1/ring/peer/view",
    bodyBytesMax: settings.bodyBytesMax,
    access: "unchecked",
    handle: ({ body, sender, format }, reply) => {
      // The shape here (lib/wire/ring_peer.ts); the ids, quorum and fences in the core.
      const result = check(viewMessageSchema, body, "view message");
      if (!result.ok) {
        security?.refused("peerMalformed", sender?.id ?? "peer", { route: "view", message: result.message });
        throw new RequestError("bad_request", result.message);
      }
      sender?.check(result.value.from);
      onPeerFormat?.(result.value.from, format);
      receiver.onViewMessage(result.value);
      reply(ok({ ok: true }));
    },
  };
}

/** Status and listings: `read` on any name (a listing then keeps only what the token may read). */
const readSomeName = (): Access => ({ level: "read", on: "some" });
/** The ring's one critical section (enter, leave, watching a section) is the reserved name `@ring`. */
const lockTheSection = (): Access => ({ level: "lock", name: RING_SECTION_NAME });

/** The largest peer request: up to ringBatchWritesMax writes of the largest size. */
export function ringPeerBytesMax(settings: Settings): number {
  return settings.ringBatchWritesMax * (settings.ringValueBytesMax + 4 * settings.ringKeyLengthMax + 512) + settings.bodyBytesMax;
}

/** `fn`'s answer, or the error answer for what it throws. */
export function guarded(fn: () => RingAnswer, onInternal: (error: Error) => void): RingAnswer {
  try {
    return fn();
  } catch (error) {
    return errorAnswer(error as Error, onInternal);
  }
}

/** The routes served by Hono: it routes, reads and checks the body, and sends the JSON answer. */
export function createRingApp(service: RingService, options: RingApiOptions): Hono {
  const app = new Hono();
  app.use(answerFormatMiddleware());
  const auth = options.auth ?? ClientAuth.open();
  const onInternal = options.onInternalError ?? (() => {});
  installErrorHandlers(app, onInternal);
  // Bearer tokens before every route (health and the peer routes pass); each route says what it needs.
  app.use(auth.middleware);
  if (options.peerAuth) app.use("/v1/ring/peer/*", options.peerAuth);
  app.use("/v1/ring/peer/*", peerFormatMiddleware(options.security ?? service.security));
  const routes = ringRoutes(service, options);
  serveRoutes(app, routes, auth);
  if (!auth.enabled) installRingFastPath(app, routes, onInternal, auth);
  return app;
}

/** The client routes the fast path answers (the peer routes keep Hono and their authentication). */
const RING_FAST_PATHS: readonly string[] = ["/v1/ring/enter", "/v1/ring/leave"];

/**
 * `POST /v1/ring/enter` and `/v1/ring/leave` answered without Hono (cluster/post_fast_path.ts),
 * only without client tokens (every caller then may lock the section, and the bearer middleware
 * has nothing to check). The handler gets the request as serveRoutes makes it: the body, the
 * request's signal (a long-poll ends when the caller goes away) and format header; no path
 * parameters, no peer sender; `may` absent (all allowed).
 */
function installRingFastPath(app: Hono, routes: readonly RingRoute[], onInternal: (error: Error) => void, auth: ClientAuth): void {
  const fast = new Map<string, FastRoute>();
  for (const route of routes) {
    if (route.method !== "POST" || !RING_FAST_PATHS.includes(route.path)) continue;
    fast.set(route.path, {
      bytesMax: route.bodyBytesMax,
      handle: (body, raw, reply) => {
        const request: RingRequest = {
          body,
          // Enter and leave read no query; parsed only if asked, as URLSearchParams does (Hono's too: `+` a space).
          query: (name) => new URL(raw.url).searchParams.get(name) ?? undefined,
          param: () => undefined,
          signal: raw.signal,
          format: raw.headers.get(FORMAT_HEADER) ?? undefined,
        };
        route.handle(request, reply);
      },
    });
  }
  installPostFastPath(app, fast, (error) => errorAnswer(error, onInternal), auth);
}

/**
 * Serves `routes` on `app` (whose error handler answers what a handler throws). A route's
 * `access` is required of the caller's token (`auth`, whose middleware `app` runs first).
 */
export function serveRoutes(app: Hono, routes: readonly RingRoute[], auth: ClientAuth): void {
  for (const route of routes) {
    // An unchecked route is one the middleware lets through without a token: nothing else may be.
    if (route.access === "unchecked" && !isUncheckedPath(route.path)) throw new Error(`route ${route.path} would be served without client authentication`);
    const access = route.access;
    app.on(route.method, route.path, async (c: Context) => {
      const body = route.method === "POST" ? await readJsonObject(c, route.bodyBytesMax) : {};
      const request: RingRequest = {
        body,
        query: (name) => c.req.query(name),
        param: (name) => c.req.param(name),
        signal: c.req.raw.signal,
        may: (wanted) => auth.may(c, wanted),
        sender: authenticatedSender(c),
        format: c.req.header(FORMAT_HEADER),
      };
      if (access !== "unchecked") auth.require(c, access(request));
      // What the handler throws rejects this promise: the app's error handler answers it.
      const answer = await new Promise<RingAnswer>((resolve) => route.handle(request, resolve));
      return c.json(answer.body, answer.status as ContentfulStatusCode);
    });
  }
}

function queryInteger(request: RingRequest, name: string, fallback: number): number {
  const text = request.query(name);
  if (text === undefined) return fallback;
  if (!/^\d{1,15}$/.test(text)) throw new RequestError("bad_request", `query parameter ${name} must be a non-negative integer`);
  return Number(text);
}

function queryFlag(request: RingRequest, name: string): boolean {
  const text = request.query(name);
  if (text === undefined || text === "0" || text === "false") return false;
  if (text === "" || text === "1" || text === "true") return true;
  throw new RequestError("bad_request", `query parameter ${name} must be 1 or 0`);
}
