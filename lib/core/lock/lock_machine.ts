/**
 * The replicated state machine of the lock service: the lock table plus a bounded memory of
 * answered requests, so that a client retrying a request with the same idempotency key (after
 * a timeout or a failover) gets the first answer instead of applying it twice.
 *
 * The primary appends every command as a log entry `{ index, epoch, atMs, requestId, command }`;
 * the primary and the backup apply the same entries in the same order with the same `atMs`
 * (the primary's clock), so both hold the same table and the same fencing counter.
 */
import { AssertionError } from "../assert.ts";
import { type AnsweredLimits, AnsweredRequests, requestIdProblem } from "./answered.ts";
import { type Command, LockTable, type LockTableLimits, type LockTableSnapshot, type Output } from "./lock_table.ts";

export interface LogEntry {
  /** Position in the log, from 1, without gaps. */
  index: number;
  /** Epoch of the primary that appended it. */
  epoch: number;
  /** The appending primary's time base (see LockServerCore on how a new primary continues it). */
  atMs: number;
  /** The client's idempotency key, when it sent one. */
  requestId?: string;
  command: Command;
}

export interface LockMachineSnapshot {
  appliedIndex: number;
  table: LockTableSnapshot;
  answered: Array<[string, Output["result"]]>;
}

/**
 * Commands whose retry must not apply twice. Keepalive is idempotent by itself; so is enter while
 * its call is in progress (a holder gets its grant, a waiter keeps its place), and after the
 * call's leave the table refuses it by its `callId` (LockTable, finding 12).
 */
const REMEMBERED = new Set<Command["type"]>(["openSession", "closeSession", "leave", "forceRelease"]);

export class LockMachine {
  private answered: AnsweredRequests;
  private applied = 0;

  constructor(readonly table: LockTable, limits: AnsweredLimits) {
    this.answered = new AnsweredRequests(limits);
  }

  get appliedIndex(): number {
    return this.applied;
  }

  /** The time base of the last applied entry. */
  get lastAtMs(): number {
    return this.table.clockMs;
  }

  /** Applies the next entry; entries must come in index order. */
  apply(entry: LogEntry): Output {
    // On every entry: the message is built only when it fails (a template costs its number conversions per call).
    if (entry.index !== this.applied + 1) throw new AssertionError(`entry ${entry.index} applied after ${this.applied}`);
    this.applied = entry.index;
    // The primary refuses such an id before it appends (LockReplica.clientRequest); an entry that
    // carries one anyway is refused here, the same on both servers, and nothing of it is kept.
    const idProblem = requestIdProblem(entry.requestId);
    if (idProblem !== undefined) {
      const output = this.table.apply({ type: "tick" }, entry.atMs);
      return { result: { ok: false, error: { code: "bad_request", message: idProblem } }, effects: output.effects };
    }
    const remembered = entry.requestId === undefined ? undefined : this.answered.get(entry.requestId);
    if (remembered !== undefined) {
      // A retry: answer as the first time, and let time pass for the rest of the table.
      const output = this.table.apply({ type: "tick" }, entry.atMs);
      return { result: remembered, effects: output.effects };
    }
    const output = this.table.apply(entry.command, entry.atMs);
    if (entry.requestId !== undefined && REMEMBERED.has(entry.command.type)) {
      this.answered.remember(entry.requestId, output.result);
    }
    return output;
  }

  /** The remembered answer for a request id, if the machine has applied it. */
  answerFor(requestId: string): Output["result"] | undefined {
    return this.answered.get(requestId);
  }

  snapshot(): LockMachineSnapshot {
    return { appliedIndex: this.applied, table: this.table.snapshot(), answered: this.answeredEntries() };
  }

  static fromSnapshot(snapshot: LockMachineSnapshot, limits: LockTableLimits, answeredLimits: AnsweredLimits): LockMachine {
    return LockMachine.fromParts(LockTable.fromSnapshot(snapshot.table, limits), snapshot.appliedIndex, snapshot.answered, answeredLimits);
  }

  /** The remembered answers, oldest first (a streamed copy takes them at its start). */
  answeredEntries(): Array<[string, Output["result"]]> {
    return this.answered.entries();
  }

  /** A machine at `appliedIndex` from a table and the answers remembered then (a copy's end). */
  static fromParts(table: LockTable, appliedIndex: number, answered: Array<[string, Output["result"]]>, answeredLimits: AnsweredLimits): LockMachine {
    const machine = new LockMachine(table, answeredLimits);
    machine.applied = appliedIndex;
    // Under this server's limits, oldest first: the same answers the primary keeps.
    machine.answered = AnsweredRequests.from(answered, answeredLimits);
    return machine;
  }
}
