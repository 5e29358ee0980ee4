/**
 * Node kind "ring": 3..5 ring nodes (the real RingNode core) in cluster-file order, and 1..N
 * clients, each bound to one node. Its own faults: a ring node crashes and restarts with what
 * its disk kept (any node, or the one with the token, so that the token is lost and
 * regenerated); a ring node is cut off for longer than tokenLossMs; a ring link delivers late
 * (past a regeneration, so old-epoch tokens and writes arrive after it). The first ring node
 * regenerates a lost token once every node answers (there is no ring repair yet, so a node that
 * stays down stalls the ring: the heal phase restarts it).
 *
 * Liveness, after the heal phase starts and `settleMs` passed: every ring lock() is granted
 * within `boundMs`, and at the end every node has committed every acknowledged write.
 */
import type { Prng } from "../../../lib/core/prng.ts";
import { DEFAULT_SETTINGS, type Settings, validateSettings } from "../../../lib/settings.ts";
import { crashFault, type FaultType } from "../faults.ts";
import type { NetworkProfile } from "../network.ts";
import type { KindParams, KindRun, NodeKind } from "../node_kind.ts";
import type { Sim } from "../simulator.ts";
import { type RingAttempt, RingClientActor, type RingWorkload } from "./client.ts";
import { nodeStateChecker, RingStepObserver, sectionMutexChecker } from "./checkers.ts";
import { RingNodeActor } from "./node.ts";

const ringCrash = crashFault({
  name: "ring-crash",
  group: "ring",
  doc: "a ring node crashes (losing the token if it had it) and restarts 0..5000 ms later from its disk",
  downMs: [0, 5_000],
  ratePerSecond: [0.02, 0.2],
  downMax: 2,
  // On by default since the two restart bugs it found (seeds 36, 343 and 1813; docs/simulator.md,
  // findings 1 and 2) were fixed: lastHop is stored with the epoch, and a node drops writes of an
  // older epoch above a new token's wseq.
});

/** At most this many ring nodes down at once (ring-crash and ring-holder-crash together). */
const RING_DOWN_MAX = 2;

/** The ring node actors of the run, in ring order. */
function ringNodes(sim: Sim): RingNodeActor[] {
  return sim.actors().filter((a): a is RingNodeActor => a instanceof RingNodeActor);
}

/** The run's tokenLossMs (a drawn parameter). */
function tokenLossMsOf(sim: Sim): number {
  return Number(sim.profile.params.ring.tokenLossMs);
}

/** The up node that holds the token or is handing it on, if any. */
function tokenNode(sim: Sim): RingNodeActor | undefined {
  return ringNodes(sim).find((n) => n.state !== "crashed" && n.core && n.core.status(n.clock.nowMs()).token !== "away");
}

const ringHolderCrash: FaultType = {
  name: "ring-holder-crash",
  doc: "the ring node holding or sending the token crashes (the token is lost: a regeneration follows) and restarts 0..5000 ms later",
  ratePerSecond: [0.02, 0.2],
  inject(sim, prng) {
    if (ringNodes(sim).filter((n) => n.state === "crashed").length >= RING_DOWN_MAX) return;
    const holder = tokenNode(sim);
    if (!holder) return;
    holder.crash();
    sim.afterFault(prng.between(0, 5_000), () => holder.restart());
  },
};

const ringLongPartition: FaultType = {
  name: "ring-long-partition",
  doc: "cut one ring node off from its peers and clients, both ways, for tokenLossMs..2 × tokenLossMs",
  ratePerSecond: [0.01, 0.05],
  inject(sim, prng) {
    const victim = prng.pick(ringNodes(sim));
    const links: Array<[string, string]> = victim.peers().flatMap((peer) => [[victim.id, peer], [peer, victim.id]] as Array<[string, string]>);
    const tokenLossMs = tokenLossMsOf(sim);
    const durationMs = prng.between(tokenLossMs, 2 * tokenLossMs);
    sim.network.cut(links);
    sim.log("net", "x", `long partition ${victim.id} | ${victim.peers().join(",")} for ${durationMs}ms`);
    sim.afterFault(durationMs, () => {
      sim.network.uncut(links);
      sim.log("net", "=", `heal long partition ${victim.id}`);
    });
  },
};

