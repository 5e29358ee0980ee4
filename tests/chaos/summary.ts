/**
 * The end-of-run table of a chaos history (issue 13): faults by kind; operations ok / failed /
 * unknown per client kind; violations per rule; recovery times; and, per fault kind, how long
 * granting stopped. Computed from the paired history only (check.ts `pairOps`), like the checks,
 * so `check.ts HISTORY.jsonl` prints the same table again from a kept run folder.
 *
 * Recovery times (median and max over the faults of that kind):
 * - takeover: a fault (kill or pause) of the lock server that served when the fault began (the
 *   fault record's `primary`) → the probe's first grant asked for after the fault began.
 * - ring recovery: a fault of a ring node → the first ring section asked for after the fault
 *   began and granted, at any node. The history cannot tell a repair (the token survived) from a
 *   regeneration (a new token): both are this row, per step kind.
 * A fault after which no such grant came is counted in `none` (no recovery seen before the run ended).
 */
import { GRANT_GAP_MAX_MS, grantGaps, loadStalls, type Op, type Violation } from "./check.ts";

/** Median (the lower one of an even count) and maximum of a non-empty list. */
export function medianMax(list: number[]): { medianMs: number; maxMs: number } {
  const sorted = [...list].sort((a, b) => a - b);
  return { medianMs: sorted[Math.floor((sorted.length - 1) / 2)], maxMs: sorted[sorted.length - 1] };
}

/** Which kind of client an operation belongs to (a row of the operations table). */
export function clientKind(op: Op): string {
  if (op.client === "probe" || op.client === "final") return op.client;
  const cli = op.client.startsWith("cli-") ? " (cli)" : "";
  return (op.op.startsWith("ring-") ? "ring" : "lock") + cli;
}

export interface TimeRow {
  kind: string;
  /** Faults of this kind that recovered, and their median and max (ms); undefined when none did. */
  count: number;
  medianMs?: number;
  maxMs?: number;
  /** Faults with no recovery seen. */
  none: number;
}

export interface Summary {
  /** Faults applied per `step/fault` (e.g. `double/pause-serving`), with those not healed cleanly. */
  faults: Array<{ kind: string; count: number; unhealed: number }>;
  operations: Array<{ clients: string; ok: number; fail: number; info: number }>;
  violations: Array<{ rule: string; count: number }>;
  takeover: TimeRow[];
  ring: TimeRow[];
  /** Per step kind: the longest stretch without a grant around each fault (check.ts grantGaps). */
  gaps: Array<TimeRow & { boundMs?: number; safetyOnly?: string[] }>;
  /**
   * Faults of two tracks at once (the lock, ring and client tracks run side by side): per pair of
   * tracks, how many pairs of faults overlapped in time.
   */
  overlaps: Array<{ tracks: string; count: number }>;
  /** Per process (a node, or the runner): its event-loop stalls of 100 ms or more, the nemesis's pauses left out (check.ts loadStalls). */
  stalls: TimeRow[];
}

function countBy<T>(items: T[], key: (item: T) => string): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    if (!out.has(k)) out.set(k, []);
    out.get(k)!.push(item);
  }
  return new Map([...out].sort(([a], [b]) => a.localeCompare(b)));
}

function timeRows(faults: Op[], timeOf: (fault: Op) => number | undefined): TimeRow[] {
  return [...countBy(faults, (f) => f.step ?? f.fault ?? "?")].map(([kind, list]) => {
    const times = list.map(timeOf).filter((t): t is number => t !== undefined);
    return { kind, count: times.length, none: list.length - times.length, ...(times.length ? medianMax(times) : {}) };
  });
}

/** Time from `fault.start` to the end of the first grant in `grants` invoked at or after it. */
function nextGrantMs(fault: Op, grants: Op[]): number | undefined {
  const next = grants.find((g) => g.start >= fault.start);
  return next ? next.end - fault.start : undefined;
}

