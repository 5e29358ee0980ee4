/**
 * What a simulated ring process does with HTTP, shared by the ring node (node.ts) and the arbiter
 * that coordinates the ring's view changes (arbiter.ts): it serves the real routes of
 * cluster/ring/api.ts (through http.ts), calls its peers as cluster/ring/http_peers.ts does (each
 * call answered, or failed after a timeout as its AbortSignal.timeout), and runs each delivered
 * message or timer as one turn: the callback, then the microtasks it settled (ports.ts).
 *
 * A crash drops the routes and the calls in flight (`dropIncarnation`): a late answer to an
 * earlier incarnation's request matches nothing, and a reply of an incarnation that crashed since
 * is never sent. A request that arrives while the process is down is refused (ECONNREFUSED, as a
 * closed port answers); one that was read before the crash gets no answer and times out.
 */
import type { Logger } from "../../../cluster/log.ts";
import type { ViewMessage } from "../../../lib/core/ring/view.ts";
import { Actor } from "../actor.ts";
import type { Envelope } from "../network.ts";
import type { Sim } from "../simulator.ts";
import type { NodeClock } from "../time.ts";
import type { SimRingHttp } from "./http.ts";
import type { HttpRefusedMessage, HttpReplyMessage, HttpRequestMessage, RingMessage } from "./messages.ts";
import { Microtasks, SimFuture } from "./ports.ts";

/** Requests of this actor waiting for a peer's answer, at most this many (bounded). */
const OUTGOING_MAX = 10_000;
/** Request envelopes remembered as received, so a network copy of one is never refused (bounded). */
const RECEIVED_MAX = 10_000;

export abstract class SimHttpActor extends Actor {
  /** This incarnation's microtasks (a restart starts a fresh queue). */
  protected microtasks = new Microtasks();
  /** The routes this incarnation serves (undefined while crashed). */
  protected http: SimRingHttp | undefined;
  /** Our requests to peers awaiting an answer: reqId → what settles the call. */
  private readonly outgoing = new Map<number, (answer: HttpReplyMessage | HttpRefusedMessage) => void>();
  /** Not reset by a crash: a late answer to an earlier incarnation's request matches nothing. */
  private outReqIdNext = 1;
  /**
   * Ids of the request envelopes this node received while up, oldest first (the host's memory,
   * kept across crashes). The simulated network may deliver a copy of a request; TCP does not.
   * A copy arriving after a crash must not be refused: its sender would take "never read" for a
   * request the node read (and, for a token, maybe granted under) before it crashed.
   */
  private readonly received = new Set<number>();

  constructor(
    sim: Sim,
    id: string,
    group: string,
    clock: NodeClock,
    /** A call not answered within this fails (tokenHopTimeoutMs, as http_peers.ts). */
    private readonly callTimeoutMs: number,
    /** Driver events written to the trace (all of them with --verbose). */
    private readonly tracedEvents: ReadonlySet<string>,
  ) {
    super(sim, id, group, clock);
  }

  /** What a route throws is answered 500 and is a finding (a core's assertion, or a bug of the driver). */
  protected readonly onInternalError = (error: Error): void =>
    this.sim.violate(error.name === "AssertionError" ? "core.assertion" : "sim.exception", error.message);

  /** A request to this crashed process is refused by its host (a closed port): it was never read. */
  protected override refuseWhileCrashed(envelope: Envelope): void {
    const message = envelope.payload as RingMessage;
    if (message.type === "http" && !this.received.has(envelope.id)) {
      this.sim.network.refuse(this, envelope.from, { type: "httpRefused", reqId: message.reqId });
    }
  }

  /** On a crash: the routes and the calls in flight are gone with the process. */
  protected dropIncarnation(): void {
    this.http = undefined;
    this.outgoing.clear();
  }

  /** One macrotask of the process: `fn`, then the promise continuations it settled. */
  protected turn(fn: () => void): void {
    fn();
    this.microtasks.drain();
  }

  protected send(to: string, message: RingMessage, label: string): void {
    this.sim.network.send(this, to, message, label);
  }

  /** The driver's log as trace lines: the traced events always, the rest with --verbose. */
  protected logger(): Logger {
    return {
      event: (event, fields = {}) => {
        if (!this.tracedEvents.has(event) && !this.sim.trace.verbose) return;
        const glyph = event === "granted" ? "+" : this.tracedEvents.has(event) ? "-" : ".";
        this.sim.log(this.id, glyph, `${event} ${Object.entries(fields).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ")}`);
      },
      flush: () => {},
    };
  }

  /** One HTTP call to a peer (a POST with a JSON body, or a GET): its JSON answer, or an error. */
  protected call<T>(to: string, path: string, body?: unknown, label = path): SimFuture<T> {
    const future = new SimFuture<T>(this.microtasks);
    if (this.outgoing.size >= OUTGOING_MAX) {
      future.reject(new Error(`${OUTGOING_MAX} requests in flight`));
      return future;
    }
    const reqId = this.outReqIdNext++;
    this.outgoing.set(reqId, (answer) => {
      // The words a runtime's fetch uses (cluster/ring/handoff_delivery.ts connectRefused reads them).
      if (answer.type === "httpRefused") return future.reject(new Error(`${to}: connect ECONNREFUSED`));
      if (answer.status < 200 || answer.status > 299) {
        return future.reject(new Error(`${to} ${path}: status ${answer.status}: ${answer.body.slice(0, 200)}`));
      }
      future.resolve(JSON.parse(answer.body) as T);
    });
    this.send(to, httpRequest(reqId, path, body), label);
    this.after(this.callTimeoutMs, () => {
      if (this.outgoing.delete(reqId)) this.turn(() => future.reject(new Error(`${to}: timed out`)));
    });
    return future;
  }

  /** A view message to a peer (`POST /v1/ring/peer/view`, http_peers.ts' `view`). */
  protected callView(to: string, message: ViewMessage): SimFuture<void> {
    return this.call<void>(to, "/v1/ring/peer/view", message, `view ${message.type}`);
  }

  // ---- Inbound: the real HTTP handlers ---------------------------------------------------------

  protected receive(envelope: Envelope): void {
    if ((envelope.payload as RingMessage).type === "http") {
      this.received.add(envelope.id);
      if (this.received.size > RECEIVED_MAX) this.received.delete(this.received.values().next().value!);
    }
    this.turn(() => this.onMessage(envelope.from, envelope.payload as RingMessage));
  }

  private onMessage(from: string, message: RingMessage): void {
    if (message.type === "httpReply" || message.type === "httpRefused") {
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
export function httpRequest(reqId: number, path: string, body?: unknown): HttpRequestMessage {
  return body === undefined
    ? { type: "http", reqId, method: "GET", path }
    : { type: "http", reqId, method: "POST", path, body: JSON.stringify(body) };
}
