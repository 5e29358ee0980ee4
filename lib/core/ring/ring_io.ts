/**
 * What goes in and out of a ring node (lib/core/ring/ring_node.ts): its inputs, the output of a
 * step (the answer, what to persist first, the effects), what it reads of the settings and of
 * its disk at start, and its status. Plain data, shared by the pure cores and the drivers (and
 * `clientError`, which builds a client's error reply).
 */
import type { CatchUpReply, RingEntry, RingHardState, RingLogRecord, RingOp, RingSnapshot, RingToken } from "./ring_types.ts";
import type { View } from "./view_wire.ts";
import type { ApiError, ErrorCode } from "../../wire/errors.ts";
import type { Settings } from "../../settings.ts";

export type RingLimits = Pick<
  Settings,
  | "ringLeaseMs"
  | "ringLeaseMaxMs"
  | "tokenIdlePaceMs"
  | "tokenHoldMs"
  | "tokenHopTimeoutMs"
  | "tokenLossMs"
  | "ringPollGraceMs"
  | "ringWaitersMax"
  | "ringSectionWritesMax"
  | "ringKeysMax"
  | "ringKeyLengthMax"
  | "ringValueBytesMax"
  | "ringBatchWritesMax"
  | "ringGapBufferMax"
  | "ringSnapshotEveryWrites"
  | "ringLogRetainMax"
  | "waitMaxMs"
  | "tokenLeaseMs"
>;

export type RingInput =
  | { type: "tick" }
  /** The token, handed over by the predecessor. */
  | { type: "token"; from: string; token: RingToken }
  /** Writes travelling the ring, from the predecessor; `epoch` is the sender's. */
  | { type: "writes"; from: string; epoch: number; entries: RingEntry[] }
  /** The successor acknowledged the token hand-off. */
  | { type: "tokenDelivered"; epoch: number; hop: number }
  /** The successor refused what we sent because it knows a newer epoch. */
  | { type: "peerStale"; epoch: number; what: "token" | "writes" }
  /** The predecessor answered a fetch. */
  | { type: "caughtUp"; reply: CatchUpReply }
  /** Some node has a waiter: an idle token should hurry. */
  | { type: "wake" }
  /**
   * A majority of the ring renewed this node's token lease of `epoch`: it may grant until
   * validUntilMs sections up to `sectionMaxMs` (the bound its renewal stated; absent: ringLeaseMaxMs).
   */
  | { type: "lease"; epoch: number; validUntilMs: number; sectionMaxMs?: number }
  /** The view change: this node promised `epoch` (refuse older tokens and writes, stop granting). */
  | { type: "promised"; epoch: number }
  /** The view change: `view` is installed here; the regenerator creates its token. */
  | { type: "install"; view: View; regenerate: boolean; grantNotBeforeMs: number }
  | { type: "enter"; reqId: number; ticket?: string; waitMs: number; leaseMs: number }
  /** The driver's long-poll for `reqId` ran out: answer "waiting" and keep the place. */
  | { type: "detach"; reqId: number }
  | { type: "leave"; reqId: number; fence?: number; ticket?: string }
  | { type: "write"; reqId: number; fence: number; op: RingOp };

export type ClientReply =
  | { ok: true; type: "granted"; fence: number; leaseMs: number; epoch: number; ticket: string }
  | { ok: true; type: "waiting"; ticket: string; position: number }
  | { ok: true; type: "notGranted"; reason: "taken" | "deadline" | "withdrawn" }
  | { ok: true; type: "left"; wasHolder: boolean }
  | { ok: true; type: "written"; wseq: number }
  | { ok: false; error: ApiError };

/** The direct answer to an input (peer inputs are answered with it; client inputs by `reply`). */
export type RingResult =
  | { ok: true; type: "done" }
  | { ok: true; type: "token"; duplicate: boolean }
  | { ok: true; type: "writes"; ackedTo: number }
  | { ok: false; type: "gap"; ackedTo: number; lastApplied: number }
  | { ok: false; type: "stale"; epoch: number }
  /** The epoch's view is not installed here yet: the sender retries (the view is on its way). */
  | { ok: false; type: "notYet"; epoch: number }
  | { ok: false; type: "error"; error: ApiError };

