/**
 * The view change's plain data: ballots, views, what a promiser reports, the messages (JSON on
 * the wire, to disk for the hard state), the fence layout, and the check every message from the
 * wire passes before the core looks at it (never trust the wire). Pure.
 */
import { assert } from "../assert.ts";

export interface Ballot {
  epoch: number;
  coordinator: string;
}

/** Orders ballots: by epoch, then by coordinator id (string order). */
export function compareBallots(a: Ballot, b: Ballot): number {
  if (a.epoch !== b.epoch) return a.epoch - b.epoch;
  return a.coordinator < b.coordinator ? -1 : a.coordinator > b.coordinator ? 1 : 0;
}

/** Fences carry the epoch in their high part: fence = epoch × 2^32 + counter. */
export const FENCE_EPOCH_FACTOR = 2 ** 32;
/**
 * The highest epoch whose fences stay within Number.MAX_SAFE_INTEGER (2^53 − 1): 2^21 − 1 =
 * 2,097,151 epochs, each with 2^32 − 1 fences. At one view change a second that lasts 24 days.
 */
export const EPOCH_MAX = Math.floor(Number.MAX_SAFE_INTEGER / FENCE_EPOCH_FACTOR);

/** Every fence of `epoch` is above this, and above every fence of an older epoch. */
export function fenceFloor(epoch: number): number {
  assert(Number.isSafeInteger(epoch) && epoch >= 0 && epoch <= EPOCH_MAX, `epoch ${epoch} out of 0..${EPOCH_MAX}`);
  return epoch * FENCE_EPOCH_FACTOR;
}

/** The fence after `last` in `epoch` (the first one when `last` is of an older epoch). */
export function nextFence(epoch: number, last: number): number {
  const next = Math.max(last, fenceFloor(epoch)) + 1;
  assert(next < fenceFloor(epoch) + FENCE_EPOCH_FACTOR, `fence counter of epoch ${epoch} exhausted: a view change is needed`);
  return next;
}

/** A decided view. Plain data: it goes on the wire and to disk. */
export interface View {
  epoch: number;
  coordinator: string;
  /** The promisers, in file order: the new ring. */
  members: string[];
  /** Creates the epoch's token, after re-sending writes from `resendFromWseq` to `startWseq`. */
  regenerator: string;
  startWseq: number;
  /** Lowest commit watermark among the members, plus one: writes above it may differ. */
  resendFromWseq: number;
  /** No grant of this epoch before this long after the view is received (older sections). */
  grantWaitMs: number;
  /**
   * The voters it was decided under (the coordinator's ring, in its file order). Absent in views
   * stored by earlier versions: unknown (see ViewCore.changeMembership and restartVotersProblem).
   */
  voters?: string[];
}

/** What a node persists (fsynced before the messages of the same ready() are sent). */
export interface ViewHardState {
  promised: Ballot;
  view: View | null;
}

/** What the ring node reports about itself (the driver passes a function returning it). */
export interface LocalFacts {
  lastApplied: number;
  /** Epoch stamp of the write at lastApplied (0: none). */
  lastWriteEpoch: number;
  commit: number;
  /** The last token this node held or sent: its epoch and hop (0, 0: none yet). */
  tokenEpoch: number;
  tokenHop: number;
  token: "held" | "sending" | "away";
  /** Remaining lease of the section running here (0: none). */
  sectionRemainingMs: number;
  lastTokenAgeMs: number | null;
}

