/**
 * `mutexd up --config FILE`: starts every node of the cluster file as a child process on this
 * machine, prints where each listens, and stops them all on Ctrl-C (SIGINT) or SIGTERM.
 */
import { spawn, type ChildProcess } from "node:child_process";
import process from "node:process";
import type { Settings } from "../../lib/settings.ts";
import { type ClusterConfig, loadClusterFile, type NodeConfig, nodeUrl } from "../config.ts";
import { fetchFor, selfCommand } from "../runtime.ts";
import { monotonicClock } from "../clock.ts";
import type { TrustingFetch } from "../../lib/client/tls.ts";
import { EXIT, parseFlags, runCommand, UsageError } from "./common.ts";

const HELP = `Usage: mutexd up --config FILE [--only ID,ID…]

Starts every node of the cluster file (or only the listed ids) as child processes of this one,
waits until each answers HTTP, prints where each listens, the dashboard's address (the first
node's, http://HOST:PORT/) and how to take a lock, and stops them
all on Ctrl-C or SIGTERM. Node logs (JSON lines) go to stderr.
Checks that each node answering is the process it started (its id and PID in /v1/health): a
port already taken (an earlier \`mutexd up\` still running) stops them all, exit 1, naming the
node and the address. --only refuses an id the file does not have, and says when a lock server
it starts may not serve because its arbiter or other lock server is not among them.
Exit codes: 0 stopped by Ctrl-C/SIGTERM, 2 usage or cluster-file error, 1 a node did not start.
`;

/** What `up` parses, and what `mutexd completion` offers. */
export const flags = { config: { type: "string" }, only: { type: "string" } } as const;

export function run(argv: string[]): Promise<number> {
  return runCommand(HELP, argv, async () => {
    const { values } = parseFlags(argv, flags, false);
    if (!values.config) throw new UsageError("--config is required");
    const cluster = loadClusterFile(values.config);
    const { settings } = cluster;
    const only = values.only?.split(",").map((id) => id.trim()).filter(Boolean);
    const unknown = only?.filter((id) => !cluster.nodes.some((n) => n.id === id)) ?? [];
    if (unknown.length > 0) {
      throw new UsageError(`--only: no node ${unknown.join(", ")} in ${cluster.file} (its nodes: ${cluster.nodes.map((n) => n.id).join(", ")})`);
    }
    const nodes = cluster.nodes.filter((n) => !only || only.includes(n.id));
    if (nodes.length === 0) throw new UsageError(`--only names no node of ${cluster.file}`);
    const [cmd, ...pre] = selfCommand();
    const children = new Map<string, ChildProcess>();
    let stopping = false;

    const stopAll = async (exitCode: number) => {
      if (stopping) return;
      stopping = true;
      for (const child of children.values()) if (child.exitCode === null) child.kill("SIGTERM");
      await waitForExit([...children.values()], settings);
      for (const child of children.values()) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      process.stdout.write("mutexd up: all nodes stopped\n");
      process.exit(exitCode);
    };
    process.on("SIGINT", () => void stopAll(EXIT.ok));
    process.on("SIGTERM", () => void stopAll(EXIT.ok));

    for (const node of nodes) {
      const child = spawn(cmd, [...pre, "node", "--config", cluster.file, "--id", node.id], {
        stdio: ["ignore", "inherit", "inherit"],
      });
      children.set(node.id, child);
      child.on("exit", (code, signal) => {
        if (!stopping) process.stderr.write(`mutexd up: node ${node.id} exited (${signal ?? `code ${code}`})\n`);
      });
    }
    for (const node of nodes) {
      const child = children.get(node.id)!;
      const problem = await startProblem(fetchFor(cluster.tlsCa), node, child, settings);
      if (problem !== undefined) {
        process.stderr.write(`mutexd up: node ${node.id} did not start: ${problem}\n`);
        await stopAll(1);
      }
    }
    const self = selfCommand().length === 1 ? selfCommand()[0] : "mutexd";
    const lines = nodes.map((n) =>
      `  ${n.id.padEnd(8)} ${n.role.padEnd(8)} ${nodeUrl(n).padEnd(24)} pid ${children.get(n.id)!.pid}`
    );
    const hasLockServer = nodes.some((n) => n.role === "primary" || n.role === "backup");
    const firstRing = nodes.find((n) => n.role === "ring");
    // Every node serves the dashboard at `/` and its metrics at `/metrics`; the first one started is named.
    const dashboard = `${nodeUrl(nodes[0])}/`;
    process.stdout.write(
      `mutexd up: cluster ${cluster.name} is running (${nodes.length} nodes)\n${lines.join("\n")}\n\n` +
        `Dashboard: ${dashboard}  (every node serves one; Prometheus metrics at /metrics)\n\nTry, in another terminal:\n` +
        (hasLockServer
          ? `  ${self} lock demo --config ${cluster.file} -- sh -c 'echo "holding demo, fencing token $MUTEXD_TOKEN"; sleep 2'\n` +
            `  ${self} status --config ${cluster.file}\n`
          : "") +
        (firstRing
          ? `  ${self} ring lock --config ${cluster.file} --id ${firstRing.id} -- sh -c 'echo "in the ring section, token $MUTEXD_TOKEN"'\n` +
            `  ${self} ring status --config ${cluster.file} --id ${firstRing.id}\n`
          : "") +
        // The commands above need a client token when the file defines some (docs/security.md).
        (cluster.tokens.length > 0 ? `  (this cluster requires client tokens: add --token-file FILE, or set MUTEXD_AUTH_TOKEN)\n` : "") +
        waitingNotes(cluster, nodes) +
        `Ctrl-C stops the cluster.\n`,
    );
    return EXIT.keepRunning;
  });
}

