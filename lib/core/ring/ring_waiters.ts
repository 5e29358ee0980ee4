/**
 * The clients waiting at a ring node for a critical section (docs/ring.md), in FIFO order. Each
 * has a ticket to ask again with and a wait deadline; its long-poll may be attached (`reqId`) or
 * not, and then the client must ask again within ringPollGraceMs or lose its place.
 *
 * Owned by a RingNode, which serves the head when the token is here and keeps the section it
 * grants. No clock, timer, randomness or I/O in here: time comes in as `nowMs`.
 */
import { clientError, type ClientReply, type RingLimits } from "./ring_io.ts";

export interface Waiter {
  ticket: string;
  reqId: number | null;
  deadlineMs: number;
  /** When no long-poll is attached: the client must ask again before this. */
  pollDeadlineMs: number;
  leaseMs: number;
  queuedAtMs: number;
}

export type WaiterLimits = Pick<RingLimits, "waitMaxMs" | "ringLeaseMaxMs" | "ringWaitersMax" | "tokenLossMs" | "ringPollGraceMs">;

export class RingWaiters {
  private queue: Waiter[] = [];
  private ticketSeq = 0;

  constructor(
    /** Prefix of enter tickets, unique per incarnation of the node. */
    private readonly ticketPrefix: string,
    private readonly limits: WaiterLimits,
    /** The sink of the node's current step for client replies. */
    private readonly reply: (reqId: number, reply: ClientReply) => void,
  ) {}

  get length(): number {
    return this.queue.length;
  }

  /** The next waiter to serve, left in place. */
  get next(): Waiter | undefined {
    return this.queue[0];
  }

  /** The longest lease a waiter asked for (0: none waits): what the next token lease must allow. */
  get longestLeaseMs(): number {
    let longestMs = 0;
    for (const waiter of this.queue) longestMs = Math.max(longestMs, waiter.leaseMs); // at most ringWaitersMax
    return longestMs;
  }

  /** The next waiter to serve (the node grants it). */
  shift(): Waiter | undefined {
    return this.queue.shift();
  }

  /** Why an enter's numbers are out of bounds, or undefined. */
  checkEnter(waitMs: number, leaseMs: number): string | undefined {
    const limits = this.limits;
    if (!Number.isSafeInteger(waitMs) || waitMs < 0 || waitMs > limits.waitMaxMs) {
      return `waitMs must be an integer within 0..${limits.waitMaxMs}`;
    }
    if (!Number.isSafeInteger(leaseMs) || leaseMs < 1 || leaseMs > limits.ringLeaseMaxMs) {
      return `leaseMs must be an integer within 1..${limits.ringLeaseMaxMs}`;
    }
    return undefined;
  }

  /**
   * Queues a new enter (checked by checkEnter); false when it was answered instead: the queue is
   * full, or it is a try (waitMs 0) with somebody ahead of it (`busyHere`: a section or writes of
   * the token here).
   */
  add(reqId: number, waitMs: number, leaseMs: number, nowMs: number, busyHere: boolean): boolean {
    const limits = this.limits;
    if (this.queue.length >= limits.ringWaitersMax) {
      this.reply(reqId, clientError("limit_reached", `at most ${limits.ringWaitersMax} waiters per ring node`));
      return false;
    }
    if (waitMs === 0 && (this.queue.length > 0 || busyHere)) {
      // A try waits for the token's next visit only when nobody is ahead of it.
      this.reply(reqId, { ok: true, type: "notGranted", reason: "taken" });
      return false;
    }
    this.ticketSeq += 1;
    this.queue.push({
      ticket: `${this.ticketPrefix}${this.ticketSeq}`,
      reqId,
      // A try is bounded by one visit of the token; tokenLossMs bounds the wait for that visit.
      deadlineMs: nowMs + (waitMs === 0 ? limits.tokenLossMs : waitMs),
      pollDeadlineMs: Number.POSITIVE_INFINITY,
      leaseMs,
      queuedAtMs: nowMs,
    });
    return true;
  }

  /** The client asks again with its ticket (not the running section's): keep waiting on this request. */
  repoll(reqId: number, ticket: string): void {
    const waiter = this.queue.find((w) => w.ticket === ticket);
    if (!waiter) {
      return this.reply(reqId, clientError("waiter_not_found", `ticket ${ticket} is unknown: the wait ended or was dropped`));
    }
    if (waiter.reqId !== null) this.reply(waiter.reqId, this.waitingReply(waiter));
    waiter.reqId = reqId;
    waiter.pollDeadlineMs = Number.POSITIVE_INFINITY;
  }

  /** The driver's long-poll for `reqId` ran out: answer "waiting" and keep the place. */
  detach(reqId: number, nowMs: number): void {
    const waiter = this.queue.find((w) => w.reqId === reqId);
    if (!waiter) return; // answered already
    waiter.reqId = null;
    waiter.pollDeadlineMs = nowMs + this.limits.ringPollGraceMs;
    this.reply(reqId, this.waitingReply(waiter));
  }

  private waitingReply(waiter: Waiter): ClientReply {
    return { ok: true, type: "waiting", ticket: waiter.ticket, position: this.queue.indexOf(waiter) + 1 };
  }

  /** The client gives up its wait (a ticket that is not the running section's). */
  withdraw(reqId: number, ticket: string): void {
    const index = this.queue.findIndex((w) => w.ticket === ticket);
    if (index < 0) return this.reply(reqId, clientError("waiter_not_found", `ticket ${ticket} is unknown`));
    const [waiter] = this.queue.splice(index, 1);
    if (waiter.reqId !== null) this.reply(waiter.reqId, { ok: true, type: "notGranted", reason: "withdrawn" });
    this.reply(reqId, { ok: true, type: "left", wasHolder: false });
  }

  /** Drops the waiters past their wait deadline (answered) or their poll deadline (gone). */
  expire(nowMs: number): void {
    if (this.queue.length === 0) return;
    this.queue = this.queue.filter((waiter) => {
      if (nowMs >= waiter.deadlineMs) {
        if (waiter.reqId !== null) this.reply(waiter.reqId, { ok: true, type: "notGranted", reason: "deadline" });
        return false;
      }
      return nowMs < waiter.pollDeadlineMs;
    });
  }
}
