/**
 * The lock table's sessions (a layer of lock_table.ts): opening one, its keepalives (which renew
 * its lease in the primary's table only, session_leases.ts), closing it, the primary's `expire`
 * of lapsed leases and a new primary's restart of every lease. A session that goes releases what
 * it holds (with its lock-delay when it expired) and leaves the queues it was in; the locks it
 * freed are granted once every session that goes has gone. Split from lock_table.ts by concept
 * (developer guide, rule 1); pure, as the table is.
 */
import { assert, AssertionError } from "../assert.ts";
import { ownerKey, ownerProblem, SECRET_MISMATCH, secretHashProblem, secretMatches } from "./session_owners.ts";
import { EXPIRE_BATCH_MAX } from "./session_leases.ts";
import { SessionLocks } from "./session_locks.ts";
import type { Command, Effect, Output } from "./table_commands.ts";
import { type LockState, orNone, type Session, withoutHolder } from "./lock_state.ts";
import { fail } from "./table_base.ts";
import { LockGrants } from "./lock_grants.ts";

export class TableSessions extends LockGrants {
  /**
   * The primary's keepalive at `nowMs`: renews the session's lease in this table only, as no log
   * entry (session_leases.ts); the table's clock stays the last entry's, as on the backup. The
   * primary expires lapsed sessions first, so a lapsed one is not revived.
   */
  renew(command: Extract<Command, { type: "keepAlive" }>, nowMs: number): Output {
    if (!(Number.isFinite(nowMs) && nowMs >= this.nowMs)) throw new AssertionError(`a renewal at ${nowMs} before the table's clock ${this.nowMs}`);
    return this.renewed(command.session, this.keepAlive(command, nowMs));
  }

  /** The primary's question: sessions whose lease lapsed at `nowMs`, to name in an `expire` entry. */
  lapsedSessions(nowMs: number, max = EXPIRE_BATCH_MAX): string[] {
    // Asked before every client command: no iterator over the sessions while none may be due.
    return this.leases.mayHaveLapsed(nowMs) ? this.leases.lapsed(this.sessions.values(), nowMs, max) : [];
  }

  /** Notes the lease end a keepalive set (read back from the session, whatever set it). */
  protected renewed(sessionId: string, output: Output): Output {
    const session = this.sessions.get(sessionId);
    if (output.result.ok && session) this.leases.note(session.expiresAtMs);
    return output;
  }

  protected openSession(command: Extract<Command, { type: "openSession" }>): Output {
    const { ttlMs, secretHash, owner } = command;
    const { sessionTtlMinMs, sessionTtlMaxMs, sessionsMax } = this.options.limits;
    if (!Number.isSafeInteger(ttlMs) || ttlMs < sessionTtlMinMs || ttlMs > sessionTtlMaxMs) {
      return fail("bad_request", `ttlMs must be an integer within ${sessionTtlMinMs}..${sessionTtlMaxMs}`);
    }
    const problem = secretHashProblem(secretHash) ?? ownerProblem(owner, command.ownerSessionsMax, "ownerSessionsMax");
    if (problem) return fail("bad_request", problem);
    if (this.sessions.size >= sessionsMax) {
      return fail("limit_reached", `at most ${sessionsMax} sessions`);
    }
    const ownerRefusal = this.owners.sessionRefusal(ownerKey(owner), command.ownerSessionsMax);
    if (ownerRefusal) return { result: { ok: false, error: ownerRefusal }, effects: [] };
    this.sessionSeq += 1;
    const id = `${this.options.sessionIdPrefix}${this.sessionSeq}`;
    assert(!this.sessions.has(id), `session id ${id} reused`);
    const session: Session = {
      born: ++this.bornSeq,
      id,
      ttlMs,
      createdAtMs: this.nowMs,
      expiresAtMs: this.nowMs + ttlMs,
      locks: new SessionLocks(),
      leftCalls: [],
      secretHash,
    };
    if (owner !== undefined) session.owner = owner;
    this.sessions.set(id, session);
    this.owners.sessionOpened(ownerKey(owner));
    this.leases.note(session.expiresAtMs);
    return { result: { ok: true, type: "session", session: id, ttlMs, expiresAtMs: session.expiresAtMs, secretHash }, effects: [] };
  }

  /** The live session a command acts on, or the refusal (unknown, or the secret does not match). */
  protected sessionFor(sessionId: string, secretHash: string): Session | Output {
    const session = this.sessions.get(sessionId);
    if (!session) return fail("session_not_found", `session ${sessionId} is unknown or expired`);
    if (!secretMatches(session.secretHash, secretHash)) return { result: { ok: false, error: SECRET_MISMATCH }, effects: [] };
    return session;
  }

