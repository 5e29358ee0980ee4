/**
 * The shared fast path of the client APIs (cluster/post_fast_path.ts), on a bare Hono app with a
 * stand-in route, for what the lock's and the ring's fast-path tests cannot provoke through their
 * real handlers: the first reply is the answer, as through Hono (a handler that replied and then
 * threw keeps its reply); a throw before any reply goes to the app's error answer once; a body
 * longer than its declared length and over the route's limit (possible in process, through
 * `app.request`) is refused as too large, not parsed; and an app with client tokens is refused at
 * start-up, since this path skips their check.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Hono } from "hono";
import { type FastRoute, installPostFastPath, type JsonAnswer } from "../cluster/post_fast_path.ts";
import { RequestError } from "../cluster/http_util.ts";

const OPEN = { enabled: false };

/** A bare app with one fast route, `/x`, whose handler is `handle`; `errors` records what reached the error answer. */
function app(handle: FastRoute["handle"], bytesMax = 100) {
  const errors: Error[] = [];
  const hono = new Hono();
  hono.post("/x", (c) => c.json({ via: "hono" }));
  installPostFastPath(hono, new Map([["/x", { bytesMax, handle }]]), (error) => {
    errors.push(error);
    return error instanceof RequestError ? { status: 413, body: { error: { code: error.code } } } : { status: 500, body: { error: { code: "internal" } } };
  }, OPEN);
  const post = async (body: string, declared = new TextEncoder().encode(body).byteLength) => {
    const response = await hono.request("/x", { method: "POST", headers: { "content-length": String(declared) }, body });
    return { status: response.status, body: await response.json() as unknown };
  };
  return { post, errors };
}

test("post fast path: the first reply is the answer; a handler that replied and then threw keeps its reply, and the throw reaches no error answer", async () => {
  const { post, errors } = app((_input, _request, reply) => {
    reply({ status: 200, body: { first: true } });
    reply({ status: 409, body: { second: true } });
    throw new Error("after the reply");
  });
  assert.deepEqual(await post("{}"), { status: 200, body: { first: true } });
  assert.equal(errors.length, 0);
});

test("post fast path: a throw before any reply is answered by the app's error answer, once", async () => {
  const { post, errors } = app(() => {
    throw new Error("broken invariant");
  });
  assert.deepEqual(await post("{}"), { status: 500, body: { error: { code: "internal" } } });
  assert.equal(errors.length, 1);
  assert.equal(errors[0].message, "broken invariant");
});

test("post fast path: a body longer than its declared length and over the route's limit is refused as too large, never handed to the route", async () => {
  let handled = 0;
  const { post, errors } = app((_input, _request, reply) => {
    handled++;
    reply({ status: 200, body: {} });
  }, 10);
  const long = JSON.stringify({ padding: "x".repeat(40) });
  const answer = await post(long, 2);
  assert.equal(answer.status, 413);
  assert.equal(handled, 0);
  assert.ok(errors[0] instanceof RequestError && errors[0].code === "body_too_large");
  // Within the limit the same route answers (the check refuses nothing it should take).
  assert.equal((await post("{}")).status, 200);
});

test("post fast path: an app with client tokens is refused at start-up (the path skips their check), and a route without a declared length goes to Hono", async () => {
  assert.throws(() => installPostFastPath(new Hono(), new Map(), () => ({ status: 500, body: {} }), { enabled: true }), /client authentication/);
  const hono = new Hono();
  hono.post("/x", (c) => c.json({ via: "hono" }));
  installPostFastPath(hono, new Map([["/x", { bytesMax: 100, handle: (_i, _r, reply) => reply({ status: 200, body: { via: "fast" } } as JsonAnswer) }]]), () => ({ status: 500, body: {} }), OPEN);
  const chunked = new ReadableStream<Uint8Array>({ start: (c) => (c.enqueue(new TextEncoder().encode("{}")), c.close()) });
  const viaHono = await hono.request("/x", { method: "POST", body: chunked, duplex: "half" } as RequestInit);
  assert.deepEqual(await viaHono.json(), { via: "hono" });
});
