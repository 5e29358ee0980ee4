/**
 * The ring node's side of the view change (lib/core/ring/ring_node.ts; docs/ring-view.md, "What
 * the ring node must do"), driven by hand: the test plays the view change's two inputs,
 * `promised` and `install`, as the driver applies its decisions. The view core cannot enforce
 * these rules (tests/ring_view_test.ts stands in for the node with a few lines), so each test
 * here pins one of them:
 * - epochs: a token or writes of an epoch whose view is not installed → notYet; older than the
 *   installed or the promised epoch → stale; a promise drops the held token and stops grants;
 *   an install re-wires the node to the view's neighbours;
 * - the regenerator: the epoch's one token, the re-sent range with its original stamps, the
 *   epoch's marker behind it, their return, and new writes after it;
 * - Raft's log rules at a receiver; a restart; the epoch stamp that snapshots keep;
 * - the regenerator's marker (Raft's no-op) against Raft's Figure 8, with five nodes.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import type { ClientReply, RingInput, RingOutput } from "../lib/core/ring/ring_node.ts";
import type { RingEntry } from "../lib/core/ring/ring_types.ts";
import { fenceFloor, type View } from "../lib/core/ring/view_wire.ts";
import { decideView, type Promised } from "../lib/core/ring/decide.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import {
  F1,
  fenceOf,
  type Harness,
  harness,
  type HarnessOptions,
  LIMITS,
  logRecords,
  only,
  put,
  replies,
  restart,
  sentToken,
  sentWrites,
  storedOf,
  token,
  viewOf,
} from "./_ring_node.ts";

/** `entry` as a regenerator re-sends it: its stamp and author kept, its origin the regenerator. */
function resentBy(origin: string, entry: RingEntry): RingEntry {
  return { ...entry, origin };
}

// ---- Epochs: notYet, stale, promised, install ------------------------------------------------

test("notYet: a token or writes of an epoch whose view is not installed here, promised or not, are not taken; once installed they are", () => {
  const h = harness();
  let out = h.step({ type: "token", from: "a", token: token({ epoch: 2, hop: 1 }) });
  assert.deepEqual(out.result, { ok: false, type: "notYet", epoch: 1 });
  out = h.step({ type: "writes", from: "a", epoch: 2, entries: [put(1, "a", "k", "1", 2)] });
  assert.deepEqual(out.result, { ok: false, type: "notYet", epoch: 1 });
  assert.deepEqual(out.persist, [], "nothing of it stored");
  h.step({ type: "promised", epoch: 2 });
  out = h.step({ type: "token", from: "a", token: token({ epoch: 2, hop: 1 }) });
  assert.deepEqual(out.result, { ok: false, type: "notYet", epoch: 1 }, "promised is not installed: the sender retries, it does not give up");
  assert.equal(h.node.replica.lastApplied, 0);
  assert.equal(h.node.status(0).lastHop, 0);
  h.install(viewOf(2), { promise: false });
  out = h.step({ type: "writes", from: "a", epoch: 2, entries: [put(1, "a", "k", "1", 2)] });
  assert.deepEqual(out.result, { ok: true, type: "writes", ackedTo: 1 });
  out = h.step({ type: "token", from: "a", token: token({ epoch: 2, hop: 1, wseq: 1, commit: 1 }) });
  assert.deepEqual(out.result, { ok: true, type: "token", duplicate: false });
});

test("stale: a token or writes of an epoch below the promised one are refused, even above the installed view", () => {
  const h = harness();
  h.step({ type: "promised", epoch: 3 });
  assert.deepEqual([h.node.status(0).epoch, h.node.status(0).refuseBelowEpoch], [1, 3]);
  for (const epoch of [1, 2]) {
    const tokenOut = h.step({ type: "token", from: "a", token: token({ epoch, hop: 7 }) });
    assert.deepEqual(tokenOut.result, { ok: false, type: "stale", epoch: 3 }, `token of epoch ${epoch}`);
    const writesOut = h.step({ type: "writes", from: "a", epoch, entries: [put(1, "a", "k", "1", epoch)] });
    assert.deepEqual(writesOut.result, { ok: false, type: "stale", epoch: 3 }, `writes of epoch ${epoch}`);
  }
  assert.equal(h.node.replica.lastApplied, 0);
  assert.equal(h.node.status(0).token, "away");
});

