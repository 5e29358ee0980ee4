/**
 * The lock table's grants (a layer of lock_table.ts): the queue of one lock and who gets it.
 * FIFO per lock, shared holders together, an exclusive one alone; a fencing token per grant from
 * the table's one counter; no grant inside a lock's lock-delay, nor before the end of a fresh
 * table's grace (holdGrants); waits that end at their deadline. Split from lock_table.ts by
 * concept (developer guide, rule 1); pure, as the table is.
 */
import { assert, AssertionError } from "../assert.ts";
import { ownerKey } from "./session_owners.ts";
import type { Effect, Grant, Mode, Output } from "./table_commands.ts";
import { type LockState, orNone, type Session, withHolder } from "./lock_state.ts";
import { TableBase } from "./table_base.ts";

export class LockGrants extends TableBase {
  /** Grants from the head of the queue while the head is compatible with the holders. */
  protected promote(lock: LockState, effects: Effect[]): void {
    if (this.nowMs < lock.delayUntilMs) return;
    if (lock.queue.length > 0) this.watcher?.beforeLockChange(lock);
    // Each pass removes the head or stops, so the loop is bounded by the queue length.
    while (lock.queue.length > 0) {
      const head = lock.queue[0];
      const session = this.sessions.get(head.session);
      if (!session || head.deadlineMs <= this.nowMs) {
        // Never grant to a dead waiter (etcd #11456): the primary logs an `expire` of every lapsed
        // lease before each entry (LockReplica.append), so a session here is live on its clock.
        lock.queue.shift();
        if (session) this.owners.waiterRemoved(ownerKey(session.owner));
        session?.locks.delete(lock);
        const reason = !session ? "sessionDead" : "deadline";
        // A wait that ended at its deadline is a call its session left: a late copy of one of its
        // rounds must not queue it again.
        if (session && reason === "deadline") this.recordLeft(session, head.callId);
        effects.push({ type: "waitEnded", name: lock.name, session: head.session, reason });
        continue;
      }
      if (!this.compatible(lock, head.mode)) return;
      lock.queue.shift();
      this.owners.waiterRemoved(ownerKey(session.owner));
      session.locks.delete(lock); // re-added by grant
      effects.push({ type: "granted", grant: this.grant(lock, session, head.mode, head.lockDelayMs, head.callId) });
      if (head.mode === "exclusive") return;
    }
  }

  protected grant(lock: LockState, session: Session, mode: Mode, lockDelayMs: number, callId: string | undefined): Grant {
    // On every grant: the messages are built only when they fail.
    if (!this.compatible(lock, mode)) throw new AssertionError(`grant of ${lock.name} would break mutual exclusion`);
    if (!(this.nowMs >= lock.delayUntilMs)) throw new AssertionError(`grant of ${lock.name} inside its lock-delay`);
    this.watcher?.beforeLockChange(lock);
    this.lastToken += 1;
    assert(Number.isSafeInteger(this.lastToken), "fencing token overflow");
    withHolder(lock, { session: session.id, token: this.lastToken, mode, sinceMs: this.nowMs, lockDelayMs, callId });
    session.locks.add(lock);
    return { name: lock.name, session: session.id, token: this.lastToken, mode };
  }

  protected compatible(lock: LockState, mode: Mode): boolean {
    if (this.nowMs < lock.delayUntilMs) return false;
    const held = lock.held;
    if (!Array.isArray(held)) return mode === "shared" && held.mode === "shared";
    return held.length === 0 || (mode === "shared" && held.every((h) => h.mode === "shared"));
  }

  /** Ends waits whose deadline came and lock-delays that ended; O(1) while nothing is due. */
  protected expireDue(effects: Effect[]): void {
    if (this.nowMs < this.dueAtMs) return;
    let nextDueMs = Number.POSITIVE_INFINITY;
    for (const lock of [...this.locks.values()]) {
      const kept = lock.queue.filter((waiter) => {
        if (waiter.deadlineMs > this.nowMs) return true;
        const session = this.sessions.get(waiter.session);
        session?.locks.delete(lock);
        if (session) this.owners.waiterRemoved(ownerKey(session.owner));
        if (session) this.recordLeft(session, waiter.callId); // as in promote: the call is over
        effects.push({ type: "waitEnded", name: lock.name, session: waiter.session, reason: "deadline" });
        return false;
      });
      const changed = kept.length !== lock.queue.length;
      if (changed) {
        this.watcher?.beforeLockChange(lock);
        lock.queue = orNone(kept);
      }
      if (changed || lock.delayUntilMs <= this.nowMs) this.promote(lock, effects);
      for (const waiter of lock.queue) nextDueMs = Math.min(nextDueMs, waiter.deadlineMs);
      if (lock.delayUntilMs > this.nowMs) nextDueMs = Math.min(nextDueMs, lock.delayUntilMs);
      this.forgetIfIdle(lock);
    }
    this.dueAtMs = nextDueMs;
  }

  /**
   * No lease may end earlier than the old primary could have let it, and the new primary cannot
   * know when the last keepalive reached the old one: every session gets its whole TTL again.
   * Waits get a TTL too, since their clients must find the new primary and ask again.
   */
  protected holdGrants(untilMs: number): Output {
    assert(Number.isFinite(untilMs), "holdGrants needs a time");
    this.grantsFromMs = Math.max(this.grantsFromMs, untilMs);
    // The locks there are (none in a fresh table) wait too; the tick at the end grants their queues.
    for (const lock of this.locks.values()) {
      this.watcher?.beforeLockChange(lock);
      lock.delayUntilMs = Math.max(lock.delayUntilMs, this.grantsFromMs);
    }
    this.noteDue(this.grantsFromMs);
    return { result: { ok: true, type: "ticked" }, effects: [] };
  }

  /** When grants may start (holdGrants; 0 when never held). */
  get grantsFrom(): number {
    return this.grantsFromMs;
  }
}
