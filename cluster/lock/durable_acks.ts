/**
 * The backup's acks with a durable log (cluster `durable = true`): an append's ack waits until
 * the disk has every entry it acknowledges, since the primary counts it as a copy that survives a
 * crash of both servers. The lock service (service.ts) tells this what it writes and what is on
 * disk; this keeps the held acks and answers them.
 */
import type { PeerMessage } from "../../lib/core/lock/lock_replica.ts";
import type { PersistRecord } from "../../lib/core/lock/durable_copy.ts";

/**
 * Where the durable log's records go (durable_log.ts in the daemon, a simulated disk in the
 * simulator): written in order, reported back in order through the `start` callback once on
 * disk. A failure is the sink's to handle, by stopping the process.
 */
export interface DurableSink {
  start(onDurable: (copyGen: number, index: number) => void): void;
  write(records: readonly PersistRecord[]): void;
}

type AppendAck = Extract<PeerMessage, { type: "appendAck" }>;

/** An append's ack held until the backup's disk has what it acknowledges. */
interface HeldAck {
  copyGen: number;
  answer: AppendAck;
  done: (answer: PeerMessage) => void;
}

export class DurableAcks {
  /** The copy generation last written, and how far it is on disk (-1: nothing of it yet). */
  private copyGen = 0;
  private durableIndex: number;
  /** At most `heldMax`. */
  private held: HeldAck[] = [];

  /**
   * `restoredIndex`: how far the copy read at start is on disk. `heldMax`: acks held at most
   * (a generous multiple of the primary's pipeline); beyond, an ack claims nothing.
   */
  constructor(restoredIndex: number, private readonly heldMax: number) {
    this.durableIndex = restoredIndex;
  }

  /** Records about to be written: a new base starts a new copy, of which nothing is on disk yet. */
  writing(records: readonly PersistRecord[]): void {
    for (const record of records) {
      if (record.type === "base") {
        this.copyGen = record.copyGen;
        this.durableIndex = -1;
      }
    }
  }

  /** The answer to a peer message, given now unless it is an ack the disk does not have yet. */
  answer(answer: PeerMessage, done: (answer: PeerMessage) => void): void {
    if (answer.type !== "appendAck" || answer.appliedIndex <= this.durableIndex) return done(answer);
    if (this.held.length >= this.heldMax) return done(unclaimed(answer));
    this.held.push({ copyGen: this.copyGen, answer, done });
  }

  /** The durable log has the copy of `copyGen` up to `index`. */
  onDisk(copyGen: number, index: number): void {
    if (copyGen === this.copyGen) this.durableIndex = Math.max(this.durableIndex, index);
  }

  /** Answers the held acks the disk now has, and those about a replaced copy; keeps the rest. */
  release(): void {
    const held = this.held;
    this.held = [];
    for (const h of held) {
      // An ack about a copy since replaced claims nothing: that copy is gone.
      if (h.copyGen !== this.copyGen) h.done(unclaimed(h.answer));
      else if (h.answer.appliedIndex <= this.durableIndex) h.done(h.answer);
      else this.held.push(h);
    }
  }

  /**
   * Answers every held ack with a claim of nothing (its promise needs no disk), so no peer
   * request hangs on a stopped server.
   */
  stop(): void {
    for (const held of this.held.splice(0)) held.done(unclaimed(held.answer));
  }
}

/** An ack that acknowledges nothing (but still carries the promise, which needs no disk). */
function unclaimed(answer: AppendAck): PeerMessage {
  return { ...answer, ok: false, appliedIndex: 0 };
}
