/**
 * The ring driver's view change (cluster/ring/service.ts): the ViewCore beside the ring node
 * (lib/core/ring/view.ts, docs/ring-view.md), drained by the ViewPump in the order the protocol
 * demands: the hard state stored first (a failure to store stops the node), then the decisions
 * to the ring node, before any other ring input (`promised`: refuse older epochs, drop the
 * token; `install`: the new ring, whose regenerator makes the epoch's one token; `lease`: the
 * token lease a grant needs), then the messages. It also keeps what status shows of the view
 * change: the quorum (logged when it changes) and the last change with its timing.
 */
import { assertNever } from "../../lib/core/assert.ts";
import type { RingInput, RingNode } from "../../lib/core/ring/ring_node.ts";
import { type ViewChangeReason, ViewCore, type ViewDecision, type ViewHardState, type ViewMessage, type ViewStatus } from "../../lib/core/ring/view.ts";
import type { Settings } from "../../lib/settings.ts";
import type { Logger } from "../log.ts";
import { ViewPump } from "./view_pump.ts";

/** Where the view change's hard state is stored (durably, before anything depending on it is sent). */
export interface ViewStore {
  storeView(state: ViewHardState): void;
}

/** The token lease as status shows it. */
export interface LeaseStatus {
  /** "lost": the last renewal got no majority (this node cannot grant: a minority). */
  quorum: "ok" | "lost";
  reason: string;
  validUntilMs: number | null;
  /** This node promises no newer epoch before this (it backed a lease, or restarted). */
  heldUntilMs: number;
}

/** The last view change seen here, for status: when it was wanted and when its view came. */
export interface ViewChangeTiming {
  reason: string;
  wantedAtMs: number;
  installedAtMs: number | null;
  epoch: number | null;
}

export interface ViewDriverOptions {
  node: RingNode;
  settings: Settings;
  /** The arbiter's id, when the cluster has one: it may coordinate view changes (never votes). */
  arbiter: string | null;
  /** The view change's hard state as stored (null: none yet). */
  storedView: ViewHardState | null;
  storage: ViewStore;
  log: Logger;
  nowMs(): number;
  /** One view-change message (one-way; RingPeers.view): rejects if not delivered. */
  send(to: string, message: ViewMessage): PromiseLike<void>;
  stopped(): boolean;
  /** Storing failed: the node's memory is ahead of its disk, so it must stop. */
  onFatal(error: Error): void;
  /** A decision as the ring node's input (promised, install, lease). */
  stepNode(input: RingInput): void;
  /** A view of `epoch` comes: the link drops what is older, before the node installs it. */
  dropBefore(epoch: number): void;
  /** After each pump: the view core's deadline may have moved (the driver re-arms its tick). */
  pumped(): void;
}

export class ViewDriver {
  /** The view change: votes, coordinates, probes for a lost token, runs the token lease. */
  readonly core: ViewCore;
  /** Drains the core's output (a decision steps the node, whose effects may ask the view again). */
  private readonly viewPump: ViewPump;
  private quorum: { ok: boolean; reason: string } = { ok: true, reason: "" };
  private lastChange: ViewChangeTiming | null = null;

  constructor(private readonly options: ViewDriverOptions) {
    const { node, settings, log } = options;
    this.core = new ViewCore(
      { id: node.id, ring: [...node.ring], arbiter: options.arbiter, settings, localFacts: (nowMs) => node.viewFacts(nowMs) },
      options.storedView,
      options.nowMs(),
    );
    this.viewPump = new ViewPump(this.core, {
      store: (state) => this.store(state),
      decide: (decision) => this.decide(decision),
      send: (to, message) => options.send(to, message),
      log,
      nowMs: () => options.nowMs(),
      stopped: () => options.stopped(),
    });
  }

  /** Asks the view change for a new view (logged once per wish by the core's event). */
  want(reason: ViewChangeReason): void {
    if (this.options.stopped()) return;
    const now = this.options.nowMs();
    const first = this.core.status(now).wanted === null;
    if (first) this.lastChange = { reason, wantedAtMs: now, installedAtMs: null, epoch: null };
    // The core asks the arbiter first, when there is one (ViewCore.startViewChange).
    this.core.startViewChange(reason, now);
    this.pump();
  }

  /**
   * Handles what the view change has ready, in the order docs/ring-view.md demands: store the
   * hard state, then the decisions (to the ring node, before any other ring input), then send.
   * Repeats while handling made more ready (a decision's effects may ask the view again).
   */
  pump(): void {
    this.viewPump.pump();
    this.options.pumped();
  }

  /** The token lease and the view's quorum as status shows them. */
  lease(): LeaseStatus {
    const view = this.core.status(this.options.nowMs());
    return {
      quorum: this.quorum.ok ? "ok" : "lost",
      reason: this.quorum.reason,
      validUntilMs: view.leaseValidUntilMs,
      heldUntilMs: view.promiseHeldUntilMs,
    };
  }

  /** The view change's state for status: the view, the promise, and the last change with its timing. */
  status(): ViewStatus & { lastChange: ViewChangeTiming | null } {
    return { ...this.core.status(this.options.nowMs()), lastChange: this.lastChange && { ...this.lastChange } };
  }

  private store(state: ViewHardState): void {
    try {
      this.options.storage.storeView(state);
    } catch (error) {
      this.options.log.event("persistFailed", { message: (error as Error).message, what: "view" });
      this.options.onFatal(error as Error);
      throw error;
    }
  }

  private decide(decision: ViewDecision): void {
    const { stepNode, log } = this.options;
    switch (decision.type) {
      case "promised":
        stepNode({ type: "promised", epoch: decision.epoch });
        return;
      case "install": {
        const { view, regenerate, grantNotBeforeMs } = decision;
        this.options.dropBefore(view.epoch);
        stepNode({ type: "install", view, regenerate, grantNotBeforeMs });
        const now = this.options.nowMs();
        const change = this.lastChange;
        if (change && change.installedAtMs === null) Object.assign(change, { installedAtMs: now, epoch: view.epoch });
        else this.lastChange = { reason: "joined", wantedAtMs: now, installedAtMs: now, epoch: view.epoch };
        log.event("ringView", {
          epoch: view.epoch,
          members: view.members.join(","),
          successor: decision.successor,
          regenerator: view.regenerator,
          grantWaitMs: view.grantWaitMs,
          tookMs: change ? now - change.wantedAtMs : 0,
        });
        return;
      }
      case "lease":
        stepNode({ type: "lease", epoch: decision.epoch, validUntilMs: decision.validUntilMs, sectionMaxMs: decision.sectionMaxMs });
        return;
      case "behind":
        // A newer view exists without this node: come back through a view change (the replica
        // catches up from the new ring: re-sent writes, then the token's fetch).
        this.want("rejoin");
        return;
      case "quorum":
        this.setQuorum(decision.ok, decision.reason);
        return;
      default:
        assertNever(decision, "view decision");
    }
  }

  private setQuorum(ok: boolean, reason: string): void {
    if (ok === this.quorum.ok) {
      this.quorum.reason = reason;
      return;
    }
    this.quorum = { ok, reason };
    this.options.log.event(ok ? "ringQuorumRegained" : "ringQuorumLost", { reason, epoch: this.options.node.status(this.options.nowMs()).epoch });
  }
}
