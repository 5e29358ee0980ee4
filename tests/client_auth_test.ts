/**
 * Client bearer tokens (cluster/client_auth.ts): the cluster file's `[[tokens]]` parsed or refused
 * naming line and key; the middleware's 401s (no header, another scheme, an unknown token), 403
 * for a known token without the permission, the union of prefixes, every token compared on every
 * request; the lock API's listing filtered and a refused call changing nothing; the arbiter's
 * status checked and its peer route left to the cluster secret. On commit 2c9c5fa
 * none of this existed: any caller could list, take and leave every lock.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import process from "node:process";
import { Hono } from "hono";
import { callerOf } from "../cluster/caller.ts";
import { allows, ClientAuth, describePermissions } from "../cluster/client_auth.ts";
import { manualClock } from "../cluster/clock.ts";
import { ConfigError, parseClusterText, type TokenConfig, TOKENS_MAX } from "../cluster/config.ts";
import { createLockApp } from "../cluster/lock/api.ts";
import { serveRoutes } from "../cluster/ring/api.ts";
import { createArbiterApp } from "../cluster/arbiter/server.ts";
import { ArbiterCore } from "../lib/core/arbiter/arbiter.ts";
import { memoryLogger } from "../cluster/log.ts";
import { SecurityLog } from "../cluster/security_log.ts";
import { installErrorHandlers } from "../cluster/http_util.ts";
import { soloLockService } from "./_lock_service.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { removeDir, tempDir } from "./_harness.ts";

const NODES = `[[nodes]]
id = "p1"
role = "primary"
http = "127.0.0.1:7101"
`;

const CI_SECRET = "c".repeat(40);
const VIEWER_SECRET = "v".repeat(40);
const OPS_SECRET = "o".repeat(40);
const NARROW_SECRET = "n".repeat(40);

const TOKENS = `
[[tokens]]
name = "ci"
secret = "${CI_SECRET}"
permissions = [{ prefix = "ci/", allow = ["lock"] }, { prefix = "", allow = ["read"] }]
sessionsMax = 5
waitersMax = 7

[[tokens]]
name = "viewer"
secret = "${VIEWER_SECRET}"
permissions = [{ prefix = "", allow = ["read"] }]

[[tokens]]
name = "ops"
secret = "${OPS_SECRET}"
permissions = [
  { prefix = "", allow = ["admin"] },
]
`;

const READ_ALL = 'permissions = [{ prefix = "", allow = ["read"] }]';
const tokensOf = (text: string): TokenConfig[] => parseClusterText(text, "c.toml").tokens;

test("tokens config: [[tokens]] give name, secret, permissions and per-token limits; none means open", () => {
  assert.deepEqual(parseClusterText(NODES, "c.toml").tokens, [], "no [[tokens]]: no tokens (the API is open)");
  const tokens = tokensOf(NODES + TOKENS);
  assert.deepEqual(tokens.map((t) => [t.name, t.secret.length, t.sessionsMax, t.waitersMax]), [
    ["ci", 40, 5, 7],
    ["viewer", 40, null, null],
    ["ops", 40, null, null],
  ]);
  assert.deepEqual(tokens[0].permissions, [{ prefix: "ci/", allow: ["lock"] }, { prefix: "", allow: ["read"] }]);
});

test("tokens config: a token's secret may come from a file or an environment variable, as the cluster secret's", () => {
  const dir = tempDir("mutexd-tokens-config-");
  try {
    writeFileSync(`${dir}/ci.token`, `${"f".repeat(32)}\n`);
    process.env.MUTEXD_TEST_TOKEN = "e".repeat(32);
    const text = `${NODES}[[tokens]]\nname = "a"\nsecretFile = "ci.token"\n${READ_ALL}\n[[tokens]]\nname = "b"\nsecretEnv = "MUTEXD_TEST_TOKEN"\n${READ_ALL}\n`;
    assert.deepEqual(parseClusterText(text, `${dir}/c.toml`).tokens.map((t) => t.secret), ["f".repeat(32), "e".repeat(32)]);
  } finally {
    delete process.env.MUTEXD_TEST_TOKEN;
    removeDir(dir);
  }
});

/** One token table with `lines` (name "t" unless the lines say otherwise), after NODES (4 lines). */
const oneToken = (lines: string) => `${NODES}[[tokens]]\n${lines}\n`;

