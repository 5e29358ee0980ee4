/** Small statistics helpers for the benchmark (no dependencies). */

/** The q-quantile (0..1) of `values` by nearest rank; NaN when empty. Does not modify `values`. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = Float64Array.from(values).sort();
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank];
}

export function median(values: readonly number[]): number {
  const finite = values.filter((v) => Number.isFinite(v));
  if (finite.length === 0) return Number.NaN;
  const sorted = [...finite].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** µs per call of `fn`: the median of `rounds` rounds of `count` calls, after one warm-up round. */
export function microsecondsPerCall(count: number, fn: () => void, rounds = 5): number {
  const perRound: number[] = [];
  for (let round = 0; round <= rounds; round++) {
    const startMs = performance.now();
    for (let i = 0; i < count; i++) fn();
    if (round > 0) perRound.push(((performance.now() - startMs) * 1_000) / count);
  }
  return median(perRound);
}

/**
 * `modes` measured in ONE run, interleaved: a warm-up of each (`warmup` operations, not kept), then
 * `rounds` rounds of each (`count` operations), each round in another order so that no mode always
 * runs right after the same one (tests/bench/transport_cost.ts, repl_staircase.ts). Sequential.
 */
export async function interleavedRounds<M, S>(modes: readonly M[], rounds: number, warmup: number, count: number, run: (mode: M, n: number) => Promise<S>): Promise<S[]> {
  for (const mode of modes) await run(mode, warmup);
  const samples: S[] = [];
  for (let round = 0; round < rounds; round += 1) {
    for (let i = 0; i < modes.length; i += 1) samples.push(await run(modes[(i + round) % modes.length], count));
  }
  return samples;
}

/** p50 / p99 / max of a latency sample (ms). */
export interface Latency {
  p50: number;
  p99: number;
  max: number;
  n: number;
}

export function latency(samples: readonly number[]): Latency {
  if (samples.length === 0) return { p50: Number.NaN, p99: Number.NaN, max: Number.NaN, n: 0 };
  const sorted = Float64Array.from(samples).sort();
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
  return { p50: at(0.5), p99: at(0.99), max: sorted[sorted.length - 1], n: sorted.length };
}

/** Jain's fairness index: (Σx)² / (n·Σx²); 1 when all equal. */
export function jain(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  let sum = 0;
  let squares = 0;
  for (const v of values) {
    sum += v;
    squares += v * v;
  }
  return squares === 0 ? Number.NaN : (sum * sum) / (values.length * squares);
}

/** (max − min) / median: the run-to-run spread the peer report quotes. */
export function spread(values: readonly number[]): number {
  const finite = values.filter((v) => Number.isFinite(v));
  if (finite.length < 2) return 0;
  return (Math.max(...finite) - Math.min(...finite)) / median(finite);
}

/** Formats a number the way the peer report does: 3 significant digits below 100, thousands separators above. */
export function fmt(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return "–";
  const abs = Math.abs(value);
  if (abs >= 100) return Math.round(value).toLocaleString("en-US");
  if (abs >= 10) return value.toFixed(1).replace(/\.0$/, "");
  if (abs >= 1) return value.toFixed(2).replace(/0$/, "").replace(/\.$/, "");
  return value.toFixed(2);
}

export function fmtLatency(l: { p50: number; p99: number; max: number }): string {
  return `${fmt(l.p50)}/${fmt(l.p99)}/${fmt(l.max)}`;
}

/** A table (first row: the header) as Markdown, columns padded to their widest cell. */
export function markdown(table: string[][]): string {
  const widths = table[0].map((_, c) => Math.max(...table.map((r) => [...(r[c] ?? "")].length)));
  const line = (r: string[]) => `| ${r.map((cell, c) => (cell ?? "").padEnd(widths[c])).join(" | ")} |`;
  return [line(table[0]), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...table.slice(1).map(line)].join("\n");
}
