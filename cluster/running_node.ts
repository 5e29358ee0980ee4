/**
 * What a node's starter gives back, shared by `mutexd node` (commands/node.ts), which picks the
 * starter for a role, and the starters themselves (lock_server.ts, arbiter_server.ts,
 * ring/daemon.ts). It lives apart from both so that neither imports the other.
 */
import type { ClusterConfig, NodeConfig } from "./config.ts";
import type { Logger } from "./log.ts";

/** A started node: where it listens and how to stop it. */
export interface RunningNode {
  url: string;
  stop(): Promise<void>;
  /**
   * The cluster file was read again (SIGHUP). Roles that take membership changes apply them;
   * "stop" asks the caller to stop the node (it is no longer in the file). Optional.
   */
  reload?(cluster: ClusterConfig): "ok" | "stop";
}

export type NodeStarter = (cluster: ClusterConfig, node: NodeConfig, log: Logger) => Promise<RunningNode>;
