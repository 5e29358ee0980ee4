/**
 * The ring node's HTTP API through app.request (no sockets, no timers): every error path answers
 * its error code and changes nothing in the node (status, replica, stored files).
 */
import { afterEach, test } from "node:test";
import assert from "node:assert/strict";
import { fenceFloor } from "../lib/core/ring/view_wire.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { eventually, removeDir } from "./_harness.ts";
import { viewOf } from "./_ring_node.ts";
import { ringNode, withSection } from "./_ring_app.ts";

const settings = { ...DEFAULT_SETTINGS, bodyBytesMax: 65_536 };

/** Each test's data directory, removed after it (also when it failed). */
const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) removeDir(dir);
});

/** Node b of a → b → c in the view of epoch 1 (tests/_ring_app.ts), and `call` to its app. */
function setup() {
  const h = ringNode(dirs, settings);
  const call = (method: string, path: string, body?: unknown) =>
    h.app.request(path, {
      method,
      headers: body === undefined ? undefined : { "content-type": "application/json" },
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    });
  return { ...h, call };
}

/** `counted`: refused by its schema, so the status counts it under security.peerMalformed. */
const CASES: Array<{ name: string; method: string; path: string; body?: unknown; status: number; code: string; counted?: true }> = [
  { name: "malformed JSON", method: "POST", path: "/v1/ring/enter", body: "{nope", status: 400, code: "bad_request" },
  { name: "a body that is not an object", method: "POST", path: "/v1/ring/enter", body: "[1]", status: 400, code: "bad_request" },
  { name: "an unknown field", method: "POST", path: "/v1/ring/enter", body: { waitMs: 1, wait: 2 }, status: 400, code: "bad_request" },
  { name: "a negative waitMs", method: "POST", path: "/v1/ring/enter", body: { waitMs: -1 }, status: 400, code: "bad_request" },
  { name: "a lease above ringLeaseMaxMs", method: "POST", path: "/v1/ring/enter", body: { waitMs: 1, leaseMs: settings.ringLeaseMaxMs + 1 }, status: 400, code: "bad_request" },
  { name: "an unknown ticket", method: "POST", path: "/v1/ring/enter", body: { waitMs: 1, ticket: "t-99" }, status: 404, code: "waiter_not_found" },
  { name: "a leave with neither fence nor ticket", method: "POST", path: "/v1/ring/leave", body: {}, status: 400, code: "bad_request" },
  { name: "a leave with both fence and ticket", method: "POST", path: "/v1/ring/leave", body: { fence: 1, ticket: "t-1" }, status: 400, code: "bad_request" },
  { name: "a leave of a section that is not running", method: "POST", path: "/v1/ring/leave", body: { fence: 7 }, status: 409, code: "not_in_section" },
  { name: "a put outside any section", method: "POST", path: "/v1/ring/put", body: { fence: 7, key: "k", value: "v" }, status: 409, code: "not_in_section" },
  { name: "a put with a stale fence", method: "POST", path: "/v1/ring/put", body: { fence: 0, key: "k", value: "v" }, status: 409, code: "not_in_section" },
  { name: "a put without a value", method: "POST", path: "/v1/ring/put", body: { fence: 1, key: "k" }, status: 400, code: "bad_request" },
  { name: "a put with a number value", method: "POST", path: "/v1/ring/put", body: { fence: 1, key: "k", value: 3 }, status: 400, code: "bad_request" },
  { name: "a put with a key above ringKeyLengthMax", method: "POST", path: "/v1/ring/put", body: { fence: 1, key: "k".repeat(settings.ringKeyLengthMax + 1), value: "v" }, status: 400, code: "bad_request" },
  { name: "a put with a value above ringValueBytesMax", method: "POST", path: "/v1/ring/put", body: { fence: 1, key: "k", value: "é".repeat(settings.ringValueBytesMax / 2 + 1) }, status: 400, code: "bad_request" },
  { name: "a body above bodyBytesMax", method: "POST", path: "/v1/ring/put", body: { fence: 1, key: "k", value: "v".repeat(settings.bodyBytesMax) }, status: 413, code: "body_too_large" },
  { name: "a delete outside any section", method: "POST", path: "/v1/ring/delete", body: { fence: 9, key: "k" }, status: 409, code: "not_in_section" },
  { name: "a get without key", method: "GET", path: "/v1/ring/get", status: 400, code: "bad_request" },
  { name: "a get of a missing key", method: "GET", path: "/v1/ring/get?key=nope", status: 404, code: "key_not_found" },
  { name: "a get with a bad dirty flag", method: "GET", path: "/v1/ring/get?key=k&dirty=maybe", status: 400, code: "bad_request" },
  { name: "a log query with a bad from", method: "GET", path: "/v1/ring/log?from=-3", status: 400, code: "bad_request" },
  { name: "an unknown route", method: "GET", path: "/v1/ring/nothing", status: 404, code: "not_found" },
  { name: "a token from a node that is not the predecessor", method: "POST", path: "/v1/ring/peer/token", body: { from: "c", token: { epoch: 1, hop: 9, wseq: 0, commit: 0, fence: 0, idleHops: 0 } }, status: 400, code: "bad_request" },
  { counted: true, name: "a token with a missing field", method: "POST", path: "/v1/ring/peer/token", body: { from: "a", token: { epoch: 1, hop: 9, wseq: 0, commit: 0, fence: 0 } }, status: 400, code: "bad_request" },
  { counted: true, name: "a token whose commit is above its wseq", method: "POST", path: "/v1/ring/peer/token", body: { from: "a", token: { epoch: 1, hop: 9, wseq: 0, commit: 1, fence: 0, idleHops: 0 } }, status: 400, code: "bad_request" },
  { counted: true, name: "writes that are not consecutive", method: "POST", path: "/v1/ring/peer/writes", body: { from: "a", epoch: 1, entries: [
    { epoch: 1, wseq: 1, author: "a", origin: "a", op: { type: "put", key: "k", value: "1" } },
    { epoch: 1, wseq: 3, author: "a", origin: "a", op: { type: "put", key: "k", value: "3" } },
  ] }, status: 400, code: "bad_request" },
  { counted: true, name: "a write stamped above its message's epoch", method: "POST", path: "/v1/ring/peer/writes", body: { from: "a", epoch: 1, entries: [
    { epoch: 2, wseq: 1, author: "a", origin: "a", op: { type: "put", key: "k", value: "1" } },
  ] }, status: 400, code: "bad_request" },
  { counted: true, name: "a write with an unknown op", method: "POST", path: "/v1/ring/peer/writes", body: { from: "a", epoch: 1, entries: [
    { epoch: 1, wseq: 1, author: "a", origin: "a", op: { type: "append", key: "k", value: "1" } },
  ] }, status: 400, code: "bad_request" },
  { name: "writes from a node that is not the predecessor", method: "POST", path: "/v1/ring/peer/writes", body: { from: "c", epoch: 1, entries: [] }, status: 400, code: "bad_request" },
  { name: "a view message that is not a JSON object", method: "POST", path: "/v1/ring/peer/view", body: "[1]", status: 400, code: "bad_request" },
  // Issue 12: on commit 2c9c5fa this token passed (a safe integer) and was answered 200;
  // its epoch is above EPOCH_MAX, past which fences leave 2^53, so its schema refuses it.
  { counted: true, name: "a token of epoch 2^53 − 1 (schema: epochs ≤ EPOCH_MAX)", method: "POST", path: "/v1/ring/peer/token", body: { from: "a", token: { epoch: Number.MAX_SAFE_INTEGER, hop: 9, wseq: 0, commit: 0, fence: 0, idleHops: 0 } }, status: 400, code: "bad_request" },
  { counted: true, name: "a view message with a field its schema does not know", method: "POST", path: "/v1/ring/peer/view", body: { type: "probe", from: "a", epoch: 1, admin: true }, status: 400, code: "bad_request" },
  { counted: true, name: "a newView whose members are not strings", method: "POST", path: "/v1/ring/peer/view", body: { type: "newView", from: "a", view: { epoch: 2, coordinator: "a", members: [1, 2], regenerator: "a", startWseq: 1, resendFromWseq: 1, grantWaitMs: 0 } }, status: 400, code: "bad_request" },
  { name: "the old first-node regeneration's prepare route (gone)", method: "POST", path: "/v1/ring/peer/prepare", body: { from: "a", epoch: 5 }, status: 404, code: "not_found" },
];