const ringLate: FaultType = {
  name: "ring-late",
  doc: "what the token's node (else any ring node) sends its successor in a 50..1000 ms window arrives tokenLossMs..3 × tokenLossMs late (before the heal); half the time the sender crashes at the window's end and restarts 0..2000 ms later",
  ratePerSecond: [0.05, 0.3],
  inject(sim, prng) {
    // The token's link most likely carries a hand-off in the window: held back past a
    // regeneration, it is a token of an older epoch arriving after the new one exists.
    const from = tokenNode(sim) ?? prng.pick(ringNodes(sim));
    const to = from.ring[(from.ring.indexOf(from.id) + 1) % from.ring.length];
    const windowMs = prng.between(50, 1_000);
    const tokenLossMs = tokenLossMsOf(sim);
    // Late, but delivered within the safety phase (also with the network's own delay and
    // reordering on top): a late prepare could still end a live token (costs liveness only),
    // which the heal phase's bounds do not allow for.
    const { delayMaxMs, reorderDelayMaxMs } = sim.profile.network;
    const lateMs = Math.min(prng.between(tokenLossMs, 3 * tokenLossMs), sim.profile.safetyMs - sim.nowMs - windowMs - delayMaxMs - reorderDelayMaxMs);
    if (lateMs < tokenLossMs) return;
    // Half the time the sender also dies at the window's end, before a resend got through: then
    // the held-back copy is all that is left of its hand-off, and the token is regenerated
    // before that copy arrives.
    const senderDies = prng.chance(0.5);
    const links: Array<[string, string]> = [[from.id, to]];
    sim.network.slow(links, lateMs);
    sim.log("net", "~", `late link ${from.id} -> ${to}: sent in the next ${windowMs}ms arrives ${lateMs}ms late${senderDies ? `, then ${from.id} crashes` : ""}`);
    sim.afterFault(windowMs, () => {
      sim.network.unslow(links);
      if (!senderDies || ringNodes(sim).filter((n) => n.state === "crashed").length >= RING_DOWN_MAX) return;
      from.crash();
      sim.afterFault(prng.between(0, 2_000), () => from.restart());
    });
  },
};

export function ringLivenessBounds(params: KindParams, delayMaxMs: number, settings: Settings) {
  const nodes = Number(params.nodes);
  const clients = Number(params.clients);
  const hopMs = delayMaxMs + settings.tickMs;
  // A token lost before the heal is regenerated once tokenLossMs passed without one and the
  // first node's next attempt (every ringRegenRetryMs) finds everybody; a hop stuck in backoff
  // is retried within tokenHopTimeoutMs.
  const settleMs = settings.tokenLossMs + 2 * settings.ringRegenRetryMs + 2 * settings.tokenHopTimeoutMs +
    Number(params.leaseMs) + nodes * hopMs;
  // Two rotations to reach the client's node (an idle token rests tokenIdlePaceMs per node
  // unless woken), then FIFO behind every other client: its hold, its writes around the ring,
  // its leave.
  const rotationMs = nodes * (settings.tokenIdlePaceMs + 2 * hopMs);
  const sectionMs = Number(params.holdMaxMs) + Number(params.writesMax) * (nodes + 2) * hopMs + 4 * hopMs;
  const boundMs = 2 * rotationMs + clients * (sectionMs + rotationMs);
  return { settleMs, boundMs, rotationMs };
}

