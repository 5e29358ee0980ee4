/**
 * A backup's copy of the primary's table (part of LockReplica, lock_replica.ts): the entries of
 * appends applied in order, a new copy pulled chunk by chunk when the primary no longer counts
 * ours (resync.ts, CopyPuller), and when we last heard the primary. Which primary to follow, and
 * the acks with their promises, stay with the replica.
 */
import type { LockMachine, LogEntry } from "./lock_machine.ts";
import { CopyPuller } from "./resync.ts";
import type { PeerMessage, ReplicaSettings } from "./replica_io.ts";

/** What the backup's copy needs of its replica. */
export interface CopyHost {
  nowMs(): number;
  epoch(): number;
  /** The primary we follow (null: none). */
  primary(): string | null;
  machine(): LockMachine | null;
  /** A complete new copy becomes our table. */
  install(machine: LockMachine): void;
  /** Sends a sync request to the primary; its answer comes back to `answered`. */
  sendSync(to: string, message: PeerMessage): void;
  /** An entry about to be applied to `machine` (the durable log writes it first). */
  beforeApply(machine: LockMachine, entry: LogEntry): void;
  event(event: string, fields: Record<string, unknown>): void;
}

export class BackupCopy {
  /** When we last heard the primary we follow, on this clock. */
  lastHeardMs = 0;
  /** Our copy's generation, and the new copy being loaded (the old one stays until it is complete). */
  private readonly puller: CopyPuller;

  constructor(nodeId: string, settings: ReplicaSettings, private readonly incarnation: string | undefined, private readonly host: CopyHost) {
    this.puller = new CopyPuller(nodeId, settings);
  }

  /** Whether a new copy is being loaded (the old one, if any, still serves a takeover). */
  get loading(): boolean {
    return this.puller.loading;
  }

  heard(): void {
    this.lastHeardMs = this.host.nowMs();
  }

  /** Any copy being loaded is not ours any more (a new role or primary). */
  drop(): void {
    this.puller.drop();
  }

  /** A new primary to follow: drop the copy being loaded, and no request counts as in flight. */
  restart(): void {
    this.puller.drop();
    this.puller.inFlight = false;
  }

  /** Our sync request was answered, failed or timed out. */
  syncDone(): void {
    this.puller.inFlight = false;
  }

  /**
   * An append of the primary we follow. Returns what to ack: whether it applied, and our index
   * (0: no copy).
   */
  append(message: Extract<PeerMessage, { type: "append" }>): { ok: boolean; appliedIndex: number } {
    const machine = this.host.machine();
    if (!machine) {
      this.requestSync();
      return { ok: false, appliedIndex: 0 };
    }
    if (message.syncGen > this.puller.generation) {
      this.puller.noteGeneration(message.syncGen);
      // The primary no longer counts our copy (we fell behind): ask for a new one, but keep the
      // old one until it arrives. While the arbiter still counts us in sync, this copy holds
      // every committed change, and it is what a takeover must start from.
      if (!this.puller.inFlight && !this.puller.loading) this.host.event("copyStale", { syncGen: message.syncGen, had: this.puller.generation });
      this.requestSync();
      return { ok: false, appliedIndex: machine.appliedIndex };
    }
    for (const entry of message.entries) {
      if (entry.index <= machine.appliedIndex) continue; // a resend
      if (entry.index !== machine.appliedIndex + 1) return { ok: false, appliedIndex: machine.appliedIndex };
      this.host.beforeApply(machine, entry);
      machine.apply(entry);
    }
    return { ok: true, appliedIndex: machine.appliedIndex };
  }

  /** Asks for a new copy, or for the next chunk of the one being loaded; one request at a time. */
  requestSync(): void {
    const primary = this.host.primary();
    if (this.puller.inFlight || primary === null) return;
    this.host.sendSync(primary, this.puller.request(this.host.epoch(), this.incarnation));
  }

  /** An answer to our sync request from the primary of our epoch (or an older one). */
  answered(answer: PeerMessage): void {
    // A late answer to an earlier request (two were in flight across a role change) must not
    // start loading a copy older than the one we hold (seed 21 rolled the copy back).
    if (this.host.machine() !== null && answer.type === "syncStart" && answer.syncGen <= this.puller.generation) return;
    const step = this.puller.take(answer, answer.epoch === this.host.epoch() && answer.from === this.host.primary());
    if (step === "next") return this.requestSync(); // pull the next chunk at once
    if (step === "stop") return;
    this.host.install(step);
    this.lastHeardMs = this.host.nowMs();
    this.host.event("synced", { index: step.appliedIndex, primary: this.host.primary(), syncGen: this.puller.generation });
  }
}
