/**
 * Node kind "ring": 3..5 ring nodes (the real RingNode core) in cluster-file order, and 1..N
 * clients, each bound to one node. Its own fault: a ring node crashes and restarts with what
 * its disk kept. The first ring node regenerates a lost token once every node answers (there
 * is no ring repair yet, so a node that stays down stalls the ring: the heal phase restarts it).
 *
 * Liveness, after the heal phase starts and `settleMs` passed: every ring lock() is granted
 * within `boundMs`, and at the end every node has committed every acknowledged write.
 */
import type { Prng } from "../../../lib/core/prng.ts";
import { DEFAULT_SETTINGS, type Settings } from "../../../lib/settings.ts";
import { crashFault } from "../faults.ts";
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
  faults: [ringCrash],

  drawParams(prng: Prng, _network: NetworkProfile): KindParams {
    const nodes = prng.between(3, 5);
    return {
      nodes,
      clients: prng.between(1, nodes),
      leaseMs: prng.pick([300, 1_000, 5_000]),
      writesMax: prng.pick([0, 3]),
      holdMaxMs: prng.pick([0, 100, 500]),
      thinkMaxMs: prng.pick([100, 1_000]),
    };
  },

  setup(sim: Sim, params: KindParams): KindRun {
    const settings: Settings = { ...DEFAULT_SETTINGS };
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
