/**
 * What the primary needs the arbiter's record to cover before it commits, and the grace of a
 * fresh table (docs/failover.md, rules 7-8 and Lemma 4). Pure; LockReplica wires it in.
 *
 * Both lock servers keep their table in memory only (without `durable = true`). When both lose
 * it, the next table starts empty, and two things of the lost table must not be contradicted:
 * - Its fencing tokens: no table hands out a token above the record's `tokenCeiling`; a primary
 *   asks (in its renewals) for the ceiling to be raised in steps of `tokenCeilingStep` ahead of
 *   the tokens it hands out, and holds back commits (answers and effects) whose table state has
 *   a higher token until the record covers it. A fresh table starts at the ceiling.
 * - Its sessions, which clients still believe in until their TTL ends on their own clock: the
 *   record's `ttlMaxMs` is the longest a grant may outlive its holder's last acknowledged word
 *   (session TTL plus lock-delay), raised before an answer that grants a longer one; a fresh
 *   table after an earlier one grants nothing for that long (`freshGraceMs`).
 * Two gates, because the two needs behave differently:
 * - Tokens grow with the log index, so the token gate works like the backup's acks
 *   (advanceCommit): an entry is applied at once and answered once covered; the first uncovered
 *   entry bounds the commit. The ceiling is asked half a step (`tokenCeilingStep` / 2) early, so
 *   with the arbiter down commits stop for tokens only after about that many grants.
 * - A TTL need belongs to one command (a longer session, a long lock-delay), and one such command
 *   must not hold every later one back while the arbiter is down. So it is checked before the
 *   command enters the log: an uncovered command waits outside it (`hold`, a bounded list) while
 *   the renewals ask for the raise, enters the log once covered, and is refused with a retryable
 *   answer after `peerTimeoutMs`. Every entry in the log is then TTL-covered (the cover only grows
 *   within a term; sessions and waiters in the table were covered when they were admitted).
 * Every renewal states the whole cover (not only raises): a record that went back within an
 * epoch (an older state file restored, a write the disk lost) is raised again by the next one.
 */
import type { ArbiterReply } from "../arbiter/arbiter.ts";
import type { Settings } from "../../settings.ts";
import type { Command, LockTable } from "./lock_table.ts";

type Lease = Extract<ArbiterReply, { type: "lease" }>;

export type RecordSettings = Pick<
  Settings,
  "tokenCeilingStep" | "sessionTtlMs" | "sessionTtlMinMs" | "sessionTtlMaxMs" | "lockDelayMaxMs" | "primaryLeaseMs" | "leaseSafetyMs" | "peerTimeoutMs"
>;

/**
 * At most this many commands wait outside the log for a TTL raise; more are refused at once.
 * Few ever wait: only commands asking for more TTL than the record covers, each for at most
 * peerTimeoutMs (one renewal's answer).
 */
export const HELD_MAX = 1_000;

/** A client command waiting outside the log for the record to cover its TTL. */
export interface HeldCommand {
  clientRef: number;
  command: Command;
  requestId?: string;
  /** Refused (retryable) if still held at this time, on the primary's clock. */
  untilMs: number;
}

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
}

export class RecordCover {
  /** What the record covers, as the last lease answer said (Infinity: an arbiter that does not gate). */
  private coveredToken = Number.POSITIVE_INFINITY;
  private coveredTtlMs = Number.POSITIVE_INFINITY;
  /** The highest token of the table (a running maximum over the entries appended in this term). */
  private neededToken = 0;
  /** The longest TTL asked for in this term (at least sessionTtlMs, and what held commands need). */
  private neededTtlMs = 0;
  /** Entries appended while their tokens were not covered, oldest first (bounded by the pending entries). */
  private uncovered: Need[] = [];
  /** Commands waiting outside the log for a TTL raise, oldest first (at most HELD_MAX). */
  private held: HeldCommand[] = [];

  constructor(private readonly settings: RecordSettings) {}

  /** A new term as primary: what the lease granting it says the record covers; `table` is its table. */
  start(lease: Lease | null, table: LockTable): void {
    this.uncovered = [];
    this.held = [];
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
    while (this.uncovered.length > 0 && this.uncovered[0].token <= this.coveredToken) this.uncovered.shift();
  }

  /** An entry was appended (and applied to `table`): its answer waits until the record covers the table's tokens. */
  appended(index: number, table: LockTable): void {
    this.neededToken = Math.max(this.neededToken, table.highestToken);
    const need = { index, token: this.neededToken };
    if (this.uncovered.length > 0 || need.token > this.coveredToken) this.uncovered.push(need);
  }

