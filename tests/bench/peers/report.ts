/**
 * The table, the ratios and the chart of `make bench-peers`, from its JSON (pure functions: no
 * I/O, no clock), so that tests/bench_peers_test.ts checks them on fixed numbers and the chart
 * can be drawn again from a saved run (`tests/bench/peers/run.ts --chart-from FILE`).
 */
import { fmt, markdown, median } from "../lib/stats.ts";
import type { Metrics } from "../lib/workload.ts";

/** One system of the run: mutexd (lone or replicated) or a peer, with every round's metrics per workload. */
export interface SystemResult {
  id: string;
  /** Column title, with the version ("etcd 3.4.23"); `short` heads the ratio columns ("etcd"). */
  title: string;
  short: string;
  /** Why the system was left out (a peer that could not be installed or started). */
  skipped?: string;
  /** The adapter's correctness check before the rounds ("ok: …" or what failed). */
  check?: string;
  /** runs[workload] = one Metrics per round (with `loadavg1` of that run). */
  runs: Record<string, Metrics[]>;
}

export interface PeersRun {
  started: string;
  commit: string;
  driver: string;
  rounds: number;
  durationMs: number;
  cpus: number;
  /** The 1-minute load average at the start and at the end of the run. */
  loadavgStart: number;
  loadavgEnd: number;
  systems: SystemResult[];
}

/** The system the ratios are taken of, and the one the issue's replication target compares it with. */
export const RATIO_OF = "replicated";
export const LONE = "lone";

interface RowSpec {
  workload: string;
  label: string;
  key: string;
  /** Ratios only for rows where "× faster" or "× the cost" reads clearly. */
  ratio: boolean;
}

export const ROWS: readonly RowSpec[] = [
  { workload: "W1", label: "W1 acq+rel/s (1 client)", key: "rate", ratio: true },
  { workload: "W1", label: "W1 a+r p50 ms", key: "cycle.p50", ratio: true },
  { workload: "W1", label: "W1 server CPU µs per a+r", key: "serverUsPerOp", ratio: true },
  { workload: "W1", label: "W1 driver CPU µs per a+r", key: "clientUsPerOp", ratio: false },
  { workload: "W2", label: "W2 acq+rel/s (32 clients, own locks)", key: "rate", ratio: true },
  { workload: "W2", label: "W2 a+r p50 ms", key: "cycle.p50", ratio: true },
  { workload: "W2", label: "W2 server CPU µs per a+r", key: "serverUsPerOp", ratio: true },
  { workload: "W2", label: "W2 driver CPU µs per a+r", key: "clientUsPerOp", ratio: false },
  { workload: "W3", label: "W3 handoffs/s (32 clients, 1 lock)", key: "handoffsPerS", ratio: true },
  { workload: "W3", label: "W3 grants/s", key: "grantsPerS", ratio: false },
  { workload: "W3", label: "W3 wait p50 ms", key: "wait.p50", ratio: true },
  { workload: "W3", label: "W3 Jain index (min over rounds)", key: "jain", ratio: false },
  { workload: "W3", label: "W3 server CPU µs per grant", key: "serverUsPerGrant", ratio: true },
  { workload: "W3", label: "W3 driver CPU µs per grant", key: "clientUsPerOp", ratio: false },
  { workload: "F1", label: "F1 kill -9 primary/leader → next acquire ms", key: "takeoverMedian", ratio: true },
];

/** The median of a metric over the rounds (Jain: the minimum, the worst round); undefined if never measured. */
export function cellValue(system: SystemResult, row: RowSpec): number | undefined {
  const values = (system.runs[row.workload] ?? []).map((m) => m[row.key]).filter((v) => Number.isFinite(v));
  if (values.length === 0) return undefined;
  return row.key === "jain" ? Math.min(...values) : median(values);
}

/** a ÷ b as "2.4×" (two decimals below 10), or "" when either is missing. */
export function ratioText(a: number | undefined, b: number | undefined): string {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !b) return "";
  const r = a / b;
  return `${r >= 10 ? r.toFixed(0) : r.toFixed(2)}×`;
}

const cellText = (row: RowSpec, v: number | undefined) =>
  v === undefined ? "–" : row.key === "jain" ? v.toFixed(3) : row.key === "rate" || row.key === "handoffsPerS" ? `${fmt(v)}/s` : fmt(v);

/** Safety over every round of W3: overlapping or duplicate grants, of how many checked. */
export function safetyText(system: SystemResult): string {
  const runs = system.runs.W3 ?? [];
  if (runs.length === 0) return "–";
  const sum = (key: string) => runs.reduce((s, m) => s + (Number.isFinite(m[key]) ? m[key] : 0), 0);
  return `${sum("overlaps") + sum("duplicates")} of ${fmt(sum("checked"))}`;
}

/** F1 over every round: kills after which the held lock was kept as it was and its next token was higher. */
export function keptText(system: SystemResult): string {
  const runs = system.runs.F1 ?? [];
  if (runs.length === 0) return "–";
  const sum = (key: string) => runs.reduce((s, m) => s + (Number.isFinite(m[key]) ? m[key] : 0), 0);
  return `${sum("kept")}/${sum("kills")}`;
}

/** The 1-minute load average at the end of each of the system's runs, lowest–highest (the machine is shared). */
export function loadText(system: SystemResult): string {
  const loads = Object.values(system.runs).flat().map((m) => m.loadavg1).filter((v) => Number.isFinite(v));
  return loads.length === 0 ? "–" : `${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)}`;
}

