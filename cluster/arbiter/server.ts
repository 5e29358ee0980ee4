/**
 * Starts the arbiter: the pure decision core (lib/core/arbiter/arbiter.ts) behind `POST /v1/arbiter`,
 * with its epoch record written durably before any answer that depends on it. The request
 * handling (`answerArbiter`) takes its runtime as ports (store, clock, log), so the simulator
 * runs it as it is. In a cluster with ring nodes it also runs the ring's view-change coordinator
 * (ring_coordinator.ts) on the real ports, behind the ring's own `POST /v1/ring/peer/view` route.
 */
import process from "node:process";
import { Hono, type MiddlewareHandler } from "hono";
import { ArbiterCore, type ArbiterRequest, type ArbiterState, type ArbiterStep } from "../../lib/core/arbiter/arbiter.ts";
import { DEFAULT_SETTINGS } from "../../lib/settings.ts";
import type { ClusterConfig, NodeConfig } from "../config.ts";
import { type Clock, monotonicClock } from "../clock.ts";
import { failStopOnBug, failStopProcess } from "../fail_stop.ts";
import { readIfExists, writeDurably } from "../durable_file.ts";
import { installErrorHandlers, readBodyText, readPeerRequest, RequestError } from "../http_util.ts";
import { SecurityLog } from "../security_log.ts";
import { serveRoutes, viewRoute } from "../ring/api.ts";
import { arbiterRequestSchema } from "../../lib/wire/lock_peer.ts";
import { check } from "../../lib/wire/schema.ts";
import { httpPeers } from "../ring/http_peers.ts";
import { realTimers } from "../timers.ts";
import { RingCoordinator } from "./ring_coordinator.ts";
import { nodeUrl, readNodeTls } from "../config.ts";
import type { Logger } from "../log.ts";
import { encodePeerBody, PEER_CONTENT_TYPE } from "../peer_transport.ts";
import { fetchFor, serveHttp } from "../runtime.ts";
import type { RunningNode } from "../running_node.ts";
import { type Access, ClientAuth } from "../client_auth.ts";
import { dashboardOf } from "../dashboard/routes.ts";
import { nodeInstruments } from "../metrics.ts";
import { type AuthenticatedSender, authenticatedSender, type PeerFetch, startPeerAuth } from "../peer_auth.ts";
import { answerFormatMiddleware, checkFileFormat, FILE_FORMAT, peerFormatMiddleware } from "../format_version.ts";
import { FORMATS } from "../../lib/wire/version.ts";
import { VERSION } from "../version.ts";

/** Reads the persisted arbiter state; a corrupt file stops the arbiter rather than reset epochs. */
export function loadArbiterState(file: string): ArbiterState | null {
  const text = readIfExists(file);
  if (text === undefined) return null;
  return parseArbiterState(text, file);
}

function parseArbiterState(text: string, where: string): ArbiterState {
  const { format, ...state } = JSON.parse(text) as ArbiterState & { format?: unknown };
  // A record of another major disk format (copied from another build's dataDir): exit 2, naming it.
  checkFileFormat(where, format);
  // Records from before backupIncarnation, ttlMaxMs and tokenCeiling lack them (the core reads them as unknown).
  const counts = [state.ttlMaxMs, state.tokenCeiling, state.behindEpoch].every((v) => v == null || (Number.isSafeInteger(v) && v >= 0));
  if (!Number.isSafeInteger(state.epoch) || state.epoch < 0 || typeof state.backupInSync !== "boolean" || !counts) {
    throw new Error(`${where}: not an arbiter state`);
  }
  return state;
}

/** Where the arbiter's epoch record lives. `save` returns once the record is durable. */
export interface ArbiterStore {
  load(): ArbiterState | null;
  save(state: ArbiterState): void;
}

/** The text of the record `state` in arbiter.json: the state and this build's disk format. */
export function encodeArbiterState(state: ArbiterState): string {
  return JSON.stringify({ format: FILE_FORMAT, ...state });
}

