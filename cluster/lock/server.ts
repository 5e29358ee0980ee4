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
import { SecurityLog } from "../security_log.ts";
import { LockService } from "./service.ts";
import type { Logger } from "../log.ts";
import { httpPeerTransport } from "../peer_transport.ts";
import { startPeerAuth } from "../peer_auth.ts";
import { fetchFor, serveHttp } from "../runtime.ts";
import { realTimers } from "../timers.ts";
import { StallMonitor } from "../stall_monitor.ts";
import { openDurableLog } from "./durable_log.ts";
import { failStopOnBug, failStopProcess } from "../fail_stop.ts";
import type { RunningNode } from "../running_node.ts";
import { ClientAuth } from "../client_auth.ts";

export async function startLockServer(cluster: ClusterConfig, node: NodeConfig, log: Logger): Promise<RunningNode> {
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
  // The MAC names the receiver: the member whose URL a request goes to.
  const idOfUrl = (url: string) => cluster.nodes.find((n) => url.startsWith(`${nodeUrl(n)}/`))?.id ?? "";
  const service = new LockService({
    settings,
    security,
    clock: monotonicClock,
    log,
    nodeId: node.id,
    peer,
    arbiter,
    transport: httpPeerTransport(peerAuth.peerFetch, idOfUrl),
    timers: realTimers,
    // A random prefix per incarnation: a restarted server never accepts an old session id.
    sessionIdPrefix: `${node.id}-${randomBytes(4).toString("hex")}-`,
    // A fresh table (a new cluster, or both copies lost) starts its tokens above the wall clock
    // in µs, so tokens keep growing across such restarts as long as the clock does not step back.
    tokenFloor: Date.now() * 1000,
    durable: durable ? { restored: durable.opened.restored, sink: durable.log } : undefined,
  });
  // The longest event-loop stall, for status (a resync must not freeze the primary: docs/bench.md).
  // Driven by the tick below rather than a timer of its own (one wake-up per tick, not three).
  const stalls = new StallMonitor(monotonicClock, realTimers, (stallMs) => log.event("loopStall", { stallMs }, "warn"), settings.tickMs);
  const app = createLockApp(service, {
    auth: new ClientAuth(cluster.tokens, security),
    security,
    loopStall: () => stalls.view(),
    nodeId: node.id,
    role: node.role,
    pid: process.pid,
    settings,
    peerAuth: peerAuth.middleware,
    urlOf: (id) => {
      const found = cluster.nodes.find((n) => n.id === id);
      return found ? nodeUrl(found) : undefined;
    },
    onInternalError: failStopOnBug(log, "lock API"),
  });
  const server = await serveHttp(app.fetch, { hostname: node.host, port: node.port, tls });
  const ticker = setInterval(() => {
    stalls.beat();
    service.tick();
  }, settings.tickMs);
  stalls.startDriven();
  return {
    url: nodeUrl({ ...node, port: server.port }),
    async stop() {
      clearInterval(ticker);
      stalls.stop();
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
    return fail("durable log unreadable")(error as Error);
  }
}
