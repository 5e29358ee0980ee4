/**
 * The ring node's fast path (cluster/ring/api.ts installRingFastPath, over cluster/post_fast_path.ts):
 * `POST /v1/ring/enter` and `/v1/ring/leave` with a declared Content-Length are answered without
 * Hono's routing and middleware. This proves it answers exactly as the Hono routes do: the same
 * requests, sent once with a Content-Length (the fast path) to one fresh node and once without
 * (Hono's route, which reads a body of unknown length chunk by chunk) to another, get the same
 * status, body and headers byte for byte (the wire format header too) for grants, long-polls that
 * end "waiting", re-asks with a ticket, withdrawals, releases and every kind of refusal (bad JSON,
 * a body over bodyBytesMax, wrong types, missing and unknown fields, a request naming another wire
 * format), and leave the two nodes in the same state; a long-poll ended by the caller going away
 * (its request's signal) answers "waiting" on both. The fast node's bearer middleware never runs
 * for them (the fast path was taken). With client tokens the fast path is off. A Content-Length
 * over the limit (also repeated) is refused unread, a malformed one and a broken-off body are
 * refusals (400), never internal errors.
 */
import { afterEach, test } from "node:test";
import assert from "node:assert/strict";
import type { MiddlewareHandler } from "hono";
import { ClientAuth } from "../cluster/client_auth.ts";
import type { TokenConfig } from "../cluster/config.ts";
import type { Settings } from "../lib/settings.ts";
import { FORMAT_HEADER, formatText, WIRE_FORMAT } from "../lib/wire/version.ts";
import { brokenOffBody, countingBody, eventually, removeDir } from "./_harness.ts";
import { send } from "./_fuzz_apps.ts";
import { FUZZ_RING_SETTINGS, ringNode } from "./_ring_app.ts";

/** Each test's data directories, removed after it (also when it failed). */
const dirs: string[] = [];
const closes: Array<() => void> = [];
afterEach(() => {
  for (const close of closes.splice(0)) close();
  for (const dir of dirs.splice(0)) removeDir(dir);
});

/**
 * Node b (tests/_ring_app.ts) holding the token (handed by a through Hono's peer route), and
 * `send` to its client routes, with a declared length or without (`declareLength`).
 * `middlewareRuns` counts the client requests that went through the bearer middleware, that is
 * through Hono's routes.
 */
function server(declareLength: boolean, settings: Settings = FUZZ_RING_SETTINGS, tokens: TokenConfig[] = []) {
  const auth = new ClientAuth(tokens, null);
  const counted = { middlewareRuns: 0 };
  const bearer = auth.middleware;
  (auth as { middleware: MiddlewareHandler }).middleware = (c, next) => {
    if (!c.req.path.startsWith("/v1/ring/peer/")) counted.middlewareRuns++;
    return bearer(c, next);
  };
  const h = ringNode(dirs, settings, { auth });
  closes.push(h.close);
  const post = async (path: string, raw: string, init: { bearer?: string; headers?: Record<string, string>; signal?: AbortSignal } = {}) => {
    const bytes = new TextEncoder().encode(raw);
    const headers: Record<string, string> = { "content-type": "application/json", ...init.headers };
    if (declareLength) headers["content-length"] = String(bytes.byteLength);
    if (init.bearer !== undefined) headers.authorization = `Bearer ${init.bearer}`;
    const response = await h.app.request(path, { method: "POST", headers, body: bytes, signal: init.signal });
    // Every header and the text byte for byte: the two paths compared as the client sees them.
    const text = await response.text();
    return { status: response.status, headers: [...response.headers], text, body: JSON.parse(text) };
  };
  const handToken = async () => {
    // idleHops = ring size: the idle token rests here (the manual clock never ends the pause).
    const token = { epoch: 1, hop: 1, wseq: 0, commit: 0, fence: 0, idleHops: 3 };
    const handed = await send(h.app, { method: "POST", path: "/v1/ring/peer/token", body: JSON.stringify({ from: "a", token }), contentType: "application/json" });
    assert.equal(handed.status, 200, handed.text);
  };
  return { ...h, post, counted, handToken };
}

/** A step: path, body (from the answers so far), extra headers. */
type Step = [string, (seen: Seen) => string, Record<string, string>?];
interface Seen {
  fence: number;
  ticket: string;
}

