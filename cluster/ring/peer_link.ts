/**
 * The link from a ring node to its successor: a FIFO of token hand-offs and write batches, one
 * request in flight, each resent until the successor acknowledges it. The order matters: writes
 * sent before the token reach the successor before it. An unreachable successor is retried for
 * ever (with backoff), and the receiver drops copies. Ring repair watches the link from outside:
 * the driver (service.ts) counts deliveries without answer and tells the repair core after
 * ringRepairRetries in a row; rewiring the link to another successor is the view change's job.
 *
 * Its timers and its transport are ports (the simulator runs this class as it is): `deliver`'s
 * answers are continued with `.then` only (the port rule of cluster/timers.ts).
 */
import type { RingResult } from "../../lib/core/ring/ring_node.ts";
import type { RingEntry, RingToken } from "../../lib/core/ring/ring_types.ts";
import { backoffMs, type TimerHandle, type Timers } from "../timers.ts";

export type LinkItem =
  | { kind: "token"; token: RingToken }
  | { kind: "writes"; epoch: number; entries: RingEntry[] };

/** Delivers one item and returns the successor's answer; rejects on network failure. */
export type Deliver = (item: LinkItem) => PromiseLike<RingResult>;

export interface PeerLinkOptions {
  deliver: Deliver;
  timers: Timers;
  retryMs: number;
  retryMaxMs: number;
  batchWritesMax: number;
  onTokenDelivered(token: RingToken): void;
  onStale(epoch: number, what: "token" | "writes"): void;
  onTrouble(what: string, detail: string, attempt: number): void;
}

export class PeerLink {
  private readonly queue: LinkItem[] = [];
  private busy = false;
  private closed = false;
  private attempt = 0;
  private retryTimer: TimerHandle | undefined;
  /** Counts deliveries started; an answer to an earlier one than the last is ignored (see dropBefore). */
  private flight = 0;

  constructor(private readonly options: PeerLinkOptions) {}

  /** Queues an item behind everything queued before; consecutive write batches merge. */
  push(item: LinkItem): void {
    const last = this.queue[this.queue.length - 1];
    const mergeable = last?.kind === "writes" && item.kind === "writes" && last.epoch === item.epoch &&
      (this.queue.length > 1 || !this.busy) &&
      last.entries.length + item.entries.length <= this.options.batchWritesMax;
    if (mergeable) last.entries.push(...item.entries);
    else this.queue.push(item.kind === "writes" ? { ...item, entries: [...item.entries] } : item);
    this.pump();
  }

  /**
   * The token came back at `hop` of `epoch`: hand-offs queued before it were delivered (their
   * acknowledgement was lost), so stop resending them. One in flight is forgotten too: its
   * answer, when it comes, moves nothing.
   */
  dropTokensBefore(epoch: number, hop: number): void {
    for (let i = this.queue.length - 1; i >= 0; i--) {
      const queued = this.queue[i];
      if (queued.kind === "token" && isBefore(queued.token, epoch, hop)) this.queue.splice(i, 1);
    }
  }

  /** A new view was installed: every item of an older epoch is void (one in flight is forgotten too). */
  dropBefore(epoch: number): void {
    const head = this.queue[0];
    for (let i = this.queue.length - 1; i >= 0; i--) {
      const queued = this.queue[i];
      if ((queued.kind === "token" ? queued.token.epoch : queued.epoch) < epoch) this.queue.splice(i, 1);
    }
    if (head === undefined || this.queue[0] === head) return;
    // The head was waiting for an answer or a retry (often from the node the view left out):
    // forget it now rather than after its timeout, so the new epoch's first item goes at once.
    this.flight += 1;
    this.options.timers.clearTimeout(this.retryTimer);
    this.attempt = 0;
    this.busy = false;
    this.pump();
  }

  /** Items waiting or in flight (for status). */
  get length(): number {
    return this.queue.length;
  }

  close(): void {
    this.closed = true;
    this.options.timers.clearTimeout(this.retryTimer);
  }

  private pump(): void {
    if (this.busy || this.closed || this.queue.length === 0) return;
    this.busy = true;
    const item = this.queue[0];
    const flight = ++this.flight;
    this.options.deliver(item).then(
      (result) => flight === this.flight && this.onAnswer(item, result),
      (error) => flight === this.flight && this.retry(item, (error as Error).message),
    );
  }

  /** Whether `item` was dropped while in flight (dropTokensBefore): then nothing to shift or resend. */
  private droppedInFlight(item: LinkItem): boolean {
    if (this.queue[0] === item) return false;
    this.attempt = 0;
    this.busy = false;
    this.pump();
    return true;
  }

  private onAnswer(item: LinkItem, result: RingResult): void {
    if (this.closed || this.droppedInFlight(item)) return;
    if (result.ok) {
      this.queue.shift();
      this.attempt = 0;
      if (item.kind === "token") this.options.onTokenDelivered(item.token);
      this.busy = false;
      this.pump();
      return;
    }
    if (result.type === "stale") {
      // The successor moved to a newer epoch: everything older queued here is void.
      const epoch = result.epoch;
      for (let i = this.queue.length - 1; i >= 0; i--) {
        const queued = this.queue[i];
        const queuedEpoch = queued.kind === "token" ? queued.token.epoch : queued.epoch;
        if (queuedEpoch < epoch) this.queue.splice(i, 1);
      }
      this.attempt = 0;
      this.busy = false;
      this.options.onStale(epoch, item.kind === "token" ? "token" : "writes");
      this.pump();
      return;
    }
    if (result.type === "gap" && item.kind === "writes") {
      // The successor took the writes up to ackedTo and is fetching the rest; resend the others.
      item.entries = item.entries.filter((entry) => entry.wseq > result.ackedTo);
      if (item.entries.length === 0) {
        this.queue.shift();
        this.busy = false;
        this.pump();
        return;
      }
    }
    this.retry(item, JSON.stringify(result));
  }

  private retry(item: LinkItem, detail: string): void {
    if (this.closed || this.droppedInFlight(item)) return;
    this.attempt += 1;
    this.options.onTrouble(item.kind, detail, this.attempt);
    const delay = backoffMs(this.attempt, this.options.retryMs, this.options.retryMaxMs);
    this.retryTimer = this.options.timers.setTimeout(() => {
      this.busy = false;
      this.pump();
    }, delay);
  }
}

/** Whether a hand-off of `token` was sent before the token came back at `hop` of `epoch`. */
export function isBefore(token: RingToken, epoch: number, hop: number): boolean {
  return token.epoch < epoch || (token.epoch === epoch && token.hop < hop);
}