for (const c of CASES) {
  test(`ring API: ${c.name} answers ${c.status} ${c.code} and changes nothing`, async () => {
    const h = setup();
    await withSection(h);
    const before = h.state();
    const response = await h.call(c.method, c.path, c.body);
    assert.equal(response.status, c.status);
    const body = await response.json();
    assert.equal(body.error?.code, c.code);
    assert.equal(typeof body.error?.message, "string");
    assert.equal(h.state(), before);
    if (c.counted) {
      // Refused by its schema: counted under `security` in the ring's status.
      const status = await (await h.call("GET", "/v1/ring/status")).json();
      assert.equal(status.security.peerMalformed, 1, "counted");
    }
    h.storage.close();
  });
}

/** `answers`: the view messages the node sends back (the view core's own answers, if any). */
const PEER_REFUSALS: Array<{ name: string; path: string; body: unknown; answer: unknown; answers?: string[] }> = [
  {
    name: "a token of an epoch whose view is not installed here: notYet (the sender's link retries)",
    path: "/v1/ring/peer/token",
    body: { from: "a", token: { epoch: 2, hop: 1, wseq: 0, commit: 0, fence: 0, idleHops: 0 } },
    answer: { ok: false, type: "notYet", epoch: 1 },
  },
  {
    name: "writes of an epoch older than the installed view: stale",
    path: "/v1/ring/peer/writes",
    body: { from: "a", epoch: 0, entries: [{ epoch: 0, wseq: 1, author: "a", origin: "a", op: { type: "put", key: "k", value: "1" } }] },
    answer: { ok: false, type: "stale", epoch: 1 },
  },
  { name: "a view message from an unknown sender (the core logs and drops it)", path: "/v1/ring/peer/view", body: { type: "prepare", from: "x", ballot: { epoch: 9, coordinator: "x" }, voters: ["a", "b", "c"] }, answer: { ok: true } },
  { name: "a prepare for another coordinator than its sender", path: "/v1/ring/peer/view", body: { type: "prepare", from: "c", ballot: { epoch: 9, coordinator: "a" }, voters: ["a", "b", "c"] }, answer: { ok: true } },
  { name: "a prepare of an epoch already installed (answered by a reject, nothing promised)", path: "/v1/ring/peer/view", body: { type: "prepare", from: "c", ballot: { epoch: 1, coordinator: "c" }, voters: ["a", "b", "c"] }, answer: { ok: true }, answers: ["c:reject"] },
  { name: "a view that is no majority", path: "/v1/ring/peer/view", body: { type: "newView", from: "a", view: viewOf(2, ["a"]) }, answer: { ok: true } },
  { name: "a view of a ballot this node never promised", path: "/v1/ring/peer/view", body: { type: "newView", from: "c", view: viewOf(2, ["a", "b", "c"], { coordinator: "c" }) }, answer: { ok: true } },
];

