/**
 * Starts mutexd lock servers as real processes for the benchmark and reads their CPU time and
 * RSS from /proc. Uses the test harness's pieces (freePort, writeCluster, waitForHttp, mutexdArgv).
 * The server's stderr (its JSON log; no line per operation at the default level) goes to a file, not through a pipe
 * into the benchmark process, so the driver does not pay for the server's logging.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, openSync, readFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { freePort, mutexdArgv, removeDir, ROOT, tempDir, waitForHttp, writeCluster } from "../../_harness.ts";
import { NODE_NICE } from "../../../cluster/scheduling.ts";

/** The folders made for servers (cluster file, logs, data) since the last removeServerDirs. */
const serverDirs = new Set<string>();

/** A fresh folder for a server's files; the benchmark removes it after the run (removeServerDirs). */
export function serverDir(): string {
  const dir = tempDir("mutexd-bench-");
  serverDirs.add(dir);
  return dir;
}

/**
 * Removes the server folders made since the last call; with `keep` (a failed run, whose notes
 * name the logs, or --keep-logs) leaves them and returns them, so the caller can say where.
 */
export function removeServerDirs(keep: boolean): string[] {
  const dirs = [...serverDirs];
  serverDirs.clear();
  if (keep) return dirs;
  for (const dir of dirs) removeDir(dir);
  return [];
}

export type RuntimeName = "deno" | "bun";

// deno-lint-ignore no-explicit-any
const g = globalThis as any;
export const currentRuntime: RuntimeName = g.Deno ? "deno" : "bun";

/** argv prefix that runs a TypeScript file under `runtime` (the current one by default). */
export function runtimeArgv(runtime: RuntimeName = currentRuntime): string[] {
  if (runtime === currentRuntime) {
    return runtime === "deno" ? [g.Deno.execPath(), "run", "-A"] : [process.execPath];
  }
  if (runtime === "bun") return [join(ROOT, "node_modules/.bin/bun")];
  // The real deno binary (node_modules/.bin/deno is a node wrapper that would add a process).
  for (const candidate of ["node_modules/deno/deno", "node_modules/@deno/linux-x64-glibc/deno"]) {
    if (existsSync(join(ROOT, candidate))) return [join(ROOT, candidate), "run", "-A"];
  }
  throw new Error("no deno binary under node_modules");
}

/** argv that runs `mutexd` (main.ts) under `runtime`. */
export function serverArgv(runtime: RuntimeName = currentRuntime): string[] {
  if (runtime === currentRuntime) return mutexdArgv();
  return [...runtimeArgv(runtime), join(ROOT, "main.ts")];
}

/** CPU seconds (user + system, all threads) of a process, from /proc/<pid>/stat. */
export function cpuSeconds(pid: number | "self"): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name (which may contain spaces) start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    return (Number(fields[11]) + Number(fields[12])) / 100; // USER_HZ is 100 on Linux
  } catch {
    return Number.NaN;
  }
}

/**
 * Voluntary context switches of a process so far (/proc/<pid>/status): each is the process going
 * to sleep, so their rate over an idle phase is about its wake-ups (timers, messages).
 */
