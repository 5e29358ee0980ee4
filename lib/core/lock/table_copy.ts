/**
 * A streamed copy of the lock machine for a returning backup: a consistent cut at one log index
 * I, sent in bounded chunks while the primary keeps serving (docs/failover.md "Resync").
 *
 * The primary (`CopySource`) takes, at the start, the scalars of the table, the lists of its
 * session and lock objects (references, ~1 ms at 100,000) and the remembered answers, and
 * watches the table (`TableWatcher`). An object that existed at the start and is about to change
 * or go before the backup has it gets its pre-image saved first (copy-on-write), so the cursor
 * always sends the object as it was at I. Objects created after the start are not sent: the
 * log entries after I, which the backup applies once the copy is complete, create them again.
 * Both checks are one comparison of creation stamps (lock_table.ts BORN), no set of names.
 *
 * The backup (`CopySink`) pulls one chunk at a time by position and builds its table as the
 * chunks come (sessions first, then locks, which index their sessions, then the answers), so no
 * step costs more than one chunk; it becomes the backup's machine only when complete.
 *
 * Positions: sessions are 0..S-1, locks S..S+L-1, answers S+L..S+L+A-1. A request for position
 * p also says "I hold everything before p": the source drops the pre-images before p and may
 * answer p again (a lost chunk is asked for again), never anything before it.
 */
import { assert } from "../assert.ts";
import type { AnsweredLimits } from "./answered.ts";
import { LockMachine } from "./lock_machine.ts";
import {
  BORN,
  copyOfLock,
  copyOfSession,
  type LockCopy,
  LockTable,
  type LockState,
  type LockTableHeader,
  type LockTableLimits,
  type Output,
  type Session,
  type SessionCopy,
  type TableWatcher,
} from "./lock_table.ts";
import type { Settings } from "../../settings.ts";

export type CopyLimits = Pick<Settings, "syncChunkItemsMax" | "syncChunkBytesMax">;

/** What the backup learns at the start of a copy: the cut's index, the scalars, the counts. */
export interface CopyStart {
  appliedIndex: number;
  table: LockTableHeader;
  sessions: number;
  locks: number;
  answered: number;
}

/**
 * `count` items from `position` on, as JSON text of an array: one string in the envelope, whose
 * schema (lib/wire/lock_peer.ts) is checked before the items are parsed and checked one by one.
 * (It was made plain JSON inside a superjson envelope, when superjson's walk of every value cost
 * ~13 µs per item; the envelope is plain JSON too since issue 14, see peer_transport.ts.)
 */
export interface CopyChunk {
  position: number;
  count: number;
  payload: string;
}

type Answered = [string, Output["result"]];

export class CopySource implements TableWatcher {
  readonly start: CopyStart;
  private readonly sessionRefs: Session[];
  private readonly lockRefs: LockState[];
  private readonly answered: Answered[];
  /** Objects stamped below this existed at the start. */
  private readonly startSeq: number;
  /** The backup holds every item before this position. */
  private ackedPosition = 0;
  /** Objects stamped below these are held by the backup: their changes need no pre-image. */
  private sessionsSentBelowSeq = Number.NEGATIVE_INFINITY;
  private locksSentBelowSeq = Number.NEGATIVE_INFINITY;
  /** Pre-images of objects changed before they were sent: at most one per object of the start. */
  private readonly sessionBefore = new Map<Session, SessionCopy>();
  private readonly lockBefore = new Map<LockState, LockCopy>();
  private open = true;

  constructor(private readonly machine: LockMachine, private readonly limits: CopyLimits) {
    const table = machine.table;
    this.sessionRefs = [...table.sessions.values()];
    this.lockRefs = [...table.locks.values()];
    this.answered = machine.answeredEntries();
    this.startSeq = table.nextBornSeq;
    this.start = {
      appliedIndex: machine.appliedIndex,
      table: table.header(),
      sessions: this.sessionRefs.length,
      locks: this.lockRefs.length,
      answered: this.answered.length,
    };
    this.release(0);
    table.watch(this);
  }

  /** Items in the copy. */
  get total(): number {
    return this.start.sessions + this.start.locks + this.start.answered;
  }

  /** The backup holds everything before this position (it asked for it). */
  get acked(): number {
    return this.ackedPosition;
  }

  /** Pre-images held now (bounded by the objects of the start; for tests and status). */
  get savedCount(): number {
    return this.sessionBefore.size + this.lockBefore.size;
  }

