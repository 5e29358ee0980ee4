/**
 * Helpers shared by the tests: start mutexd as a real process under the runtime running the
 * tests, find free ports, write temporary cluster files, wait for health. Not a test file.
 */
import { spawn, type ChildProcess } from "node:child_process";
import dgram from "node:dgram";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { constants as osConstants, tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";

/**
 * Ring settings for tests and chaos runs: a quicker token and shorter leases than the defaults,
 * so a run sees many rotations and regenerations in seconds. Lines of a `[settings]` table.
 */
export const QUICK_RING_SETTINGS = [
  "tokenIdlePaceMs = 50",
  "tokenHopTimeoutMs = 500",
  "tokenRetryMs = 50",
  "tokenLossMs = 1000",
  "ringLeaseMaxMs = 3000",
  "ringLeaseMs = 3000",
];

/**
 * The cluster secret the shared cluster helpers (_lock_cluster.ts, _ring_cluster.ts) write by
 * default, so every process test runs with authenticated peer traffic (docs/security.md). An
 * attack test plays an outsider who does not know it (or signs with it to play a member).
 */
export const TEST_SECRET = "test-secret-0123456789abcdef0123456789abcdef";

export const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** package.json's version, read as a file: what `--version`, status and health must show. */
export const PACKAGE_VERSION: string = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).version;

/** argv that runs main.ts (this tree's, or `main`: another build's) under the runtime executing this test (Deno or Bun). */
export function mutexdArgv(main = `${ROOT}/main.ts`): string[] {
  // deno-lint-ignore no-explicit-any
  const g = globalThis as any;
  if (g.Deno) return [g.Deno.execPath(), "run", "-A", main];
  return [process.execPath, main];
}

/** Ports freePort handed out lately in this process, oldest first (bounded: PORTS_HANDED_OUT_MAX). */
const portsHandedOut: number[] = [];
const PORTS_HANDED_OUT_MAX = 256;

/**
 * A port that was free a moment ago (bind to 0, read, close), and not one this process handed out
 * lately: the kernel may give a just-closed port to the next bind to 0, and a cluster asks for its
 * nodes' ports one after another before any of them binds (two nodes given one port made a
 * cluster's start fail).
 */
export async function freePort(): Promise<number> {
  // Bounded: a repeat is rare; 20 repeats in a row would mean the kernel hands out one port only.
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await boundAndClosedPort();
    if (portsHandedOut.includes(port)) continue;
    portsHandedOut.push(port);
    if (portsHandedOut.length > PORTS_HANDED_OUT_MAX) portsHandedOut.shift();
    return port;
  }
  throw new Error("freePort: the kernel kept handing out ports given out lately");
}

function boundAndClosedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** A UDP port that was free a moment ago on every IPv4 address (bind to 0, read, close). */
export function freeUdpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket("udp4");
    socket.once("error", reject);
    socket.bind(0, "0.0.0.0", () => {
      const { port } = socket.address();
      socket.close(() => resolve(port));
    });
  });
}