test("promised: the held token is dropped (its section ends 'epoch', writes in flight are answered ring_unavailable) and nothing is granted until a new view's token", () => {
  const h = harness({ leases: "none" });
  const w1 = h.enter();
  h.step({ type: "token", from: "a", token: token({ hop: 1 }) }, 10);
  let out = h.step({ type: "lease", epoch: 1, validUntilMs: 60_000 }, 10);
  assert.equal(fenceOf(replies(out).get(w1.reqId)), F1 + 1);
  const write = h.write(F1 + 1, "k", "v");
  const w2 = h.enter();
  out = h.step({ type: "promised", epoch: 2 }, 20);
  assert.deepEqual(only(out, "sectionEnded"), [{ type: "sectionEnded", fence: F1 + 1, reason: "epoch" }]);
  const answer = replies(out).get(write.reqId);
  assert.ok(answer && !answer.ok && answer.error.code === "ring_unavailable", JSON.stringify(answer));
  assert.equal(replies(out).get(w2.reqId), undefined, "the waiter stays queued, ungranted");
  assert.equal(sentToken(out), undefined, "the void token is not passed on either");
  assert.deepEqual(only(out, "wantLease"), [], "no lease is asked for in a promised, uninstalled epoch");
  const status = h.node.status(20);
  assert.deepEqual([status.token, status.heldToken, status.section, status.leaseValidUntilMs], ["away", null, null, null]);
  // A late lease of the old epoch and the old token coming around change nothing.
  h.step({ type: "lease", epoch: 1, validUntilMs: 60_000 }, 30);
  out = h.step({ type: "token", from: "a", token: token({ hop: 4, fence: F1 + 1 }) }, 30);
  assert.equal(out.result.type, "stale");
  assert.equal(replies(out).get(w2.reqId), undefined);
  // The new view's token grants, once its own lease is there.
  h.install(viewOf(2));
  out = h.step({ type: "token", from: "a", token: token({ epoch: 2, hop: 1, fence: F1 + 1 }) }, 40);
  assert.deepEqual(only(out, "wantLease"), [{ type: "wantLease", epoch: 2, sectionMaxMs: LIMITS.ringLeaseMs }]);
  assert.equal(replies(out).get(w2.reqId), undefined);
  out = h.step({ type: "lease", epoch: 2, validUntilMs: 60_000 }, 40);
  assert.equal(fenceOf(replies(out).get(w2.reqId)), fenceFloor(2) + 1);
});

test("install: successor and predecessor are the view's neighbours (two dead nodes in a row are skipped), stored once", () => {
  const ring = ["a", "b", "c", "d", "e"];
  const b = harness({ ring });
  assert.deepEqual([b.node.successor, b.node.predecessor], ["c", "a"]);
  const out = b.install(viewOf(2, ["a", "b", "e"]));
  const status = b.node.status(0);
  assert.deepEqual([status.members, status.successor, status.predecessor, status.epoch, status.refuseBelowEpoch], [["a", "b", "e"], "e", "a", 2, 2]);
  assert.deepEqual(out.persist, [{ type: "hardState", state: { epoch: 2, fenceMax: 0, lastHop: 0 } }]);
  const passed = b.step({ type: "token", from: "a", token: token({ epoch: 2, hop: 1 }) });
  assert.equal(only(passed, "sendToken")[0]?.to, "e", "c and d are skipped");
  const e = harness({ id: "e", ring });
  e.install(viewOf(2, ["a", "b", "e"]));
  assert.deepEqual([e.node.successor, e.node.predecessor], ["a", "b"]);
  const fromD = e.step({ type: "writes", from: "d", epoch: 2, entries: [put(1, "d", "k", "1", 2)] });
  assert.equal(fromD.result.type, "error", "d is no longer e's predecessor");
  assert.equal(e.step({ type: "writes", from: "b", epoch: 2, entries: [put(1, "b", "k", "1", 2)] }).result.ok, true);
});

test("grant wait: a holder with waiters passes the token on at the idle pace while the view's wait for older sections runs (so the members see it), and grants once it is about over", () => {
  const b = harness();
  const waitMs = 10 * LIMITS.tokenIdlePaceMs;
  b.install(viewOf(2), { grantNotBeforeMs: waitMs });
  const { reqId } = b.enter();
  const arrived = b.step({ type: "token", from: "a", token: token({ epoch: 2, hop: 1 }) }, 0);
  assert.equal(only(arrived, "sendToken").length, 0, "it rests one pace first");
  assert.equal(replies(arrived).get(reqId), undefined, "no grant during the wait");
  const paced = b.step({ type: "tick" }, LIMITS.tokenIdlePaceMs);
  assert.equal(only(paced, "sendToken")[0]?.to, "c", "after one pace it moves on");
  assert.equal(replies(paced).get(reqId), undefined);
  // Back at the end of the wait (less than a pace left): it stays and grants when the wait is over.
  const back = b.step({ type: "token", from: "a", token: token({ epoch: 2, hop: 4 }) }, waitMs - LIMITS.tokenIdlePaceMs / 2);
  assert.equal(only(back, "sendToken").length, 0, "it keeps the token for the grant");
  assert.equal(replies(back).get(reqId), undefined, "still inside the wait");
  const granted = b.step({ type: "tick" }, waitMs);
  assert.equal((replies(granted).get(reqId) as { type: string }).type, "granted");
});

// ---- The regenerator ----------------------------------------------------------------------------

/** The epoch's marker (Raft's no-op) that `regenerator` writes at `wseq`, stamped `epoch`. */
function markerOf(wseq: number, regenerator: string, epoch: number): RingEntry {
  return { epoch, wseq, author: regenerator, origin: regenerator, op: { type: "noop", key: "" } };
}