  beforeSessionChange(session: Session): void {
    const born = session[BORN]!;
    if (born >= this.startSeq || born < this.sessionsSentBelowSeq || this.sessionBefore.has(session)) return;
    this.sessionBefore.set(session, copyOfSession(session));
  }

  beforeLockChange(lock: LockState): void {
    const born = lock[BORN]!;
    if (born >= this.startSeq || born < this.locksSentBelowSeq || this.lockBefore.has(lock)) return;
    this.lockBefore.set(lock, copyOfLock(lock));
  }

  /**
   * The chunk from `position` (which acknowledges everything before it), or null for a position
   * before one already acknowledged or past the end (a stale or broken request). At most
   * syncChunkItemsMax items and syncChunkBytesMax bytes of payload, but always one item at least
   * (an item larger than the bound goes alone).
   */
  chunk(position: number): CopyChunk | null {
    assert(this.open, "chunk of a closed copy");
    if (!Number.isSafeInteger(position) || position < this.ackedPosition || position > this.total) return null;
    this.release(position);
    const { syncChunkItemsMax, syncChunkBytesMax } = this.limits;
    const parts: string[] = [];
    let bytes = 2; // the brackets
    for (let p = position; p < this.total && parts.length < syncChunkItemsMax; p += 1) {
      const text = JSON.stringify(this.item(p));
      const size = utf8Length(text) + 1;
      if (parts.length > 0 && bytes + size > syncChunkBytesMax) break;
      parts.push(text);
      bytes += size;
    }
    return { position, count: parts.length, payload: `[${parts.join(",")}]` };
  }

  /** Stops watching the table and drops the pre-images (copy complete, replaced or abandoned). */
  close(): void {
    if (!this.open) return;
    this.open = false;
    this.machine.table.watch(null);
    this.sessionBefore.clear();
    this.lockBefore.clear();
  }

  private item(p: number): SessionCopy | LockCopy | Answered {
    const sessions = this.start.sessions;
    const locks = this.start.locks;
    if (p < sessions) {
      const session = this.sessionRefs[p];
      return this.sessionBefore.get(session) ?? copyOfSession(session);
    }
    if (p < sessions + locks) {
      const lock = this.lockRefs[p - sessions];
      return this.lockBefore.get(lock) ?? copyOfLock(lock);
    }
    // Remembered answers are never changed in place: the list taken at the start is the cut's.
    return this.answered[p - sessions - locks];
  }

  /** The backup holds everything before `position`: forget what it no longer needs. */
  private release(position: number): void {
    const sessions = this.start.sessions;
    for (let p = this.ackedPosition; p < position; p += 1) {
      // Checked as the cursor passes (not all at the start: ~10 ms at 100,000 objects).
      if (p < sessions) {
        assertStampOrder(this.sessionRefs, p, "sessions");
        this.sessionBefore.delete(this.sessionRefs[p]);
      } else if (p - sessions < this.start.locks) {
        assertStampOrder(this.lockRefs, p - sessions, "locks");
        this.lockBefore.delete(this.lockRefs[p - sessions]);
      }
    }
    this.ackedPosition = position;
    // Stamps ascend along each list, so "sent" is "stamped below the next one to send".
    this.sessionsSentBelowSeq = position < sessions ? this.sessionRefs[position][BORN]! : Number.POSITIVE_INFINITY;
    const lockIndex = position - sessions;
    this.locksSentBelowSeq = lockIndex < 0
      ? Number.NEGATIVE_INFINITY
      : lockIndex < this.start.locks
      ? this.lockRefs[lockIndex][BORN]!
      : Number.POSITIVE_INFINITY;
  }
}

/** The backup's side: a table built chunk by chunk, a machine once complete. */
export class CopySink {
  private readonly table: LockTable;
  private readonly answered: Answered[] = [];
  private next = 0;

  constructor(
    /** The primary's generation of this copy (append messages name it). */
    readonly syncGen: number,
    readonly start: CopyStart,
    limits: LockTableLimits,
    private readonly answeredLimits: AnsweredLimits,
  ) {
    assert(isCopyStart(start), "malformed copy start");
    this.table = LockTable.fromHeader(start.table, limits);
  }

  /** The next position to ask for: everything before it is loaded. */
  get position(): number {
    return this.next;
  }

  get total(): number {
    return this.start.sessions + this.start.locks + this.start.answered;
  }

  get done(): boolean {
    return this.next >= this.total;
  }