/** What a promiser tells the coordinator. */
export interface PromiseFacts {
  lastApplied: number;
  lastWriteEpoch: number;
  commit: number;
  tokenEpoch: number;
  tokenHop: number;
  /** "neverLeft": its last hand-off was refused at connect, so the token is still here. */
  tokenHere: "held" | "neverLeft" | "no";
  /** Upper bound on how long a grant made here (or this node's wait before one) still runs. */
  sectionRemainingMs: number;
  /**
   * Per ring node: how long ago this node's hold for that node's token leases ended (absent: it
   * never backed one of its leases in this run, and did not restart). A lease ends before every
   * backer's hold for it, so the last grant a node that did not promise could have made lies
   * before the latest of these (decide.ts).
   */
  holdEndedAgoMs: Record<string, number>;
  /**
   * Per ring node: how long after that hold's end the sections of the leases it backed end at the
   * latest (the bounds their renewals stated, ringLeaseMaxMs over a restart hold: docs/ring.md "The
   * token lease"). Absent, or a node absent from it: unknown (an older build), counted as ringLeaseMaxMs.
   */
  holdSectionMaxMs?: Record<string, number>;
  /** This node ran before (it restarted) this long ago; null: it started without a past. */
  restartedAgoMs: number | null;
}

export type ViewMessage =
  | { type: "probe"; from: string; epoch: number }
  /**
   * `viewEpoch`: the epoch of the view the answering node installed. `lastTokenAgeMs`: how long ago
   * it last had evidence of the token: it held, sent or took it then, or a section announced to it
   * (`section`) could run until then (0 while one may still run).
   */
  | { type: "probeReply"; from: string; viewEpoch: number; tokenEpoch: number; tokenHop: number; live: boolean; lastTokenAgeMs: number | null }
  /**
   * The holder of `epoch`'s token granted a section of `leaseMs` (best effort, to the other voters):
   * the token stays there up to that long, which is no sign of its loss (view_probe.ts). `n`: the
   * sender's number for this announcement (counting up in its run), which its end names.
   */
  | { type: "section"; from: string; epoch: number; leaseMs: number; n: number }
  /**
   * The sender's sections announced in `epoch` and numbered `n` or below are over (it no longer
   * holds that token): a receiver no longer counts them as sightings, but keeps a later one (an
   * end delayed past the next announcement). Sent by an announcer when it starts a token-loss
   * probe, so its own announcement does not hide a token lost after it (view_probe.ts).
   */
  | { type: "sectionEnd"; from: string; epoch: number; n: number }
  /** `voters`: the coordinator's voter list; a voter promises only under the same list. */
  | { type: "prepare"; from: string; ballot: Ballot; voters: string[] }
  /** `prior`: the ballot promised before this one; `viewEpoch`: the installed view's epoch. */
  | { type: "promise"; from: string; ballot: Ballot; prior: Ballot; viewEpoch: number; facts: PromiseFacts }
  | { type: "reject"; from: string; ballot: Ballot; promised: Ballot; viewEpoch: number }
  /** The voter will answer `ballot` once its lease hold ends, in `waitMs` (at most tokenLeaseMs). */
  | { type: "deferred"; from: string; ballot: Ballot; waitMs: number }
  | { type: "newView"; from: string; view: View }
  | { type: "installed"; from: string; epoch: number }
  /**
   * `voters`: the holder's voter list; a voter backs the lease only under the same list.
   * `sectionMaxMs`: the longest section the holder may grant under this lease (absent: an older build, ringLeaseMaxMs).
   */
  | { type: "renew"; from: string; epoch: number; seq: number; voters: string[]; sectionMaxMs?: number }
  /** A ring node asks the arbiter to coordinate the view change it wants (ring nodes ignore it). */
  | { type: "coordinate"; from: string; reason: string; epoch: number }
  | { type: "renewAnswer"; from: string; epoch: number; seq: number; ok: boolean };

/** What the arbiter, which coordinates without a vote, may send: the coordinator's messages. */
const ARBITER_SENDS: ReadonlySet<unknown> = new Set(["prepare", "newView", "probe"]);

/** The reasons a ring node may give the arbiter when it asks it to coordinate (ViewChangeReason). */
const COORDINATE_REASONS: ReadonlySet<unknown> = new Set(["tokenLoss", "suspect", "rejoin", "membership", "bootstrap"]);

/**
 * Why `message` (parsed from the wire) is malformed or not from a known node, or undefined.
 * `ring`: the voters in file order; `quorum`: a strict majority of them.
 */
