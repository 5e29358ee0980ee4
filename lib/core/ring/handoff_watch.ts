/**
 * What the outcomes of deliveries to the successor tell a ring node: a pure state machine (no
 * clock, timers, randomness or I/O). Its driver (cluster/ring/handoff_delivery.ts) feeds it every
 * answer and failure of a delivery (token hand-off or write batch) and acts on the verdicts:
 *
 * - A token hand-off the successor refused (answered notYet or stale: not yet in its view, or it
 *   promised newer) or could not even connect for never left here: the view change is told
 *   (ViewCore.handoffRefused), so a new view need not wait for a section that cannot exist. That
 *   holds only if EVERY attempt of that hand-off was refused: one that timed out or was cut (a
 *   reset) may have been taken, and its receiver may have granted before it died (found by the
 *   ring benchmark: a reset, then a refused retry, then a grant 0.8 s after the kill while the
 *   dead holder's client held a 1 s lease). Such an attempt makes the hand-off uncertain for good
 *   (ViewCore.handoffUncertain withdraws an earlier refusal).
 * - ringRepairRetries failures in a row (and every one after them), or one refused at connect
 *   (`suspectsSuccessor`), suspect the successor: the repair core is told and a view change
 *   starts (the members are whoever promises). Any answer is word from the successor and ends
 *   the streak.
 * - A stale answer of an epoch newer than any this node promised: the successor is in a view
 *   without this node, which must rejoin.
 */
import type { RingResult } from "./ring_io.ts";
import { suspectsSuccessor } from "./repair.ts";

/** One token hand-off (epoch, hop) over all its attempts: whether any of them may have been taken. */
export interface HandoffRecord {
  readonly epoch: number;
  readonly hop: number;
  /** Set by the watch only (an attempt failed without a refusal); never cleared for this hand-off. */
  uncertain: boolean;
}

export interface HandoffWatchOptions {
  /** ringRepairRetries: failures in a row before the successor is suspected. */
  retries: number;
  /** The newest epoch this node promised (the view change's), read when a stale answer comes. */
  promisedEpoch(): number;
}

/** What an answered delivery means. */
export interface AnsweredVerdict {
  /** The token hand-off whose every attempt was refused (tell ViewCore.handoffRefused), if this one was. */
  refused: HandoffRecord | null;
  /** The successor is in a newer view than any this node promised: rejoin. */
  rejoin: boolean;
}

/** What a failed delivery (no answer, or an answer its schema refused) means. */
export interface FailedVerdict {
  /** Refused at connect, and so was every attempt of this token hand-off before: it never left. */
  refused: HandoffRecord | null;
  /** This attempt may have been taken: the hand-off is uncertain (tell ViewCore.handoffUncertain). */
  uncertain: HandoffRecord | null;
  /** Suspect the successor: tell the repair core and start a view change. */
  suspect: boolean;
}

export class HandoffWatch {
  /** The token hand-off being tried. */
  private last: HandoffRecord | null = null;
  /** Deliveries to the successor that got no answer, in a row. */
  private failures = 0;

  constructor(private readonly options: HandoffWatchOptions) {}

  /**
   * A delivery starts: for a token, the record of its hand-off (epoch, hop), the same over all
   * attempts of it (a new hand-off starts certain); null for a write batch. Passed back with the
   * delivery's outcome.
   */
  attempt(token: { epoch: number; hop: number } | null): HandoffRecord | null {
    if (!token) return null;
    const last = this.last;
    if (last && last.epoch === token.epoch && last.hop === token.hop) return last;
    return this.last = { epoch: token.epoch, hop: token.hop, uncertain: false };
  }

  /** The successor answered the delivery of `record` (null: writes) with `result` (checked). */
  answered(record: HandoffRecord | null, result: RingResult): AnsweredVerdict {
    this.failures = 0;
    const refusal = !result.ok && (result.type === "notYet" || result.type === "stale");
    return {
      refused: refusal ? certain(record) : null,
      rejoin: !result.ok && result.type === "stale" && result.epoch > this.options.promisedEpoch(),
    };
  }

  /** The delivery of `record` (null: writes) failed; `refusedAtConnect`: it never reached the successor. */
  failed(record: HandoffRecord | null, refusedAtConnect: boolean): FailedVerdict {
    let uncertain: HandoffRecord | null = null;
    if (!refusedAtConnect && record) {
      record.uncertain = true;
      uncertain = record;
    }
    this.failures += 1;
    return {
      refused: refusedAtConnect ? certain(record) : null,
      uncertain,
      suspect: suspectsSuccessor(this.failures, refusedAtConnect, this.options.retries),
    };
  }
}

/** The record if no attempt of its hand-off may have been taken. */
function certain(record: HandoffRecord | null): HandoffRecord | null {
  return record && !record.uncertain ? record : null;
}