/** Stored before anything else of the same output happens. */
export type PersistOp =
  | { type: "hardState"; state: RingHardState }
  | { type: "log"; record: RingLogRecord }
  /** Store the snapshot, then keep only `tail` (the entries after it) in the log. */
  | { type: "snapshot"; snapshot: RingSnapshot; tail: RingEntry[] };

export type SectionEndReason = "left" | "lease" | "abandoned" | "epoch";

export type RingEffect =
  /** Hand the token to the successor; resend until acknowledged (feed back tokenDelivered). */
  | { type: "sendToken"; to: string; token: RingToken }
  /**
   * The token came back at `hop` of `epoch`: every hand-off this node sent before it was
   * delivered, so drop any still queued or being resent (a token of an older epoch, or of this
   * epoch with a lower hop). Only an optimisation and a second line of defence: the successor
   * drops such copies anyway (its lastHop is stored).
   */
  | { type: "tokenReturned"; epoch: number; hop: number }
  /** Send writes to the successor, in order after everything sent before; resend until acked. */
  | { type: "sendWrites"; to: string; epoch: number; entries: RingEntry[] }
  /** Ask `from` for its writes from `fromWseq` on; feed the answer back as caughtUp. */
  | { type: "fetch"; from: string; fromWseq: number }
  /** Tell every other ring node that this one has a waiter (best effort). */
  | { type: "wakeAll" }
  /**
   * The holder would grant but has no valid token lease of `epoch` allowing sections of
   * `sectionMaxMs` (its waiters' longest leaseMs): renew it with a majority of the ring, stating
   * that bound, and feed the outcome back as a `lease` input. Repeated on every step while it
   * waits (the driver keeps one renewal in flight).
   */
  | { type: "wantLease"; epoch: number; sectionMaxMs: number }
  /**
   * A section of `leaseMs` was granted here under `epoch`'s token: tell the other voters (the view
   * core's `sectionGranted`), so that their token-loss probe waits for its lease to end.
   */
  | { type: "sectionGranted"; epoch: number; leaseMs: number }
  | { type: "reply"; reqId: number; reply: ClientReply }
  | { type: "sectionEnded"; fence: number; reason: SectionEndReason }
  /** Something worth a log line. */
  | { type: "event"; event: string; fields: Record<string, unknown> };

export interface RingOutput {
  result: RingResult;
  persist: PersistOp[];
  effects: RingEffect[];
}

/** What a node stored, handed to the constructor at start. */
export interface RingStored {
  hardState: RingHardState;
  snapshot?: RingSnapshot;
  records: RingLogRecord[];
}

export interface RingNodeOptions {
  id: string;
  /** The ring order (ids of the ring nodes, as listed in the cluster file). */
  ring: string[];
  /**
   * The view stored by the view change (null: none yet) and the epoch promised: this
   * incarnation takes no token or write of an epoch up to the stored view's (it rejoins).
   */
  storedView?: View | null;
  promisedEpoch?: number;
  limits: RingLimits;
  /** Prefix of enter tickets, unique per incarnation of the node. */
  ticketPrefix: string;
  stored?: RingStored;
}

/** A plain-data view for `status`. */
export interface RingStatus {
  id: string;
  ring: string[];
  /** The members of the installed view, in ring order (the file's ring before any view). */
  members: string[];
  /** The epoch of the installed view (0: none in this incarnation). */
  epoch: number;
  /** Tokens and writes of an epoch below this are refused (the view change's promise). */
  refuseBelowEpoch: number;
  successor: string;
  predecessor: string;
  fenceMax: number;
  token: "held" | "sending" | "away";
  lastHop: number;
  lastTokenAgeMs: number | null;
  lastRotationMs: number | null;
  heldToken: RingToken | null;
  section: { fence: number; heldForMs: number; leaseRemainingMs: number } | null;
  waiters: number;
  outstandingWrites: number;
  lastApplied: number;
  commit: number;
  logStart: number;
  catchingUp: boolean;
  /** Until when this node may grant in its epoch (null: no valid token lease). */
  leaseValidUntilMs: number | null;
}

/** A client's error reply (the ring node's and its waiters'). */
export function clientError(code: ErrorCode, message: string): ClientReply {
  return { ok: false, error: { code, message } };
}
