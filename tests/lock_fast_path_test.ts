/**
 * The lock API's fast path (cluster/lock/api_fast_path.ts installFastPath, issue 14): `POST /v1/sessions`,
 * `/v1/enter` and `/v1/leave` with a declared Content-Length are answered without Hono's routing
 * and middleware. This proves it answers exactly as the Hono routes do: the same requests, sent
 * once with a Content-Length (the fast path) to one fresh service and once without (Hono's
 * route, which reads a body of unknown length chunk by chunk) to another, get the same status,
 * body and headers byte for byte (the wire format header too), for grants, releases, force-releases and every kind of refusal, and leave
 * the same table; the fast server's bearer middleware never runs for them (the fast path was taken).
 * With client tokens in the cluster the fast path is off: a request with a declared length meets the
 * bearer check and the route's permission exactly as one without. A Content-Length repeated with one
 * value (Deno and Bun accept it) limits the body as one does: it used to read as NaN, and a body of
 * any size was read (on the fast path also parsed and handled).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type { MiddlewareHandler } from "hono";
import { manualClock } from "../cluster/clock.ts";
import { ClientAuth } from "../cluster/client_auth.ts";
import type { TokenConfig } from "../cluster/config.ts";
import { createLockApp } from "../cluster/lock/api.ts";
import { hashSessionSecret } from "../cluster/lock/session_secret.ts";
import { jsonResponder } from "../cluster/runtime.ts";
import { realTimers } from "../cluster/timers.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { FORMAT_HEADER, formatText, WIRE_FORMAT } from "../lib/wire/version.ts";
import { brokenOffBody, countingBody } from "./_harness.ts";
import { soloLockService } from "./_lock_service.ts";

const SETTINGS = { ...DEFAULT_SETTINGS, bodyBytesMax: 1_024 };
const SECRET = "s".repeat(40);
const OTHER_SECRET = "o".repeat(40);

/**
 * A lock app on a fresh service; `tokens`: the cluster's client tokens (none: open). `middlewareRuns`
 * counts the requests that went through the bearer middleware, that is through Hono's routes.
 */
function server(declareLength: boolean, tokens: TokenConfig[] = []) {
  const service = soloLockService(SETTINGS, realTimers, manualClock(1_000));
  const auth = new ClientAuth(tokens, null);
  const counted = { middlewareRuns: 0 };
  const bearer = auth.middleware;
  (auth as { middleware: MiddlewareHandler }).middleware = (c, next) => {
    counted.middlewareRuns++;
    return bearer(c, next);
  };
  const app = createLockApp(service, { nodeId: "p1", role: "primary", settings: SETTINGS, auth });
  const send = async (path: string, raw: string, bearerSecret?: string) => {
    const bytes = new TextEncoder().encode(raw);
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (declareLength) headers["content-length"] = String(bytes.byteLength);
    if (bearerSecret !== undefined) headers.authorization = `Bearer ${bearerSecret}`;
    const response = await app.request(path, { method: "POST", headers, body: bytes });
    // The answer's every header and its text byte for byte, so the two paths are compared as the client sees them.
    const text = await response.text();
    return { status: response.status, type: response.headers.get("content-type"), headers: [...response.headers], text, body: JSON.parse(text) };
  };
  return { service, send, counted, app };
}

