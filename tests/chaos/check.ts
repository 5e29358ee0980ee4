/**
 * The offline checker of a chaos history (Jepsen/Maelstrom model: record, then check). It reads
 * only the client-side history, never server state, and knows nothing of the fault schedule
 * except to print faults next to an offending window.
 *
 *   bun tests/chaos/check.ts HISTORY.jsonl      exit 0: no violation; 1: violations printed
 *
 * Rules (each names the records that break it):
 * - token-order: per lock (and for the ring), every granted fencing token is unique, and a grant
 *   that completed before another was invoked has the smaller token.
 * - mutex: per exclusive lock (and the ring), no two holds overlap. A hold runs from the grant's
 *   ok to the holder's release invoke, or to the moment the holder was told the lock was lost
 *   (its signal aborted), or, for a ring section, to the client's own lease end, whichever is
 *   first; a hold never ended runs to the end of the history.
 * - resource: the guarded counter of each lock ends equal to the number of acknowledged writes.
 * - ring-counter: acknowledged ring increments wrote distinct values, increasing with the fence;
 *   every ring node ends with the same committed counter, equal to the acknowledged increments
 *   (plus at most the increments whose outcome is unknown).
 * - liveness: after the final heal, every lock and every ring node granted once.
 * - grant-gap: a stretch without a grant that begins while a single fault lasts (or within
 *   GAP_HEAL_MS after its heal) is no longer than the fault's bound (GRANT_GAP_MAX_MS, by kind
 *   and target): the lock service and the ring each survive any one fault. The lock service is
 *   measured on the availability probe (a try-lock of a lock of its own, every 50 ms): the
 *   workload's own grants are no measure, contention alone leaves seconds between them. The ring
 *   is measured on the sections granted at any node. Two faults on one service owe safety only:
 *   `double` steps, a ring fault while the arbiter (the ring's view-change coordinator) is
 *   faulted too, a fault during a long event-loop stall of another node of the service
 *   (STALL_FAULT_MS), and a lock fault (of the arbiter or the serving server) while the serving
 *   server's log said its backup was out of sync, at the fault or during it. The end-of-run table (summary.ts) prints, per fault kind, how long granting
 *   stopped (median and max of each fault's longest gap).
 */
import process from "node:process";
import { type HistoryRecord, type OpName, readHistory } from "./history.ts";
import { formatSummary, summarize } from "./summary.ts";
import { DEFAULT_SETTINGS, type Settings } from "../../lib/settings.ts";
import { QUICK_RING_SETTINGS } from "../_harness.ts";
import { RING_SIZE } from "./supervisor.ts";
import { PROBE_REQUEST_TIMEOUT_MS, RING_CLIENT_RETRY_MS_MAX } from "./workload.ts";

export type Rule = "token-order" | "mutex" | "resource" | "ring-counter" | "liveness" | "grant-gap" | "history";

/**
 * The chaos cluster's settings (supervisor.ts writes QUICK_RING_SETTINGS over the defaults): the
 * ring's bound below is derived from them, so a change of either moves the bound with it.
 */
export const CHAOS_SETTINGS: Settings = { ...DEFAULT_SETTINGS };
for (const line of QUICK_RING_SETTINGS) {
  const [key, value] = line.split("=").map((part) => part.trim());
  (CHAOS_SETTINGS as Record<string, number>)[key] = Number(value);
}

/**
 * Longest time without a grant owed under one fault, by what the fault hits (docs/chaos.md,
 * "Liveness owed", has each derivation). The lock service's bounds are on the probe:
 * - ARBITER: a fault the clients must not notice (the arbiter, or a server cut from the arbiter
 *   only: the primary serves on the backup's promises): a few probes, with margin for a loaded
 *   2-core machine.
 * - BACKUP: the non-serving server lost: the primary's commits wait replicationTimeoutMs for its
 *   ack, then one renewal has the arbiter record it out of sync, and the primary goes on alone;
 *   plus the probe's retry, with margin.
 * - TAKEOVER: the serving server lost: the arbiter's lease and the backup's promise (500 ms each,
 *   concurrent), the claim, the clients' failover backoff (25 → 100 ms) and retry, with margin.
 * - DEGRADED_SERVING: a lossy link at the serving server may cost a takeover (both its lease and
 *   the backup's promises lapse), and the probe's request on that link may stall in TCP
 *   retransmission until its requestTimeoutMs (1 s, workload.ts probeWorker) before it fails over.
 */
