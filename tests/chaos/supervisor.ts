/**
 * The chaos supervisor (TigerBeetle Vortex's supervisor.zig, in small): it writes a loopback
 * cluster file, starts every node as a real process of the mutexd binary, and kills, pauses,
 * resumes and restarts them by PID. It stops only processes it started, also on Ctrl-C and on
 * failure: an exit hook sends SIGCONT then SIGKILL to every PID still running.
 *
 * Binary: dist/mutexd when it exists and is newer than every source file (`make build` made it
 * from this tree), otherwise main.ts under the runtime running the supervisor.
 */
import { appendFileSync, existsSync, mkdirSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import type { NetLab } from "../_netns.ts";
import type { NodeClocks } from "./clock.ts";
import { freePort, mutexdArgv, type Proc, QUICK_RING_SETTINGS, ROOT, sleep, startProcess, writeCluster } from "../_harness.ts";
import { randomSessionSecret } from "../../lib/client/lock_client.ts";

/** p1, b1, a1, and the ring nodes r1..rN. */
export type NodeId = string;
export const LOCK_SERVERS: NodeId[] = ["p1", "b1"];
const LOCK_NODES: NodeId[] = ["a1", "p1", "b1"];
/** Ring size: 3 on loopback (today's schedules), 5 on namespaces, so the ring can split 2 | 3. */
export const RING_SIZE = { loopback: 3, netns: 5 };
const roleOf = (id: NodeId) => ({ p1: "primary", b1: "backup", a1: "arbiter" } as Record<string, string>)[id] ?? "ring";
/** The HTTP port of every node on namespaces (each has its own address). */
const NETNS_PORT = 7000;

export type NodeState = "up" | "paused" | "down";

/** CMD processes of clients tracked at once, at most (one per client is the norm). */
const COMMANDS_MAX = 256;

/** Settings of the chaos cluster: lock service defaults; the ring made quick, as its process test does. */
const SETTINGS = QUICK_RING_SETTINGS;

/** Newest modification time (ms) of the sources the binary is built from. */
function newestSourceMs(): number {
  let newest = statSync(join(ROOT, "main.ts")).mtimeMs;
  // Bounded by the size of the tree; only lib/ and cluster/ are walked.
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith(".ts")) newest = Math.max(newest, statSync(path).mtimeMs);
    }
  };
  walk(join(ROOT, "lib"));
  walk(join(ROOT, "cluster"));
  return newest;
}

/**
 * The argv prefix that runs mutexd, and a word for line 1 saying which one. With `injectBug`,
 * main.ts through tests/_inject_bug.ts (INJECT_BUG names the bug; every process started inherits
 * it): the proof that the checker bites.
 */
export function chooseBinary(injectBug?: string): { argv: string[]; label: string } {
  if (injectBug !== undefined) {
    process.env.INJECT_BUG = injectBug;
    const argv = [...mutexdArgv().slice(0, -1), join(ROOT, "tests/_inject_bug.ts")];
    return { argv, label: `${argv[0].split("/").pop()} tests/_inject_bug.ts (INJECT_BUG=${injectBug})` };
  }
  const binary = join(ROOT, "dist/mutexd");
  if (existsSync(binary) && statSync(binary).mtimeMs > newestSourceMs()) return { argv: [binary], label: "dist/mutexd" };
  const argv = mutexdArgv();
  const why = existsSync(binary) ? "dist/mutexd older than the sources" : "no dist/mutexd";
  return { argv, label: `${argv[0].split("/").pop()} main.ts (${why})` };
}

interface Node {
  id: NodeId;
  url: string;
  proc?: Proc;
  state: NodeState;
  starts: number;
}

export class Supervisor {
  readonly nodes = new Map<NodeId, Node>();
  readonly clusterFile: string;
  /** Start order: a1, p1, b1, then the ring nodes in ring order. */
  readonly order: NodeId[];
  readonly ringNodes: NodeId[];
  private readonly binary: string[];
  private readonly started = new Set<Proc>();
  private readonly clients = new Map<string, Proc>();
  /** CMD PID per client name (see trackCommand). */
  private readonly commands = new Map<string, number>();
  private closed = false;

  private constructor(
    readonly dir: string,
    clusterFile: string,
    urls: Map<NodeId, string>,
    binary: string[],
    readonly lab?: NetLab,
    /** Each node's clock under libfaketime (clock steps and rates); absent: the real clock. */
    readonly clocks?: NodeClocks,
  ) {
    this.clusterFile = clusterFile;
    this.binary = binary;
    this.order = [...urls.keys()];
    this.ringNodes = this.order.filter((id) => roleOf(id) === "ring");
    for (const [id, url] of urls) this.nodes.set(id, { id, url, state: "down", starts: 0 });
    mkdirSync(join(dir, "logs"), { recursive: true });
    // Whatever ends this process, no node it started outlives it.
    process.on("exit", () => this.killAllSync());
  }

