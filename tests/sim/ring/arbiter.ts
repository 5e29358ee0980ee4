/**
 * The simulated arbiter of a ring (parameter `arbiter`): the real RingCoordinator
 * (cluster/arbiter/ring_coordinator.ts), a non-voting ViewCore that coordinates the view changes
 * the ring nodes ask it for, on simulated ports, behind the ring's real `/v1/ring/peer/view`
 * route (api.ts `viewRoute`, as cluster/arbiter/server.ts serves it):
 *
 * - clock: the actor's NodeClock; timers: its virtual timers (a crash cancels them);
 * - view messages to the ring nodes: `POST /v1/ring/peer/view` as HTTP messages (http_actor.ts),
 *   failed after tokenHopTimeoutMs as http_peers.ts' fetch.
 *
 * It stores nothing for the ring, so a crash (fault ring-arbiter-crash) loses all it knew and the
 * restart begins a fresh coordinator, as the binary's restart does. Only the arbiter's ring part
 * runs here: the lock service's arbitration is the failover kind's (tests/sim/failover).
 */
import { RingCoordinator } from "../../../cluster/arbiter/ring_coordinator.ts";
import { viewRoute } from "../../../cluster/ring/api.ts";
import type { Settings } from "../../../lib/settings.ts";
import type { Sim } from "../simulator.ts";
import type { NodeClock } from "../time.ts";
import { SimRingHttp } from "./http.ts";
import { SimHttpActor } from "./http_actor.ts";
import { Microtasks, simTimers } from "./ports.ts";

/** The arbiter's id in the ring kind (the ring nodes' `arbiter` option). */
export const RING_ARBITER_ID = "a1";

/** The actor group of the ring's arbiter (its own crash fault; not a ring node's). */
export const RING_ARBITER_GROUP = "ring-arbiter";

/** Coordinator events written to the trace (all of them with --verbose). */
const TRACED_EVENTS = new Set(["viewDecided", "viewChangeAbandoned", "ringQuorumLost", "ringQuorumRegained"]);

export class RingArbiterActor extends SimHttpActor {
  coordinator: RingCoordinator | undefined;

  constructor(sim: Sim, clock: NodeClock, readonly ring: readonly string[], private readonly settings: Settings) {
    super(sim, RING_ARBITER_ID, RING_ARBITER_GROUP, clock, settings.tokenHopTimeoutMs, TRACED_EVENTS);
    this.start();
  }

  /** It talks to the ring nodes only (clients never call it). */
  peers(): string[] {
    return [...this.ring];
  }

  private start(): void {
    this.microtasks = new Microtasks();
    const coordinator = new RingCoordinator({
      id: this.id,
      ring: this.ring,
      settings: this.settings,
      clock: this.clock,
      timers: simTimers(this, (fn) => this.turn(fn)),
      view: (to, message) => this.callView(to, message),
      log: this.logger(),
    });
    this.coordinator = coordinator;
    this.http = new SimRingHttp([viewRoute(coordinator, this.settings)], this.onInternalError);
    this.turn(() => coordinator.start());
  }

  protected onCrash(): void {
    this.coordinator = undefined;
    this.dropIncarnation();
  }

  protected onRestart(): void {
    this.start();
  }
}
