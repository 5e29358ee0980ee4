/**
 * Fuzzing real processes (fast-check): primary p1, backup b1 and arbiter a1 started with
 * `mutexd node` (tests/_lock_cluster.ts, with the cluster secret TEST_SECRET) get a bounded
 * number of fuzzed requests over real HTTP: the client routes with mutated, raw and oversized
 * bodies, wrong methods and content types, hostile path parameters (to the primary and to the
 * backup); and peer and arbiter messages that must be refused: unsigned ones (401 before any
 * route reads them), and ones signed with the cluster's key by a PeerSigner as a sender the
 * cluster file does not name (401) or as a member whose body claims another sender (401) or is
 * no message (400). Each answer is checked as in process (no 5xx, a clear error); a refused one
 * leaves the cluster's state (epoch, roles, sessions, locks, tokens) as it was; the servers
 * count the refused peer requests under `security` in their status; and at the end every
 * process still runs, answers /v1/health, and p1 still serves with b1 in sync.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { checkAnswer, describe, type FuzzRequest, lockPathParam, lockTemplates, openLockSessions, requests, send, setupPost, SigningSender } from "./_fuzz_apps.ts";
import { FUZZ_TEST_TIMEOUT_MS, fuzz, mutatedObject, nonObjectText, peerText } from "./_fuzz.ts";
import { PEER_CONTENT_TYPE } from "../cluster/peer_transport.ts";
import { type Cluster, startCluster, status } from "./_lock_cluster.ts";
import type { StatusAnswer } from "../lib/client/lock_client.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { peerKey } from "../cluster/peer_mac.ts";
import { TEST_SECRET } from "./_harness.ts";

/** Signs as the cluster's members do (TEST_SECRET is the secret _lock_cluster.ts writes). */
const MEMBER_KEY = await peerKey(TEST_SECRET);

/** The state a refused request must leave alone, read from p1's and b1's status. */
async function clusterState(cluster: Cluster, sessions: string[]): Promise<string> {
  const project = (s: StatusAnswer | undefined) => {
    assert.ok(s?.server, "status answered");
    return {
      role: s.server.role,
      epoch: s.server.epoch,
      serving: s.server.serving,
      lastToken: s.lastToken,
      // The sessions the test opened (sessions the fuzzer opened may expire at any time).
      sessions: s.sessions.filter((x) => sessions.includes(x.session)).map((x) => [x.session, x.locks]),
      locks: s.locks.map((l) => [l.name, l.holders.map((h) => [h.session, h.token, h.mode]), l.waiters.map((w) => w.session)]),
    };
  };
  return JSON.stringify([project(await status(cluster.urls.p1)), project(await status(cluster.urls.b1))]);
}

