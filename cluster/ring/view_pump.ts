/**
 * Drains a ViewCore's `ready()` in the order docs/ring-view.md demands: store the hard state,
 * log the events, apply the decisions, then send. Shared by the ring node's driver
 * (cluster/ring/view_driver.ts) and the arbiter, which coordinates ring view changes without a vote
 * (cluster/arbiter/ring_coordinator.ts). Sends are one-way; one that fails goes back to the core as
 * `sendFailed`. Its ports follow the port rule of cluster/timers.ts (`.then` only), so the
 * simulator runs it as it is.
 */
import type { ViewCore, ViewDecision, ViewHardState, ViewMessage } from "../../lib/core/ring/view.ts";
import type { Logger } from "../log.ts";

export interface ViewPumpPorts {
  /** Stores the hard state durably before anything of the same ready() goes out (throws: stop). */
  store(state: ViewHardState): void;
  decide(decision: ViewDecision): void;
  send(to: string, message: ViewMessage): PromiseLike<void>;
  log: Logger;
  nowMs(): number;
  stopped(): boolean;
}

/** Rounds of ready() in one pump: each answers the one before, so many means a bug. */
const ROUNDS_MAX = 100;

export class ViewPump {
  private pumping = false;

  constructor(private readonly core: ViewCore, private readonly ports: ViewPumpPorts) {}

  /** Handles what the core has ready, again while handling made more ready (re-entrant calls join the running one). */
  pump(): void {
    const { core, ports } = this;
    if (this.pumping || ports.stopped()) return;
    this.pumping = true;
    try {
      for (let round = 0; round < ROUNDS_MAX; round++) {
        const ready = core.ready();
        if (!ready.persist && ready.send.length === 0 && ready.decisions.length === 0 && ready.events.length === 0) return;
        if (ready.persist) ports.store(ready.persist);
        for (const event of ready.events) ports.log.event(event.event, event.fields);
        for (const decision of ready.decisions) ports.decide(decision);
        for (const { to, message } of ready.send) {
          ports.send(to, message).then(undefined, () => {
            if (ports.stopped()) return;
            core.sendFailed(to, message, ports.nowMs());
            this.pump();
          });
        }
      }
      throw new Error(`the view change did not settle in ${ROUNDS_MAX} rounds`);
    } finally {
      this.pumping = false;
    }
  }
}
