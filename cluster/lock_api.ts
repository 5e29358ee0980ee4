/**
 * The lock server's HTTP API (`/v1`, JSON). Handlers only decode, call the service, and encode;
 * the lock semantics live in lib/core/lock_table.ts, the enter long-poll in lock_service.ts. See
 * docs/http-api.md.
 */
import { Hono, type Context } from "hono";
import type { ClientAnswer, PeerMessage } from "../lib/core/lock_replica.ts";
import type { Command } from "../lib/core/lock_table.ts";
import type { Settings } from "../lib/settings.ts";
import { errorResponse, field, installErrorHandlers, onlyFields, readJsonObject, readPeerBody, RequestError } from "./http_util.ts";
import type { LockService, StatusView } from "./lock_service.ts";
import { encodePeerBody, PEER_CONTENT_TYPE } from "./peer_transport.ts";
import { apiError } from "../lib/wire/errors.ts";

export interface LockApiOptions {
  nodeId: string;
  role: string;
  settings: Settings;
  /** Base URL of a cluster member, for "not primary" hints. */
  urlOf?: (id: string) => string | undefined;
  onInternalError?: (error: Error) => void;
}

/** The answer of `GET /v1/status`: `mutexd status` reads it with this type. */
export type LockStatus = { node: { id: string; role: string } } & StatusView;

/** A "not primary" refusal: the client moves to the hinted server and retries. */
class NotPrimaryError extends RequestError {
  constructor(readonly answer: Extract<ClientAnswer, { code: "not_primary" }>) {
    super("not_primary", answer.message);
  }
}

export function createLockApp(service: LockService, options: LockApiOptions): Hono {
  const { settings } = options;
  const app = new Hono();
  installErrorHandlers(app, options.onInternalError ?? (() => {}), (error, c) => {
    if (!(error instanceof NotPrimaryError)) return undefined;
    const { epoch, primary } = error.answer;
    const hint = { epoch, primary, primaryUrl: primary ? options.urlOf?.(primary) : undefined };
    return c.json({ error: { ...apiError("not_primary", error.message).error, ...hint } }, 421);
  });
  const body = (c: Context) => readJsonObject(c, settings.bodyBytesMax);

  /** Submits a command and unwraps the committed answer. */
  async function submit(command: Command, requestId?: string) {
    return unwrap(await service.submit(command, requestId));
  }

  app.get("/v1/health", (c) => c.json({ ok: true, id: options.nodeId, role: options.role }));

  app.get("/v1/status", (c) => c.json({ node: { id: options.nodeId, role: options.role }, ...service.view() } satisfies LockStatus));

  app.post("/v1/sessions", async (c) => {
    const input = await body(c);
    onlyFields(input, ["ttlMs", "requestId"]);
    const ttlMs = field.integer(input, "ttlMs", settings.sessionTtlMs);
    const result = await submit({ type: "openSession", ttlMs }, field.optionalString(input, "requestId"));
    if (result.type !== "session") throw new Error(`unexpected result ${result.type}`);
    // longPollMaxMs tells the client how long a waiting enter may be held, so it can time out a
    // lost answer soon after that instead of after its whole wait.
    return c.json({ session: result.session, ttlMs: result.ttlMs, longPollMaxMs: settings.longPollMaxMs }, 201);
  });

  app.get("/v1/sessions", (c) => c.json({ sessions: service.view().sessions }));

  app.post("/v1/sessions/:id/keepalive", async (c) => {
    onlyFields(await body(c), []);
    const result = await submit({ type: "keepAlive", session: c.req.param("id") });
    if (result.type !== "session") throw new Error(`unexpected result ${result.type}`);
    return c.json({ session: result.session, ttlMs: result.ttlMs });
  });

  app.delete("/v1/sessions/:id", async (c) => {
    const input = await body(c);
    onlyFields(input, ["requestId"]);
    const result = await submit({ type: "closeSession", session: c.req.param("id") }, field.optionalString(input, "requestId"));
    if (result.type !== "closed") throw new Error(`unexpected result ${result.type}`);
    return c.json({ session: result.session, released: result.released });
  });

  // mutex_enter (LockService.enter: grant now, long-poll, or not granted); waitMs = 0 is a try-lock.
  app.post("/v1/enter", async (c) => {
    const input = await body(c);
    onlyFields(input, ["name", "session", "mode", "waitMs", "lockDelayMs"]);
    const name = field.string(input, "name");
    const session = field.string(input, "session");
    const mode = field.oneOf(input, "mode", ["exclusive", "shared"] as const, "exclusive");
    const waitMs = field.integer(input, "waitMs", 0);
    const lockDelayMs = field.integer(input, "lockDelayMs", 0);
    const result = unwrap(await service.enter({ type: "enter", name, session, mode, waitMs, lockDelayMs }));
    if (result.type === "granted") return c.json({ granted: true, ...result.grant });
    if (result.type === "notGranted") return c.json({ granted: false, waiting: false, name, position: result.position });
    if (result.type === "waiting") return c.json({ granted: false, waiting: true, name, position: result.position });
    throw new Error(`unexpected result ${result.type}`);
  });

  // mutex_leave: by the holder with its token; a waiter without a token withdraws its request.
  app.post("/v1/leave", async (c) => {
    const input = await body(c);
    onlyFields(input, ["name", "session", "token", "requestId"]);
    const name = field.string(input, "name");
    const session = field.string(input, "session");
    const token = field.optionalInteger(input, "token");
    const result = await submit({ type: "leave", name, session, token }, field.optionalString(input, "requestId"));
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

  // Replication and sync between the two lock servers (superjson). The core checks the sender
  // and the epoch; here only the shape is checked, so a malformed message changes nothing.
  app.post("/v1/peer", async (c) => {
    const message = await readPeerBody(c, settings.peerBodyBytesMax);
    if (!isPeerRequest(message)) throw new RequestError("bad_request", "not a peer request (append or syncRequest)");
    const answer = service.peerMessage(message);
    return c.body(encodePeerBody(answer), 200, { "content-type": PEER_CONTENT_TYPE });
  });

  return app;
}

/** The result of a committed answer; refusals become their HTTP answer. */
function unwrap(answer: ClientAnswer) {
  if (answer.ok) return answer.result;
  if (answer.code === "not_primary") throw new NotPrimaryError(answer);
  throw new RequestError(answer.code, answer.message);
}

function isPeerRequest(message: Record<string, unknown>): message is PeerMessage {
  if (typeof message.from !== "string" || !Number.isSafeInteger(message.epoch)) return false;
  if (message.type === "syncRequest") return true;
  return message.type === "append" && Number.isSafeInteger(message.syncGen) && Array.isArray(message.entries);
}
