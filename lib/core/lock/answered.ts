/**
 * The lock machine's memory of answered requests (idempotency keys → first answer), bounded in
 * count (`answeredMax`) and in bytes (`answeredBytesMax`), oldest forgotten first. The primary
 * and the backup apply the same entries with the same limits, so both remember and forget the
 * same answers: the size of an answer is a function of the entry and its result only.
 *
 * Before the byte bound, 10,000 ids of 60 KB each cost 190 MB per server (issue 11); ids are
 * now at most REQUEST_ID_LENGTH_MAX characters, and the byte bound also covers large answers
 * (a closed session lists every lock it released).
 */
import type { Settings } from "../../settings.ts";
import { assert } from "../assert.ts";
import type { Output } from "./lock_table.ts";

/** Longest idempotency key a request may carry: a UUID is 36 characters. */
export const REQUEST_ID_LENGTH_MAX = 128;

/**
 * What a remembered answer costs beyond its id and its answer's JSON text: the map entry and the
 * strings' headers, roughly, in the engines we run on.
 */
export const ANSWER_OVERHEAD_BYTES = 64;

export type AnsweredLimits = Pick<Settings, "answeredMax" | "answeredBytesMax">;

type Answer = Output["result"];

/** Why `requestId` is not an acceptable idempotency key, or undefined when it is (none is fine). */
export function requestIdProblem(requestId: unknown): string | undefined {
  if (requestId === undefined) return undefined;
  if (typeof requestId !== "string" || requestId.length === 0 || requestId.length > REQUEST_ID_LENGTH_MAX) {
    return `requestId must be a string of 1..${REQUEST_ID_LENGTH_MAX} characters`;
  }
  return undefined;
}

/**
 * The estimated memory of one remembered answer, in bytes: its id's and its answer's JSON length
 * in characters (a byte each for ASCII, as the engines store such strings) plus the overhead.
 * `jsonLength`: the answer's JSON length when the caller has it measured otherwise (a restored copy).
 */
export function answerBytes(requestId: string, answer: Answer, jsonLength: number = answerJsonLength(answer)): number {
  return requestId.length + jsonLength + ANSWER_OVERHEAD_BYTES;
}

/**
 * `JSON.stringify(answer).length`. A leave's answer, the one remembered per acquire+release (the
 * client sends a `requestId` on every leave), is counted from its two fields without building the
 * text: about a tenth of the stringify's time (docs/bench.md, "The lone primary's HTTP path").
 * The count is the text's exactly, so primaries and backups of any version measure every answer
 * the same and keep the same ones (request_id_limits_test compares it with JSON.stringify on the
 * table's own leave answers and on names that need escapes).
 */
export function answerJsonLength(answer: Answer): number {
  if (answer.ok && answer.type === "left") return LEFT_JSON_LENGTH + jsonStringLength(answer.name) + (answer.wasHolder ? 4 : 5);
  return JSON.stringify(answer).length;
}

/** A leave's answer is these four fields and no more (a field added to it fails this line's type check). */
const LEFT_FIELDS = { ok: true, type: "left", name: "", wasHolder: true } satisfies Record<keyof Extract<Answer, { type: "left" }>, unknown>;
/** Its JSON text without the name's string and the boolean: `{"ok":true,"type":"left","name":,"wasHolder":}`. */
const LEFT_JSON_LENGTH = JSON.stringify(LEFT_FIELDS).length - 2 - 4;

/** The length of JSON.stringify(text): the quotes, and JSON's escapes (2 or 6 characters per escaped unit). */
export function jsonStringLength(text: string): number {
  let length = text.length + 2;
  // Bounded by the text's length.
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit >= 0x20 && unit !== 0x22 && unit !== 0x5c && (unit < 0xd800 || unit > 0xdfff)) continue;
    if (unit === 0x22 || unit === 0x5c || unit === 0x08 || unit === 0x09 || unit === 0x0a || unit === 0x0c || unit === 0x0d) length += 1; // \" \\ \b \t \n \f \r
    else if (unit < 0x20) length += 5; // \u00XX
    else if (unit <= 0xdbff && i + 1 < text.length && text.charCodeAt(i + 1) >= 0xdc00 && text.charCodeAt(i + 1) <= 0xdfff) i++; // a pair, as it is
    else length += 5; // a lone surrogate: \uXXXX
  }
  return length;
}

/**
 * One remembered answer; the same object is its place in the eviction queue. `live` until it is
 * forgotten (evicted, or its id remembered again): the queue then skips it without asking the Map.
 */
interface Remembered {
  requestId: string;
  answer: Answer;
  bytes: number;
  live: boolean;
}