test("regenerator: the epoch's token with fence fenceFloor(epoch); above startWseq cut; resendFromWseq..startWseq re-sent with their original stamps, origin = itself, then the epoch's marker at startWseq + 1; their return commits them; the token moves only after the marker's; new writes follow the marker in the new epoch", () => {
  // Node a of a → b → c: write 1 committed, writes 2..5 of epoch 1 still travelling.
  const h = harness({ id: "a" });
  h.step({ type: "writes", from: "c", epoch: 1, entries: [put(1, "c", "k", "1")] });
  h.step({ type: "token", from: "c", token: token({ hop: 1, wseq: 1, commit: 1 }) });
  h.step({ type: "tokenDelivered", epoch: 1, hop: 2 });
  const leftovers = [put(2, "c", "k", "2"), put(3, "b", "k", "3"), put(4, "b", "j", "4"), put(5, "b", "k", "5")];
  h.step({ type: "writes", from: "c", epoch: 1, entries: leftovers });
  assert.deepEqual([h.node.replica.lastApplied, h.node.replica.commit], [5, 1]);
  const w = h.enter();
  const view = viewOf(2, ["a", "b", "c"], { regenerator: "a", startWseq: 4, resendFromWseq: 2 });
  let out = h.install(view, { regenerate: true });
  assert.ok(logRecords(out).some((r) => r.type === "truncate" && r.from === 5), "write 5 (above startWseq) is cut");
  const marker = markerOf(5, "a", 2);
  assert.ok(logRecords(out).some((r) => r.type === "entry" && r.entry.wseq === 5 && r.entry.op.type === "noop"), "the marker is stored in place of write 5");
  assert.deepEqual([h.node.replica.lastApplied, h.node.viewFacts(h.now()).lastWriteEpoch], [5, 2], "the log ends in the marker, stamped with the new epoch");
  const held = h.node.status(h.now()).heldToken;
  assert.deepEqual(held, { epoch: 2, hop: 1, wseq: 5, commit: 1, fence: fenceFloor(2), idleHops: 0 }, "the token's wseq is the marker's");
  const resent = sentWrites(out);
  assert.deepEqual(resent, [...leftovers.slice(0, 3).map((e) => resentBy("a", e)), marker], "original stamps (1) and authors, origin a; then the marker");
  assert.equal(only(out, "sendWrites")[0].epoch, 2, "in a message of the new epoch");
  assert.equal(sentToken(out), undefined);
  assert.equal(replies(out).get(w.reqId), undefined, "no grant before the re-sent writes are back");
  // Part of them back (from c, a's predecessor), then all but the marker: no grant, the token
  // stays. (Where the commit stands meanwhile is not pinned here: Raft would not move it before
  // the marker is back, the node does; docs/ring-view.md, Known gaps.)
  out = h.step({ type: "writes", from: "c", epoch: 2, entries: resent.slice(0, 2) });
  assert.equal(replies(out).get(w.reqId), undefined);
  assert.equal(sentToken(out), undefined);
  out = h.step({ type: "writes", from: "c", epoch: 2, entries: resent.slice(2, 3) });
  assert.equal(replies(out).get(w.reqId), undefined, "every re-sent write is back, but no grant before the marker is");
  assert.equal(sentToken(out), undefined);
  out = h.step({ type: "writes", from: "c", epoch: 2, entries: resent.slice(3) });
  assert.equal(h.node.replica.commit, 5, "the marker is back: it and the re-sent writes are committed");
  assert.equal(h.node.status(h.now()).heldToken?.commit, 5);
  const fence = fenceOf(replies(out).get(w.reqId));
  assert.equal(fence, fenceFloor(2) + 1);
  assert.equal(h.node.read("k", false), "3", "the marker changes no key");
  const write = h.write(fence, "k", "new");
  assert.deepEqual(sentWrites(write.out), [put(6, "a", "k", "new", 2)], "wseq above the marker, stamped with the new epoch");
  out = h.step({ type: "leave", reqId: h.nextReq(), fence });
  assert.equal(sentToken(out), undefined, "its write is still travelling");
  h.step({ type: "wake" }); // another node asks: the token leaves once the write is back
  out = h.step({ type: "writes", from: "c", epoch: 2, entries: [put(6, "a", "k", "new", 2)] }, h.now() + LIMITS.tokenHoldMs); // and the visit's holding time is over
  assert.deepEqual(replies(out).get(write.reqId), { ok: true, type: "written", wseq: 6 });
  assert.deepEqual(sentToken(out), { epoch: 2, hop: 2, wseq: 6, commit: 6, fence, idleHops: 1 });
  assert.equal(h.node.read("j", false), "4", "the re-sent writes are committed");
});

test("regenerator with nothing to re-send (every member committed up to startWseq): only the marker goes round, and the token moves as soon as it is back", () => {
  const h = harness({ id: "a" });
  h.step({ type: "writes", from: "c", epoch: 1, entries: [put(1, "c", "k", "1")] });
  h.step({ type: "token", from: "c", token: token({ hop: 1, wseq: 1, commit: 1 }) });
  h.step({ type: "tokenDelivered", epoch: 1, hop: 2 });
  const out = h.install(viewOf(2, ["a", "b", "c"], { startWseq: 1, resendFromWseq: 2 }), { regenerate: true });
  assert.deepEqual(sentWrites(out), [markerOf(2, "a", 2)]);
  assert.equal(sentToken(out), undefined, "the token waits for its marker");
  const back = h.step({ type: "writes", from: "c", epoch: 2, entries: [markerOf(2, "a", 2)] });
  assert.deepEqual(sentToken(back), { epoch: 2, hop: 2, wseq: 2, commit: 2, fence: fenceFloor(2), idleHops: 1 });
  assert.equal(h.node.read("k", false), "1");
});

// ---- Raft's log rules at a receiver ------------------------------------------------------------