type Exited = Pick<ChildProcess, "exitCode" | "signalCode">;

/**
 * Waits until every child has exited, for upStopTimeoutMs at most. This wait and the start's are
 * measured on the monotonic clock: a wall-clock step must not stretch them by hours or end them early.
 */
export async function waitForExit(children: Exited[], settings: Pick<Settings, "upStopTimeoutMs" | "upPollMs">): Promise<void> {
  const deadline = monotonicClock.nowMs() + settings.upStopTimeoutMs;
  while (children.some((c) => c.exitCode === null && c.signalCode === null) && monotonicClock.nowMs() < deadline) {
    await new Promise((r) => setTimeout(r, settings.upPollMs));
  }
}

/**
 * Waits until the node answers /v1/health as the process this `up` started (its id and PID);
 * returns why not: another process answers there (an earlier `up` still running: its health
 * probe would pass), the child exited (its own one-line error is above), or the time ran out.
 */
export async function startProblem(fetchFn: TrustingFetch, node: NodeConfig, child: ChildProcess, settings: Settings): Promise<string | undefined> {
  const url = nodeUrl(node);
  const address = `${node.host}:${node.port}`;
  const deadline = monotonicClock.nowMs() + settings.upStartTimeoutMs;
  while (monotonicClock.nowMs() < deadline && child.exitCode === null && child.signalCode === null) {
    let health: { id?: unknown; pid?: unknown } | undefined;
    try {
      const response = await fetchFn(`${url}/v1/health`, { signal: AbortSignal.timeout(settings.requestTimeoutMs) });
      health = await response.json();
    } catch {
      // Not listening yet (or not HTTP): ask again.
    }
    if (health !== undefined) {
      if (health.id === node.id && health.pid === child.pid) return undefined;
      return `${address} is taken: another process answers there (node ${String(health.id ?? "?")}, pid ${String(health.pid ?? "?")}), not the one this up started (pid ${child.pid})`;
    }
    await new Promise((r) => setTimeout(r, settings.upPollMs));
  }
  if (child.exitCode !== null || child.signalCode !== null) return `it exited (${child.signalCode ?? `code ${child.exitCode}`}) before answering at ${url}; its error is above`;
  return `it did not answer at ${url} within ${settings.upStartTimeoutMs} ms`;
}

/**
 * Why a lock server this `up` started may not serve: it claims the primary role from the arbiter
 * and replicates to the other lock server (docs/failover.md); with --only, those may not run.
 */
function waitingNotes(cluster: ClusterConfig, started: NodeConfig[]): string {
  const startedIds = new Set(started.map((n) => n.id));
  const lockRoles = ["primary", "backup", "arbiter"];
  return started.filter((n) => n.role === "primary" || n.role === "backup").map((n) => {
    const missing = cluster.nodes.filter((m) => m.id !== n.id && lockRoles.includes(m.role) && !startedIds.has(m.id));
    if (missing.length === 0) return "";
    return `Note: ${n.id} (${n.role}) may not serve locks: it works with ${missing.map((m) => `its ${m.role} ${m.id}`).join(" and ")}, ` +
      `which this up did not start (--only); until then \`status\` shows it joining or without a backup.\n`;
  }).join("");
}