const LOCK_BOUND_MS = { ARBITER: 1_000, BACKUP: 1_500, TAKEOVER: 4_000, DEGRADED_SERVING: 4_000 + PROBE_REQUEST_TIMEOUT_MS };

/**
 * The ring's bound, on ring sections granted at any node, for one faulted ring node (paused,
 * killed, cut off, on a lossy link) or the minority side of a split. Worst case, in order: the
 * section granted just before the fault runs out its lease (ringLeaseMaxMs; a lost token's grant
 * wait is no longer: ringLeaseMaxMs + tokenLeaseSafetyMs after the dead holder's last lease
 * hold, at most tokenLeaseMs after the fault); its hand-off to a silent successor fails
 * ringRepairRetries times, each after tokenHopTimeoutMs, with the retry backoff between (a token
 * lost with its holder is noticed sooner, after tokenLossMs and one probe); the view change waits
 * for promises deferred by a lease hold (tokenLeaseMs) and for the rest (viewPromiseWaitMs), and
 * one attempt may collide with another coordinator and give up (viewChangeTimeoutMs) before its
 * retry (viewChangeRetryMs × (1 + place), place < ring size); the clients then ask again within
 * their pause after a failed enter (RING_CLIENT_RETRY_MS_MAX, workload.ts). One bound for both
 * networks, from the larger ring (5 nodes; loopback's 3 would give 400 ms less).
 */
export function ringGapBoundMs(s: Settings = CHAOS_SETTINGS, ringSize = RING_SIZE.netns): number {
  let backoffMs = 0;
  for (let i = 0, retryMs = s.tokenRetryMs; i < s.ringRepairRetries - 1; i++, retryMs = Math.min(2 * retryMs, s.tokenHopTimeoutMs)) backoffMs += retryMs;
  const detectMs = Math.max(s.ringRepairRetries * s.tokenHopTimeoutMs + backoffMs, s.tokenLossMs + s.tokenHopTimeoutMs);
  const viewChangeMs = s.tokenLeaseMs + s.viewPromiseWaitMs + s.viewChangeTimeoutMs + s.viewChangeRetryMs * ringSize;
  return s.ringLeaseMaxMs + detectMs + viewChangeMs + RING_CLIENT_RETRY_MS_MAX;
}
export const RING_GAP_MAX_MS = ringGapBoundMs();

/**
 * The bound of each step kind that owes one, for the table's `owed` column; the lock kinds whose
 * bound depends on the target (the serving server, the other one, the arbiter) list their largest
 * here and get the target's own in `gapBoundMs`. `double` (the arbiter and a lock server at once)
 * owes safety only, and so does a ring fault while the arbiter is faulted too (it coordinates
 * the ring's view changes: two faults on one view change).
 */
export const GRANT_GAP_MAX_MS: Record<string, number> = {
  "kill-arbiter": LOCK_BOUND_MS.ARBITER,
  "pause-arbiter": LOCK_BOUND_MS.ARBITER,
  "pause-short": 1_500,
  "pause-long": LOCK_BOUND_MS.TAKEOVER,
  "kill-server": LOCK_BOUND_MS.TAKEOVER,
  "cut-arbiter": LOCK_BOUND_MS.ARBITER,
  "isolate-lock": LOCK_BOUND_MS.TAKEOVER,
  "degrade-lock": LOCK_BOUND_MS.DEGRADED_SERVING,
  "ring-pause": RING_GAP_MAX_MS,
  "ring-kill": RING_GAP_MAX_MS,
  "ring-isolate": RING_GAP_MAX_MS,
  "ring-split": RING_GAP_MAX_MS,
  "ring-degrade": RING_GAP_MAX_MS,
  // A wall-clock step must cost nothing: leases and timeouts run on the monotonic clock. A
  // stepped lock node owes the arbiter's "clients must not notice" (1 s), a ring node the ring's.
  "clock-step": RING_GAP_MAX_MS,
};

/** The bound one fault owes (undefined: safety only), from its step kind and its target. */
function gapBoundMs(fault: Op): number | undefined {
  if (fault.step === "clock-step") return LOCK_NODE_IDS.includes(fault.node!) ? LOCK_BOUND_MS.ARBITER : RING_GAP_MAX_MS;
  const kindMs = fault.step === undefined ? undefined : GRANT_GAP_MAX_MS[fault.step];
  if (fault.step === "isolate-lock" || fault.step === "degrade-lock") {
    if (fault.node === "a1") return LOCK_BOUND_MS.ARBITER;
    if (fault.primary === false) return LOCK_BOUND_MS.BACKUP;
  }
  return kindMs;
}
/** A heal (a restart rejoining, a resumed process stepping down) may still cost a gap. */
export const GAP_HEAL_MS = 1_000;

