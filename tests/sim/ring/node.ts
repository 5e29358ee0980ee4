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
import type { Logger } from "../../../cluster/log.ts";
import type { LinkItem } from "../../../cluster/ring/peer_link.ts";
import { type RingPeers, RingService } from "../../../cluster/ring/service.ts";
import { Actor } from "../actor.ts";
import type { Envelope } from "../network.ts";
import type { Sim } from "../simulator.ts";
import type { NodeClock } from "../time.ts";
import { SimRingDisk } from "./disk.ts";
import type { HttpReplyMessage, HttpRequestMessage, RingMessage } from "./messages.ts";
import { SimRingHttp } from "./http.ts";
import { Microtasks, SimFuture, simTimers } from "./ports.ts";

export interface RingObserver {
  afterStep(node: RingNodeActor, input: RingInput | { type: "start" }, output: RingOutput): void;
  restarted(node: RingNodeActor): void;
}

/** Requests of this node waiting for a peer's answer, at most this many (bounded). */
const OUTGOING_MAX = 10_000;

/** Driver events written to the trace (all of them with --verbose). */
const TRACED_EVENTS = new Set(["granted", "sectionEnded", "tokenRegenerated", "ringView", "tokenNotTaken", "viewDecided"]);

export class RingNodeActor extends Actor {
  service: RingService | undefined;
  private http: SimRingHttp | undefined;
  readonly disk = new SimRingDisk();
  private microtasks = new Microtasks();
  /** Our requests to peers awaiting an answer: reqId → what settles the call. */
  private readonly outgoing = new Map<number, (answer: HttpReplyMessage) => void>();
  /** Not reset by a crash: a late answer to an earlier incarnation's request matches nothing. */
  private outReqIdNext = 1;

  constructor(
    sim: Sim,
    id: string,
    clock: NodeClock,
    readonly ring: string[],
    private readonly settings: Settings,
    private readonly observer: RingObserver,
    private readonly clientIds: () => string[],
  ) {
    super(sim, id, "ring", clock);
    this.start();
  }

  /** The core inside the service (undefined while crashed). */
  get core(): RingNode | undefined {
    return this.service?.node;
  }

  peers(): string[] {
    return [...this.ring.filter((id) => id !== this.id), ...this.clientIds()];
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
      peers: this.peerPort(this.microtasks),
      onFatal: () => {},
      onStep: (input, output) => this.observer.afterStep(this, input, output),
    });
    this.service = service;
    // What the handlers throw is answered 500 and reported here: in the simulator a finding (a
    // core's assertion inside a request handler, or a bug of the driver).
    this.http = new SimRingHttp(service, {
      nodeId: this.id,
      settings: this.settings,
      onInternalError: (error) => this.sim.violate(error.name === "AssertionError" ? "core.assertion" : "sim.exception", error.message),
    });
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
    this.http = undefined;
    this.outgoing.clear();
  }

  protected onRestart(): void {
    this.start();
  }

  /** One macrotask of the node: `fn`, then the promise continuations it settled. */
  private turn(fn: () => void): void {
    fn();
    this.microtasks.drain();
  }

  private send(to: string, message: RingMessage, label: string): void {
    this.sim.network.send(this, to, message, label);
  }

  // ---- Ports -------------------------------------------------------------------------------

  private logger(): Logger {
    return {
      event: (event, fields = {}) => {
        if (!TRACED_EVENTS.has(event) && !this.sim.trace.verbose) return;
        const glyph = event === "granted" ? "+" : TRACED_EVENTS.has(event) ? "-" : ".";
        this.sim.log(this.id, glyph, `${event} ${Object.entries(fields).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ")}`);
      },
      flush: () => {},
    };
  }

  /** RingPeers over simulated HTTP: the calls of cluster/ring/http_peers.ts, path for path. */
  private peerPort(microtasks: Microtasks): RingPeers {
    const call = <T>(to: string, path: string, body?: unknown, label = path): SimFuture<T> => {
      const future = new SimFuture<T>(microtasks);
      if (this.outgoing.size >= OUTGOING_MAX) {
        future.reject(new Error(`${OUTGOING_MAX} requests in flight`));
        return future;
      }
      const reqId = this.outReqIdNext++;
      this.outgoing.set(reqId, (answer) => {
        if (answer.status < 200 || answer.status > 299) {
          return future.reject(new Error(`${to} ${path}: status ${answer.status}: ${answer.body.slice(0, 200)}`));
        }
        future.resolve(JSON.parse(answer.body) as T);
      });
      this.send(to, httpRequest(reqId, path, body), label);
      this.after(this.settings.tokenHopTimeoutMs, () => {
        if (this.outgoing.delete(reqId)) this.turn(() => future.reject(new Error(`${to}: timed out`)));
      });
      return future;
    };
    const from = this.id;
    return {
      deliver: (to, item) =>
        item.kind === "token"
          ? call(to, "/v1/ring/peer/token", { from, token: item.token }, describeItem(item))
          : call(to, "/v1/ring/peer/writes", { from, epoch: item.epoch, entries: item.entries }, describeItem(item)),
      fetchLog: (peer, fromWseq) => call(peer, `/v1/ring/peer/log?from=${fromWseq}`),
      view: (to, message) => call<void>(to, "/v1/ring/peer/view", message, `view ${message.type}`),
      // One-way here: nobody waits for a wake's answer (its reply matches no request).
      wake: (to) => {
        this.send(to, httpRequest(0, "/v1/ring/peer/wake", { from }), "/v1/ring/peer/wake");
        return SimFuture.resolved(microtasks, undefined);
      },
    };
  }

  // ---- Inbound: the real HTTP handlers ---------------------------------------------------------

  protected receive(envelope: Envelope): void {
    this.turn(() => this.onMessage(envelope.from, envelope.payload as RingMessage));
  }

  private onMessage(from: string, message: RingMessage): void {
    if (message.type === "httpReply") {
      const settle = this.outgoing.get(message.reqId);
      if (!settle) return; // late: the call timed out (the fetch was aborted)
      this.outgoing.delete(message.reqId);
      return settle(message);
    }
    this.serve(from, message);
  }

  /** Answers one request; the answer leaves in the turn that completes it (now, or a long-poll's end). */
  private serve(from: string, request: HttpRequestMessage): void {
    const incarnation = this.incarnation;
    this.http!.serve(request.method, request.path, request.body, (answer) => {
      // A reply of an incarnation that crashed since is never sent.
      if (incarnation !== this.incarnation) return;
      this.send(from, { type: "httpReply", reqId: request.reqId, ...answer }, `${answer.status} ${request.path}`);
    });
  }
}

/** A POST with a JSON body, or a GET without one. */
function httpRequest(reqId: number, path: string, body?: unknown): HttpRequestMessage {
  return body === undefined
    ? { type: "http", reqId, method: "GET", path }
    : { type: "http", reqId, method: "POST", path, body: JSON.stringify(body) };
}

/** A short label for verbose traces: the token's epoch and hop, the writes' range. */
function describeItem(item: LinkItem): string {
  if (item.kind === "token") return `token e${item.token.epoch} h${item.token.hop} wseq ${item.token.wseq}`;
  return `writes e${item.epoch} ${item.entries[0]?.wseq}..${item.entries.at(-1)?.wseq}`;
}