export function checkViewMessage(message: ViewMessage, ring: readonly string[], arbiter: string | null, quorum: number): string | undefined {
  if (typeof message !== "object" || message === null) return "not an object";
  // Strings before any use: a deeply nested array as `from` overflowed the stack when it was
  // written into a reason (Array toString recurses; found by fuzzing).
  if (typeof message.from !== "string" || typeof message.type !== "string") return "from and type must be strings";
  const coordinatorOk = (id: string) => ring.includes(id) || (arbiter !== null && id === arbiter);
  if (!coordinatorOk(message.from)) return `unknown sender ${message.from}`;
  // The arbiter coordinates and nothing else: a vote, an answer or a lease from it is forged (a
  // "promise" from it would count towards a majority it is not part of).
  if (!ring.includes(message.from) && !ARBITER_SENDS.has(message.type)) return `${message.type} comes only from a ring node`;
  const ballots: unknown[] = [];
  const counts: unknown[] = [];
  // Epochs are counts that must also stay at most EPOCH_MAX: a node that saw a higher one would
  // take the next epoch above it, past the fences' range (an assertion, found by fuzzing).
  const epochs: unknown[] = [];
  switch (message.type) {
    case "probe":
    case "installed":
      epochs.push(message.epoch);
      break;
    case "probeReply":
      epochs.push(message.viewEpoch, message.tokenEpoch);
      counts.push(message.tokenHop);
      if (message.lastTokenAgeMs !== null) counts.push(message.lastTokenAgeMs);
      if (typeof message.live !== "boolean") return "live must be a boolean";
      break;
    case "prepare":
      ballots.push(message.ballot);
      if (message.ballot?.coordinator !== message.from) return "a prepare comes from its ballot's coordinator";
      if (!isVoterList(message.voters, ring.length + 1)) return "bad voters";
      break;
    case "promise": {
      ballots.push(message.ballot, message.prior);
      const f = message.facts;
      if (typeof f !== "object" || f === null) return "facts missing";
      epochs.push(message.viewEpoch, f.lastWriteEpoch, f.tokenEpoch);
      counts.push(f.lastApplied, f.commit, f.tokenHop, f.sectionRemainingMs);
      if (f.restartedAgoMs !== null) counts.push(f.restartedAgoMs);
      if (typeof f.holdEndedAgoMs !== "object" || f.holdEndedAgoMs === null || Array.isArray(f.holdEndedAgoMs)) return "bad holdEndedAgoMs";
      for (const [id, ago] of Object.entries(f.holdEndedAgoMs)) {
        if (!ring.includes(id)) return `holdEndedAgoMs names ${id}, not a ring node`;
        counts.push(ago);
      }
      if (f.holdSectionMaxMs !== undefined) {
        if (typeof f.holdSectionMaxMs !== "object" || f.holdSectionMaxMs === null || Array.isArray(f.holdSectionMaxMs)) return "bad holdSectionMaxMs";
        for (const [id, boundMs] of Object.entries(f.holdSectionMaxMs)) {
          if (!ring.includes(id)) return `holdSectionMaxMs names ${id}, not a ring node`;
          counts.push(boundMs);
        }
      }
      if (f.commit > f.lastApplied) return "commit above lastApplied";
      if (!["held", "neverLeft", "no"].includes(f.tokenHere)) return "bad tokenHere";
      break;
    }
    case "reject":
      ballots.push(message.ballot, message.promised);
      epochs.push(message.viewEpoch);
      break;
    case "deferred":
      ballots.push(message.ballot);
      counts.push(message.waitMs);
      break;
    case "newView": {
      const v = message.view;
      if (typeof v !== "object" || v === null || !Array.isArray(v.members)) return "bad view";
      ballots.push({ epoch: v.epoch, coordinator: v.coordinator });
      counts.push(v.startWseq, v.resendFromWseq, v.grantWaitMs);
      if (v.coordinator !== message.from) return "a view comes from its coordinator";
      if (v.members.length < quorum || !v.members.every((m) => ring.includes(m)) || new Set(v.members).size !== v.members.length) {
        return "members must be a majority of distinct ring nodes";
      }
      if (!v.members.includes(v.regenerator)) return "the regenerator must be a member";
      if (v.voters !== undefined && !isVoterList(v.voters, ring.length + 1)) return "bad view voters";
      break;
    }
    case "section":
      if (!ring.includes(message.from)) return "only a ring node grants sections";
      epochs.push(message.epoch);
      counts.push(message.leaseMs, message.n);
      break;
    case "sectionEnd":
      if (!ring.includes(message.from)) return "only a ring node ends its sections";
      epochs.push(message.epoch);
      counts.push(message.n);
      break;
    case "renew":
      epochs.push(message.epoch);
      counts.push(message.seq);
      if (message.sectionMaxMs !== undefined) counts.push(message.sectionMaxMs);
      if (!isVoterList(message.voters, ring.length + 1)) return "bad voters";
      break;
    case "coordinate":
      if (!ring.includes(message.from)) return "only a ring node asks for a view change";
      if (!COORDINATE_REASONS.has(message.reason)) return "bad reason";
      epochs.push(message.epoch);
      break;
    case "renewAnswer":
      epochs.push(message.epoch);
      counts.push(message.seq);
      if (typeof message.ok !== "boolean") return "ok must be a boolean";
      break;
    default:
      return `unknown type ${(message as { type: unknown }).type}`;
  }
  if (![...counts, ...epochs].every((n) => Number.isSafeInteger(n) && (n as number) >= 0)) return "numbers must be non-negative safe integers";
  if (!epochs.every((epoch) => (epoch as number) <= EPOCH_MAX)) return `epochs must be at most ${EPOCH_MAX}`;
  for (const b of ballots) {
    const ballot = b as Ballot;
    if (typeof ballot !== "object" || ballot === null || !Number.isSafeInteger(ballot.epoch) || ballot.epoch < 0 || ballot.epoch > EPOCH_MAX) {
      return "bad ballot";
    }
    if (ballot.epoch > 0 && !coordinatorOk(ballot.coordinator)) return `unknown coordinator ${ballot.coordinator}`;
  }
  return undefined;
}