/** Five nodes a..e; epoch 2: a is granted and writes X = k, then dies before X leaves it. */
function xWrittenByADeadA(limits: typeof LIMITS): { ring: Ring; xWseq: number } {
  const ring = new Ring(["a", "b", "c", "d", "e"], { limits });
  ring.viewChange(1, ["a", "b", "c", "d", "e"]);
  ring.deliver();
  const two = ring.viewChange(2, ["a", "b", "c", "d", "e"]);
  ring.nowMs += two.grantWaitMs;
  const enterA = ring.enter("a");
  ring.deliver();
  ring.write("a", fenceOf(ring.reply("a", enterA)), "k", "X");
  ring.crash("a");
  return { ring, xWseq: ring.nodes.get("a")!.node.replica.lastApplied };
}

test("Raft: in a current-epoch message a differing uncommitted version replaces the local one and cuts what follows, whatever the stamps", () => {
  const h = harness();
  h.step({ type: "writes", from: "a", epoch: 1, entries: [put(1, "a", "k", "1")] });
  h.step({ type: "token", from: "a", token: token({ hop: 1, wseq: 1, commit: 1 }) });
  // An interrupted recovery of epoch 3 left writes 2 and 3 stamped 3 here, uncommitted.
  h.install(viewOf(3));
  h.step({ type: "writes", from: "a", epoch: 3, entries: [put(2, "c", "k", "three", 3), put(3, "c", "k", "three again", 3)] });
  // Epoch 4's regenerator holds write 2 as stamped in epoch 2: its version rules, lower stamp or not.
  h.install(viewOf(4));
  const theirs = resentBy("a", put(2, "c", "k", "two", 2));
  const out = h.step({ type: "writes", from: "a", epoch: 4, entries: [theirs] });
  assert.deepEqual(out.result, { ok: true, type: "writes", ackedTo: 2 });
  assert.deepEqual(logRecords(out), [{ type: "truncate", from: 2 }, { type: "entry", entry: theirs }]);
  assert.equal(h.node.replica.lastApplied, 2, "write 3 (after the replaced one) is cut");
  assert.equal(h.node.read("k", true), "two");
  assert.deepEqual(sentWrites(out), [theirs], "and passed on");
});

test("Raft: a copy with the same stamp is kept (nothing stored) and forwarded once in the epoch", () => {
  const h = harness();
  const mine = [put(1, "c", "k", "1"), put(2, "c", "k", "2")];
  h.step({ type: "writes", from: "a", epoch: 1, entries: mine });
  h.install(viewOf(2));
  const resent = mine.map((e) => resentBy("a", e));
  const out = h.step({ type: "writes", from: "a", epoch: 2, entries: resent });
  assert.deepEqual(out.result, { ok: true, type: "writes", ackedTo: 2 });
  assert.deepEqual(logRecords(out), [], "the same version: kept as it is");
  assert.deepEqual(sentWrites(out), resent, "passed on in the new epoch, though it was passed on in epoch 1");
  const again = h.step({ type: "writes", from: "a", epoch: 2, entries: resent });
  assert.deepEqual(again.result, { ok: true, type: "writes", ackedTo: 2 });
  assert.deepEqual(sentWrites(again), [], "a resent copy of the message is not passed on twice");
});

test("Raft: a differing version of a COMMITTED write is impossible (the regenerator holds every committed one): the core fails stop", () => {
  const h = harness();
  h.step({ type: "writes", from: "a", epoch: 1, entries: [put(1, "a", "k", "1")] });
  h.step({ type: "token", from: "a", token: token({ hop: 1, wseq: 1, commit: 1 }) });
  h.install(viewOf(2));
  assert.throws(
    () => h.step({ type: "writes", from: "a", epoch: 2, entries: [resentBy("a", put(1, "c", "k", "other", 2))] }),
    /write 1 stamped 2 differs from the committed one stamped 1/,
  );
});

test("Raft: caughtUp takes the entries committed at the sender or stamped with the current epoch, and nothing while promised above the installed epoch", () => {
  const committedOnly = harness({ view: viewOf(2) });
  committedOnly.step({ type: "caughtUp", reply: { commit: 2, entries: [put(1, "a", "k", "1"), put(2, "a", "k", "2"), put(3, "a", "k", "3")] } });
  assert.deepEqual([committedOnly.node.replica.lastApplied, committedOnly.node.replica.commit], [2, 2], "write 3 is uncommitted there and of an older epoch");
  const currentEpoch = harness({ view: viewOf(2) });
  currentEpoch.step({ type: "caughtUp", reply: { commit: 1, entries: [put(1, "a", "k", "1"), put(2, "a", "k", "2", 2), put(3, "a", "k", "3", 2)] } });
  assert.deepEqual([currentEpoch.node.replica.lastApplied, currentEpoch.node.replica.commit], [3, 1], "writes 2 and 3 are of this epoch");
  const promised = harness();
  promised.step({ type: "promised", epoch: 2 });
  const out = promised.step({ type: "caughtUp", reply: { commit: 2, entries: [put(1, "a", "k", "1"), put(2, "a", "k", "2")] } });
  assert.equal(promised.node.replica.lastApplied, 0, "the log stays as reported in the promise");
  assert.deepEqual(out.persist, []);
});

// ---- Restart -------------------------------------------------------------------------------------

