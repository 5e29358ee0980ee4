/**
 * The driver around the pure ring node (lib/core/ring/ring_node.ts): it feeds the node the clock,
 * peer messages and client requests, stores what the node asks to store BEFORE anything else of
 * the same output happens, sends the node's messages through the link to the successor, answers
 * clients, and runs the first ring node's token regeneration. It holds no protocol logic itself.
 *
 * Everything it needs from the runtime comes in as a port: the clock, the timers
 * (cluster/timers.ts), the peers (HTTP in the daemon) and the storage (files in the daemon). The
 * simulator (tests/sim/ring/node.ts) runs this class and its PeerLink as they are, on virtual
 * time, with a simulated network and disk; so it keeps the port rule of cluster/timers.ts (the
 * peers' promises are continued with `.then` only, see tests/sim/ring/ports.ts).
 *
 * The token lease (lib/core/ring/token_lease.ts): when the core wants to grant without a valid
 * lease (`wantLease`), the driver asks every ring node to renew it (`renew`) and feeds the lease
 * back once a majority of the file said OK, counted from the send time. As a renewer it answers
 * OK unless it promised a newer epoch, and keeps its hold (until tokenLeaseMs after its last OK;
 * a restarted node starts held), shown in status. So a token cut off from the majority grants
 * nothing. The first ring node's regeneration does not wait for holds: it needs every ring
 * node's promise, so no second token can form while one is cut off anyway (and nodes with
 * waiters renew all the time, which would block it for good). The view change that replaces it
 * defers promises during the hold (lib/core/ring/view.ts).
 *
 * With a repair link (the daemon's UDP channel, cluster/ring/udp.ts), it also runs the repair
 * core (lib/core/ring/repair.ts): failed hand-offs in a row and every message from a node go in,
 * datagrams and suspicion events come out (logged, and shown in status). Nothing else changes:
 * the link still retries for ever; acting on a confirmed suspicion is the view change's job.
 */
import { assertNever } from "../../lib/core/assert.ts";
import {
  type ClientReply,
  type RingEffect,
  type RingInput,
  RingNode,
  type RingOutput,
  type RingResult,
} from "../../lib/core/ring/ring_node.ts";
import { type RepairInput, type RepairMessage, RingRepair, repairTimings, type SuspicionStatus } from "../../lib/core/ring/repair.ts";
import type { CatchUpReply, RingPromise } from "../../lib/core/ring/ring_types.ts";
import { LeaseHold, type RenewOutcome, TokenLeaseHolder } from "../../lib/core/ring/token_lease.ts";
import type { Settings } from "../../lib/settings.ts";
import type { Clock } from "../clock.ts";
import type { Logger } from "../log.ts";
import type { TimerHandle, Timers } from "../timers.ts";
import { type LinkItem, PeerLink } from "./peer_link.ts";
import type { RingStore } from "./storage.ts";

/**
 * How the service reaches the other ring nodes (HTTP in the daemon, simulated messages in the
 * simulator). Each call rejects on network failure or after the transport's timeout.
 */
export interface RingPeers {
  /** Hands the token or writes to the successor. */
  deliver(to: string, item: LinkItem): PromiseLike<RingResult>;
  fetchLog(from: string, fromWseq: number): PromiseLike<CatchUpReply>;
  probe(to: string): PromiseLike<ReturnType<RingNode["probe"]>>;
  prepare(to: string, epoch: number): PromiseLike<RingResult>;
  wake(to: string): PromiseLike<void>;
  /** Asks `to` to back this node's token lease of `epoch` (renewal `seq`). */
  renew(to: string, epoch: number, seq: number): PromiseLike<RenewAnswer>;
}

