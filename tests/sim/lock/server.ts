/**
 * A simulated lock server: the real driver, cluster/lock/service.ts (LockService around the
 * LockReplica core, with the enter long-poll), on simulated ports (the ring kind's, ring/
 * ports.ts): the node's clock, timers on its virtual time, requests to the peer and the arbiter
 * as JSON text over the simulated network (answers are SimFutures settled when the reply
 * arrives or rejected when the request times out), and a logger that writes the trace. Requests
 * arrive as text too (messages.ts) and the real code answers them: the client API's routes
 * (cluster/lock/api_routes.ts `answerRequest`) and the peer route (`answerPeer`). Simulated here are
 * only the ticker every settings.tickMs (the daemon's setInterval in cluster/lock/server.ts)
 * and the few lines of the peer transport (`request`).
 *
 * The driver runs its own continuations (answers, ends of long-polls) right after the step that
 * decided them; those of the transport's answers run at the end of the turn that settled them
 * (cluster/timers.ts, port rule). All within the event that delivered the message or the timer.
 *
 * The lock kind runs one standalone primary (`LockServerActor`: no peer, no arbiter); the
 * failover kind runs two with an arbiter (failover/server.ts). A crash loses everything but a
 * durable log (the failover kind's durable profile, failover/disk.ts): the restarted server is a
 * new LockService with a new session-id prefix and a token floor from its wall clock.
 */
import type { ClientAnswer, LockReplica, PeerMessage } from "../../../lib/core/lock/lock_replica.ts";
import type { Command, Grant, LockTable, Output } from "../../../lib/core/lock/lock_table.ts";
import type { Settings } from "../../../lib/settings.ts";
import { LockService, type LockServiceOptions } from "../../../cluster/lock/service.ts";
import type { LockApiOptions } from "../../../cluster/lock/api_options.ts";
import { answerPeer } from "../../../cluster/lock/api_peer.ts";
import { answerRequest, type LockRoute, lockRoutes } from "../../../cluster/lock/api_routes.ts";
import { decodePeerBody, encodePeerBody } from "../../../cluster/peer_transport.ts";
import type { Logger } from "../../../cluster/log.ts";
import { Actor } from "../actor.ts";
import type { Envelope } from "../network.ts";
import type { Sim } from "../simulator.ts";
import type { NodeClock } from "../time.ts";
import { Microtasks, simTimers } from "../ring/ports.ts";
import { type HttpRequestMessage, isHttp, replyTo, SimFetch, simUrl } from "./messages.ts";

export interface ServerSetup {
  settings: Settings;
  /** The other lock server and the arbiter; null for a standalone primary. */
  peerId: string | null;
  arbiterId: string | null;
  clientIds: () => string[];
}

/** The real LockService in a simulated process; subclasses add what their checkers watch. */
export abstract class LockServiceActor extends Actor {
  service: LockService | undefined;
  /** The client API's routes on this incarnation's service (cluster/lock/api_routes.ts). */
  private routes: LockRoute[] = [];
  private apiOptions: LockApiOptions | undefined;
  /** Continuations of the transport's answers (SimFutures), run at the end of each turn. */
  private microtasks = new Microtasks();
  /** Requests to the peer and the arbiter (their answers settle in `microtasks`). */
  private http = new SimFetch(this, this.microtasks);
  private readonly timers = simTimers(this, (fn) => this.turn(fn));

  private readonly log: Logger = { event: (event, fields = {}) => this.logged(event, fields), flush: () => {} };

  constructor(sim: Sim, id: string, group: string, clock: NodeClock, protected readonly setup: ServerSetup) {
    super(sim, id, group, clock);
  }

  /** The core (undefined while crashed). */
  get replica(): LockReplica | undefined {
    return this.service?.replica;
  }

  /** The table this server's core holds now (a primary's includes uncommitted entries). */
  get table(): LockTable | undefined {
    return this.service?.table;
  }

  peers(): string[] {
    const { peerId, arbiterId, clientIds } = this.setup;
    return [...(peerId === null ? [] : [peerId]), ...(arbiterId === null ? [] : [arbiterId]), ...clientIds()];
  }