  /**
   * Writes the cluster file. Without `lab`: every node on a free loopback port (no secret, the
   * loopback broadcast). With `lab` (created with one namespace per node, in `order`'s order):
   * each node on its namespace's address, the subnet's broadcast for the ring's repair datagrams,
   * and a cluster secret, which a node off loopback needs.
   */
  static async create(dir: string, binary: string[], lab?: NetLab, clocks?: NodeClocks): Promise<Supervisor> {
    const ringSize = lab ? RING_SIZE.netns : RING_SIZE.loopback;
    const order = [...LOCK_NODES, ...Array.from({ length: ringSize }, (_, i) => `r${i + 1}`)];
    if (lab && lab.addresses.length !== order.length) throw new Error(`supervisor: the lab has ${lab.addresses.length} namespaces, the cluster ${order.length} nodes`);
    const urls = new Map<NodeId, string>();
    // A fresh cluster secret per run (256 random bits as hex, the client's secret generator).
    const cluster = lab ? [`secret = "${randomSessionSecret()}"`, `broadcast = "${lab.broadcast}"`] : [];
    const lines = ["[cluster]", 'name = "chaos"', ...cluster, "[settings]", ...SETTINGS, ""];
    for (const [i, id] of order.entries()) {
      const http = lab ? `${lab.addresses[i]}:${NETNS_PORT}` : `127.0.0.1:${await freePort()}`;
      urls.set(id, `http://${http}`);
      lines.push("[[nodes]]", `id = "${id}"`, `role = "${roleOf(id)}"`, `http = "${http}"`, `dataDir = "data/${id}"`, "");
    }
    // The ring order is the file order of ring nodes: r1, r2, ….
    return new Supervisor(dir, writeCluster(dir, lines.join("\n")), urls, binary, lab, clocks);
  }

  /** Node `id`'s namespace index in the lab (its place in `order`). */
  index(id: NodeId): number {
    return this.order.indexOf(id);
  }

  url(id: NodeId): string {
    return this.nodes.get(id)!.url;
  }

  state(id: NodeId): NodeState {
    return this.nodes.get(id)!.state;
  }

  /** Starts `id` (which must be down) and waits until it answers /v1/health; false if it never did. */
  async start(id: NodeId, timeoutMs = 15_000): Promise<boolean> {
    const node = this.nodes.get(id)!;
    if (this.closed) return false;
    if (node.state !== "down") throw new Error(`supervisor: start ${id} while ${node.state}`);
    node.starts += 1;
    const log = join(this.dir, "logs", `${id}.log`);
    appendFileSync(log, `--- start ${node.starts} at ${new Date().toISOString()}\n`);
    const [cmd, ...pre] = this.binary;
    // `ip netns exec` execs the command in place, so the PID is the node's own (kill, SIGSTOP).
    const argv = [...(this.lab?.wrap(this.index(id)) ?? []), cmd, ...pre, "node", "--config", this.clusterFile, "--id", id];
    // The clock preload from the first start on, so a step needs no restart (clock.ts).
    const proc = startProcess(argv[0], argv.slice(1), { env: this.clocks?.env(id) });
    proc.child.stdout!.on("data", (d) => appendFileSync(log, d));
    proc.child.stderr!.on("data", (d) => appendFileSync(log, d));
    this.started.add(proc);
    void proc.exited.then(() => this.started.delete(proc));
    node.proc = proc;
    node.state = "up";
    const deadline = Date.now() + timeoutMs;
    // Bounded by the deadline; each round sleeps.
    while (Date.now() < deadline && !this.closed) {
      if (proc.child.exitCode !== null || proc.child.signalCode !== null) break;
      if (await healthy(node.url)) return true;
      await sleep(50);
    }
    return false;
  }

  /** SIGKILL, and waits for the process to be gone so its port is free. */
  async kill(id: NodeId): Promise<void> {
    const node = this.nodes.get(id)!;
    if (!node.proc || node.state === "down") return;
    node.proc.kill("SIGKILL");
    await Promise.race([node.proc.exited, sleep(5_000)]);
    node.state = "down";
    node.proc = undefined;
  }

  pause(id: NodeId): void {
    const node = this.nodes.get(id)!;
    if (node.state !== "up" || !node.proc) return;
    node.proc.kill("SIGSTOP");
    node.state = "paused";
  }

