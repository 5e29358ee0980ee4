/**
 * The coordinator's decision once a majority promised: pure functions of the promises, so the
 * rules are in one place and easy to read (docs/ring-view.md, "The decision").
 */
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
 * log ending in a newer epoch holds every write committed before that epoch).
 */
export function decideView(
  ballot: Ballot,
  promises: ReadonlyMap<string, Promised>,
  ring: readonly string[],
  settings: DecideSettings,
  nowMs: number,
): View {
  const members = ring.filter((id) => promises.has(id));
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
    grantWaitMs: grantWait(promises, settings, nowMs),
  };
}

/**
 * How long the new token must wait before its first grant: every section of an older epoch
 * must have ended. Every such section was granted under a token lease, and every such lease
 * ended before the majority of promises was complete (token_lease.ts), so each ends within
 * ringLeaseMaxMs of now. Shorter when the token is known to be at a promiser: the latest token
 * (highest epoch and hop reported) is held there, or provably never left it, and no promiser
 * had promised a newer epoch than that token's (else a newer view, whose token we do not see,
 * may exist). Then the wait is that promiser's remaining section (or own grant wait).
 */
function grantWait(promises: ReadonlyMap<string, Promised>, settings: DecideSettings, nowMs: number): number {
  const unknownWaitMs = settings.ringLeaseMaxMs + settings.tokenLeaseSafetyMs;
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
  if (top.epoch < newestPromised || top.epoch === 0) return unknownWaitMs;
  // The receiver of the latest hand-off holds it (its sender reports the same hop); a refused
  // hand-off is proof only when nobody else reports that hop.
  const held = atTop.filter((id) => promises.get(id)!.facts.tokenHere === "held");
  const neverLeft = atTop.length === 1 && promises.get(atTop[0])!.facts.tokenHere === "neverLeft";
  if (held.length !== 1 && !neverLeft) return unknownWaitMs;
  const holder = promises.get(held.length === 1 ? held[0] : atTop[0])!;
  return Math.max(0, holder.receivedAtMs + holder.facts.sectionRemainingMs - nowMs);
}
