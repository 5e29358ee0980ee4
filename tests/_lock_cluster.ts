/**
 * A real lock service for process tests: primary p1, backup b1 and arbiter a1 started with
 * `mutexd node` from a temporary cluster file, and its status read over HTTP. Not a test file.
 */
import type { StatusAnswer } from "../lib/client/lock_client.ts";
import { fetchTrusting, type TrustingFetch } from "../lib/client/tls.ts";
import { eventually, freePort, type Proc, removeDir, startMutexd, tempDir, TEST_SECRET, writeCluster } from "./_harness.ts";

export interface Cluster {
  dir: string;
  file: string;
  urls: Record<"p1" | "b1" | "a1", string>;
  /** The fetch that reaches the nodes (one trusting `options.ca` when they are on TLS). */
  fetch: TrustingFetch;
  procs: Map<string, Proc>;
  /** (Re)starts `id` (SIGKILL first if it runs), from this tree or the build whose main.ts is `main`. */
  start(id: "p1" | "b1" | "a1", main?: string): Promise<void>;
  stopAll(): Promise<void>;
}

export interface ClusterOptions {
  /** The lock servers keep a durable log (`[cluster] durable = true`). */
  durable?: boolean;
  /** The cluster secret (default TEST_SECRET; null: none, peer traffic unauthenticated). */
  secret?: string | null;
  /** More lines of the [cluster] table (e.g. `tlsCa = "…"`). */
  clusterLines?: string[];
  /** More lines of every [[nodes]] entry (e.g. tlsCert and tlsKey: tests/_tls.ts). */
  nodeLines?: string[];
  /** The nodes serve HTTPS with certificates this CA (PEM) signed: the URLs are https:// and the harness trusts it. */
  ca?: string;
  /** More tables at the end of the cluster file (e.g. `[[tokens]]` with its lines). */
  tables?: string[];
  /** A client token's secret the harness's requests carry (with `[[tokens]]` in `tables`: status needs one). */
  token?: string;
  /** A node's HTTP port, fixed (default: a free one): a test of a start that fails passes one that is taken. */
  ports?: Partial<Record<"p1" | "b1" | "a1", number>>;
}

/** How long a node may take to answer its health check after its start. */
const HEALTH_WAIT_MS = 15_000;

/**
 * Thrown by startCluster when its start failed or timed out, after it stopped every process it
 * started and removed its folder: `pids` and `dir` say what it made, for a test to see them gone.
 */
export class ClusterStartError extends Error {
  constructor(cause: unknown, readonly dir: string, readonly pids: number[]) {
    super(`the cluster did not start: ${(cause as Error)?.message ?? cause}`, { cause });
    this.name = "ClusterStartError";
  }
}

/**
 * Resolves once `proc` answers 200 at `url`; throws as soon as it exits instead (a bad setting, a
 * port taken: the failure is known at once, not after the health wait), or after HEALTH_WAIT_MS.
 */
async function healthyOrExited(id: string, proc: Proc, url: string, fetchFn: TrustingFetch): Promise<void> {
  let exitCode: number | undefined;
  void proc.exited.then((code) => exitCode = code);
  await eventually(`${id} answers ${url}`, async () => {
    if (exitCode !== undefined) throw new Error(`${id} exited with ${exitCode} before it answered ${url}: ${proc.stderr().slice(-500)}`);
    try {
      const response = await fetchFn(url, { signal: AbortSignal.timeout(1_000) });
      await response.body?.cancel();
      return response.ok;
    } catch {
      return false;
    }
  }, HEALTH_WAIT_MS);
}

