/**
 * The ring node's HTTP API. Clients: `/v1/ring/{enter,leave,put,delete,get,keys,status,section}`.
 * Neighbours: `/v1/ring/peer/{token,writes,log,probe,prepare,wake}`. Handlers decode, call the
 * service and encode; the protocol lives in lib/core/ring_node.ts. See docs/ring.md.
 */
import { Hono, type Context } from "hono";
import type { ClientReply, RingResult } from "../../lib/core/ring_node.ts";
import type { RingEntry, RingOp, RingToken } from "../../lib/core/ring_types.ts";
import type { Settings } from "../../lib/settings.ts";
import { errorResponse, field, installErrorHandlers, onlyFields, readJsonObject, RequestError } from "../http_util.ts";
import type { RingService } from "./service.ts";

export interface RingApiOptions {
  nodeId: string;
  settings: Settings;
  /** Extra fields for status (e.g. the URLs of the neighbours). */
  describe?: () => Record<string, unknown>;
  onInternalError?: (error: Error) => void;
}

/** Unwraps a client reply: errors become their HTTP answer. */
function okReply(reply: ClientReply): Extract<ClientReply, { ok: true }> {
  if (!reply.ok) throw new RequestError(reply.error.code, reply.error.message);
  return reply;
}

/** A peer's protocol answer: bad requests become 400, everything else is a 200 with the result. */
function peerAnswer(c: Context, result: RingResult): Response {
  if (!result.ok && result.type === "error") return errorResponse(c, result.error);
  return c.json(result);
}

export function createRingApp(service: RingService, options: RingApiOptions): Hono {
  const { settings } = options;
  const app = new Hono();
  installErrorHandlers(app, options.onInternalError ?? (() => {}));
  const body = (c: Context) => readJsonObject(c, settings.bodyBytesMax);
  // A peer request carries up to ringBatchWritesMax writes of the largest size.
  const peerBytesMax = settings.ringBatchWritesMax * (settings.ringValueBytesMax + 4 * settings.ringKeyLengthMax + 512) +
    settings.bodyBytesMax;
  const peerBody = (c: Context) => readJsonObject(c, peerBytesMax);
  const node = service.node;

  app.get("/v1/health", (c) => c.json({ ok: true, id: options.nodeId, role: "ring" }));

  app.get("/v1/ring/status", (c) =>
    c.json({
      ...node.status(service.now()),
      linkQueue: service.linkLength,
      suspicions: service.suspicions(),
      ...(options.describe?.() ?? {}),
    }));

  // Enter: granted now, at the token's visit, or "waiting" after a long-poll (ask again with the
  // ticket to keep the place). waitMs = 0 tries: it waits for the next visit only if nobody is
  // ahead. The lease bounds the section; the server revokes it at the end.
  app.post("/v1/ring/enter", async (c) => {
    const input = await body(c);
    onlyFields(input, ["waitMs", "leaseMs", "ticket"]);
    const waitMs = field.integer(input, "waitMs", 0);
    const leaseMs = field.integer(input, "leaseMs", settings.ringLeaseMs);
    const ticket = field.optionalString(input, "ticket");
    const reply = okReply(await service.enter({ waitMs, leaseMs, ticket }, c.req.raw.signal));
    if (reply.type === "granted") {
      return c.json({ granted: true, fence: reply.fence, leaseMs: reply.leaseMs, epoch: reply.epoch, ticket: reply.ticket });
    }
    if (reply.type === "waiting") return c.json({ granted: false, waiting: true, ticket: reply.ticket, position: reply.position });
    if (reply.type === "notGranted") return c.json({ granted: false, waiting: false, reason: reply.reason });
    throw new Error(`unexpected reply ${reply.type}`);
  });

  // Leave: the holder with its fence; a waiter with its ticket withdraws.
  app.post("/v1/ring/leave", async (c) => {
    const input = await body(c);
    onlyFields(input, ["fence", "ticket"]);
    const fence = field.optionalInteger(input, "fence");
    const ticket = field.optionalString(input, "ticket");
    if ((fence === undefined) === (ticket === undefined)) throw new RequestError("bad_request", "give exactly one of fence, ticket");
    const reply = okReply(await service.submit({ type: "leave", fence, ticket }));
    if (reply.type !== "left") throw new Error(`unexpected reply ${reply.type}`);
    return c.json({ left: true, wasHolder: reply.wasHolder });
  });

  // Is section `fence` still running? Long-polls up to waitMs (≤ longPollMaxMs) for its end.
  app.get("/v1/ring/section/:fence{[0-9]+}", async (c) => {
    const fence = Number(c.req.param("fence"));
    const waitMs = Math.min(queryInteger(c, "waitMs", 0), settings.longPollMaxMs);
    const active = await service.watchSection(fence, waitMs);
    return c.json({ fence, active });
  });

  const writeRoute = (type: RingOp["type"]) => async (c: Context) => {
    const input = await body(c);
    onlyFields(input, type === "put" ? ["fence", "key", "value"] : ["fence", "key"]);
    const fence = field.integer(input, "fence");
    const key = field.string(input, "key");
    let op: RingOp;
    if (type === "put") {
      if (typeof input.value !== "string") throw new RequestError("bad_request", "value must be a string");
      op = { type, key, value: input.value };
    } else {
      op = { type, key };
    }
    const reply = okReply(await service.submit({ type: "write", fence, op }));
    if (reply.type !== "written") throw new Error(`unexpected reply ${reply.type}`);
    return c.json({ written: true, key, wseq: reply.wseq });
  };
  app.post("/v1/ring/put", writeRoute("put"));
  app.post("/v1/ring/delete", writeRoute("delete"));

  // Reads: committed data (every node has it, it went around the ring); ?dirty=1 adds writes
  // still travelling. At the holder inside a section, committed reads are linearizable.
  app.get("/v1/ring/get", (c) => {
    const key = c.req.query("key");
    if (!key) throw new RequestError("bad_request", "query parameter key is required");
    const dirty = queryFlag(c, "dirty");
    const value = node.read(key, dirty);
    if (value === undefined) {
      throw new RequestError("key_not_found", `no key ${JSON.stringify(key)} in the ${dirty ? "dirty" : "committed"} view`);
    }
    return c.json({ key, value, dirty, commit: node.replica.commit });
  });

  app.get("/v1/ring/keys", (c) => {
    const dirty = queryFlag(c, "dirty");
    return c.json({ keys: node.keys(dirty), dirty, commit: node.replica.commit });
  });

  // The write log from `from` on (committed and pending, with epochs): neighbours catch up from
  // it, operators and tests compare it between nodes.
  app.get("/v1/ring/log", (c) => c.json(node.catchUp(queryInteger(c, "from", 1))));

  // ---- Peer endpoints ----

  app.post("/v1/ring/peer/token", async (c) => {
    const input = await peerBody(c);
    onlyFields(input, ["from", "token"]);
    const from = field.string(input, "from");
    const token = parseToken(input.token);
    return peerAnswer(c, service.stepPeer({ type: "token", from, token }));
  });

  app.post("/v1/ring/peer/writes", async (c) => {
    const input = await peerBody(c);
    onlyFields(input, ["from", "epoch", "entries"]);
    const from = field.string(input, "from");
    const epoch = nonNegative(input, "epoch");
    if (!Array.isArray(input.entries) || input.entries.length > settings.ringBatchWritesMax) {
      throw new RequestError("bad_request", `entries must be an array of at most ${settings.ringBatchWritesMax} writes`);
    }
    const entries = input.entries.map((raw, i) => parseEntry(raw, i, epoch, settings));
    for (let i = 1; i < entries.length; i++) {
      if (entries[i].wseq !== entries[i - 1].wseq + 1) throw new RequestError("bad_request", "entries must be consecutive");
    }
    return peerAnswer(c, service.stepPeer({ type: "writes", from, epoch, entries }));
  });

  app.get("/v1/ring/peer/log", (c) => c.json(node.catchUp(queryInteger(c, "from", 1))));

  app.get("/v1/ring/peer/probe", (c) => c.json(node.probe(service.now())));

  app.post("/v1/ring/peer/prepare", async (c) => {
    const input = await body(c);
    onlyFields(input, ["from", "epoch"]);
    const from = field.string(input, "from");
    const epoch = nonNegative(input, "epoch");
    return peerAnswer(c, service.stepPeer({ type: "prepare", from, epoch }));
  });

  app.post("/v1/ring/peer/wake", async (c) => {
    const input = await body(c);
    onlyFields(input, ["from"]);
    field.string(input, "from");
    return peerAnswer(c, service.stepPeer({ type: "wake" }));
  });

  return app;
}