test("restart: a node rebuilt with a stored view of epoch e refuses e's tokens and writes (stale) and takes e + 1 only once that view is installed", () => {
  const h = harness({ view: viewOf(3) });
  h.step({ type: "writes", from: "a", epoch: 3, entries: [put(1, "a", "k", "1", 3)] });
  h.step({ type: "token", from: "a", token: token({ epoch: 3, hop: 1, wseq: 1, commit: 1 }) });
  const r = restart(h, 1_000, viewOf(3));
  const status = r.node.status(1_000);
  assert.deepEqual([status.epoch, status.refuseBelowEpoch, status.successor, status.predecessor], [0, 4, "c", "a"]);
  assert.equal(r.node.replica.commit, 1);
  assert.deepEqual(r.step({ type: "token", from: "a", token: token({ epoch: 3, hop: 9, wseq: 1, commit: 1 }) }).result, { ok: false, type: "stale", epoch: 4 });
  assert.deepEqual(r.step({ type: "writes", from: "a", epoch: 3, entries: [put(2, "a", "k", "2", 3)] }).result, { ok: false, type: "stale", epoch: 4 });
  assert.deepEqual(r.step({ type: "token", from: "a", token: token({ epoch: 4, hop: 1, wseq: 1, commit: 1 }) }).result, { ok: false, type: "notYet", epoch: 0 });
  assert.deepEqual(r.step({ type: "writes", from: "a", epoch: 4, entries: [put(2, "a", "k", "2", 4)] }).result, { ok: false, type: "notYet", epoch: 0 });
  r.install(viewOf(4));
  assert.deepEqual(r.step({ type: "writes", from: "a", epoch: 4, entries: [put(2, "a", "k", "2", 4)] }).result, { ok: true, type: "writes", ackedTo: 2 });
  assert.deepEqual(r.step({ type: "token", from: "a", token: token({ epoch: 4, hop: 1, wseq: 2, commit: 2 }) }).result, { ok: true, type: "token", duplicate: false });
  // A promise stored above the view counts too (the daemon passes the promised epoch).
  const promisedHigher = harness({ stored: storedOf(h), storedView: viewOf(3), promisedEpoch: 6 });
  assert.equal(promisedHigher.node.status(0).refuseBelowEpoch, 6);
  assert.deepEqual(promisedHigher.step({ type: "token", from: "a", token: token({ epoch: 5, hop: 1, wseq: 1, commit: 1 }) }).result, { ok: false, type: "stale", epoch: 6 });
});

test("restart: the hard state is stored on install only, never per hop (nor per grant: docs/ring.md, Durability)", () => {
  const h = harness();
  for (const hop of [1, 4, 7]) {
    const out = h.step({ type: "token", from: "a", token: token({ hop }) });
    assert.equal(out.result.ok, true);
    assert.deepEqual(out.persist, [], `hop ${hop} taken and passed on without a disk write`);
    h.step({ type: "tokenDelivered", epoch: 1, hop: hop + 1 });
  }
  const entered = h.enter();
  const granted = h.step({ type: "token", from: "a", token: token({ hop: 10, fence: F1 + 3 }) });
  assert.equal(fenceOf(replies(granted).get(entered.reqId)), F1 + 4, "granted");
  assert.deepEqual(granted.persist, [], "a grant writes nothing: the token carries the counter");
  assert.deepEqual(h.step({ type: "promised", epoch: 2 }).persist, [], "the promise is the view core's hard state, not the node's");
  const installed = h.install(viewOf(2));
  assert.deepEqual(installed.persist, [{ type: "hardState", state: { epoch: 2, fenceMax: F1 + 4, lastHop: 0 } }], "the fence granted is stored with the next view");
});

// ---- Snapshots keep the epoch stamp ---------------------------------------------------------------

test("snapshots keep the epoch stamp: viewFacts().lastWriteEpoch after compaction, after a restart from the snapshot, and after a snapshot install", () => {
  const limits = { ...LIMITS, ringSnapshotEveryWrites: 2, ringLogRetainMax: 0 };
  const h = harness({ view: viewOf(2), limits });
  h.step({ type: "writes", from: "a", epoch: 2, entries: [put(1, "a", "k", "1"), put(2, "a", "k", "2", 2)] });
  const out = h.step({ type: "token", from: "a", token: token({ epoch: 2, hop: 1, wseq: 2, commit: 2 }) });
  const snapshot = out.persist.find((p) => p.type === "snapshot");
  assert.ok(snapshot?.type === "snapshot");
  assert.deepEqual([snapshot.snapshot.wseq, snapshot.snapshot.epoch], [2, 2]);
  assert.equal(h.node.replica.logStart, 3, "every committed write compacted away");
  assert.deepEqual([h.node.viewFacts(0).lastApplied, h.node.viewFacts(0).lastWriteEpoch], [2, 2], "after compaction");
  const rebuilt = harness({ stored: storedOf(h), limits });
  assert.deepEqual([rebuilt.node.viewFacts(0).lastApplied, rebuilt.node.viewFacts(0).lastWriteEpoch], [2, 2], "restarted with an empty tail");
  const fresh = harness({ view: viewOf(2) });
  fresh.step({ type: "caughtUp", reply: { commit: 5, snapshot: { wseq: 5, epoch: 2, kv: [["k", "5"]] }, entries: [] } });
  assert.deepEqual([fresh.node.viewFacts(0).lastApplied, fresh.node.viewFacts(0).lastWriteEpoch], [5, 2], "after a snapshot install");
  assert.equal(fresh.node.read("k", false), "5");
  const old = harness({ view: viewOf(2) });
  old.step({ type: "caughtUp", reply: { commit: 5, snapshot: { wseq: 5, kv: [] }, entries: [] } });
  assert.equal(old.node.viewFacts(0).lastWriteEpoch, 0, "a snapshot of the old format has no stamp: 0");
});