/** An operation: an invoke paired with its completion (`info` with end Infinity if none). */
export type Op = Omit<HistoryRecord, "type" | "end" | "leaseMs"> & { type: "ok" | "fail" | "info"; end: number };

export interface Violation {
  rule: Rule;
  lock?: string;
  message: string;
  /** The operations that break the rule, earliest first. */
  ops: Op[];
}

export interface CheckResult {
  violations: Violation[];
  stats: Record<string, number>;
}

/** Pairs invoke and completion records by id. Completion fields win over invoke fields. */
export function pairOps(records: HistoryRecord[]): Op[] {
  const byId = new Map<number, Op>();
  for (const r of records) {
    const known = byId.get(r.id);
    if (r.type === "invoke") {
      byId.set(r.id, { ...r, type: "info", start: r.start, end: Number.POSITIVE_INFINITY });
    } else {
      byId.set(r.id, { ...(known ?? {}), ...r, type: r.type, start: known?.start ?? r.start, end: r.end ?? r.start });
    }
  }
  return [...byId.values()].sort((a, b) => a.start - b.start || a.id - b.id);
}

const ACQUIRE: Partial<Record<OpName, { release: OpName; lost: OpName }>> = {
  acquire: { release: "release", lost: "lost" },
  "ring-enter": { release: "ring-release", lost: "ring-lost" },
};

interface Hold {
  grant: Op;
  end: number;
  /** The release or loss that ended the hold, when one did. */
  ender?: Op;
  /** The hold ended at the client's own lease end, before any release or notice. */
  leaseEnded?: boolean;
}

function holdsOf(ops: Op[], historyEndMs: number): Map<string, Hold[]> {
  const enders = new Map<string, Op>();
  for (const op of ops) {
    const isEnder = op.op === "release" || op.op === "lost" || op.op === "ring-release" || op.op === "ring-lost";
    if (!isEnder || op.token === undefined) continue;
    const key = `${op.client}|${op.lock}|${op.token}`;
    const known = enders.get(key);
    if (!known || op.start < known.start) enders.set(key, op);
  }
  const holds = new Map<string, Hold[]>();
  for (const op of ops) {
    if (!ACQUIRE[op.op] || op.type !== "ok" || op.token === undefined || op.lock === undefined) continue;
    const ender = enders.get(`${op.client}|${op.lock}|${op.token}`);
    // A ring section ends for its client at its own lease end at the latest (history.ts leaseEnd);
    // a lock at its session's lease end, which the loss notice carries (the notice may come late).
    const toldMs = ender ? ender.start : historyEndMs;
    const leaseEnd = op.leaseEnd ?? (ender?.op === "lost" ? ender.leaseEnd : undefined);
    const hold: Hold = leaseEnd !== undefined && leaseEnd < toldMs
      ? { grant: op, end: Math.max(op.end, leaseEnd), leaseEnded: true }
      : { grant: op, end: toldMs, ender };
    if (!holds.has(op.lock)) holds.set(op.lock, []);
    holds.get(op.lock)!.push(hold);
  }
  return holds;
}

function checkTokens(lock: string, grants: Op[], out: Violation[]): void {
  const seen = new Map<number, Op>();
  for (const g of grants) {
    const twin = seen.get(g.token!);
    if (twin) {
      out.push({ rule: "token-order", lock, message: `token ${g.token} granted twice`, ops: [twin, g] });
    } else {
      seen.set(g.token!, g);
    }
  }
  // Real-time order: A completed before B was invoked ⇒ token(A) < token(B).
  const byEnd = [...grants].sort((a, b) => a.end - b.end);
  const byStart = [...grants].sort((a, b) => a.start - b.start);
  let next = 0;
  let highest: Op | undefined;
  for (const b of byStart) {
    while (next < byEnd.length && byEnd[next].end < b.start) {
      if (!highest || byEnd[next].token! > highest.token!) highest = byEnd[next];
      next += 1;
    }
    if (highest && highest.token! >= b.token!) {
      out.push({
        rule: "token-order",
        lock,
        message: `token ${b.token} (invoked at ${b.start}) is not above token ${highest.token} granted before it (ok at ${highest.end})`,
        ops: [highest, b],
      });
    }
  }
}