/** A ring node's answer to a lease renewal: ok = it backs the lease and holds (see RingService.renewFrom). */
export interface RenewAnswer {
  epoch: number;
  seq: number;
  ok: boolean;
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

/** Where the repair core's datagrams go (the UDP repair channel in the daemon). */
export interface RepairLink {
  send(message: RepairMessage): void;
}

export interface RingServiceOptions {
  node: RingNode;
  settings: Settings;
  clock: Clock;
  timers: Timers;
  log: Logger;
  storage: RingStore;
  peers: RingPeers;
  /** Runs ring repair's suspicion core when given (the daemon); without it (the simulator) nothing of repair runs. */
  repairLink?: RepairLink;
  /** Called when storing failed: the node's memory is ahead of its disk, so it must stop. */
  onFatal(error: Error): void;
  /** Sees every core step, after its persist and before its effects (the simulator's checkers). */
  onStep?(input: RingInput | { type: "start" }, output: RingOutput): void;
}

type EnterInput = Omit<Extract<RingInput, { type: "enter" }>, "reqId">;

/** A client request: enter (long-polls, see `enter`), leave or write. */
export type ClientInput =
  | EnterInput
  | Omit<Extract<RingInput, { type: "leave" }>, "reqId">
  | Omit<Extract<RingInput, { type: "write" }>, "reqId">;

type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };

export class RingService {
  readonly node: RingNode;
  private readonly link: PeerLink;
  private readonly replies = new Map<number, (reply: ClientReply) => void>();
  private readonly watchers = new Map<number, Set<() => void>>();
  private reqSeq = 0;
  private loops: Array<() => void> = [];
  private regenerating = false;
  private stopped = false;
  private lastTrouble = "";
  private readonly repair?: RingRepair;
  /** Hand-offs to the successor that got no answer, in a row (a repair input once ringRepairRetries). */
  private handoffFailures = 0;
  /** The holder's side of the token lease: one renewal in flight at most. */
  private readonly leaseHolder: TokenLeaseHolder;
  /** The renewer's side: no promise of a newer epoch before this hold ends. */
  private readonly leaseHold: LeaseHold;
  private leaseQuorum: { ok: boolean; reason: string } = { ok: true, reason: "" };
  /** After a failed renewal, the next one waits until then (no storm of renewals in a minority). */
  private leaseRetryAtMs = Number.NEGATIVE_INFINITY;
  /** A ring of one backs its own lease alone: the outcome is fed back by this timer. */
  private ownLeaseTimer: TimerHandle | undefined;

  constructor(private readonly options: RingServiceOptions) {
    this.node = options.node;
    const { settings, peers, log, timers } = options;
    const quorum = Math.floor(this.node.ring.length / 2) + 1;
    this.leaseHolder = new TokenLeaseHolder(this.node.id, quorum, settings);
    this.leaseHold = new LeaseHold(settings.tokenLeaseMs, this.now());
    if (options.repairLink) {
      this.repair = new RingRepair({ self: this.node.id, ring: this.node.ring, ...repairTimings(settings), nowMs: this.now() });
    }
    this.link = new PeerLink({
      deliver: (item) => this.repair ? this.deliverWatched(item) : peers.deliver(this.node.successor, item),
      timers,
      retryMs: settings.tokenRetryMs,
      retryMaxMs: settings.tokenHopTimeoutMs,
      batchWritesMax: settings.ringBatchWritesMax,
      onTokenDelivered: (token) => this.stepPeer({ type: "tokenDelivered", epoch: token.epoch, hop: token.hop }),
      onStale: (epoch, what) => this.stepPeer({ type: "peerStale", epoch, what }),
      onTrouble: (what, detail, attempt) => {
        // One line per streak of failures (and every 50th retry), not one per retry.
        const key = `${what}:${detail}`;
        if (attempt === 1 || attempt % 50 === 0 || key !== this.lastTrouble) {
          log.event("successorUnreachable", { successor: this.node.successor, what, detail, attempt });
        }
        this.lastTrouble = key;
      },
    });
  }

