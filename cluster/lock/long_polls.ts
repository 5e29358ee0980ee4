/**
 * The enter long-polls of the lock service (service.ts): a waiter's poll ends when something
 * changes for its request (a committed grant, the wait ended, a role change) or when it runs out.
 * Its end is a continuation of the step that decided it (step_continuations.ts).
 */
import type { Grant } from "../../lib/core/lock/lock_table.ts";
import type { Timers } from "../timers.ts";
import type { StepContinuations } from "./step_continuations.ts";

/**
 * How a long-poll ended: something changed for the request, or the poll ran out first. With
 * "changed" by a committed grant to the waiter, `grant` is that grant.
 */
export type WaitOutcome = "changed" | "timeout";
export type PollEnd = (outcome: WaitOutcome, grant?: Grant) => void;

/** Long-polls kept per (lock, session); more are a client's repeated calls (LongPolls.polls). */
export const POLLS_PER_REQUEST_MAX = 4;

export class LongPolls {
  /**
   * Long-polls waiting for a change to their request, keyed by lock name and session. A poll starts
   * only for a queued request (the table bounds those) and ends at its timer (longPollMaxMs at
   * most). One key may hold several: a client that asks again while its earlier poll runs on to its
   * timer. At most POLLS_PER_REQUEST_MAX per key: a newer poll ends the oldest as "changed" (its
   * call submits once more and answers where it stands; its client, which asked again, has moved
   * on to the newer call), so repeated calls cannot pile up timers.
   */
  private readonly polls = new Map<string, Set<PollEnd>>();

  constructor(private readonly timers: Timers, private readonly continuations: StepContinuations) {}

  /** Waits for a change to the queued request of (name, session), for at most `timeoutMs`. */
  wait(name: string, session: string, timeoutMs: number, done: PollEnd): void {
    const key = pollKey(name, session);
    const { timers } = this;
    const waiters = this.polls.get(key) ?? new Set();
    this.polls.set(key, waiters);
    const finish: PollEnd = (outcome, grant) => {
      timers.clearTimeout(timer);
      waiters.delete(finish);
      if (waiters.size === 0) this.polls.delete(key);
      this.continuations.push(() => done(outcome, grant));
    };
    const timer = timers.setTimeout(() => {
      finish("timeout");
      this.continuations.run();
    }, timeoutMs);
    waiters.add(finish);
    if (waiters.size > POLLS_PER_REQUEST_MAX) {
      // A Set iterates in insertion order: the first is the oldest.
      const oldest = waiters.values().next().value!;
      oldest("changed");
    }
  }

  /** Ends the polls of (name, session); `grant`: the committed grant that ends them. */
  wake(name: string, session: string, grant?: Grant): void {
    // Every grant asks: without a poll, no key string is built and looked up.
    if (this.polls.size === 0) return;
    const waiters = this.polls.get(pollKey(name, session));
    if (!waiters) return;
    for (const finish of [...waiters]) finish("changed", grant);
  }

  /** Ends every long-poll (shutdown, role change); their continuations run with the step's. */
  endAll(): void {
    for (const waiters of [...this.polls.values()]) for (const finish of [...waiters]) finish("changed");
  }
}

function pollKey(name: string, session: string): string {
  return `${name}\u0000${session}`;
}