function checkMutex(lock: string, holds: Hold[], out: Violation[]): void {
  const sorted = [...holds].sort((a, b) => a.grant.end - b.grant.end);
  let open: Hold | undefined;
  for (const hold of sorted) {
    if (open && hold.grant.end < open.end) {
      const how = open.leaseEnded
        ? `its own lease ended at ${open.end}`
        : open.ender
        ? `${open.ender.op === "lost" || open.ender.op === "ring-lost" ? "was told it lost the lock" : "invoked release"} at ${open.ender.start}`
        : "never released it";
      out.push({
        rule: "mutex",
        lock,
        message: `${hold.grant.client} was granted token ${hold.grant.token} at ${hold.grant.end} while ` +
          `${open.grant.client} held token ${open.grant.token} (granted at ${open.grant.end}; it ${how})`,
        ops: [open.grant, ...(open.ender ? [open.ender] : []), hold.grant],
      });
    }
    if (!open || hold.end > open.end) open = hold;
  }
}

function checkResource(lock: string, ops: Op[], out: Violation[]): void {
  const writes = ops.filter((o) => o.op === "write" && o.lock === lock);
  const acked = writes.filter((o) => o.type === "ok");
  const unknown = writes.filter((o) => o.type === "info");
  const final = ops.find((o) => o.op === "final" && o.lock === lock && o.node === undefined && o.type === "ok");
  if (!final || final.value === undefined) {
    out.push({ rule: "history", lock, message: `no final read of the resource of ${lock}`, ops: [] });
    return;
  }
  if (final.value < acked.length || final.value > acked.length + unknown.length) {
    out.push({
      rule: "resource",
      lock,
      message: `resource ${lock} ends at ${final.value} after ${acked.length} acknowledged writes` +
        (unknown.length ? ` (+${unknown.length} unknown)` : ""),
      ops: [...duplicateValues(acked), final],
    });
  }
}

/** Acknowledged writes that wrote a value another acknowledged write also wrote (lost updates). */
function duplicateValues(acked: Op[]): Op[] {
  const byValue = new Map<number, Op[]>();
  for (const w of acked) {
    if (w.value === undefined) continue;
    if (!byValue.has(w.value)) byValue.set(w.value, []);
    byValue.get(w.value)!.push(w);
  }
  return [...byValue.values()].filter((list) => list.length > 1).flat().slice(0, 10);
}

function checkRing(ops: Op[], out: Violation[]): void {
  const puts = ops.filter((o) => o.op === "ring-put");
  const finals = ops.filter((o) => o.op === "final" && o.node !== undefined);
  if (puts.length === 0 && finals.length === 0) return;
  const acked = puts.filter((o) => o.type === "ok");
  const unknown = puts.filter((o) => o.type === "info");
  const dups = duplicateValues(acked);
  if (dups.length > 0) {
    out.push({ rule: "ring-counter", lock: "ring", message: `acknowledged ring increments wrote the same value ${dups[0].value}`, ops: dups });
  }
  const byFence = [...acked].sort((a, b) => a.token! - b.token!);
  for (let i = 1; i < byFence.length; i++) {
    if (byFence[i].value! <= byFence[i - 1].value!) {
      out.push({
        rule: "ring-counter",
        lock: "ring",
        message: `fence ${byFence[i].token} wrote ${byFence[i].value}, not above fence ${byFence[i - 1].token}'s ${byFence[i - 1].value}`,
        ops: [byFence[i - 1], byFence[i]],
      });
      break;
    }
  }
  if (finals.length === 0) {
    out.push({ rule: "history", lock: "ring", message: "no final read of the ring counter", ops: [] });
    return;
  }
  const values = new Set(finals.map((f) => (f.type === "ok" ? f.value : undefined)));
  if (values.size > 1) {
    const shown = finals.map((f) => `${f.node}=${f.type === "ok" ? f.value : f.error ?? f.type}`).join(" ");
    out.push({ rule: "ring-counter", lock: "ring", message: `ring nodes end with different counters: ${shown}`, ops: finals });
  }
  for (const f of finals) {
    if (f.type !== "ok" || f.value === undefined) continue;
    if (f.value < acked.length || f.value > acked.length + unknown.length) {
      out.push({
        rule: "ring-counter",
        lock: "ring",
        message: `ring node ${f.node} ends with counter ${f.value} after ${acked.length} acknowledged increments` +
          (unknown.length ? ` (+${unknown.length} unknown)` : ""),
        ops: [f],
      });
    }
  }
}

