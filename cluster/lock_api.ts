/**
 * The lock server's HTTP API (`/v1`, JSON). Handlers only decode, call the service, and encode;
 * the lock semantics live in lib/core/lock_table.ts. See docs/http-api.md.
 */
import { Hono, type Context } from "hono";
import type { Output } from "../lib/core/lock_table.ts";
import type { Settings } from "../lib/settings.ts";
import { errorResponse, field, installErrorHandlers, onlyFields, readJsonObject, RequestError } from "./http_util.ts";
import type { LockService } from "./lock_service.ts";

export interface LockApiOptions {
  nodeId: string;
  role: string;
  settings: Settings;
  onInternalError?: (error: Error) => void;
}

/** Unwraps a core result: errors become their HTTP answer via RequestError. */
function okResult(output: Output): Extract<Output["result"], { ok: true }> {
  const result = output.result;
  if (!result.ok) throw new RequestError(result.error.code, result.error.message);
  return result;
}

export function createLockApp(service: LockService, options: LockApiOptions): Hono {
  const { settings } = options;
  const app = new Hono();
  installErrorHandlers(app, options.onInternalError ?? (() => {}));
  const body = (c: Context) => readJsonObject(c, settings.bodyBytesMax);

  app.get("/v1/health", (c) => c.json({ ok: true, id: options.nodeId, role: options.role }));

  app.get("/v1/status", (c) => c.json({ node: { id: options.nodeId, role: options.role }, ...service.view() }));

  app.post("/v1/sessions", async (c) => {
    const input = await body(c);
    onlyFields(input, ["ttlMs"]);
    const result = okResult(service.submit({ type: "openSession", ttlMs: field.integer(input, "ttlMs", settings.sessionTtlMs) }));
    if (result.type !== "session") throw new Error(`unexpected result ${result.type}`);
    return c.json({ session: result.session, ttlMs: result.ttlMs }, 201);
  });

  app.get("/v1/sessions", (c) => c.json({ sessions: service.view().sessions }));

  app.post("/v1/sessions/:id/keepalive", async (c) => {
    onlyFields(await body(c), []);
    const result = okResult(service.submit({ type: "keepAlive", session: c.req.param("id") }));
    if (result.type !== "session") throw new Error(`unexpected result ${result.type}`);
    return c.json({ session: result.session, ttlMs: result.ttlMs });
  });

  app.delete("/v1/sessions/:id", (c) => {
    const result = okResult(service.submit({ type: "closeSession", session: c.req.param("id") }));
    if (result.type !== "closed") throw new Error(`unexpected result ${result.type}`);
    return c.json({ session: result.session, released: result.released });
  });

  // mutex_enter: grant now, wait (long-poll of at most longPollMaxMs; the client asks again to
  // keep its place), or answer "not granted" with the queue position. waitMs = 0 is a try-lock.
  app.post("/v1/enter", async (c) => {
    const input = await body(c);
    onlyFields(input, ["name", "session", "mode", "waitMs", "lockDelayMs"]);
    const name = field.string(input, "name");
    const session = field.string(input, "session");
    const mode = field.oneOf(input, "mode", ["exclusive", "shared"] as const, "exclusive");
    const waitMs = field.integer(input, "waitMs", 0);
    const lockDelayMs = field.integer(input, "lockDelayMs", 0);
    const result = okResult(service.submit({ type: "enter", name, session, mode, waitMs, lockDelayMs }));
    if (result.type === "granted") return c.json({ granted: true, ...result.grant });
    if (result.type === "notGranted") return c.json({ granted: false, waiting: false, name, position: result.position });
    if (result.type !== "waiting") throw new Error(`unexpected result ${result.type}`);
    await service.waitForTurn(name, session, Math.min(waitMs, settings.longPollMaxMs));
    const token = service.holderToken(name, session);
    if (token !== undefined) return c.json({ granted: true, name, session, token, mode });
    const position = service.queuePosition(name, session);
    if (position !== undefined) return c.json({ granted: false, waiting: true, name, position });
    if (!service.table.sessions.has(session)) {
      return errorResponse(c, { code: "session_not_found", message: `session ${session} expired while waiting` });
    }
    return c.json({ granted: false, waiting: false, name, position: 0 });
  });

  // mutex_leave: by the holder with its token; a waiter without a token withdraws its request.
  app.post("/v1/leave", async (c) => {
    const input = await body(c);
    onlyFields(input, ["name", "session", "token"]);
    const name = field.string(input, "name");
    const session = field.string(input, "session");
    const token = field.optionalInteger(input, "token");
    const result = okResult(service.submit({ type: "leave", name, session, token }));
    if (result.type !== "left") throw new Error(`unexpected result ${result.type}`);
    return c.json({ left: true, name, wasHolder: result.wasHolder });
  });

  app.get("/v1/locks", (c) => c.json({ locks: service.view().locks }));

  app.get("/v1/locks/:name{.+}", (c) => {
    const name = c.req.param("name");
    const lock = service.view().locks.find((l) => l.name === name);
    if (!lock) return errorResponse(c, { code: "lock_not_found", message: `lock ${name} is not held or waited for` });
    return c.json(lock);
  });

  return app;
}