test("the ring's fast path answers enter and leave as Hono's routes do: grants, long-polls, tickets, releases, every refusal, and the same node state", async () => {
  const fast = server(true);
  const hono = server(false);
  await fast.handToken();
  await hono.handToken();
  const j = JSON.stringify;
  const steps: Step[] = [
    ["/v1/ring/enter", () => j({ waitMs: 1_000 })], // granted: the token is here
    ["/v1/ring/enter", () => j({ waitMs: 0 })], // a try while held: not granted, "taken"
    ["/v1/ring/enter", () => j({ waitMs: 5 })], // waits its 1 ms long-poll (longPollMaxMs), "waiting" with a ticket
    ["/v1/ring/enter", (s) => j({ ticket: s.ticket })], // asks again with the ticket: still waiting, its place kept
    ["/v1/ring/enter", () => j({ waitMs: 5, leaseMs: 2_000 })], // a second waiter
    ["/v1/ring/leave", (s) => j({ ticket: s.ticket })], // the first waiter withdraws
    ["/v1/ring/leave", (s) => j({ fence: s.fence, ticket: s.ticket })], // both: 400
    ["/v1/ring/leave", () => j({})], // neither: 400
    ["/v1/ring/leave", () => ""], // empty body: {} (neither)
    ["/v1/ring/leave", () => j({ fence: "1" })], // ill-typed
    ["/v1/ring/leave", () => j({ fence: -1 })], // out of range
    ["/v1/ring/leave", () => j({ fence: 1, colour: "red" })], // unknown field
    ["/v1/ring/enter", () => j({ waitMs: "soon" })], // ill-typed
    ["/v1/ring/enter", () => j({ waitMs: 1.5 })], // not an integer
    ["/v1/ring/enter", () => j({ ticket: 7 })], // ill-typed ticket
    ["/v1/ring/enter", () => j({ ticket: "t-no-such" })], // unknown ticket
    ["/v1/ring/enter", () => "{oops"], // malformed JSON
    ["/v1/ring/enter", () => "[1]"], // not an object
    ["/v1/ring/enter", () => "null"], // not an object
    ["/v1/ring/enter", () => j({ waitMs: 0, pad: "x".repeat(FUZZ_RING_SETTINGS.bodyBytesMax) })], // over bodyBytesMax: 413
    ["/v1/ring/leave", () => `{"fence":1,"x":"${"é".repeat(FUZZ_RING_SETTINGS.bodyBytesMax / 2)}"}`], // over the limit in bytes, not in characters
    ["/v1/ring/enter", () => j({ waitMs: 0 }), { [FORMAT_HEADER]: "99.0" }], // another wire format: client routes ignore it, on both paths
    ["/v1/ring/leave", () => j({ fence: 999_999 })], // not the holder's fence
    ["/v1/ring/leave", (s) => j({ fence: s.fence })], // the holder leaves
    ["/v1/ring/leave", (s) => j({ fence: s.fence })], // again
  ];
  const seen: Seen = { fence: 0, ticket: "" };
  for (const [index, [path, body, headers]] of steps.entries()) {
    const a = await fast.post(path, body(seen), { headers });
    const b = await hono.post(path, body(seen), { headers });
    assert.deepEqual(a, b, `step ${index}: ${path} ${body(seen).slice(0, 80)}`);
    assert.ok(a.headers.some(([name, value]) => name === FORMAT_HEADER && value === formatText(WIRE_FORMAT)), j(a.headers));
    assert.ok(a.headers.some(([name, value]) => name === "content-type" && value === "application/json"), j(a.headers));
    if (index === 0) {
      assert.equal(a.body.granted, true, a.text);
      seen.fence = a.body.fence;
    }
    if (index === 1) assert.deepEqual(a.body, { granted: false, waiting: false, reason: "taken" });
    if (index === 2) {
      assert.equal(a.body.waiting, true, a.text);
      seen.ticket = a.body.ticket;
    }
    if (index === 3) assert.deepEqual([a.body.waiting, a.body.ticket], [true, seen.ticket], a.text);
    if (index === 19) assert.deepEqual([a.status, a.body.error?.code], [413, "body_too_large"]);
    if (index === 23) assert.deepEqual(a.body, { left: true, wasHolder: true });
    // Each kind of answer is met: a grant, a wait, a withdrawal, a release, refusals.
    if ([6, 7, 8, 9, 11, 12, 16, 17].includes(index)) assert.deepEqual([a.status, a.body.error?.code], [400, "bad_request"], `step ${index}: ${a.text}`);
  }
  assert.equal(fast.state(), hono.state(), "the two nodes are in the same state");
  assert.equal(fast.counted.middlewareRuns, 0, "every request with a declared length took the fast path");
  assert.equal(hono.counted.middlewareRuns, steps.length, "every request without one went through Hono's routes");
});

test("a long-poll that the caller leaves (its request's signal) ends at once, \"waiting\" with a ticket, on the fast path as through Hono's route", async () => {
  // Long-polls of up to 60 s: only the abort ends them within the test's time.
  const settings = { ...FUZZ_RING_SETTINGS, longPollMaxMs: 60_000 };
  const fast = server(true, settings);
  const hono = server(false, settings);
  const answers = [];
  for (const h of [fast, hono]) {
    await h.handToken();
    const held = await h.post("/v1/ring/enter", JSON.stringify({ waitMs: 0 }));
    assert.equal(held.body.granted, true, held.text);
    const caller = new AbortController();
    const waiting = h.post("/v1/ring/enter", JSON.stringify({ waitMs: 60_000 }), { signal: caller.signal });
    await eventually("the enter waits in the node's queue", () => h.node.status(0).waiters === 1);
    let answer: Awaited<typeof waiting> | undefined;
    waiting.then((a) => (answer = a));
    caller.abort();
    // Within eventually's 10 s, long before the 60 s wait would end by itself.
    await eventually("the left long-poll is answered at once", () => answer !== undefined);
    answers.push(answer!);
  }
  assert.deepEqual(answers[0], answers[1]);
  assert.deepEqual([answers[0].status, answers[0].body.waiting, typeof answers[0].body.ticket], [200, true, "string"], answers[0].text);
  assert.equal(fast.state(), hono.state());
  assert.equal(fast.counted.middlewareRuns, 0, "the fast node's requests took the fast path");
});

