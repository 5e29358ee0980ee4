/**
 * The peers of `make bench-peers` as processes: etcd, Redis and ZooKeeper from Debian's packages
 * (installed with apt-get if missing), each started fresh on 127.0.0.1 with its data in a temp
 * folder, stopped by PID and the folder removed (the handle's stop). Each handle's `pid` is the
 * server process itself (not a wrapper script), so /proc CPU is the server's.
 */
import { spawnSync } from "node:child_process";
import process from "node:process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { eventually, freePort, removeDir, tempDir } from "../../_harness.ts";
import type { BenchClient, BenchSession } from "../lib/clients.ts";
import { type ServerHandle, spawnServer } from "../lib/server.ts";
import { EtcdLockClient } from "./etcd.ts";
import { RespConnection, RedisLockClient } from "./redis.ts";
import { ZkLockClient } from "./zookeeper.ts";
import { NODE_NICE } from "../../../cluster/scheduling.ts";

export type PeerId = "etcd" | "redis" | "zk";

/** A peer of three members (F1): one handle for them all, and which member leads now. */
export interface PeerCluster extends ServerHandle {
  /** Asks the members and returns the leader's pid. */
  leaderPid(): Promise<number>;
}

/** A client that can also tell whether a lock is still held as it was (F1's check after the kill). */
export interface F1Client extends BenchClient {
  isHeld(name: string, session: BenchSession, token: number): Promise<boolean>;
}

export interface Peer {
  id: PeerId;
  /** Debian's package, and the file that shows it is installed. */
  debianPackage: string;
  installedFile: string;
  start(): Promise<ServerHandle>;
  client(server: ServerHandle): BenchClient;
  /** The server's version as it reports it (for the table's header). */
  version(): string;
  /** Three members on this machine, for F1 (kill -9 the leader); absent: no F1 (Redis, one node). */
  startCluster?(): Promise<PeerCluster>;
  clusterClient?(cluster: PeerCluster): F1Client;
}

const START_TIMEOUT_MS = 30_000;
/**
 * How long F1's etcd client waits for one try of a request before it sends it to the next member:
 * etcd's heartbeat interval (100 ms by default), the period in which a live leader is heard from;
 * a write on a healthy cluster is answered in a few ms (W1's p50: 2 ms). It was 1 s, which made
 * etcd's F1 its election (0.9–1.4 s) rounded up to whole seconds (docs/bench.md, "etcd's F1").
 */
export const ETCD_F1_TRY_MS = 100;
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

/**
 * Starts a peer's process and waits until `ready` says it serves (or it exits, or 30 s pass).
 * At the nice value a mutexd node gives itself (cluster/scheduling.ts), so no system of the run
 * is ahead of another on the run queue; `nice` execs the server in place, so the pid is its own,
 * and every thread it starts inherits the value (without the privilege it runs at the same one).
 */
async function startPeer(id: PeerId, cmd: string, args: string[], dir: string, url: string, ready: () => Promise<boolean>): Promise<ServerHandle> {
  const handle = withDir(spawnServer("nice", ["-n", String(NODE_NICE), cmd, ...args], join(dir, `${id}.log`), url), dir);
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

/** One handle for several member processes (their CPU is summed; stop stops them all). */
function combine(members: ServerHandle[], leaderPid: () => Promise<number>): PeerCluster {
  return {
    url: members[0].url,
    urls: members.map((m) => m.url),
    pid: members[0].pid,
    pids: members.map((m) => m.pid),
    runtime: members[0].runtime,
    logFile: members[0].logFile,
    exited: Promise.race(members.map((m) => m.exited)),
    get exitCode() {
      return members.find((m) => m.exitCode !== undefined)?.exitCode;
    },
    get stopRequested() {
      return members.some((m) => m.stopRequested);
    },
    async stop(graceMs?: number) {
      await Promise.all(members.map((m) => m.stop(graceMs)));
    },
    leaderPid,
  };
}

/** Starts every member at once (they wait for each other), or stops those that started and throws. */
async function startMembers(starts: Array<() => Promise<ServerHandle>>): Promise<ServerHandle[]> {
  const settled = await Promise.allSettled(starts.map((start) => start()));
  const started = settled.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  const failure = settled.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failure) {
    await Promise.all(started.map((m) => m.stop(500)));
    throw failure.reason;
  }
  return started;
}

