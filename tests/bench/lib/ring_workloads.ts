/**
 * The fault on a non-holder, shared by R1 (kill -9), R2 (SIGSTOP) and R3 (30% packet loss on
 * its links): a fresh ring (5 nodes unless told) with the default settings, a client at every node taking
 * sections without a pause; right after a grant at the victim's successor S (so the token is as
 * far from the victim as it gets, and the victim holds nothing), the fault; then the time until
 * the client at S is granted again. The token must pass the victim's place to come back to S,
 * so that grant needs the ring repaired (or, under loss, the token through the lossy node).
 */
import { LossyNamespace } from "./netns.ts";
import { describeBreakdown, REASONS, REPAIR_WAIT_MS, repairBreakdown, type Ring, RING_SIZE, samplesOf, startRing, victimOf, whole } from "./ring.ts";
import { signal } from "./server.ts";
import { fmt, median } from "./stats.ts";
import { type Metrics, now, type Row, type RunResult, sleep, type Workload, type WorkloadContext } from "./workload.ts";

export type NonHolderFault = "kill" | "stop" | "loss";

/** Unmeasured time with every client taking sections before the fault. */
const WARM_UP_MS = 1_000;
/** The loss of R3, in percent of the packets to and from the victim. */
export const LOSS_PERCENT = 30;

/** "median (n faults, min–max)" of a sample over every run: the rows' usual cell (max is the bound seen). */
export function spreadCell(values: number[], noun = "faults"): string {
  if (values.length === 0) return "– (none measured: see the notes)";
  const counted = values.length === 1 ? noun.replace(/s$/, "") : noun;
  return `${fmt(median(values))} (${values.length} ${counted}, ${fmt(Math.min(...values))}–${fmt(Math.max(...values))})`;
}

/** The breakdown row: medians over the runs of where the repair's time went. */
export function breakdownRow(label: string): Row {
  return {
    label,
    show: (m) =>
      `hand-off failed ${whole(m.unreachableMs)}, view wanted ${whole(m.wantedMs)}, prepare ${whole(m.prepareMs)}, ` +
      `decided ${whole(m.decidedMs)} (grant wait ${whole(m.grantWaitMs)}), installed at S ${whole(m.installedMs)}`,
  };
}

async function faultOnce(ctx: WorkloadContext, fault: NonHolderFault, size: number, namespace?: LossyNamespace): Promise<RunResult> {
  const victim = victimOf(ctx.run, size);
  const ring: Ring = await startRing(ctx, namespace ? { size, lossy: { node: victim, namespace } } : { size });
  const notes: string[] = [];
  try {
    await ring.startLoad();
    await sleep(WARM_UP_MS);
    const successor = ring.successor(victim);
    const ratePerS = ring.grantsAt(successor, now() - WARM_UP_MS, now()).length / (WARM_UP_MS / 1000);
    if (!(await ring.nextGrant(successor, REPAIR_WAIT_MS))) throw new Error(`no grant at ${ring.ids[successor]} before the fault`);
    const faultAt = now();
    const faultWallMs = Date.now();
    if (fault === "kill") signal(ring.nodes[victim].pid, "SIGKILL");
    else if (fault === "stop") signal(ring.nodes[victim].pid, "SIGSTOP");
    else namespace!.setLoss(LOSS_PERCENT);
    const grant = await ring.nextGrant(successor, REPAIR_WAIT_MS);
    const metrics: Metrics = { victim, repairMs: grant ? grant.atMs - faultAt : Number.NaN, successorRatePerS: ratePerS };
    if (!grant) notes.push(`no grant at ${ring.ids[successor]} within ${REPAIR_WAIT_MS} ms of the fault`);
    if (fault === "loss") {
      // Loss does not stop the victim: the ring may keep it (slow hand-offs) or drop it and take
      // it back. Watch the successor over one phase: its grants and its longest wait between two
      // (a wait still running at the end of the phase counts whole: up to the next grant).
      const phaseEnd = faultAt + ctx.durationMs;
      await sleep(Math.max(0, phaseEnd - now()));
      const after = await ring.nextGrant(successor, REPAIR_WAIT_MS);
      if (!after) notes.push(`${ring.ids[successor]} still waiting ${REPAIR_WAIT_MS} ms after the phase: its longest wait is cut there`);
      const end = after?.atMs ?? now();
      const times = [faultAt, ...ring.grantsAt(successor, faultAt, end).map((g) => g.atMs), end];
      metrics.lossRatePerS = ring.grantsAt(successor, faultAt, phaseEnd).length / (ctx.durationMs / 1000);
      metrics.lossMaxGapMs = Math.max(...times.slice(1).map((t, i) => t - times[i]));
      metrics.droppedPackets = namespace!.droppedPackets();
      metrics.victimRatePerS = ring.grantsAt(victim, faultAt, phaseEnd).length / (ctx.durationMs / 1000);
    }
    const breakdown = repairBreakdown(ring, faultWallMs, successor);
    Object.assign(metrics, breakdown);
    notes.push(`victim ${ring.ids[victim]}: ${fmt(metrics.repairMs)} ms; ${describeBreakdown(breakdown)}`);
    return { metrics, notes };
  } finally {
    await ring.stop();
  }
}