export function voluntarySwitches(pid: number): number {
  try {
    const match = /voluntary_ctxt_switches:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** VmRSS of a process in MiB, from /proc/<pid>/status. */
export function rssMiB(pid: number): number {
  try {
    const match = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) / 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** Measures CPU% of the server and of this (client) process over an interval. */
export class CpuMeter {
  private server0 = 0;
  private client0 = 0;
  private t0 = 0;
  private readonly pids: number[];
  /** `server`: a pid, or a deployment (then the CPU of all its processes is summed). */
  constructor(server: number | { pids: number[] }) {
    this.pids = typeof server === "number" ? [server] : server.pids;
  }
  private serverSeconds(): number {
    return this.pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
  }
  start(): void {
    this.server0 = this.serverSeconds();
    this.client0 = cpuSeconds("self");
    this.t0 = performance.now();
  }
  /** Percent of one core (100 = one core busy) since start(). */
  stop(): { serverCpuPct: number; clientCpuPct: number } {
    const seconds = (performance.now() - this.t0) / 1000;
    return {
      serverCpuPct: (100 * (this.serverSeconds() - this.server0)) / seconds,
      clientCpuPct: (100 * (cpuSeconds("self") - this.client0)) / seconds,
    };
  }
}

export interface ServerHandle {
  /** URL of the serving node (the primary). */
  url: string;
  /** All lock servers clients may use, primary first (one entry for a single node). */
  urls: string[];
  /** pid of the serving node (RSS is read from it). */
  pid: number;
  /** Every process of the deployment (CPU is summed over them). */
  pids: number[];
  /** pid of the backup (`--topology replicated` only; W4 reads its RSS too). */
  backupPid?: number;
  runtime: RuntimeName;
  logFile: string;
  /** Exit code or 128+signal once the process ended. */
  exited: Promise<number>;
  /** Set when the process has ended (undefined while it runs). */
  readonly exitCode: number | undefined;
  /** Whether stop() was called (an end after it is not the process ending by itself). */
  readonly stopRequested: boolean;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * "single": one `mutexd node` (role primary, no backup, no arbiter), as in the brief.
 * "replicated": arbiter + primary + backup on this machine, as cluster/cluster.toml; every change is
 * acknowledged by the backup before the client gets its answer.
 */
export type Topology = "single" | "replicated";

export interface StartOptions {
  runtime?: RuntimeName;
  topology?: Topology;
  /** Overrides for the cluster file's [settings] table. */
  settings?: Record<string, number>;
  /** `durable = true` in the cluster file: the lock servers log and fsync every change. */
  durable?: boolean;
  /** A cluster secret in the cluster file: every peer message carries an HMAC (cluster/peer_auth.ts). */
  secret?: boolean;
  id?: string;
  role?: "primary" | "backup";
}

/** Starts a fresh deployment (one node, or arbiter + primary + backup) and waits until it serves. */
export async function startServer(options: StartOptions = {}): Promise<ServerHandle> {
  if ((options.topology ?? "single") === "replicated") return await startReplicated(options);
  const dir = serverDir();
  const port = await freePort();
  const id = options.id ?? "p1";
  const settings = Object.entries(options.settings ?? {}).map(([k, v]) => `${k} = ${v}\n`).join("");
  const toml = `[cluster]\nname = "bench"\n${durableLine(options)}\n[settings]\n${settings}\n[[nodes]]\nid = "${id}"\nrole = "${
    options.role ?? "primary"
  }"\nhttp = "127.0.0.1:${port}"\n`;
  const file = writeCluster(dir, toml);
  return await startNode(file, id, `http://127.0.0.1:${port}`, options.runtime, dir);
}

/**
 * Starts `mutexd node --config file --id id` and waits until `url`/v1/health answers.
 * Workloads with several nodes (primary + backup, F1, the ring) write their own cluster file and
 * call this per node. `launcher` goes before the command and must exec it in place, so the pid
 * stays the node's (the ring's lossy node: `ip netns exec NAME`).
 */
export async function startNode(
  file: string,
  id: string,
  url: string,
  runtime: RuntimeName = currentRuntime,
  logDir: string = serverDir(),
  launcher: string[] = [],
): Promise<ServerHandle> {
  return await startServing([...launcher, ...serverArgv(runtime), "node", "--config", file, "--id", id], id, url, runtime, logDir);
}

/**
 * The `bare` baseline (tests/bench/bare_server.ts): the runtime's own HTTP server answering the
 * client API's JSON without any lock logic, started like a node, on a free loopback port.
 */
export async function startBare(runtime: RuntimeName = currentRuntime): Promise<ServerHandle> {
  const port = await freePort();
  const script = join(ROOT, "tests/bench/bare_server.ts");
  // At a node's nice value (cluster/scheduling.ts), as the mutexd it is compared with gives itself.
  return await startServing(["nice", "-n", String(NODE_NICE), ...runtimeArgv(runtime), script, String(port)], "bare", `http://127.0.0.1:${port}`, runtime, serverDir());
}

/** Runs `argv` (stdout and stderr to `logDir`/`id`.log) and waits until `url`/v1/health answers. */
async function startServing(argv: string[], id: string, url: string, runtime: RuntimeName, logDir: string): Promise<ServerHandle> {
  const [cmd, ...args] = argv;
  const handle = spawnServer(cmd, args, join(logDir, `${id}.log`), url, runtime);
  try {
    await Promise.race([
      waitForHttp(`${url}/v1/health`, 20_000),
      handle.exited.then((code) => {
        throw new Error(`${id} exited with ${code} during start-up; log: ${handle.logFile}`);
      }),
    ]);
  } catch (error) {
    await handle.stop(500);
    throw error;
  }
  return handle;
}

/**
 * Spawns a server process (mutexd, or a peer of `make bench-peers`) with stdout and stderr to
 * `logFile`, and returns its handle; `url` is where it serves. Waiting until it serves is the caller's.
 */
export function spawnServer(cmd: string, args: string[], logFile: string, url: string, runtime: RuntimeName = currentRuntime): ServerHandle {
  const fd = openSync(logFile, "w");
  let child: ChildProcess;
  try {
    child = spawn(cmd, args, {
      cwd: ROOT,
      env: { ...process.env, NO_COLOR: "1" },
      stdio: ["ignore", fd, fd],
    });
  } finally {
    closeSync(fd);
  }
  const pid = child.pid!;
  let done = false;
  let stopRequested = false;
  let exitCode: number | undefined;
  const exited = new Promise<number>((resolve) => {
    child.on("exit", (code, signal) => {
      done = true;
      exitCode = code ?? 128 + (signal === "SIGKILL" ? 9 : signal === "SIGTERM" ? 15 : signal === "SIGSEGV" ? 11 : 0);
      resolve(exitCode);
    });
  });
  const handle: ServerHandle = {
    url,
    urls: [url],
    pid,
    pids: [pid],
    runtime,
    logFile,
    exited,
    get exitCode() {
      return exitCode;
    },
    get stopRequested() {
      return stopRequested;
    },
    async stop(graceMs = 3_000) {
      stopRequested = true;
      if (done) return;
      signal(pid, "SIGTERM");
      const timer = setTimeout(() => signal(pid, "SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
  return handle;
}

/** process.kill by PID (only processes this benchmark started); ignores "already gone". */
export function signal(pid: number, sig: "SIGTERM" | "SIGKILL" | "SIGSTOP" | "SIGCONT"): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

/** The [cluster] lines the options ask for: durable, and a cluster secret (peer traffic authenticated). */
function durableLine(options: StartOptions): string {
  return (options.durable ? "durable = true\n" : "") + (options.secret ? `secret = "${"b".repeat(64)}"\n` : "");
}

/** Arbiter, backup and primary as three processes; the returned handle speaks for all of them. */
async function startReplicated(options: StartOptions): Promise<ServerHandle> {
  const dir = serverDir();
  const [pa, pp, pb] = [await freePort(), await freePort(), await freePort()];
  const settings = Object.entries(options.settings ?? {}).map(([k, v]) => `${k} = ${v}\n`).join("");
  const node = (id: string, role: string, port: number, extra = "") =>
    `[[nodes]]\nid = "${id}"\nrole = "${role}"\nhttp = "127.0.0.1:${port}"\n${extra}\n`;
  const file = writeCluster(
    dir,
    `[cluster]\nname = "bench"\n${durableLine(options)}\n[settings]\n${settings}\n` + node("a1", "arbiter", pa, `dataDir = "${dir}/a1"\n`) +
      node("p1", "primary", pp) + node("b1", "backup", pb),
  );
  const url = (port: number) => `http://127.0.0.1:${port}`;
  const started: ServerHandle[] = [];
  try {
    started.push(await startNode(file, "a1", url(pa), options.runtime, dir));
    started.push(await startNode(file, "p1", url(pp), options.runtime, dir));
    started.push(await startNode(file, "b1", url(pb), options.runtime, dir));
    // Health answers before the primary holds the arbiter's lease: wait until a session opens.
    const deadline = Date.now() + 20_000;
    for (;;) {
      const response = await fetch(`${url(pp)}/v1/sessions`, { method: "POST", body: "{}" }).catch(() => undefined);
      const body = response ? await response.json().catch(() => ({})) : {};
      if (response?.ok) {
        await fetch(`${url(pp)}/v1/sessions/${encodeURIComponent(body.session)}`, { method: "DELETE", body: JSON.stringify({ sessionSecret: body.sessionSecret }) })
          .then((r) => r.body?.cancel());
        break;
      }
      if (Date.now() > deadline) throw new Error(`replicated deployment did not serve within 20 s (${JSON.stringify(body)})`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } catch (error) {
    await Promise.all(started.map((s) => s.stop(500)));
    throw error;
  }
  const [arbiter, primary, backup] = started;
  return {
    url: primary.url,
    urls: [primary.url, backup.url],
    pid: primary.pid,
    pids: started.map((s) => s.pid),
    backupPid: backup.pid,
    runtime: primary.runtime,
    logFile: primary.logFile,
    exited: Promise.race(started.map((s) => s.exited)),
    get exitCode() {
      return primary.exitCode ?? backup.exitCode ?? arbiter.exitCode;
    },
    get stopRequested() {
      return started.some((s) => s.stopRequested);
    },
    async stop(graceMs?: number) {
      await Promise.all(started.map((s) => s.stop(graceMs)));
    },
  };
}
