/**
 * The ring repair workloads' pieces (R1–R5, docs/bench.md "Ring repair"): a ring of real
 * `mutexd node` processes with the DEFAULT settings (the targets are about defaults), one
 * client per node taking short sections without a pause, a record of every grant, and the view
 * change's log lines read back from the nodes' logs to say where the time went.
 */
import { readFileSync } from "node:fs";
import { connectRing, type RingClient } from "../../../lib/client/ring_client.ts";
import { DEFAULT_SETTINGS } from "../../../lib/settings.ts";
import { connectRefused } from "../../../cluster/ring/handoff_delivery.ts";
import { eventually, freePort, removeDir, tempDir, writeCluster } from "../../_harness.ts";
import type { LossyNamespace } from "./netns.ts";
import { type ServerHandle, signal, startNode } from "./server.ts";
import { now, sleep, type WorkloadContext } from "./workload.ts";

export const RING_SIZE = 5;
/** The settings the ring runs with, and so what bounds its repair. */
export const RING_DEFAULTS = DEFAULT_SETTINGS;
/** From start until every node has seen the token and granted once: the bootstrap's view change plus a round. */
const RING_READY_MS = 30_000;
/** Each client's section lease (it leaves at once; the lease only bounds a client that died). */
const SECTION_LEASE_MS = 1_000;
/** One enter waits at most this long (then asks again): longer than any repair measured. */
const ENTER_WAIT_MS = 30_000;
/** A client whose node did not answer tries again after this. */
const RETRY_PAUSE_MS = 50;
/** Sections per client loop at most (a bound on the loop; a run takes far fewer). */
const SECTIONS_MAX = 1_000_000;

export interface Grant {
  node: number;
  /** When the client received the grant (driver clock). */
  atMs: number;
  fence: number;
  /** The section's lease as granted (what is left of it when the node answered). */
  leaseMs: number;
}

export class Ring {
  readonly ids: string[];
  readonly clients: RingClient[];
  private stopping = false;
  private readonly loops: Promise<void>[] = [];
  readonly grants: Grant[] = [];
  private readonly listeners = new Set<(grant: Grant) => void>();
  /** Nodes whose client stops at its next grant and keeps the section (the holder kill). */
  private readonly holdAt = new Map<number, (grant: Grant) => void>();

  /**
   * `keepLogsIn`: called with the ring's folder (cluster file, data, one log per node) at stop
   * instead of removing it (`--keep-logs`).
   */
  constructor(readonly dir: string, readonly urls: string[], readonly nodes: ServerHandle[], private readonly keepLogsIn?: (dir: string) => void) {
    this.ids = urls.map((_, i) => `r${i + 1}`);
    this.clients = urls.map((server) => connectRing({ server, requestTimeoutMs: 5_000 }));
  }

  /** The index of the node after `i` in the file's ring (the view's successor while all are members). */
  successor(i: number): number {
    return (i + 1) % this.ids.length;
  }

  /** Waits until every node is in one epoch and has seen the token (bounded). */
  async waitFormed(timeoutMs = RING_READY_MS): Promise<void> {
    let last: unknown[] = [];
    try {
      await eventually("every node in one epoch, the token seen", async () => {
        const statuses = await Promise.all(this.clients.map((c) => c.status().catch(() => undefined)));
        last = statuses.map((s) => s && { epoch: s.epoch, token: s.lastTokenAgeMs });
        return statuses.every((s) => s && s.epoch > 0 && s.epoch === statuses[0]!.epoch && s.lastTokenAgeMs !== null);
      }, timeoutMs);
    } catch {
      throw new Error(`the ring did not form within ${timeoutMs} ms: ${JSON.stringify(last)}`);
    }
  }

  /** Starts one client per node, each entering and leaving at once, in a loop; resolves once each was granted. */
  async startLoad(timeoutMs = RING_READY_MS): Promise<void> {
    for (let i = 0; i < this.clients.length; i++) this.loops.push(this.clientLoop(i));
    await eventually(`every node granted within ${timeoutMs} ms`, () => new Set(this.grants.map((g) => g.node)).size === this.clients.length, timeoutMs);
  }

