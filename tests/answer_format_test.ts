/**
 * Client answers carry the wire format (cluster/format_version.ts answerFormatMiddleware,
 * lib/client/http.ts answerFormatError): every answer of the lock server, the arbiter and a ring
 * node (a success, an error, a 404) names `x-mutexd-format: 1.2`; the TS clients (lock, ring)
 * refuse an answer of another major with a MutexdError `version_mismatch` naming both versions,
 * whatever its status and body, and read one of another minor, or one without the header (a
 * server from before versions), as before.
 */
import { afterEach, test } from "node:test";
import assert from "node:assert/strict";
import { ArbiterCore } from "../lib/core/arbiter/arbiter.ts";
import { createArbiterApp } from "../cluster/arbiter/server.ts";
import { createLockApp } from "../cluster/lock/api.ts";
import { manualClock } from "../cluster/clock.ts";
import { memoryLogger } from "../cluster/log.ts";
import { SecurityLog } from "../cluster/security_log.ts";
import { connect } from "../lib/client/lock_client.ts";
import { connectRing } from "../lib/client/ring_client.ts";
import { MutexdError } from "../lib/wire/errors.ts";
import { FORMAT_HEADER } from "../lib/wire/version.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { soloLockService } from "./_lock_service.ts";
import { ringNode } from "./_ring_app.ts";
import { removeDir, tempDir } from "./_harness.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) removeDir(dir);
});

/** Asks `app` for a success, a refused request and an unknown route: each answer names 1.2. */
async function everyAnswerNamesFormat(what: string, app: { request(path: string, init?: RequestInit): Response | Promise<Response> }, ok: string, bad: { path: string; init: RequestInit }) {
  const answers = [
    ["a success", await app.request(ok)],
    ["an error", await app.request(bad.path, bad.init)],
    ["a 404", await app.request("/v1/no-such-route")],
  ] as const;
  assert.equal(answers[0][1].status, 200, `${what}: ${ok} succeeds`);
  assert.ok(answers[1][1].status >= 400 && answers[1][1].status !== 404, `${what}: ${bad.path} is refused (${answers[1][1].status})`);
  assert.equal(answers[2][1].status, 404);
  for (const [kind, answer] of answers) assert.equal(answer.headers.get(FORMAT_HEADER), "1.2", `${what}: ${kind} names its format`);
}

const BAD_JSON = { method: "POST", headers: { "content-type": "application/json" }, body: "{nope" };

test("every answer of the lock server, the arbiter and a ring node names its wire format (x-mutexd-format: 1.2)", async () => {
  const lockApp = createLockApp(soloLockService(DEFAULT_SETTINGS), { nodeId: "p1", role: "primary", settings: DEFAULT_SETTINGS });
  await everyAnswerNamesFormat("lock server", lockApp, "/v1/health", { path: "/v1/sessions", init: BAD_JSON });

  const dir = tempDir("mutexd-answer-format-");
  dirs.push(dir);
  const core = new ArbiterCore({ primaryId: "p1", backupId: "b1", leaseMs: 500, bootstrapWaitMs: 3_000 }, null, 0);
  const security = new SecurityLog(manualClock(0), memoryLogger(), 10_000);
  const arbiterApp = createArbiterApp(core, { nodeId: "a1", statePath: `${dir}/arbiter.json`, log: memoryLogger(), nowMs: () => 0, security });
  await everyAnswerNamesFormat("arbiter", arbiterApp, "/v1/health", { path: "/v1/arbiter", init: BAD_JSON });

  const ring = ringNode(dirs);
  await everyAnswerNamesFormat("ring node", ring.app, "/v1/health", { path: "/v1/ring/enter", init: BAD_JSON });
});

/** A fetch that answers every request 200 with `body`, naming `format` (null: no header). */
function answering(body: unknown, format: string | null) {
  const fetch = (_url: string, _init: unknown) => {
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (format !== null) headers[FORMAT_HEADER] = format;
    return Promise.resolve(new Response(JSON.stringify(body), { status: 200, headers }));
  };
  return { fetch };
}

/** `call` rejects with a MutexdError version_mismatch naming the answer's and this build's versions. */
async function refusedAsMismatch(call: () => Promise<unknown>, theirs: string) {
  await assert.rejects(call, (error: Error) => {
    assert.ok(error instanceof MutexdError, `${error.name}: ${error.message}`);
    assert.equal(error.code, "version_mismatch");
    assert.match(error.message, new RegExp(`the answer of .* has format version ${theirs.replace(".", "\\.")}, this build reads 1\\.2`));
    return true;
  });
}

test("the lock client refuses an answer of another major (version_mismatch, both versions named); another minor or no header reads as before", async () => {
  const status = { server: { id: "p1", role: "primary" } };
  for (const format of ["1.0", "1.7", null]) {
    const server = answering(status, format);
    const client = connect({ servers: "http://p1.invalid", fetch: server.fetch, requestTimeoutMs: 1_000, failoverTimeoutMs: 0 });
    assert.deepEqual(await client.status(), status, `format ${format}: read`);
  }
  const newer = answering(status, "2.0");
  await refusedAsMismatch(() => connect({ servers: "http://p1.invalid", fetch: newer.fetch, requestTimeoutMs: 1_000, failoverTimeoutMs: 0 }).status(), "2.0");
  const older = answering(status, "0.9");
  await refusedAsMismatch(() => connect({ servers: "http://p1.invalid", fetch: older.fetch, requestTimeoutMs: 1_000, failoverTimeoutMs: 0 }).status(), "0.9");
});

test("the ring client refuses an answer of another major (version_mismatch, both versions named); another minor or no header reads as before", async () => {
  const keys = { keys: ["k1"] };
  for (const format of ["1.0", "1.3", null]) {
    const node = answering(keys, format);
    assert.deepEqual(await connectRing({ server: "http://r1.invalid", fetch: node.fetch }).keys(), ["k1"], `format ${format}: read`);
  }
  const newer = answering(keys, "2.0");
  await refusedAsMismatch(() => connectRing({ server: "http://r1.invalid", fetch: newer.fetch }).keys(), "2.0");
});
