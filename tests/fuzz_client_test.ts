/**
 * Fuzzing the client API (fast-check) of a lock server and of a ring node, in process
 * (`app.request`, no sockets): every route gets random JSON values, mutated valid bodies (a field
 * dropped, an unknown field, a wrong type, huge, negative and fractional numbers, long strings,
 * deep nesting), bytes that are no JSON object, oversized bodies, wrong methods and content
 * types, hostile path parameters. The properties: never a 5xx; a refusal is
 * `{ error: { code, message } }` with its code's status; and a refused request leaves the node's
 * state (status: sessions, locks, tokens, applied index; the ring's replica, files and sends)
 * exactly as before. Each case runs against a fresh node, so cases do not depend on each other.
 */
import { afterEach, test } from "node:test";
import assert from "node:assert/strict";
import { checkAnswer, describe, FUZZ_LOCK_SETTINGS, type FuzzRequest, lockNode, requests, send, type Template } from "./_fuzz_apps.ts";
import { fuzz, FUZZ_TEST_TIMEOUT_MS } from "./_fuzz.ts";
import { ringNode, sendOrPending, withSection } from "./_ring_app.ts";
import { removeDir } from "./_harness.ts";

// ---- The lock server ------------------------------------------------------------------------

/**
 * Whether a refusal must leave the replica's log indices alone too: the body was no JSON object
 * or too large, so the route refused it before any command existed. A command whose fields
 * decode is logged before the replicated lock table decides it, so the table's own refusals
 * (unknown session, not holder, waitMs out of range, ...) take a log index (finding 1); they
 * must still change no session, lock or token.
 */
function refusedBeforeTheLog(request: FuzzRequest): boolean {
  if (request.shape === "oversized") return true;
  if (request.shape !== "raw" || request.body === undefined) return false;
  try {
    const value = JSON.parse(typeof request.body === "string" ? request.body : new TextDecoder().decode(request.body));
    return typeof value !== "object" || value === null || Array.isArray(value);
  } catch {
    return true;
  }
}

test("fuzz finding 1: a client command the lock table refuses takes no log index", { todo: "commands are logged before the replicated table decides them (LockReplica.clientRequest); refusing them before the log is a change to the core's design, not to the routes (issue 12)" }, async () => {
  // On 2c9c5fa: lastIndex and commitIndex go up by one for each of these refusals, so an
  // unauthenticated client can make the primary log, replicate (and with durable = true fsync)
  // one entry per bogus request. Shrunk from the fuzzer: DELETE /v1/sessions/%20, and an enter
  // with waitMs 2^31 (above waitMaxMs: refused by the table, not by the route).
  const node = await lockNode();
  for (const [method, path, body] of [
    ["DELETE", "/v1/sessions/nope", "{}"],
    ["POST", "/v1/enter", '{"name":"L","session":"nope"}'],
    ["POST", "/v1/enter", `{"name":"M","session":"${node.sessions.free}","waitMs":2147483648}`],
    ["POST", `/v1/leave`, `{"name":"L","session":"${node.sessions.free}","token":1}`]]) {
    const before = node.state();
    const answer = await send(node.app, { method, path, body, contentType: "application/json" });
    assert.ok([400, 404, 409].includes(answer.status), answer.text);
    assert.equal(node.state(), before, `${method} ${path}`);
  }
});

