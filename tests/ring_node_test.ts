/**
 * The pure ring node (lib/core/ring/ring_node.ts), driven by hand: explicit inputs and times, no
 * timers, no I/O. Each test states the rule it pins down. The harness installs the view of epoch
 * 1 (members = the ring) first, as the view change does before any token exists. The view
 * change's own rules at the node (its two inputs, the regenerator, Raft's log rules, restarts,
 * the epoch stamp of snapshots) are in tests/ring_node_view_test.ts.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import type { RingInput, RingNode, RingOutput } from "../lib/core/ring/ring_node.ts";
import { fenceFloor } from "../lib/core/ring/view_wire.ts";
import { F1, fenceOf, harness, LIMITS, logRecords, only, put, replies, restart, sentToken, storedOf, token, viewOf } from "./_ring_node.ts";

// ---- Token receipt ----------------------------------------------------------------------------

const TOKEN_CASES: Array<{
  name: string;
  before: RingInput[];
  input: RingInput;
  expect: (out: RingOutput, node: RingNode) => void;
}> = [
  {
    name: "a token from the predecessor is accepted and, idle, passed on at once",
    before: [],
    input: { type: "token", from: "a", token: token({ hop: 5 }) },
    expect: (out) => {
      assert.deepEqual(out.result, { ok: true, type: "token", duplicate: false });
      assert.deepEqual(sentToken(out), token({ hop: 6, idleHops: 1 }));
      assert.equal(only(out, "sendToken")[0].to, "c");
    },
  },
  {
    name: "a resent copy (hop not above the last seen) is acknowledged as a duplicate and dropped",
    before: [{ type: "token", from: "a", token: token({ hop: 5 }) }],
    input: { type: "token", from: "a", token: token({ hop: 5 }) },
    expect: (out, node) => {
      assert.deepEqual(out.result, { ok: true, type: "token", duplicate: true });
      assert.equal(sentToken(out), undefined);
      assert.equal(node.status(0).lastHop, 5);
    },
  },
  {
    name: "a token of an epoch older than the installed view is refused as stale and not passed on",
    before: [{ type: "promised", epoch: 3 }, { type: "install", view: viewOf(3), regenerate: false, grantNotBeforeMs: 0 }],
    input: { type: "token", from: "a", token: token({ epoch: 2, hop: 99 }) },
    expect: (out, node) => {
      assert.deepEqual(out.result, { ok: false, type: "stale", epoch: 3 });
      assert.equal(sentToken(out), undefined);
      assert.equal(node.status(0).epoch, 3);
      assert.equal(node.status(0).lastHop, 0);
    },
  },
  {
    name: "a token of a newer epoch than the installed view is not taken (notYet: only a view moves the node to an epoch)",
    before: [{ type: "token", from: "a", token: token({ epoch: 1, hop: 40 }) }],
    input: { type: "token", from: "a", token: token({ epoch: 2, hop: 1 }) },
    expect: (out, node) => {
      assert.deepEqual(out.result, { ok: false, type: "notYet", epoch: 1 });
      assert.deepEqual(out.persist, []);
      assert.equal(node.status(0).epoch, 1);
      assert.equal(node.status(0).lastHop, 40);
    },
  },
  {
    name: "a token whose commit differs from its wseq is a bad request and changes nothing",
    before: [],
    input: { type: "token", from: "a", token: token({ hop: 5, wseq: 2, commit: 1 }) },
    expect: (out, node) => {
      assert.equal(out.result.type, "error");
      assert.equal(node.status(0).token, "away");
      assert.equal(out.effects.length, 0);
    },
  },
  {
    name: "a token from a node that is not the predecessor is a bad request and changes nothing",
    before: [],
    input: { type: "token", from: "c", token: token({ hop: 5 }) },
    expect: (out, node) => {
      assert.equal(out.result.ok, false);
      assert.equal(out.result.type, "error");
      assert.equal(node.status(0).lastHop, 0);
      assert.equal(out.effects.length, 0);
    },
  },
];

for (const c of TOKEN_CASES) {
  test(`token receipt: ${c.name}`, () => {
    const h = harness();
    for (const input of c.before) h.step(input);
    c.expect(h.step(c.input), h.node);
  });
}

test("tokenDelivered clears the sending state, so the node reports no live token", () => {
  const h = harness();
  const out = h.step({ type: "token", from: "a", token: token({ hop: 5 }) });
  assert.equal(h.node.status(0).token, "sending");
  const sent = sentToken(out)!;
  h.step({ type: "tokenDelivered", epoch: sent.epoch, hop: sent.hop });
  assert.equal(h.node.status(0).token, "away");
});

// ---- Critical sections ------------------------------------------------------------------------

test("grant order: waiters queued before the token are granted FIFO, one at a time, fences growing", () => {
  const h = harness();
  const w1 = h.enter();
  const w2 = h.enter();
  const w3 = h.enter();
  assert.equal(replies(w1.out).size, 0, "no grant without the token");
  assert.equal(only(w1.out, "wakeAll").length, 1, "the first waiter wakes the ring");
  let out = h.step({ type: "token", from: "a", token: token({ hop: 7, fence: F1 + 41 }) });
  assert.equal(fenceOf(replies(out).get(w1.reqId)), F1 + 42);
  assert.equal(replies(out).size, 1, "one section at a time");
  assert.deepEqual(out.persist, [], "a grant stores nothing: its fence's epoch is above every fence of an earlier run of the node");
  out = h.step({ type: "leave", reqId: h.nextReq(), fence: F1 + 42 });
  assert.equal(fenceOf(replies(out).get(w2.reqId)), F1 + 43);
  out = h.step({ type: "leave", reqId: h.nextReq(), fence: F1 + 43 });
  assert.equal(fenceOf(replies(out).get(w3.reqId)), F1 + 44);
  assert.equal(sentToken(out), undefined, "the token stays during a section");
  h.step({ type: "wake" }); // another node asks: the token leaves once the visit is over
  out = h.step({ type: "leave", reqId: h.nextReq(), fence: F1 + 44 }, LIMITS.tokenHoldMs); // (its holding time too)
  assert.deepEqual(sentToken(out), token({ hop: 8, fence: F1 + 44, idleHops: 1 }));
});

test("under contention (another node woke the ring), a waiter that arrives during a section waits for the next visit; the token leaves hot", () => {
  const h = harness();
  const w1 = h.enter();
  h.step({ type: "token", from: "a", token: token({ hop: 1 }) }, 0);
  h.step({ type: "wake" }, 0);
  const late = h.enter();
  // The visit's holding time is over when the section ends.
  const out = h.step({ type: "leave", reqId: h.nextReq(), fence: F1 + 1 }, LIMITS.tokenHoldMs);
  assert.equal(replies(out).get(late.reqId), undefined);
  assert.equal(sentToken(out)?.idleHops, 1, "passed at once, counted as busy: not paced next hop");
  const back = h.step({ type: "token", from: "a", token: token({ hop: 4, fence: F1 + 1 }) });
  assert.equal(fenceOf(replies(back).get(late.reqId)), F1 + 2);
  void w1;
});

test("without contention (no wake), a waiter that arrives during the visit is served in it, and the token then rests here until another node asks", () => {
  const h = harness();
  h.enter();
  h.step({ type: "token", from: "a", token: token({ hop: 1 }) }, 0);
  const late = h.enter();
  let out = h.step({ type: "leave", reqId: h.nextReq(), fence: F1 + 1 }, 1);
  assert.equal(fenceOf(replies(out).get(late.reqId)), F1 + 2, "served in the same visit, not a rotation later");
  out = h.step({ type: "leave", reqId: h.nextReq(), fence: F1 + 2 }, 2);
  assert.equal(sentToken(out), undefined, "rests here: its client is the likeliest to ask next");
  const again = h.enter();
  out = h.step({ type: "tick" }, 3);
  assert.equal(fenceOf(replies(again.out).get(again.reqId)), F1 + 3, "granted on arrival of the request");
  assert.equal(sentToken(out), undefined);
  h.step({ type: "leave", reqId: h.nextReq(), fence: F1 + 3 }, 4);
  out = h.step({ type: "wake" }, 5);
  assert.equal(sentToken(out)?.hop, 2, "another node's wake sends it on at once");
});

test("under contention a visit serves a waiter that arrived during it while it is younger than tokenHoldMs, then the token leaves at once", () => {
  const h = harness();
  h.enter();
  h.step({ type: "token", from: "a", token: token({ hop: 1 }) }, 0);
  h.step({ type: "wake" }, 0);
  const again = h.enter();
  let out = h.step({ type: "leave", reqId: h.nextReq(), fence: F1 + 1 }, LIMITS.tokenHoldMs - 1);
  assert.equal(fenceOf(replies(out).get(again.reqId)), F1 + 2, "a client that left and asked again at once is served in the visit");
  out = h.step({ type: "leave", reqId: h.nextReq(), fence: F1 + 2 }, LIMITS.tokenHoldMs);
  assert.equal(sentToken(out)?.hop, 2, "no rest under contention");
});

test("under contention a visit with a grant keeps the token for the rest of its holding time (tokenHoldMs), so its client's next enter is served without a hop; then it leaves", () => {
  // Issue 14: with 8 clients on 5 nodes a node with one client paid a hop of the token per
  // section, since its client's leave emptied the queue and the token left before its next enter.
  const h = harness();
  h.enter();
  h.step({ type: "token", from: "a", token: token({ hop: 1 }) }, 0);
  h.step({ type: "wake" }, 0);
  let out = h.step({ type: "leave", reqId: h.nextReq(), fence: F1 + 1 }, 0);
  assert.equal(sentToken(out), undefined, "no waiter, but the visit is younger than tokenHoldMs: the token stays");
  assert.equal(h.node.nextDeadlineMs(), LIMITS.tokenHoldMs, "its pass is due at the end of the holding time, not at the next tick period");
  h.at(LIMITS.tokenHoldMs - 1);
  const again = h.enter();
  assert.equal(fenceOf(replies(again.out).get(again.reqId)), F1 + 2, "the client that left and asked again is served in this visit");
  out = h.step({ type: "leave", reqId: h.nextReq(), fence: F1 + 2 }, LIMITS.tokenHoldMs - 1);
  assert.equal(sentToken(out), undefined, "still within the holding time");
  assert.equal(h.node.nextDeadlineMs(), LIMITS.tokenHoldMs, "the pass stays due at the token's arrival + tokenHoldMs: a re-entry does not move it");
  out = h.step({ type: "tick" }, LIMITS.tokenHoldMs);
  assert.equal(sentToken(out)?.hop, 2, "the holding time is over: the token leaves, though nobody else's waiter is known here");
  const late = h.enter();
  assert.equal(replies(late.out).get(late.reqId), undefined, "a newcomer after the holding time waits for the next visit");
});

test("waiters left when the token moves on wake the ring again, at most once per tokenIdlePaceMs: no node rests the token while they wait", () => {
  const h = harness();
  const first = h.enter();
  assert.equal(only(first.out, "wakeAll").length, 1, "the first waiter wakes the ring");
  h.step({ type: "token", from: "a", token: token({ hop: 1 }) }, 0);
  h.step({ type: "wake" }, 0);
  h.enter();
  let out = h.step({ type: "leave", reqId: h.nextReq(), fence: F1 + 1 }, LIMITS.tokenHoldMs);
  assert.equal(sentToken(out)?.hop, 2, "the newcomer waits for the next visit");
  assert.equal(only(out, "wakeAll").length, 0, "the last wake is younger than tokenIdlePaceMs: still in force at the others");
  out = h.step({ type: "tick" }, LIMITS.tokenIdlePaceMs);
  assert.equal(only(out, "wakeAll").length, 1, "still waiting: wake again, so the others keep the token moving");
  out = h.step({ type: "tick" }, LIMITS.tokenIdlePaceMs + 1);
  assert.equal(only(out, "wakeAll").length, 0, "not more often");
});

test("without contention a visit serves newcomers and rests for at most tokenIdlePaceMs after the token came", () => {
  const h = harness();
  const paceMs = LIMITS.tokenIdlePaceMs;
  h.enter();
  h.step({ type: "token", from: "a", token: token({ hop: 1 }) }, 0);
  let out = h.step({ type: "leave", reqId: h.nextReq(), fence: F1 + 1 }, 1);
  assert.equal(sentToken(out), undefined);
  out = h.step({ type: "tick" }, paceMs - 1);
  assert.equal(sentToken(out), undefined, "still resting within the pace");
  out = h.step({ type: "tick" }, paceMs);
  assert.equal(sentToken(out)?.hop, 2, "the visit is over: the token moves on");
  // A newcomer once the visit is over waits for the next one.
  const h2 = harness();
  h2.enter();
  h2.step({ type: "token", from: "a", token: token({ hop: 1 }) }, 0);
  const late = h2.enter();
  out = h2.step({ type: "leave", reqId: h2.nextReq(), fence: F1 + 1 }, paceMs);
  assert.equal(replies(out).get(late.reqId), undefined);
  assert.equal(sentToken(out)?.hop, 2);
});

test("lease expiry: the holder revokes the section at its lease end and passes the token", () => {
  const h = harness();
  const w = h.enter(10_000, 500);
  h.step({ type: "token", from: "a", token: token({ hop: 1 }) }, 100);
  assert.ok(h.node.sectionActive(F1 + 1));
  let out = h.step({ type: "tick" }, 599);
  assert.equal(sentToken(out), undefined, "not before the lease ends");
  out = h.step({ type: "tick" }, 600);
  assert.deepEqual(only(out, "sectionEnded"), [{ type: "sectionEnded", fence: F1 + 1, reason: "lease" }]);
  assert.equal(sentToken(out)?.fence, F1 + 1);
  const late = h.step({ type: "write", reqId: h.nextReq(), fence: F1 + 1, op: { type: "put", key: "k", value: "v" } });
  const reply = [...replies(late).values()][0];
  assert.ok(!reply.ok && reply.error.code === "not_in_section");
  assert.equal(late.persist.length, 0, "a refused write stores nothing");
  void w;
});

test("a try (waitMs 0) behind another waiter is refused at once; alone it waits for the next visit", () => {
  const h = harness();
  h.enter();
  const behind = h.enter(0);
  const reply = replies(behind.out).get(behind.reqId);
  assert.deepEqual(reply, { ok: true, type: "notGranted", reason: "taken" });
  const alone = harness();
  const t = alone.enter(0);
  const out = alone.step({ type: "token", from: "a", token: token({ hop: 1 }) });
  assert.equal(fenceOf(replies(out).get(t.reqId)), F1 + 1);
});

test("a waiter whose deadline passes gets notGranted and is never granted", () => {
  const h = harness();
  const w = h.enter(300);
  const out = h.step({ type: "tick" }, 300);
  assert.deepEqual(replies(out).get(w.reqId), { ok: true, type: "notGranted", reason: "deadline" });
  const arrival = h.step({ type: "token", from: "a", token: token({ hop: 1 }) }, 400);
  assert.equal(only(arrival, "reply").length, 0);
});

test("a long-poll that ends answers 'waiting' with a ticket; asking again keeps the place", () => {
  const h = harness();
  const w = h.enter();
  const detached = h.step({ type: "detach", reqId: w.reqId });
  const waiting = replies(detached).get(w.reqId);
  assert.ok(waiting?.ok && waiting.type === "waiting");
  const again = h.nextReq();
  h.step({ type: "enter", reqId: again, ticket: waiting.ticket, waitMs: 1_000, leaseMs: 1_000 });
  const out = h.step({ type: "token", from: "a", token: token({ hop: 1 }) });
  assert.equal(fenceOf(replies(out).get(again)), F1 + 1);
});

// ---- Token lease -------------------------------------------------------------------------------

test("token lease: the holder grants only inside a lease of its epoch; without one it asks (wantLease) and keeps the token", () => {
  const h = harness({ leases: "none" });
  const w1 = h.enter();
  const w2 = h.enter();
  const w3 = h.enter();
  let out = h.step({ type: "token", from: "a", token: token({ hop: 1 }) }, 100);
  assert.deepEqual(only(out, "wantLease"), [{ type: "wantLease", epoch: 1, sectionMaxMs: LIMITS.ringLeaseMs }]);
  assert.equal(replies(out).size, 0, "no grant without a lease");
  assert.equal(sentToken(out), undefined, "the token stays while the waiter waits for the lease");
  out = h.step({ type: "tick" }, 150);
  assert.deepEqual(only(out, "wantLease"), [{ type: "wantLease", epoch: 1, sectionMaxMs: LIMITS.ringLeaseMs }], "asked again on every step while it waits");
  out = h.step({ type: "lease", epoch: 2, validUntilMs: 10_000 }, 160);
  assert.equal(replies(out).size, 0, "a lease of another epoch does not count");
  out = h.step({ type: "lease", epoch: 1, validUntilMs: 500 }, 170);
  assert.equal(fenceOf(replies(out).get(w1.reqId)), F1 + 1, "granted in the step that brings the lease");
  assert.deepEqual(only(out, "wantLease"), [], "more than a quarter of tokenLeaseMs is left: no early renewal");
  assert.equal(h.node.status(170).leaseValidUntilMs, 500);
  out = h.step({ type: "leave", reqId: h.nextReq(), fence: F1 + 1 }, 499);
  assert.equal(fenceOf(replies(out).get(w2.reqId)), F1 + 2, "still inside the lease");
  assert.deepEqual(only(out, "wantLease"), [{ type: "wantLease", epoch: 1, sectionMaxMs: LIMITS.ringLeaseMs }], "renewed early: w3 waits and under a quarter of tokenLeaseMs is left");
  out = h.step({ type: "leave", reqId: h.nextReq(), fence: F1 + 2 }, 500);
  assert.equal(replies(out).get(w3.reqId), undefined, "the lease ended at 500: no grant");
  assert.deepEqual(only(out, "wantLease"), [{ type: "wantLease", epoch: 1, sectionMaxMs: LIMITS.ringLeaseMs }]);
  assert.equal(h.node.status(500).leaseValidUntilMs, null);
});

test("token lease: no section longer than the bound the lease stated is granted under it; the node asks for a lease stating its waiters' longest leaseMs; a lease stating nothing allows ringLeaseMaxMs", () => {
  const h = harness({ leases: "none" });
  const long = h.enter(10_000, 3_000);
  const short = h.enter(10_000, 500);
  let out = h.step({ type: "token", from: "a", token: token({ hop: 1 }) }, 100);
  assert.deepEqual(only(out, "wantLease"), [{ type: "wantLease", epoch: 1, sectionMaxMs: 3_000 }], "the longest lease among the waiters");
  out = h.step({ type: "lease", epoch: 1, validUntilMs: 60_000, sectionMaxMs: 2_999 }, 110);
  assert.equal(replies(out).size, 0, "the head waiter asked 3,000 ms: not under a lease stating 2,999");
  assert.equal(sentToken(out), undefined, "the token stays while the waiter waits for a larger bound");
  assert.deepEqual(only(out, "wantLease"), [{ type: "wantLease", epoch: 1, sectionMaxMs: 3_000 }], "it asks again with the bound it needs");
  out = h.step({ type: "lease", epoch: 1, validUntilMs: 60_000, sectionMaxMs: 3_000 }, 120);
  assert.equal(fenceOf(replies(out).get(long.reqId)), F1 + 1, "granted once the lease allows 3,000 ms");
  // A later renewal stating less replaces the bound: the next grant must fit it.
  h.step({ type: "lease", epoch: 1, validUntilMs: 60_000, sectionMaxMs: 499 }, 130);
  out = h.step({ type: "leave", reqId: h.nextReq(), fence: F1 + 1 }, 140);
  assert.equal(replies(out).get(short.reqId), undefined, "500 ms is longer than the 499 the latest renewal stated");
  assert.deepEqual(only(out, "wantLease"), [{ type: "wantLease", epoch: 1, sectionMaxMs: 500 }]);
  // A lease stating nothing (the driver of a build before the bound) allows up to ringLeaseMaxMs.
  out = h.step({ type: "lease", epoch: 1, validUntilMs: 60_000 }, 150);
  assert.equal(fenceOf(replies(out).get(short.reqId)), F1 + 2);
});

test("token lease: a lease does not outlive its epoch (a newer epoch's token needs its own)", () => {
  const h = harness({ leases: "none" });
  h.enter();
  h.step({ type: "token", from: "a", token: token({ hop: 1 }) }, 100);
  h.step({ type: "lease", epoch: 1, validUntilMs: 60_000 }, 100);
  h.step({ type: "leave", reqId: h.nextReq(), fence: F1 + 1 }, 200);
  const w = h.enter();
  h.at(250);
  h.install(viewOf(2));
  assert.equal(h.node.status(250).leaseValidUntilMs, null, "the install drops the lease of epoch 1");
  const out = h.step({ type: "token", from: "a", token: token({ epoch: 2, hop: 1, fence: F1 + 1 }) }, 300);
  assert.equal(replies(out).get(w.reqId), undefined);
  assert.deepEqual(only(out, "wantLease"), [{ type: "wantLease", epoch: 2, sectionMaxMs: LIMITS.ringLeaseMs }]);
});

// ---- Facts for the view change ---------------------------------------------------------------

test("view facts: last applied and its epoch stamp, commit, the last token held or sent, the section's remaining lease", () => {
  const h = harness({ view: viewOf(2) });
  assert.deepEqual(h.node.viewFacts(0), {
    lastApplied: 0, lastWriteEpoch: 0, commit: 0, tokenEpoch: 0, tokenHop: 0, token: "away", sectionRemainingMs: 0, lastTokenAgeMs: null,
  });
  h.step({ type: "writes", from: "a", epoch: 2, entries: [put(1, "a", "k", "1", 1), put(2, "a", "k", "2", 2)] }, 10);
  h.enter(10_000, 500);
  h.step({ type: "token", from: "a", token: token({ epoch: 2, hop: 4, wseq: 2, commit: 2 }) }, 100);
  assert.deepEqual(h.node.viewFacts(300), {
    lastApplied: 2, lastWriteEpoch: 2, commit: 2, tokenEpoch: 2, tokenHop: 4, token: "held", sectionRemainingMs: 300, lastTokenAgeMs: 200,
  });
  const out = h.step({ type: "leave", reqId: h.nextReq(), fence: fenceFloor(2) + 1 }, 400);
  assert.equal(sentToken(out)?.hop, 5);
  const facts = h.node.viewFacts(450);
  assert.deepEqual([facts.token, facts.tokenEpoch, facts.tokenHop, facts.sectionRemainingMs], ["sending", 2, 5, 0], "the hand-off it sent");
  h.step({ type: "tokenDelivered", epoch: 2, hop: 5 }, 460);
  assert.equal(h.node.viewFacts(470).token, "away");
  assert.equal(h.node.viewFacts(470).tokenHop, 5, "still the last token it sent");
});

// ---- Writes -----------------------------------------------------------------------------------

test("a write in a section is acknowledged only when it came back around; then the watermark moves", () => {
  const h = harness();
  h.enter();
  h.step({ type: "token", from: "a", token: token({ hop: 1, wseq: 3, commit: 3 }) });
  // The node needs writes 1..3 first: the token's watermark is above what it applied.
  assert.equal(h.node.status(0).catchingUp, true);
  h.step({ type: "caughtUp", reply: { commit: 3, entries: [put(1, "a", "x", "1"), put(2, "a", "x", "2"), put(3, "c", "y", "1")] } });
  assert.equal(h.node.read("x", false), "2");
  const reqId = h.nextReq();
  let out = h.step({ type: "write", reqId, fence: F1 + 1, op: { type: "put", key: "x", value: "3" } });
  assert.equal(replies(out).size, 0, "not before it went around");
  assert.deepEqual(out.persist, [{ type: "log", record: { type: "entry", entry: put(4, "b", "x", "3") } }]);
  assert.deepEqual(only(out, "sendWrites")[0].entries, [put(4, "b", "x", "3")]);
  assert.equal(h.node.read("x", false), "2", "clean reads do not see it yet");
  assert.equal(h.node.read("x", true), "3", "dirty reads do");
  h.step({ type: "leave", reqId: h.nextReq(), fence: F1 + 1 });
  h.step({ type: "wake" }); // another node asks: the token leaves once the write is back
  out = h.step({ type: "writes", from: "a", epoch: 1, entries: [put(4, "b", "x", "3")] }, LIMITS.tokenHoldMs); // and the holding time is over
  assert.deepEqual(replies(out).get(reqId), { ok: true, type: "written", wseq: 4 });
  assert.equal(h.node.read("x", false), "3");
  assert.deepEqual(sentToken(out), token({ hop: 2, wseq: 4, commit: 4, fence: F1 + 1, idleHops: 1 }), "passed only after the return");
});

test("writes apply in wseq order: a gap is buffered, fetched from the predecessor, then filled", () => {
  const h = harness();
  let out = h.step({ type: "writes", from: "a", epoch: 1, entries: [put(1, "a", "k", "1")] });
  assert.deepEqual(out.result, { ok: true, type: "writes", ackedTo: 1 });
  out = h.step({ type: "writes", from: "a", epoch: 1, entries: [put(3, "a", "k", "3"), put(4, "a", "k", "4")] });
  assert.deepEqual(out.result, { ok: false, type: "gap", ackedTo: 0, lastApplied: 1 });
  assert.deepEqual(only(out, "fetch"), [{ type: "fetch", from: "a", fromWseq: 2 }]);
  assert.equal(h.node.replica.lastApplied, 1, "nothing beyond the gap applied");
  assert.equal(out.persist.length, 0);
  out = h.step({ type: "writes", from: "a", epoch: 1, entries: [put(2, "a", "k", "2")] });
  assert.equal(h.node.replica.lastApplied, 4, "the buffered writes follow the gap's fill");
  assert.deepEqual(only(out, "sendWrites").flatMap((e) => e.entries.map((x) => x.wseq)), [2, 3, 4], "forwarded in order");
  assert.equal(h.node.read("k", true), "4");
});

const WRITE_CASES: Array<{ name: string; input: RingInput; result: unknown; lastApplied: number }> = [
  { name: "an exact copy is acknowledged and not applied twice", input: { type: "writes", from: "a", epoch: 1, entries: [put(1, "a", "k", "1")] }, result: { ok: true, type: "writes", ackedTo: 1 }, lastApplied: 1 },
  { name: "a write of an older epoch is refused as stale", input: { type: "writes", from: "a", epoch: 0, entries: [put(2, "a", "k", "2", 0)] }, result: { ok: false, type: "stale", epoch: 1 }, lastApplied: 1 },
  { name: "writes of an epoch whose view is not installed here are not taken (notYet: the link retries)", input: { type: "writes", from: "a", epoch: 2, entries: [put(2, "a", "k", "2", 2)] }, result: { ok: false, type: "notYet", epoch: 1 }, lastApplied: 1 },
  { name: "writes from a node that is not the predecessor are refused", input: { type: "writes", from: "c", epoch: 1, entries: [put(2, "c", "k", "2")] }, result: "error", lastApplied: 1 },
];

for (const c of WRITE_CASES) {
  test(`write receipt: ${c.name}`, () => {
    const h = harness();
    h.step({ type: "writes", from: "a", epoch: 1, entries: [put(1, "a", "k", "1")] });
    const out = h.step(c.input);
    if (c.result === "error") assert.equal(out.result.type, "error");
    else assert.deepEqual(out.result, c.result);
    assert.equal(h.node.replica.lastApplied, c.lastApplied);
  });
}

test("commit watermark: the token's commit makes pending writes visible to clean reads", () => {
  const h = harness();
  h.step({ type: "writes", from: "a", epoch: 1, entries: [put(1, "a", "k", "1")] });
  assert.equal(h.node.read("k", false), undefined);
  assert.deepEqual(h.node.keys(true), ["k"]);
  h.step({ type: "token", from: "a", token: token({ hop: 1, wseq: 1, commit: 1 }) });
  // The next holder's write arrives after the token passed on.
  h.step({ type: "writes", from: "a", epoch: 1, entries: [put(2, "c", "k", "2")] });
  assert.equal(h.node.read("k", false), "1", "committed up to the watermark only");
  assert.equal(h.node.read("k", true), "2");
});

// ---- Pacing -----------------------------------------------------------------------------------

test("idle pacing: after a whole idle rotation the token rests tokenIdlePaceMs; a wake cuts it short", () => {
  const h = harness();
  let out = h.step({ type: "token", from: "a", token: token({ hop: 10, idleHops: 3 }) }, 1_000);
  assert.equal(sentToken(out), undefined, "rests");
  out = h.step({ type: "tick" }, 1_099);
  assert.equal(sentToken(out), undefined);
  out = h.step({ type: "tick" }, 1_100);
  assert.equal(sentToken(out)?.idleHops, 4);
  h.step({ type: "tokenDelivered", epoch: 1, hop: 11 });
  h.step({ type: "token", from: "a", token: token({ hop: 13, idleHops: 3 }) }, 2_000);
  out = h.step({ type: "wake" }, 2_001);
  assert.equal(sentToken(out)?.idleHops, 1, "a wake makes it hurry");
});

test("a waiter arriving while the idle token rests here is granted at once", () => {
  const h = harness();
  h.step({ type: "token", from: "a", token: token({ hop: 10, idleHops: 3 }) });
  const w = h.enter();
  assert.equal(fenceOf(replies(w.out).get(w.reqId)), F1 + 1);
});

// ---- Fences -----------------------------------------------------------------------------------

test("fences carry the epoch in their high part: a token of an older epoch, however far its counter went, grants below every fence of a newer epoch", () => {
  const old = harness();
  old.enter();
  const oldGrant = old.step({ type: "token", from: "a", token: token({ hop: 1, fence: F1 + 1_000_000 }) });
  const oldFence = fenceOf([...replies(oldGrant).values()][0]);
  const fresh = harness({ view: viewOf(2) });
  fresh.enter();
  const newGrant = fresh.step({ type: "token", from: "a", token: token({ epoch: 2, hop: 1, fence: 0 }) });
  const newFence = fenceOf([...replies(newGrant).values()][0]);
  assert.equal(oldFence, F1 + 1_000_001);
  assert.equal(newFence, fenceFloor(2) + 1, "the first fence of epoch 2, though this node never saw epoch 1's");
  assert.ok(newFence > oldFence);
  assert.equal(Math.floor(newFence / 2 ** 32), 2, "the epoch reads back from the fence's high part");
});

// ---- Restart ----------------------------------------------------------------------------------

test("a node rebuilt from its stored records has the same replica, and no epoch until a view installs one, whose fences are above its old grants", () => {
  const h = harness();
  h.step({ type: "writes", from: "a", epoch: 1, entries: [put(1, "a", "k", "1"), put(2, "a", "j", "2")] });
  const entered = h.enter();
  const out = h.step({ type: "token", from: "a", token: token({ hop: 1, wseq: 2, commit: 2, fence: F1 + 5 }) });
  assert.equal(fenceOf(replies(out).get(entered.reqId)), F1 + 6);
  const copy = harness({ stored: storedOf(h) });
  assert.deepEqual(copy.node.keys(false), ["j", "k"]);
  assert.equal(copy.node.replica.commit, 2);
  const status = copy.node.status(0);
  // The grant's counter was not stored (grants store nothing); the epoch it may grant in next is.
  assert.ok(fenceFloor(status.refuseBelowEpoch) > F1 + 6, "every fence of an epoch it may take is above the fence it granted");
  assert.equal(status.token, "away", "a token is never restored from disk");
  assert.deepEqual([status.epoch, status.refuseBelowEpoch], [0, 2], "it takes nothing of the epoch it ran in");
  // The attack on "no durable write per grant": the predecessor resends the hand-off whose
  // acknowledgement it lost, a token of the old epoch with a fence below the one granted here.
  const waiting = copy.enter();
  const resent = copy.step({ type: "token", from: "a", token: token({ hop: 1, wseq: 2, commit: 2, fence: F1 + 5 }) });
  assert.deepEqual(resent.result, { ok: false, type: "stale", epoch: 2 }, "the old epoch's token is refused");
  assert.equal(replies(resent).get(waiting.reqId), undefined, "no second grant at F1 + 6");
});

test("snapshots: after ringSnapshotEveryWrites commits the node stores a snapshot and trims its log", () => {
  const h = harness({ ring: ["a", "b"], limits: { ...LIMITS, ringSnapshotEveryWrites: 3, ringLogRetainMax: 3 } });
  const entries = [1, 2, 3, 4, 5].map((w) => put(w, "a", `k${w}`, String(w)));
  h.step({ type: "writes", from: "a", epoch: 1, entries }, 0);
  const out = h.step({ type: "token", from: "a", token: token({ hop: 1, wseq: 5, commit: 5 }) }, 1);
  const snapshot = out.persist.find((p) => p.type === "snapshot");
  assert.ok(snapshot && snapshot.type === "snapshot");
  assert.equal(snapshot.snapshot.wseq, 5);
  assert.equal(h.node.replica.logStart, 3, "only ringLogRetainMax committed entries stay");
  const reply = h.node.catchUp(1);
  assert.equal(reply.snapshot?.wseq, 5, "a neighbour asking from before the log gets the snapshot");
});

// ---- Restart and resent hand-offs (simulator seeds 36 and 343) --------------------------------
// Before the view change a restarted node kept its epoch and dropped resent copies by their hop
// (stored on every hop). Now it takes nothing of the epoch it ran in: every such copy is stale.

const RESTART_CASES: Array<{
  name: string;
  /** Before the crash (node b of a → b → c in epoch 1, from t = 0). */
  before: (h: ReturnType<typeof harness>) => void;
  /** After the restart at t = 1000 with the stored view of epoch 1. */
  after: (h: ReturnType<typeof harness>) => void;
}> = [
  {
    name: "it took hop 5 and passed it on; a resend of hop 5 (its acknowledgement was lost) is stale, not a second token",
    before: (h) => void h.step({ type: "token", from: "a", token: token({ hop: 5 }) }),
    after: (h) => {
      const out = h.step({ type: "token", from: "a", token: token({ hop: 5 }) });
      assert.deepEqual(out.result, { ok: false, type: "stale", epoch: 2 });
      assert.equal(sentToken(out), undefined);
      assert.equal(h.node.status(h.now()).token, "away");
    },
  },
  {
    name: "it held hop 5 in a section when it stopped; the resend is stale, so the token stays lost (a view change replaces it)",
    before: (h) => {
      h.enter();
      h.step({ type: "token", from: "a", token: token({ hop: 5, idleHops: 3 }) });
      assert.ok(h.node.sectionActive(F1 + 1));
    },
    after: (h) => {
      const w = h.enter();
      const out = h.step({ type: "token", from: "a", token: token({ hop: 5, idleHops: 3 }) });
      assert.deepEqual(out.result, { ok: false, type: "stale", epoch: 2 });
      assert.equal(replies(out).get(w.reqId), undefined, "no grant from a dead token");
      assert.equal(h.node.status(h.now()).token, "away");
    },
  },
  {
    name: "a later hop of the same epoch (the token came around) is stale too: the node rejoins in a new epoch",
    before: (h) => void h.step({ type: "token", from: "a", token: token({ hop: 5 }) }),
    after: (h) => {
      const out = h.step({ type: "token", from: "a", token: token({ hop: 8 }) });
      assert.deepEqual(out.result, { ok: false, type: "stale", epoch: 2 });
      assert.equal(sentToken(out), undefined);
    },
  },
  {
    name: "hop 1 of the next epoch waits for that epoch's view (notYet), then is taken",
    before: (h) => void h.step({ type: "token", from: "a", token: token({ hop: 40 }) }),
    after: (h) => {
      const early = h.step({ type: "token", from: "a", token: token({ epoch: 2, hop: 1 }) });
      assert.deepEqual(early.result, { ok: false, type: "notYet", epoch: 0 });
      h.install(viewOf(2));
      const out = h.step({ type: "token", from: "a", token: token({ epoch: 2, hop: 1 }) });
      assert.deepEqual(out.result, { ok: true, type: "token", duplicate: false });
      assert.equal(sentToken(out)?.hop, 2);
    },
  },
];

