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

/**
 * Runs `stop` and resolves "stopped" when it is done, or "stopForced" after `graceMs` if it is not
 * (the caller then exits anyway, as after a crash, which every role survives).
 */
export function stopWithin(stop: () => Promise<void>, graceMs: number): Promise<"stopped" | "stopForced"> {
  let bound: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    stop().then(() => "stopped" as const),
    new Promise<"stopForced">((resolve) => (bound = setTimeout(() => resolve("stopForced"), graceMs))),
  ]).finally(() => clearTimeout(bound));
}