/** The table: one column per system that ran, then replicated ÷ each other system. */
export function peersTable(run: PeersRun): string[][] {
  const ran = run.systems.filter((s) => !s.skipped);
  const base = ran.find((s) => s.id === RATIO_OF);
  const others = base ? ran.filter((s) => s !== base) : [];
  const header = ["workload", ...ran.map((s) => s.title), ...others.map((s) => `${base!.short} ÷ ${s.short}`)];
  const table = [header];
  const workloads = new Set(ran.flatMap((s) => Object.keys(s.runs)));
  for (const row of ROWS.filter((r) => workloads.has(r.workload))) {
    const values = ran.map((s) => cellValue(s, row));
    if (values.every((v) => v === undefined)) continue;
    const ratios = others.map((s) => (row.ratio ? ratioText(cellValue(base!, row), cellValue(s, row)) : ""));
    table.push([row.label, ...values.map((v) => cellText(row, v)), ...ratios]);
  }
  if (workloads.has("W3")) table.push(["W3 safety: overlapping/duplicate grants", ...ran.map(safetyText), ...others.map(() => "")]);
  if (workloads.has("F1")) table.push(["F1 held lock kept, next token higher", ...ran.map(keptText), ...others.map(() => "")]);
  table.push(["correctness check of the client", ...ran.map((s) => s.check ?? "–"), ...others.map(() => "")]);
  table.push(["load average (1 min) after its runs", ...ran.map(loadText), ...others.map(() => "")]);
  return table;
}

/** The table as Markdown, with the run's header lines (when, where, load). */
export function peersMarkdown(run: PeersRun): string {
  const skipped = run.systems.filter((s) => s.skipped).map((s) => `${s.title}: skipped (${s.skipped})`);
  return [
    `make bench-peers, ${run.started} at commit ${run.commit}: ${run.driver} driver, ${run.rounds} round(s) of ${run.durationMs / 1000} s ` +
    `phases, systems interleaved round by round, medians over rounds; ${run.cpus} CPUs, load average ${run.loadavgStart.toFixed(2)} at the ` +
    `start, ${run.loadavgEnd.toFixed(2)} at the end. Ratios: ${RATIO_OF} mutexd ÷ the column's system (rates: > 1 is faster; ` +
    `latencies and CPU: < 1 is better).`,
    ...skipped,
    "",
    markdown(peersTable(run)),
  ].join("\n");
}

const escapeXml = (text: string) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

/** Bar colours per system, in the run's order (colour-blind-safe palette, Okabe–Ito). */
const COLOURS = ["#0072B2", "#56B4E9", "#E69F00", "#D55E00", "#009E73", "#CC79A7"];

/** The rows the chart draws: ops/s per workload, one panel each (each with its own scale). */
export const CHART_ROWS = ROWS.filter((r) => r.key === "rate" || r.key === "handoffsPerS");

/**
 * An SVG bar chart: one panel per workload (W1, W2, W3), one bar per system, ops/s with the value
 * over each bar. Each panel has its own scale (W2's rates are 10× W1's).
 */
export function peersSvg(run: PeersRun): string {
  const systems = run.systems.filter((s) => !s.skipped);
  const rows = CHART_ROWS.filter((row) => systems.some((s) => cellValue(s, row) !== undefined));
  const bar = 34;
  const gap = 10;
  const panelW = systems.length * (bar + gap) + gap + 20;
  const plotH = 220;
  const top = 64;
  const width = Math.max(rows.length * panelW + 40, 520);
  const height = top + plotH + 60 + systems.length * 18;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="20" y="20" font-size="14" font-weight="bold">${escapeXml(`mutexd and its peers, ops/s (make bench-peers, ${run.started.slice(0, 10)}, ${run.commit})`)}</text>`,
    `<text x="20" y="38">${escapeXml(`medians of ${run.rounds} interleaved round(s), one driver (${run.driver}), ${run.cpus} CPUs, 1-minute load average ${run.loadavgStart.toFixed(1)} at the start, ${run.loadavgEnd.toFixed(1)} at the end`)}</text>`,
  ];
  rows.forEach((row, p) => {
    const x0 = 20 + p * panelW;
    const values = systems.map((s) => cellValue(s, row));
    const max = Math.max(1, ...values.map((v) => v ?? 0));
    out.push(`<line x1="${x0}" y1="${top + plotH}" x2="${x0 + panelW - 20}" y2="${top + plotH}" stroke="#333"/>`);
    values.forEach((v, i) => {
      const x = x0 + gap + i * (bar + gap);
      const h = v === undefined ? 0 : Math.max(1, Math.round((v / max) * plotH));
      out.push(`<rect x="${x}" y="${top + plotH - h}" width="${bar}" height="${h}" fill="${COLOURS[i % COLOURS.length]}"/>`);
      out.push(`<text x="${x + bar / 2}" y="${top + plotH - h - 4}" text-anchor="middle">${v === undefined ? "–" : escapeXml(fmt(v))}</text>`);
    });
    out.push(`<text x="${x0 + (panelW - 20) / 2}" y="${top + plotH + 18}" text-anchor="middle" font-weight="bold">${escapeXml(row.label)}</text>`);
  });
  systems.forEach((s, i) => {
    const y = top + plotH + 40 + i * 18;
    out.push(`<rect x="20" y="${y - 10}" width="12" height="12" fill="${COLOURS[i % COLOURS.length]}"/>`);
    out.push(`<text x="38" y="${y}">${escapeXml(s.title)}</text>`);
  });
  out.push(`</svg>`);
  return out.join("\n") + "\n";
}