  /**
   * Loads a chunk that starts where the last one ended; false (and nothing changes) for one that
   * does not (a late answer). A chunk that does not parse or whose items are malformed means the
   * primary is broken: fail-stop.
   */
  accept(chunk: CopyChunk): boolean {
    if (chunk.position !== this.next) return false;
    let items: unknown;
    try {
      items = JSON.parse(chunk.payload);
    } catch (error) {
      assert(false, `copy chunk at ${chunk.position} does not parse: ${(error as Error).message}`);
    }
    assert(Array.isArray(items) && items.length === chunk.count, `copy chunk at ${chunk.position} is not an array of ${chunk.count}`);
    assert(items.length > 0 && this.next + items.length <= this.total, `copy chunk at ${chunk.position} has ${items.length} items of ${this.total}`);
    const sessions = this.start.sessions;
    const locks = this.start.locks;
    for (const item of items) {
      const p = this.next;
      if (p < sessions) {
        assert(isSessionCopy(item), `copy item ${p} is not a session`);
        this.table.loadSession(item);
      } else if (p < sessions + locks) {
        assert(isLockCopy(item), `copy item ${p} is not a lock`);
        this.table.loadLock(item);
      } else {
        assert(Array.isArray(item) && item.length === 2 && typeof item[0] === "string" && isObject(item[1]), `copy item ${p} is not an answer`);
        this.answered.push(item as Answered);
      }
      this.next += 1;
    }
    return true;
  }

  /** The copied machine, at the cut's index (only once every item is loaded). */
  finish(): LockMachine {
    assert(this.done, "copy not complete");
    return LockMachine.fromParts(this.table, this.start.appliedIndex, this.answered, this.answeredLimits);
  }
}

/** "Sent" is a comparison of stamps only if they ascend along the list (lock_table.ts BORN). */
function assertStampOrder(objects: Array<{ [BORN]?: number }>, index: number, what: string): void {
  const born = objects[index][BORN];
  assert(born !== undefined && (index === 0 || born > objects[index - 1][BORN]!), `table ${what} are not in creation order at ${index}`);
}

/** UTF-8 length of a string without an encoder (a surrogate pair: 2 + 2 bytes for its two units). */
function utf8Length(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i += 1) {
    const code = text.charCodeAt(i);
    bytes += code < 0x80 ? 1 : code < 0x800 ? 2 : code >= 0xd800 && code < 0xe000 ? 2 : 3;
  }
  return bytes;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

const isCount = (value: unknown) => Number.isSafeInteger(value) && (value as number) >= 0;
const isTime = (value: unknown) => typeof value === "number" && Number.isFinite(value);
const isMode = (value: unknown) => value === "exclusive" || value === "shared";
const isOptionalString = (value: unknown) => value === undefined || typeof value === "string";
const isCallId = isOptionalString;

function isCopyStart(value: unknown): value is CopyStart {
  if (!isObject(value) || !isObject(value.table)) return false;
  const t = value.table;
  return isCount(value.appliedIndex) && isCount(value.sessions) && isCount(value.locks) && isCount(value.answered) &&
    isTime(t.nowMs) && isCount(t.lastToken) && isCount(t.sessionSeq) && typeof t.sessionIdPrefix === "string";
}

function isSessionCopy(value: unknown): value is SessionCopy {
  return isObject(value) && typeof value.id === "string" && isCount(value.ttlMs) && isTime(value.createdAtMs) &&
    isTime(value.expiresAtMs) && Array.isArray(value.leftCalls) && value.leftCalls.every((c) => typeof c === "string") &&
    isOptionalString(value.secretHash) && isOptionalString(value.owner);
}

function isLockCopy(value: unknown): value is LockCopy {
  if (!isObject(value) || typeof value.name !== "string" || !isTime(value.delayUntilMs)) return false;
  if (!Array.isArray(value.holders) || !Array.isArray(value.queue)) return false;
  const holdersOk = value.holders.every((h) =>
    isObject(h) && typeof h.session === "string" && isCount(h.token) && isMode(h.mode) && isTime(h.sinceMs) && isCount(h.lockDelayMs) &&
    isCallId(h.callId)
  );
  const queueOk = value.queue.every((w) =>
    isObject(w) && typeof w.session === "string" && isMode(w.mode) && isTime(w.queuedAtMs) && isTime(w.deadlineMs) &&
    isCount(w.lockDelayMs) && isCallId(w.callId)
  );
  return holdersOk && queueOk;
}