test("fuzz process: a primary, backup and arbiter get fuzzed client, peer and arbiter requests over HTTP and keep running unchanged by every refusal", { timeout: FUZZ_TEST_TIMEOUT_MS }, async () => {
  const cluster = await startCluster();
  try {
    const p1 = cluster.urls.p1;
    // The enters that would wait ask waitMs 0: a real server holds a waiting enter for longPollMaxMs.
    const opened = await openLockSessions((path, body) => setupPost(p1, path, body), 3_600_000, 0);
    const sessions = [opened.holder, opened.waiter, opened.free];
    const clientTemplates = lockTemplates(opened, 0);
    const sessionIn = lockPathParam(opened);
    // Messages between the servers, from a sender that is no cluster member, or no message at
    // all; unsigned, or signed with the cluster's key as `signer` (a member other than the body's
    // `from`, or an id the cluster file does not name).
    const peerTemplates: Array<{ node: "p1" | "b1" | "a1"; path: string; message: Record<string, unknown> }> = [
      { node: "b1", path: "/v1/peer", message: { type: "append", from: "p1", epoch: 1, syncGen: 1, entries: [] } },
      { node: "p1", path: "/v1/peer", message: { type: "syncRequest", from: "b1", epoch: 1 } },
      { node: "a1", path: "/v1/arbiter", message: { type: "renew", from: "p1", epoch: 1, backupInSync: true, seq: 1_000_000 } },
      { node: "a1", path: "/v1/arbiter", message: { type: "claim", from: "b1", epoch: 1, hasState: true } },
    ];
    const peerCases = fc.record({
      template: fc.constantFrom(...peerTemplates),
      raw: fc.option(nonObjectText, { freq: 3 }),
      signer: fc.option(fc.constantFrom("p1", "b1", "a1", "intruder"), { freq: 2 }),
    }).chain(({ template, raw, signer }) =>
      mutatedObject(template.message).map((message) => {
        const body = raw ?? peerText({ ...message, from: "intruder" });
        return { node: template.node, signer, request: { method: "POST", path: template.path, body, contentType: PEER_CONTENT_TYPE } as FuzzRequest };
      })
    );
    const cases = fc.oneof(
      { weight: 3, arbitrary: fc.record({ node: fc.constantFrom("p1" as const, "b1" as const), request: requests(clientTemplates, DEFAULT_SETTINGS.bodyBytesMax, sessionIn) }) },
      { weight: 1, arbitrary: peerCases },
    );
    // "refused": refused client requests and every peer message (which must all be refused).
    let [refused, accepted, peerRequests] = [0, 0, 0];
    const peerAnswers: Record<string, number> = {};
    const signing = new SigningSender({ key: MEMBER_KEY });
    await fuzz("process cluster", cases, async (c) => {
      const { node, request } = c;
      const signer = "signer" in c ? c.signer : null;
      const before = await clusterState(cluster, sessions);
      const answer = signer === null ? await send(cluster.urls[node], request) : await signing.send(cluster.urls[node], signer, node, request, true);
      const peer = request.path === "/v1/peer" || request.path === "/v1/arbiter";
      const what = `${node}${signer === null ? "" : ` signed as ${signer}`}: ${describe(request)}`;
      const refusal = checkAnswer(answer, what);
      if (peer) {
        // Unsigned or signed as no member: 401 before the route. Signed as a member: the schema's
        // 400 for what is no message, then 401 for a body from "intruder" (not the signer).
        const code = answer.text.match(/"code":"([a-z_]+)"/)?.[1] ?? String(answer.status);
        const key = `${signer === null ? "unsigned" : signer === "intruder" ? "signed by no member" : "signed by a member"} ${code}`;
        peerAnswers[key] = (peerAnswers[key] ?? 0) + 1;
        peerRequests += 1;
        assert.ok(refusal, `${what}: a peer message was not refused: ${answer.status} ${answer.text.slice(0, 200)}`);
        const expected = signer === null || signer === "intruder" ? [401] : [400, 401];
        assert.ok(expected.includes(answer.status), `${what}: ${answer.status} ${answer.text.slice(0, 200)}`);
      } else if (!refusal) {
        accepted += 1;
        return;
      }
      refused += 1;
      const after = await clusterState(cluster, sessions);
      assert.equal(after, before, `${node}: ${describe(request)} -> ${answer.status} ${answer.text.slice(0, 200)} changed the cluster`);
    }, 200);
    console.log(`fuzz process cluster: ${refused} refused, ${accepted} accepted; peer requests ${JSON.stringify(peerAnswers)}`);
    assert.ok(refused > 0 && accepted > 0, "both were exercised");
    assert.ok(["unsigned unauthorized", "signed by no member unauthorized", "signed by a member unauthorized", "signed by a member bad_request"].every((k) => peerAnswers[k] > 0), "every kind of peer request was exercised");
    // Every refused peer request is counted under `security` (the challenges of the signers' first contacts too).
    let counted = 0;
    for (const id of ["p1", "b1", "a1"] as const) {
      const answer = await send(cluster.urls[id], { method: "GET", path: "/v1/status" });
      const security = JSON.parse(answer.text).security as Record<string, number>;
      counted += Object.entries(security).filter(([reason]) => reason !== "peerChallenged").reduce((sum, [, n]) => sum + n, 0);
    }
    assert.ok(counted >= peerRequests, `${counted} refusals counted under security for ${peerRequests} peer requests`);

    for (const id of ["p1", "b1", "a1"] as const) {
      assert.equal(cluster.procs.get(id)!.child.exitCode, null, `${id} did not exit: ${cluster.procs.get(id)!.stderr().slice(-500)}`);
      const health = await send(cluster.urls[id], { method: "GET", path: "/v1/health" });
      assert.equal(health.status, 200, `${id} answers health`);
    }
    const s = await status(p1);
    assert.ok(s?.server?.serving && s.server.backup?.arbiterRecordedInSync, "p1 still serves with b1 in sync");
  } finally {
    await cluster.stopAll();
  }
});
