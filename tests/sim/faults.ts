/**
 * The fault registry. A fault type is a named, rate-driven action on the simulation: the seed's
 * profile (swarm testing) switches each type on or off and picks its rate; while the safety phase
 * lasts the scheduler fires it at exponential intervals. Every fault undoes itself after a
 * while, and the heal phase undoes whatever is left (network healed, nodes resumed, restarted).
 *
 * Generic faults (network partitions, pauses, wall-clock steps) live here; a node kind adds its
 * own (crashes of its roles, token loss…) with the builders below.
 */
import type { Prng } from "../../lib/core/prng.ts";
import type { Actor } from "./actor.ts";
import type { Sim } from "./simulator.ts";

export interface FaultType {
  name: string;
  /** One line for `--help` and the docs. */
  doc: string;
  /** Present when the fault is off unless asked for (`--faults +name`): why. */
  optInReason?: string;
  /** Events per simulated second, drawn in this range when the seed switches the fault on. */
  ratePerSecond: readonly [number, number];
  /**
   * The kinds whose liveness check this fault voids when it fires (the handling comes in a later
   * issue), e.g. a ring crash before regeneration exists voids the ring's liveness.
   */
  voidsLivenessOf?: readonly string[];
  inject(sim: Sim, prng: Prng): void;
}

/** Up (or paused) actors of `groups`, in id order; the fault picks among them. */
function candidates(sim: Sim, groups: readonly string[] | undefined, states: Actor["state"][]): Actor[] {
  return sim.actors().filter((a) => (!groups || groups.includes(a.group)) && states.includes(a.state));
}

/** Crashes one actor of `group` and restarts it after `downMs` (what it persisted survives). */
export function crashFault(options: {
  name: string;
  group: string;
  doc: string;
  downMs: readonly [number, number];
  ratePerSecond: readonly [number, number];
  /** At most this many of the group down at once. */
  downMax: number;
  optInReason?: string;
  voidsLivenessOf?: readonly string[];
}): FaultType {
  return {
    ...options,
    inject(sim, prng) {
      const down = sim.actors().filter((a) => a.group === options.group && a.state === "crashed").length;
      const pool = candidates(sim, [options.group], ["up", "paused"]);
      if (down >= options.downMax || pool.length === 0) return;
      const victim = prng.pick(pool);
      victim.crash();
      sim.afterFault(prng.between(...options.downMs), () => victim.restart());
    },
  };
}

/** Pauses one actor of `groups` (SIGSTOP, a GC stall) for a while. */
export function pauseFault(options: { name: string; groups?: readonly string[]; pauseMs: readonly [number, number] }): FaultType {
  return {
    name: options.name,
    doc: `pause an actor${options.groups ? ` (${options.groups.join(", ")})` : ""} for ${options.pauseMs.join("..")} ms`,
    ratePerSecond: [0.05, 0.5],
    inject(sim, prng) {
      const pool = candidates(sim, options.groups, ["up"]);
      if (pool.length === 0) return;
      const victim = prng.pick(pool);
      victim.pause();
      sim.afterFault(prng.between(...options.pauseMs), () => victim.resume());
    },
  };
}

const isolate: FaultType = {
  name: "partition",
  doc: "isolate one actor from all others, both ways, for 50..4000 ms",
  ratePerSecond: [0.05, 0.5],
  inject(sim, prng) {
    const victim = prng.pick(sim.actors());
    const links: Array<[string, string]> = [];
    for (const other of victim.peers()) links.push([victim.id, other], [other, victim.id]);
    cutFor(sim, prng, links, `partition ${victim.id} | ${victim.peers().join(",")}`);
  },
};

const oneWay: FaultType = {
  name: "one-way",
  doc: "block one direction of one link for 50..4000 ms (the other direction still works)",
  ratePerSecond: [0.05, 0.5],
  inject(sim, prng) {
    const from = prng.pick(sim.actors());
    const peers = from.peers();
    if (peers.length === 0) return;
    const to = prng.pick(peers);
    cutFor(sim, prng, [[from.id, to]], `one-way cut ${from.id} -> ${to}`);
  },
};

const split: FaultType = {
  name: "split",
  doc: "split the actors into two random halves, both ways, for 50..4000 ms",
  ratePerSecond: [0.02, 0.2],
  inject(sim, prng) {
    const actors = sim.actors();
    const side = new Map(actors.map((a) => [a.id, prng.chance(0.5)]));
    const links: Array<[string, string]> = [];
    for (const a of actors) for (const b of a.peers()) if (side.get(a.id) !== side.get(b)) links.push([a.id, b]);
    const left = actors.filter((a) => side.get(a.id)).map((a) => a.id);
    cutFor(sim, prng, links, `split {${left.join(",")}} | rest`);
  },
};

function cutFor(sim: Sim, prng: Prng, links: Array<[string, string]>, what: string): void {
  if (links.length === 0) return;
  const durationMs = prng.between(50, 4_000);
  sim.network.cut(links);
  sim.log("net", "x", `${what} for ${durationMs}ms`);
  sim.afterFault(durationMs, () => {
    sim.network.uncut(links);
    sim.log("net", "=", `heal ${what}`);
  });
}

const wallStep: FaultType = {
  name: "wall-step",
  doc: "step one node's realtime clock (Date.now) by -5000..+5000 ms; monotonic clocks are unaffected",
  ratePerSecond: [0.02, 0.2],
  inject(sim, prng) {
    const victim = prng.pick(sim.actors());
    const stepMs = prng.between(-5_000, 5_000);
    victim.clock.wallStepMs += stepMs;
    sim.log(victim.id, "~", `wall clock step ${stepMs}ms`);
  },
};

/**
 * How late a held-back message arrives: after any normal delay (at most delayMax + 4 × delayMax
 * of reordering = 1.5 s) and after a primary lease (0.5..2.5 s) or a ring hop timeout (1 s), so a
 * message of an old epoch or an old lease reaches a node that has moved on.
 */
const LATE_MS: readonly [number, number] = [2_000, 10_000];

const lateDelivery: FaultType = {
  name: "late-delivery",
  doc: `hold back the next message sent (any actor, any link) and deliver it ${LATE_MS.join("..")} ms late; the heal delivers what is still held`,
  ratePerSecond: [0.05, 0.5],
  inject(sim, prng) {
    const lateMs = prng.between(...LATE_MS);
    sim.network.holdNext(lateMs);
    sim.log("net", "~", `the next message sent will arrive ${lateMs}ms late`);
  },
};

/** The faults every simulation has, whatever node kinds run. */
export const GENERIC_FAULTS: readonly FaultType[] = [
  isolate,
  oneWay,
  split,
  pauseFault({ name: "pause", pauseMs: [10, 3_000] }),
  wallStep,
];

/**
 * Generic faults added since issue 8. The profile draws them after every kind's faults, so a
 * new one shifts no earlier draw: a seed that leaves it off runs exactly as it did before.
 */
export const LATER_GENERIC_FAULTS: readonly FaultType[] = [lateDelivery];
