/**
 * A ring of real `mutexd node` processes for process tests: writes the cluster file (the
 * QUICK_RING_SETTINGS of _harness.ts plus a test's own lines), starts, kills and pauses nodes
 * by PID, reads their status and logs, and derives every wait from the ring's settings plus a
 * named slack. Not a test file.
 *
 * The bounds follow the view change (docs/ring-view.md): a view forms within about one
 * viewChangeTimeoutMs (a promise may be deferred by a lease hold of tokenLeaseMs, a failed
 * attempt retries after viewChangeRetryMs × place in the file); a token unknown to every
 * promiser waits ringLeaseMaxMs + tokenLeaseSafetyMs before its first grant; a token at a live
 * promiser waits only what is left of that section's lease.
 */
import type { RingClient, RingStatus } from "../lib/client/ring_client.ts";
import { connectRing } from "../lib/client/ring_client.ts";
import { fetchTrusting } from "../lib/client/tls.ts";
import type { ViewStatus } from "../lib/core/ring/view.ts";
import { DEFAULT_SETTINGS, type Settings } from "../lib/settings.ts";
import { eventually, freePort, freeUdpPort, mutexdArgv, type Proc, QUICK_RING_SETTINGS, removeDir, startProcess, tempDir, TEST_SECRET, waitForHttp, writeCluster } from "./_harness.ts";

/** Parses `key = number` lines of a [settings] table over the defaults (typed: a misspelt name fails the type check). */
export function ringSettings(lines: readonly string[]): Settings {
  const settings: Record<string, unknown> = { ...DEFAULT_SETTINGS };
  for (const line of lines) {
    const [key, value] = line.split("=").map((part) => part.trim());
    if (!(key in DEFAULT_SETTINGS) || !Number.isFinite(Number(value))) throw new Error(`not a numeric setting line: ${line}`);
    settings[key] = Number(value);
  }
  return settings as Settings;
}

/** The settings every ring of these tests runs with (QUICK_RING_SETTINGS over the defaults). */
export const RING: Settings = ringSettings(QUICK_RING_SETTINGS);

/**
 * The [settings] lines of a ring: QUICK_RING_SETTINGS, then a test's own lines; a test's line
 * replaces the quick line of the same key (TOML takes a key once).
 */
export function settingsLines(own: readonly string[] = []): string[] {
  const keyOf = (line: string) => line.split("=")[0].trim();
  const ownKeys = new Set(own.map(keyOf));
  return [...QUICK_RING_SETTINGS.filter((line) => !ownKeys.has(keyOf(line))), ...own];
}
/** Room for scheduling (every node is a process on two shared cores), and for a node's start. */
export const SLACK_MS = 5_000;

/** One trip of the token around `size` nodes, every hop at its timeout and idle pause. */
export function roundMs(size: number, settings: Settings = RING): number {
  return size * (settings.tokenHopTimeoutMs + settings.tokenIdlePaceMs);
}

/**
 * One view change from its trigger to the install: a promise deferred by a lease hold
 * (tokenLeaseMs), an attempt that gives up after viewChangeTimeoutMs, and the retry after
 * viewChangeRetryMs × (1 + place in the file).
 */
export function viewChangeMs(size: number, settings: Settings = RING): number {
  return settings.tokenLeaseMs + settings.viewChangeTimeoutMs + size * settings.viewChangeRetryMs;
}

/** The grant wait of a token nobody among the promisers holds: the longest section it may still serve. */
export function unknownTokenWaitMs(settings: Settings = RING): number {
  return settings.ringLeaseMaxMs + settings.tokenLeaseSafetyMs;
}

/**
 * A hand-off to a dead successor failing ringRepairRetries times in a row, the trigger of a
 * suspect view change: each attempt at most tokenHopTimeoutMs, with the link's backoff between
 * (tokenRetryMs doubling, capped at tokenHopTimeoutMs).
 */
export function handoffFailuresMs(settings: Settings = RING): number {
  const retries = settings.ringRepairRetries;
  const backoff = Array.from({ length: retries }, (_, i) => Math.min(settings.tokenHopTimeoutMs, settings.tokenRetryMs * 2 ** i));
  return backoff.reduce((a, b) => a + b, 0) + retries * settings.tokenHopTimeoutMs;
}

/**
 * From a start until the token has visited every node: a first view (the nodes started one
 * after the other, so a first attempt may miss some and a second brings them in), then one round.
 */
export function tokenEverywhereMs(size: number, settings: Settings = RING): number {
  return 2 * viewChangeMs(size, settings) + roundMs(size, settings) + SLACK_MS;
}

/** What `GET /v1/ring/status` answers, with the view change's part (cluster/ring/api.ts). */
export type NodeStatus = RingStatus & {
  view: ViewStatus & { lastChange: { reason: string; wantedAtMs: number; installedAtMs: number | null; epoch: number | null } | null };
};

