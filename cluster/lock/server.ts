/**
 * Starts a lock server (role primary or backup): the service around the replication core, its
 * tick timer and its HTTP server. Which of the two serves is the arbiter's decision; the role in
 * the cluster file only says which one serves first.
 */
import process from "node:process";
import { randomBytes } from "node:crypto";
import { type ClusterConfig, nodeUrl, type NodeConfig, readNodeTls } from "../config.ts";
import { monotonicClock } from "../clock.ts";
import { createLockApp } from "./api.ts";
import type { LockApiOptions } from "./api_options.ts";
import { answerPeerFrame } from "./api_peer.ts";
import { SecurityLog } from "../security_log.ts";
import { LockService } from "./service.ts";
import type { Logger } from "../log.ts";
import { httpPeerTransport } from "../peer_transport.ts";
import { peerStreamServer, streamPeerTransport } from "../peer_stream.ts";
import { startPeerAuth } from "../peer_auth.ts";
import { fetchFor, serveHttp } from "../runtime.ts";
import { realTimers } from "../timers.ts";
import { openDurableLog } from "./durable_log.ts";
import { DiskFormatError } from "../format_version.ts";
import { failStopOnBug, failStopProcess } from "../fail_stop.ts";
import type { RunningNode } from "../running_node.ts";
import { ClientAuth } from "../client_auth.ts";
import { dashboardOf, lockPage, summarizeLocks } from "../dashboard/routes.ts";
import { LockWatchHub } from "./watch.ts";
import { nodeInstruments } from "../metrics.ts";
import { LockMetrics, type LockStatusSource } from "./metrics.ts";