const BAD: { name: string; text: string; key: string; line: number; detail: RegExp }[] = [
  {
    name: "an unknown permission",
    text: oneToken(`name = "t"\nsecret = "${CI_SECRET}"\npermissions = [{ prefix = "", allow = ["write"] }]`),
    key: "tokens[0].permissions[0].allow",
    line: 8,
    detail: /unknown permission "write" \(known: read, lock, admin\)/,
  },
  { name: "a missing secret", text: oneToken(`name = "t"\n${READ_ALL}`), key: "tokens[0].secret", line: 5, detail: /missing: give one of secret, secretFile, secretEnv/ },
  { name: "a short secret", text: oneToken(`name = "t"\nsecret = "short"\n${READ_ALL}`), key: "tokens[0].secret", line: 7, detail: /at least 32 characters/ },
  { name: "two secrets", text: oneToken(`name = "t"\nsecret = "${CI_SECRET}"\nsecretEnv = "X"\n${READ_ALL}`), key: "tokens[0].secretEnv", line: 8, detail: /at most one/ },
  {
    name: "a duplicate name",
    text: oneToken(`name = "t"\nsecret = "${CI_SECRET}"\n${READ_ALL}\n[[tokens]]\nname = "t"\nsecret = "${VIEWER_SECRET}"\n${READ_ALL}`),
    key: "tokens[1].name",
    line: 10,
    detail: /duplicate token name t \(also tokens\[0\]\)/,
  },
  {
    name: "a duplicate secret",
    text: oneToken(`name = "t"\nsecret = "${CI_SECRET}"\n${READ_ALL}\n[[tokens]]\nname = "u"\nsecret = "${CI_SECRET}"\n${READ_ALL}`),
    key: "tokens[1].secret",
    line: 11,
    detail: /the same secret as tokens\[0\]/,
  },
  {
    name: "a prefix that is not a string",
    text: oneToken(`name = "t"\nsecret = "${CI_SECRET}"\npermissions = [{ prefix = 3, allow = ["read"] }]`),
    key: "tokens[0].permissions[0].prefix",
    line: 8,
    detail: /must be a string/,
  },
  { name: "no permissions", text: oneToken(`name = "t"\nsecret = "${CI_SECRET}"`), key: "tokens[0].permissions", line: 5, detail: /missing/ },
  { name: "an unknown key", text: oneToken(`name = "t"\nsecret = "${CI_SECRET}"\n${READ_ALL}\nrole = "x"`), key: "tokens[0].role", line: 9, detail: /unknown key/ },
  { name: "a bad name", text: oneToken(`name = "a b"\nsecret = "${CI_SECRET}"\n${READ_ALL}`), key: "tokens[0].name", line: 6, detail: /A-Z a-z 0-9/ },
  { name: "a sessionsMax of 0", text: oneToken(`name = "t"\nsecret = "${CI_SECRET}"\n${READ_ALL}\nsessionsMax = 0`), key: "tokens[0].sessionsMax", line: 9, detail: /positive integer/ },
  {
    name: "the cluster secret as a token",
    text: `[cluster]\nsecret = "${CI_SECRET}"\n${oneToken(`name = "t"\nsecret = "${CI_SECRET}"\n${READ_ALL}`)}`,
    key: "tokens[0].secret",
    line: 9,
    detail: /the same as the cluster secret/,
  },
];

for (const c of BAD) {
  test(`tokens config: ${c.name} is refused naming the line and key, never the secret`, () => {
    assert.throws(() => parseClusterText(c.text, "bad.toml"), (error: unknown) => {
      assert.ok(error instanceof ConfigError, String(error));
      assert.equal(error.key, c.key);
      assert.equal(error.line, c.line, error.message);
      assert.match(error.detail, c.detail);
      assert.ok(!error.message.includes(CI_SECRET), "the message must not carry the secret");
      return true;
    });
  });
}

test("tokens config: at most TOKENS_MAX tokens (every request compares against each)", () => {
  const many = (n: number) => NODES + Array.from({ length: n }, (_, i) => `[[tokens]]\nname = "t${i}"\nsecret = "${String(i).padStart(32, "s")}"\n${READ_ALL}\n`).join("");
  assert.equal(tokensOf(many(TOKENS_MAX)).length, TOKENS_MAX);
  assert.throws(() => tokensOf(many(TOKENS_MAX + 1)), (error: ConfigError) => error.key === "tokens" && /at most 256 tokens/.test(error.detail));
});

