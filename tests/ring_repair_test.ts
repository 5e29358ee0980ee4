/**
 * The ring repair core (lib/core/ring/repair.ts) by table: each row is one step of one node at a
 * given time and the datagrams and events it must give. Proves the suspicion rules of
 * docs/ring.md ("Repair"): who asks, who answers and when, rate limits, stale and foreign
 * answers ignored, clearing, the new successor as a pure function (two dead in a row), and when a
 * failed hand-off suspects (at once when refused at connect).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { nextLive, type RepairEvent, type RepairInput, type RepairMessage, RingRepair, repairTimings, suspectsSuccessor } from "../lib/core/ring/repair.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";

const RING = ["a", "b", "c", "d"];
const SUSPECT_MS = 3_000;
const ASK_EVERY_MS = 1_000;

test("repair: the timings come from the settings (hop timeout × retries; one ask per hop timeout)", () => {
  assert.deepEqual(repairTimings({ ...DEFAULT_SETTINGS, tokenHopTimeoutMs: 500, ringRepairRetries: 4 }), { suspectMs: 2_000, askEveryMs: 500 });
});

test("repair: a hand-off refused at connect suspects the successor at once; timeouts and cuts need ringRepairRetries in a row", () => {
  assert.equal(suspectsSuccessor(1, true, 3), true, "nothing listens on the successor's port: no retry can reach it");
  assert.equal(suspectsSuccessor(1, false, 3), false, "one timeout or cut may be a lost packet");
  assert.equal(suspectsSuccessor(2, false, 3), false);
  assert.equal(suspectsSuccessor(3, false, 3), true);
  assert.equal(suspectsSuccessor(4, false, 3), true, "and every failure after them");
});

test("repair: nextLive is the next node after the suspect that is not suspected, whoever answered", () => {
  const rows: Array<[string, string[], string | undefined]> = [
    ["b", [], "c"],
    ["b", ["b"], "c"],
    ["b", ["b", "c"], "d"], // two dead nodes in a row: skip both
    ["b", ["b", "c", "d"], "a"],
    ["d", ["d", "a"], "b"], // wraps around the end of the file
    ["b", ["a", "b", "c", "d"], undefined], // nobody left
    ["x", [], undefined], // not a ring node
  ];
  for (const [suspect, suspected, expected] of rows) {
    assert.equal(nextLive(RING, suspect, new Set(suspected)), expected, `${suspect} with ${suspected.join(",")} suspected`);
  }
});

type Row = [atMs: number, input: RepairInput, send: RepairMessage[], events: RepairEvent[]];

/** Runs the rows on a fresh node `self` started at time 0. */
function run(self: string, rows: Row[]): RingRepair {
  const node = new RingRepair({ self, ring: RING, suspectMs: SUSPECT_MS, askEveryMs: ASK_EVERY_MS, nowMs: 0 });
  rows.forEach(([atMs, input, send, events], i) => {
    const out = node.step(input, atMs);
    assert.deepEqual(out, { send, events }, `row ${i}: ${JSON.stringify(input)} at ${atMs} ms`);
  });
  return node;
}

const ask = (suspect: string, from: string, epoch = 1) => ({ type: "whoLostPred" as const, epoch, suspect, from });
const answer = (suspect: string, from: string, epoch = 1) => ({ type: "iLostPred" as const, epoch, suspect, from });

test("repair: the asker suspects its successor after failed hand-offs, asks at most once per askEveryMs, and a hand-off answer clears it", () => {
  run("a", [
    [5_000, { type: "handoffFailed", to: "b", epoch: 1 }, [ask("b", "a")], [{ type: "suspected", node: "b", by: "a" }]],
    // More failures and ticks within askEveryMs: no new ask.
    [5_400, { type: "handoffFailed", to: "b", epoch: 1 }, [], []],
    [5_999, { type: "tick", epoch: 1 }, [], []],
    // The tick re-asks while the suspicion stands.
    [6_000, { type: "tick", epoch: 1 }, [ask("b", "a")], []],
    [6_500, { type: "tick", epoch: 1 }, [], []],
    [7_000, { type: "heardFrom", node: "b" }, [], [{ type: "cleared", node: "b", why: "heard" }]],
    [8_000, { type: "tick", epoch: 1 }, [], []],
  ]);
});

test("repair: the suspect's successor answers only once it has not heard from the suspect for suspectMs", () => {
  // c's predecessor is b. c heard from b at 1000 (a token, say).
  run("c", [
    [1_000, { type: "heardFrom", node: "b" }, [], []],
    // Too early: c heard from b 2999 ms ago. It notes a's suspicion but does not answer.
    [3_999, { ...ask("b", "a"), seq: 1 }, [], [{ type: "suspected", node: "b", by: "a" }]],
    // suspectMs after the last word from b: it answers and confirms, to every node.
    [4_000, { ...ask("b", "a"), seq: 2 }, [answer("b", "c")], [{ type: "confirmed", node: "b", confirmedBy: "c" }]],
    // Asked again within askEveryMs: no second answer.
    [4_500, { ...ask("b", "a"), seq: 3 }, [], []],
    [5_000, { ...ask("b", "a"), seq: 4 }, [answer("b", "c")], []],
  ]);
});