export async function startLockServer(cluster: ClusterConfig, node: NodeConfig, fileLog: Logger): Promise<RunningNode> {
  const dashboard = dashboardOf(cluster, node, fileLog);
  const log = dashboard.log;
  const settings = cluster.settings;
  // First: a missing certificate stops the start before anything is opened.
  const tls = readNodeTls(cluster, node);
  const member = (role: string) => {
    const found = cluster.nodes.find((n) => n.role === role && n.id !== node.id);
    return found ? { id: found.id, url: nodeUrl(found) } : null;
  };
  const peer = member(node.role === "primary" ? "backup" : "primary");
  const arbiter = member("arbiter");
  const durable = cluster.durable ? startDurableLog(node, settings, log) : undefined;
  // Refused input (forged or replayed peer messages, bad client tokens): counted for status, logged once per sender and interval.
  const security = new SecurityLog(monotonicClock, log, settings.securityLogIntervalMs);
  const peerAuth = await startPeerAuth({
    secret: cluster.secret,
    self: node.id,
    isMember: (id) => cluster.nodes.some((n) => n.id === id),
    security,
    bodyBytesMax: settings.peerBodyBytesMax,
    fetch: fetchFor(cluster.tlsCa),
  });
  // The longest event-loop stall, for status and metrics (a resync must not freeze the primary:
  // docs/bench.md); one past the lease safety margin is logged and counted.
  const instruments = nodeInstruments({ nodeId: node.id, log, security, leaseSafetyMs: settings.leaseSafetyMs, logStalls: true, stallEveryMs: settings.tickMs, stallDriven: true });
  const lockMetrics = new LockMetrics(instruments.metrics, monotonicClock, (): LockStatusSource => {
    const { server, sessionCount, lockCount } = service.summary();
    return { sessionCount, lockCount, epoch: server.epoch, lagEntries: server.role === "primary" ? server.backup?.lagEntries ?? null : null };
  });
  // The MAC names the receiver: the member whose URL a request goes to.
  const idOfUrl = (url: string) => cluster.nodes.find((n) => url.startsWith(`${nodeUrl(n)}/`))?.id ?? "";
  // Replication (`/v1/peer`) on one WebSocket per peer; the arbiter's requests, and any while the
  // stream cannot open, over HTTP (peer_stream.ts).
  const transport = streamPeerTransport({
    self: node.id,
    idOf: idOfUrl,
    peerFetch: peerAuth.peerFetch,
    http: httpPeerTransport(peerAuth.peerFetch, idOfUrl),
    keyed: peerAuth.keyed,
    caPem: cluster.tlsCa,
    bodyBytesMax: settings.peerBodyBytesMax,
    security,
    log,
    clock: monotonicClock,
    timers: realTimers,
    openTimeoutMs: settings.peerTimeoutMs,
  });
  const service: LockService = new LockService({
    settings,
    security,
    clock: monotonicClock,
    log,
    nodeId: node.id,
    peer,
    arbiter,
    transport,
    timers: realTimers,
    // A random prefix per incarnation: a restarted server never accepts an old session id.
    sessionIdPrefix: `${node.id}-${randomBytes(4).toString("hex")}-`,
    // A fresh table (a new cluster, or both copies lost) starts its tokens above the wall clock
    // in µs, so tokens keep growing across such restarts as long as the clock does not step back.
    tokenFloor: Date.now() * 1000,
    durable: durable ? { restored: durable.opened.restored, sink: durable.log } : undefined,
    metrics: lockMetrics,
  });
  const auth = new ClientAuth(cluster.tokens, security);
  const urlOf = (id: string) => {
    const found = cluster.nodes.find((n) => n.id === id);
    return found ? nodeUrl(found) : undefined;
  };
  const watch = new LockWatchHub(service, { timers: realTimers, log, urlOf });
  const apiOptions: LockApiOptions = {
    auth,
    security,
    loopStall: () => instruments.stalls.view(),
    nodeId: node.id,
    role: node.role,
    pid: process.pid,
    settings,
    peerAuth: peerAuth.middleware,
    urlOf,
    watch,
    onInternalError: failStopOnBug(log, "lock API"),
  };
  const app = createLockApp(service, apiOptions);
  const stream = peerStreamServer({
    self: node.id,
    keyed: peerAuth.keyed,
    security,
    bodyBytesMax: settings.peerBodyBytesMax,
    answer: (text, sender, done) => answerPeerFrame(service, apiOptions, text, sender, done),
  });
  dashboard.install(app, auth, (may) => {
    const { locks, sessions, ...rest } = service.view();
    return { ...rest, sessionCount: sessions.length, locks: summarizeLocks(locks, may) };
  }, (query, may) => lockPage(service.view().locks, query, may));
  const server = await serveHttp(instruments.serve(app, auth), { hostname: node.host, port: node.port, tls, stream: stream.route });
  // The stall monitor beats on this tick rather than a timer of its own (one wake-up per tick).
  const ticker = setInterval(() => {
    instruments.stalls.beat();
    service.tick();
  }, settings.tickMs);
  instruments.start();
  return {
    url: nodeUrl({ ...node, port: server.port }),
    async stop() {
      clearInterval(ticker);
      instruments.stop();
      // Streams end first: the server's close waits for every answer, and a watch never ends by itself.
      watch.stop();
      transport.close();
      stream.stop();
      service.stop();
      durable?.log.stop();
      durable?.disk.close();
      await server.close();
    },
  };
}

/**
 * Reads the durable log in the node's dataDir (a damaged one stops the start: exit 70) and
 * returns it ready for the service; a later write or fsync failure is a fail-stop too.
 */
function startDurableLog(node: NodeConfig, settings: ClusterConfig["settings"], log: Logger) {
  const fail = (reason: string) => (error: Error) => failStopProcess(log, reason, { dataDir: node.dataDir, message: error.message });
  try {
    const durable = openDurableLog(node.dataDir, {
      limits: settings,
      answered: settings,
      compactEntries: settings.durableCompactEntries,
      onFailure: fail("durable log write failed"),
      defer: (fn) => realTimers.setTimeout(fn, 0),
    });
    const copy = durable.opened.restored;
    log.event("durableLogOpened", {
      dataDir: node.dataDir,
      index: copy?.machine.appliedIndex ?? 0,
      epoch: copy?.epoch ?? 0,
      primary: copy?.primary ?? null,
      replayed: durable.opened.replayed,
      tornLines: durable.opened.tornLines,
    });
    return durable;
  } catch (error) {
    // A file of another major format is no damage: the start stops with exit 2 (commands/node.ts).
    if (error instanceof DiskFormatError) throw error;
    return fail("durable log unreadable")(error as Error);
  }
}
