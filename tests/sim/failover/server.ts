/**
 * A simulated lock server of the failover kind: the real LockReplica core (lib/core/
 * lock_replica.ts, with LockMachine and LockTable inside) behind a driver that mirrors
 * cluster/lock_service.ts and cluster/lock_api.ts: a ticker every settings.tickMs on the node's
 * clock; client requests submitted to the core and answered only from its `ready().answers`
 * (every answer comes from a committed submit); the enter long-poll (waitForTurn, woken by
 * committed effects or a role change, then `enter` submitted again); peer and arbiter requests
 * with the transport's timeout (`failed(ref)` after peerTimeoutMs; a late answer is dropped).
 * Continuations that are promise callbacks in the binary run after the flush that resolved
 * them, as microtasks do.
 *
 * A crash loses everything (the binary persists nothing): the restarted server is a fresh
 * LockReplica with a new session-id prefix and a token floor from its wall clock, and syncs
 * from whoever serves.
 */
import type { ClientAnswer, Outbound, PeerMessage } from "../../../lib/core/lock_replica.ts";
import { LockReplica, type ReplicaSettings } from "../../../lib/core/lock_replica.ts";
import { type Command, type Effect, type Grant, LockTable } from "../../../lib/core/lock_table.ts";
import type { Settings } from "../../../lib/settings.ts";
import { Actor } from "../actor.ts";
import type { Envelope } from "../network.ts";
import type { Sim } from "../simulator.ts";
import type { NodeClock } from "../time.ts";
import { brief } from "../lock/server.ts";
import { answerBody, type LockReply, type LockRequest } from "../lock/messages.ts";
import { isRpc, type RpcReply, type RpcRequest, wire } from "./rpc.ts";

/** What the failover checkers see of a server's steps. */
export interface FailoverServerObserver {
  /** A grant left the server as committed: a "granted" effect or an enter answered "granted". */
  committedGrant(server: FailoverServerActor, grant: Grant): void;
  /** A role change or other fact of `ready().events`, after the flush that produced it. */
  event(server: FailoverServerActor, event: string, fields: Record<string, unknown>): void;
  /** The core took a message (a request, or the answer to one of its requests) of `epoch`. */
  sawEpoch(server: FailoverServerActor, epoch: number): void;
}

interface Poll {
  done: boolean;
  then: () => void;
}

/** Parked long-polls beyond this are answered at once (a server has a connection limit too). */
const POLLS_MAX = 10_000;

export class FailoverServerActor extends Actor {
  replica: LockReplica | undefined;
  private answers = new Map<number, (answer: ClientAnswer) => void>();
  private clientRefNext = 1;
  private polls = new Map<string, Set<Poll>>();
  private pollCount = 0;
  /** Our requests to the peer or the arbiter still awaiting an answer (ref → true). */
  private outstanding = new Set<number>();
  private microtasks: Array<() => void> = [];
  private flushing = false;

  constructor(
    sim: Sim,
    id: string,
    clock: NodeClock,
    private readonly settings: Settings & ReplicaSettings,
    readonly peerId: string,
    readonly arbiterId: string,
    private readonly observer: FailoverServerObserver,
    private readonly clientIds: () => string[],
  ) {
    super(sim, id, "failover-server", clock);
    this.start();
  }

  peers(): string[] {
    return [this.peerId, this.arbiterId, ...this.clientIds()];
  }

  /** The table this server's core holds now (a primary's includes uncommitted entries). */
  get table(): LockTable | undefined {
    return this.replica?.machine?.table;
  }

  /** End of the lease on this server's clock (private in the core; the checkers read it). */
  get leaseUntilMs(): number {
    return (this.replica as unknown as { leaseUntilMs: number } | undefined)?.leaseUntilMs ?? Number.NEGATIVE_INFINITY;
  }

  /**
   * Whether this server would accept a new command now: the core's `serving()` evaluated at
   * this node's clock reading now (a paused server's clock runs on; it serves again on resume
   * only if its lease has not lapsed by then).
   */
  servingNow(): boolean {
    if (this.state === "crashed" || !this.replica) return false;
    return this.replica.role === "primary" && this.clock.nowMs() < this.leaseUntilMs;
  }

