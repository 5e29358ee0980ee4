/**
 * The ring's wire types: the token, a replicated write, and what neighbours exchange. Plain data
 * (JSON), so the driver can send them as they are.
 */

/** A change to the ring's replicated key/value map. */
export type RingOp =
  | { type: "put"; key: string; value: string }
  | { type: "delete"; key: string }
  /**
   * The regenerator's marker (Raft's no-op): written right after the re-sent range, stamped with
   * the new epoch, it changes no key. Once it commits, every node holding the committed prefix
   * ends its log in that epoch, so a node with an older never-committed write cannot outrank it
   * as the next regenerator (docs/ring-view.md, "No committed write is lost").
   */
  | { type: "noop"; key: "" };

/**
 * One write in the ring's single global order. `wseq` is its place (1, 2, 3, …); `epoch` is the
 * epoch it was written in, kept when a new view's regenerator re-sends it. When two versions of
 * one `wseq` meet, the one the current epoch's messages carry replaces the other, whatever the
 * stamps (Raft's rule; only an uncommitted write is ever replaced: docs/ring-view.md).
 */
export interface RingEntry {
  epoch: number;
  wseq: number;
  /** The node whose critical section wrote it (kept when the write is re-sent in a new epoch). */
  author: string;
  /**
   * The node the write travels around the ring back to: its author, or the node that re-sent it
   * when it regenerated the token. Its return there is the commit point.
   */
  origin: string;
  op: RingOp;
}

/**
 * The token. Exactly one per epoch: the sender gives it up when it sends. `hop` grows at every
 * hand-off, so a receiver drops a resent copy; a token of an older epoch is refused.
 */
export interface RingToken {
  epoch: number;
  /** Grows by one at every hand-off within the epoch. */
  hop: number;
  /** The highest write sequence assigned so far (the next write gets wseq + 1). */
  wseq: number;
  /** The commit watermark: every write up to here went around the whole ring. */
  commit: number;
  /** The fencing counter: the highest fencing token granted so far (across epochs). */
  fence: number;
  /** Hand-offs since the last grant: after a whole idle rotation the token is paced. */
  idleHops: number;
}

/** A copy of the committed map at `wseq`, for restarts and for neighbours far behind. */
export interface RingSnapshot {
  wseq: number;
  /** The epoch stamp of the write at `wseq` (absent in snapshots of older versions: 0). */
  epoch?: number;
  kv: Array<[string, string]>;
}

/** A neighbour's answer to "send me your writes from `from` on". */
export interface CatchUpReply {
  /** The answering node's commit watermark. */
  commit: number;
  /** Set when `from` lies before the answering node's log: install it, then apply `entries`. */
  snapshot?: RingSnapshot;
  entries: RingEntry[];
}

/** Durable per-node state besides the log: only grows. */
export interface RingHardState {
  /** The epoch of the view installed last (written at each install; the view change's own state is ring-view.json). */
  epoch: number;
  /** The highest fencing token this node granted or saw. */
  fenceMax: number;
  /**
   * Written as 0 at each install since the view change: a restarted node takes nothing of the
   * epoch it ran in (it rejoins in a newer one), so the hop no longer needs the disk. Kept for the
   * file format; files written before this field existed read as 0.
   */
  lastHop: number;
}

/** The log as stored, replayed in order at start: entries, truncations, commit marks. */
export type RingLogRecord =
  | { type: "entry"; entry: RingEntry }
  | { type: "truncate"; from: number }
  | { type: "commit"; wseq: number };
