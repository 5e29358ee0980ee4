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
