/**
 * The lock server's HTTP API (`/v1`, JSON): the Hono app. Handlers only decode, call the service,
 * and encode; the client routes that change state are in api_routes.ts (answered without Hono by
 * api_fast_path.ts when there are no client tokens), the answers and errors in api_answers.ts, the
 * peer route in api_peer.ts. See docs/http-api.md.
 */
import { Hono } from "hono";
import { errorResponse, installErrorHandlers, readBodyText, readJsonObject, RequestError } from "../http_util.ts";
import type { LockService } from "./service.ts";
import type { StatusView } from "./status_view.ts";
import { PEER_CONTENT_TYPE } from "../peer_transport.ts";
import { STREAM_PATH } from "../peer_stream.ts";
import type { LoopStallView } from "../stall_monitor.ts";
import { ClientAuth } from "../client_auth.ts";
import { authenticatedSender } from "../peer_auth.ts";
import { answerFormatMiddleware, peerFormatMiddleware } from "../format_version.ts";
import { FORMATS } from "../../lib/wire/version.ts";
import { callerOf } from "../caller.ts";
import { VERSION } from "../version.ts";
import { type ApiAnswer, errorAnswer, NotPrimaryError } from "./api_answers.ts";
import { lockRoutes, runRoute } from "./api_routes.ts";
import { installFastPath } from "./api_fast_path.ts";
import { answerPeer } from "./api_peer.ts";
import type { LockApiOptions } from "./api_options.ts";

/** The answer of `GET /v1/status`: `mutexd status` reads it with this type. */
/** `security`: refusals by reason since the process started (cluster/security_log.ts). */
/**
 * `node.role` is the role the server has now (after a failover the backup of the cluster file
 * is the primary); `node.configuredRole` is the cluster file's.
 */
export type LockStatus = { node: { id: string; role: string; configuredRole: string; version: string; formats: typeof FORMATS }; security: Record<string, number> } & StatusView & Partial<LoopStallView>;

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

  if (!auth.enabled) installFastPath(app, routes, options, auth);
  return app;
}