export function summarize(ops: Op[], violations: Violation[]): Summary {
  const faults = ops.filter((o) => o.op === "fault");
  const applied = faults.filter((f) => f.node !== undefined);
  const clientOps = ops.filter((o) => o.op !== "fault" && o.op !== "stall");
  const byStart = (a: Op, b: Op) => a.start - b.start;
  const probeGrants = ops.filter((o) => o.op === "probe" && o.type === "ok").sort(byStart);
  const ringGrants = ops.filter((o) => o.op === "ring-enter" && o.type === "ok").sort(byStart);
  const count = (list: Op[], type: Op["type"]) => list.filter((o) => o.type === type).length;
  return {
    faults: [...countBy(applied, (f) => `${f.step ?? "?"}/${f.fault ?? "?"}`)].map(([kind, list]) => ({
      kind,
      count: list.length,
      unhealed: list.filter((f) => f.type !== "ok").length,
    })),
    operations: [...countBy(clientOps, clientKind)].map(([clients, list]) => ({
      clients,
      ok: count(list, "ok"),
      fail: count(list, "fail"),
      info: count(list, "info"),
    })),
    violations: [...countBy(violations, (v) => v.rule)].map(([rule, list]) => ({ rule, count: list.length })),
    takeover: timeRows(applied.filter((f) => f.primary === true), (f) => nextGrantMs(f, probeGrants)),
    ring: timeRows(applied.filter((f) => f.node!.startsWith("r")), (f) => nextGrantMs(f, ringGrants)),
    gaps: [...countBy(grantGaps(ops), (g) => g.fault.step ?? g.fault.fault ?? "?")].map(([kind, list]) => ({
      kind,
      count: list.length,
      none: 0,
      ...medianMax(list.map((g) => g.gapMs)),
      boundMs: GRANT_GAP_MAX_MS[kind],
      safetyOnly: list.filter((g) => g.safetyOnly !== undefined).map((g) => g.safetyOnly!),
    })),
    overlaps: overlapsOf(applied),
    stalls: [...countBy(loadStalls(ops), (o) => o.node ?? "?")].map(([kind, list]) => ({
      kind,
      count: list.length,
      none: 0,
      ...medianMax(list.map((o) => o.value!)),
    })),
  };
}

/** The track a fault belongs to, by its target: a lock node, a ring node or a client process. */
function trackOf(fault: Op): string {
  if (["p1", "b1", "a1"].includes(fault.node!)) return "lock";
  return fault.node!.startsWith("cli-") ? "client" : "ring";
}

function overlapsOf(faults: Op[]): Array<{ tracks: string; count: number }> {
  const counts = new Map<string, number>();
  const sorted = [...faults].sort((a, b) => a.start - b.start);
  // Each fault against the later-starting ones until they start after it ended (sorted: bounded by the list).
  for (let i = 0; i < sorted.length; i++) {
    for (let j = i + 1; j < sorted.length && sorted[j].start < sorted[i].end; j++) {
      const pair = [trackOf(sorted[i]), trackOf(sorted[j])].sort();
      if (pair[0] === pair[1]) continue;
      const key = pair.join(" + ");
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
  }
  return [...counts].sort(([a], [b]) => a.localeCompare(b)).map(([tracks, count]) => ({ tracks, count }));
}

const ms = (n: number | undefined) => (n === undefined ? "–" : `${Math.round(n)} ms`);

/** The summary as text lines: one table, one block per section. */
export function formatSummary(s: Summary): string[] {
  const lines: string[] = ["┌ chaos summary"];
  const row = (...cells: Array<string | number>) => lines.push("│ " + cells.map((c, i) => (i === 0 ? String(c).padEnd(34) : String(c).padStart(9))).join(" "));
  lines.push("│ faults (step/fault)");
  if (s.faults.length === 0) row("  none");
  for (const f of s.faults) row(`  ${f.kind}`, f.count, f.unhealed ? `${f.unhealed} unhealed` : "");
  lines.push("│ faults of two tracks at the same time (pairs of faults)");
  if (s.overlaps.length === 0) row("  none");
  for (const o of s.overlaps) row(`  ${o.tracks}`, o.count);
  lines.push("│ operations");
  row("  clients", "ok", "failed", "unknown");
  for (const o of s.operations) row(`  ${o.clients}`, o.ok, o.fail, o.info);
  lines.push("│ violations");
  if (s.violations.length === 0) row("  none");
  for (const v of s.violations) row(`  ${v.rule}`, v.count);
  const times = (title: string, rows: Array<TimeRow & { boundMs?: number; safetyOnly?: string[] }>, owed = false, what = "fault kind") => {
    lines.push(`│ ${title}`);
    if (rows.length === 0) row(`  no such ${what === "fault kind" ? "fault" : what}`);
    else row(`  ${what}`, "count", "median", "max", ...(owed ? ["owed"] : ["none"]));
    for (const r of rows) {
      const last = owed ? (r.boundMs === undefined ? "safety" : `≤ ${r.boundMs} ms`) : r.none;
      // Faults of an owing kind with a second fault (a1 faulted, a long stall) owe safety only (check.ts grantGaps).
      const more = r.safetyOnly?.length ? `${r.safetyOnly.length} safety only: ${r.safetyOnly.slice(0, 2).join("; ")}${r.safetyOnly.length > 2 ? "; …" : ""}` : "";
      row(`  ${r.kind}`, r.count + (owed ? 0 : r.none), ms(r.medianMs), ms(r.maxMs), last, ...(more ? [more] : []));
    }
  };
  times("takeover (serving lock server faulted → next probe grant)", s.takeover);
  times("ring recovery, repair or regeneration (ring node faulted → next section)", s.ring);
  times("granting stopped (longest gap without a grant, fault → heal + 1 s)", s.gaps, true);
  times("event-loop stalls of 100 ms or more (a node's log, or the runner's own)", s.stalls, false, "process");
  lines.push("└");
  return lines;
}