  /** Starts the clock and, on the first ring node, the regeneration loop. */
  start(): void {
    const { settings, timers } = this.options;
    this.execute(this.node.start(this.now()), { type: "start" });
    this.loops.push(repeatEvery(timers, settings.tickMs, () => {
      this.leaseOutcome(this.leaseHolder.expire(this.now()));
      this.stepPeer({ type: "tick" });
    }));
    if (this.repair) {
      this.loops.push(repeatEvery(timers, settings.tickMs, () => this.stepRepair({ type: "tick", epoch: this.epoch() })));
    }
    if (this.node.id === this.node.ring[0]) {
      this.loops.push(repeatEvery(timers, settings.ringRegenRetryMs, () => this.maybeRegenerate()));
      const first = timers.setTimeout(() => this.maybeRegenerate(), 0);
      this.loops.push(() => timers.clearTimeout(first));
    }
  }

  /** Stops timers and answers every pending client request (so the HTTP server can close). */
  stop(): void {
    this.stopped = true;
    for (const stop of this.loops) stop();
    this.options.timers.clearTimeout(this.ownLeaseTimer);
    this.link.close();
    for (const [reqId, resolve] of [...this.replies]) {
      this.replies.delete(reqId);
      resolve({ ok: false, error: { code: "ring_unavailable", message: "the ring node is shutting down" } });
    }
    for (const set of this.watchers.values()) for (const wake of [...set]) wake();
  }

  /** A message from a peer, a tick or an acknowledgement: the result answers the peer. */
  stepPeer(input: RingInput): RingResult {
    if (this.stopped) return { ok: false, type: "error", error: { code: "ring_unavailable", message: "stopping" } };
    if (this.repair && "from" in input && input.from !== this.node.id) this.stepRepair({ type: "heardFrom", node: input.from });
    const output = this.node.step(input, this.now());
    this.execute(output, input);
    return output.result;
  }

  /** A token hand-off or a write batch from the predecessor `from`: the result answers it. */
  stepItem(from: string, item: LinkItem): RingResult {
    return item.kind === "token"
      ? this.stepPeer({ type: "token", from, token: item.token })
      : this.stepPeer({ type: "writes", from, epoch: item.epoch, entries: item.entries });
  }

  /**
   * A client request (enter, leave or write) answered through `onReply`, once. A callback, not
   * a promise, so the simulator runs the HTTP API without one. mutex_enter answers at once, at
   * the grant, or after a long-poll: after min(waitMs, longPollMaxMs) (longPollMaxMs for a try
   * or a re-ask with a ticket), or when `abort` fires, the node detaches it and answers
   * "waiting", with a ticket the client asks again with to keep its place.
   */
  request(input: ClientInput, onReply: (reply: ClientReply) => void, abort?: AbortSignal): void {
    if (this.stopped) {
      return onReply({ ok: false, error: { code: "ring_unavailable", message: "the ring node is stopping" } });
    }
    const { timers, settings: { longPollMaxMs } } = this.options;
    this.reqSeq += 1;
    const reqId = this.reqSeq;
    let timer: TimerHandle | undefined;
    const detach = () => {
      if (this.replies.has(reqId)) this.stepPeer({ type: "detach", reqId });
    };
    this.replies.set(reqId, (answer) => {
      timers.clearTimeout(timer);
      abort?.removeEventListener("abort", detach);
      onReply(answer);
    });
    const stepInput = { ...input, reqId } as RingInput;
    this.execute(this.node.step(stepInput, this.now()), stepInput);
    if (input.type === "enter" && this.replies.has(reqId)) {
      const pollMs = input.waitMs === 0 || input.ticket !== undefined ? longPollMaxMs : Math.min(input.waitMs, longPollMaxMs);
      timer = timers.setTimeout(detach, pollMs);
      abort?.addEventListener("abort", detach, { once: true });
    }
  }

