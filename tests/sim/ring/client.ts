/**
 * A ring client actor: a thin workload driver around the REAL client, lib/client/ring_client.ts.
 * Its fetch is `simFetch` (requests as HTTP messages over the simulated network, answered by the
 * node's real route handlers, http.ts; an answer exists only once the reply message is
 * delivered, as a SimFuture, which the client continues with `.then` only), its clock is the
 * actor's and its timers are the actor's virtual timers, so the client's own rules run as they are: the long-poll rounds with a ticket, the request timeouts, the lease counted from the
 * send time of the enter request that got the grant, the section watch, the leave on release.
 *
 * The workload: think, lock() (a try, a short or a long wait; a long wait in the heal phase),
 * then 0..writesMax puts/deletes inside the section (each answered once it went around the ring),
 * a hold, and release(). What the checkers read is recorded here: the section the client believes
 * it holds (`belief()`: the RingLock's lease by the client's clock, not lost), each lock()
 * attempt, and each acknowledged write.
 */
import { connectRing, type HttpAnswer, type RingClient, type RingLock, RingNotAcquiredError } from "../../../lib/client/ring_client.ts";
import { MutexdError } from "../../../lib/wire/errors.ts";
import type { Prng } from "../../../lib/core/prng.ts";
import type { RingOp } from "../../../lib/core/ring/ring_types.ts";
import type { Settings } from "../../../lib/settings.ts";
import { Actor } from "../actor.ts";
import type { Envelope } from "../network.ts";
import type { Sim } from "../simulator.ts";
import type { NodeClock } from "../time.ts";
import type { HttpReplyMessage, RingMessage } from "./messages.ts";
import { Microtasks, SimFuture, simTimers } from "./ports.ts";

export interface RingWorkload {
  leaseMs: number;
  writesMax: number;
  holdMaxMs: number;
  thinkMaxMs: number;
  waitChoicesMs: number[];
  healWaitMs: number;
  keys: number;
}

export interface RingSection {
  client: string;
  node: string;
  fence: number;
  epoch: number;
  leaseEndsAtMs: number;
}

export interface RingAttempt {
  client: string;
  startedAtMs: number;
  grantedAtMs?: number;
  endedAtMs?: number;
  outcome?: string;
}

export interface AckedWrite {
  wseq: number;
  author: string;
  op: RingOp;
}

function rejected<T>(future: SimFuture<T>, error: unknown): SimFuture<T> {
  future.reject(error);
  return future;
}

/** Requests of the client waiting for a reply, at most this many (bounded). */
const PENDING_MAX = 1_000;

export class RingClientActor extends Actor {
  private section: { lock: RingLock; view: RingSection } | undefined;
  private attempt: RingAttempt | undefined;
  private client: RingClient;
  private microtasks = new Microtasks();
  /** Our requests awaiting a reply: reqId → what settles the fetch. */
  private readonly pending = new Map<number, (reply: HttpReplyMessage) => void>();
  /** Not reset by a crash: a late reply to an earlier incarnation's request matches nothing. */
  private reqIdNext = 1;
  private writeSeq = 0;

  constructor(
    sim: Sim,
    id: string,
    clock: NodeClock,
    readonly node: string,
    private readonly settings: Settings,
    private readonly workload: RingWorkload,
    private readonly prng: Prng,
    private readonly hooks: { attempt(a: RingAttempt): void; acked(w: AckedWrite): void },
  ) {
    super(sim, id, "ring-client", clock);
    this.client = this.connect();
    this.think();
  }

  peers(): string[] {
    return [this.node];
  }

  /** The section this client believes it is in now (the real client's lease and loss), if any. */
  belief(): RingSection | undefined {
    const section = this.section;
    return section && !section.lock.lost && section.lock.remainingMs > 0 ? section.view : undefined;
  }

  currentAttempt(): RingAttempt | undefined {
    return this.attempt;
  }

  protected onCrash(): void {
    // The old incarnation's client waits for replies and timers that never come.
    this.section = undefined;
    this.pending.clear();
    this.endAttempt("crashed");
  }

  protected onRestart(): void {
    this.microtasks = new Microtasks();
    this.client = this.connect();
    this.think();
  }

  private connect(): RingClient {
    return connectRing({
      server: `http://${this.node}`,
      requestTimeoutMs: this.settings.requestTimeoutMs,
      fetch: (url, init) => this.simFetch(url, init),
      clock: this.clock,
      timers: simTimers(this, (fn) => this.turn(fn)),
    });
  }

  /** One macrotask: `fn`, then every continuation of the client it caused. */
  private turn(fn: () => void): void {
    fn();
    this.microtasks.drain();
  }

  private think(): void {
    this.after(this.prng.between(0, this.workload.thinkMaxMs), () => this.turn(() => this.cycle()));
  }