// ---- Three nodes through a chain of interrupted recoveries -------------------------------------

/**
 * Pure ring nodes wired by hand: a FIFO of messages the test delivers (all, or only some), crashes
 * that lose a node's memory and its messages, restarts from what it stored, and view changes
 * decided by the view core's own decision (decide.ts) from the promisers' facts.
 */
class Ring {
  nowMs = 0;
  readonly nodes = new Map<string, Harness>();
  /** The view each node installed last (what its driver would have stored). */
  readonly views = new Map<string, View>();
  readonly queue: Array<{ from: string; to: string; input: RingInput }> = [];
  readonly down = new Set<string>();
  /** Client replies, by "node:reqId". */
  readonly replies = new Map<string, ClientReply>();

  constructor(private readonly ids: string[], private readonly options: HarnessOptions) {
    for (const id of ids) this.nodes.set(id, harness({ ...options, id, ring: ids, view: null }));
  }

  step(id: string, input: RingInput): RingOutput {
    const out = this.nodes.get(id)!.step(input, this.nowMs);
    for (const e of out.effects) {
      if (e.type === "sendToken") this.queue.push({ from: id, to: e.to, input: { type: "token", from: id, token: e.token } });
      if (e.type === "sendWrites") this.queue.push({ from: id, to: e.to, input: { type: "writes", from: id, epoch: e.epoch, entries: e.entries } });
      if (e.type === "fetch" && !this.down.has(e.from)) {
        this.queue.push({ from: e.from, to: id, input: { type: "caughtUp", reply: this.nodes.get(e.from)!.node.catchUp(e.fromWseq) } });
      }
      if (e.type === "reply") this.replies.set(`${id}:${e.reqId}`, e.reply);
    }
    return out;
  }

  /** Delivers queued messages in order while `which` accepts them (others stay queued); bounded. */
  deliver(which: (m: { from: string; to: string; input: RingInput }) => boolean = () => true): void {
    for (let n = 0; n < 1_000; n++) {
      const index = this.queue.findIndex(which);
      if (index < 0) return;
      const [m] = this.queue.splice(index, 1);
      if (this.down.has(m.to) || this.down.has(m.from)) continue;
      const out = this.step(m.to, m.input);
      if (m.input.type === "token" && out.result.ok) this.step(m.from, { type: "tokenDelivered", epoch: m.input.token.epoch, hop: m.input.token.hop });
    }
    assert.fail("messages still flowing after 1000 deliveries");
  }

  enter(id: string): number {
    const reqId = this.nodes.get(id)!.nextReq();
    this.step(id, { type: "enter", reqId, waitMs: 60_000, leaseMs: LIMITS.ringLeaseMaxMs });
    return reqId;
  }

  write(id: string, fence: number, key: string, value: string): number {
    const reqId = this.nodes.get(id)!.nextReq();
    this.step(id, { type: "write", reqId, fence, op: { type: "put", key, value } });
    return reqId;
  }

  reply(id: string, reqId: number): ClientReply | undefined {
    return this.replies.get(`${id}:${reqId}`);
  }

  crash(id: string): void {
    this.down.add(id);
  }

  restart(id: string): void {
    this.nodes.set(id, restart(this.nodes.get(id)!, this.nowMs, this.views.get(id)!, { ...this.options, id, ring: this.ids }));
    this.down.delete(id);
  }

  /** A view change of `epoch` whose promisers are `members`: promised, the decision, install. */
  viewChange(epoch: number, members: string[]): View {
    const promises = new Map<string, Promised>();
    for (const id of members) {
      this.step(id, { type: "promised", epoch });
      const f = this.nodes.get(id)!.node.viewFacts(this.nowMs);
      const viewEpoch = this.views.get(id)?.epoch ?? 0;
      // No lease holds or restarts reported: the grant wait is not under test here (the view
      // core's tests own it). The two fields keep this test compiling against PromiseFacts
      // versions that carry them.
      const facts = { ...f, tokenHere: f.token === "held" ? "held" as const : "no" as const, holdEndedAgoMs: {}, restartedAgoMs: null };
      promises.set(id, { prior: { epoch: viewEpoch, coordinator: "a" }, viewEpoch, facts, receivedAtMs: this.nowMs });
    }
    const view = decideView({ epoch, coordinator: members[0] }, promises, this.ids, DEFAULT_SETTINGS, this.nowMs);
    for (const id of members) {
      this.views.set(id, view);
      this.step(id, { type: "install", view, regenerate: view.regenerator === id, grantNotBeforeMs: this.nowMs + view.grantWaitMs });
    }
    return view;
  }
}