test("the fast path answers every request as Hono's route does: grants, releases, refusals, and the same table", async () => {
  const fast = server(true);
  const hono = server(false);
  const steps: Array<[string, (session: string) => string]> = [
    ["/v1/sessions", () => JSON.stringify({ ttlMs: 5_000, sessionSecret: SECRET, requestId: "open-1" })],
    ["/v1/sessions", () => JSON.stringify({ ttlMs: 5_000, sessionSecret: SECRET, requestId: "open-1" })], // retried: same session
    ["/v1/enter", (s) => JSON.stringify({ name: "L", session: s, sessionSecret: SECRET, waitMs: 0 })],
    ["/v1/enter", (s) => JSON.stringify({ name: "L", session: s, sessionSecret: OTHER_SECRET })], // wrong secret: forbidden
    ["/v1/enter", (s) => JSON.stringify({ name: "L", session: s, sessionSecret: SECRET, colour: "red" })], // unknown field
    ["/v1/enter", () => JSON.stringify({ name: "L", session: "nobody", sessionSecret: SECRET })], // unknown session
    ["/v1/enter", (s) => JSON.stringify({ name: 7, session: s })], // ill-typed
    ["/v1/enter", () => "{oops"], // malformed JSON
    ["/v1/enter", () => "[1]"], // not an object
    ["/v1/enter", () => ""], // empty: {} (fields missing)
    ["/v1/enter", (s) => JSON.stringify({ name: "x".repeat(2_000), session: s })], // over bodyBytesMax
    ["/v1/leave", (s) => JSON.stringify({ name: "L", session: s, sessionSecret: SECRET, token: 999 })], // not its token
    ["/v1/leave", (s) => JSON.stringify({ name: "L", session: s, sessionSecret: SECRET, token: 1, requestId: "leave-1" })],
    ["/v1/leave", (s) => JSON.stringify({ name: "L", session: s, sessionSecret: SECRET, token: 1, requestId: "leave-1" })], // retried
    ["/v1/enter", (s) => JSON.stringify({ name: "F", session: s, sessionSecret: SECRET, waitMs: 0 })], // token 2
    ["/v1/force-release", () => JSON.stringify({ name: "F", requestId: "force-1" })], // no client tokens: forbidden
    ["/v1/force-release", () => JSON.stringify({ name: "F", session: "x" })], // unknown field
  ];
  let session = "";
  for (const [index, [path, body]] of steps.entries()) {
    const a = await fast.send(path, body(session));
    const b = await hono.send(path, body(session));
    assert.deepEqual(a, b, `step ${index}: ${path} ${body(session).slice(0, 80)}`);
    assert.equal(a.type, "application/json");
    // docs/http-api.md: every answer names the wire format (the fast path's lacked it before issue 14's third pass).
    assert.ok(a.headers.some(([name, value]) => name === FORMAT_HEADER && value === formatText(WIRE_FORMAT)), JSON.stringify(a.headers));
    if (index === 0) {
      assert.equal(a.status, 201);
      session = a.body.session;
    }
    if (index === 2) assert.equal(a.body.granted, true, "the free lock is granted");
    if (index === 15) assert.deepEqual([a.status, a.body.error?.code], [403, "forbidden"], "an open cluster has no force-release");
  }
  assert.equal(JSON.stringify(fast.service.table!.snapshot()), JSON.stringify(hono.service.table!.snapshot()));
  // The answers' headers are made from one set (runtime.ts jsonResponder): a change to one answer's stays in it.
  const first = await fast.app.request("/v1/enter", { method: "POST", headers: { "content-length": "2" }, body: "{}" });
  first.headers.set("x-changed", "1");
  const second = await fast.app.request("/v1/enter", { method: "POST", headers: { "content-length": "2" }, body: "{}" });
  assert.equal(second.headers.get("x-changed"), null);
  assert.equal(fast.counted.middlewareRuns, 0, "every request with a declared length took the fast path");
  assert.equal(hono.counted.middlewareRuns, steps.length, "every request without one went through Hono's routes");
});

test("jsonResponder: every answer carries exactly the headers asked for, a content type Response.json would set otherwise too, and the body's JSON with the status", async () => {
  for (const contentType of ["application/json", "application/json; charset=UTF-8"]) {
    for (const status of [200, 201, 409]) {
      const answer = jsonResponder({ "content-type": contentType, "x-one": "1", "x-two": "b" })({ a: "é", n: 1 }, status);
      assert.equal(answer.status, status);
      assert.deepEqual([...answer.headers].sort(), [["content-type", contentType], ["x-one", "1"], ["x-two", "b"]]);
      assert.equal(await answer.text(), JSON.stringify({ a: "é", n: 1 }));
    }
  }
});

const LOCKER: TokenConfig = { name: "locker", secret: "l".repeat(40), permissions: [{ prefix: "", allow: ["lock"] }], sessionsMax: null, waitersMax: null };
const ADMIN: TokenConfig = { name: "admin", secret: "a".repeat(40), permissions: [{ prefix: "", allow: ["admin"] }], sessionsMax: null, waitersMax: null };

test("with client tokens the fast path is off: a declared length meets the bearer check and the route's permission, as without one", async () => {
  const fast = server(true, [LOCKER, ADMIN]);
  const hono = server(false, [LOCKER, ADMIN]);
  const steps: Array<[string, (session: string) => string, string | undefined, number]> = [
    ["/v1/sessions", () => JSON.stringify({ sessionSecret: SECRET }), undefined, 401], // no bearer token
    ["/v1/sessions", () => JSON.stringify({ sessionSecret: SECRET }), "x".repeat(40), 401], // an unknown one
    ["/v1/sessions", () => JSON.stringify({ sessionSecret: SECRET }), LOCKER.secret, 201],
    ["/v1/enter", (s) => JSON.stringify({ name: "L", session: s, sessionSecret: SECRET }), undefined, 401],
    ["/v1/enter", (s) => JSON.stringify({ name: "L", session: s, sessionSecret: SECRET }), LOCKER.secret, 200],
    ["/v1/force-release", () => JSON.stringify({ name: "L" }), undefined, 401],
    ["/v1/force-release", () => JSON.stringify({ name: "L" }), LOCKER.secret, 403], // lock, not admin
    ["/v1/leave", (s) => JSON.stringify({ name: "L", session: s, sessionSecret: SECRET, token: 1 }), undefined, 401],
    ["/v1/force-release", () => JSON.stringify({ name: "L" }), ADMIN.secret, 200],
  ];
  let session = "";
  for (const [index, [path, body, bearer, status]] of steps.entries()) {
    const a = await fast.send(path, body(session), bearer);
    const b = await hono.send(path, body(session), bearer);
    assert.deepEqual(a, b, `step ${index}: ${path}`);
    assert.equal(a.status, status, `step ${index}: ${path} ${JSON.stringify(a.body)}`);
    if (index === 2) session = a.body.session;
  }
  assert.equal(fast.counted.middlewareRuns, steps.length, "with tokens every request went through the bearer middleware");
  assert.equal(JSON.stringify(fast.service.table!.snapshot()), JSON.stringify(hono.service.table!.snapshot()));
});