export function tempDir(prefix = "mutexd-test-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** Removes a directory a test made (tempDir), with everything in it; a missing one is fine. */
export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/**
 * Writes `dir`/bin/mutexd, a `mutexd` (this runtime and main.ts) for the shell commands that
 * `lock` and `ring lock` run, and returns that bin directory to put on their PATH.
 */
export function writeMutexdWrapper(dir: string): string {
  const bin = join(dir, "bin");
  mkdirSync(bin, { recursive: true });
  const argv = mutexdArgv().map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(" ");
  writeFileSync(join(bin, "mutexd"), `#!/bin/sh\nexec ${argv} "$@"\n`);
  chmodSync(join(bin, "mutexd"), 0o755);
  return bin;
}

/** Writes a cluster file into `dir` and returns its path. */
export function writeCluster(dir: string, toml: string, name = "cluster.toml"): string {
  const file = join(dir, name);
  writeFileSync(file, toml);
  return file;
}

export interface Proc {
  child: ChildProcess;
  pid: number;
  stdout: () => string;
  stderr: () => string;
  /** Resolves with the exit code (or 128+signal) when the process ends. */
  exited: Promise<number>;
  kill(signal?: NodeJS.Signals): void;
}

/** Spawns `mutexd ...args` (of the build whose main.ts is `options.main`, default this tree's) and collects its output. */
export function startMutexd(args: string[], options: { env?: Record<string, string>; cwd?: string; main?: string } = {}): Proc {
  const [cmd, ...pre] = mutexdArgv(options.main);
  return startProcess(cmd, [...pre, ...args], options);
}

/** Signal name → number, from the platform (os.constants), for the 128+N exit status. */
export function signalNumber(signal: string): number {
  return (osConstants.signals as Record<string, number>)[signal] ?? 0;
}

export function startProcess(cmd: string, args: string[], options: { env?: Record<string, string>; cwd?: string } = {}): Proc {
  const child = spawn(cmd, args, {
    cwd: options.cwd ?? ROOT,
    env: { ...process.env, NO_COLOR: "1", ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (err += d));
  const exited = new Promise<number>((resolve) => {
    child.on("exit", (code, signal) => resolve(code ?? 128 + signalNumber(signal ?? "")));
  });
  return {
    child,
    pid: child.pid!,
    stdout: () => out,
    stderr: () => err,
    exited,
    kill: (signal = "SIGTERM") => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      // process.kill, not child.kill: Deno's child.kill ignores SIGCONT after a SIGSTOP.
      try {
        process.kill(child.pid!, signal);
      } catch {
        // it exited meanwhile
      }
    },
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Polls `url` until it answers 200 or `timeoutMs` passes (then throws). `fetchFn`: a fetch that
 * trusts the test's CA for a node on TLS (lib/client/tls.ts fetchTrusting).
 */
export async function waitForHttp(url: string, timeoutMs = 15_000, fetchFn: (url: string) => Promise<Response> = fetch): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    try {
      const response = await fetchFn(url);
      await response.body?.cancel();
      if (response.ok) return;
      last = `status ${response.status}`;
    } catch (error) {
      last = (error as Error).message;
    }
    await sleep(50);
  }
  throw new Error(`${url} did not come up within ${timeoutMs} ms (${last})`);
}

/**
 * Resolves when `proc`'s stdout matches `pattern` (on the output event, not by polling), with
 * the time of that event (Date.now()); rejects after `timeoutMs`.
 */
export function stdoutMatch(proc: Proc, pattern: RegExp, timeoutMs = 10_000): Promise<number> {
  return new Promise((resolve, reject) => {
    const stream = proc.child.stdout!;
    const timer = setTimeout(() => done(new Error(`stdout did not match ${pattern} within ${timeoutMs} ms: ${JSON.stringify(proc.stdout())}`)), timeoutMs);
    const check = () => {
      if (pattern.test(proc.stdout())) done();
    };
    function done(error?: Error) {
      clearTimeout(timer);
      stream.off("data", check);
      if (error) reject(error);
      else resolve(Date.now());
    }
    // After the harness's own collector (registered first), so proc.stdout() has the new data.
    stream.on("data", check);
    check();
  });
}

/** Polls `check` until it returns true or the time runs out (then throws with `what`). */
export async function eventually(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await sleep(25);
  }
  throw new Error(`timed out waiting for: ${what}`);
}

/** A request body as a stream that counts the bytes the server pulls (`pulledBytes()`: 0 when refused unread). */
export function countingBody(bytes: Uint8Array): { stream: ReadableStream<Uint8Array>; pulledBytes(): number } {
  let pulled = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      pulled += bytes.byteLength;
      controller.enqueue(bytes);
      controller.close();
    },
  }, { highWaterMark: 0 });
  return { stream, pulledBytes: () => pulled };
}

/** A request body that gives half of `bytes`, then fails, as a reset connection's does. */
export function brokenOffBody(bytes: Uint8Array): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(bytes.subarray(0, bytes.byteLength >> 1));
      controller.error(new Error("connection reset"));
    },
  });
}
