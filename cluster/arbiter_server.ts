/**
 * Starts the arbiter: the pure decision core (lib/core/arbiter.ts) behind `POST /v1/arbiter`,
 * with its epoch record written durably before any answer that depends on it.
 */
import { Hono } from "hono";
import { ArbiterCore, type ArbiterRequest, type ArbiterState } from "../lib/core/arbiter.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import type { ClusterConfig, NodeConfig } from "./config.ts";
import { monotonicClock } from "./clock.ts";
import { readIfExists, writeDurably } from "./durable_file.ts";
import { installErrorHandlers, readPeerBody, RequestError } from "./http_util.ts";
import type { Logger } from "./log.ts";
import { encodePeerBody, PEER_CONTENT_TYPE } from "./peer_transport.ts";
import { serveHttp } from "./runtime.ts";
import type { RunningNode } from "./running_node.ts";

/** Reads the persisted arbiter state; a corrupt file stops the arbiter rather than reset epochs. */
export function loadArbiterState(file: string): ArbiterState | null {
  const text = readIfExists(file);
  if (text === undefined) return null;
  const state = JSON.parse(text) as ArbiterState;
  if (!Number.isSafeInteger(state.epoch) || state.epoch < 0 || typeof state.backupInSync !== "boolean") {
    throw new Error(`${file}: not an arbiter state`);
  }
  return state;
}

/** The answer of `GET /v1/status`: `mutexd status` reads it with this type. */
export interface ArbiterStatus {
  node: { id: string; role: "arbiter" };
  arbiter: ArbiterState & { leaseRemainingMs: number };
}

export function createArbiterApp(
  core: ArbiterCore,
  options: { nodeId: string; statePath: string; log: Logger; nowMs: () => number; bodyBytesMax?: number },
): Hono {
  // An arbiter request is a few fields: the general request limit is ample.
  const bodyBytesMax = options.bodyBytesMax ?? DEFAULT_SETTINGS.bodyBytesMax;
  const app = new Hono();
  installErrorHandlers(app, (error) => options.log.event("internalError", { message: error.message }));
  app.get("/v1/health", (c) => c.json({ ok: true, id: options.nodeId, role: "arbiter" }));
  app.get("/v1/status", (c) =>
    c.json({
      node: { id: options.nodeId, role: "arbiter" },
      arbiter: { ...core.current, leaseRemainingMs: core.leaseRemainingMs(options.nowMs()) },
    } satisfies ArbiterStatus));
  app.post("/v1/arbiter", async (c) => {
    const request = await readPeerBody(c, bodyBytesMax);
    if (!isArbiterRequest(request)) throw new RequestError("bad_request", "not an arbiter request");
    const before = core.current.epoch;
    const { reply, persist } = core.step(request, options.nowMs());
    // Durable before the answer: a restarted arbiter never hands out an epoch twice.
    if (persist) writeDurably(options.statePath, JSON.stringify(persist));
    if (core.current.epoch !== before) options.log.event("epoch", { ...core.current });
    return c.body(encodePeerBody(reply), 200, { "content-type": PEER_CONTENT_TYPE });
  });
  return app;
}

function isArbiterRequest(value: Record<string, unknown>): value is ArbiterRequest {
  if (typeof value.from !== "string") return false;
  if (value.type === "whois") return true;
  if (!Number.isSafeInteger(value.epoch)) return false;
  if (value.type === "renew") return typeof value.backupInSync === "boolean" && Number.isSafeInteger(value.seq);
  return value.type === "claim" && typeof value.hasState === "boolean";
}

export async function startArbiter(cluster: ClusterConfig, node: NodeConfig, log: Logger): Promise<RunningNode> {
  const primary = cluster.nodes.find((n) => n.role === "primary");
  const backup = cluster.nodes.find((n) => n.role === "backup");
  const statePath = `${node.dataDir}/arbiter.json`;
  const restored = loadArbiterState(statePath);
  const core = new ArbiterCore({
    primaryId: primary?.id ?? "", // a ring-only cluster has no lock servers to arbitrate
    backupId: backup?.id ?? null,
    leaseMs: cluster.settings.primaryLeaseMs,
    bootstrapWaitMs: cluster.settings.bootstrapWaitMs,
  }, restored, monotonicClock.nowMs());
  log.event("restored", { statePath, state: restored });
  const app = createArbiterApp(core, {
    nodeId: node.id,
    statePath,
    log,
    nowMs: monotonicClock.nowMs,
    bodyBytesMax: cluster.settings.bodyBytesMax,
  });
  const server = await serveHttp(app.fetch, { hostname: node.host, port: node.port });
  return { url: `http://${node.host}:${server.port}`, stop: () => server.close() };
}