export const RING_KIND: NodeKind = {
  name: "ring",
  doc: "a token ring of RingNode cores with clients entering the critical section and writing",
  faults: [ringCrash, ringHolderCrash, ringLongPartition, ringLate],

  drawParams(prng: Prng, _network: NetworkProfile): KindParams {
    const nodes = prng.between(3, 5);
    return {
      nodes,
      clients: prng.between(1, nodes),
      leaseMs: prng.pick([300, 1_000, 5_000]),
      // Most seeds write (5 in 6): the write path is most of the ring's code.
      writesMax: prng.pick([0, 1, 3, 3, 5, 5]),
      holdMaxMs: prng.pick([0, 100, 500]),
      thinkMaxMs: prng.pick([100, 1_000]),
      // The shortest the settings allow (≥ 4 × (hop timeout + pace), ≥ the longest lease drawn)
      // or the default: shorter means more regenerations in a run.
      tokenLossMs: prng.pick([5_000, DEFAULT_SETTINGS.tokenLossMs]),
    };
  },

  setup(sim: Sim, params: KindParams): KindRun {
    const tokenLossMs = Number(params.tokenLossMs);
    const settings: Settings = { ...DEFAULT_SETTINGS, tokenLossMs, ringLeaseMaxMs: Math.min(DEFAULT_SETTINGS.ringLeaseMaxMs, tokenLossMs) };
    const problems = validateSettings(settings);
    if (problems.length > 0) throw new Error(`ring settings: ${problems.map((p) => `${p.key} ${p.message}`).join("; ")}`);
    const workload: RingWorkload = {
      leaseMs: Number(params.leaseMs),
      writesMax: Number(params.writesMax),
      holdMaxMs: Number(params.holdMaxMs),
      thinkMaxMs: Number(params.thinkMaxMs),
      waitChoicesMs: [0, 1_000, 10_000],
      healWaitMs: 120_000,
      keys: 3,
    };
    const ring = Array.from({ length: Number(params.nodes) }, (_, i) => `r${i + 1}`);
    const nodes: RingNodeActor[] = [];
    const clients: RingClientActor[] = [];
    const attempts: RingAttempt[] = [];
    const observer = new RingStepObserver(sim, ring);
    const clientsOf = (node: string) => clients.filter((c) => c.node === node).map((c) => c.id);
    for (const id of ring) {
      const node = new RingNodeActor(sim, id, sim.newClock(), ring, settings, observer, () => clientsOf(id));
      nodes.push(node);
      sim.addActor(node);
    }
    const workloadPrng = sim.prng.fork("ring-workload");
    for (let i = 1; i <= Number(params.clients); i++) {
      const id = `rc${i}`;
      const client = new RingClientActor(sim, id, sim.newClock(), ring[(i - 1) % ring.length], settings, workload, workloadPrng.fork(id), {
        attempt: (a) => attempts.push(a),
        acked: (w) => observer.ackedWrite(w),
      });
      clients.push(client);
      sim.addActor(client);
    }
    sim.checkers.register(sectionMutexChecker(() => clients));
    for (const checker of nodeStateChecker(() => nodes, () => observer.peekChanged())) sim.checkers.register(checker);
    // Not an invariant: re-arms the trigger of the two checks above once both have looked.
    sim.checkers.register({ name: "ring.node-state-trigger", doc: "bookkeeping for the node-state checks", check: () => void observer.clearChanged() });

    const { settleMs, boundMs, rotationMs } = ringLivenessBounds(params, sim.profile.network.delayMaxMs, settings);
    let settledAtMs = Number.POSITIVE_INFINITY;
    return {
      onHeal() {
        settledAtMs = sim.nowMs + settleMs;
        sim.log("ring", "*", `liveness: every ring lock() from ${settledAtMs}ms on is granted within ${boundMs}ms`);
      },
      finish() {
        const problems: string[] = [];
        const open = clients.flatMap((c) => (c.currentAttempt() ? [c.currentAttempt()!] : []));
        for (const attempt of [...attempts, ...open]) {
          if (attempt.startedAtMs < settledAtMs) continue;
          const waitedMs = (attempt.grantedAtMs ?? attempt.endedAtMs ?? sim.nowMs) - attempt.startedAtMs;
          if (attempt.grantedAtMs === undefined && attempt.endedAtMs !== undefined) {
            problems.push(`${attempt.client}: ring lock from ${attempt.startedAtMs}ms ended ${attempt.outcome}`);
          } else if (waitedMs > boundMs) {
            problems.push(`${attempt.client}: ring lock from ${attempt.startedAtMs}ms waited ${waitedMs}ms > bound ${boundMs}ms`);
          }
        }
        // A commit watermark travels with the token: give it two rotations (and a settle, for a
        // token lost just now) to reach every node.
        const ackedMax = observer.ackedMaxBy(sim.nowMs - settleMs - 2 * rotationMs);
        for (const node of nodes) {
          const commit = node.core?.replica.commit ?? -1;
          if (commit < ackedMax) problems.push(`${node.id} committed up to ${commit}, below the acknowledged write ${ackedMax}`);
        }
        return problems;
      },
    };
  },
};
