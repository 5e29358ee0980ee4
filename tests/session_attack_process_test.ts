/**
 * Issue 12's attack on sessions, against real processes (p1, b1, a1 from tests/_lock_cluster.ts):
 * an outsider reads a holder's session id (and its token) from `GET /v1/locks`, then sends
 * `leave`, `DELETE /v1/sessions/:id`, a keepalive and an enter with it. On commit 2c9c5fa the
 * leave answered 200 `{ left: true }` and freed the lock under its holder, and the close ended
 * the session: a session id, which every listing publishes, was all it took. Now each needs the
 * session's secret, which only its opener got: all are refused 403 `forbidden`, the holder keeps
 * the lock with the same token, the refusals are counted under `security` in status, and the
 * holder itself still leaves normally.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "../lib/mod.ts";
import { startCluster, status } from "./_lock_cluster.ts";

test("attack: an outsider with a session id read from GET /v1/locks cannot leave, close, keep alive or enter on it (403); the holder keeps its lock", { timeout: 60_000 }, async () => {
  const c = await startCluster();
  try {
    const holder = connect({ servers: [c.urls.p1, c.urls.b1] });
    const lock = await holder.lock("victim", { ttlMs: 10_000 });

    // The outsider's view: the listing names the holder's session and token, never a secret.
    const listing = await (await fetch(`${c.urls.p1}/v1/locks`)).json();
    const listed = listing.locks.find((l: { name: string }) => l.name === "victim").holders[0];
    assert.deepEqual({ session: listed.session, token: listed.token }, { session: lock.session.id, token: lock.token });
    const session: string = listed.session;

    const send = async (method: string, path: string, body: unknown) => {
      const response = await fetch(`${c.urls.p1}${path}`, { method, headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
      return { status: response.status, body: await response.json() };
    };
    const forbidden = { status: 403, body: { error: { code: "forbidden", message: "session secret does not match" } } };
    const attempts: Array<[string, string, Record<string, unknown>]> = [
      ["POST", "/v1/leave", { name: "victim", session, token: listed.token }],
      ["DELETE", `/v1/sessions/${encodeURIComponent(session)}`, {}],
      ["POST", `/v1/sessions/${encodeURIComponent(session)}/keepalive`, {}],
      ["POST", "/v1/enter", { name: "other", session, waitMs: 0 }],
    ];
    for (const [method, path, body] of attempts) {
      assert.deepEqual(await send(method, path, body), forbidden, `${method} ${path} without a secret`);
      assert.deepEqual(await send(method, path, { ...body, sessionSecret: "guessed" }), forbidden, `${method} ${path} with a guessed secret`);
    }

    const after = await status(c.urls.p1);
    const victim = after?.locks.find((l) => l.name === "victim");
    assert.deepEqual(victim?.holders.map((h) => [h.session, h.token]), [[lock.session.id, lock.token]], "the holder still holds it, same token");
    assert.equal(after?.locks.some((l) => l.name === "other"), false, "the outsider's enter took nothing");
    assert.equal((after as unknown as { security: Record<string, number> }).security.sessionSecretMismatch, attempts.length * 2);
    assert.equal(lock.signal.aborted, false, "the holder's session lives on");

    // The owner, with its secret, leaves as always.
    await lock.release();
    assert.equal((await status(c.urls.p1))?.locks.find((l) => l.name === "victim"), undefined, "released by its holder");
  } finally {
    await c.stopAll();
  }
});
