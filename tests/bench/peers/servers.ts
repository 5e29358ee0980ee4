/**
 * The peers of `make bench-peers` as processes: etcd, Redis and ZooKeeper from Debian's packages
 * (installed with apt-get if missing), each started fresh on 127.0.0.1 with its data in a temp
 * folder, stopped by PID and the folder removed (the handle's stop). Each handle's `pid` is the
 * server process itself (not a wrapper script), so /proc CPU is the server's.
 */
import { spawnSync } from "node:child_process";
import process from "node:process";
import { existsSync, writeFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { eventually, freePort, removeDir, tempDir } from "../../_harness.ts";
import type { BenchClient } from "../lib/clients.ts";
import { type ServerHandle, spawnServer } from "../lib/server.ts";
import { EtcdLockClient } from "./etcd.ts";
import { RespConnection, RedisLockClient } from "./redis.ts";
import { ZkLockClient } from "./zookeeper.ts";

export type PeerId = "etcd" | "redis" | "zk";

export interface Peer {
  id: PeerId;
  /** Debian's package, and the file that shows it is installed. */
  debianPackage: string;
  installedFile: string;
  start(): Promise<ServerHandle>;
  client(server: ServerHandle): BenchClient;
  /** The server's version as it reports it (for the table's header). */
  version(): string;
}

const START_TIMEOUT_MS = 30_000;
const ZK_CLASSPATH = "/usr/share/java/zookeeper.jar:/etc/zookeeper/conf_example";

/**
 * Installs the peers' packages that are missing (one `apt-get install`, after `apt-get update`
 * if the first try fails). Returns, per peer that is still missing, why: that peer is skipped.
 */
export function ensureInstalled(peers: readonly Peer[], log: (message: string) => void): Map<PeerId, string> {
  const missing = peers.filter((p) => !existsSync(p.installedFile));
  if (missing.length > 0) {
    const packages = missing.map((p) => p.debianPackage);
    log(`installing ${packages.join(" ")} from Debian's packages (apt-get; needs root)`);
    const install = () =>
      spawnSync("apt-get", ["install", "-y", "-q", ...packages], { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" }, timeout: 600_000 });
    if (install().status !== 0) {
      spawnSync("apt-get", ["update", "-q"], { stdio: "ignore", timeout: 300_000 });
      const second = install();
      if (second.status !== 0) log(`apt-get install failed: ${String(second.stderr ?? second.error ?? "").trim().slice(-300)}`);
    }
  }
  const skipped = new Map<PeerId, string>();
  for (const p of missing) if (!existsSync(p.installedFile)) skipped.set(p.id, `${p.debianPackage} could not be installed (no ${p.installedFile})`);
  return skipped;
}

/** Wraps a process handle so that its stop also removes its data folder. */
function withDir(handle: ServerHandle, dir: string): ServerHandle {
  const stop = handle.stop.bind(handle);
  return Object.assign(handle, {
    async stop(graceMs?: number) {
      await stop(graceMs);
      removeDir(dir);
    },
  });
}

/** Starts a peer's process and waits until `ready` says it serves (or it exits, or 30 s pass). */
async function startPeer(id: PeerId, cmd: string, args: string[], dir: string, url: string, ready: () => Promise<boolean>): Promise<ServerHandle> {
  const handle = withDir(spawnServer(cmd, args, join(dir, `${id}.log`), url), dir);
  try {
    await Promise.race([
      eventually(`${id} serves at ${url}`, ready, START_TIMEOUT_MS),
      handle.exited.then((code) => {
        throw new Error(`${id} exited with ${code} during start-up`);
      }),
    ]);
  } catch (error) {
    await handle.stop(500);
    throw error;
  }
  return handle;
}

const portOf = (url: string) => Number(new URL(url).port);
const versionOf = (cmd: string, args: string[], pattern: RegExp) => {
  const out = spawnSync(cmd, args, { encoding: "utf8", timeout: 20_000 });
  return pattern.exec(`${out.stdout}${out.stderr}`)?.[1] ?? "?";
};

/** Sends a one-line request on a fresh TCP connection and returns what comes back (ZooKeeper's four-letter words). */
function askTcp(port: number, line: string): Promise<string> {
  return new Promise((resolve) => {
    let answer = "";
    const socket = net.connect(port, "127.0.0.1", () => socket.end(line));
    socket.setTimeout(1_000, () => socket.destroy());
    socket.on("data", (d) => (answer += d));
    socket.on("error", () => resolve(""));
    socket.on("close", () => resolve(answer));
  });
}

export const PEERS: Record<PeerId, Peer> = {
  etcd: {
    id: "etcd",
    debianPackage: "etcd-server",
    installedFile: "/usr/bin/etcd",
    async start() {
      const dir = tempDir("mutexd-peer-etcd-");
      const [client, peer] = [await freePort(), await freePort()];
      const base = `http://127.0.0.1:${client}`;
      // One member, defaults otherwise (it fsyncs every write, as peer-bench.md's did).
      return await startPeer("etcd", "etcd", [
        "--data-dir", `${dir}/data`, "--listen-client-urls", base, "--advertise-client-urls", base,
        "--listen-peer-urls", `http://127.0.0.1:${peer}`, "--initial-advertise-peer-urls", `http://127.0.0.1:${peer}`,
        "--initial-cluster", `default=http://127.0.0.1:${peer}`,
      ], dir, base, async () => (await fetch(`${base}/health`).then((r) => r.text()).catch(() => "")).includes('"true"'));
    },
    client: (server) => new EtcdLockClient(server.url),
    version: () => versionOf("etcd", ["--version"], /etcd Version: (\S+)/),
  },
  redis: {
    id: "redis",
    debianPackage: "redis-server",
    installedFile: "/usr/bin/redis-server",
    async start() {
      const dir = tempDir("mutexd-peer-redis-");
      const port = await freePort();
      // Built-in defaults (RDB snapshots, no AOF) as in peer-bench.md; files in the temp folder.
      return await startPeer("redis", "redis-server", ["--bind", "127.0.0.1", "--port", String(port), "--dir", dir], dir, `redis://127.0.0.1:${port}`, async () => {
        const conn = await RespConnection.connect(port).catch(() => undefined);
        const pong = await conn?.command("PING").catch(() => "");
        conn?.close();
        return pong === "PONG";
      });
    },
    client: (server) => new RedisLockClient(portOf(server.url)),
    version: () => versionOf("redis-server", ["--version"], /v=(\S+)/),
  },
  zk: {
    id: "zk",
    debianPackage: "zookeeper",
    installedFile: "/usr/share/java/zookeeper.jar",
    async start() {
      const dir = tempDir("mutexd-peer-zk-");
      const port = await freePort();
      // peer-bench.md's settings: tickTime 1000 (a 10 s session is within its 2–20 ticks),
      // no per-IP connection cap, no admin server; forceSync is on by default (fsync per write).
      writeFileSync(
        join(dir, "zoo.cfg"),
        `tickTime=1000\ndataDir=${dir}/data\nclientPort=${port}\nclientPortAddress=127.0.0.1\nmaxClientCnxns=0\n` +
          `admin.enableServer=false\n4lw.commands.whitelist=ruok\n`,
      );
      // java itself (not zkServer.sh), so the pid is the server's.
      return await startPeer("zk", "java", ["-cp", ZK_CLASSPATH, "org.apache.zookeeper.server.ZooKeeperServerMain", join(dir, "zoo.cfg")], dir, `127.0.0.1:${port}`, async () => (await askTcp(port, "ruok")) === "imok");
    },
    client: (server) => new ZkLockClient(server.url),
    version: () => versionOf("java", ["-cp", ZK_CLASSPATH, "org.apache.zookeeper.version.VersionInfoMain"], /version (\d+\.\d+\.\d+)/),
  },
};
