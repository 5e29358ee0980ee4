/**
 * A simulated ring node: the real driver, cluster/ring/service.ts with its PeerLink
 * (cluster/ring/peer_link.ts) around the real RingNode core, run as it is with simulated ports:
 *
 * - clock: the node's NodeClock; timers: the actor's virtual timers (ports.ts), which a crash
 *   cancels with the rest of the incarnation;
 * - storage: the simulated disk (disk.ts), which keeps what was stored across crashes;
 * - peers: requests as simulated messages, each answered or failed after tokenHopTimeoutMs (the
 *   HTTP peers' AbortSignal.timeout); the body is copied when sent, as JSON would be;
 * - promises: SimFutures, whose continuations run at the end of the node's turn (ports.ts).
 *
 * What stays here is the glue the HTTP API does in the binary (cluster/ring/api.ts): inbound
 * peer requests to the service, client requests to `service.request`, answers back as messages.
 * A crash drops the service (no `stop()`: a killed process answers nobody); the restart builds
 * a new core and service from the disk, as cluster/ring/daemon.ts does.
 */
import { assertNever } from "../../../lib/core/assert.ts";
import { type ClientReply, type RingInput, RingNode, type RingOutput } from "../../../lib/core/ring_node.ts";
import type { Settings } from "../../../lib/settings.ts";
import type { Logger } from "../../../cluster/log.ts";
import { type ClientInput, type RingPeers, RingService } from "../../../cluster/ring/service.ts";
import { Actor } from "../actor.ts";
import type { Envelope } from "../network.ts";
import type { Sim } from "../simulator.ts";
import type { NodeClock } from "../time.ts";
import { SimRingDisk } from "./disk.ts";
import type { RingClientRequest, RingMessage, RingPeerRequest } from "./messages.ts";
import { Microtasks, SimFuture, simTimers } from "./ports.ts";

export interface RingObserver {
  afterStep(node: RingNodeActor, input: RingInput | { type: "start" }, output: RingOutput): void;
  restarted(node: RingNodeActor): void;
}

/** Requests of this node waiting for a peer's answer, at most this many (bounded). */
const OUTGOING_MAX = 10_000;

/** Driver events written to the trace (all of them with --verbose). */
const TRACED_EVENTS = new Set(["granted", "sectionEnded", "tokenRegenerated", "epoch"]);