  private async clientLoop(node: number): Promise<void> {
    const client = this.clients[node];
    for (let n = 0; n < SECTIONS_MAX && !this.stopping; n++) {
      let result;
      // A client that is to keep its section asks for the node's default lease (ringLeaseMs).
      const hold = this.holdAt.get(node);
      const leaseMs = hold ? undefined : SECTION_LEASE_MS;
      try {
        result = await client.enter({ waitMs: ENTER_WAIT_MS, leaseMs });
      } catch {
        // The node is dead, stopped or cut off: ask again shortly (the fault is the point).
        await sleep(RETRY_PAUSE_MS);
        continue;
      }
      if (!result.granted) continue;
      const grant = { node, atMs: now(), fence: result.fence, leaseMs: result.leaseMs };
      this.grants.push(grant);
      for (const listener of [...this.listeners]) listener(grant);
      if (hold) {
        this.holdAt.delete(node);
        hold(grant);
        return;
      }
      await client.leave({ fence: result.fence }).catch(() => {});
    }
  }

  /** The next grant at `node` ("any": anywhere) after now, or undefined after `timeoutMs`. */
  nextGrant(node: number | "any", timeoutMs: number): Promise<Grant | undefined> {
    return new Promise((resolve) => {
      const listener = (grant: Grant) => {
        if (node !== "any" && grant.node !== node) return;
        done(grant);
      };
      const timer = setTimeout(() => done(undefined), timeoutMs);
      const done = (grant: Grant | undefined) => {
        clearTimeout(timer);
        this.listeners.delete(listener);
        resolve(grant);
      };
      this.listeners.add(listener);
    });
  }

  /** The client at `node` keeps its next section (no leave) and stops; resolves with that grant. */
  holdNext(node: number, timeoutMs: number): Promise<Grant | undefined> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.holdAt.delete(node);
        resolve(undefined);
      }, timeoutMs);
      this.holdAt.set(node, (grant) => {
        clearTimeout(timer);
        resolve(grant);
      });
    });
  }

  /** Grants at `node` in [fromMs, toMs). */
  grantsAt(node: number, fromMs: number, toMs: number): Grant[] {
    return this.grants.filter((g) => g.node === node && g.atMs >= fromMs && g.atMs < toMs);
  }

  /** The view change's log lines (and the repair's) of every node, from `sinceWallMs` (Date.now()) on. */
  viewEvents(sinceWallMs: number): ViewEvent[] {
    const events: ViewEvent[] = [];
    for (const [i, node] of this.nodes.entries()) {
      let text = "";
      try {
        text = readFileSync(node.logFile, "utf8");
      } catch {
        continue;
      }
      for (const line of text.split("\n")) {
        if (!line.startsWith("{") || !VIEW_EVENTS.some((e) => line.includes(`"event":"${e}"`))) continue;
        try {
          const parsed = JSON.parse(line) as Record<string, unknown> & { ts: string; event: string };
          const wallMs = Date.parse(parsed.ts);
          if (wallMs >= sinceWallMs) events.push({ ...parsed, at: this.ids[i], afterMs: wallMs - sinceWallMs });
        } catch {
          // a line cut by the kill
        }
      }
    }
    return events.sort((a, b) => a.afterMs - b.afterMs);
  }

  /** Stops the clients and every node (SIGCONT first: a stopped node would not see SIGTERM). */
  async stop(): Promise<void> {
    this.stopping = true;
    for (const node of this.nodes) signal(node.pid, "SIGCONT");
    await Promise.all(this.nodes.map((n) => n.stop(1_000)));
    // Every request now fails at once, so the loops end within one retry pause.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([Promise.all(this.loops), new Promise((resolve) => (timer = setTimeout(resolve, ENTER_WAIT_MS)))]);
    clearTimeout(timer);
    if (this.keepLogsIn) this.keepLogsIn(this.dir);
    else removeDir(this.dir);
  }
}