const LOCKER: TokenConfig = { name: "locker", secret: "l".repeat(40), permissions: [{ prefix: "", allow: ["lock"] }], sessionsMax: null, waitersMax: null };
const READER: TokenConfig = { name: "reader", secret: "r".repeat(40), permissions: [{ prefix: "", allow: ["read"] }], sessionsMax: null, waitersMax: null };

test("with client tokens the ring's fast path is off: a declared length meets the bearer check and the section's permission, as without one", async () => {
  const fast = server(true, FUZZ_RING_SETTINGS, [LOCKER, READER]);
  const hono = server(false, FUZZ_RING_SETTINGS, [LOCKER, READER]);
  await fast.handToken();
  await hono.handToken();
  const steps: Array<[string, string, string | undefined, number]> = [
    ["/v1/ring/enter", JSON.stringify({ waitMs: 0 }), undefined, 401], // no bearer token
    ["/v1/ring/enter", JSON.stringify({ waitMs: 0 }), "x".repeat(40), 401], // an unknown one
    ["/v1/ring/enter", JSON.stringify({ waitMs: 0 }), READER.secret, 403], // read, not lock
    ["/v1/ring/enter", JSON.stringify({ waitMs: 0 }), LOCKER.secret, 200],
    ["/v1/ring/leave", JSON.stringify({ fence: 1 }), undefined, 401],
  ];
  for (const [index, [path, body, bearer, status]] of steps.entries()) {
    const a = await fast.post(path, body, { bearer });
    const b = await hono.post(path, body, { bearer });
    assert.deepEqual(a, b, `step ${index}: ${path}`);
    assert.equal(a.status, status, `step ${index}: ${path} ${a.text}`);
  }
  assert.equal(fast.counted.middlewareRuns, steps.length, "with tokens every request went through the bearer middleware");
  assert.equal(fast.state(), hono.state());
});

test("on the ring's fast path a Content-Length over bodyBytesMax (also repeated) is refused unread, a malformed one and a broken-off body are refusals (400): never an internal error, nothing changed", async () => {
  const h = server(true);
  await h.handToken();
  // An internal error would answer 500 `internal`: every answer here is checked for its code.
  const before = h.state();
  const body = JSON.stringify({ waitMs: 0, pad: "x".repeat(4 * FUZZ_RING_SETTINGS.bodyBytesMax) });
  const length = String(new TextEncoder().encode(body).byteLength);
  for (const path of ["/v1/ring/enter", "/v1/ring/leave"]) {
    for (const repeats of [1, 2]) {
      const headers = new Headers({ "content-type": "application/json" });
      for (let i = 0; i < repeats; i++) headers.append("content-length", length);
      // The body as a stream that counts what the server pulls: nothing, when refused unread.
      const { stream, pulledBytes } = countingBody(new TextEncoder().encode(body));
      const response = await h.app.request(path, { method: "POST", headers, body: stream, duplex: "half" } as RequestInit);
      assert.equal(response.status, 413, `${path}: ${await response.clone().text()}`);
      assert.equal((await response.json()).error.code, "body_too_large");
      assert.equal(pulledBytes(), 0, `${path}: the body was not read`);
    }
    for (const malformed of ["12abc", "-5", "1e3", `${length}, 7`]) {
      const response = await h.app.request(path, { method: "POST", headers: { "content-length": malformed }, body });
      assert.equal(response.status, 400, `${path} Content-Length ${malformed}`);
      assert.equal((await response.json()).error.code, "bad_request");
    }
    // Half the declared bytes, then the stream fails, as a reset connection's does.
    const good = new TextEncoder().encode(JSON.stringify({ waitMs: 0 }));
    const broken = brokenOffBody(good);
    const response = await h.app.request(path, { method: "POST", headers: { "content-length": String(good.byteLength) }, body: broken, duplex: "half" } as RequestInit);
    assert.equal(response.status, 400, `${path}: ${await response.clone().text()}`);
    const { error } = await response.json();
    assert.equal(error.code, "bad_request");
    assert.match(error.message, /could not be read/);
  }
  assert.equal(h.state(), before, "nothing changed");
  assert.equal(h.counted.middlewareRuns, 0, "every request took the fast path");
});