export interface RingOptions {
  size: number;
  /** Extra [settings] lines (after QUICK_RING_SETTINGS; one of the same key replaces the quick line: settingsLines). */
  settings?: string[];
  /** Extra [cluster] lines (e.g. the repair channel's broadcast address). */
  clusterLines?: string[];
  /** The cluster secret (default TEST_SECRET unless clusterLines give one; null: none, peer traffic unauthenticated). */
  secret?: string | null;
  /** A free UDP port per node for the repair channel (default: the HTTP port's number). */
  udp?: boolean;
  /** Per node: its HTTP address as host:port (default 127.0.0.1 and a free port). */
  addresses?: string[];
  /** Per node: argv put before mutexd's own (e.g. `ip netns exec NS`). */
  wrap?: (id: string) => string[];
  /** Adds an arbiter `a1` (it coordinates the ring's view changes); `start("a1")` starts it, `startAll` too. */
  arbiter?: boolean;
  /** More lines of every [[nodes]] entry (e.g. tlsCert and tlsKey: tests/_tls.ts). */
  nodeLines?: string[];
  /** The nodes serve HTTPS with certificates this CA (PEM) signed: the URLs are https:// and the clients trust it. */
  ca?: string;
}

export interface RingCluster {
  dir: string;
  file: string;
  ids: string[];
  urls: string[];
  /** One client per node, in file order. */
  clients: RingClient[];
  /** The running processes by id (a killed node is removed). */
  procs: Map<string, Proc>;
  /** Every process each node ran as, oldest first (their stderr is the node's JSON log). */
  incarnations: Map<string, Proc[]>;
  client(id: string): RingClient;
  /** Starts node `id` (from this tree, or the build whose main.ts is `main`) and waits for its health endpoint (fails if it exits first). */
  start(id: string, main?: string): Promise<Proc>;
  /** Starts every node and waits until the token has been everywhere. */
  startAll(): Promise<void>;
  /** Sends `signal` to node `id` (a SIGSTOPped node gets SIGCONT after it) and waits for its exit. */
  stop(id: string, signal: "SIGKILL" | "SIGTERM"): Promise<void>;
  /** Pauses (SIGSTOP) or resumes (SIGCONT) node `id`. */
  pause(id: string, signal: "SIGSTOP" | "SIGCONT"): void;
  stopAll(signal: "SIGKILL" | "SIGTERM"): Promise<void>;
  /** Status of every node in file order; undefined where it did not answer. */
  statuses(ids?: string[]): Promise<Array<NodeStatus | undefined>>;
  /** The lines of node `id`'s log (every incarnation) with `"event":"<event>"`, parsed. */
  events(id: string, event: string): Array<Record<string, unknown>>;
  /** Until every node of `ids` is in one view with all of them and has seen its token. */
  waitTokenEverywhere(ids?: string[], timeoutMs?: number): Promise<void>;
  /** The last `lines` log lines of every node (every incarnation), for a failing test's message. */
  logTails(lines?: number): string;
  /** Kills every node still running (SIGKILL, after SIGCONT) and removes the temp dir. */
  remove(): Promise<void>;
}