/** What the view change and the repair log (cluster/ring/service.ts, lib/core/ring/view.ts). */
const VIEW_EVENTS = [
  "successorUnreachable",
  "ringSuspected",
  "ringSuspicionConfirmed",
  "viewChangeWanted",
  "prepare",
  "promiseDeferred",
  "viewChangeAbandoned",
  "tokenLost",
  "viewDecided",
  "ringView",
  "ringQuorumLost",
];

export type ViewEvent = Record<string, unknown> & { event: string; at: string; afterMs: number };

export interface RingOptions {
  /** Ring nodes (RING_SIZE unless given). */
  size?: number;
  /** The node (index) that runs alone in `namespace`, behind its own veth (the lossy links). */
  lossy?: { node: number; namespace: LossyNamespace };
}

/** Starts a ring of `options.size` (RING_SIZE) nodes with the default settings (or `--set`'s) and waits until it has formed. */
export async function startRing(ctx: WorkloadContext, options: RingOptions = {}): Promise<Ring> {
  const dir = tempDir("mutexd-bench-ring-");
  const size = options.size ?? RING_SIZE;
  const ids = Array.from({ length: size }, (_, i) => `r${i + 1}`);
  const { lossy } = options;
  const hostIp = lossy ? lossy.namespace.hostIp : "127.0.0.1";
  const ips = ids.map((_, i) => (lossy && i === lossy.node ? lossy.namespace.nodeIp : hostIp));
  const ports: number[] = [];
  for (let i = 0; i < size; i++) ports.push(await freePort());
  const toml = [
    "[cluster]",
    'name = "bench-ring"',
    // Off loopback a node needs the cluster secret (README, "Security").
    ...(lossy ? [`broadcast = "${lossy.namespace.broadcast}"`, `secret = "${"b".repeat(32)}"`] : []),
    "[settings]",
    ...Object.entries(ctx.settings).map(([key, value]) => `${key} = ${value}`),
    ...ids.flatMap((id, i) => ["[[nodes]]", `id = "${id}"`, 'role = "ring"', `http = "${ips[i]}:${ports[i]}"`, `dataDir = "data/${id}"`]),
  ].join("\n") + "\n";
  const file = writeCluster(dir, toml);
  const urls = ids.map((_, i) => `http://${ips[i]}:${ports[i]}`);
  const nodes: ServerHandle[] = [];
  try {
    // Started together (each start takes 100-300 ms): the view change spreads the bootstraps itself.
    const started = await Promise.all(ids.map((id, i) =>
      startNode(file, id, urls[i], ctx.serverRuntime, dir, lossy && i === lossy.node ? lossy.namespace.launcher : [])
        .then((handle) => {
          nodes[i] = handle;
          ctx.adopt(handle);
          return handle;
        })
    ));
    const ring = new Ring(dir, urls, started, ctx.keepLogs ? (kept) => ctx.log(`  kept ${kept}`) : undefined);
    await ring.waitFormed();
    return ring;
  } catch (error) {
    await Promise.all(nodes.filter(Boolean).map((n) => n.stop(500)));
    // The folder stays: the error names a node's log in it (a node that exited 2 at start-up left
    // nothing to read when it went with the run, docs/bench.md), as a failed run's do (run.ts).
    ctx.log(`  kept ${dir}`);
    throw error;
  }
}

/** Whole numbers (ms, counts) with thousands separators ("–" when not seen). */
export const whole = (value: number): string => (Number.isFinite(value) ? Math.round(value).toLocaleString("en-US") : "–");

/** Every value of the metrics matching `pattern`, over every run (the finite ones): a row's sample. */
export function samplesOf(runs: Record<string, number>[], pattern: RegExp): number[] {
  return runs.flatMap((m) => Object.keys(m).filter((k) => pattern.test(k)).map((k) => m[k])).filter(Number.isFinite);
}