test("three nodes, two interrupted recoveries: a write acknowledged in epoch 1 survives, because a half-way re-send keeps its stamps and cuts nothing (docs/ring-view.md, the chain that re-stamping breaks)", () => {
  // One write per batch, so a re-send can stop half-way.
  const ring = new Ring(["a", "b", "c"], { limits: { ...LIMITS, ringBatchWritesMax: 1 } });
  ring.viewChange(1, ["a", "b", "c"]);
  // Epoch 1: a's marker is write 1; a writes k1 and k2 (writes 2 and 3); both go around and are
  // acknowledged, then a dies holding the token (b and c learnt only the marker's commit: the
  // commit travels with the token).
  const enter = ring.enter("a");
  // Another node asks too (a wake): a's waiter, queued while the marker is out, is served at the
  // token's next visit, so the token goes round first and b and c learn the marker's commit.
  ring.step("a", { type: "wake" });
  ring.nowMs += LIMITS.tokenHoldMs; // the marker comes back after the visit's holding time
  ring.deliver(); // the marker goes round, the token comes round to a
  const fence = fenceOf(ring.reply("a", enter));
  const w1 = ring.write("a", fence, "k1", "1");
  const w2 = ring.write("a", fence, "k2", "2");
  ring.deliver();
  assert.deepEqual([ring.reply("a", w1), ring.reply("a", w2)], [{ ok: true, type: "written", wseq: 2 }, { ok: true, type: "written", wseq: 3 }]);
  assert.equal(ring.nodes.get("c")!.node.replica.commit, 1);
  ring.crash("a");
  // Epoch 2 (b, c): b regenerates, re-sends 2 and 3 and writes its marker at 4; only write 2
  // reaches c before b dies.
  const two = ring.viewChange(2, ["b", "c"]);
  assert.deepEqual([two.regenerator, two.startWseq, two.resendFromWseq], ["b", 3, 2]);
  ring.deliver((m) => m.from === "b" && m.input.type === "writes" && m.input.entries[0].wseq === 2);
  ring.crash("b");
  const c = ring.nodes.get("c")!.node;
  assert.deepEqual([c.replica.lastApplied, c.viewFacts(ring.nowMs).lastWriteEpoch], [3, 1], "c keeps write 3, and write 2 keeps its stamp (no marker of epoch 2 here)");
  // Epoch 3 (a back, c): the most up-to-date log regenerates; the acknowledged write 3 survives.
  ring.restart("a");
  ring.nowMs += 1;
  const three = ring.viewChange(3, ["a", "c"]);
  assert.deepEqual([three.regenerator, three.startWseq], ["a", 3], "a and c tie on (1, 3): file order");
  ring.deliver();
  for (const id of ["a", "c"]) {
    const node = ring.nodes.get(id)!.node;
    assert.deepEqual([node.replica.commit, node.read("k1", false), node.read("k2", false)], [4, "1", "2"], `${id} has every acknowledged write and epoch 3's marker, committed`);
  }
  // The new epoch writes after them.
  ring.nowMs += three.grantWaitMs;
  const again = ring.enter("c");
  ring.deliver();
  const fence3 = fenceOf(ring.reply("c", again));
  assert.ok(fence3 > fenceFloor(3));
  const w3 = ring.write("c", fence3, "k3", "3");
  ring.deliver();
  assert.deepEqual(ring.reply("c", w3), { ok: true, type: "written", wseq: 5 });
  for (const id of ["a", "c"]) {
    const replica = ring.nodes.get(id)!.node.replica;
    const log = [1, 2, 3, 4, 5].map((w) => `${replica.entryAt(w)?.op.type}@${replica.entryAt(w)?.epoch}`);
    assert.deepEqual(log, ["noop@1", "put@1", "put@1", "noop@3", "put@3"], `${id}: epoch 1's marker and writes with their original stamps, then epoch 3's marker and write`);
  }
});

test("Raft's Figure 8: a write committed by a re-send under its old stamp is not overwritten by a node whose log ends in a newer, never-committed entry, because the regenerator's marker commits with it", () => {
  // The reviewer's reproduction (docs/ring-view.md, "No committed write is lost"), five nodes.
  // Checked without the marker (its lines in RingNode.regenerate commented out, then restored):
  // the test fails. Epoch 4 then commits X under its stamp 2, b's lone entry stamped 3 outranks
  // it, and b is chosen as epoch 5's regenerator (the assertion on five.regenerator); past that,
  // c fails stop on b's re-sent version ("write 1 stamped 3 differs from the committed one
  // stamped 2"). With the marker, the prefix that commits X ends in epoch 4's marker, which
  // outranks b's entry.
  // Epoch 2: a is granted and writes X; a dies before X leaves it.
  const { ring, xWseq } = xWrittenByADeadA(LIMITS);
  // Epoch 3 (b, c, d, e): b regenerates with a client waiting, writes what it may before anything
  // leaves it, and dies: with the marker its log ends in its marker (no grant before the marker is
  // back); without, its client is granted at once and writes Y. Either way b alone holds an entry
  // stamped 3 at X's wseq.
  const enterB = ring.enter("b");
  const three = ring.viewChange(3, ["b", "c", "d", "e"]);
  assert.equal(three.regenerator, "b");
  ring.nowMs += three.grantWaitMs;
  ring.step("b", { type: "tick" });
  const grantedB = ring.reply("b", enterB);
  if (grantedB?.ok) ring.write("b", fenceOf(grantedB), "k", "Y");
  ring.crash("b");
  const bFacts = ring.nodes.get("b")!.node.viewFacts(ring.nowMs);
  assert.deepEqual([bFacts.lastApplied, bFacts.lastWriteEpoch], [xWseq, 3], "b's log ends in an entry stamped 3 at X's wseq");
  for (const id of ["c", "d", "e"]) assert.equal(ring.nodes.get(id)!.node.replica.lastApplied, xWseq - 1, `${id} holds neither X nor b's entry`);
  // Epoch 4 (a back, c, d, e; b down): a's log ends highest, at X; it re-sends X with its stamp 2
  // and everything comes back: X is committed at every member.
  ring.restart("a");
  ring.nowMs += 1;
  const four = ring.viewChange(4, ["a", "c", "d", "e"]);
  assert.equal(four.regenerator, "a");
  ring.deliver();
  for (const id of ["a", "c", "d", "e"]) {
    const node = ring.nodes.get(id)!.node;
    assert.ok(node.replica.commit >= xWseq, `${id} committed X (${node.replica.commit})`);
    assert.equal(node.read("k", false), "X");
  }
  // Epoch 5 (b back, c, d; a down): the regenerator must hold the committed prefix.
  ring.crash("a");
  ring.restart("b");
  ring.nowMs += 1;
  const five = ring.viewChange(5, ["b", "c", "d"]);
  assert.equal(five.regenerator, "c", "c and d end in epoch 4's marker, above b's entry stamped 3; file order");
  ring.deliver();
  for (const id of ["b", "c", "d"]) {
    const node = ring.nodes.get(id)!.node;
    assert.ok(node.replica.commit >= xWseq, `${id} committed X's wseq (${node.replica.commit})`);
    assert.equal(node.read("k", false), "X", `${id} ends with X`);
  }
});