  /**
   * Waits until section `fence` ends or `waitMs` passes, then `onEnd(active)`: true while it is
   * still running. A callback, not a promise, so the simulator runs the HTTP API without one.
   */
  watch(fence: number, waitMs: number, onEnd: (active: boolean) => void): void {
    if (!this.node.sectionActive(fence) || this.stopped) return onEnd(false);
    const { timers } = this.options;
    const set = this.watchers.get(fence) ?? new Set();
    this.watchers.set(fence, set);
    const done = () => {
      timers.clearTimeout(timer);
      set.delete(done);
      if (set.size === 0) this.watchers.delete(fence);
      onEnd(this.node.sectionActive(fence));
    };
    const timer = timers.setTimeout(done, waitMs);
    set.add(done);
  }

  now(): number {
    return this.options.clock.nowMs();
  }

  get linkLength(): number {
    return this.link.length;
  }

  /** A datagram of the repair channel (validated there), for the repair core. */
  onRepairMessage(message: RepairMessage & { seq: number }): void {
    const { type, epoch, suspect, from, seq } = message;
    this.stepRepair(type === "whoLostPred" ? { type, epoch, suspect, from, seq } : { type, epoch, suspect, from });
  }

  /**
   * A renewal of `from`'s token lease of `epoch`: OK unless this node promised a newer epoch;
   * after an OK it promises no newer epoch for tokenLeaseMs from now (its hold).
   */
  renewFrom(from: string, epoch: number, seq: number): RenewAnswer {
    const known = this.node.ring.includes(from);
    const ok = known && !this.stopped && this.epoch() <= epoch;
    if (ok) this.leaseHold.renewed(this.now());
    return { epoch, seq, ok };
  }

  lease(): LeaseStatus {
    const now = this.now();
    const status = this.node.status(now);
    return {
      quorum: this.leaseQuorum.ok ? "ok" : "lost",
      reason: this.leaseQuorum.reason,
      validUntilMs: status.leaseValidUntilMs,
      heldUntilMs: this.leaseHold.heldUntilMs,
    };
  }

  /** The repair core's suspicions (empty without a repair link). */
  suspicions(): SuspicionStatus[] {
    return this.repair?.status(this.now()) ?? [];
  }

  private epoch(): number {
    return this.node.probe(this.now()).epoch;
  }

  /**
   * The successor's hand-off with repair's bookkeeping: any answer is word from the successor;
   * ringRepairRetries failures in a row (and every one after them) tell the core. The answer or
   * error goes on to the link unchanged.
   */
  private deliverWatched(item: LinkItem): PromiseLike<RingResult> {
    const to = this.node.successor;
    return this.options.peers.deliver(to, item).then(
      (result) => {
        this.handoffFailures = 0;
        this.stepRepair({ type: "heardFrom", node: to });
        return result;
      },
      (error) => {
        this.handoffFailures += 1;
        if (this.handoffFailures >= this.options.settings.ringRepairRetries) {
          this.stepRepair({ type: "handoffFailed", to, epoch: this.epoch() });
        }
        throw error;
      },
    );
  }

  /** One repair step: its datagrams to the channel, one log line per event. */
  private stepRepair(input: RepairInput): void {
    if (!this.repair || this.stopped) return;
    const { send, events } = this.repair.step(input, this.now());
    for (const message of send) this.options.repairLink!.send(message);
    for (const event of events) {
      // `suspect`, not `node`: the log line's `node` is the node writing it.
      const { type, node, ...fields } = event;
      this.options.log.event(REPAIR_EVENT_NAMES[type], { suspect: node, ...fields });
    }
  }

  /** Stores first, then acts: the order every RingOutput demands. */
  private execute(output: RingOutput, input: RingInput | { type: "start" }): void {
    if (output.persist.length > 0) {
      try {
        this.options.storage.apply(output.persist);
      } catch (error) {
        this.options.log.event("persistFailed", { message: (error as Error).message });
        this.options.onFatal(error as Error);
        throw error;
      }
    }
    this.options.onStep?.(input, output);
    for (const effect of output.effects) this.onEffect(effect);
  }