/**
 * A voter list from the wire or the disk: distinct non-empty strings, at most `lengthMax` (a
 * sender's list differs from the receiver's by one node at most when the two may vote together).
 */
export function isVoterList(value: unknown, lengthMax: number): value is string[] {
  return Array.isArray(value) && value.length > 0 && value.length <= lengthMax &&
    value.every((id) => typeof id === "string" && id.length > 0) && new Set(value).size === value.length;
}

/** The same voters, whatever their order (the order only breaks ties, within one coordinator's list). */
export function sameVoters(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((id) => b.includes(id));
}

/** What changes from voter list `from` to `to`. */
export function votersDiff(from: readonly string[], to: readonly string[]): { added: string[]; removed: string[] } {
  return { added: to.filter((id) => !from.includes(id)), removed: from.filter((id) => !to.includes(id)) };
}

/**
 * Why a node may not start with the cluster file's `ring` after it stored `view`, or null: its
 * stored view was decided under a voter list more than one node away (two changes at once, which
 * two disjoint majorities could each form a view under). One node away is a reload, which is safe
 * since that view formed. A view without its list (stored by an earlier version) is not checked.
 */
export function restartVotersProblem(view: View | null, ring: readonly string[]): string | null {
  if (!view?.voters) return null;
  const { added, removed } = votersDiff(view.voters, ring);
  if (added.length + removed.length <= 1) return null;
  return `the ring of the cluster file (${ring.join(",")}) differs by more than one node from the voters of the stored view ` +
    `${view.epoch} (${view.voters.join(",")}): add or remove one ring node at a time, each once a view has formed`;
}
