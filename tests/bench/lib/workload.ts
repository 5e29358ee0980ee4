/**
 * What a workload is. A workload is one file in tests/bench/workloads/ whose default export is a
 * `Workload`; run.ts finds it by listing that folder, so adding one (e.g. F1, kill -9 of the
 * primary) touches no other file.
 */
import type { BenchClient, ClientKind } from "./clients.ts";
import type { RuntimeName, ServerHandle, StartOptions, Topology } from "./server.ts";

/** One run's measurements: flat numbers (latencies as `<name>.p50`, `.p99`, `.max`). */
export type Metrics = Record<string, number>;

export interface RunResult {
  metrics: Metrics;
  /** Anything odd seen in this run (errors, safety violations, timeouts): printed and kept in the JSON. */
  notes?: string[];
}

/** A peer's published number for a row (peer-bench.md): its text as printed there, and the value ratios use. */
export interface PeerCell {
  text: string;
  value?: number;
}

export type PeerName = "etcd" | "redis" | "zk";
export const PEER_TITLES: Record<PeerName, string> = {
  etcd: "etcd 3.4",
  redis: "Redis 7.0",
  zk: "ZooKeeper 3.8",
};

export interface Row {
  label: string;
  /** The mutexd cell, from the median of each metric over the runs (`runs`: every run's own metrics). */
  show(m: Metrics, runs: Metrics[]): string;
  /** The number compared with the peers' `value` (mutexd ÷ peer); omit for rows without a ratio. */
  value?(m: Metrics, runs: Metrics[]): number;
  peers?: Partial<Record<PeerName, PeerCell>>;
  /** The target for the figure (the ring table prints it beside the figure). */
  target?: string;
}

export interface WorkloadContext {
  /** Which driver this run uses ("project" when the workload runs with one client only). */
  client: ClientKind;
  /** Length of the measured phase of a rate workload, ms. */
  durationMs: number;
  /** 1-based run number. */
  run: number;
  serverRuntime: RuntimeName;
  topology: Topology;
  /** `--set` overrides of the cluster file's [settings] (empty: the defaults), for experiments. */
  settings: Record<string, number>;
  /** `--keep-logs`: ring workloads keep their folder (node logs, data) and name it, instead of removing it. */
  keepLogs: boolean;
  /** Starts a fresh deployment of the selected topology (stopped by the runner after the workload). */
  startServer(options?: StartOptions): Promise<ServerHandle>;
  /**
   * Makes one logical client of the deployment `startServer` gave. Unset: mutexd's own drivers
   * (`makeClient(client, server.urls)`); `make bench-peers` sets it to an etcd, Redis or
   * ZooKeeper adapter (tests/bench/peers/), so W1–W3 run unchanged against the peers.
   */
  makeClient?(server: ServerHandle): BenchClient;
  /** Registers a server the workload started itself (e.g. several nodes), so the runner stops it. */
  adopt(server: ServerHandle): void;
  /** Progress line on stderr. */
  log(message: string): void;
}

export interface Workload {
  /** Short id used by --only and in the table, e.g. "W1", "F2". */
  id: string;
  title: string;
  /** "each": run once per selected client kind; "one": once, with the first selected kind. */
  clients: "each" | "one";
  /** The workload kills servers on purpose (F1): their ends are not reported as odd. */
  killsServers?: boolean;
  /**
   * Which table its rows go in: "lock" (default: the lock service beside the peers) or "ring"
   * (the ring's repair figures beside the targets; `--only ring` selects these).
   */
  table?: "lock" | "ring";
  rows: Row[];
  run(ctx: WorkloadContext): Promise<RunResult>;
}

export const now = (): number => performance.now();

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

/** Adds `<prefix>.p50/.p99/.max` of a latency to metrics. */
export function putLatency(metrics: Metrics, prefix: string, l: { p50: number; p99: number; max: number }): void {
  metrics[`${prefix}.p50`] = l.p50;
  metrics[`${prefix}.p99`] = l.p99;
  metrics[`${prefix}.max`] = l.max;
}

export function getLatency(m: Metrics, prefix: string): { p50: number; p99: number; max: number } {
  return { p50: m[`${prefix}.p50`], p99: m[`${prefix}.p99`], max: m[`${prefix}.max`] };
}

/** Sum of one metric over runs. */
export function total(runs: Metrics[], key: string): number {
  return runs.reduce((sum, m) => sum + (Number.isFinite(m[key]) ? m[key] : 0), 0);
}
