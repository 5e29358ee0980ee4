/**
 * What the primary needs the arbiter's record to cover before it commits, and the grace of a
 * fresh table (docs/failover.md, "Both servers restarted"). Pure; LockReplica wires it in.
 *
 * Both lock servers keep their table in memory only. When both lose it, the next table starts
 * empty, and two things of the lost table must not be contradicted:
 * - Its fencing tokens: no table hands out a token above the record's `tokenCeiling`; a primary
 *   asks (in its renewals) for the ceiling to be raised in steps of `tokenCeilingStep` ahead of
 *   the tokens it hands out, and holds back commits (answers and effects) whose table state has
 *   a higher token until the record covers it. A fresh table starts at the ceiling.
 * - Its sessions, which clients still believe in until their TTL ends on their own clock: the
 *   record's `ttlMaxMs` is the longest a grant may outlive its holder's last acknowledged word
 *   (session TTL plus lock-delay), raised before an answer that grants a longer one; a fresh
 *   table after an earlier one grants nothing for that long (`freshGraceMs`).
 * The gate works like the backup's acks (advanceCommit): an entry is applied at once and
 * answered once covered. Needs only grow with the index (token and TTL are running maxima), so
 * the first uncovered entry bounds the commit.
 */
import type { ArbiterReply } from "../arbiter/arbiter.ts";
import type { Settings } from "../../settings.ts";
import type { Command, LockTable } from "./lock_table.ts";

type Lease = Extract<ArbiterReply, { type: "lease" }>;

export type RecordSettings = Pick<Settings, "tokenCeilingStep" | "sessionTtlMs" | "sessionTtlMaxMs" | "lockDelayMaxMs" | "primaryLeaseMs" | "leaseSafetyMs">;

/** What a renewal asks the arbiter to raise its record to (absent: nothing to raise). */
export interface RecordAsks {
  ttlMaxMs?: number;
  tokenCeiling?: number;
}

/** What a primary's status shows for `mutexd arbiter recover` (ReplicaStatus.arbiterRecord). */
export interface PrimaryRecordView {
  tokenCeiling: number | null;
  ttlMaxMs: number | null;
  /** The last sync report's sequence number sent; a recovered record starts there. */
  reportSeq: number;
  /**
   * The backup holds every committed change (its tracker is "inSync", the primary's in-sync
   * report). Not merely "commits wait for its acks": that starts at the first ack of a new copy,
   * before it acked what was committed without it.
   */
  backupInSync: boolean;
  /** The backup process that copy went to (null: not known). */
  backupIncarnation: string | null;
}

interface Need {
  index: number;
  token: number;
  ttlMs: number;
}

export class RecordCover {
  /** What the record covers, as the last lease answer said (Infinity: an arbiter that does not gate). */
  private coveredToken = Number.POSITIVE_INFINITY;
  private coveredTtlMs = Number.POSITIVE_INFINITY;
  /** Running maxima over every entry appended in this term. */
  private neededToken = 0;
  private neededTtlMs = 0;
  /** Entries appended while their needs were not covered, oldest first (bounded by the pending entries). */
  private uncovered: Need[] = [];

  constructor(private readonly settings: RecordSettings) {}

  /** A new term as primary: what the lease granting it says the record covers; `table` is its table. */
  start(lease: Lease | null, table: LockTable): void {
    this.uncovered = [];
    this.coveredToken = Number.POSITIVE_INFINITY;
    this.coveredTtlMs = Number.POSITIVE_INFINITY;
    this.neededToken = table.highestToken;
    // Asked for up front, so sessions of the default TTL (most) never wait for a raise.
    this.neededTtlMs = this.settings.sessionTtlMs;
    if (lease) this.covered(lease);
  }

  /** A lease answer: the record covers at least this now. */
  covered(lease: Lease): void {
    // An arbiter from before these fields gates nothing (undefined); an unknown TTL (null) is
    // the longest the settings allow, which covers every session.
    if (lease.tokenCeiling !== undefined) {
      const ceiling = lease.tokenCeiling ?? 0;
      this.coveredToken = this.coveredToken === Number.POSITIVE_INFINITY ? ceiling : Math.max(this.coveredToken, ceiling);
    }
    if (lease.ttlMaxMs !== undefined) {
      const ttlMs = lease.ttlMaxMs ?? Number.POSITIVE_INFINITY;
      this.coveredTtlMs = this.coveredTtlMs === Number.POSITIVE_INFINITY ? ttlMs : Math.max(this.coveredTtlMs, ttlMs);
    }
    while (this.uncovered.length > 0 && this.isCovered(this.uncovered[0])) this.uncovered.shift();
  }