export function checkOps(ops: Op[]): CheckResult {
  const violations: Violation[] = [];
  const finite = ops.flatMap((o) => [o.start, o.end]).filter(Number.isFinite);
  const historyEndMs = finite.length ? Math.max(...finite) : 0;
  const holds = holdsOf(ops, historyEndMs);
  for (const [lock, list] of holds) {
    checkTokens(lock, list.map((h) => h.grant), violations);
    checkMutex(lock, list, violations);
  }
  const resourceLocks = new Set(ops.filter((o) => o.op === "write" && o.lock).map((o) => o.lock!));
  for (const lock of resourceLocks) checkResource(lock, ops, violations);
  checkRing(ops, violations);
  for (const op of ops) {
    if (op.op === "liveness" && op.type !== "ok") {
      violations.push({ rule: "liveness", lock: op.lock ?? op.node, message: `no grant after the final heal: ${op.error ?? op.type}`, ops: [op] });
    }
  }
  for (const gap of grantGaps(ops)) {
    if (gap.boundMs !== undefined && gap.gapMs - gap.runnerStallMs > gap.boundMs) {
      violations.push({
        rule: "grant-gap",
        lock: gap.fault.node,
        message: `no grant for ${Math.round(gap.gapMs)} ms during ${gap.fault.step} of ${gap.fault.node}` +
          `${gap.fault.detail ? ` (${gap.fault.detail})` : ""}` +
          `${gap.runnerStallMs > 0 ? ` (of it, the runner stalled ${Math.round(gap.runnerStallMs)} ms)` : ""} (bound ${gap.boundMs} ms)`,
        ops: [gap.fault],
      });
    }
  }
  const stats: Record<string, number> = {};
  for (const op of ops) stats[`${op.op}:${op.type}`] = (stats[`${op.op}:${op.type}`] ?? 0) + 1;
  return { violations, stats };
}

export interface GrantGap {
  fault: Op;
  /**
   * Longest stretch without a grant that began between the fault and GAP_HEAL_MS after its heal;
   * a stretch still running then is measured to its next grant (or to the next fault of the
   * same service, which takes it over, or to the clients' last ask).
   */
  gapMs: number;
  /** The owed bound, when the fault owes liveness. */
  boundMs?: number;
  /** How much of that stretch the runner's own event loop was stalled (taken off it for the bound). */
  runnerStallMs: number;
  /** Why a fault of a kind that owes a bound owes safety only here. */
  safetyOnly?: string;
}

const LOCK_NODE_IDS = ["p1", "b1", "a1"];

/**
 * An event-loop stall this long of another node of the faulted service (a1 counts for the ring:
 * it coordinates view changes) is a second fault, which a loaded machine makes: the lock
 * service's failure detector drops a backup silent for replicationTimeoutMs, so with the arbiter
 * or the primary faulted too the service may stop (two faults); a ring node silent for
 * tokenHopTimeoutMs fails a hand-off. The runner's own stalls (the clients' process: the probe
 * and the ring clients) excuse nothing: the time they overlap a gap is taken off it.
 */
export const STALL_FAULT_MS = { lock: CHAOS_SETTINGS.replicationTimeoutMs, ring: CHAOS_SETTINGS.tokenHopTimeoutMs };

/**
 * The stalls that load made: a SIGSTOP of the nemesis shows in the paused node's log as a stall
 * when it resumes, so a stall of a node that overlaps a pause of that node (to GAP_HEAL_MS after
 * its SIGCONT: a starved process notices late) is the pause, not load.
 */
export function loadStalls(ops: Op[]): Op[] {
  const pauses = ops.filter((o) => o.op === "fault" && o.fault?.startsWith("pause"));
  return ops.filter((o) =>
    o.op === "stall" && o.value !== undefined &&
    !pauses.some((p) => p.node === o.node && o.start < p.end + GAP_HEAL_MS && o.end > p.start)
  );
}
const ringNodesOf = (ops: Op[]) => [...new Set(ops.filter((o) => o.op === "fault" || o.op === "stall").map((o) => o.node ?? "").filter(isRingNode))];
const isRingNode = (node: string) => /^r\d+$/.test(node);