export class AnsweredRequests {
  private readonly answers = new Map<string, Remembered>();
  private totalBytes = 0;
  /**
   * The answers in the order they were remembered, oldest at `head`; a forgotten or re-remembered
   * id's old place stays behind as stale (no longer `live`) and is skipped.
   * Eviction takes from here, not from `answers.keys().next()`: engines keep a deleted Map entry as
   * a hole until they rehash, and that call walks every hole from the start, so with the memory
   * full (every leave evicts one) it cost 4.5–5.7 µs per eviction under Deno and Bun, a tenth of
   * a lone primary's CPU per acquire+release (docs/bench.md). Same order as the Map's insertion
   * order, so what is evicted (and what the backup keeps) is unchanged.
   */
  private order: Remembered[] = [];
  private head = 0;
  /**
   * An id the last `get` did not find, and nothing remembered since: not a key of `answers`.
   * A primary asks for a request's id twice before it remembers the answer (LockReplica's
   * clientRequest, then LockMachine.apply), and `remember` would look it up once more to forget
   * it: with this, a leave's id is looked up once, not three times, in the 10,000-entry Map.
   */
  private absentId: string | undefined;

  constructor(private readonly limits: AnsweredLimits) {
    assert(limits.answeredMax > 0 && limits.answeredBytesMax > 0, "answeredMax and answeredBytesMax must be positive");
  }

  /** Restores a snapshot's answers (oldest first), under this server's limits. */
  static from(entries: ReadonlyArray<readonly [string, Answer]>, limits: AnsweredLimits): AnsweredRequests {
    const answered = new AnsweredRequests(limits);
    // A decoded answer may carry fields this build's count of a leave does not know (a newer
    // member's): its text's own length, as that member counted it.
    for (const [requestId, answer] of entries) answered.remember(requestId, answer, answerBytes(requestId, answer, JSON.stringify(answer).length));
    return answered;
  }

  get(requestId: string): Answer | undefined {
    if (requestId === this.absentId) return undefined;
    const held = this.answers.get(requestId);
    if (held === undefined) this.absentId = requestId;
    return held?.answer;
  }

  get size(): number {
    return this.answers.size;
  }

  /** The estimated bytes held (see answerBytes). */
  get bytes(): number {
    return this.totalBytes;
  }

  /**
   * Remembers an answer, then forgets the oldest until both bounds hold. An answer larger than
   * answeredBytesMax by itself is not remembered at all (its retry is answered by the table's
   * state), and costs the others nothing: evicting for it would empty the whole memory first.
   */
  remember(requestId: string, answer: Answer, bytes: number = answerBytes(requestId, answer)): void {
    if (requestId !== this.absentId) this.forget(requestId);
    // From here `answers` may hold any id: what the last get missed is no longer known absent.
    this.absentId = undefined;
    if (bytes > this.limits.answeredBytesMax) return;
    const remembered: Remembered = { requestId, answer, bytes, live: true };
    const sizeBefore = this.answers.size;
    this.answers.set(requestId, remembered);
    // A new key, or the queue would hold two live places for one id (absentId was wrong).
    assert(this.answers.size === sizeBefore + 1, "a remembered id was still in the Map");
    this.order.push(remembered);
    this.totalBytes += bytes;
    const { answeredMax, answeredBytesMax } = this.limits;
    // Oldest first, deterministic. Each round takes one place off `order`, and the entry just
    // remembered is live in it, so the loop ends before `order` is empty. A live place is the
    // Map's entry for its id, so it is dropped without looking it up: with the memory full (every
    // leave with a requestId evicts one) a remember is one lookup, one set and one delete of a
    // 10,000-entry Map, not six operations (docs/bench.md, "Fourth pass").
    while (this.answers.size > answeredMax || this.totalBytes > answeredBytesMax) {
      const oldest = this.order[this.head++];
      if (oldest.live) this.drop(oldest);
    }
    this.compactOrder();
  }

  /**
   * Drops the places taken (before `head`) and the stale ones once `order` is twice as long as
   * the live entries: O(live) every O(live) remembers, so O(1) per remember, and bounded memory.
   */
  private compactOrder(): void {
    if (this.order.length <= 2 * this.answers.size + 16) return;
    this.order = this.order.slice(this.head).filter((place) => place.live);
    this.head = 0;
  }

  /** Oldest first, as a snapshot carries them. */
  entries(): Array<[string, Answer]> {
    return [...this.answers].map(([requestId, { answer }]) => [requestId, answer]);
  }

  private forget(requestId: string): void {
    const held = this.answers.get(requestId);
    if (held) this.drop(held);
  }

  /** Forgets `held`, the Map's live entry for its id. */
  private drop(held: Remembered): void {
    this.answers.delete(held.requestId);
    this.totalBytes -= held.bytes;
    held.live = false;
  }
}