  /**
   * An entry was appended (and applied to `table`; `ok`: it succeeded): note what its answer
   * needs the record to cover. A refused command grants nothing, so its TTL counts for nothing.
   */
  appended(index: number, command: Command, ok: boolean, table: LockTable): void {
    this.neededToken = Math.max(this.neededToken, table.highestToken);
    if (ok) this.neededTtlMs = Math.max(this.neededTtlMs, ttlNeededMs(command, table));
    const need = { index, token: this.neededToken, ttlMs: this.neededTtlMs };
    if (this.uncovered.length > 0 || !this.isCovered(need)) this.uncovered.push(need);
  }

  /** The highest index up to `limit` whose answer the record covers. */
  commitLimit(limit: number): number {
    const first = this.uncovered[0];
    return first === undefined ? limit : Math.min(limit, first.index - 1);
  }

  /** Entries wait for a raise: renew now rather than at the next due time. */
  get waiting(): boolean {
    return this.uncovered.length > 0;
  }

  /** What the next renewal asks for: the ceiling a step ahead of the tokens, the TTL once exceeded. */
  asks(): RecordAsks {
    const asks: RecordAsks = {};
    const step = this.settings.tokenCeilingStep;
    // Asked half a step early, so a busy primary rarely waits for a raise.
    if (this.coveredToken !== Number.POSITIVE_INFINITY && this.neededToken + step / 2 > this.coveredToken) {
      asks.tokenCeiling = Math.max(this.coveredToken, this.neededToken) + step;
    }
    if (this.coveredTtlMs !== Number.POSITIVE_INFINITY && this.neededTtlMs > this.coveredTtlMs) asks.ttlMaxMs = this.neededTtlMs;
    return asks;
  }

  /**
   * What a replacement arbiter's record must hold for this table (`mutexd arbiter recover`): at
   * least what the lost record covered and what the table needs. null: unknown.
   */
  status(): { tokenCeiling: number | null; ttlMaxMs: number | null } {
    const atLeast = (covered: number, needed: number) => (covered === Number.POSITIVE_INFINITY ? null : Math.max(covered, needed));
    return { tokenCeiling: atLeast(this.coveredToken, this.neededToken), ttlMaxMs: atLeast(this.coveredTtlMs, this.neededTtlMs) };
  }

  private isCovered(need: Need): boolean {
    return need.token <= this.coveredToken && need.ttlMs <= this.coveredTtlMs;
  }
}

/**
 * How long a fresh table grants nothing, counted from the send time of the claim that earned it
 * (after every answer of the lost table): the longest a grant of the lost table may outlive its
 * holder's last acknowledged word, stretched for clock drift by L / (L − δ) (primaryLeaseMs,
 * leaseSafetyMs; as Lemma 1, it covers rate errors up to 11 % with the defaults). 0 at a
 * cluster's first epoch, or from an arbiter that does not say.
 */
export function freshGraceMs(lease: Lease, settings: RecordSettings): number {
  if (!lease.fresh || lease.tablesBefore !== true) return 0;
  const ttlMs = lease.ttlMaxMs ?? settings.sessionTtlMaxMs + settings.lockDelayMaxMs;
  const leaseMs = settings.primaryLeaseMs;
  return Math.ceil((ttlMs * leaseMs) / (leaseMs - settings.leaseSafetyMs));
}

/**
 * The token floor of a fresh table (undefined: the driver's own, above the wall clock in µs).
 * After a lost table: the record's ceiling, which is above every token handed out. A cluster's
 * first table has no earlier tokens the record knows of; the driver's floor keeps its tokens
 * above those of a cluster whose every record was lost (while the clock does not step back).
 */
export function freshTokenFloor(lease: Lease): number | undefined {
  return lease.tablesBefore === true ? lease.tokenCeiling ?? undefined : undefined;
}

/** How long an answer to `command` lets a client believe in a session or grant after its word. */
function ttlNeededMs(command: Command, table: LockTable): number {
  switch (command.type) {
    case "openSession":
      return command.ttlMs;
    case "keepAlive":
      return table.sessions.get(command.session)?.ttlMs ?? 0;
    case "enter":
      return (table.sessions.get(command.session)?.ttlMs ?? 0) + command.lockDelayMs;
    default:
      return 0;
  }
}
