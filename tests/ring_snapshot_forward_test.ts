/**
 * A member that fills a gap with its predecessor's snapshot still passes on the writes of the
 * current epoch that the snapshot covers (lib/core/ring/ring_node.ts, "Whatever arrives in the
 * new epoch is passed on at least once"). The regenerator of a view re-sends writes that are
 * committed at some members but not at others, and keeps the token until they come back around
 * (it passes it only with no write out); a member that swallowed them into a snapshot stalled the
 * ring for good. Found by tests/ring_disk_process_test.ts (a rejoining node whose snapshot was
 * damaged, its peers' logs compacted past the re-sent range's start).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { RingNode, type RingOutput } from "../lib/core/ring/ring_node.ts";
import type { RingEntry } from "../lib/core/ring/ring_types.ts";
import type { View } from "../lib/core/ring/view_wire.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";

const put = (wseq: number, key: string): RingEntry => ({ epoch: 1, wseq, author: "a", origin: "a", op: { type: "put", key, value: String(wseq) } });
const sentWrites = (out: RingOutput) => out.effects.flatMap((e) => (e.type === "sendWrites" ? e.entries.map((entry) => entry.wseq) : []));

test("re-sent writes that a snapshot install covers are still forwarded to the successor, so they reach their regenerator", () => {
  // b (empty: it lost its data) rejoins the ring a → b → c in epoch 2; a regenerates and
  // re-sends 5 and 6, the start of its compacted log (everything up to 6 is committed there).
  const node = new RingNode({ id: "b", ring: ["a", "b", "c"], limits: DEFAULT_SETTINGS, ticketPrefix: "t" });
  let now = 0;
  node.start(now);
  const view: View = { epoch: 2, coordinator: "a", members: ["a", "b", "c"], regenerator: "a", startWseq: 6, resendFromWseq: 1, grantWaitMs: 0 };
  node.step({ type: "install", view, regenerate: false, grantNotBeforeMs: now }, now);

  const resent = [put(5, "x5"), put(6, "x6")];
  const first = node.step({ type: "writes", from: "a", epoch: 2, entries: resent }, (now += 10));
  assert.deepEqual(first.result, { ok: false, type: "gap", ackedTo: 0, lastApplied: 0 }, "beyond a gap: not taken yet");
  assert.ok(first.effects.some((e) => e.type === "fetch" && e.from === "a" && e.fromWseq === 1), "it fetches from its predecessor");
  assert.deepEqual(sentWrites(first), [], "nothing forwarded past the gap");

  // The predecessor's log no longer reaches wseq 1: it answers with its snapshot at 6.
  const kv: Array<[string, string]> = [1, 2, 3, 4, 5, 6].map((w) => [`x${w}`, String(w)]);
  const caught = node.step({ type: "caughtUp", reply: { commit: 6, snapshot: { wseq: 6, epoch: 1, kv }, entries: [] } }, (now += 10));
  assert.equal(node.status(now).lastApplied, 6, "the snapshot filled the gap");

  // The writes the gap held (or the predecessor's link retrying them, as here) go on to c.
  const retried = node.step({ type: "writes", from: "a", epoch: 2, entries: resent }, (now += 10));
  assert.deepEqual(retried.result, { ok: true, type: "writes", ackedTo: 6 });
  assert.deepEqual([...sentWrites(caught), ...sentWrites(retried)], [5, 6], "5 and 6 forwarded once each, on their way back to a");

  // A second copy is not forwarded again (once per epoch).
  assert.deepEqual(sentWrites(node.step({ type: "writes", from: "a", epoch: 2, entries: resent }, (now += 10))), []);
});