/** R1, R2 and R3: the workload of one kind of fault on a non-holder of a ring of `size` nodes. */
export function nonHolderWorkload(id: string, fault: NonHolderFault, size = RING_SIZE): Workload {
  const what = { kill: "kill -9", stop: "SIGSTOP", loss: `${LOSS_PERCENT}% packet loss on the links of` }[fault];
  const rows: Row[] = [{
    label: `${id} ${what} a non-holder${size === RING_SIZE ? "" : ` (${size} nodes)`} → its successor granted, ms`,
    show: (_m, runs) => spreadCell(samplesOf(runs, /^repairMs$/)),
    value: (_m, runs) => median(samplesOf(runs, /^repairMs$/)),
    target: fault === "kill" ? "< 1,000" : "(stated, docs/bench.md)",
  }];
  // Under loss a view change happens in some phases only: each one is listed, not a median.
  if (fault !== "loss") rows.push(breakdownRow(`${id} where the time went (median ms after the fault)`));
  if (fault === "loss") {
    rows.push({
      label: `${id} under loss, one phase: longest wait between two grants at the successor, ms`,
      show: (_m, runs) => spreadCell(samplesOf(runs, /^lossMaxGapMs$/), "phases"),
      value: (_m, runs) => median(samplesOf(runs, /^lossMaxGapMs$/)),
    }, {
      label: `${id} under loss: grants/s at the successor (before the loss), at the victim; packets dropped`,
      show: (m) => `${fmt(m.lossRatePerS)}/s (${fmt(m.successorRatePerS)}/s), victim ${fmt(m.victimRatePerS)}/s; ${whole(m.droppedPackets)} dropped`,
    }, {
      label: `${id} under loss: view changes (ms after the loss began: wanted, why, grant wait, installed at S)`,
      show: (_m, runs) => {
        const phases = runs.filter((m) => m.views > 0);
        const each = phases.map((m) =>
          `${whole(m.views)} at ${whole(m.wantedMs)} (${REASONS[m.wantedReason] ?? "–"}, wait ${whole(m.grantWaitMs)}, at S ${whole(m.installedMs)})`
        );
        return `${phases.length} of ${runs.length} phases${each.length > 0 ? `: ${each.join("; ")}` : ""}`;
      },
    });
  }
  return {
    id,
    title: `${what} a non-holder of a ${size}-node ring (defaults): time until its successor grants again`,
    clients: "one",
    table: "ring",
    killsServers: true,
    rows,
    async run(ctx) {
      if (fault !== "loss") return await faultOnce(ctx, fault, size);
      const why = LossyNamespace.unavailable();
      if (why) {
        return { metrics: {}, notes: [`SKIPPED: cannot confine packet loss to one node here (${why}); loss on lo would hit every node`] };
      }
      const namespace = new LossyNamespace();
      try {
        namespace.create();
        return await faultOnce(ctx, fault, size, namespace);
      } finally {
        namespace.remove();
      }
    },
  };
}
