/**
 * One run from a RunSpec, and batches of fresh seeds. Shared by the CLI (vopr.ts), the test
 * suite and the speed script, so all three mean the same thing by "seed N".
 */
import { kindsByName } from "./kinds.ts";
import type { RunSpec } from "./replay.ts";
import { Sim, type SimResult } from "./simulator.ts";
import type { TraceOptions } from "./trace.ts";

export function runSpec(spec: RunSpec, trace: Partial<TraceOptions> = {}): SimResult {
  const sim = new Sim({
    seed: spec.seed,
    kinds: kindsByName(spec.kinds),
    safetyMs: spec.safetyMs,
    healMs: spec.healMs,
    faultOverrides: spec.faultOverrides,
    paramOverrides: spec.params,
    trace,
  });
  return sim.run();
}

/** Seeds of a batch: a simple, documented sequence from a start seed (so "run 17" is findable). */
export function batchSeed(startSeed: number, index: number): number {
  return startSeed + index;
}

export interface BatchOptions {
  spec: Omit<RunSpec, "seed">;
  startSeed: number;
  runsMax: number;
  /** Stop starting runs after this much wall time (the test suite's budget). */
  wallMsMax?: number;
  /** Stop at the first failure. */
  stopAtFailure?: boolean;
  onResult?: (result: SimResult, index: number) => void;
  /** Wall clock for the budget; injected so the simulation itself never reads it. */
  wallNowMs?: () => number;
}

export interface BatchResult {
  runs: number;
  failures: SimResult[];
  simulatedMs: number;
}

export function runBatch(options: BatchOptions): BatchResult {
  const wallNowMs = options.wallNowMs ?? (() => performance.now());
  const startedMs = wallNowMs();
  const failures: SimResult[] = [];
  let runs = 0;
  let simulatedMs = 0;
  for (let index = 0; index < options.runsMax; index++) {
    if (options.wallMsMax !== undefined && wallNowMs() - startedMs > options.wallMsMax) break;
    const result = runSpec({ ...options.spec, seed: batchSeed(options.startSeed, index) }, { keepAll: false, tailLinesMax: 60 });
    runs += 1;
    simulatedMs += result.simulatedMs;
    options.onResult?.(result, index);
    if (!result.ok) {
      failures.push(result);
      if (options.stopAtFailure) break;
    }
  }
  return { runs, failures, simulatedMs };
}

/** One node kind's share of a batch: runs that included it, and its failures by checker. */
export interface KindReport {
  kind: string;
  runs: number;
  failures: number;
  byChecker: Record<string, number>;
}

/**
 * A batch per node kind. A checker `kind.name` belongs to its kind; the rest (`core.assertion`,
 * `sim.exception`, `sim.events-max`) may come from any kind of the run and are listed under
 * "any" (the trace's last lines tell which actor threw).
 */
export function reportByKind(kinds: readonly string[], runs: number, failures: readonly SimResult[]): KindReport[] {
  const reports = [...kinds, "any"].map((kind): KindReport => ({ kind, runs: kind === "any" ? 0 : runs, failures: 0, byChecker: {} }));
  for (const failure of failures) {
    const checker = failure.violation?.checker ?? "?";
    const report = reports.find((r) => r.kind === checker.split(".")[0]) ?? reports[reports.length - 1];
    report.failures += 1;
    report.byChecker[checker] = (report.byChecker[checker] ?? 0) + 1;
  }
  return reports.filter((r) => r.kind !== "any" || r.failures > 0);
}

/** `failover   200 runs, 2 failed: failover.liveness ×1, failover.one-serving ×1` */
export function describeKindReport(report: KindReport): string {
  const checkers = Object.entries(report.byChecker).sort(([a], [b]) => a.localeCompare(b)).map(([name, count]) => `${name} ×${count}`);
  const runs = report.kind === "any" ? "" : `${report.runs} runs, `;
  return `  ${report.kind.padEnd(9)} ${runs}${report.failures} failed${checkers.length > 0 ? `: ${checkers.join(", ")}` : ""}`;
}
