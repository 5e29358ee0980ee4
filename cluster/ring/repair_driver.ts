/**
 * The ring driver's repair (cluster/ring/service.ts), run when it has a repair link (the
 * daemon's UDP channel, cluster/ring/udp.ts): the pure repair core (lib/core/ring/repair.ts)
 * takes failed hand-offs, every message heard from a node, the channel's datagrams and ticks;
 * its datagrams go to the link and its suspicion events to the log (one line each). They are
 * hints: a confirmed suspicion only starts a view change, which decides membership.
 */
import { type RepairInput, type RepairMessage, RingRepair, repairTimings, type SuspicionStatus } from "../../lib/core/ring/repair.ts";
import type { Settings } from "../../lib/settings.ts";
import type { Logger } from "../log.ts";

/** Where the repair core's datagrams go (the UDP repair channel in the daemon). */
export interface RepairLink {
  send(message: RepairMessage): void;
}

export interface RepairDriverOptions {
  self: string;
  /** The cluster file's ring order (a reload brings a new one: `setRing`). */
  ring: readonly string[];
  settings: Settings;
  link: RepairLink;
  log: Logger;
  nowMs(): number;
  stopped(): boolean;
  /** A suspicion was confirmed: start a view change. */
  confirmed(): void;
  /** After each step: the core's deadline may have moved (the driver re-arms its tick). */
  stepped(): void;
}

/** Log event names of the repair core's events. */
const REPAIR_EVENT_NAMES = { suspected: "ringSuspected", confirmed: "ringSuspicionConfirmed", cleared: "ringSuspicionCleared" } as const;

export class RepairDriver {
  /**
   * Suspicions by the file's ring order (hints for status and logs; membership is the view
   * change's): rebuilt when a reload changes the file's ring, kept across views.
   */
  private core: RingRepair;

  constructor(private readonly options: RepairDriverOptions) {
    this.core = this.newCore(options.ring);
  }

  /** The cluster file's ring changed (a reload the view change took): suspicions start afresh. */
  setRing(ring: readonly string[]): void {
    this.core = this.newCore(ring);
  }

  /** One repair step: its datagrams to the channel, one log line per event. */
  step(input: RepairInput): void {
    const { link, log, stopped } = this.options;
    if (stopped()) return;
    const { send, events } = this.core.step(input, this.options.nowMs());
    for (const message of send) link.send(message);
    for (const event of events) {
      // `suspect`, not `node`: the log line's `node` is the node writing it.
      const { type, node, ...fields } = event;
      log.event(REPAIR_EVENT_NAMES[type], { suspect: node, ...fields });
      if (type === "confirmed") this.options.confirmed();
    }
    this.options.stepped();
  }

  /** A datagram of the repair channel (validated there). */
  onMessage(message: RepairMessage & { seq: number }): void {
    const { type, epoch, suspect, from, seq } = message;
    this.step(type === "whoLostPred" ? { type, epoch, suspect, from, seq } : { type, epoch, suspect, from });
  }

  nextDeadlineMs(nowMs: number): number {
    return this.core.nextDeadlineMs(nowMs);
  }

  status(nowMs: number): SuspicionStatus[] {
    return this.core.status(nowMs);
  }

  private newCore(ring: readonly string[]): RingRepair {
    return new RingRepair({ self: this.options.self, ring: [...ring], ...repairTimings(this.options.settings), nowMs: this.options.nowMs() });
  }
}
