/**
 * call_id.ts: the lock table keeps call ids packed (a UUID as 16 characters below 256, W4's
 * memory) and gives the client's text back. Proves the packing is one-to-one over the ids that
 * could be confused (packed-looking ids, ids ending in the escape character, uppercase UUIDs),
 * that it round-trips, and that a UUID shrinks to 16 characters. Deterministic: fixed ids and a
 * seeded generator, no wall clock.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { packCallId, packedOrNone, unpackCallId } from "../lib/core/lock/call_id.ts";

const UUID = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0";

/** A small seeded generator (mulberry32), so the random ids are the same on every run. */
function seeded(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

test("call id: a lowercase UUID packs to 16 characters below 256 and unpacks to the same text", () => {
  const packed = packCallId(UUID);
  assert.equal(packed.length, 16);
  assert.ok([...packed].every((ch) => ch.charCodeAt(0) <= 0xff));
  assert.equal(packed.charCodeAt(0), 0x0f);
  assert.equal(packed.charCodeAt(15), 0xf0);
  assert.equal(unpackCallId(packed), UUID);
  assert.equal(packedOrNone(undefined), undefined);
  assert.equal(packedOrNone(UUID), packed);
});

test("call id: ids that are not lowercase UUIDs are kept as sent, or escaped when they could pass for a packed one", () => {
  assert.equal(packCallId("k1"), "k1");
  assert.equal(packCallId(UUID.toUpperCase()), UUID.toUpperCase(), "an uppercase UUID is another id, kept as sent");
  const lookalike = packCallId(UUID); // sent as text by a client: must not become the UUID's call
  assert.notEqual(packCallId(lookalike), lookalike);
  assert.equal(unpackCallId(packCallId(lookalike)), lookalike);
  const fifteenAndEscape = "a".repeat(15) + "\u0100";
  assert.notEqual(packCallId(fifteenAndEscape).length, 16);
  assert.equal(unpackCallId(packCallId(fifteenAndEscape)), fifteenAndEscape);
});

test("call id: one-to-one and round trip over UUIDs, their packed forms sent as text, and escape-ended ids", () => {
  const random = seeded(14);
  const hex = () => Math.floor(random() * 16).toString(16);
  const ids = new Set<string>(["", "~", "\u0100", "\u0100\u0100", "x".repeat(128), "x".repeat(127) + "\u0100"]);
  for (let i = 0; i < 300; i++) {
    const uuid = Array.from({ length: 32 }, hex).join("").replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, "$1-$2-$3-$4-$5");
    ids.add(uuid);
    ids.add(packCallId(uuid));
    ids.add(packCallId(uuid) + "\u0100");
    ids.add(packCallId(uuid).slice(1) + "\u0100");
    ids.add(String.fromCharCode(...Array.from({ length: 1 + Math.floor(random() * 20) }, () => Math.floor(random() * 0x120))));
  }
  const packed = new Map<string, string>();
  for (const id of ids) {
    const kept = packCallId(id);
    assert.equal(unpackCallId(kept), id, `round trip of ${JSON.stringify(id)}`);
    assert.equal(packed.get(kept), undefined, `${JSON.stringify(id)} and ${JSON.stringify(packed.get(kept))} pack alike`);
    packed.set(kept, id);
  }
});
