/**
 * What a protocol core brings to the simulator: a node kind. A kind draws its workload from its
 * own fork of the seed, builds its actors (the real core wrapped in a simulated driver), adds its
 * faults to the fault registry and its invariants to the checker registry, and judges liveness
 * after the heal phase. Kinds are listed in kinds.ts; several run side by side in one run.
 */
import type { Prng } from "../../lib/core/prng.ts";
import type { FaultType } from "./faults.ts";
import type { NetworkProfile } from "./network.ts";
import type { Sim } from "./simulator.ts";

/** Workload parameters of one kind for one run: plain data, printed in the header. */
export type KindParams = Record<string, number | string | boolean>;

export interface NodeKind {
  name: string;
  doc: string;
  /** This kind's faults (crashes of its roles, token loss, …), switched per seed like the rest. */
  faults: readonly FaultType[];
  /** Draws the workload; the network is drawn first, so timeouts can respect its delays. */
  drawParams(prng: Prng, network: NetworkProfile): KindParams;
  /** Builds actors and registers checkers into `sim`. */
  setup(sim: Sim, params: KindParams): KindRun;
}

export interface KindRun {
  /** Called once when the heal phase starts (faults stopped, network healed, all nodes up). */
  onHeal(): void;
  /**
   * Called once at the end: liveness verdicts as violation messages (empty when live). The
   * simulator does not call it when a fault of `voidsLivenessOf` this kind fired in the run.
   */
  finish(): string[];
}