/**
 * For every healed fault of a lock or ring node: the longest time in its window in which nobody
 * was granted. Faults of the lock service (p1, b1, a1) are measured on the probe's grants; faults
 * of a ring node on the ring sections granted at any node.
 */
export function grantGaps(ops: Op[]): GrantGap[] {
  const source = (op: OpName) => ({
    grants: ops.filter((o) => o.op === op && o.type === "ok").map((o) => o.end).sort((a, b) => a - b),
    lastAskMs: ops.reduce((last, o) => (o.op === op ? Math.max(last, o.start) : last), Number.NEGATIVE_INFINITY),
  });
  const lock = source("probe");
  const ring = source("ring-enter");
  const faults = ops.filter((o) => o.op === "fault" && o.node !== undefined);
  const arbiterFaults = faults.filter((f) => f.node === "a1");
  const stalls = loadStalls(ops);
  const syncs = ops.filter((o) => o.op === "sync" && (o.node === "p1" || o.node === "b1")).sort((a, b) => a.end - b.end);
  const gaps: GrantGap[] = [];
  for (const fault of faults) {
    if (fault.type !== "ok") continue;
    const node = fault.node!;
    const ofLock = LOCK_NODE_IDS.includes(node);
    if (!ofLock && !isRingNode(node)) continue;
    const { grants, lastAskMs } = ofLock ? lock : ring;
    const sameService = (f: Op) => (ofLock ? LOCK_NODE_IDS.includes(f.node!) : isRingNode(f.node!));
    const nextFault = faults.find((f) => f.start > fault.start && sameService(f));
    const fromMs = fault.start;
    const windowEndMs = fault.end + GAP_HEAL_MS;
    const untilMs = Math.min(nextFault?.start ?? Number.POSITIVE_INFINITY, lastAskMs);
    if (!(untilMs > fromMs)) continue;
    let gapMs = 0;
    let gapFromMs = fromMs;
    let lastMs = fromMs;
    const note = (toMs: number) => {
      if (toMs - lastMs > gapMs) [gapMs, gapFromMs] = [toMs - lastMs, lastMs];
    };
    for (const at of grants) {
      if (at <= fromMs) continue;
      if (at >= untilMs || lastMs > windowEndMs) break;
      note(at);
      lastMs = at;
    }
    if (lastMs <= windowEndMs) note(Math.min(untilMs, grants.find((at) => at > lastMs) ?? untilMs));
    // The runner's own stalls within the gap delayed the grants it records: not the service's time.
    const runnerStallMs = stalls.filter((st) => st.node === "runner")
      .reduce((sum, st) => sum + Math.max(0, Math.min(st.end, gapFromMs + gapMs) - Math.max(st.start, gapFromMs)), 0);
    const overlapped = !ofLock && arbiterFaults.find((a) => a.start < windowEndMs && a.end > fromMs);
    // A fault of the same service from another track (a clock step next to a kill) still active
    // when this one began: this one is the second fault.
    const ongoing = faults.find((f) => f !== fault && f.start <= fromMs && f.end > fromMs && sameService(f));
    const stalled = stalls.find((st) =>
      st.node !== node && (ofLock ? LOCK_NODE_IDS : ["a1", ...ringNodesOf(ops)]).includes(st.node!) &&
      st.value! >= (ofLock ? STALL_FAULT_MS.lock : STALL_FAULT_MS.ring) && st.start < windowEndMs && st.end > fromMs
    );
    // The serving server's word on its backup: out of sync at the fault (its last word before)
    // or during it means the service ran on one server and the arbiter, so a fault of anything
    // but that backup is the second fault. Under load a starved backup misses its acks.
    // A report during the fault by the faulted server itself is the fault's own doing (a paused,
    // cut or lossy server loses its backup), except under cut-arbiter, which leaves that link alone.
    const lastSync = ofLock ? syncs.findLast((o) => o.end <= fromMs) : undefined;
    const during = ofLock ? syncs.filter((o) => o.value === 0 && o.end > fromMs && o.end < windowEndMs && (o.node !== node || fault.step === "cut-arbiter")) : [];
    const outOfSync = [...(lastSync?.value === 0 ? [lastSync] : []), ...during].find((o) => (o.node === "p1" ? "b1" : "p1") !== node);
    const backup = outOfSync && (outOfSync.node === "p1" ? "b1" : "p1");
    const safetyOnly = overlapped
      ? `a1 faulted too (${overlapped.step ?? overlapped.fault})`
      : ongoing
      ? `${ongoing.node} faulted too (${ongoing.step ?? ongoing.fault})`
      : stalled
      ? `${stalled.node} stalled ${Math.round(stalled.value!)} ms`
      : outOfSync
      ? `${backup} out of sync ${outOfSync.end <= fromMs ? "at" : "during"} the fault (${outOfSync.node}'s log)`
      : undefined;
    gaps.push({ fault, gapMs, runnerStallMs, boundMs: safetyOnly ? undefined : gapBoundMs(fault), ...(safetyOnly ? { safetyOnly } : {}) });
  }
  return gaps;
}