function queryInteger(c: Context, name: string, fallback: number): number {
  const text = c.req.query(name);
  if (text === undefined) return fallback;
  if (!/^\d{1,15}$/.test(text)) throw new RequestError("bad_request", `query parameter ${name} must be a non-negative integer`);
  return Number(text);
}

function queryFlag(c: Context, name: string): boolean {
  const text = c.req.query(name);
  if (text === undefined || text === "0" || text === "false") return false;
  if (text === "" || text === "1" || text === "true") return true;
  throw new RequestError("bad_request", `query parameter ${name} must be 1 or 0`);
}

function nonNegative(body: Record<string, unknown>, key: string): number {
  const value = field.integer(body, key);
  if (value < 0) throw new RequestError("bad_request", `${key} must not be negative`);
  return value;
}

function parseToken(raw: unknown): RingToken {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new RequestError("bad_request", "token must be an object");
  const token = raw as Record<string, unknown>;
  const keys = ["epoch", "hop", "wseq", "commit", "fence", "idleHops"] as const;
  onlyFields(token, keys);
  const [epoch, hop, wseq, commit, fence, idleHops] = keys.map((key) => nonNegative(token, key));
  if (commit > wseq) throw new RequestError("bad_request", "token commit must not exceed wseq");
  return { epoch, hop, wseq, commit, fence, idleHops };
}

function parseEntry(raw: unknown, index: number, epoch: number, settings: Settings): RingEntry {
  const where = `entries[${index}]`;
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new RequestError("bad_request", `${where} must be an object`);
  const entry = raw as Record<string, unknown>;
  onlyFields(entry, ["epoch", "wseq", "author", "origin", "op"]);
  const stamped = nonNegative(entry, "epoch");
  if (stamped > epoch) throw new RequestError("bad_request", `${where}.epoch is above the message's epoch`);
  const wseq = nonNegative(entry, "wseq");
  if (wseq < 1) throw new RequestError("bad_request", `${where}.wseq must be at least 1`);
  const author = field.string(entry, "author");
  const origin = field.string(entry, "origin");
  const op = entry.op as Record<string, unknown> | null;
  if (typeof op !== "object" || op === null) throw new RequestError("bad_request", `${where}.op must be an object`);
  const key = op.key;
  if (typeof key !== "string" || key.length === 0 || key.length > settings.ringKeyLengthMax) {
    throw new RequestError("bad_request", `${where}.op.key must be a string of 1..${settings.ringKeyLengthMax} characters`);
  }
  if (op.type === "put" && typeof op.value === "string") return { epoch: stamped, wseq, author, origin, op: { type: "put", key, value: op.value } };
  if (op.type === "delete") return { epoch: stamped, wseq, author, origin, op: { type: "delete", key } };
  throw new RequestError("bad_request", `${where}.op must be a put with a string value or a delete`);
}