test("permissions: admin ⊇ lock ⊇ read on a name; the union of the entries whose prefix the name starts with", () => {
  const [ci, viewer, ops] = tokensOf(NODES + TOKENS);
  assert.ok(allows(ci, { level: "lock", name: "ci/build" }));
  assert.ok(allows(ci, { level: "read", name: "ci/build" }), "lock includes read");
  assert.ok(allows(ci, { level: "read", name: "jobs/x" }), "read from the \"\" entry");
  assert.ok(!allows(ci, { level: "lock", name: "jobs/x" }));
  assert.ok(!allows(ci, { level: "admin", name: "ci/build" }));
  assert.ok(!allows(ci, { level: "lock", name: "ci" }), "the name must start with the prefix");
  assert.ok(allows(ci, { level: "lock", on: "some" }));
  assert.ok(!allows(ci, { level: "lock", on: "every" }));
  assert.ok(!allows(viewer, { level: "lock", on: "some" }));
  assert.ok(allows(viewer, { level: "read", on: "every" }));
  assert.ok(allows(ops, { level: "admin", on: "every" }) && allows(ops, { level: "lock", name: "anything" }), "admin includes lock");
  // Two entries each too weak alone do not add up to more than their highest level.
  const split = { permissions: [{ prefix: "a/", allow: ["read" as const] }, { prefix: "a/b", allow: ["lock" as const] }] };
  assert.ok(allows(split, { level: "lock", name: "a/b/c" }) && !allows(split, { level: "lock", name: "a/c" }));
  assert.equal(describePermissions(ci), 'lock "ci/", read ""');
});

/** A bare Hono app behind the middleware: `/v1/probe` answers the caller, `/v1/locks/:name` needs lock on it. */
function probeApp(tokens: TokenConfig[], compares?: { count: number }) {
  const security = new SecurityLog(manualClock(0), memoryLogger(), 10_000);
  const equal = compares ? (a: Uint8Array, b: Uint8Array) => (compares.count++, Buffer.compare(a, b) === 0) : undefined;
  const auth = new ClientAuth(tokens, security, equal);
  const app = new Hono();
  installErrorHandlers(app, (error) => assert.fail(error));
  app.use(auth.middleware);
  app.get("/v1/health", (c) => c.json({ ok: true }));
  app.post("/v1/peer", (c) => c.json({ peer: true }));
  app.get("/v1/probe", (c) => c.json({ caller: callerOf(c) }));
  app.post("/v1/locks/:name", (c) => {
    auth.require(c, { level: "lock", name: c.req.param("name") });
    return c.json({ ok: true });
  });
  const call = async (method: string, path: string, authorization?: string) => {
    const response = await app.request(path, { method, headers: authorization === undefined ? {} : { authorization } });
    const text = await response.text();
    return { status: response.status, body: JSON.parse(text), text };
  };
  return { call, security };
}

test("middleware: no header, another scheme and an unknown token are 401 unauthorized; none echoes what was sent", async () => {
  const { call, security } = probeApp(tokensOf(NODES + TOKENS));
  const missing = await call("GET", "/v1/probe");
  assert.equal(missing.status, 401);
  assert.equal(missing.body.error.code, "unauthorized");
  assert.match(missing.body.error.message, /missing bearer token: this cluster requires client tokens \(Authorization: Bearer …\)/);
  const basic = await call("GET", "/v1/probe", `Basic ${btoa(`ci:${CI_SECRET}`)}`);
  assert.equal(basic.status, 401);
  assert.match(basic.body.error.message, /expected "Bearer <token>"/);
  const unknown = await call("GET", "/v1/probe", `Bearer ${"x".repeat(40)}`);
  assert.equal(unknown.status, 401);
  assert.equal(unknown.body.error.message, "unknown bearer token");
  assert.ok(!unknown.text.includes("x".repeat(40)));
  const almost = await call("GET", "/v1/probe", `Bearer ${CI_SECRET.slice(0, -1)}`);
  assert.equal(almost.status, 401, "a prefix of a secret is no secret");
  assert.deepEqual(security.view(), { clientUnauthorized: 4 });
});