  private onEffect(effect: RingEffect): void {
    const { peers, log } = this.options;
    switch (effect.type) {
      case "sendToken":
        this.link.push({ kind: "token", token: effect.token });
        return;
      case "tokenReturned":
        this.link.dropTokensBefore(effect.epoch, effect.hop);
        return;
      case "sendWrites":
        this.link.push({ kind: "writes", epoch: effect.epoch, entries: effect.entries });
        return;
      case "fetch":
        peers.fetchLog(effect.from, effect.fromWseq).then(
          (reply) => this.stepPeer({ type: "caughtUp", reply }),
          (error) => log.event("fetchFailed", { from: effect.from, fromWseq: effect.fromWseq, message: (error as Error).message }),
        );
        return;
      case "wakeAll":
        for (const id of this.node.ring) if (id !== this.node.id) peers.wake(id).then(undefined, () => {});
        return;
      case "wantLease":
        this.renewLease(effect.epoch);
        return;
      case "reply": {
        const resolve = this.replies.get(effect.reqId);
        this.replies.delete(effect.reqId);
        resolve?.(effect.reply);
        return;
      }
      case "sectionEnded":
        for (const wake of [...(this.watchers.get(effect.fence) ?? [])]) wake();
        return;
      case "event":
        log.event(effect.event, effect.fields);
        return;
      default:
        assertNever(effect, "ring effect");
    }
  }

  /**
   * Starts a renewal of the token lease of `epoch` unless one is in flight (or the last one
   * failed less than viewChangeRetryMs ago). It backs its own lease like any renewer.
   */
  private renewLease(epoch: number): void {
    const now = this.now();
    if (now < this.leaseRetryAtMs) return;
    const seq = this.leaseHolder.begin(epoch, now);
    if (seq === null) return;
    const { id, ring } = this.node;
    this.leaseHold.renewed(now);
    const own = this.leaseHolder.answer(id, seq, true, ring.length);
    if (own.type !== "none") {
      // A ring of one: valid at once. Fed back on a later turn, not inside this effect loop,
      // so the core's next output cannot overtake the rest of this one (writes before token).
      this.ownLeaseTimer = this.options.timers.setTimeout(() => this.leaseOutcome(own), 0);
    }
    for (const to of ring) {
      if (to === id) continue;
      this.options.peers.renew(to, epoch, seq).then(
        (answer) => {
          if (!this.stopped) this.leaseOutcome(this.leaseHolder.answer(to, answer.seq, answer.ok && answer.epoch === epoch, ring.length));
        },
        () => {}, // no answer: the renewal fails by its timeout (expire) unless a majority answers
      );
    }
  }

  /** A renewal's outcome: a valid lease goes to the core (which may grant now), a failure to status. */
  private leaseOutcome(outcome: RenewOutcome): void {
    if (outcome.type === "valid") {
      this.setLeaseQuorum(true, "token lease renewed");
      this.stepPeer({ type: "lease", epoch: outcome.epoch, validUntilMs: outcome.validUntilMs });
    } else if (outcome.type === "failed") {
      this.leaseRetryAtMs = this.now() + this.options.settings.viewChangeRetryMs;
      this.setLeaseQuorum(false, outcome.reason);
    }
  }

  private setLeaseQuorum(ok: boolean, reason: string): void {
    if (ok === this.leaseQuorum.ok) return;
    this.leaseQuorum = { ok, reason };
    this.options.log.event(ok ? "ringQuorumRegained" : "ringQuorumLost", { reason, epoch: this.epoch() });
  }

  /**
   * The first ring node's regeneration: every ring node must answer, none may hold, send or
   * have seen a token lately (read-only probe first, so a live token is not killed by a
   * premature attempt); then every node must promise the new epoch. Safe without an arbiter
   * because it needs all ring nodes; so it waits while any of them is down (docs/ring.md).
   */
  private maybeRegenerate(): void {
    if (this.regenerating || this.stopped || !this.node.wantsRegeneration(this.now())) return;
    this.regenerating = true;
    const { peers } = this.options;
    const others = this.node.ring.filter((id) => id !== this.node.id);
    this.regenerationStep(() => {
      settleAll(others.map((id) => peers.probe(id)), (probes) => this.regenerationStep(() => this.prepareAll(others, probes)));
      return true;
    });
  }