for (const c of RESTART_CASES) {
  test(`restart: ${c.name}`, () => {
    const h = harness();
    c.before(h);
    c.after(restart(h, 1_000, viewOf(1)));
  });
}

test("the token returns while its earlier hand-off is unacknowledged: tokenReturned tells the driver to stop resending it", () => {
  const h = harness();
  const first = h.step({ type: "token", from: "a", token: token({ hop: 5 }) });
  assert.equal(sentToken(first)?.hop, 6);
  // No tokenDelivered for hop 6 (the acknowledgement was lost); the token comes around again.
  const back = h.step({ type: "token", from: "a", token: token({ hop: 8 }) });
  assert.deepEqual(only(back, "tokenReturned"), [{ type: "tokenReturned", epoch: 1, hop: 8 }]);
  assert.ok(back.effects.findIndex((e) => e.type === "tokenReturned") < back.effects.findIndex((e) => e.type === "sendToken"), "dropped before the next hand-off is queued");
  h.step({ type: "tokenDelivered", epoch: 1, hop: 9 });
  const again = h.step({ type: "token", from: "a", token: token({ hop: 11 }) });
  assert.deepEqual(only(again, "tokenReturned"), [], "nothing to drop when the hand-off was acknowledged");
});

// ---- Uncommitted writes of an older epoch above a new token's wseq (simulator seed 343) -------