  private start(): void {
    const settings = this.settings;
    const prefix = `${this.id}-${this.incarnation}-`;
    const tokenFloor = this.clock.wallMs() * 1000;
    this.replica = new LockReplica({
      nodeId: this.id,
      peerId: this.peerId,
      arbiterId: this.arbiterId,
      settings,
      newTable: () => new LockTable({ limits: settings, sessionIdPrefix: prefix, tokenFloor }),
    }, this.clock.nowMs());
    this.flush();
    this.scheduleTick();
  }

  private scheduleTick(): void {
    this.after(this.settings.tickMs, () => {
      this.replica!.tick(this.clock.nowMs());
      this.flush();
      this.scheduleTick();
    });
  }

  protected onCrash(): void {
    this.replica = undefined;
    this.answers = new Map();
    this.polls = new Map();
    this.pollCount = 0;
    this.outstanding = new Set();
    this.microtasks = [];
  }

  protected onRestart(): void {
    this.start();
  }

  // ---- LockService.flush: execute what the core asks for --------------------------------

  private flush(): void {
    const replica = this.replica;
    if (!replica) return;
    const ready = replica.ready();
    for (const { clientRef, answer } of ready.answers) {
      const resolve = this.answers.get(clientRef);
      this.answers.delete(clientRef);
      if (resolve) this.microtasks.push(() => resolve(answer));
    }
    for (const effect of ready.effects) this.onEffect(effect);
    for (const { event, fields } of ready.events) {
      this.sim.log(this.id, "*", `${event} ${brief(fields)}`);
      if (event === "steppedDown" || event === "backup") this.endAllPolls();
    }
    for (const outbound of ready.send) this.sendRpc(outbound);
    for (const { event, fields } of ready.events) this.observer.event(this, event, fields);
    this.drain();
  }

  /** Runs the continuations the flush resolved, after it (promise callbacks in the binary). */
  private drain(): void {
    if (this.flushing) return;
    this.flushing = true;
    try {
      const incarnation = this.incarnation;
      while (this.microtasks.length > 0 && incarnation === this.incarnation) this.microtasks.shift()!();
    } finally {
      this.flushing = false;
    }
  }

  private onEffect(effect: Effect): void {
    switch (effect.type) {
      case "granted":
        this.sim.log(this.id, "+", `granted ${brief({ ...effect.grant })} epoch=${this.replica!.epoch}`);
        this.observer.committedGrant(this, effect.grant);
        return this.wake(effect.grant.name, effect.grant.session);
      case "waitEnded":
        return this.wake(effect.name, effect.session);
      default: {
        const { type, ...fields } = effect;
        this.sim.log(this.id, "-", `${type} ${brief(fields)}`);
      }
    }
  }

  // ---- peer and arbiter requests (PeerTransport) ----------------------------------------

  private sendRpc(outbound: Outbound): void {
    const replica = this.replica!;
    const expected = outbound.kind === "peer" ? this.peerId : this.arbiterId;
    if (outbound.to !== expected) {
      replica.failed(outbound.ref, this.clock.nowMs());
      return;
    }
    const body = outbound.kind === "peer" ? outbound.message : outbound.request;
    const request: RpcRequest = { rpc: "request", ref: outbound.ref, incarnation: this.incarnation, body: wire(body) };
    this.outstanding.add(outbound.ref);
    this.sim.network.send(this, outbound.to, request, label(body as PeerMessage));
    this.after(this.settings.peerTimeoutMs, () => {
      if (!this.outstanding.delete(outbound.ref)) return;
      this.replica!.failed(outbound.ref, this.clock.nowMs());
      this.flush();
    });
  }

  protected receive(envelope: Envelope): void {
    const payload = envelope.payload;
    if (isRpc(payload)) {
      if (payload.rpc === "reply") return this.onRpcReply(payload);
      return this.onPeerRequest(envelope.from, payload);
    }
    this.onClientRequest(envelope.from, payload as LockRequest);
  }

  /** POST /v1/peer: the core answers at once. */
  private onPeerRequest(from: string, request: RpcRequest): void {
    const answer = this.replica!.peerMessage(request.body as PeerMessage, this.clock.nowMs());
    this.flush();
    this.observer.sawEpoch(this, (request.body as PeerMessage).epoch);
    const reply: RpcReply = { rpc: "reply", ref: request.ref, incarnation: request.incarnation, body: wire(answer) };
    this.sim.network.send(this, from, reply, `${answer.type} to ${label(request.body as PeerMessage)}`);
  }

