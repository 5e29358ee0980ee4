/**
 * A simulated ring node: the binary's driver and HTTP handlers as they are, with simulated ports.
 * cluster/ring/service.ts with its PeerLink (cluster/ring/peer_link.ts) around the real RingNode
 * core, and in front of it the routes of cluster/ring/api.ts (http.ts):
 *
 * - clock: the node's NodeClock; timers: the actor's virtual timers (ports.ts), which a crash
 *   cancels with the rest of the incarnation;
 * - storage: the simulated disk (disk.ts), which keeps what was stored across crashes;
 * - inbound: every request (clients' and peers') arrives as an HTTP message (method, path, JSON
 *   text) and is answered by the API's route handlers, with their decoding and validation;
 * - peers: the calls of cluster/ring/http_peers.ts (same paths and bodies) as HTTP messages, each
 *   answered or failed after tokenHopTimeoutMs (its AbortSignal.timeout);
 * - promises: the driver's ports return SimFutures, whose continuations run at the end of the
 *   node's turn (a delivered message or a timer), as microtasks run after a macrotask.
 *
 * A crash drops the service and its routes (no `stop()`: a killed process answers nobody); the
 * restart builds a new core, service and routes from the disk, as cluster/ring/daemon.ts does.
 */
import { RingNode, type RingInput, type RingOutput } from "../../../lib/core/ring/ring_node.ts";
import type { ViewChangeReason } from "../../../lib/core/ring/view.ts";
import type { Settings } from "../../../lib/settings.ts";
import { ringRoutes } from "../../../cluster/ring/api.ts";
import type { LinkItem } from "../../../cluster/ring/peer_link.ts";
import { type RingPeers, RingService } from "../../../cluster/ring/service.ts";
import type { Sim } from "../simulator.ts";
import type { NodeClock } from "../time.ts";
import { SimRingDisk } from "./disk.ts";
import { SimRingHttp } from "./http.ts";
import { httpRequest, SimHttpActor } from "./http_actor.ts";
import { Microtasks, SimFuture, simTimers } from "./ports.ts";

export interface RingObserver {
  afterStep(node: RingNodeActor, input: RingInput | { type: "start" }, output: RingOutput): void;
  restarted(node: RingNodeActor): void;
}

/** Driver events written to the trace (all of them with --verbose). */
const TRACED_EVENTS = new Set(["granted", "sectionEnded", "tokenRegenerated", "ringView", "tokenNotTaken", "viewDecided"]);

export class RingNodeActor extends SimHttpActor {
  service: RingService | undefined;
  readonly disk = new SimRingDisk();

  constructor(
    sim: Sim,
    id: string,
    clock: NodeClock,
    readonly ring: string[],
    private readonly settings: Settings,
    private readonly observer: RingObserver,
    private readonly clientIds: () => string[],
    /** The arbiter that coordinates view changes (arbiter.ts), or null: the nodes coordinate. */
    private readonly arbiter: string | null = null,
  ) {
    super(sim, id, "ring", clock, settings.tokenHopTimeoutMs, TRACED_EVENTS);
    this.start();
  }

  /** The core inside the service (undefined while crashed). */
  get core(): RingNode | undefined {
    return this.service?.node;
  }

  peers(): string[] {
    return [...this.ring.filter((id) => id !== this.id), ...(this.arbiter ? [this.arbiter] : []), ...this.clientIds()];
  }

  private start(): void {
    this.microtasks = new Microtasks();
    const storedView = this.disk.loadView();
    const core = new RingNode({
      id: this.id,
      ring: this.ring,
      storedView: storedView?.view ?? null,
      promisedEpoch: storedView?.promised.epoch ?? 0,
      limits: this.settings,
      ticketPrefix: `${this.id}-${this.incarnation}-`,
      stored: this.disk.load(),
    });
    const service = new RingService({
      node: core,
      settings: this.settings,
      clock: this.clock,
      timers: simTimers(this, (fn) => this.turn(fn)),
      log: this.logger(),
      storage: this.disk,
      storedView,
      arbiter: this.arbiter,
      peers: this.peerPort(this.microtasks),
      onFatal: () => {},
      onStep: (input, output) => this.observer.afterStep(this, input, output),
    });
    this.service = service;
    const onInternalError = this.onInternalError;
    this.http = new SimRingHttp(ringRoutes(service, { nodeId: this.id, settings: this.settings, onInternalError }), onInternalError);
    this.observer.restarted(this);
    this.turn(() => service.start());
  }

  /**
   * Asks the service for a view change now, as its own triggers do (the fault
   * ring-dueling-view-change: two nodes at once). Through the service's private trigger, which
   * keeps its bookkeeping (status' last change); nothing when crashed.
   */
  requestViewChange(reason: ViewChangeReason): void {
    const service = this.service;
    if (!service || !this.up) return;
    this.turn(() => service["wantViewChange"](reason));
  }

  protected onCrash(): void {
    this.service = undefined;
    this.dropIncarnation();
  }

  protected onRestart(): void {
    this.start();
  }

  // ---- Ports -------------------------------------------------------------------------------

  /** RingPeers over simulated HTTP: the calls of cluster/ring/http_peers.ts, path for path. */
  private peerPort(microtasks: Microtasks): RingPeers {
    const from = this.id;
    return {
      deliver: (to, item) =>
        item.kind === "token"
          ? this.call(to, "/v1/ring/peer/token", { from, token: item.token }, describeItem(item))
          : this.call(to, "/v1/ring/peer/writes", { from, epoch: item.epoch, entries: item.entries }, describeItem(item)),
      fetchLog: (peer, fromWseq) => this.call(peer, `/v1/ring/peer/log?from=${fromWseq}`),
      view: (to, message) => this.callView(to, message),
      // One-way here: nobody waits for a wake's answer (its reply matches no request).
      wake: (to) => {
        this.send(to, httpRequest(0, "/v1/ring/peer/wake", { from }), "/v1/ring/peer/wake");
        return SimFuture.resolved(microtasks, undefined);
      },
    };
  }
}

/** A short label for verbose traces: the token's epoch and hop, the writes' range. */
function describeItem(item: LinkItem): string {
  if (item.kind === "token") return `token e${item.token.epoch} h${item.token.hop} wseq ${item.token.wseq}`;
  return `writes e${item.epoch} ${item.entries[0]?.wseq}..${item.entries.at(-1)?.wseq}`;
}