  protected keepAlive(command: Extract<Command, { type: "keepAlive" }>, nowMs = this.nowMs): Output {
    const sessionId = command.session;
    const session = this.sessionFor(sessionId, command.secretHash);
    if ("result" in session) return session;
    this.watcher?.beforeSessionChange(session);
    session.expiresAtMs = nowMs + session.ttlMs;
    // session.locks also names the locks it waits for: only those it holds are answered.
    const held = [...session.locks].filter((lock) => lock.holderOf(sessionId) !== undefined).map((lock) => lock.name).sort();
    return {
      result: { ok: true, type: "session", session: sessionId, ttlMs: session.ttlMs, expiresAtMs: session.expiresAtMs, held },
      effects: [],
    };
  }

  /**
   * The primary's decision that these sessions' leases lapsed (an id it no longer has: nothing).
   * All go before any lock they free is granted: a lapsed waiter must not get one on the way.
   */
  protected expire(ids: readonly string[], effects: Effect[]): Output {
    const touched = new Set<LockState>();
    for (const id of ids) {
      const session = this.sessions.get(id);
      if (!session) continue;
      const released = this.dropSession(session, "expired", effects, touched);
      effects.push({ type: "sessionExpired", session: id, released });
    }
    this.promoteAll(touched, effects);
    return { result: { ok: true, type: "ticked" }, effects: [] };
  }

  protected closeSession(command: Extract<Command, { type: "closeSession" }>, effects: Effect[]): Output {
    const sessionId = command.session;
    const session = this.sessionFor(sessionId, command.secretHash);
    if ("result" in session) return session;
    const touched = new Set<LockState>();
    const released = this.dropSession(session, "closed", effects, touched);
    this.promoteAll(touched, effects);
    return { result: { ok: true, type: "closed", session: sessionId, released }, effects: [] };
  }

  protected restartLeases(): Output {
    for (const session of this.sessions.values()) {
      this.watcher?.beforeSessionChange(session);
      session.expiresAtMs = this.nowMs + session.ttlMs;
      this.leases.note(session.expiresAtMs);
    }
    for (const lock of this.locks.values()) {
      if (lock.queue.length > 0) this.watcher?.beforeLockChange(lock);
      for (const waiter of lock.queue) {
        const ttlMs = this.sessions.get(waiter.session)?.ttlMs ?? 0;
        waiter.deadlineMs = Math.max(waiter.deadlineMs, this.nowMs + ttlMs);
        this.noteDue(waiter.deadlineMs);
      }
    }
    return { result: { ok: true, type: "leasesRestarted", sessions: this.sessions.size }, effects: [] };
  }

  /**
   * Removes a session: releases what it holds (with lock-delay on expiry), drops its waits. The
   * locks it was in go to `touched`, for `promoteAll` once every session that goes has gone.
   */
  private dropSession(session: Session, reason: "expired" | "closed", effects: Effect[], touched: Set<LockState>): string[] {
    const released: string[] = [];
    this.watcher?.beforeSessionChange(session);
    // In name order: the index's own order differs between a table and its copy (table_copy.ts),
    // and the answer's `released` list must not.
    for (const lock of [...session.locks].sort(byName)) {
      const name = lock.name;
      assert(this.locks.get(name) === lock, `session ${session.id} indexes a lock ${name} the table does not have`);
      this.watcher?.beforeLockChange(lock);
      const holder = lock.holderOf(session.id);
      if (holder) {
        withoutHolder(lock, holder);
        released.push(name);
        effects.push({ type: "released", name, session: session.id, token: holder.token, reason });
        if (reason === "expired" && holder.lockDelayMs > 0) {
          lock.delayUntilMs = Math.max(lock.delayUntilMs, this.nowMs + holder.lockDelayMs);
          this.noteDue(lock.delayUntilMs);
        }
      }
      const waiting = lock.queue.length;
      lock.queue = orNone(lock.queue.filter((w) => w.session !== session.id));
      this.owners.waiterRemoved(ownerKey(session.owner), waiting - lock.queue.length);
      if (lock.queue.length !== waiting) {
        effects.push({ type: "waitEnded", name, session: session.id, reason: "sessionDead" });
      }
      touched.add(lock);
    }
    this.sessions.delete(session.id);
    this.owners.sessionDropped(ownerKey(session.owner));
    session.locks.clear();
    return released;
  }

  private promoteAll(locks: Iterable<LockState>, effects: Effect[]): void {
    for (const lock of locks) {
      this.promote(lock, effects);
      this.forgetIfIdle(lock);
    }
  }
}

/** Orders locks by name (a session's index is in no particular order). */
function byName(a: LockState, b: LockState): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}