for (const c of PEER_REFUSALS) {
  test(`ring API: ${c.name}: answered 200 with the refusal, nothing changes`, async () => {
    const h = setup();
    await withSection(h);
    const before = h.state();
    const sentBefore = h.viewSent.length;
    const response = await h.call("POST", c.path, c.body);
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), c.answer);
    assert.equal(h.state(), before);
    assert.deepEqual(h.viewSent.slice(sentBefore).map((s) => `${s.to}:${s.message.type}`), c.answers ?? []);
    h.storage.close();
  });
}

test("ring API: the same routes succeed with valid input (the error cases are not vacuous)", async () => {
  const h = setup();
  const fence = await withSection(h);
  assert.equal(fence, fenceFloor(1) + 1, "the epoch is in the fence's high part");
  const before = h.state();
  // A put is answered only once it came back around; here it is stored and sent to the successor.
  const pending = h.call("POST", "/v1/ring/put", { fence, key: "k", value: "v" });
  await eventually("a valid put stores and sends", () => h.state() !== before);
  assert.equal((await (await h.call("GET", "/v1/ring/get?key=k&dirty=1")).json()).value, "v");
  const back = await h.call("POST", "/v1/ring/peer/writes", {
    from: "a",
    epoch: 1,
    entries: [{ epoch: 1, wseq: 1, author: "b", origin: "b", op: { type: "put", key: "k", value: "v" } }],
  });
  assert.equal(back.status, 200);
  const written = await pending;
  assert.equal(written.status, 200);
  assert.deepEqual(await written.json(), { written: true, key: "k", wseq: 1 });
  const left = await h.call("POST", "/v1/ring/leave", { fence });
  assert.deepEqual(await left.json(), { left: true, wasHolder: true });
  const got = await (await h.call("GET", "/v1/ring/get?key=k")).json();
  assert.equal(got.value, "v");
  h.storage.close();
});

test("ring API: status names the epoch, view, lease, neighbours, token state and rotation time", async () => {
  const h = setup();
  await withSection(h);
  const status = await (await h.call("GET", "/v1/ring/status")).json();
  assert.equal(status.epoch, 1);
  assert.deepEqual(status.members, ["a", "b", "c"]);
  assert.equal(status.refuseBelowEpoch, 1);
  assert.deepEqual([status.view.view.epoch, status.view.promised, status.view.member, status.view.lastChange.reason], [1, { epoch: 1, coordinator: "a" }, true, "joined"]);
  assert.equal(status.lease.quorum, "ok");
  assert.equal(status.lease.validUntilMs, h.clock.nowMs() + settings.tokenLeaseMs - settings.tokenLeaseSafetyMs, "the lease b's grant took");
  assert.equal(status.successor, "c");
  assert.equal(status.predecessor, "a");
  assert.equal(status.token, "held");
  assert.equal(status.section.fence, fenceFloor(1) + 1);
  assert.ok("lastRotationMs" in status && "lastTokenAgeMs" in status);
  h.service.stop();
  h.storage.close();
});