  /** Whether `command` may enter the log now: the record covers the TTL its answer would let a client believe in. */
  admits(command: Command, table: LockTable): boolean {
    return ttlNeededMs(command, table, this.settings) <= this.coveredTtlMs;
  }

  /**
   * Holds a command `admits` refused until the record covers it (the next renewal asks for the
   * raise); false when HELD_MAX commands wait already (refuse it now).
   */
  hold(held: Omit<HeldCommand, "untilMs">, table: LockTable, nowMs: number): boolean {
    if (this.held.length >= HELD_MAX) return false;
    this.held.push({ ...held, untilMs: nowMs + this.settings.peerTimeoutMs });
    this.neededTtlMs = Math.max(this.neededTtlMs, ttlNeededMs(held.command, table, this.settings));
    return true;
  }

  /** Held commands the record covers now, oldest first, taken off the list: they enter the log. */
  takeCovered(table: LockTable): HeldCommand[] {
    return this.take((held) => this.admits(held.command, table));
  }

  /** Held commands whose wait is over at `nowMs` (the raise did not come), taken off the list: refuse them. */
  takeExpired(nowMs: number): HeldCommand[] {
    return this.take((held) => nowMs >= held.untilMs);
  }

  /** Every held command (the primary steps down: answer them "not primary"). */
  takeAll(): HeldCommand[] {
    return this.take(() => true);
  }

  private take(which: (held: HeldCommand) => boolean): HeldCommand[] {
    const taken = this.held.filter(which);
    if (taken.length > 0) this.held = this.held.filter((held) => !which(held));
    return taken;
  }

  /** The highest index up to `limit` whose answer the record covers. */
  commitLimit(limit: number): number {
    const first = this.uncovered[0];
    return first === undefined ? limit : Math.min(limit, first.index - 1);
  }

  /** Entries or commands wait for a raise: renew now rather than at the next due time. */
  get waiting(): boolean {
    return this.uncovered.length > 0 || this.held.length > 0;
  }

  /**
   * What the next renewal states: the whole cover, not only raises (the arbiter raises
   * idempotently), so a record that went back is raised again; the ceiling a step ahead once
   * the tokens come within half a step of it, the TTL held commands need.
   */
  asks(): RecordAsks {
    const asks: RecordAsks = {};
    const step = this.settings.tokenCeilingStep;
    if (this.coveredToken !== Number.POSITIVE_INFINITY) {
      // Asked half a step early, so a busy primary rarely waits for a raise.
      const raise = this.neededToken + step / 2 > this.coveredToken;
      asks.tokenCeiling = raise ? Math.max(this.coveredToken, this.neededToken) + step : this.coveredToken;
    }
    if (this.coveredTtlMs !== Number.POSITIVE_INFINITY) asks.ttlMaxMs = Math.max(this.coveredTtlMs, this.neededTtlMs);
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
 * The token floor of a fresh table. After a lost table: the record's ceiling, which is above
 * every token handed out, or the driver's floor (above the wall clock in µs) where that is
 * higher (a ceiling never raised, 0, or unknown, null). A cluster's first table has no earlier
 * tokens the record knows of; the driver's floor keeps its tokens above those of a cluster
 * whose every record was lost (while the clock does not step back).
 */
export function freshTokenFloor(lease: Lease, driverFloor: number): number {
  return lease.tablesBefore === true ? Math.max(lease.tokenCeiling ?? 0, driverFloor) : driverFloor;
}

/**
 * How long an answer to `command` lets a client believe in a session or grant after its word.
 * A value the table refuses (out of the settings' bounds, an unknown session) grants nothing
 * and needs nothing: it must not wait for, nor ask for, a raise.
 */
function ttlNeededMs(command: Command, table: LockTable, settings: RecordSettings): number {
  const within = (ms: number, minMs: number, maxMs: number) => Number.isSafeInteger(ms) && ms >= minMs && ms <= maxMs;
  switch (command.type) {
    case "openSession":
      return within(command.ttlMs, settings.sessionTtlMinMs, settings.sessionTtlMaxMs) ? command.ttlMs : 0;
    case "keepAlive":
      return table.sessions.get(command.session)?.ttlMs ?? 0;
    case "enter": {
      const ttlMs = table.sessions.get(command.session)?.ttlMs;
      return ttlMs !== undefined && within(command.lockDelayMs, 0, settings.lockDelayMaxMs) ? ttlMs + command.lockDelayMs : 0;
    }
    default:
      return 0;
  }
}