  private onRpcReply(reply: RpcReply): void {
    if (reply.incarnation !== this.incarnation || !this.outstanding.delete(reply.ref)) return;
    this.replica!.reply(reply.ref, reply.body as never, this.clock.nowMs());
    this.flush();
    if (this.replica) this.observer.sawEpoch(this, (reply.body as { epoch: number }).epoch);
  }

  // ---- the lock API (cluster/lock_api.ts) --------------------------------------------------

  private submit(command: Command, requestId: string | undefined, then: (answer: ClientAnswer) => void): void {
    const clientRef = this.clientRefNext++;
    this.answers.set(clientRef, then);
    this.replica!.clientRequest(clientRef, command, requestId, this.clock.nowMs());
    this.flush();
  }

  private onClientRequest(from: string, request: LockRequest): void {
    const answer = (result: ClientAnswer, extra: Record<string, unknown> = {}) => {
      if (!result.ok) return this.replyError(from, request.reqId, result);
      this.reply(from, { type: "reply", reqId: request.reqId, ok: true, body: { ...answerBody(request, result.result), ...extra } });
    };
    switch (request.type) {
      case "open":
        return this.submit({ type: "openSession", ttlMs: request.ttlMs }, request.requestId, (a) => answer(a, { longPollMaxMs: this.settings.longPollMaxMs }));
      case "keepalive":
        return this.submit({ type: "keepAlive", session: request.session }, undefined, (a) => answer(a));
      case "close":
        return this.submit({ type: "closeSession", session: request.session }, request.requestId, (a) => answer(a));
      case "leave":
        return this.submit({ type: "leave", name: request.name, session: request.session, token: request.token }, request.requestId, (a) => answer(a));
      case "enter":
        return this.enterRound(from, request, 0);
    }
  }

  /** lock_api's enter: submit; when waiting, long-poll once, then submit again and answer. */
  private enterRound(from: string, request: Extract<LockRequest, { type: "enter" }>, round: number): void {
    const { name, session, mode, waitMs, lockDelayMs } = request;
    this.submit({ type: "enter", name, session, mode, waitMs, lockDelayMs }, undefined, (answer) => {
      if (!answer.ok) return this.replyError(from, request.reqId, answer);
      const result = answer.result;
      if (result.type === "granted") this.observer.committedGrant(this, result.grant);
      if (result.type === "waiting" && round === 0) {
        return this.waitForTurn(name, session, Math.min(waitMs, this.settings.longPollMaxMs), () => this.enterRound(from, request, 1));
      }
      this.reply(from, { type: "reply", reqId: request.reqId, ok: true, body: answerBody(request, result) });
    });
  }

  private replyError(from: string, reqId: number, answer: Extract<ClientAnswer, { ok: false }>): void {
    const primary = answer.code === "not_primary" ? answer.primary : undefined;
    this.reply(from, { type: "reply", reqId, ok: false, code: answer.code, message: answer.message, primary });
  }

  private reply(to: string, reply: LockReply): void {
    this.sim.network.send(this, to, reply, `reply ${reply.reqId}`);
  }

  /** LockService.waitForTurn: at once when not queued; else a wake-up or the timeout. */
  private waitForTurn(name: string, session: string, timeoutMs: number, then: () => void): void {
    const index = this.table?.locks.get(name)?.queue.findIndex((w) => w.session === session) ?? -1;
    if (index < 0 || this.pollCount >= POLLS_MAX) {
      this.microtasks.push(then);
      return this.drain();
    }
    const key = pollKey(name, session);
    const poll: Poll = { done: false, then };
    const waiters = this.polls.get(key) ?? new Set<Poll>();
    this.polls.set(key, waiters);
    waiters.add(poll);
    this.pollCount += 1;
    this.after(timeoutMs, () => {
      this.finish(key, poll);
      this.drain();
    });
  }

  private finish(key: string, poll: Poll): void {
    if (poll.done) return;
    poll.done = true;
    const waiters = this.polls.get(key);
    waiters?.delete(poll);
    if (waiters && waiters.size === 0) this.polls.delete(key);
    this.pollCount -= 1;
    this.microtasks.push(poll.then);
  }

  private wake(name: string, session: string): void {
    const key = pollKey(name, session);
    for (const poll of [...(this.polls.get(key) ?? [])]) this.finish(key, poll);
  }

  private endAllPolls(): void {
    for (const [key, waiters] of [...this.polls]) for (const poll of [...waiters]) this.finish(key, poll);
  }
}

function pollKey(name: string, session: string): string {
  return `${name}\u0000${session}`;
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
