/**
 * A primary's log and commit (a layer of LockReplica, replica_state.ts): what a command goes
 * through before it is logged (lapsed sessions expired first, keepalives answered from the table,
 * TTLs the arbiter's record does not cover yet held), the append, the commit gate (the backup's
 * ack, the arbiter's record, our own disk) and the answers held until it, the primary's tick, and
 * its side of the backup's acks and copies (backup_feed.ts does the work).
 */
import { assert } from "../assert.ts";
import type { LogEntry } from "./lock_machine.ts";
import type { Command, Output } from "./lock_table.ts";
import { type PeerMessage, toAnswer } from "./replica_io.ts";
import type { InFlight } from "./replica_state.ts";
import { ReplicaRoles } from "./replica_roles.ts";

export abstract class ReplicaPrimary extends ReplicaRoles {
  /** A command past every check: a keepalive renews our table only, any other is logged. */
  protected submitAdmitted(command: Command, requestId: string | undefined, clientRef: number): void {
    if (command.type !== "keepAlive") return this.append(command, requestId, clientRef);
    // Not replicated, not written to disk: only a primary's table holds live leases, and a new
    // primary restarts them all (docs/failover.md "Session leases").
    this.answerUnlogged(clientRef, this.machine!.table.renew(command, this.timeBaseMs()));
  }

  /**
   * Logs the sessions whose lease lapsed on our clock as `expire` entries, before any command
   * reads the table. Terminates: each entry drops at least one of the table's bounded sessions.
   */
  protected expireLapsed(): void {
    const table = this.machine!.table;
    for (let ids = table.lapsedSessions(this.timeBaseMs()); ids.length > 0; ids = table.lapsedSessions(this.timeBaseMs())) {
      this.append({ type: "expire", sessions: ids }, undefined);
    }
  }

  /**
   * Answers what was read from (or, for a keepalive, renewed in) the table without a log entry.
   * The table may hold entries not yet committed (a close, or an open, that a failover could
   * still lose): the answer waits, in order with theirs, until the last of them commits, as a
   * logged answer would.
   */
  protected answerUnlogged(clientRef: number, output: Output): void {
    if (this.commitIndex >= this.lastIndex) return this.answer(clientRef, toAnswer(output));
    this.pending.push({ index: this.lastIndex, clientRef, output, appendedAtMs: this.nowMs });
  }

  protected holdForCover(clientRef: number, command: Command, requestId: string | undefined): void {
    if (!this.record.hold({ clientRef, command, requestId }, this.machine!.table, this.nowMs)) this.answer(clientRef, this.uncovered());
    this.maybeRenew();
  }

  protected append(command: Command, requestId: string | undefined, clientRef?: number): void {
    const machine = this.machine;
    assert(machine !== null && this.role === "primary", "only a primary appends");
    const entry: LogEntry = { index: this.lastIndex + 1, epoch: this.epoch, atMs: this.timeBaseMs(), command };
    if (requestId !== undefined) entry.requestId = requestId;
    this.disk.entry(machine, this.epoch, this.primary, entry, this.out.persist);
    const output = machine.apply(entry);
    this.lastIndex = entry.index;
    this.record.appended(entry.index, machine.table);
    this.pending.push({ index: entry.index, clientRef, output, appendedAtMs: this.nowMs });
    this.feed.appended(entry);
    this.feed.pump();
    this.advanceCommit();
  }

  protected advanceCommit(): void {
    const acked = this.requireBackup ? Math.min(this.feed.backup.ackedIndex, this.lastIndex) : this.lastIndex;
    // Two more gates: the arbiter's record covers the answer, and our own disk has the entry.
    const commitTo = this.disk.commitLimit(this.record.commitLimit(acked));
    if (commitTo <= this.commitIndex) return;
    this.commitIndex = commitTo;
    const pending = this.pending;
    const effects = this.out.effects;
    let done = 0;
    while (done < pending.length && pending[done].index <= commitTo) {
      const p = pending[done];
      // One push per effect, not a spread (an argument list per entry), and the pending list
      // shortened in place, not copied: this runs for every commit (docs/bench.md, "Ninth pass").
      for (const effect of p.output.effects) effects.push(effect);
      if (p.clientRef !== undefined) this.answer(p.clientRef, toAnswer(p.output));
      done += 1;
    }
    if (done === pending.length) pending.length = 0;
    else if (done > 0) pending.splice(0, done);
  }

  protected tickPrimary(): void {
    const machine = this.machine!;
    for (const held of this.record.takeExpired(this.nowMs)) this.answer(held.clientRef, this.uncovered());
    if (this.serving()) this.expireLapsed();
    if (this.serving() && machine.table.isDue(this.timeBaseMs())) this.append({ type: "tick" }, undefined);
    if (this.options.arbiterId === null) return;
    this.feed.checkHealth();
    this.feed.pump();
    this.maybeRenew();
  }

  protected onAppendAnswer(request: InFlight, answer: PeerMessage): void {
    if (this.role !== "primary") return;
    if (answer.epoch > this.epoch) return this.stepDown(answer.epoch, answer.type === "nack" ? answer.primary : null, "peer has a newer epoch");
    if (answer.type !== "appendAck" || answer.epoch !== this.epoch) return;
    // The backup's promise is a lease whatever the state of its copy: it cannot take over before it ends.
    if (answer.promiseMs > 0) this.lease.backupPromised(request.sentAtMs, answer.promiseMs);
    if (this.feed.acked(request.syncGen, request.lastIndex, answer)) this.advanceCommit();
    // Group commit: what was appended while the pipeline was full goes out now, in one append,
    // not at the next tick (up to tickMs later; with one append in flight that was every batch).
    this.feed.pump();
  }

  protected onSyncRequest(message: Extract<PeerMessage, { type: "syncRequest" }>): PeerMessage {
    return this.refuseSync(message) ?? this.feed.startCopy(this.machine!, message.incarnation);
  }

  protected onSyncNext(message: Extract<PeerMessage, { type: "syncNext" }>): PeerMessage {
    const refusal = this.refuseSync(message);
    if (refusal) return refusal;
    return this.feed.nextChunk(message) ?? this.nack(`no copy ${message.syncGen} at ${message.position}`);
  }

  private refuseSync(message: { epoch: number }): PeerMessage | null {
    if (this.role !== "primary" || !this.machine) return this.nack("not primary");
    if (message.epoch <= this.epoch) return null;
    this.stepDown(message.epoch, null, "sync request from a newer epoch");
    return this.nack("stepped down");
  }
}
