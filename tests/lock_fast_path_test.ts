/**
 * The lock API's fast path (cluster/lock/api.ts installFastPath, issue 14): `POST /v1/sessions`,
 * `/v1/enter` and `/v1/leave` with a declared Content-Length are answered without Hono's routing
 * and middleware. This proves it answers exactly as the Hono routes do: the same requests, sent
 * once with a Content-Length (the fast path) to one fresh service and once without (Hono's
 * route, which reads a body of unknown length chunk by chunk) to another, get the same status,
 * body and content type, for grants, releases and every kind of refusal, and leave the same table.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { manualClock } from "../cluster/clock.ts";
import { createLockApp } from "../cluster/lock/api.ts";
import { realTimers } from "../cluster/timers.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { soloLockService } from "./_lock_service.ts";

const SETTINGS = { ...DEFAULT_SETTINGS, bodyBytesMax: 1_024 };
const SECRET = "s".repeat(40);
const OTHER_SECRET = "o".repeat(40);

function server(declareLength: boolean) {
  const service = soloLockService(SETTINGS, realTimers, manualClock(1_000));
  const app = createLockApp(service, { nodeId: "p1", role: "primary", settings: SETTINGS });
  const send = async (path: string, raw: string) => {
    const bytes = new TextEncoder().encode(raw);
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (declareLength) headers["content-length"] = String(bytes.byteLength);
    const response = await app.request(path, { method: "POST", headers, body: bytes });
    return { status: response.status, type: response.headers.get("content-type"), body: await response.json() };
  };
  return { service, send };
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
  ];
  let session = "";
  for (const [index, [path, body]] of steps.entries()) {
    const a = await fast.send(path, body(session));
    const b = await hono.send(path, body(session));
    assert.deepEqual(a, b, `step ${index}: ${path} ${body(session).slice(0, 80)}`);
    assert.equal(a.type, "application/json");
    if (index === 0) {
      assert.equal(a.status, 201);
      session = a.body.session;
    }
    if (index === 2) assert.equal(a.body.granted, true, "the free lock is granted");
  }
  assert.equal(JSON.stringify(fast.service.table!.snapshot()), JSON.stringify(hono.service.table!.snapshot()));
});
