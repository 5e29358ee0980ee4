/**
 * The ring's section-bound fields (`renew.sectionMaxMs`, a promise's `facts.holdSectionMaxMs`)
 * go only to peers whose wire format reads them (1.1, lib/wire/version.ts SECTION_BOUND_FORMAT):
 * a build of 1.0 has strict schemas without them and refused every renewal and promise that
 * carried them, so a ring mixing the two failed its renewals (docs/ring.md "Known limits", before).
 * The HTTP peers (cluster/ring/http_peers.ts) learn each peer's format from its answers'
 * x-mutexd-format and from its view messages' (the ring app's view route reports them), and ask
 * one never heard from before the first message that carries the fields (GET /v1/health); a peer
 * of 1.0, of no header (a build before versions), of another major or that did not answer gets
 * the message without them; one that names 1.1 or a newer minor gets them.
 * Leaving them out is safe: the receiver counts ringLeaseMaxMs (docs/ring.md "The token lease").
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as v from "valibot";
import { Hono } from "hono";
import { ClientAuth } from "../cluster/client_auth.ts";
import { installErrorHandlers } from "../cluster/http_util.ts";
import { plainPeerFetch } from "../cluster/peer_signer.ts";
import { serveRoutes, viewRoute } from "../cluster/ring/api.ts";
import { httpPeers } from "../cluster/ring/http_peers.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { EPOCH_MAX, type ViewMessage } from "../lib/core/ring/view_wire.ts";
import { viewMessageFor, viewMessageSchema } from "../lib/wire/ring_peer.ts";
import { FORMAT_HEADER } from "../lib/wire/version.ts";

const RENEW: ViewMessage = { type: "renew", from: "r1", epoch: 3, seq: 7, voters: ["r1", "r2", "r3"], sectionMaxMs: 5_000 };
const PROMISE: Extract<ViewMessage, { type: "promise" }> = {
  type: "promise",
  from: "r1",
  ballot: { epoch: 4, coordinator: "r2" },
  prior: { epoch: 3, coordinator: "r1" },
  viewEpoch: 3,
  facts: {
    lastApplied: 10,
    lastWriteEpoch: 3,
    commit: 9,
    tokenEpoch: 3,
    tokenHop: 12,
    tokenHere: "no",
    sectionRemainingMs: 0,
    holdEndedAgoMs: { r1: 40 },
    holdSectionMaxMs: { r1: 5_000 },
    restartedAgoMs: null,
  },
};

/**
 * The view-message schema of a 1.0 build: this build's, with the two optional fields taken out
 * (strict objects: an unknown key is refused). What a 1.0 peer's route checks first.
 */
function readsAsOldBuild(message: unknown): boolean {
  if (!v.safeParse(viewMessageSchema, message).success) return false;
  const m = message as Record<string, unknown>;
  if (m.type === "renew") return !("sectionMaxMs" in m);
  if (m.type === "promise") return !("holdSectionMaxMs" in (m.facts as Record<string, unknown>));
  return m.type !== "section" && m.type !== "sectionEnd"; // 1.2's messages: no variant of a 1.0 or 1.1 schema
}

test("viewMessageFor: the section bound's fields only for 1.1 or a newer minor; other messages as they are", () => {
  for (const theirs of [null, { major: 1, minor: 0 }, { major: 2, minor: 3 }]) {
    const renew: ViewMessage = viewMessageFor(RENEW, theirs)!;
    assert.ok(!("sectionMaxMs" in renew), `renew to ${JSON.stringify(theirs)}`);
    assert.deepEqual({ ...renew, sectionMaxMs: 5_000 }, RENEW, "nothing else changed");
    const promise = viewMessageFor(PROMISE, theirs) as Extract<ViewMessage, { type: "promise" }>;
    assert.ok(!("holdSectionMaxMs" in promise.facts), `promise to ${JSON.stringify(theirs)}`);
    assert.deepEqual(promise.facts.holdEndedAgoMs, { r1: 40 }, "the other facts stay");
    assert.ok(readsAsOldBuild(renew) && readsAsOldBuild(promise));
  }
  for (const theirs of [{ major: 1, minor: 1 }, { major: 1, minor: 4 }]) {
    assert.equal(viewMessageFor(RENEW, theirs), RENEW, `renew to ${JSON.stringify(theirs)} as it is`);
    assert.equal(viewMessageFor(PROMISE, theirs), PROMISE);
  }
  assert.ok("holdSectionMaxMs" in PROMISE.facts, "the core's message is not changed in place");
  const prepare: ViewMessage = { type: "prepare", from: "r1", ballot: { epoch: 4, coordinator: "r1" }, voters: ["r1", "r2", "r3"] };
  assert.equal(viewMessageFor(prepare, null), prepare);
});

