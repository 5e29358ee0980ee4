/**
 * A real lock service for process tests: primary p1, backup b1 and arbiter a1 started with
 * `mutexd node` from a temporary cluster file, and its status read over HTTP. Not a test file.
 */
import type { StatusAnswer } from "../lib/client/lock_client.ts";
import { eventually, freePort, type Proc, removeDir, startMutexd, tempDir, TEST_SECRET, waitForHttp, writeCluster } from "./_harness.ts";

export interface Cluster {
  dir: string;
  file: string;
  urls: Record<"p1" | "b1" | "a1", string>;
  procs: Map<string, Proc>;
  start(id: "p1" | "b1" | "a1"): Promise<void>;
  stopAll(): Promise<void>;
}

/**
 * `settings`: lines of the cluster file's [settings] table (e.g. "sessionTtlMs = 2000");
 * `durable`: the lock servers keep a durable log (`[cluster] durable = true`);
 * `secret`: the cluster secret (default TEST_SECRET; null: none, peer traffic unauthenticated).
 */
export async function startCluster(settings: string[] = [], options: { durable?: boolean; secret?: string | null } = {}): Promise<Cluster> {
  const dir = tempDir();
  const [p, b, a] = [await freePort(), await freePort(), await freePort()];
  const secret = options.secret === undefined ? TEST_SECRET : options.secret;
  const file = writeCluster(
    dir,
    `[cluster]\n${options.durable ? "durable = true\n" : ""}${secret === null ? "" : `secret = "${secret}"\n`}\n` +
      `[[nodes]]\nid = "p1"\nrole = "primary"\nhttp = "127.0.0.1:${p}"\n\n` +
      `[[nodes]]\nid = "b1"\nrole = "backup"\nhttp = "127.0.0.1:${b}"\n\n` +
      `[[nodes]]\nid = "a1"\nrole = "arbiter"\nhttp = "127.0.0.1:${a}"\n` +
      (settings.length > 0 ? `\n[settings]\n${settings.join("\n")}\n` : ""),
  );
  const urls = { p1: `http://127.0.0.1:${p}`, b1: `http://127.0.0.1:${b}`, a1: `http://127.0.0.1:${a}` };
  const procs = new Map<string, Proc>();
  const cluster: Cluster = {
    dir,
    file,
    urls,
    procs,
    async start(id) {
      procs.get(id)?.kill("SIGKILL");
      const proc = startMutexd(["node", "--config", file, "--id", id]);
      procs.set(id, proc);
      await waitForHttp(`${urls[id]}/v1/health`);
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
  await cluster.start("a1");
  await cluster.start("p1");
  await cluster.start("b1");
  await eventually("p1 serves with b1 in sync", async () => {
    const s = await status(urls.p1);
    return s?.server?.serving === true && s.server.backup?.arbiterRecordedInSync === true;
  }, 15_000);
  return cluster;
}

export async function status(url: string, timeoutMs = 1_000): Promise<StatusAnswer | undefined> {
  try {
    const response = await fetch(`${url}/v1/status`, { signal: AbortSignal.timeout(timeoutMs) });
    return response.ok ? await response.json() : undefined;
  } catch {
    return undefined;
  }
}
