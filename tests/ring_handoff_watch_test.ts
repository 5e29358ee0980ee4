/**
 * The pure watch over deliveries to the successor (lib/core/ring/handoff_watch.ts): a token
 * hand-off counts as refused (never left) only while every attempt of it was refused; one
 * attempt that failed otherwise makes it uncertain for good, and a new hand-off starts certain;
 * the successor is suspected after ringRepairRetries failures in a row or at once when refused
 * at connect, and any answer ends the streak; a stale answer newer than this node's promise asks
 * for a rejoin.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { HandoffWatch } from "../lib/core/ring/handoff_watch.ts";
import type { RingResult } from "../lib/core/ring/ring_node.ts";

const RETRIES = 3;
const TOKEN = { epoch: 2, hop: 7 };
const notYet: RingResult = { ok: false, type: "notYet", epoch: 2 };
const taken: RingResult = { ok: true, type: "token", duplicate: false };

function watch(promisedEpoch = 2): HandoffWatch {
  return new HandoffWatch({ retries: RETRIES, promisedEpoch: () => promisedEpoch });
}

test("a hand-off refused on every attempt (notYet, stale, refused at connect) never left; writes have no record", () => {
  const w = watch();
  const record = w.attempt(TOKEN);
  assert.deepEqual(w.answered(record, notYet), { refused: { epoch: 2, hop: 7, uncertain: false }, rejoin: false });
  assert.equal(w.attempt(TOKEN), record, "the retry of the same hand-off is the same record");
  assert.equal(w.failed(record, true).refused, record, "refused at connect: still never left");
  assert.deepEqual(w.answered(record, taken), { refused: null, rejoin: false }, "taken: no refusal");
  assert.equal(w.attempt(null), null, "a write batch");
  assert.deepEqual(w.answered(null, notYet), { refused: null, rejoin: false });
});

test("one attempt that may have been taken (a timeout, a reset) makes the hand-off uncertain for good; the next hand-off starts certain", () => {
  const w = watch();
  const record = w.attempt(TOKEN);
  assert.equal(w.answered(record, notYet).refused, record, "refused first");
  const failed = w.failed(w.attempt(TOKEN), false);
  assert.deepEqual(failed, { refused: null, uncertain: { epoch: 2, hop: 7, uncertain: true }, suspect: false }, "a reset: uncertain, and the earlier refusal is withdrawn by the driver");
  // The ring benchmark's case: a reset, then a refused retry: the token may be at the successor.
  assert.equal(w.failed(w.attempt(TOKEN), true).refused, null, "a refusal after an uncertain attempt proves nothing");
  assert.equal(w.answered(w.attempt(TOKEN), notYet).refused, null);
  const next = w.attempt({ epoch: 2, hop: 8 });
  assert.notEqual(next, record);
  assert.equal(w.answered(next, notYet).refused, next, "a new hand-off starts certain");
});

test("the successor is suspected after ringRepairRetries failures in a row (and every one after), at once when refused at connect; an answer ends the streak", () => {
  const w = watch();
  const suspects = (refusedAtConnect: boolean) => w.failed(w.attempt(null), refusedAtConnect).suspect;
  assert.deepEqual([suspects(false), suspects(false), suspects(false), suspects(false)], [false, false, true, true]);
  w.answered(null, taken);
  assert.equal(suspects(false), false, "the streak starts again after an answer");
  w.answered(null, { ok: false, type: "gap", ackedTo: 0, lastApplied: 0 });
  assert.equal(suspects(true), true, "refused at connect: at once");
});

test("a stale answer asks for a rejoin only when its epoch is newer than this node's promise", () => {
  assert.equal(watch(5).answered(null, { ok: false, type: "stale", epoch: 5 }).rejoin, false, "the promised epoch itself");
  assert.equal(watch(5).answered(null, { ok: false, type: "stale", epoch: 6 }).rejoin, true);
  assert.equal(watch(5).answered(null, { ok: false, type: "notYet", epoch: 6 }).rejoin, false, "notYet: the view is on its way");
});