// Found by a test of the marker (issue 9): the regenerator's commit moved as each re-sent write came
// back, before its marker was back (RingNode.returned), and was stored. Epoch 4's regenerator a
// commits X (stamped 2) and serves it as committed; a dies before its marker went anywhere; b,
// whose log ends in its epoch-3 marker at X's wseq, regenerates epoch 5 and overwrites X on c, d;
// a restarts with X committed, epoch 6 re-sends only above every promiser's commit, and the
// replicas stay different for good (a: k = X; b, c, d: no k).
test("a regenerator commits no re-sent write before its marker is back (Raft: old-term entries commit only with an entry of the leader's term)", () => {
  const { ring, xWseq } = xWrittenByADeadA({ ...LIMITS, ringBatchWritesMax: 1 });
  assert.equal(ring.viewChange(3, ["b", "c", "d", "e"]).regenerator, "b");
  ring.crash("b"); // its marker (stamped 3, at X's wseq) never left it
  ring.restart("a");
  ring.nowMs += 1;
  assert.equal(ring.viewChange(4, ["a", "c", "d", "e"]).regenerator, "a");
  // Only X goes round; epoch 4's marker is delivered to nobody.
  ring.deliver((m) => m.input.type === "writes" && m.input.entries.every((e) => e.wseq === xWseq));
  const a = ring.nodes.get("a")!.node;
  assert.ok(a.replica.commit < xWseq, `a committed X (commit ${a.replica.commit}) before its marker is back`);
  assert.equal(a.read("k", false), undefined, "a serves X as committed");
  ring.crash("a");
  ring.restart("b");
  ring.nowMs += 1;
  ring.viewChange(5, ["b", "c", "d"]);
  ring.deliver();
  ring.restart("a");
  ring.nowMs += 1;
  ring.viewChange(6, ["a", "b", "c", "d"]);
  ring.deliver();
  const values = ["a", "b", "c", "d"].map((id) => ring.nodes.get(id)!.node.read("k", false));
  assert.ok(values.every((v) => v === values[0]), `replicas differ: ${JSON.stringify(values)}`);
});

// Found by tests/ring_disk_process_test.ts (the snapshot case hung with the regenerator's token
// stuck, outstandingWrites 3): a member behind a gap fetches,
// takes the epoch's marker from the catch-up (stamped with the current epoch) and forwards it,
// which moves RingWrites.forwardedTo past the re-sent writes the snapshot covered; their ring
// copies then are never passed on, never come back to the regenerator, and its token waits forever.
test("a caught-up marker does not stop the re-sent writes' copies from being passed on", () => {
  const h = harness({ view: null });
  h.install(viewOf(2, ["a", "b", "c"], { regenerator: "a", startWseq: 7, resendFromWseq: 1 }));
  const marker = { epoch: 2, wseq: 8, author: "a", origin: "a", op: { type: "noop" as const, key: "" as const } };
  const batch = [5, 6, 7].map((w) => resentBy("a", put(w, "c", `x${w}`, "x"))).concat([marker]);
  const gap = h.step({ type: "writes", from: "a", epoch: 2, entries: batch });
  assert.equal(gap.result.type, "gap");
  h.step({ type: "caughtUp", reply: { commit: 7, snapshot: { wseq: 7, epoch: 1, kv: [["x5", "x"], ["x6", "x"], ["x7", "x"]] }, entries: [marker] } });
  const retried = h.step({ type: "writes", from: "a", epoch: 2, entries: batch });
  assert.deepEqual(retried.result, { ok: true, type: "writes", ackedTo: 8 });
  const passedOn = sentWrites(retried).map((e) => e.wseq);
  assert.ok([5, 6, 7].every((w) => passedOn.includes(w)), `the re-sent copies go on to c, so they come back to a (passed on: ${passedOn.join(", ")})`);
});