const MEMBERS = 3;

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
      // One member, defaults otherwise (it fsyncs every write, as peer-bench.md's did).
      const [member] = await memberPorts(1);
      return await startEtcdMember(member, [member]);
    },
    client: (server) => new EtcdLockClient(server.urls),
    async startCluster() {
      const members = await memberPorts(MEMBERS);
      const handles = await startMembers(members.map((m) => () => startEtcdMember(m, members)));
      return combine(handles, async () => {
        for (const [i, h] of handles.entries()) {
          const status = await fetch(`${h.url}/v3/maintenance/status`, { method: "POST", body: "{}" }).then((r) => r.json()).catch(() => undefined);
          if (status && status.leader === status.header?.member_id) return handles[i].pid;
        }
        throw new Error("etcd: no member says it leads");
      });
    },
    // A try that hangs (a proposal lost with the dead leader) is sent to the next member after
    // ETCD_F1_TRY_MS; each request still has 10 s in all (etcd.ts, "tryTimeoutMs").
    clusterClient: (cluster) => new EtcdLockClient(cluster.urls, 10_000, ETCD_F1_TRY_MS),
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
      const [member] = await memberPorts(1);
      return await startZkMember(member, [member]);
    },
    client: (server) => new ZkLockClient(server.urls.join(",")),
    async startCluster() {
      const members = await memberPorts(MEMBERS);
      const handles = await startMembers(members.map((m) => () => startZkMember(m, members)));
      return combine(handles, async () => {
        for (const [i, m] of members.entries()) if ((await askTcp(m.client, "srvr")).includes("Mode: leader")) return handles[i].pid;
        throw new Error("zookeeper: no member says it leads");
      });
    },
    clusterClient: (cluster) => new ZkLockClient(cluster.urls.join(",")),
    version: () => versionOf("java", ["-cp", ZK_CLASSPATH, "org.apache.zookeeper.version.VersionInfoMain"], /version (\d+\.\d+\.\d+)/),
  },
};

interface MemberPorts {
  n: number;
  client: number;
  peer: number;
  election: number;
}

async function memberPorts(count: number): Promise<MemberPorts[]> {
  const out: MemberPorts[] = [];
  for (let n = 1; n <= count; n++) out.push({ n, client: await freePort(), peer: await freePort(), election: await freePort() });
  return out;
}

/** One etcd member of `all` (one: a single-member etcd); ready when /health says true (it has a leader). */
async function startEtcdMember(m: MemberPorts, all: MemberPorts[]): Promise<ServerHandle> {
  const dir = tempDir("mutexd-peer-etcd-");
  const base = `http://127.0.0.1:${m.client}`;
  const peerUrl = (p: MemberPorts) => `http://127.0.0.1:${p.peer}`;
  return await startPeer("etcd", "etcd", [
    "--name", `m${m.n}`, "--data-dir", `${dir}/data`, "--listen-client-urls", base, "--advertise-client-urls", base,
    "--listen-peer-urls", peerUrl(m), "--initial-advertise-peer-urls", peerUrl(m),
    "--initial-cluster", all.map((p) => `m${p.n}=${peerUrl(p)}`).join(","), "--initial-cluster-state", "new",
  ], dir, base, async () => (await fetch(`${base}/health`).then((r) => r.text()).catch(() => "")).includes('"true"'));
}

/**
 * One ZooKeeper server of `all` (one: standalone). peer-bench.md's settings: tickTime 1000 (a 10 s
 * session is within its 2–20 ticks), no per-IP connection cap, no admin server; forceSync is on
 * by default (fsync per write). Runs java itself (not zkServer.sh), so the pid is the server's.
 */
async function startZkMember(m: MemberPorts, all: MemberPorts[]): Promise<ServerHandle> {
  const dir = tempDir("mutexd-peer-zk-");
  mkdirSync(join(dir, "data"));
  const ensemble = all.length === 1 ? "" : `initLimit=10\nsyncLimit=5\n${all.map((p) => `server.${p.n}=127.0.0.1:${p.peer}:${p.election}\n`).join("")}`;
  if (all.length > 1) writeFileSync(join(dir, "data", "myid"), `${m.n}\n`);
  writeFileSync(
    join(dir, "zoo.cfg"),
    `tickTime=1000\ndataDir=${dir}/data\nclientPort=${m.client}\nclientPortAddress=127.0.0.1\nmaxClientCnxns=0\n` +
      `admin.enableServer=false\n4lw.commands.whitelist=ruok,srvr\n${ensemble}`,
  );
  const main = all.length === 1 ? "org.apache.zookeeper.server.ZooKeeperServerMain" : "org.apache.zookeeper.server.quorum.QuorumPeerMain";
  // Ready when it serves: standalone, or a leader or follower of a quorum.
  return await startPeer("zk", "java", ["-cp", ZK_CLASSPATH, main, join(dir, "zoo.cfg")], dir, `127.0.0.1:${m.client}`, async () =>
    /Mode: (standalone|leader|follower)/.test(await askTcp(m.client, "srvr")));
}