test("middleware: a known token becomes the request's caller (name and per-token limits); health and peer routes need no token", async () => {
  const { call } = probeApp(tokensOf(NODES + TOKENS));
  const ok = await call("GET", "/v1/probe", `Bearer ${CI_SECRET}`);
  assert.equal(ok.status, 200);
  assert.deepEqual(ok.body.caller, { token: "ci", sessionsMax: 5, waitersMax: 7 });
  assert.equal((await call("GET", "/v1/probe", `bearer   ${VIEWER_SECRET}`)).body.caller.token, "viewer", "the scheme is case-insensitive");
  assert.equal((await call("GET", "/v1/health")).status, 200);
  assert.equal((await call("POST", "/v1/peer")).status, 200, "peer routes are the cluster secret's, not the tokens'");
});

test("middleware: a known token without the permission is 403 forbidden saying what it may do; counted under its name", async () => {
  const { call, security } = probeApp(tokensOf(NODES + TOKENS));
  assert.equal((await call("POST", "/v1/locks/ci%2Fx", `Bearer ${CI_SECRET}`)).status, 200);
  const refused = await call("POST", "/v1/locks/jobs%2Fx", `Bearer ${CI_SECRET}`);
  assert.equal(refused.status, 403);
  assert.equal(refused.body.error.code, "forbidden");
  assert.equal(refused.body.error.message, 'token ci may not lock jobs/x; it may lock "ci/", read ""');
  assert.ok(!refused.text.includes(CI_SECRET));
  assert.deepEqual(security.view(), { clientForbidden: 1 });
});

test("middleware: every token's secret is compared on every request, also after a match (no early exit)", async () => {
  const tokens = tokensOf(NODES + TOKENS);
  const compares = { count: 0 };
  const { call } = probeApp(tokens, compares);
  await call("GET", "/v1/probe", `Bearer ${CI_SECRET}`); // the first token matches
  assert.equal(compares.count, tokens.length);
  await call("GET", "/v1/probe", `Bearer ${"z".repeat(40)}`); // none matches
  assert.equal(compares.count, 2 * tokens.length);
});

test("middleware: without tokens the API is open and every caller is anonymous", async () => {
  const { call } = probeApp([]);
  const open = await call("GET", "/v1/probe");
  assert.equal(open.status, 200);
  assert.deepEqual(open.body.caller, { token: null, sessionsMax: null, waitersMax: null });
  assert.equal((await call("POST", "/v1/locks/x")).status, 200);
});

test("ClientAuth.require behind no middleware fails closed (a bug, never an open door)", async () => {
  const auth = new ClientAuth(tokensOf(NODES + TOKENS), null);
  const app = new Hono();
  const internal: Error[] = [];
  installErrorHandlers(app, (error) => internal.push(error));
  app.get("/v1/x", (c) => {
    auth.require(c, { level: "read", name: "x" });
    return c.json({ ok: true });
  });
  assert.equal((await app.request("/v1/x")).status, 500);
  assert.match(internal[0]?.message ?? "", /no client authentication ran for GET \/v1\/x/);
});