/** `settings`: lines of the cluster file's [settings] table (e.g. "sessionTtlMs = 2000"). */
export async function startCluster(settings: string[] = [], options: ClusterOptions = {}): Promise<Cluster> {
  const dir = tempDir();
  const ports = options.ports ?? {};
  const [p, b, a] = [ports.p1 ?? await freePort(), ports.b1 ?? await freePort(), ports.a1 ?? await freePort()];
  const secret = options.secret === undefined ? TEST_SECRET : options.secret;
  const clusterLines = [
    ...(options.durable ? ["durable = true"] : []),
    ...(secret === null ? [] : [`secret = "${secret}"`]),
    ...(options.clusterLines ?? []),
  ];
  const node = (id: string, role: string, port: number) =>
    [`[[nodes]]`, `id = "${id}"`, `role = "${role}"`, `http = "127.0.0.1:${port}"`, ...(options.nodeLines ?? [])].join("\n") + "\n\n";
  const file = writeCluster(
    dir,
    (clusterLines.length > 0 ? `[cluster]\n${clusterLines.join("\n")}\n\n` : "") +
      node("p1", "primary", p) + node("b1", "backup", b) + node("a1", "arbiter", a) +
      (settings.length > 0 ? `[settings]\n${settings.join("\n")}\n` : "") +
      (options.tables ?? []).map((line) => `${line}\n`).join(""),
  );
  const scheme = options.ca === undefined ? "http" : "https";
  const urls = { p1: `${scheme}://127.0.0.1:${p}`, b1: `${scheme}://127.0.0.1:${b}`, a1: `${scheme}://127.0.0.1:${a}` };
  const trusting: TrustingFetch = options.ca === undefined ? (url, init) => fetch(url, init) : fetchTrusting(options.ca);
  const { token } = options;
  const fetchFn: TrustingFetch = token === undefined ? trusting : (url, init) => trusting(url, { ...init, headers: { ...init?.headers, authorization: `Bearer ${token}` } });
  const procs = new Map<string, Proc>();
  const cluster: Cluster = {
    dir,
    file,
    urls,
    fetch: fetchFn,
    procs,
    async start(id, main) {
      procs.get(id)?.kill("SIGKILL");
      const proc = startMutexd(["node", "--config", file, "--id", id], { main });
      procs.set(id, proc);
      await healthyOrExited(id, proc, `${urls[id]}/v1/health`, fetchFn);
    },
    async stopAll() {
      for (const proc of procs.values()) {
        proc.kill("SIGCONT");
        proc.kill("SIGKILL");
      }
      await Promise.all([...procs.values()].map((p) => p.exited));
      removeDir(dir);
    },
  };
  try {
    await cluster.start("a1");
    await cluster.start("p1");
    await cluster.start("b1");
    await eventually("p1 serves with b1 in sync", async () => {
      const s = await status(urls.p1, undefined, fetchFn);
      return s?.server?.serving === true && s.server.backup?.arbiterRecordedInSync === true;
    }, 15_000);
  } catch (error) {
    // A start that failed or timed out stops what it started and leaves no folder behind.
    const pids = [...procs.values()].map((proc) => proc.pid);
    await cluster.stopAll();
    throw new ClusterStartError(error, dir, pids);
  }
  return cluster;
}

/** The node's status, or undefined when it does not answer; `fetchFn` for a node on TLS (Cluster.fetch). */
export async function status(url: string, timeoutMs = 1_000, fetchFn: TrustingFetch = fetch): Promise<StatusAnswer | undefined> {
  try {
    const response = await fetchFn(`${url}/v1/status`, { signal: AbortSignal.timeout(timeoutMs) });
    return response.ok ? await response.json() : undefined;
  } catch {
    return undefined;
  }
}

/**
 * How many HTTP answers of status 200 the node gave since its start (its `/metrics`, the scrape
 * itself included): the replication stream's tests count the HTTP requests a backup answered.
 */
export async function httpAnswers200(url: string, fetchFn: TrustingFetch = fetch): Promise<number> {
  const text = await (await fetchFn(`${url}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
  const line = text.split("\n").find((l) => l.startsWith("mutexd_http_responses_total{") && l.includes('code="200"'));
  return line === undefined ? 0 : Number(line.split(" ")[1]);
}