test("fuzz client: lock server routes never answer 5xx, refuse with a clear error, and a refusal changes nothing", { timeout: FUZZ_TEST_TIMEOUT_MS }, async () => {
  const probe = await lockNode();
  const { holder, waiter, free } = probe.sessions;
  const templates: Template[] = [
    { method: "POST", path: "/v1/sessions", body: { ttlMs: 5_000, requestId: "open-1" } },
    { method: "POST", path: `/v1/sessions/${holder}/keepalive`, body: {} },
    { method: "DELETE", path: `/v1/sessions/${free}`, body: { requestId: "close-1" } },
    { method: "POST", path: "/v1/enter", body: { name: "L", session: free, mode: "exclusive", waitMs: 0, lockDelayMs: 0, callId: "call-1" } },
    { method: "POST", path: "/v1/enter", body: { name: "M", session: free, mode: "shared", waitMs: 10_000, lockDelayMs: 100 } },
    { method: "POST", path: "/v1/leave", body: { name: "L", session: holder, token: 1, requestId: "leave-1" } },
    { method: "POST", path: "/v1/leave", body: { name: "L", session: waiter } },
    { method: "GET", path: "/v1/status" },
    { method: "GET", path: "/v1/sessions" },
    { method: "GET", path: "/v1/locks" },
    { method: "GET", path: "/v1/locks/L" },
    { method: "GET", path: "/v1/health" },
  ];
  const sessionIn = (path: string) => [holder, free].find((s) => path.includes(s)) ?? (path === "/v1/locks/L" ? "L" : undefined);
  let refused = 0;
  let accepted = 0;
  await fuzz("client lock routes", requests(templates, FUZZ_LOCK_SETTINGS.bodyBytesMax, sessionIn), async (request) => {
    const node = await lockNode();
    // Same ids every time: a fresh service draws the same sequence.
    assert.deepEqual(node.sessions, probe.sessions);
    const [before, tableBefore] = [node.state(), node.tableState()];
    const answer = await send(node.app, request);
    if (checkAnswer(answer, describe(request))) {
      refused += 1;
      const [after, expected] = refusedBeforeTheLog(request) ? [node.state(), before] : [node.tableState(), tableBefore];
      assert.equal(after, expected, `a refused request changed the state: ${describe(request)} -> ${answer.status} ${answer.text.slice(0, 200)}`);
    } else {
      accepted += 1;
    }
  }, 2_000);
  console.log(`fuzz client lock routes: ${refused} refused, ${accepted} accepted`);
  assert.ok(refused > 0 && accepted > 0, "both refusals and acceptances were exercised");
});

// ---- The ring node --------------------------------------------------------------------------

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) removeDir(dir);
});

test("fuzz client: ring node routes never answer 5xx, refuse with a clear error, and a refusal changes nothing", { timeout: FUZZ_TEST_TIMEOUT_MS }, async () => {
  const probe = ringNode(dirs);
  const fence = await withSection(probe);
  probe.close();
  const templates: Template[] = [
    { method: "POST", path: "/v1/ring/enter", body: { waitMs: 5, leaseMs: 1_000 } },
    { method: "POST", path: "/v1/ring/enter", body: { waitMs: 0, ticket: "t-1" } },
    { method: "POST", path: "/v1/ring/leave", body: { fence } },
    { method: "POST", path: "/v1/ring/leave", body: { ticket: "t-1" } },
    { method: "POST", path: "/v1/ring/put", body: { fence, key: "k", value: "v" } },
    { method: "POST", path: "/v1/ring/delete", body: { fence, key: "k" } },
    { method: "GET", path: `/v1/ring/section/${fence}?waitMs=1` },
    { method: "GET", path: "/v1/ring/get?key=k&dirty=1" },
    { method: "GET", path: "/v1/ring/keys?dirty=0" },
    { method: "GET", path: "/v1/ring/log?from=1" },
    { method: "GET", path: "/v1/ring/status" },
    { method: "GET", path: "/v1/health" },
  ];
  const queryIn = (path: string) => /[?=](k|1|0)(&|$)/.exec(path)?.[1] ?? (path.includes(`/section/${fence}`) ? String(fence) : undefined);
  let refused = 0;
  let accepted = 0;
  await fuzz("client ring routes", requests(templates, probe.settings.bodyBytesMax, queryIn), async (request) => {
    const node = ringNode(dirs);
    try {
      assert.equal(await withSection(node), fence);
      const before = node.stateWithSends();
      const answer = await sendOrPending(node, request, before);
      if (answer === "pending") {
        accepted += 1;
      } else if (checkAnswer(answer, describe(request))) {
        refused += 1;
        assert.equal(node.stateWithSends(), before, `a refused request changed the state: ${describe(request)} -> ${answer.status} ${answer.text.slice(0, 200)}`);
      } else {
        accepted += 1;
      }
    } finally {
      node.close();
    }
  }, 300);
  console.log(`fuzz client ring routes: ${refused} refused, ${accepted} accepted`);
  assert.ok(refused > 0 && accepted > 0, "both refusals and acceptances were exercised");
});