test("the HTTP peers send the fields to a peer that names 1.1 or newer, asking one never heard from first; not to one of 1.0, of no header or that does not answer", async () => {
  /** What each peer's answers name (null: no header, a build before versions). */
  const answerFormat = new Map<string, string | null>([["r2", "1.0"], ["r3", "1.1"], ["r4", null], ["r5", "1.3"]]);
  const received: Array<{ to: string; path: string; body: Record<string, unknown> }> = [];
  const asked: string[] = [];
  const send = (url: string, init: RequestInit) => {
    const { host, pathname } = new URL(url);
    const to = host.split(".")[0];
    const format = answerFormat.get(to) ?? null;
    const headers: Record<string, string> = format === null ? {} : { [FORMAT_HEADER]: format };
    if (pathname === "/v1/health") {
      asked.push(to);
      // r2's health question is lost: its format stays unknown until it answers a message.
      if (to === "r2") return Promise.reject(new Error("timed out"));
      return Promise.resolve(new Response("{}", { status: 200, headers }));
    }
    const body = JSON.parse(String(init.body));
    received.push({ to, path: pathname, body });
    // A 1.0 build refuses what its strict schema does not know (400), as a real one did.
    const refused = (format === "1.0" || format === null) && !readsAsOldBuild(body);
    return Promise.resolve(new Response(refused ? '{"error":{"code":"bad_request"}}' : "{}", { status: refused ? 400 : 200, headers }));
  };
  const ids = ["r1", "r2", "r3", "r4", "r5"];
  const peers = httpPeers({
    self: "r1",
    urls: new Map(ids.map((id) => [id, `http://${id}.test`])),
    hopTimeoutMs: 1_000,
    peerFetch: plainPeerFetch(send),
    local: () => assert.fail("no local delivery here"),
  });
  const others = ids.slice(1);
  const renewTo = async () => {
    received.length = 0;
    await Promise.all(others.map((to) => peers.view(to, RENEW)));
    return new Map(received.map((r) => [r.to, "sectionMaxMs" in r.body]));
  };
  const expected = new Map([["r2", false], ["r3", true], ["r4", false], ["r5", true]]);

  // First contact: each peer is asked its format once, before the message; r2 did not answer, so
  // it gets none, and nobody refuses.
  assert.deepEqual(await renewTo(), expected);
  assert.deepEqual(asked.sort(), others);
  // From then on each peer's answers decide; nobody is asked again.
  assert.deepEqual(await renewTo(), expected);
  assert.equal(asked.length, others.length);
  received.length = 0;
  for (const to of others) await peers.view(to, PROMISE);
  assert.deepEqual(received.map((r) => [r.to, "holdSectionMaxMs" in (r.body.facts as object)]), [...expected]);
  // Messages without the fields go at once, without a question.
  const prepare: ViewMessage = { type: "prepare", from: "r1", ballot: { epoch: 5, coordinator: "r1" }, voters: ["r1", "r2", "r3"] };
  const fresh = httpPeers({ self: "r1", urls: new Map(ids.map((id) => [id, `http://${id}.test`])), hopTimeoutMs: 1_000, peerFetch: plainPeerFetch(send), local: () => assert.fail("no local delivery") });
  await fresh.view("r3", prepare);
  assert.equal(asked.length, others.length, "no question for a message that has nothing to leave out");

  // r3 is replaced by a 1.0 build (a rollback): its first refusal names 1.0, so the next renewal
  // leaves the field out again and is taken.
  answerFormat.set("r3", "1.0");
  await assert.rejects(async () => await peers.view("r3", RENEW), /status 400/);
  await peers.view("r3", RENEW);
  assert.ok(!("sectionMaxMs" in received[received.length - 1].body));
});

test("a view message's format counts too: the ring app's view route reports it, and the next message to its sender carries the fields", async () => {
  const reported: Array<[string, string | undefined]> = [];
  const received: ViewMessage[] = [];
  const app = new Hono();
  installErrorHandlers(app, () => {});
  serveRoutes(app, [viewRoute({ onViewMessage: (m) => received.push(m) }, DEFAULT_SETTINGS, undefined, (from, format) => reported.push([from, format]))], ClientAuth.open());
  const prepare = { type: "prepare", from: "r2", ballot: { epoch: 5, coordinator: "r2" }, voters: ["r1", "r2", "r3"] };
  const post = (headers: Record<string, string>) =>
    app.request("/v1/ring/peer/view", { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(prepare) });
  assert.equal((await post({ [FORMAT_HEADER]: "1.1" })).status, 200);
  assert.equal((await post({})).status, 200);
  assert.deepEqual(reported, [["r2", "1.1"], ["r2", undefined]], "the sender's format, and none from a build before versions");
  assert.equal(received.length, 2);

  // The peers take what the route reports: a promise to the coordinator just heard from carries the bound.
  const bodies: Record<string, unknown>[] = [];
  const peers = httpPeers({
    self: "r1",
    urls: new Map(["r1", "r2", "r3"].map((id) => [id, `http://${id}.test`])),
    hopTimeoutMs: 1_000,
    peerFetch: plainPeerFetch((_url, init) => {
      bodies.push(JSON.parse(String(init.body)));
      return Promise.resolve(new Response("{}", { status: 200, headers: { [FORMAT_HEADER]: "1.1" } }));
    }),
    local: () => assert.fail("no local delivery here"),
  });
  peers.heard("r2", "1.1");
  peers.heard("r9", "1.1"); // not a peer of the file: forgotten, the map stays bounded
  await peers.view("r2", PROMISE);
  assert.ok("holdSectionMaxMs" in (bodies[0].facts as object), "first message, after the prepare's 1.1");
  peers.heard("r2", undefined);
  await peers.view("r2", PROMISE);
  assert.ok(!("holdSectionMaxMs" in (bodies[1].facts as object)), "after a message without a format: none");
});

