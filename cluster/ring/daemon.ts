/**
 * Starts a ring node: loads its stored replica, builds the pure node, the driver, the HTTP API,
 * the link to its successor and the UDP repair channel. The ring order is the order of the ring
 * nodes in the file.
 */
import { randomBytes } from "node:crypto";
import process from "node:process";
import { RingNode } from "../../lib/core/ring/ring_node.ts";
import { restartVotersProblem } from "../../lib/core/ring/view.ts";
import { monotonicClock } from "../clock.ts";
import { type ClusterConfig, ConfigError, type NodeConfig, nodeUrl, readNodeTls } from "../config.ts";
import type { RunningNode } from "../running_node.ts";
import type { Logger } from "../log.ts";
import { realTimers } from "../timers.ts";
import { fetchFor, serveHttp } from "../runtime.ts";
import { createRingApp, ringPeerBytesMax, ringStatusBody } from "./api.ts";
import { dashboardOf } from "../dashboard/routes.ts";
import { startPeerAuth } from "../peer_auth.ts";
import { httpPeers } from "./http_peers.ts";
import { RingService } from "./service.ts";
import { FORMAT_VERSION, RingStorage } from "./storage.ts";
import { REFUSED_AS, RepairChannel } from "./udp.ts";
import { SecurityLog } from "../security_log.ts";
import { failStopOnBug, failStopProcess } from "../fail_stop.ts";
import { ClientAuth } from "../client_auth.ts";
import { nodeInstruments } from "../metrics.ts";
import { RingMetrics } from "./metrics.ts";