  resume(id: NodeId): void {
    const node = this.nodes.get(id)!;
    if (node.state !== "paused" || !node.proc) return;
    // process.kill by PID (inside Proc.kill): Deno's child.kill ignores SIGCONT.
    node.proc.kill("SIGCONT");
    node.state = "up";
  }

  /** Brings every node back: mends every cut and link, resumes the paused ones, restarts the dead. */
  async healAll(): Promise<void> {
    this.lab?.heal();
    this.order.forEach((_, i) => this.lab?.undegrade(i));
    for (const id of this.order) this.resume(id);
    for (const id of this.order) {
      if (this.state(id) === "down") await this.start(id);
    }
  }

  /** SIGTERM to every node (SIGCONT first), SIGKILL to those still running after `graceMs`. */
  async stopAll(graceMs = 3_000): Promise<void> {
    this.closed = true;
    const procs = [...this.started];
    for (const proc of procs) {
      proc.kill("SIGCONT");
      proc.kill("SIGTERM");
    }
    await Promise.race([Promise.all(procs.map((p) => p.exited)), sleep(graceMs)]);
    this.killAllSync();
    await Promise.race([Promise.all(procs.map((p) => p.exited)), sleep(graceMs)]);
    for (const node of this.nodes.values()) node.state = "down";
  }

  /** Synchronous last resort (exit hook, signal handler): SIGCONT + SIGKILL by PID. */
  killAllSync(): void {
    for (const proc of this.started) {
      proc.kill("SIGCONT");
      proc.kill("SIGKILL");
    }
    for (const pid of this.commands.values()) {
      signalPid(pid, "SIGCONT");
      signalPid(pid, "SIGKILL");
    }
    this.commands.clear();
  }

  /**
   * Starts a client process (cli_clients.ts) named `name`, tracked by PID like a node so the
   * nemesis may kill or pause it and no client outlives the run; its output goes to logs/NAME.log.
   */
  startClient(name: string, argv: string[], env: Record<string, string>): Proc | undefined {
    if (this.closed) return undefined;
    const log = join(this.dir, "logs", `${name}.log`);
    const [cmd, ...args] = argv;
    const proc = startProcess(cmd, args, { env });
    proc.child.stdout!.on("data", (d) => appendFileSync(log, d));
    proc.child.stderr!.on("data", (d) => appendFileSync(log, d));
    this.started.add(proc);
    this.clients.set(name, proc);
    void proc.exited.then(() => {
      this.started.delete(proc);
      if (this.clients.get(name) === proc) this.clients.delete(name);
    });
    return proc;
  }

  /** Client processes running now, by name (sorted, so a seeded index picks the same name for the same set). */
  runningClients(): string[] {
    return [...this.clients.keys()].sort();
  }

  /**
   * SIGKILL or SIGSTOP / SIGCONT to a running client process; false when it is not running. A
   * stop or continue goes to its CMD too (a whole client paused, as by a GC pause: CMD writes
   * after it, with a token that may be stale); a kill -9 leaves CMD running on, an orphan.
   */
  signalClient(name: string, signal: "SIGKILL" | "SIGSTOP" | "SIGCONT"): boolean {
    const proc = this.clients.get(name);
    if (!proc) return false;
    proc.kill(signal);
    const command = this.commands.get(name);
    if (command !== undefined && signal !== "SIGKILL") signalPid(command, signal);
    return true;
  }

  /**
   * The PID of a client's CMD (it says so through the hub): killed with the rest at the end,
   * since killing the client (its parent) by SIGKILL leaves it running. Untracked once it said
   * it is leaving, so a PID reused later is never signalled.
   */
  trackCommand(client: string, pid: number, running: boolean): void {
    if (running && this.commands.size < COMMANDS_MAX) this.commands.set(client, pid);
    else if (this.commands.get(client) === pid) this.commands.delete(client);
  }

  /** How many processes were started in all. */
  get starts(): number {
    return [...this.nodes.values()].reduce((sum, n) => sum + n.starts, 0);
  }
}

function signalPid(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // it exited meanwhile
  }
}


export async function healthy(url: string, timeoutMs = 500): Promise<boolean> {
  try {
    const response = await fetch(`${url}/v1/health`, { signal: AbortSignal.timeout(timeoutMs) });
    await response.body?.cancel();
    return response.ok;
  } catch {
    return false;
  }
}

/** GET a JSON status, or undefined (down, paused, or an error answer). */
export async function getJson<T>(url: string, timeoutMs = 500): Promise<T | undefined> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    if (!response.ok) {
      await response.body?.cancel();
      return undefined;
    }
    return (await response.json()) as T;
  } catch {
    return undefined;
  }
}
