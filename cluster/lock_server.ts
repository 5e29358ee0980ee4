/**
 * Starts a lock server (role primary): the lock service, its tick timer and its HTTP server.
 * Replication to a backup comes with the failover issue; until then a backup node runs the same
 * server and is simply not used by clients unless the primary is unreachable.
 */
import { randomBytes } from "node:crypto";
import type { ClusterConfig, NodeConfig } from "./config.ts";
import { monotonicClock } from "./clock.ts";
import { createLockApp } from "./lock_api.ts";
import { LockService } from "./lock_service.ts";
import type { Logger } from "./log.ts";
import { serveHttp } from "./runtime.ts";
import type { RunningNode } from "./commands/node.ts";

export async function startLockServer(cluster: ClusterConfig, node: NodeConfig, log: Logger): Promise<RunningNode> {
  const settings = cluster.settings;
  const service = new LockService({
    settings,
    clock: monotonicClock,
    log,
    // A random prefix per incarnation: a restarted server never accepts an old session id.
    sessionIdPrefix: `${node.id}-${randomBytes(4).toString("hex")}-`,
    // No persisted counter yet: start tokens above the wall clock (µs resolution) so tokens only
    // grow across restarts of the server as long as the clock does not step back.
    tokenFloor: Date.now() * 1000,
  });
  const app = createLockApp(service, {
    nodeId: node.id,
    role: node.role,
    settings,
    onInternalError: (error) => log.event("internalError", { message: error.message, stack: error.stack }),
  });
  const server = await serveHttp(app.fetch, { hostname: node.host, port: node.port });
  const ticker = setInterval(() => service.tick(), settings.tickMs);
  return {
    url: `http://${node.host}:${server.port}`,
    async stop() {
      clearInterval(ticker);
      service.endAllPolls();
      await server.close();
    },
  };
}