test("repair: a node whose predecessor is not the suspect never answers (it only notes the suspicion)", () => {
  // d's predecessor is c, and d has not heard from b ever: still no answer about b.
  run("d", [
    [10_000, { ...ask("b", "a"), seq: 1 }, [], [{ type: "suspected", node: "b", by: "a" }]],
    [20_000, { ...ask("b", "a"), seq: 2 }, [], []],
  ]);
});

test("repair: answers from a node that is not the suspect's successor, or from an older epoch, are ignored; a second answer adds nothing", () => {
  const node = run("a", [
    [5_000, { type: "handoffFailed", to: "b", epoch: 3 }, [ask("b", "a", 3)], [{ type: "suspected", node: "b", by: "a" }]],
    // d is not b's successor (c is): a hint from it would wire the ring wrong.
    [5_100, answer("b", "d", 3), [], []],
    // c, but of epoch 2: stale.
    [5_200, answer("b", "c", 2), [], []],
    [5_300, answer("b", "c", 3), [], [{ type: "confirmed", node: "b", confirmedBy: "c" }]],
    [5_400, answer("b", "c", 3), [], []],
  ]);
  const [status] = node.status(6_000);
  assert.deepEqual(status, { node: "b", suspectedBy: ["a"], suspectedForMs: 1_000, epoch: 3, confirmedBy: ["c"], newSuccessor: "c" });
});

test("repair: with two dead nodes in a row the new successor skips both, and the first answerer does not decide it", () => {
  // a's hand-offs to b fail; c (dead too) never answers; a hears d ask about c (d's predecessor).
  const node = run("a", [
    [5_000, { type: "handoffFailed", to: "b", epoch: 1 }, [ask("b", "a")], [{ type: "suspected", node: "b", by: "a" }]],
    [5_100, { ...ask("c", "b"), seq: 1 }, [], [{ type: "cleared", node: "b", why: "heard" }, { type: "suspected", node: "c", by: "b" }]],
  ]);
  // b asking proves b alive: a's suspicion of b is cleared; a's new successor would be b again.
  assert.deepEqual(node.status(5_100).map((s) => s.node), ["c"]);
  const both = run("a", [
    [5_000, { type: "handoffFailed", to: "b", epoch: 1 }, [ask("b", "a")], [{ type: "suspected", node: "b", by: "a" }]],
    // d answers about c (its predecessor): c is suspected and confirmed by d.
    [5_100, answer("c", "d"), [], [{ type: "confirmed", node: "c", confirmedBy: "d" }]],
  ]);
  assert.equal(both.status(5_200).find((s) => s.node === "b")?.newSuccessor, "d");
});

test("repair: a suspicion learnt from another node's ask is forgotten once nobody asks for forgetMs", () => {
  const node = run("d", [
    [1_000, { ...ask("b", "a"), seq: 1 }, [], [{ type: "suspected", node: "b", by: "a" }]],
    [2_000, { ...ask("b", "a"), seq: 2 }, [], []],
  ]);
  const forgetMs = SUSPECT_MS + 2 * ASK_EVERY_MS;
  assert.equal(node.forgetMs, forgetMs);
  assert.deepEqual(node.step({ type: "tick", epoch: 1 }, 2_000 + forgetMs - 1), { send: [], events: [] });
  assert.deepEqual(node.step({ type: "tick", epoch: 1 }, 2_000 + forgetMs), { send: [], events: [{ type: "cleared", node: "b", why: "forgotten" }] });
  assert.deepEqual(node.status(10_000), []);
});

test("repair: names that are not ring nodes, its own datagrams, and asks and answers about itself change nothing", () => {
  run("c", [
    [9_000, { ...ask("b", "zz"), seq: 1 }, [], []],
    [9_000, { ...ask("zz", "a"), seq: 1 }, [], []],
    [9_000, { ...ask("b", "c"), seq: 1 }, [], []],
    // An ask about itself: it is alive, so it records nothing.
    [9_000, { ...ask("c", "b"), seq: 1 }, [], []],
    // An answer about itself from its own successor (a valid confirmation for any other node):
    // nothing either (before, it confirmed itself dead and wanted a view change).
    [9_000, answer("c", "d"), [], []],
    [9_000, answer("zz", "a"), [], []],
    [9_000, { type: "handoffFailed", to: "zz", epoch: 1 }, [], []],
    [9_000, { type: "heardFrom", node: "zz" }, [], []],
  ]);
});