export function checkHistory(records: HistoryRecord[]): CheckResult {
  return checkOps(pairOps(records));
}

/** One history record as a short line, times relative to `originMs`. */
export function formatRecord(r: HistoryRecord, originMs: number): string {
  const at = (ms: number) => `${((ms - originMs) / 1000).toFixed(3)}s`;
  const time = r.type === "invoke" ? at(r.start) : at(r.end ?? r.start);
  const fields = [
    r.lock && `lock=${r.lock}`,
    r.node && `node=${r.node}`,
    r.fault && `fault=${r.fault}`,
    r.token !== undefined && `token=${r.token}`,
    r.value !== undefined && `value=${r.value}`,
    r.leaseMs !== undefined && `lease=${r.leaseMs}ms`,
    r.error && `error=${JSON.stringify(r.error.slice(0, 120))}`,
  ].filter(Boolean).join(" ");
  return `${time.padStart(9)} #${String(r.id).padEnd(6)} ${r.type.padEnd(6)} ${r.op.padEnd(12)} ${r.client.padEnd(8)} ${fields}`;
}

/** The violation and the history around it: records of its lock and every fault, in its window. */
export function formatViolation(v: Violation, records: HistoryRecord[], linesMax = 60): string {
  const originMs = records.length ? records[0].start : 0;
  const times = v.ops.flatMap((o) => [o.start, o.end]).filter(Number.isFinite);
  const fromMs = times.length ? Math.min(...times) - 300 : -Infinity;
  const toMs = times.length ? Math.max(...times) + 300 : Infinity;
  const ids = new Set(v.ops.map((o) => o.id));
  const near = records.filter((r) => {
    const t = r.type === "invoke" ? r.start : r.end ?? r.start;
    if (t < fromMs || t > toMs) return false;
    return ids.has(r.id) || r.op === "fault" || (v.lock !== undefined && r.lock === v.lock);
  });
  const shown = near.length > linesMax ? [...near.filter((r) => ids.has(r.id) || r.op === "fault"), ...near.slice(-10)] : near;
  const unique = [...new Map(shown.map((r) => [`${r.id}:${r.type}`, r])).values()].sort(
    (a, b) => (a.type === "invoke" ? a.start : a.end ?? a.start) - (b.type === "invoke" ? b.start : b.end ?? b.start),
  );
  const lines = unique.map((r) => `${ids.has(r.id) ? ">" : " "} ${formatRecord(r, originMs)}`);
  return [`VIOLATION ${v.rule}${v.lock ? ` (${v.lock})` : ""}: ${v.message}`, ...lines].join("\n");
}

/** Reads, checks and prints; returns the exit status (0 clean, 1 violations). */
export function checkFile(file: string, print: (line: string) => void = (l) => process.stdout.write(l + "\n")): number {
  const records = readHistory(file);
  const result = checkHistory(records);
  const stats = Object.entries(result.stats).sort().map(([k, n]) => `${k}=${n}`).join(" ");
  print(`check: ${records.length} records; ${stats}`);
  for (const v of result.violations.slice(0, 20)) print(formatViolation(v, records));
  if (result.violations.length > 20) print(`… and ${result.violations.length - 20} more violations`);
  for (const line of formatSummary(summarize(pairOps(records), result.violations))) print(line);
  print(result.violations.length === 0 ? "check: OK, no violation" : `check: ${result.violations.length} violation(s)`);
  return result.violations.length === 0 ? 0 : 1;
}

if (import.meta.main) {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write("Usage: check.ts HISTORY.jsonl\n");
    process.exit(2);
  }
  process.exit(checkFile(file));
}