  /** Starts an incarnation, as cluster/lock/server.ts does (leaf constructors call it last). */
  protected start(): void {
    const { settings, peerId, arbiterId } = this.setup;
    const member = (id: string | null) => (id === null ? null : { id, url: simUrl(id) });
    this.service = new LockService({
      settings,
      clock: this.clock,
      log: this.log,
      nodeId: this.id,
      peer: member(peerId),
      arbiter: member(arbiterId),
      transport: { send: (url, body, timeoutMs) => this.request(url, body, timeoutMs) },
      timers: this.timers,
      sessionIdPrefix: `${this.id}-${this.incarnation}-`,
      tokenFloor: this.clock.wallMs() * 1000,
      durable: this.durableLog(),
    });
    // Session secrets from the seed (an independent stream per incarnation: no other draw moves).
    const secrets = this.sim.prng.fork(`sessionSecrets:${this.id}:${this.incarnation}`);
    this.apiOptions = { nodeId: this.id, role: peerId === null ? "primary" : "server", settings, urlOf: simUrl, onInternalError: (error) => {
      throw error; // a bug in the driver: the run ends with it (sim.exception)
    }, newSessionSecret: () => [0, 1, 2, 3].map(() => secrets.nextU32().toString(16).padStart(8, "0")).join("") };
    this.routes = lockRoutes(this.service, this.apiOptions);
    this.started(this.service);
    this.scheduleTick();
  }

  private scheduleTick(): void {
    this.after(this.setup.settings.tickMs, () => {
      this.turn(() => this.service!.tick());
      this.scheduleTick();
    });
  }

  protected onCrash(): void {
    this.service = undefined;
    this.routes = [];
    this.microtasks = new Microtasks();
    this.http = new SimFetch(this, this.microtasks);
  }

  /**
   * A command from inside the process, as one macrotask (the failover kind's table filler, an
   * in-process client): `done` gets the committed answer, or nothing if the server crashes first.
   */
  submitLocal(command: Command, done: (answer: ClientAnswer) => void): void {
    const service = this.service;
    if (service) this.turn(() => service.submitThen(command, undefined, done));
  }

  /** One macrotask of this process: `fn`, then the microtasks it queued. */
  private turn(fn: () => void): void {
    fn();
    this.microtasks.drain();
  }

  protected onRestart(): void {
    this.start();
  }

  // ---- hooks for the kinds' checkers ------------------------------------------------------

  /** A durable log for the new incarnation (the failover kind's durable profile); none by default. */
  protected durableLog(): LockServiceOptions["durable"] {
    return undefined;
  }

  /** A new incarnation's service, before it takes any request. */
  protected started(_service: LockService): void {}

  /** A log line of the driver: grants, expiries, releases, the core's events. */
  protected logged(event: string, fields: Record<string, unknown>): void {
    const glyph = event === "granted" ? "+" : event === "sessionExpired" || event === "released" ? "-" : "*";
    this.sim.log(this.id, glyph, `${event} ${brief(fields)}`);
  }

  /** A grant an enter answered, as it leaves the server. */
  protected entered(_grant: Grant): void {}

  /** The service took a message of `epoch`: a peer's request, or the answer to its own. */
  protected tookEpoch(_epoch: number): void {}

  // ---- the transport (cluster/peer_transport.ts httpPeerTransport, on the simulated fetch) ----

  /** One POST of JSON text; the answer settles when the reply arrives, or fails after `timeoutMs`. */
  private request(url: string, body: unknown, timeoutMs: number): PromiseLike<unknown> {
    const controller = new AbortController();
    // The timeout (AbortSignal.timeout in the real transport); after an answer it aborts nothing.
    this.after(timeoutMs, () => this.turn(() => controller.abort(new Error(`${url}: no answer in ${timeoutMs}ms`))));
    const init = { method: "POST", body: encodePeerBody(body), signal: controller.signal };
    return this.http.request(url, init, label(body as PeerMessage)).then((response) =>
      response.text().then((text) => {
        if (!response.ok) throw new Error(`${url}: status ${response.status}: ${text.slice(0, 200)}`);
        return decodePeerBody(text);
      })
    );
  }