export class RingNodeActor extends Actor {
  service: RingService | undefined;
  readonly disk = new SimRingDisk();
  private microtasks = new Microtasks();
  /** Our requests to peers awaiting an answer: reqId → what settles the call. */
  private readonly outgoing = new Map<number, (answer: RingMessage) => void>();
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
    const core = new RingNode({
      id: this.id,
      ring: this.ring,
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
      peers: this.peerPort(this.microtasks),
      onFatal: () => {},
      onStep: (input, output) => this.observer.afterStep(this, input, output),
    });
    this.service = service;
    this.observer.restarted(this);
    this.turn(() => service.start());
  }

  protected onCrash(): void {
    this.service = undefined;
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

  private send(to: string, message: RingMessage): void {
    this.sim.network.send(this, to, message, describeMessage(message));
  }

  // ---- Ports -------------------------------------------------------------------------------

  private logger(): Logger {
    return {
      event: (event, fields = {}) => {
        if (event === "regenerationFailed") {
          // The service logs what its regeneration threw; here that is a finding.
          return this.sim.violate(fields.error === "AssertionError" ? "core.assertion" : "sim.exception", String(fields.message));
        }
        if (!TRACED_EVENTS.has(event) && !this.sim.trace.verbose) return;
        const glyph = event === "granted" ? "+" : TRACED_EVENTS.has(event) ? "-" : ".";
        this.sim.log(this.id, glyph, `${event} ${Object.entries(fields).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ")}`);
      },
      flush: () => {},
    };
  }

  /** RingPeers over simulated messages (cluster/ring/http_peers.ts in the binary). */
  private peerPort(microtasks: Microtasks): RingPeers {
    const call = <T>(to: string, request: RingPeerRequest, answerOf: (answer: RingMessage) => T | undefined): SimFuture<T> => {
      const future = new SimFuture<T>(microtasks);
      if (this.outgoing.size >= OUTGOING_MAX) {
        future.reject(new Error(`${OUTGOING_MAX} requests in flight`));
        return future;
      }
      const reqId = this.outReqIdNext++;
      this.outgoing.set(reqId, (answer) => {
        const value = answerOf(answer);
        if (value === undefined) future.reject(new Error(`${to}: unexpected answer ${answer.type}`));
        else future.resolve(value);
      });
      this.send(to, { type: "peer", request: { ...request, reqId } });
      this.after(this.settings.tokenHopTimeoutMs, () => {
        if (this.outgoing.delete(reqId)) this.turn(() => future.reject(new Error(`${to}: timed out`)));
      });
      return future;
    };
    return {
      // The item is copied now, as the HTTP peers serialize it: the link may change it later.
      deliver: (to, item) => call(to, { type: "deliver", reqId: 0, item: structuredClone(item) }, (a) => (a.type === "result" ? a.result : undefined)),
      fetchLog: (from, fromWseq) => call(from, { type: "fetch", reqId: 0, fromWseq }, (a) => (a.type === "caughtUp" ? a.reply : undefined)),
      probe: (to) => call(to, { type: "probe", reqId: 0 }, (a) => (a.type === "probed" ? a.probe : undefined)),
      prepare: (to, epoch) => call(to, { type: "prepare", reqId: 0, epoch }, (a) => (a.type === "result" ? a.result : undefined)),
      // One-way here: nobody waits for a wake's answer.
      wake: (to) => {
        this.send(to, { type: "peer", request: { type: "wake", reqId: 0 } });
        return SimFuture.resolved(microtasks, undefined);
      },
    };
  }

  // ---- Inbound (cluster/ring/api.ts in the binary) -----------------------------------------

  protected receive(envelope: Envelope): void {
    this.turn(() => this.onMessage(envelope.from, envelope.payload as RingMessage));
  }

  private onMessage(from: string, message: RingMessage): void {
    switch (message.type) {
      case "peer":
        return this.onPeer(from, message.request);
      case "client":
        return this.onClient(from, message.request);
      case "result":
      case "caughtUp":
      case "probed": {
        const settle = this.outgoing.get(message.reqId);
        if (!settle) return; // late: the call timed out (the fetch was aborted)
        this.outgoing.delete(message.reqId);
        return settle(message);
      }
      case "clientReply":
        return;
      default:
        assertNever(message, "ring message");
    }
  }

  private onPeer(from: string, request: RingPeerRequest): void {
    const service = this.service!;
    const answer = (message: RingMessage) => this.send(from, message);
    switch (request.type) {
      case "deliver":
        return answer({ type: "result", reqId: request.reqId, result: service.stepItem(from, request.item) });
      case "fetch":
        return answer({ type: "caughtUp", reqId: request.reqId, reply: structuredClone(service.node.catchUp(request.fromWseq)) });
      case "probe":
        return answer({ type: "probed", reqId: request.reqId, probe: service.node.probe(service.now()) });
      case "prepare":
        return answer({ type: "result", reqId: request.reqId, result: service.stepPeer({ type: "prepare", from, epoch: request.epoch }) });
      case "wake":
        service.stepPeer({ type: "wake" });
        return;
      default:
        assertNever(request, "ring peer request");
    }
  }

  private onClient(from: string, request: RingClientRequest): void {
    const { reqId, ...input } = request;
    this.service!.request(input as ClientInput, (reply) => this.send(from, { type: "clientReply", reqId, reply }));
  }
}

export type { ClientReply };

/** A short label for verbose traces: the token's epoch and hop, the writes' range. */
function describeMessage(message: RingMessage): string {
  if (message.type === "peer" && message.request.type === "deliver") {
    const item = message.request.item;
    if (item.kind === "token") return `token e${item.token.epoch} h${item.token.hop} wseq ${item.token.wseq}`;
    return `writes e${item.epoch} ${item.entries[0]?.wseq}..${item.entries.at(-1)?.wseq}`;
  }
  if (message.type === "result") return `result ${message.result.ok ? "ok" : "not ok"} ${message.result.type}`;
  return message.type === "peer" || message.type === "client" ? `${message.type}:${message.request.type}` : message.type;
}
