/**
 * The arbiter's part in the ring: it coordinates the view changes ring nodes ask for (a
 * `coordinate` message), without a vote (lib/core/ring/view.ts, docs/ring.md "Views"). It stores
 * nothing for the ring: a non-voter promises nothing, and its ballots start above the epoch the
 * asker reports. When it is down, the ring nodes coordinate themselves.
 *
 * A driver around a non-voting ViewCore, drained by the ring's ViewPump. Its runtime comes as
 * ports, as for RingService (clock, timers, the view messages it sends, log), and it continues
 * what a port returns with `.then` only (cluster/timers.ts), so the simulator runs it as it is
 * (tests/sim/ring/arbiter.ts). cluster/arbiter/server.ts builds it on the real ports and serves
 * `viewRoute(coordinator)` (cluster/ring/api.ts), the ring nodes' own route.
 */
import { type LocalFacts, ViewCore, type ViewMessage, type ViewStatus } from "../../lib/core/ring/view.ts";
import type { Settings } from "../../lib/settings.ts";
import type { Clock } from "../clock.ts";
import type { Logger } from "../log.ts";
import { ViewPump } from "../ring/view_pump.ts";
import { repeatEvery, type Timers } from "../timers.ts";

export interface RingCoordinatorPorts {
  /** The arbiter's id (the cluster file's), which the ring nodes know as their `arbiter`. */
  id: string;
  /** The ring nodes of the cluster file, in file order: the voters. */
  ring: readonly string[];
  settings: Settings;
  clock: Clock;
  timers: Timers;
  /** Sends one view message to a ring node (one-way; a rejection goes back to the core). */
  view(to: string, message: ViewMessage): PromiseLike<void>;
  log: Logger;
  /** Runs first in every tick, every tickMs (the arbiter's stall monitor beats on it). */
  onTick?(): void;
}

/** What the arbiter holds of a ring: nothing (it is no ring node, and its facts never count). */
const NO_RING_FACTS: LocalFacts = {
  lastApplied: 0,
  lastWriteEpoch: 0,
  commit: 0,
  tokenEpoch: 0,
  tokenHop: 0,
  token: "away",
  sectionRemainingMs: 0,
  lastTokenAgeMs: null,
};

export class RingCoordinator {
  private readonly core: ViewCore;
  private readonly pump: ViewPump;
  private stopped = false;
  private stopTicks: (() => void) | null = null;

  constructor(private readonly ports: RingCoordinatorPorts) {
    const { id, ring, settings, log } = ports;
    this.core = new ViewCore({ id, ring: [...ring], arbiter: id, settings, localFacts: () => NO_RING_FACTS }, null, this.now());
    this.pump = new ViewPump(this.core, {
      store: () => {
        throw new Error("the arbiter casts no vote: it has no view state to store");
      },
      decide: (decision) => {
        if (decision.type === "quorum") log.event(decision.ok ? "ringQuorumRegained" : "ringQuorumLost", { reason: decision.reason });
      },
      send: (to, message) => ports.view(to, message),
      log,
      nowMs: () => this.now(),
      stopped: () => this.stopped,
    });
  }

  /** Starts the ticks (an attempt's timeouts and retries run on them). */
  start(): void {
    if (this.stopped || this.stopTicks) return;
    this.stopTicks = repeatEvery(this.ports.timers, this.ports.settings.tickMs, () => {
      this.ports.onTick?.();
      this.core.tick(this.now());
      this.pump.pump();
    });
  }

  /** Stops the ticks; later messages are dropped (the HTTP server is closing). */
  stop(): void {
    this.stopped = true;
    this.stopTicks?.();
    this.stopTicks = null;
  }

  /** A view message from a ring node (`POST /v1/ring/peer/view`): the core checks it first. */
  onViewMessage(message: ViewMessage): void {
    if (this.stopped) return;
    this.core.receive(message, this.now());
    this.pump.pump();
  }

  /**
   * SIGHUP: the ring nodes of the reloaded file are the voters it coordinates (one node added or
   * removed, as for a ring node, but without waiting for a view under its list: it votes in none,
   * and its prepares count only at voters of the same list; a refusal is logged and changes
   * nothing). Null when taken.
   */
  reload(ring: readonly string[]): string | null {
    const refusal = this.core.changeMembership([...ring], this.now());
    this.ports.log.event(refusal === null ? "ringReloaded" : "ringReloadRefused", { ring: ring.join(","), ...(refusal ? { reason: refusal } : {}) });
    this.pump.pump();
    return refusal;
  }

  /** The core's view of the ring (`GET /v1/ring/coordinator`). */
  status(): ViewStatus {
    return this.core.status(this.now());
  }

  private now(): number {
    return this.ports.clock.nowMs();
  }
}