const STALE_SUFFIX_CASES: Array<{
  name: string;
  run: (h: ReturnType<typeof harness>) => ReturnType<typeof harness>;
  lastApplied: number;
  dirty: string | undefined;
}> = [
  {
    name: "its own write of epoch 1 (it crashed holding the token) is dropped when the regenerated token (wseq 0) arrives; a new write takes wseq 1",
    run: (h) => {
      h.enter();
      h.step({ type: "token", from: "a", token: token({ hop: 1 }) });
      h.write(F1 + 1, "k", "lost");
      assert.equal(h.node.replica.lastApplied, 1);
      const r = restart(h, 1_000, viewOf(1));
      r.install(viewOf(2));
      r.enter();
      const out = r.step({ type: "token", from: "a", token: token({ epoch: 2, hop: 2, fence: F1 + 1 }) });
      assert.deepEqual(logRecords(out), [{ type: "truncate", from: 1 }]);
      const write = r.write(fenceFloor(2) + 1, "k", "new");
      assert.deepEqual(only(write.out, "sendWrites").flatMap((s) => s.entries).map((e) => [e.wseq, e.epoch]), [[1, 2]]);
      return r;
    },
    lastApplied: 1,
    dirty: "new",
  },
  {
    name: "writes of another node above the token's wseq are dropped; those at or below it stay and commit",
    run: (h) => {
      // a committed 1 and 2 (they came back to it); 3 never reached a before the token was lost.
      h.step({ type: "writes", from: "a", epoch: 1, entries: [put(1, "a", "k", "1"), put(2, "a", "k", "2"), put(3, "a", "k", "3")] });
      h.install(viewOf(2));
      const out = h.step({ type: "token", from: "a", token: token({ epoch: 2, hop: 2, wseq: 2, commit: 2 }) });
      assert.equal(h.node.replica.commit, 2);
      assert.equal(out.result.type, "token");
      return h;
    },
    lastApplied: 2,
    dirty: "2",
  },
  {
    name: "a write of the new epoch at a leftover's place replaces it and every leftover after it",
    run: (h) => {
      h.step({ type: "writes", from: "a", epoch: 1, entries: [put(1, "a", "k", "1"), put(2, "a", "k", "2"), put(3, "a", "k", "3")] });
      h.install(viewOf(2));
      const out = h.step({ type: "writes", from: "a", epoch: 2, entries: [put(2, "c", "k", "two", 2)] });
      assert.deepEqual(logRecords(out).map((r) => r.type), ["truncate", "entry"]);
      return h;
    },
    lastApplied: 2,
    dirty: "two",
  },
  {
    name: "nothing above the token's wseq: nothing is cut",
    run: (h) => {
      h.step({ type: "writes", from: "a", epoch: 1, entries: [put(1, "a", "k", "1")] });
      h.install(viewOf(2));
      const out = h.step({ type: "token", from: "a", token: token({ epoch: 2, hop: 1, wseq: 1, commit: 1 }) });
      assert.equal(logRecords(out).filter((r) => r.type === "truncate").length, 0);
      return h;
    },
    lastApplied: 1,
    dirty: "1",
  },
];