const SECTION: ViewMessage = { type: "section", from: "r1", epoch: 3, leaseMs: 3_000, n: 1 };
const SECTION_END: ViewMessage = { type: "sectionEnd", from: "r1", epoch: 3, n: 1 };

test("viewMessageFor: a section announcement and its end (1.2) only to a peer of 1.2 or a newer minor; none to one of 1.1, 1.0, another major or not heard from", () => {
  for (const message of [SECTION, SECTION_END]) {
    for (const theirs of [null, { major: 1, minor: 0 }, { major: 1, minor: 1 }, { major: 2, minor: 3 }]) {
      assert.equal(viewMessageFor(message, theirs), null, `${message.type} to ${JSON.stringify(theirs)}`);
    }
    for (const theirs of [{ major: 1, minor: 2 }, { major: 1, minor: 4 }]) assert.equal(viewMessageFor(message, theirs), message, `${message.type} to ${JSON.stringify(theirs)}`);
    assert.ok(v.safeParse(viewMessageSchema, message).success, `this build reads ${message.type}`);
    assert.ok(!readsAsOldBuild(message), `a build of 1.1 refuses ${message.type}`);
  }
});

test("the view schema is strict for section and sectionEnd: an extra key, a missing epoch or number, an epoch above EPOCH_MAX, a number that is no count is refused", () => {
  const { n: _n, ...endWithoutN } = SECTION_END as Extract<ViewMessage, { type: "sectionEnd" }>;
  const { n: _m, ...sectionWithoutN } = SECTION as Extract<ViewMessage, { type: "section" }>;
  const bads = [
    { ...SECTION_END, leaseMs: 0 },
    { type: "sectionEnd", from: "r1", n: 1 },
    { ...SECTION_END, epoch: EPOCH_MAX + 1 },
    { ...SECTION_END, from: 7 },
    endWithoutN,
    sectionWithoutN,
    ...[-1, 1.5, Number.MAX_SAFE_INTEGER + 2, "1"].flatMap((n) => [{ ...SECTION_END, n }, { ...SECTION, n }]),
  ];
  for (const bad of bads) assert.ok(!v.safeParse(viewMessageSchema, bad).success, JSON.stringify(bad));
  for (const good of [SECTION, SECTION_END, { ...SECTION_END, n: Number.MAX_SAFE_INTEGER }]) {
    assert.ok(v.safeParse(viewMessageSchema, good).success, JSON.stringify(good));
  }
});

test("the HTTP peers send a section announcement and its end only to the peers that name 1.2 or newer (asking one never heard from first); the others get nothing, so nobody refuses it", async () => {
  const answerFormat = new Map<string, string | null>([["r2", "1.0"], ["r3", "1.1"], ["r4", null], ["r5", "1.2"]]);
  const received: string[] = [];
  const refused: string[] = [];
  const send = (url: string, init: RequestInit) => {
    const to = new URL(url).host.split(".")[0];
    const format = answerFormat.get(to) ?? null;
    const headers: Record<string, string> = format === null ? {} : { [FORMAT_HEADER]: format };
    if (new URL(url).pathname === "/v1/health") return Promise.resolve(new Response("{}", { status: 200, headers }));
    received.push(to);
    const ok = format === "1.2" || readsAsOldBuild(JSON.parse(String(init.body)));
    if (!ok) refused.push(to);
    return Promise.resolve(new Response(ok ? "{}" : '{"error":{"code":"bad_request"}}', { status: ok ? 200 : 400, headers }));
  };
  const ids = ["r1", "r2", "r3", "r4", "r5"];
  const peers = httpPeers({ self: "r1", urls: new Map(ids.map((id) => [id, `http://${id}.test`])), hopTimeoutMs: 1_000, peerFetch: plainPeerFetch(send), local: () => assert.fail("no local delivery here") });
  await Promise.all(ids.slice(1).map((to) => peers.view(to, SECTION)));
  assert.deepEqual(received, ["r5"]);
  await Promise.all(ids.slice(1).map((to) => peers.view(to, SECTION_END)));
  assert.deepEqual(received, ["r5", "r5"], "the end of it goes by the same rule");
  assert.deepEqual(refused, []);
});