  /** Runs a step of a regeneration attempt; the attempt ends unless the step waits for answers (true). */
  private regenerationStep(step: () => boolean): void {
    let waiting = false;
    try {
      waiting = step();
    } catch (error) {
      this.options.log.event("regenerationFailed", { message: (error as Error).message, error: (error as Error).name });
    } finally {
      if (!waiting) this.regenerating = false;
    }
  }

  /** Every node answered the probe: if none is busy, every node must promise the new epoch. */
  private prepareAll(others: string[], probes: Array<Settled<ReturnType<RingNode["probe"]>>>): boolean {
    const { peers, log, settings } = this.options;
    const missing = others.filter((_, i) => !probes[i].ok);
    if (missing.length > 0) {
      log.event("regenerationWaiting", { missing });
      return false;
    }
    const answers = probes.map((p) => (p as { value: ReturnType<RingNode["probe"]> }).value);
    const busy = answers.filter((a) => a.live || (a.lastTokenAgeMs !== null && a.lastTokenAgeMs < settings.tokenLossMs));
    if (busy.length > 0 || !this.node.wantsRegeneration(this.now())) return false;
    const epoch = Math.max(this.node.probe(this.now()).epoch, ...answers.map((a) => a.epoch)) + 1;
    const own = this.stepPeer({ type: "prepare", from: this.node.id, epoch });
    if (!own.ok || own.type !== "promised") return false;
    settleAll(
      others.map((id) => peers.prepare(id, epoch)),
      (replies) => this.regenerationStep(() => this.regenerate(others, epoch, own.promise, replies)),
    );
    return true;
  }

  /** With every node's promise, the new token of `epoch`; one refusal ends the attempt. */
  private regenerate(others: string[], epoch: number, own: RingPromise, replies: Array<Settled<RingResult>>): boolean {
    const promises: RingPromise[] = [own];
    for (const [i, reply] of replies.entries()) {
      if (reply.ok && reply.value.ok && reply.value.type === "promised") {
        promises.push(reply.value.promise);
      } else {
        const why = reply.ok ? JSON.stringify(reply.value) : (reply.error as Error).message;
        this.options.log.event("regenerationRefused", { node: others[i], epoch, why });
        return false;
      }
    }
    this.stepPeer({ type: "regenerate", epoch, promises });
    return false;
  }
}

/** Log event names of the repair core's events. */
const REPAIR_EVENT_NAMES = { suspected: "ringSuspected", confirmed: "ringSuspicionConfirmed", cleared: "ringSuspicionCleared" } as const;

/** Promise.allSettled by `.then` only (the port rule): `done` runs once all have settled. */
function settleAll<T>(pending: PromiseLike<T>[], done: (results: Array<Settled<T>>) => void): void {
  const results: Array<Settled<T>> = new Array(pending.length);
  let left = pending.length;
  if (left === 0) return done(results);
  const settle = (i: number, result: Settled<T>) => {
    results[i] = result;
    left -= 1;
    if (left === 0) done(results);
  };
  pending.forEach((p, i) => p.then((value) => settle(i, { ok: true, value }), (error) => settle(i, { ok: false, error })));
}

/** Runs `fn` every `ms` (re-armed before each run) until the returned function is called. */
function repeatEvery(timers: Timers, ms: number, fn: () => void): () => void {
  let handle: TimerHandle | undefined;
  let stopped = false;
  const arm = () => {
    handle = timers.setTimeout(() => {
      if (stopped) return;
      arm();
      fn();
    }, ms);
  };
  arm();
  return () => {
    stopped = true;
    timers.clearTimeout(handle);
  };
}