test("a Content-Length repeated with one value (both runtimes accept it, and Headers shows it as \"N, N\") is the length N: a body over bodyBytesMax is refused unread, on the fast path and through Hono's routes", async () => {
  const service = soloLockService(SETTINGS, realTimers, manualClock(1_000));
  const app = createLockApp(service, { nodeId: "p1", role: "primary", settings: SETTINGS });
  const before = JSON.stringify(service.table!.snapshot());
  const body = JSON.stringify({ ttlMs: 5_000, sessionSecret: SECRET, pad: "x".repeat(4 * SETTINGS.bodyBytesMax) });
  const length = String(new TextEncoder().encode(body).byteLength);
  // /v1/sessions takes the fast path; a keepalive (a path parameter) Hono's route and readBodyBytes.
  for (const path of ["/v1/sessions", "/v1/sessions/t-1/keepalive"]) {
    const headers = new Headers({ "content-type": "application/json" });
    headers.append("content-length", length);
    headers.append("content-length", length);
    assert.equal(headers.get("content-length"), `${length}, ${length}`, "Headers joins the repeats");
    // The body as a stream that counts what the server pulls: nothing, when refused unread.
    const { stream, pulledBytes } = countingBody(new TextEncoder().encode(body));
    const response = await app.request(path, { method: "POST", headers, body: stream, duplex: "half" } as RequestInit);
    assert.equal(response.status, 413, `${path}: ${await response.clone().text()}`);
    assert.equal((await response.json()).error.code, "body_too_large");
    assert.equal(pulledBytes(), 0, `${path}: the body was not read`);
  }
  for (const malformed of ["12abc", "-5", "1e3", `${length}, 7`]) {
    const response = await app.request("/v1/sessions", { method: "POST", headers: { "content-length": malformed }, body });
    assert.equal(response.status, 400, `Content-Length ${malformed}`);
    assert.equal((await response.json()).error.code, "bad_request");
  }
  assert.equal(JSON.stringify(service.table!.snapshot()), before, "nothing was opened");
});

test("a body that breaks off while read (the client closed its connection) is a refusal, 400 bad_request, on the fast path as through Hono's routes: never an internal error, nothing changed", async () => {
  const service = soloLockService(SETTINGS, realTimers, manualClock(1_000));
  const internal: Error[] = [];
  const app = createLockApp(service, { nodeId: "p1", role: "primary", settings: SETTINGS, onInternalError: (error) => internal.push(error) });
  const before = JSON.stringify(service.table!.snapshot());
  const body = new TextEncoder().encode(JSON.stringify({ ttlMs: 5_000, sessionSecret: SECRET }));
  for (const path of ["/v1/sessions", "/v1/sessions/t-1/keepalive"]) {
    // Half the declared bytes, then the stream fails, as a reset connection's does.
    const stream = brokenOffBody(body);
    const headers = { "content-type": "application/json", "content-length": String(body.byteLength) };
    const response = await app.request(path, { method: "POST", headers, body: stream, duplex: "half" } as RequestInit);
    assert.equal(response.status, 400, `${path}: ${await response.clone().text()}`);
    const { error } = await response.json();
    assert.equal(error.code, "bad_request");
    assert.match(error.message, /could not be read/);
  }
  assert.deepEqual(internal, []);
  assert.equal(JSON.stringify(service.table!.snapshot()), before, "nothing was opened");
});

test("a session secret hashes to its SHA-256 in hex, as before the one-shot hash: stored hashes (a durable log, an older backup) still match", () => {
  // Under Bun through Bun.SHA256 (cluster/runtime.ts sha256Hex), under Deno through node:crypto's hash.
  for (const secret of [SECRET, "x".repeat(256), "é€😀 non-ASCII secret of 32+ characters", "", "lone \ud800 surrogate \udfff"]) {
    assert.equal(hashSessionSecret(secret), createHash("sha256").update(secret, "utf8").digest("hex"));
  }
  assert.equal(hashSessionSecret(undefined), "");
});
