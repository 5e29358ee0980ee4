/**
 * `mutexd node --config FILE --id ID [--role ROLE]`: runs one node of the cluster file in its
 * role until SIGTERM or SIGINT, then shuts it down cleanly.
 */
import process from "node:process";
import { findNode, isLoopbackHost, loadClusterFile, ROLES, type NodeConfig, type Role } from "../config.ts";
import { jsonLogger, LOG_LEVELS, type LogLevel } from "../log.ts";
import { installFailStop } from "../fail_stop.ts";
import { type NodeStarter, stopWithin } from "../running_node.ts";
import { ListenError } from "../runtime.ts";
import { checkDiskFormat, DiskFormatError } from "../format_version.ts";
import { lowerNice } from "../scheduling.ts";
import { EXIT, parseFlags, runCommand, UsageError } from "./common.ts";

/** Role → the module that starts it. Each role lives in its own cluster/ module. */
const STARTERS: Record<Role, () => Promise<NodeStarter>> = {
  primary: async () => (await import("../lock/server.ts")).startLockServer,
  backup: async () => (await import("../lock/server.ts")).startLockServer,
  arbiter: async () => (await import("../arbiter/server.ts")).startArbiter,
  ring: async () => (await import("../ring/daemon.ts")).startRingNode,
};

const HELP = `Usage: mutexd node --config FILE --id ID [--role ${ROLES.join("|")}] [--log-level ${LOG_LEVELS.join("|")}]

Runs the node ID of the cluster file in the role the file gives it (--role overrides).
Logs one JSON line per event on stderr, at --log-level and above (default: the cluster file's
[cluster] logLevel, else info). A lock server logs each grant and release at debug only. SIGTERM or SIGINT stops it cleanly. SIGHUP reads the
cluster file again: a ring node takes one ring node added or removed (docs/ring.md, Membership).
Without a cluster secret ([cluster] secret, secretFile or secretEnv) a node listens on loopback
only and refuses [[tokens]] (exit 2): nothing would authenticate its peer traffic.
Exit codes: 0 stopped by a signal, 2 bad flags or cluster file (also: its address is taken or not
on this host, or its dataDir has another major disk format version, said in one line), 70 fail-stop (a decision could
not be written to disk, or a bug such as a core's assertion; a restart starts from the disk or
a fresh copy), 1 crashed.
`;

/** What `node` parses, and what `mutexd completion` offers. */
export const flags = { config: { type: "string" }, id: { type: "string" }, role: { type: "string" }, "log-level": { type: "string" } } as const;

export function run(argv: string[]): Promise<number> {
  return runCommand(HELP, argv, async () => {
    const { values } = parseFlags(argv, flags, false);
    if (!values.config || !values.id) throw new UsageError("--config and --id are required");
    const cluster = loadClusterFile(values.config);
    const found = findNode(cluster, values.id);
    if (values.role !== undefined && !(ROLES as readonly string[]).includes(values.role)) {
      throw new UsageError(`--role must be one of ${ROLES.join(", ")}`);
    }
    const node: NodeConfig = { ...found, role: (values.role as Role | undefined) ?? found.role };
    if (cluster.secret === undefined && !isLoopbackHost(node.host)) {
      // Without the secret nothing tells a peer's message from a forged one: anyone who can reach
      // the port could take the service down (README, "Security").
      throw new UsageError(
        `node ${node.id} would listen on ${node.host}, which is not loopback: without a cluster secret ` +
          `([cluster] secret, secretFile or secretEnv) a node listens on loopback only, because anyone who can reach it could forge peer messages`,
      );
    }
    if (cluster.secret === undefined && cluster.tokens.length > 0) {
      // The peer routes skip the bearer check (the secret's MAC guards them): without a secret a
      // caller with no token at all could read every ring value (GET /v1/ring/peer/log) and forge
      // peer messages, so the tokens would protect nothing.
      throw new UsageError(
        `the cluster file defines [[tokens]] but no cluster secret: without one the peer routes (/v1/peer, /v1/arbiter, ` +
          `/v1/ring/peer/…) answer anyone, with or without a token; set [cluster] secret, secretFile or secretEnv`,
      );
    }
    const logLevel = values["log-level"] ?? cluster.logLevel;
    if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(", ")}`);
    const log = jsonLogger(node.id, cluster.settings.logPendingLinesMax, undefined, logLevel as LogLevel);
    installFailStop(log);
    // First, before the role's modules load and long before its first lease: a node the host's
    // other work keeps waiting on the run queue stalls past its lease (cluster/scheduling.ts).
    const priority = lowerNice();
    log.event("schedulingPriority", { ...priority }, priority.refused === undefined ? "info" : "warn");
    // Before any file of the dataDir is read: a dataDir of another major disk format stops the
    // start (exit 2, naming the file and both versions). A lock server without `durable` keeps nothing there.
    if (node.role === "arbiter" || node.role === "ring" || cluster.durable) {
      try {
        checkDiskFormat(node.dataDir);
      } catch (error) {
        if (!(error instanceof DiskFormatError)) throw error;
        log.flush();
        process.stderr.write(`mutexd: node ${node.id} cannot start: ${error.message}\n`);
        return EXIT.usage;
      }
    }
    const start = await STARTERS[node.role]();
    let running;
    try {
      running = await start(cluster, node, log);
    } catch (error) {
      // A port taken or an address not on this host: one line a person can act on, exit 2 (the
      // cluster file asks for what this host cannot give), not the runtime's stack trace.
      // A file in the dataDir of another major format (copied from another build's): exit 2 too.
      if (error instanceof DiskFormatError) {
        log.flush();
        process.stderr.write(`mutexd: node ${node.id} cannot start: ${error.message}\n`);
        return EXIT.usage;
      }
      if (!(error instanceof ListenError)) throw error;
      log.flush();
      process.stderr.write(`mutexd: node ${node.id} cannot listen on ${error.message}\n`);
      return EXIT.usage;
    }
    log.event("listening", { role: node.role, url: running.url, pid: process.pid });
    let stopping = false;
    const shutdown = async (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.event("stopping", { signal });
      const startedMs = performance.now();
      // A stop answers every waiting client and closes the server (docs/failover.md, "primary
      // stopped"); should anything still hold it, the process exits after stopGraceMs anyway.
      const outcome = await stopWithin(() => running.stop(), cluster.settings.stopGraceMs);
      log.event(outcome, { ms: Math.round(performance.now() - startedMs) });
      log.flush();
      process.exit(EXIT.ok);
    };
    process.on("SIGTERM", () => void shutdown("SIGTERM"));
    process.on("SIGINT", () => void shutdown("SIGINT"));
    // SIGHUP: read the cluster file again; a ring node takes a node added or removed by a view
    // change. A file that does not parse changes nothing (logged).
    process.on("SIGHUP", () => {
      try {
        const reloaded = loadClusterFile(values.config!);
        if (running.reload?.(reloaded) === "stop") void shutdown("SIGHUP: no longer in the cluster file");
      } catch (error) {
        log.event("reloadFailed", { file: values.config, message: (error as Error).message });
      }
    });
    return EXIT.keepRunning;
  });
}
