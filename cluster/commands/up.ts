/**
 * `mutexd up --config FILE`: starts every node of the cluster file as a child process on this
 * machine, prints where each listens, and stops them all on Ctrl-C (SIGINT) or SIGTERM.
 */
import { spawn, type ChildProcess } from "node:child_process";
import process from "node:process";
import type { Settings } from "../../lib/settings.ts";
import { loadClusterFile, nodeUrl } from "../config.ts";
import { fetchFor, selfCommand } from "../runtime.ts";
import { monotonicClock } from "../clock.ts";
import type { TrustingFetch } from "../../lib/client/tls.ts";
import { EXIT, parseFlags, runCommand, UsageError } from "./common.ts";

const HELP = `Usage: mutexd up --config FILE [--only ID,ID…]

Starts every node of the cluster file (or only the listed ids) as child processes of this one,
waits until each answers HTTP, prints where each listens and how to take a lock, and stops them
all on Ctrl-C or SIGTERM. Node logs (JSON lines) go to stderr.
Exit codes: 0 stopped by Ctrl-C/SIGTERM, 2 usage or cluster-file error, 1 a node did not start.
`;

export function run(argv: string[]): Promise<number> {
  return runCommand(HELP, argv, async () => {
    const { values } = parseFlags(argv, { config: { type: "string" }, only: { type: "string" } }, false);
    if (!values.config) throw new UsageError("--config is required");
    const cluster = loadClusterFile(values.config);
    const { settings } = cluster;
    const only = values.only?.split(",");
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
      if (!(await answers(fetchFor(cluster.tlsCa), nodeUrl(node), children.get(node.id)!, settings))) {
        process.stderr.write(`mutexd up: node ${node.id} did not start at ${nodeUrl(node)}\n`);
        await stopAll(1);
      }
    }
    const self = selfCommand().length === 1 ? selfCommand()[0] : "mutexd";
    const lines = nodes.map((n) =>
      `  ${n.id.padEnd(8)} ${n.role.padEnd(8)} ${nodeUrl(n).padEnd(24)} pid ${children.get(n.id)!.pid}`
    );
    const hasLockServer = nodes.some((n) => n.role === "primary" || n.role === "backup");
    const firstRing = nodes.find((n) => n.role === "ring");
    process.stdout.write(
      `mutexd up: cluster ${cluster.name} is running (${nodes.length} nodes)\n${lines.join("\n")}\n\nTry, in another terminal:\n` +
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

/** Waits until the node answers any HTTP request (it listens) or its process ends. */
export async function answers(fetchFn: TrustingFetch, url: string, child: Exited, settings: Settings): Promise<boolean> {
  const deadline = monotonicClock.nowMs() + settings.upStartTimeoutMs;
  while (monotonicClock.nowMs() < deadline && child.exitCode === null) {
    try {
      const response = await fetchFn(`${url}/v1/health`, { signal: AbortSignal.timeout(settings.requestTimeoutMs) });
      await response.body?.cancel();
      return true;
    } catch {
      await new Promise((r) => setTimeout(r, settings.upPollMs));
    }
  }
  return false;
}