export async function startRingNode(cluster: ClusterConfig, node: NodeConfig, fileLog: Logger): Promise<RunningNode> {
  const dashboard = dashboardOf(cluster, node, fileLog);
  const log = dashboard.log;
  const settings = cluster.settings;
  // First: a missing certificate stops the start before the storage is opened.
  const tls = readNodeTls(cluster, node);
  const ringNodes = cluster.nodes.filter((n) => n.role === "ring" || n.id === node.id);
  const ring = ringNodes.map((n) => n.id);
  const storage = new RingStorage(node.dataDir);
  const stored = storage.load({ alone: ring.length === 1 });
  if (stored.tornLines > 0) log.event("tornLogLine", { dataDir: node.dataDir, lines: stored.tornLines });
  // Dropped records are caught up from the predecessor once the token shows this node behind.
  if (stored.badRecord) log.event("badLogRecord", stored.badRecord);
  if (stored.badSnapshot) log.event("badSnapshot", stored.badSnapshot);
  if (stored.upgraded.length > 0) log.event("diskFormatUpgraded", { files: stored.upgraded, version: FORMAT_VERSION });
  // The view change's promise and view: a damaged file stops the start (loadView throws), since
  // a promise forgotten could be given twice.
  const storedView = storage.loadView();
  // Two membership changes at once could let two disjoint majorities each form a view: a file
  // more than one node away from the voters of the stored view is refused like a bad file.
  const votersProblem = restartVotersProblem(storedView?.view ?? null, ring);
  if (votersProblem !== null) {
    storage.close();
    throw new ConfigError(cluster.file, "nodes", votersProblem);
  }
  const core = new RingNode({
    id: node.id,
    ring,
    storedView: storedView?.view ?? null,
    promisedEpoch: storedView?.promised.epoch ?? 0,
    limits: settings,
    // A random part per incarnation: a ticket of an earlier run is never mistaken for a new one.
    ticketPrefix: `${node.id}-${randomBytes(3).toString("hex")}-`,
    stored,
  });
  // The peers deliver to this node itself in a ring of one; the service exists by then.
  const self: { service?: RingService } = {};
  // Peer URLs by id (the ring nodes, and the arbiter, which coordinates view changes); a reload
  // (SIGHUP) updates this map in place.
  const arbiter = cluster.nodes.find((n) => n.role === "arbiter") ?? null;
  const byId = new Map([...ringNodes, ...(arbiter ? [arbiter] : [])].map((n) => [n.id, nodeUrl(n)]));
  // Refused input (forged or replayed peer messages and datagrams, bad client tokens), counted for
  // status and logged once per sender and interval.
  const security = new SecurityLog(monotonicClock, log, settings.securityLogIntervalMs);
  // Metrics (stalls past the token lease's safety margin are logged and counted); the stall
  // monitor beats on the service's tick (`onTick` below), not on a timer of its own.
  const instruments = nodeInstruments({ nodeId: node.id, log, security, leaseSafetyMs: settings.tokenLeaseSafetyMs, stallEveryMs: settings.tickMs, stallDriven: true });
  const ringMetrics = new RingMetrics(instruments.metrics, monotonicClock);
  const peerAuth = await startPeerAuth({
    secret: cluster.secret,
    self: node.id,
    isMember: (id) => byId.has(id),
    security,
    bodyBytesMax: ringPeerBytesMax(settings),
    fetch: fetchFor(cluster.tlsCa),
  });
  const peers = httpPeers({
    self: node.id,
    urls: byId,
    hopTimeoutMs: settings.tokenHopTimeoutMs,
    peerFetch: peerAuth.peerFetch,
    local: () => self.service!,
  });
  // Ordered incarnations let peers refuse a replayed datagram of an earlier run (udp.ts); stored before the first datagram.
  const incarnation = storage.nextIncarnation(Date.now());
  if (incarnation.damaged) log.event("badIncarnationFile", { dataDir: node.dataDir, reason: incarnation.damaged, inc: incarnation.inc });
  // The repair channel exists before the service (which sends through it) and delivers to it once it exists.
  const channel = await RepairChannel.open({
    self: node.id,
    peers: ringNodes.map((n) => ({ id: n.id, host: n.host, udpPort: n.udpPort })),
    broadcast: cluster.broadcast,
    datagramBytesMax: settings.ringDatagramBytesMax,
    rememberedMax: settings.ringDatagramsRememberedMax,
    secret: cluster.secret,
    incarnation: incarnation.inc,
    onMessage: (datagram) => self.service?.onRepairMessage(datagram),
    // Copies are expected (broadcast + unicast) and its own broadcasts come back: not worth a line.
    onDropped: (reason, detail, source) => {
      const refusal = REFUSED_AS[reason];
      if (refusal !== undefined) security.refused(refusal, source, { detail });
    },
    onSendError: (error, to) => log.event("repairSendFailed", { to, message: error.message }),
  });
  const service = new RingService({
    node: core,
    settings,
    security,
    clock: monotonicClock,
    hopClock: { nowMs: () => performance.now() },
    timers: realTimers,
    log,
    storage,
    storedView,
    arbiter: arbiter?.id ?? null,
    peers,
    repairLink: channel,
    onStep: (input, output) => ringMetrics.step(input, output),
    onTick: (lateMs) => instruments.stalls.late(lateMs),
    // A step's state that did not reach the disk (or a broken invariant): fail-stop, never go on
    // from memory; a restart reads what is on disk and catches up from a peer.
    onFatal: (error) => failStopProcess(log, "ring state could not be stored", { message: error.message }),
  });
  self.service = service;
  const auth = new ClientAuth(cluster.tokens, security);
  const describe = () => ({
    successorUrl: byId.get(core.successor),
    predecessorUrl: byId.get(core.predecessor),
    repairChannel: { udpPort: channel.port, broadcast: cluster.broadcast, authenticated: cluster.secret !== undefined, inc: incarnation.inc, ...channel.counts },
  });
  const app = createRingApp(service, {
    auth,
    security,
    nodeId: node.id,
    pid: process.pid,
    settings,
    describe,
    peerAuth: peerAuth.middleware,
    onPeerFormat: (from, format) => peers.heard(from, format),
    onInternalError: failStopOnBug(log, "ring API"),
  });
  dashboard.install(app, auth, () => ringStatusBody(service, { describe, security }));
  const server = await serveHttp(instruments.serve(app, auth), { hostname: node.host, port: node.port, tls });
  instruments.start();
  log.event("ringStarted", {
    ring,
    successor: core.successor,
    predecessor: core.predecessor,
    epoch: core.status(0).epoch,
    udpPort: channel.port,
    lastApplied: core.replica.lastApplied,
    commit: core.replica.commit,
  });
  service.start();
  return {
    url: nodeUrl({ ...node, port: server.port }),
    reload(reloaded: ClusterConfig): "ok" | "stop" {
      const nodes = reloaded.nodes.filter((n) => n.role === "ring");
      if (!nodes.some((n) => n.id === node.id)) {
        log.event("ringReloadRefused", { reason: `${node.id} is no longer a ring node of the file: stopping` });
        return "stop";
      }
      // The new node's address first: the view change that takes it in sends to it at once.
      const before = new Map(byId);
      for (const n of nodes) byId.set(n.id, nodeUrl(n));
      const refusal = service.changeMembership(nodes.map((n) => n.id));
      byId.clear();
      const kept = refusal === null ? [...nodes, ...(arbiter ? [arbiter] : [])].map((n) => [n.id, nodeUrl(n)] as const) : before;
      for (const [id, url] of kept) byId.set(id, url);
      if (refusal === null) {
        channel.setPeers(nodes.map((n) => ({ id: n.id, host: n.host, udpPort: n.udpPort })));
        dashboard.reload(reloaded);
      }
      return "ok";
    },
    async stop() {
      instruments.stop();
      service.stop();
      await channel.close();
      await server.close();
      storage.close();
    },
  };
}