/** Why a view change was wanted (ViewChangeReason); metrics keep the index, so medians can carry it. */
export const REASONS = ["suspect", "tokenLoss", "rejoin", "bootstrap", "membership"];

/** The victims of the non-holder faults, by run: another place in the ring each run (r3, r1, r5, …). */
const VICTIMS = [2, 0, 4, 1, 3];
export const victimOf = (run: number, size = RING_SIZE): number => VICTIMS[(run - 1) % VICTIMS.length] % size;

/**
 * A wait for a grant after a fault gives up after this: above every bound measured (≈ 15 s: a
 * view change with the full grant wait), and short enough that R3's two waits and its phase fit
 * the runner's limit (2 × phase + 60 s).
 */
export const REPAIR_WAIT_MS = 25_000;

/**
 * Where the time of a repair went, from the nodes' logs: ms after the fault (wall clock) of the
 * first hand-off failure (and whether it was refused at connect), the first wish for a view change (and why), its first prepare, the
 * decision and the successor's install, with the view's grant wait and the prepares sent. A
 * killed or stopped victim writes nothing after the fault; a lossy one's lines count too.
 */
export function repairBreakdown(ring: Ring, sinceWallMs: number, successor: number): Record<string, number> {
  const events = ring.viewEvents(sinceWallMs);
  const first = (event: string, at?: string) => events.find((e) => e.event === event && (at === undefined || e.at === at));
  const wanted = first("viewChangeWanted");
  const decided = first("viewDecided");
  const installed = first("ringView", ring.ids[successor]);
  const unreachable = first("successorUnreachable");
  return {
    unreachableMs: unreachable?.afterMs ?? Number.NaN,
    // 1 when that first failure was refused at connect (nothing listened: that attempt was not
    // taken), 0 otherwise (a reset or a timeout may have been taken: the view then waits for the
    // victim's last lease and its section bound; docs/bench.md, "R1 and R9 broken down").
    firstFailureRefused: unreachable ? Number(connectRefused(new Error(String(unreachable.detail ?? "")))) : Number.NaN,
    suspectedMs: first("ringSuspected")?.afterMs ?? Number.NaN,
    wantedMs: wanted?.afterMs ?? Number.NaN,
    // The reason as a number, so it survives the runner's medians: the index in REASONS.
    wantedReason: wanted ? REASONS.indexOf(String(wanted.reason)) : Number.NaN,
    tokenLostMs: first("tokenLost")?.afterMs ?? Number.NaN,
    prepareMs: first("prepare")?.afterMs ?? Number.NaN,
    prepares: events.filter((e) => e.event === "prepare").length,
    deferred: events.filter((e) => e.event === "promiseDeferred").length,
    decidedMs: decided?.afterMs ?? Number.NaN,
    grantWaitMs: Number(decided?.grantWaitMs ?? Number.NaN),
    installedMs: installed?.afterMs ?? Number.NaN,
    views: events.filter((e) => e.event === "viewDecided").length,
  };
}

/** One line for the notes: the breakdown in words. */
export function describeBreakdown(b: Record<string, number>): string {
  const ms = (v: number) => (Number.isFinite(v) ? `${whole(v)} ms` : "–");
  const how = b.firstFailureRefused === 1 ? " (refused at connect)" : b.firstFailureRefused === 0 ? " (not refused at connect)" : "";
  return `first hand-off failure ${ms(b.unreachableMs)}${how}, view change wanted ${ms(b.wantedMs)} (${REASONS[b.wantedReason] ?? "–"}), ` +
    `token lost ${ms(b.tokenLostMs)}, prepare ${ms(b.prepareMs)} (${b.prepares} prepares, ${b.deferred} deferred promises), ` +
    `decided ${ms(b.decidedMs)} (grant wait ${ms(b.grantWaitMs)}, ${b.views} views), installed at the successor ${ms(b.installedMs)}`;
}