/** Writes the cluster file of a ring; `startRing` also starts it. */
export async function makeRing(options: RingOptions): Promise<RingCluster> {
  const { size } = options;
  const dir = tempDir("mutexd-ring-proc-");
  const ids = Array.from({ length: size }, (_, i) => `r${i + 1}`);
  const addresses = [...(options.addresses ?? [])];
  for (let i = addresses.length; i < size; i++) addresses.push(`127.0.0.1:${await freePort()}`);
  const arbiterAddress = options.arbiter ? `127.0.0.1:${await freePort()}` : null;
  const udp: number[] = [];
  if (options.udp) for (let i = 0; i < size; i++) udp.push(await freeUdpPort());
  // A secret among the [cluster] lines (those before any other table they may open) replaces the default.
  const clusterLines = options.clusterLines ?? [];
  const tableStart = clusterLines.findIndex((line) => /^\s*\[/.test(line));
  const ownLines = tableStart < 0 ? clusterLines : clusterLines.slice(0, tableStart);
  const givesSecret = ownLines.some((line) => /^\s*secret(File|Env)?\s*=/.test(line));
  const secret = givesSecret ? null : options.secret === undefined ? TEST_SECRET : options.secret;
  const file = writeCluster(dir, [
    "[cluster]",
    'name = "ringtest"',
    ...(secret === null ? [] : [`secret = "${secret}"`]),
    ...clusterLines,
    "[settings]",
    ...settingsLines(options.settings),
    ...ids.flatMap((id, i) => [
      "[[nodes]]",
      `id = "${id}"`,
      'role = "ring"',
      `http = "${addresses[i]}"`,
      ...(options.udp ? [`udp = ${udp[i]}`] : []),
      `dataDir = "data/${id}"`,
      ...(options.nodeLines ?? []),
    ]),
    ...(arbiterAddress
      ? ["[[nodes]]", 'id = "a1"', 'role = "arbiter"', `http = "${arbiterAddress}"`, 'dataDir = "data/a1"', ...(options.nodeLines ?? [])]
      : []),
  ].join("\n") + "\n");
  const scheme = options.ca === undefined ? "http" : "https";
  const tls = options.ca === undefined ? undefined : { ca: options.ca };
  const healthFetch = options.ca === undefined ? fetch : fetchTrusting(options.ca);
  const urls = addresses.map((address) => `${scheme}://${address}`);
  const clients = urls.map((server) => connectRing({ server, requestTimeoutMs: 10_000, tls }));
  const procs = new Map<string, Proc>();
  const incarnations = new Map<string, Proc[]>([...ids, ...(arbiterAddress ? ["a1"] : [])].map((id) => [id, []]));
  const url = (id: string) => (id === "a1" && arbiterAddress ? `${scheme}://${arbiterAddress}` : urls[ids.indexOf(id)]);

  const ring: RingCluster = {
    dir,
    file,
    ids,
    urls,
    clients,
    procs,
    incarnations,
    client: (id) => clients[ids.indexOf(id)],
    async start(id, main) {
      if (procs.has(id)) throw new Error(`${id} is running`);
      const [cmd, ...pre] = [...(options.wrap?.(id) ?? []), ...mutexdArgv(main)];
      const proc = startProcess(cmd, [...pre, "node", "--config", file, "--id", id]);
      procs.set(id, proc);
      incarnations.get(id)!.push(proc);
      await Promise.race([
        waitForHttp(`${url(id)}/v1/health`, SLACK_MS * size, healthFetch),
        proc.exited.then((code) => {
          throw new Error(`${id} exited ${code}: ${proc.stderr().slice(-600)}`);
        }),
      ]);
      return proc;
    },
    async startAll() {
      if (arbiterAddress) await ring.start("a1");
      await Promise.all(ids.map((id) => ring.start(id)));
      await ring.waitTokenEverywhere();
    },
    async stop(id, signal) {
      const proc = procs.get(id);
      if (!proc) return;
      proc.kill(signal);
      // A paused process takes SIGKILL, but SIGTERM only once it runs again.
      proc.kill("SIGCONT");
      await proc.exited;
      procs.delete(id);
    },
    pause(id, signal) {
      const proc = procs.get(id);
      if (!proc) throw new Error(`${id} is not running`);
      proc.kill(signal);
    },
    async stopAll(signal) {
      await Promise.all([...procs.keys()].map((id) => ring.stop(id, signal)));
    },
    statuses(which = ids) {
      return Promise.all(which.map((id) => (ring.client(id).status() as Promise<NodeStatus>).catch(() => undefined)));
    },
    events(id, event) {
      return incarnations.get(id)!.flatMap((proc) => proc.stderr().split("\n"))
        .filter((line) => line.includes(`"event":"${event}"`))
        .map((line) => JSON.parse(line) as Record<string, unknown>);
    },
    async waitTokenEverywhere(which = ids, timeoutMs = tokenEverywhereMs(which.length)) {
      // All of them members: a node that started late joins by a view change of its own, and
      // that new epoch would end the sections of the one before.
      await eventually(`the token reaches ${which.join(", ")} in one view`, async () => {
        const all = await ring.statuses(which);
        return all.every((s) => s !== undefined && s.epoch > 0 && s.epoch === all[0]!.epoch && s.lastTokenAgeMs !== null && which.every((id) => s.members.includes(id)));
      }, timeoutMs);
    },
    logTails(lines = 12) {
      return [...incarnations.keys()].map((id) => {
        const all = incarnations.get(id)!.flatMap((proc, i) => [`--- ${id} #${i + 1} (exit ${proc.child.exitCode ?? proc.child.signalCode ?? "running"})`, ...proc.stderr().trimEnd().split("\n").slice(-lines)]);
        return all.join("\n");
      }).join("\n");
    },
    async remove() {
      await ring.stopAll("SIGKILL");
      removeDir(dir);
    },
  };
  return ring;
}

/** A ring of `options.size` nodes, every one started and the token everywhere. */
export async function startRing(options: RingOptions): Promise<RingCluster> {
  const ring = await makeRing(options);
  try {
    await ring.startAll();
  } catch (error) {
    await ring.remove();
    throw error;
  }
  return ring;
}

export type LogEntry = { wseq: number; author: string; op: unknown };

/**
 * A node's committed client writes (wseq, author, op), read page by page. The regenerators'
 * markers (op "noop", one per view change: docs/ring-view.md) are left out: the process tests
 * count and order the clients' writes, and how many view changes a run had is not theirs to fix
 * (a restart adds one). Their wseqs still show in the gaps between the client writes.
 */
export async function committedLog(client: RingClient): Promise<LogEntry[]> {
  const entries: LogEntry[] = [];
  const commit = (await client.status()).commit;
  // Bounded: each round returns at least one entry or stops.
  for (let from = 1; from <= commit;) {
    const page = await client.log(from);
    const useful = page.entries.filter((e) => e.wseq <= commit);
    if (useful.length === 0) break;
    const writes = useful.filter((e) => (e.op as { type: string }).type !== "noop");
    entries.push(...writes.map((e) => ({ wseq: e.wseq, author: e.author, op: e.op })));
    from = useful[useful.length - 1].wseq + 1;
  }
  return entries;
}
