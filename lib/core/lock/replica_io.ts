/**
 * What goes into and out of a LockReplica (lock_replica.ts): the peer protocol, the driver's
 * view of the outputs, the settings and options it takes, and what `status` reports.
 */
import type { ArbiterRequest } from "../arbiter/arbiter.ts";
import type { PrimaryRecordView } from "./arbiter_record.ts";
import { assert } from "../assert.ts";
import type { LogEntry } from "./lock_machine.ts";
import type { PersistRecord, RestoredCopy } from "./durable_copy.ts";
import type { Effect, LockTable, LockTableLimits, Output } from "./lock_table.ts";
import type { CopyChunk, CopyStart } from "./table_copy.ts";
import type { BackupMode } from "./resync.ts";
import type { Settings } from "../../settings.ts";

export type Role = "joining" | "primary" | "backup";
export type { BackupMode };

export type PeerMessage =
  /**
   * Entries (or none: a heartbeat). `syncGen` names the primary's current copy for this backup:
   * a backup whose copy is of an older generation throws its copy away and syncs again.
   */
  | { type: "append"; from: string; epoch: number; syncGen: number; entries: LogEntry[] }
  /**
   * `promiseMs`: the backup will not take over for this long from its receipt of the append (0:
   * no promise). The primary counts it from the append's send time: a lease on serving.
   */
  | { type: "appendAck"; from: string; epoch: number; ok: boolean; appliedIndex: number; promiseMs: number }
  /**
   * A backup without a current copy asks for one; the answer starts a new stream (table_copy.ts).
   * `incarnation`: the asking process's id, which the primary's in-sync report names to the arbiter.
   */
  | { type: "syncRequest"; from: string; epoch: number; incarnation?: string }
  | { type: "syncStart"; from: string; epoch: number; syncGen: number; start: CopyStart }
  /** The backup pulls the copy of `syncGen` one chunk at a time, from `position` on. */
  | { type: "syncNext"; from: string; epoch: number; syncGen: number; position: number }
  | { type: "syncChunk"; from: string; epoch: number; syncGen: number; chunk: CopyChunk }
  /** Refusal from a server in another epoch or role; carries what it knows. */
  | { type: "nack"; from: string; epoch: number; primary: string | null; reason: string };

export type Outbound =
  | { kind: "peer"; ref: number; to: string; message: PeerMessage }
  | { kind: "arbiter"; ref: number; to: string; request: ArbiterRequest };

export type ClientAnswer =
  | { ok: true; result: Extract<Output["result"], { ok: true }> }
  | { ok: false; code: "not_primary"; message: string; epoch: number; primary: string | null }
  | { ok: false; code: Exclude<import("../../wire/errors.ts").ErrorCode, "not_primary">; message: string };

/**
 * What a step hands the driver. Read-only: the core never writes a list it handed out, and a
 * driver must not write one either (an unfilled list is a shared frozen empty one: lock_replica.ts
 * `ready`).
 */
export interface Ready {
  readonly send: readonly Outbound[];
  readonly answers: ReadonlyArray<{ clientRef: number; answer: ClientAnswer }>;
  /** Effects of committed entries, in log order (grants to wake long-polls, expiries to log). */
  readonly effects: readonly Effect[];
  /** Role changes and other facts worth a log line. */
  readonly events: ReadonlyArray<{ event: string; fields: Record<string, unknown> }>;
  /** With a durable log: what to write, in order (durable_copy.ts); the driver answers with `durable`. */
  readonly persist: readonly PersistRecord[];
}

/** The lists a step fills (replica_state.ts `out`), before `ready` hands them out. */
export type ReadyLists = { -readonly [K in keyof Ready]: Array<Ready[K][number]> };

export type ReplicaSettings = Pick<
  Settings,
  | "primaryLeaseMs"
  | "backupLeaseMs"
  | "leaseRenewMs"
  | "leaseSafetyMs"
  | "primarySilenceMs"
  | "claimRetryMs"
  | "heartbeatMs"
  | "replicationTimeoutMs"
  | "peerTimeoutMs"
  | "replicationBatchMax"
  | "replicationPipelineMax"
  | "replicationLogMax"
  | "answeredMax"
  | "tokenCeilingStep"
  | "sessionTtlMs"
  | "syncChunkItemsMax"
  | "syncChunkBytesMax"
  | "syncProgressTimeoutMs"
  | "answeredBytesMax"
> & LockTableLimits;

export interface ReplicaOptions {
  nodeId: string;
  /** The other lock server, if the cluster has one. */
  peerId: string | null;
  /** The arbiter; without one the server is a standalone primary (no failover). */
  arbiterId: string | null;
  settings: ReplicaSettings;
  /**
   * A fresh, empty table for `epoch`, its tokens above `tokenFloor`. Its session ids must differ
   * from those of every earlier table of this process (an old client's keepalive must not find
   * its id again): the driver's prefix plus the epoch.
   */
  newTable: (fresh: { epoch: number; tokenFloor: number }) => LockTable;
  /** The driver's floor for a fresh table's tokens (above the wall clock in µs). */
  tokenFloor: number;
  /**
   * This process's id, new at every start (the driver's session-id prefix is one). With a durable
   * log, a restored copy is reported under the id stored with it (DurableCopy.reportedIncarnation).
   */
  incarnation?: string;
  /** Keep a durable log (durable_copy.ts); `restored`: the copy it held at start. */
  durable?: { restored: RestoredCopy | null };
}

export interface ReplicaStatus {
  role: Role;
  epoch: number;
  primary: string | null;
  serving: boolean;
  /** Of the lease: the later of the two supports below, less the safety margin. */
  leaseRemainingMs: number;
  /** Who supports the primary's lease now, and for how long more (0: not). */
  leaseSupport: { arbiterRemainingMs: number; backupRemainingMs: number } | null;
  /** Our promise (as backup) not to take over runs this long more. */
  promisedRemainingMs: number;
  backup: { id: string; mode: BackupMode; ackedIndex: number; lagEntries: number; arbiterRecordedInSync: boolean } | null;
  lastIndex: number;
  commitIndex: number;
  hasState: boolean;
  lastHeardFromPrimaryMs: number | null;
  /** A primary's: what a replacement arbiter's record must hold (`mutexd arbiter recover`). */
  arbiterRecord: PrimaryRecordView | null;
}

export function toAnswer(output: Output): ClientAnswer {
  const result = output.result;
  if (result.ok) return { ok: true, result };
  assert(result.error.code !== "not_primary", "the table never answers not_primary");
  return { ok: false, code: result.error.code as Exclude<typeof result.error.code, "not_primary">, message: result.error.message };
}

export function emptyReady(): ReadyLists {
  return { send: [], answers: [], effects: [], events: [], persist: [] };
}