/** The record in `file` (arbiter.json), replaced whole and fsynced (durable_file.ts). */
export function fileArbiterStore(file: string): ArbiterStore {
  return {
    load: () => loadArbiterState(file),
    save: (state) => writeDurably(file, encodeArbiterState(state)),
  };
}

/** The arbiter's runtime: its durable record, its clock, its log (the simulator passes its own). */
export interface ArbiterPorts {
  store: ArbiterStore;
  clock: Clock;
  log: Logger;
  /** A decision could not be made durable: stop without answering (the process exits). */
  failStop(reason: string, fields: Record<string, unknown>): never;
  /** Where refused requests are counted and logged (status `security`); absent: not counted. */
  security?: SecurityLog;
}

export type ArbiterSettings = ConstructorParameters<typeof ArbiterCore>[0];

/** The core from the stored record (none: a first start), as a restart does it; `about` goes in the log line. */
export function restoreArbiter(settings: ArbiterSettings, ports: ArbiterPorts, about: Record<string, unknown> = {}): ArbiterCore {
  const restored = ports.store.load();
  ports.log.event("restored", { ...about, state: restored });
  return new ArbiterCore(settings, restored, ports.clock.nowMs());
}

/**
 * `POST /v1/arbiter` on the body's text: decode and check the request, one step of the core,
 * the new record durable BEFORE the answer exists (a restarted arbiter never hands out an epoch
 * twice), the answer encoded. A malformed request, or one whose `from` is not its authenticated
 * `sender`, throws a RequestError and changes nothing.
 */
export function answerArbiter(
  core: ArbiterCore,
  text: string,
  ports: ArbiterPorts,
  bodyBytesMax = DEFAULT_SETTINGS.bodyBytesMax,
  sender?: AuthenticatedSender,
): { request: ArbiterRequest; step: ArbiterStep; body: string } {
  let request: ArbiterRequest;
  try {
    request = readPeerRequest(text, bodyBytesMax, (value) => check(arbiterRequestSchema, value, "arbiter request"));
  } catch (error) {
    if (error instanceof RequestError) ports.security?.refused("arbiterMalformed", sender?.id ?? "peer", { message: error.message });
    throw error;
  }
  // Who sent it, as its MAC says (peer_auth.ts; the simulator's trusted network passes none).
  sender?.check(request.from);
  const before = core.current.epoch;
  const step = core.step(request, ports.clock.nowMs());
  if (step.persist) {
    // The core already decided in memory; an answer from that memory would outlive a restart
    // that reads the older record (a second primary, an epoch handed out twice). So no answer:
    // the process stops, and a restart starts from what is on disk.
    try {
      ports.store.save(step.persist);
    } catch (error) {
      ports.failStop("the arbiter's record could not be written", { error: (error as Error).message, state: step.persist });
    }
  }
  if (core.current.epoch !== before) ports.log.event("epoch", { ...core.current });
  return { request, step, body: encodePeerBody(step.reply) };
}

/** The answer of `GET /v1/status`: `mutexd status` reads it with this type. */
export interface ArbiterStatus {
  node: { id: string; role: "arbiter"; version: string; formats: typeof FORMATS };
  /** Refused requests by reason (security_log.ts). */
  security: Record<string, number>;
  arbiter: ArbiterState & { leaseRemainingMs: number };
}

/** The arbiter's status and ring coordinator show epochs and ids, no lock names: `read` on any name. */
export const ARBITER_STATUS_ACCESS: Access = { level: "read", on: "some" };

