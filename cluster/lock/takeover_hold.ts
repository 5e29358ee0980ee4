/**
 * The client requests a backup holds while it is about to take over (LockReplica.takeoverPending,
 * issue 14 F1): refused "not primary" now, they are submitted again once no takeover is pending,
 * so the client is served as soon as this server serves, instead of at its next try after a
 * backoff of up to 100 ms. The lock service (service.ts) submits them again; this keeps the list.
 */
import type { ClientAnswer, LockReplica } from "../../lib/core/lock/lock_replica.ts";
import type { Command } from "../../lib/core/lock/lock_table.ts";
import type { Clock } from "../clock.ts";

/**
 * A client's request a backup refused while it is about to take over, held to be submitted again
 * once no takeover is pending: it took over, follows a primary again, or the window in which a
 * dead primary's leases would have ended is over (at most primaryLeaseMs + leaseRenewMs −
 * primarySilenceMs, 400 ms with the defaults, after the hold began).
 */
export interface HeldForTakeover {
  command: Command;
  requestId: string | undefined;
  done: (answer: ClientAnswer) => void;
}

/**
 * Requests a backup holds for its takeover at most; beyond, they are refused at once (the client
 * backs off and asks again, as without the hold). Each is one client's call in flight.
 */
const TAKEOVER_HELD_MAX = 1_000;

const NONE_HELD: readonly HeldForTakeover[] = Object.freeze([]);

export class TakeoverHold {
  /** At most TAKEOVER_HELD_MAX. */
  private held: HeldForTakeover[] = [];

  constructor(private readonly replica: LockReplica, private readonly clock: Clock) {}

  /**
   * Holds a "not primary" answer's request while a takeover is pending here; else answers it. The
   * clock is read for a refusal only: every answer of a serving primary passes here.
   */
  holdOrAnswer(request: HeldForTakeover, answer: ClientAnswer): void {
    const refusedForNow = !answer.ok && answer.code === "not_primary" && this.replica.takeoverPending(this.clock.nowMs());
    if (!refusedForNow || this.held.length >= TAKEOVER_HELD_MAX) return request.done(answer);
    this.held.push(request);
  }

  /** Once no takeover is pending, every held request, taken off the list (else none: one shared empty list, after every step). */
  release(): readonly HeldForTakeover[] {
    if (this.held.length === 0 || this.replica.takeoverPending(this.clock.nowMs())) return NONE_HELD;
    return this.held.splice(0);
  }

  /** Every held request, taken off the list (the service stops). */
  takeAll(): HeldForTakeover[] {
    return this.held.splice(0);
  }
}
