/**
 * The coordinator's decision once a majority promised: pure functions of the promises, so the
 * rules are in one place and easy to read (docs/ring-view.md, "The decision").
 */
import { assert } from "../assert.ts";
import type { Settings } from "../../settings.ts";
import type { Ballot, PromiseFacts, View } from "./view_wire.ts";

/** One promise as the coordinator keeps it: with its receipt time on the coordinator's clock. */
export interface Promised {
  prior: Ballot;
  viewEpoch: number;
  facts: PromiseFacts;
  receivedAtMs: number;
}

export type DecideSettings = Pick<Settings, "ringLeaseMaxMs" | "tokenLeaseSafetyMs">;

/**
 * The view of `ballot`: members = the promisers in file order; regenerator = the promiser with
 * the highest (epoch of its last write, lastApplied), ties to file order (Raft's "most up to
 * date log": a committed write is on a majority, which shares a node with the promisers, and a
 * log ending in a newer epoch holds every write committed before that epoch); voters = `ring`,
 * the list it was decided under (the next membership change waits for such a view).
 */
export function decideView(
  ballot: Ballot,
  promises: ReadonlyMap<string, Promised>,
  ring: readonly string[],
  settings: DecideSettings,
  nowMs: number,
): View {
  const members = ring.filter((id) => promises.has(id));
  // A view is a strict majority of the file's ring nodes (only they promise; view_wire.ts checks).
  assert(2 * members.length > ring.length, `view ${ballot.epoch} of ${members.length} of ${ring.length} ring nodes is no majority`);
  let regenerator = members[0];
  for (const id of members) {
    const a = promises.get(id)!.facts;
    const b = promises.get(regenerator)!.facts;
    if (a.lastWriteEpoch > b.lastWriteEpoch || (a.lastWriteEpoch === b.lastWriteEpoch && a.lastApplied > b.lastApplied)) regenerator = id;
  }
  const lowestCommit = Math.min(...members.map((id) => promises.get(id)!.facts.commit));
  return {
    epoch: ballot.epoch,
    coordinator: ballot.coordinator,
    members,
    regenerator,
    startWseq: promises.get(regenerator)!.facts.lastApplied,
    resendFromWseq: lowestCommit + 1,
    grantWaitMs: grantWait(promises, ring, settings, nowMs),
    voters: [...ring],
  };
}

/**
 * How long the new token must wait before its first grant: every section of an older epoch must
 * have ended (its client may still believe in it until its lease ends). Every such section was
 * granted under a token lease, and a section lasts at most ringLeaseMaxMs (+ tokenLeaseSafetyMs
 * for clock rates). Cases:
 * - Known: the latest token (highest epoch and hop reported) is held by one promiser, or
 *   provably never left it, and no promiser had promised a newer epoch than that token's (else
 *   a newer view, whose token we do not see, may exist). Sections can run only there (a token is
 *   passed only with no section): its remaining section (or own grant wait).
 * - Otherwise, bounded per node: a promiser's own section is what it reported; a promiser that
 *   restarted lately may have clients of sections from before its restart, which end within
 *   ringLeaseMaxMs of it; a node that did not promise granted, if at all, under a lease, which
 *   ended before every backer's hold for it, and one backer is a promiser (two majorities share
 *   a node), a section no longer than the bound that lease's renewal stated: so it ended within
 *   that bound (holdSectionMaxMs; unknown: ringLeaseMaxMs) after the hold end the promiser
 *   reports for it (docs/ring.md "The token lease").
 * - A first start (nobody promised anything, no token ever): 0.
 */
function grantWait(promises: ReadonlyMap<string, Promised>, ring: readonly string[], settings: DecideSettings, nowMs: number): number {
  let top: { epoch: number; hop: number } = { epoch: -1, hop: -1 };
  let atTop: string[] = [];
  let newestPromised = 0;
  for (const [id, p] of promises) {
    newestPromised = Math.max(newestPromised, p.prior.epoch, p.viewEpoch);
    const f = p.facts;
    const cmp = f.tokenEpoch !== top.epoch ? f.tokenEpoch - top.epoch : f.tokenHop - top.hop;
    if (cmp > 0) {
      top = { epoch: f.tokenEpoch, hop: f.tokenHop };
      atTop = [id];
    } else if (cmp === 0) atTop.push(id);
  }
  // Nobody promised anything before: no view, hence no token, ever existed (first start).
  if (newestPromised === 0 && top.epoch <= 0) return 0;
  // The receiver of the latest hand-off holds it (its sender reports the same hop); a refused
  // hand-off is proof only when nobody else reports that hop.
  const held = atTop.filter((id) => promises.get(id)!.facts.tokenHere === "held");
  const neverLeft = atTop.length === 1 && promises.get(atTop[0])!.facts.tokenHere === "neverLeft";
  const known = top.epoch >= newestPromised && top.epoch > 0 && (held.length === 1 || neverLeft);
  if (known) {
    const holder = promises.get(held.length === 1 ? held[0] : atTop[0])!;
    // The holder measured what is left on its own clock: the same clock-rate margin as below.
    const remainingMs = holder.facts.sectionRemainingMs > 0 ? holder.facts.sectionRemainingMs + settings.tokenLeaseSafetyMs : 0;
    return Math.max(0, holder.receivedAtMs + remainingMs - nowMs);
  }
  return Math.max(0, lastSectionEndMs(promises, ring, settings) - nowMs);
}

/** When the last section an older token could have granted ends at the latest (the "otherwise" case above). */
function lastSectionEndMs(promises: ReadonlyMap<string, Promised>, ring: readonly string[], settings: DecideSettings): number {
  const sectionMaxMs = settings.ringLeaseMaxMs + settings.tokenLeaseSafetyMs;
  let endMs = Number.NEGATIVE_INFINITY;
  for (const p of promises.values()) {
    const f = p.facts;
    endMs = Math.max(endMs, p.receivedAtMs + f.sectionRemainingMs);
    if (f.restartedAgoMs !== null) endMs = Math.max(endMs, p.receivedAtMs - f.restartedAgoMs + sectionMaxMs);
  }
  for (const id of ring) {
    if (promises.has(id)) continue;
    for (const p of promises.values()) {
      const agoMs = p.facts.holdEndedAgoMs[id];
      if (agoMs === undefined) continue;
      // The bound the backed leases stated (no section outlasts ringLeaseMaxMs, whatever it says).
      const statedMs = Math.min(p.facts.holdSectionMaxMs?.[id] ?? settings.ringLeaseMaxMs, settings.ringLeaseMaxMs);
      endMs = Math.max(endMs, p.receivedAtMs - agoMs + statedMs + settings.tokenLeaseSafetyMs);
    }
  }
  return endMs;
}