  protected receive(envelope: Envelope): void {
    const payload = envelope.payload;
    if (!isHttp(payload)) return;
    if (payload.http === "reply") {
      let taken = false;
      this.turn(() => taken = this.http.receive(payload));
      // After the turn: the service has taken the answer (steps-down looks at what it did).
      if (taken && payload.status === 200) this.tookEpoch(Number(decodePeerBody(payload.body).epoch));
      return;
    }
    if (payload.path === "/v1/peer") return this.turn(() => this.onPeerRequest(envelope.from, payload));
    this.turn(() => this.onClientRequest(envelope.from, payload));
  }

  // ---- the HTTP API (cluster/lock/api_routes.ts, api_peer.ts) -------------------------------

  /** POST /v1/peer (answerPeer of cluster/lock/api_peer.ts). */
  private onPeerRequest(from: string, request: HttpRequestMessage): void {
    const service = this.service!;
    const answered = (body: string) => {
      // Held for the disk (a durable log), the answer dies with the process if it crashed.
      if (this.service === service) replyTo(this, from, request, () => ({ status: 200, body }), "peer");
    };
    let message: PeerMessage;
    try {
      message = answerPeer(service, this.setup.settings, request.body ?? "", answered);
    } catch (error) {
      return replyTo(this, from, request, () => {
        throw error;
      }, "peer");
    }
    this.tookEpoch(message.epoch);
  }

  /** A request of the client API: the real routes answer it from its JSON text. */
  private onClientRequest(from: string, request: HttpRequestMessage): void {
    answerRequest(this.routes, this.apiOptions!, request, (answer) => {
      if (request.path === "/v1/enter" && answer.status === 200) {
        const granted = answer.body as Grant & { granted: boolean };
        if (granted.granted) this.entered({ name: granted.name, session: granted.session, token: granted.token, mode: granted.mode });
      }
      replyTo(this, from, request, () => ({ status: answer.status, body: JSON.stringify(answer.body) }), request.path);
    });
  }
}

/** What the lock kind's checkers see of every command the table applies. */
export interface LockServerObserver {
  /** Before `command` is applied: returns what the check after needs of the old state. */
  before(server: LockServerActor): unknown;
  after(server: LockServerActor, before: unknown, command: Command, output: Output, nowMs: number): void;
}

/** The lock kind's single server: a standalone primary (no peer, no arbiter). */
export class LockServerActor extends LockServiceActor {
  constructor(
    sim: Sim,
    id: string,
    clock: NodeClock,
    settings: Settings,
    private readonly observer: LockServerObserver,
    clientIds: () => string[],
  ) {
    super(sim, id, "lock-server", clock, { settings, peerId: null, arbiterId: null, clientIds });
    this.start();
  }

  /** Every command the table applies passes the checkers' hooks (the table is the instance's). */
  protected override started(service: LockService): void {
    const table = service.table!;
    const apply = table.apply.bind(table);
    table.apply = (command, nowMs) => {
      const before = this.observer.before(this);
      const output = apply(command, nowMs);
      this.observer.after(this, before, command, output, nowMs);
      return output;
    };
  }
}

/** `append e2 g3 [4..6]`, `renew e2 inSync`, `claim e1`: one short label per request. */
function label(body: PeerMessage | { type: string; epoch?: number; backupInSync?: boolean; hasState?: boolean }): string {
  const b = body as Record<string, unknown>;
  if (b.type === "append") {
    const entries = b.entries as Array<{ index: number }>;
    const range = entries.length === 0 ? "hb" : `[${entries[0].index}..${entries[entries.length - 1].index}]`;
    return `append e${b.epoch} g${b.syncGen} ${range}`;
  }
  if (b.type === "renew") return `renew e${b.epoch} ${b.backupInSync ? "inSync" : "alone"}`;
  if (b.type === "claim") return `claim e${b.epoch}${b.hasState ? " withState" : ""}`;
  return `${b.type} e${b.epoch ?? "?"}`;
}

/** `name L token 17 session p1-0-4`: the log fields on one short line. */
export function brief(fields: Record<string, unknown>): string {
  return Object.entries(fields).map(([k, v]) => `${k}=${Array.isArray(v) ? v.join("|") : String(v)}`).join(" ");
}