/** The lock API with the tokens above: each call as `secret` (undefined: no header). */
function lockApp() {
  const settings = { ...DEFAULT_SETTINGS, longPollMaxMs: 200 };
  const security = new SecurityLog(manualClock(0), memoryLogger(), 10_000);
  const service = soloLockService(settings);
  // The file's tokens, and one that may read ci/ only.
  const narrow: TokenConfig = { name: "narrow", secret: NARROW_SECRET, permissions: [{ prefix: "ci/", allow: ["read"] }], sessionsMax: null, waitersMax: null };
  const auth = new ClientAuth([...tokensOf(NODES + TOKENS), narrow], security);
  const app = createLockApp(service, { nodeId: "p1", role: "primary", settings, auth, security });
  const call = async (secret: string | undefined, method: string, path: string, body?: unknown) => {
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (secret !== undefined) headers.authorization = `Bearer ${secret}`;
    const response = await app.request(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    return { status: response.status, body: await response.json() };
  };
  return { call, state: () => JSON.stringify(service.table!.snapshot()) };
}

test("lock API with tokens: a read-only token cannot open a session or lock; ci locks only ci/…; nothing changes on a refusal", async () => {
  const { call, state } = lockApp();
  assert.equal((await call(undefined, "POST", "/v1/sessions", {})).status, 401);
  assert.equal((await call(VIEWER_SECRET, "POST", "/v1/sessions", {})).status, 403);
  const opened = await call(CI_SECRET, "POST", "/v1/sessions", {});
  assert.equal(opened.status, 201);
  const { session, sessionSecret } = opened.body;
  assert.equal((await call(CI_SECRET, "POST", "/v1/enter", { name: "ci/build", session, sessionSecret })).body.granted, true);
  const before = state();
  const refused = await call(CI_SECRET, "POST", "/v1/enter", { name: "jobs/x", session, sessionSecret });
  assert.equal(refused.status, 403);
  assert.match(refused.body.error.message, /token ci may not lock jobs\/x/);
  assert.equal((await call(CI_SECRET, "POST", "/v1/leave", { name: "jobs/x", session, sessionSecret })).status, 403);
  assert.equal(state(), before, "a refused call changes nothing");
});

test("lock API with tokens: listings show only the names the token may read; full status and sessions need admin on every name", async () => {
  const { call } = lockApp();
  const { session, sessionSecret } = (await call(OPS_SECRET, "POST", "/v1/sessions", {})).body;
  for (const name of ["ci/a", "jobs/b"]) assert.equal((await call(OPS_SECRET, "POST", "/v1/enter", { name, session, sessionSecret })).body.granted, true);
  const names = async (secret: string) => (await call(secret, "GET", "/v1/locks")).body.locks.map((l: { name: string }) => l.name);
  assert.deepEqual(await names(VIEWER_SECRET), ["ci/a", "jobs/b"]);
  assert.deepEqual(await names(NARROW_SECRET), ["ci/a"], "a token that may read ci/ only does not see jobs/b");
  assert.equal((await call(NARROW_SECRET, "GET", "/v1/locks/jobs/b")).status, 403);
  assert.equal((await call(NARROW_SECRET, "GET", "/v1/locks/ci/a")).status, 200);
  assert.equal((await call(VIEWER_SECRET, "GET", "/v1/status")).status, 403);
  assert.equal((await call(VIEWER_SECRET, "GET", "/v1/sessions")).status, 403);
  const summary = await call(VIEWER_SECRET, "GET", "/v1/status?summary=1");
  assert.equal(summary.status, 200);
  assert.equal(summary.body.lockCount, 2);
  const full = await call(OPS_SECRET, "GET", "/v1/status");
  assert.equal(full.status, 200);
  assert.equal(full.body.locks.length, 2);
  assert.deepEqual(full.body.security, { clientForbidden: 3 }, "status shows the refusals under security");
  assert.equal((await call(undefined, "GET", "/v1/health")).status, 200, "health stays open");
});

test("serveRoutes refuses at start a route marked unchecked that the middleware would check (a client route left open)", () => {
  const open = { method: "GET" as const, path: "/v1/ring/keys", bodyBytesMax: 1, access: "unchecked" as const, handle: () => {} };
  assert.throws(() => serveRoutes(new Hono(), [open], ClientAuth.open()), /route \/v1\/ring\/keys would be served without client authentication/);
  serveRoutes(new Hono(), [{ ...open, path: "/v1/ring/peer/wake" }], ClientAuth.open()); // a peer route: fine
});

test("arbiter with tokens: status needs read on some name (401 without a token); /v1/arbiter is the peers' and takes no client token", async () => {
  const core = new ArbiterCore({ primaryId: "p1", backupId: "b1", leaseMs: 500, bootstrapWaitMs: 3_000 }, null, 0);
  const dir = tempDir("mutexd-tokens-arbiter-");
  const security = new SecurityLog(manualClock(0), memoryLogger(), 10_000);
  const auth = new ClientAuth(tokensOf(NODES + TOKENS), security);
  const app = createArbiterApp(core, { nodeId: "a1", statePath: `${dir}/arbiter.json`, log: memoryLogger(), nowMs: () => 0, auth, security });
  try {
    assert.equal((await app.request("/v1/status")).status, 401);
    const shown = await app.request("/v1/status", { headers: { authorization: `Bearer ${VIEWER_SECRET}` } });
    assert.equal(shown.status, 200);
    assert.deepEqual((await shown.json()).security, { clientUnauthorized: 1 });
    // No client token: the request reaches the arbiter's own checks (a malformed one is 400, not 401).
    assert.equal((await app.request("/v1/arbiter", { method: "POST", body: "{oops" })).status, 400);
    assert.equal((await app.request("/v1/health")).status, 200);
  } finally {
    removeDir(dir);
  }
});