export function createArbiterApp(
  core: ArbiterCore,
  options: {
    nodeId: string;
    /** The process id, in /v1/health (`mutexd up` checks it is the process it started). */
    pid?: number;
    statePath: string;
    log: Logger;
    nowMs: () => number;
    bodyBytesMax?: number;
    failStop?: ArbiterPorts["failStop"];
    /** Client bearer tokens for the status routes (`/v1/arbiter` is the peers'). Default: open. */
    auth?: ClientAuth;
    /** Where refused requests are counted (the process's one; absent: the app's own); status shows them under `security`. */
    security?: SecurityLog;
    /** Authenticates the peer routes (`/v1/arbiter`, `/v1/ring/peer/*`) when the cluster has a secret. */
    peerAuth?: MiddlewareHandler;
    /** A bug in a handler (not a refusal); the process passes a fail-stop (startArbiter). */
    onInternalError?: (error: Error) => void;
  },
): Hono {
  const auth = options.auth ?? ClientAuth.open();
  const security = options.security ?? new SecurityLog({ nowMs: options.nowMs }, options.log, DEFAULT_SETTINGS.securityLogIntervalMs);
  const ports: ArbiterPorts = {
    store: fileArbiterStore(options.statePath),
    clock: { nowMs: options.nowMs },
    log: options.log,
    failStop: options.failStop ?? ((reason, fields) => failStopProcess(options.log, reason, fields)),
    security,
  };
  // An arbiter request is a few fields (no state travels): the general request limit is ample.
  const bodyBytesMax = options.bodyBytesMax ?? DEFAULT_SETTINGS.bodyBytesMax;
  const app = new Hono();
  app.use(answerFormatMiddleware());
  installErrorHandlers(app, options.onInternalError ?? ((error) => options.log.event("internalError", { message: error.message })));
  app.use(auth.middleware);
  if (options.peerAuth) {
    app.use("/v1/arbiter", options.peerAuth);
    app.use("/v1/ring/peer/*", options.peerAuth);
  }
  app.use("/v1/arbiter", peerFormatMiddleware(security));
  app.use("/v1/ring/peer/*", peerFormatMiddleware(security));
  app.get("/v1/health", (c) => c.json({ ok: true, id: options.nodeId, role: "arbiter", version: VERSION, formats: FORMATS, ...(options.pid === undefined ? {} : { pid: options.pid }) }));
  app.get("/v1/status", (c) => {
    auth.require(c, ARBITER_STATUS_ACCESS);
    return c.json({
      node: { id: options.nodeId, role: "arbiter", version: VERSION, formats: FORMATS },
      security: security.view(),
      arbiter: { ...core.current, leaseRemainingMs: core.leaseRemainingMs(options.nowMs()) },
    } satisfies ArbiterStatus);
  });
  app.post("/v1/arbiter", async (c) => {
    const { body } = answerArbiter(core, await readBodyText(c, bodyBytesMax), ports, bodyBytesMax, authenticatedSender(c));
    return c.body(body, 200, { "content-type": PEER_CONTENT_TYPE });
  });
  return app;
}

/** The arbiter's ring coordinator on the real ports (HTTP to the ring nodes, timers, the monotonic clock). */
function startRingCoordinator(
  cluster: ClusterConfig,
  node: NodeConfig,
  log: Logger,
  peerFetch: PeerFetch,
  onTick: () => void,
): { coordinator: RingCoordinator; reload(cluster: ClusterConfig): void } {
  const ringOf = (config: ClusterConfig) => config.nodes.filter((n) => n.role === "ring");
  const urls = new Map(ringOf(cluster).map((n) => [n.id, nodeUrl(n)]));
  const peers = httpPeers({
    self: node.id,
    urls,
    hopTimeoutMs: cluster.settings.tokenHopTimeoutMs,
    peerFetch,
    local: () => {
      throw new Error("the arbiter is no ring node");
    },
  });
  const coordinator = new RingCoordinator({
    id: node.id,
    ring: ringOf(cluster).map((n) => n.id),
    settings: cluster.settings,
    clock: monotonicClock,
    timers: realTimers,
    view: (to, message) => peers.view(to, message),
    log,
    onTick,
  });
  coordinator.start();
  return {
    coordinator,
    reload(reloaded: ClusterConfig) {
      const ring = ringOf(reloaded);
      for (const n of ring) urls.set(n.id, nodeUrl(n));
      coordinator.reload(ring.map((n) => n.id));
    },
  };
}