  /**
   * One lock() attempt with its section, then think again. Continued with `.then` only: the
   * client's answers are SimFutures, which an incarnation that crashed never sees settle.
   */
  private cycle(): void {
    const w = this.workload;
    const waitMs = this.sim.phase === "safety" ? this.prng.pick(w.waitChoicesMs) : w.healWaitMs;
    const attempt: RingAttempt = { client: this.id, startedAtMs: this.sim.nowMs };
    this.attempt = attempt;
    this.sim.log(this.id, "?", `ring lock at ${this.node} wait ${waitMs}ms`);
    this.client.lock({ waitMs, leaseMs: w.leaseMs }).then(
      (lock) => this.inSection(lock),
      (error) => {
        const failure = this.failure(error);
        if (failure !== undefined) this.finish(error instanceof RingNotAcquiredError ? error.reason : `error ${failure}`);
      },
    );
  }

  private inSection(lock: RingLock): void {
    const view: RingSection = { client: this.id, node: this.node, fence: lock.token, epoch: lock.epoch, leaseEndsAtMs: lock.leaseEndsAtMs };
    this.section = { lock, view };
    if (this.attempt) this.attempt.grantedAtMs = this.sim.nowMs;
    this.sim.log(this.id, "+", `in section fence ${lock.token} epoch ${lock.epoch} (lease to ${lock.leaseEndsAtMs})`);
    this.write(lock, this.prng.between(0, this.workload.writesMax));
  }

  /** `left` more writes inside the section (each after the last one's answer), then the hold. */
  private write(lock: RingLock, left: number): void {
    if (lock.lost) return this.leave(lock, "lost");
    if (left === 0) {
      const holdMs = this.prng.between(0, this.workload.holdMaxMs);
      return this.after(holdMs, () => this.turn(() => this.leave(lock, lock.lost ? "lost" : "done")));
    }
    this.writeSeq += 1;
    const key = `k${this.prng.below(this.workload.keys)}`;
    // Mostly puts, now and then a delete: both are ring writes.
    const op: RingOp = this.prng.chance(0.2) ? { type: "delete", key } : { type: "put", key, value: `${this.id}.${this.writeSeq}` };
    (op.type === "put" ? lock.put(op.key, op.value) : lock.delete(op.key)).then(
      (wseq) => {
        this.hooks.acked({ wseq, author: this.node, op });
        this.write(lock, left - 1);
      },
      (error) => {
        const failure = this.failure(error);
        if (failure !== undefined) this.leave(lock, `write: ${failure}`);
      },
    );
  }

  /**
   * The code of an error the client may answer with (MutexdError: the node's code, "unreachable",
   * "not_acquired", "lock_lost"); anything else is a bug of the client and ends the run.
   */
  private failure(error: unknown): string | undefined {
    if (error instanceof MutexdError) return error.code;
    this.sim.violate("sim.exception", `${this.id}: the ring client failed with ${(error as Error)?.stack ?? error}`);
    return undefined;
  }

  private leave(lock: RingLock, why: string): void {
    // Stop acting before the leave is even sent: from here on the client claims nothing.
    this.section = undefined;
    this.sim.log(this.id, "-", `leave fence ${lock.token} (${why})`);
    lock.release().then(undefined, () => {});
    this.finish("granted");
  }

  private finish(outcome: string): void {
    this.endAttempt(outcome);
    this.think();
  }

  private endAttempt(outcome: string): void {
    const attempt = this.attempt;
    if (!attempt) return;
    this.attempt = undefined;
    attempt.endedAtMs = this.sim.nowMs;
    attempt.outcome = attempt.grantedAtMs !== undefined ? "granted" : outcome;
    this.hooks.attempt(attempt);
  }

  /**
   * The client's fetch: the request as an HTTP message to the node; the answer settles only when
   * the reply is delivered. An abort (the client's timeout on the actor's timers, or its cancel)
   * rejects it as fetch would; a reply after that matches nothing.
   */
  private simFetch(url: string, init: RequestInit): SimFuture<HttpAnswer> {
    const answer = new SimFuture<HttpAnswer>(this.microtasks);
    const signal = init.signal;
    if (signal?.aborted) return rejected(answer, signal.reason);
    if (this.pending.size >= PENDING_MAX) return rejected(answer, new Error(`${PENDING_MAX} requests in flight`));
    const reqId = this.reqIdNext++;
    const { pathname, search } = new URL(url);
    const path = pathname + search;
    const onAbort = () => {
      if (this.pending.delete(reqId)) answer.reject(signal!.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    const microtasks = this.microtasks;
    this.pending.set(reqId, (reply) => {
      signal?.removeEventListener("abort", onAbort);
      const ok = reply.status >= 200 && reply.status <= 299;
      answer.resolve({ status: reply.status, ok, text: () => SimFuture.resolved(microtasks, reply.body) });
    });
    const body = typeof init.body === "string" ? init.body : undefined;
    const message: RingMessage = { type: "http", reqId, method: init.method ?? "GET", path, ...(body === undefined ? {} : { body }) };
    this.sim.network.send(this, this.node, message, `${message.method} ${path}`);
    return answer;
  }

  protected receive(envelope: Envelope): void {
    const message = envelope.payload as RingMessage;
    if (message.type !== "httpReply") return;
    const settle = this.pending.get(message.reqId);
    if (!settle) return;
    this.pending.delete(message.reqId);
    this.turn(() => settle(message));
  }
}