for (const c of STALE_SUFFIX_CASES) {
  test(`new epoch: ${c.name}`, () => {
    const h = c.run(harness());
    assert.equal(h.node.replica.lastApplied, c.lastApplied);
    assert.equal(h.node.read("k", true), c.dirty);
    const rebuilt = harness({ stored: storedOf(h) });
    assert.equal(rebuilt.node.replica.lastApplied, c.lastApplied, "the cut is stored too");
  });
}

test("a write of the token's own epoch above its wseq is impossible (it would take a second token): the core asserts", () => {
  const h = harness();
  h.step({ type: "writes", from: "a", epoch: 1, entries: [put(1, "a", "k", "1"), put(2, "a", "k", "2")] });
  assert.throws(() => h.step({ type: "token", from: "a", token: token({ hop: 1, wseq: 1, commit: 1 }) }), /write 2 of epoch 1 above the wseq 1 of its epoch's token/);
});

test("a grant asks the view change to announce the section (sectionGranted {epoch, leaseMs}), once per grant, so the others' token-loss probe waits for its lease", () => {
  const h = harness({ leases: "none" });
  const long = h.enter(10_000, 3_000);
  h.enter(10_000, 500);
  let out = h.step({ type: "token", from: "a", token: token({ hop: 1 }) }, 100);
  assert.deepEqual(only(out, "sectionGranted"), [], "nothing before a grant");
  out = h.step({ type: "lease", epoch: 1, validUntilMs: 60_000, sectionMaxMs: 3_000 }, 110);
  assert.equal(fenceOf(replies(out).get(long.reqId)), F1 + 1);
  assert.deepEqual(only(out, "sectionGranted"), [{ type: "sectionGranted", epoch: 1, leaseMs: 3_000 }]);
  out = h.step({ type: "tick" }, 120);
  assert.deepEqual(only(out, "sectionGranted"), [], "not again while it runs");
  out = h.step({ type: "leave", reqId: h.nextReq(), fence: F1 + 1 }, 130);
  assert.deepEqual(only(out, "sectionGranted"), [{ type: "sectionGranted", epoch: 1, leaseMs: 500 }], "the next grant's own");
});