export async function startArbiter(cluster: ClusterConfig, node: NodeConfig, fileLog: Logger): Promise<RunningNode> {
  const dashboard = dashboardOf(cluster, node, fileLog);
  const log = dashboard.log;
  // First: a missing certificate stops the start before the record is read.
  const tls = readNodeTls(cluster, node);
  const primary = cluster.nodes.find((n) => n.role === "primary");
  const backup = cluster.nodes.find((n) => n.role === "backup");
  const statePath = `${node.dataDir}/arbiter.json`;
  const core = restoreArbiter({
    primaryId: primary?.id ?? "", // a ring-only cluster has no lock servers to arbitrate
    backupId: backup?.id ?? null,
    leaseMs: cluster.settings.primaryLeaseMs,
    bootstrapWaitMs: cluster.settings.bootstrapWaitMs,
  }, { store: fileArbiterStore(statePath), clock: monotonicClock, log, failStop: (reason, fields) => failStopProcess(log, reason, fields) }, { statePath });
  const security = new SecurityLog(monotonicClock, log, cluster.settings.securityLogIntervalMs);
  // The members it takes requests from: the file's, and those a reload (SIGHUP) adds.
  let members = new Set(cluster.nodes.map((n) => n.id));
  const peerAuth = await startPeerAuth({
    secret: cluster.secret,
    self: node.id,
    isMember: (id) => members.has(id),
    security,
    bodyBytesMax: cluster.settings.bodyBytesMax,
    fetch: fetchFor(cluster.tlsCa),
  });
  const auth = new ClientAuth(cluster.tokens, security);
  // Metrics (stalls past the lease safety margin are logged and counted). The stall monitor beats
  // every tickMs: on the ring coordinator's tick when there is a ring (no wake-up of its own),
  // else on its own timer (half the wake-ups of the default 10 ms; docs/bench.md "Idle CPU").
  const coordinatesRing = cluster.nodes.some((n) => n.role === "ring");
  const instruments = nodeInstruments({ nodeId: node.id, log, security, leaseSafetyMs: cluster.settings.leaseSafetyMs, stallEveryMs: cluster.settings.tickMs, stallDriven: coordinatesRing });
  const app = createArbiterApp(core, {
    nodeId: node.id,
    pid: process.pid,
    statePath,
    log,
    nowMs: monotonicClock.nowMs,
    bodyBytesMax: cluster.settings.bodyBytesMax,
    auth,
    security,
    peerAuth: peerAuth.middleware,
    onInternalError: failStopOnBug(log, "arbiter API"),
  });
  const ring = coordinatesRing ? startRingCoordinator(cluster, node, log, peerAuth.peerFetch, () => instruments.stalls.beat()) : null;
  if (ring) {
    serveRoutes(app, [viewRoute(ring.coordinator, cluster.settings, security)], auth);
    app.get("/v1/ring/coordinator", (c) => {
      auth.require(c, ARBITER_STATUS_ACCESS);
      return c.json(ring.coordinator.status());
    });
  }
  dashboard.install(app, auth, () => ({ ...core.current, leaseRemainingMs: core.leaseRemainingMs(monotonicClock.nowMs()) }));
  const server = await serveHttp(instruments.serve(app, auth), { hostname: node.host, port: node.port, tls });
  instruments.start();
  return {
    url: nodeUrl({ ...node, port: server.port }),
    reload(reloaded: ClusterConfig) {
      members = new Set([...members, ...reloaded.nodes.map((n) => n.id)]);
      ring?.reload(reloaded);
      dashboard.reload(reloaded);
      return "ok";
    },
    stop: () => {
      instruments.stop();
      ring?.coordinator.stop();
      return server.close();
    },
  };
}
