/**
 * A session's index of the locks it holds or waits for (LockTable keeps it in step with the
 * locks), so that closing or expiring a session, and answering its keepalive, touch its own locks
 * and not the whole table.
 *
 * A Set costs 52–70 bytes of heap per entry in Bun and was a sixth of a held lock's cost (W4,
 * docs/bench.md "Memory per held lock"). Most sessions hold a few locks, so the index is a plain
 * list of the lock objects (8 bytes per entry) while it has at most LIST_MAX of them: removing
 * one compares references, at most LIST_MAX of them. A session that goes beyond that gets a Set,
 * so no removal costs more than LIST_MAX comparisons; it keeps the Set until it is cleared.
 */
import type { LockState } from "./lock_state.ts";

/** Entries up to which the index is a list (a removal scans at most this many references). */
export const SESSION_LOCKS_LIST_MAX = 1024;

export class SessionLocks implements Iterable<LockState> {
  private list: LockState[] = [];
  private set: Set<LockState> | undefined;

  get size(): number {
    return this.set ? this.set.size : this.list.length;
  }

  /** Adds a lock the session is not in yet (the table adds each lock once: a holder or a waiter). */
  add(lock: LockState): void {
    if (this.set) {
      this.set.add(lock);
      return;
    }
    this.list.push(lock);
    if (this.list.length > SESSION_LOCKS_LIST_MAX) {
      this.set = new Set(this.list);
      this.list = [];
    }
  }

  delete(lock: LockState): void {
    if (this.set) {
      this.set.delete(lock);
      return;
    }
    // The order does not matter (readers sort by name): the last entry fills the hole.
    const at = this.list.lastIndexOf(lock);
    if (at < 0) return;
    const last = this.list.pop()!;
    if (at < this.list.length) this.list[at] = last;
  }

  has(lock: LockState): boolean {
    return this.set ? this.set.has(lock) : this.list.includes(lock);
  }

  clear(): void {
    this.list = [];
    this.set = undefined;
  }

  [Symbol.iterator](): Iterator<LockState> {
    return this.set ? this.set.values() : this.list.values();
  }
}
