/**
 * The simulator's HTTP path for the ring (tests/sim/ring/http.ts: `ringRoutes` behind Hono's
 * router, with the API's body checks) answers exactly as the binary's Hono app
 * (`createRingApp`) does: same status, same JSON, for valid requests and for every kind of
 * refusal. Two identical nodes get the same requests in the same order, one through each path;
 * a mismatch means the simulator no longer tests the binary's HTTP layer.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { RingNode } from "../lib/core/ring/ring_node.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { manualClock } from "../cluster/clock.ts";
import { memoryLogger } from "../cluster/log.ts";
import type { Timers } from "../cluster/timers.ts";
import { createRingApp, ringRoutes } from "../cluster/ring/api.ts";
import { type RingPeers, RingService } from "../cluster/ring/service.ts";
import { fenceFloor } from "../lib/core/ring/view_wire.ts";
import { SimRingDisk } from "./sim/ring/disk.ts";
import { SimRingHttp } from "./sim/ring/http.ts";
import { viewOf } from "./_ring_node.ts";
import { leaseBackingPeers, never } from "./_ring_service.ts";

const settings = DEFAULT_SETTINGS;

/**
 * Node "b" of a → b → c: peers and timers that never answer or fire (nothing here waits on them),
 * but every lease renewal is backed at once (the enter below is granted). Its clock starts past
 * the hold of its start, so it promises the view change of the requests below at once.
 */
function ringNodeService(): RingService {
  const viewPort = leaseBackingPeers(() => service);
  const peers: RingPeers = { deliver: never, fetchLog: never, wake: () => Promise.resolve(), view: viewPort.view };
  const timers: Timers = { setTimeout: () => 0, clearTimeout: () => {} };
  const node = new RingNode({ id: "b", ring: ["a", "b", "c"], limits: settings, ticketPrefix: "t-" });
  const clock = manualClock(1_000);
  const service = new RingService({ node, settings, clock, timers, log: memoryLogger(), storage: new SimRingDisk(), storedView: null, peers, onFatal: () => {} });
  clock.advance(settings.tokenLeaseMs);
  return service;
}

const view = viewOf(1);
const ballot = { epoch: 1, coordinator: "a" };

const token = { epoch: 1, hop: 1, wseq: 0, commit: 0, fence: 0, idleHops: 3 };

/** In order: later requests see what earlier ones did (a token refused, a view, a token, a section). */
const REQUESTS: Array<{ method: string; path: string; body?: string }> = [
  { method: "GET", path: "/v1/health" },
  { method: "GET", path: "/v1/ring/status" },
  { method: "GET", path: "/v1/nope" },
  { method: "POST", path: "/v1/ring/status" },
  { method: "GET", path: "/v1/ring/get" },
  { method: "GET", path: "/v1/ring/get?key=k" },
  { method: "GET", path: "/v1/ring/keys?dirty=1" },
  { method: "GET", path: "/v1/ring/keys?dirty=maybe" },
  { method: "GET", path: "/v1/ring/log?from=x" },
  { method: "GET", path: "/v1/ring/log?from=1" },
  { method: "GET", path: "/v1/ring/section/abc" },
  { method: "GET", path: "/v1/ring/section/7?waitMs=0" },
  { method: "POST", path: "/v1/ring/enter", body: "{nope" },
  { method: "POST", path: "/v1/ring/enter", body: "[1]" },
  { method: "POST", path: "/v1/ring/enter", body: JSON.stringify({ waitMs: 1, wait: 2 }) },
  { method: "POST", path: "/v1/ring/enter", body: JSON.stringify({ waitMs: "soon" }) },
  { method: "POST", path: "/v1/ring/enter", body: JSON.stringify({ waitMs: 1, ticket: "t-99" }) },
  { method: "POST", path: "/v1/ring/enter", body: JSON.stringify({ waitMs: 1, pad: "x".repeat(settings.bodyBytesMax) }) },
  { method: "POST", path: "/v1/ring/leave", body: "{}" },
  { method: "POST", path: "/v1/ring/leave", body: JSON.stringify({ fence: 7 }) },
  { method: "POST", path: "/v1/ring/put", body: JSON.stringify({ fence: 7, key: "k", value: "v" }) },
  { method: "POST", path: "/v1/ring/put", body: JSON.stringify({ fence: 7, key: "k" }) },
  { method: "POST", path: "/v1/ring/delete", body: JSON.stringify({ fence: 7, key: "" }) },
  { method: "GET", path: "/v1/ring/peer/log?from=1" },
  // The old first-node regeneration's routes are gone.
  { method: "GET", path: "/v1/ring/peer/probe" },
  { method: "POST", path: "/v1/ring/peer/prepare", body: JSON.stringify({ from: "a", epoch: 1 }) },
  // Before any view: the token is not taken yet (notYet).
  { method: "POST", path: "/v1/ring/peer/token", body: JSON.stringify({ from: "a", token }) },
  { method: "POST", path: "/v1/ring/peer/view", body: "[1]" },
  { method: "POST", path: "/v1/ring/peer/view", body: JSON.stringify({ type: "prepare", from: "x", ballot: { epoch: 1, coordinator: "x" }, voters: ["a", "b", "c"] }) },
  { method: "POST", path: "/v1/ring/peer/view", body: JSON.stringify({ type: "prepare", from: "a", ballot, voters: ["a", "b", "c"] }) },
  { method: "POST", path: "/v1/ring/peer/view", body: JSON.stringify({ type: "newView", from: "a", view }) },
  { method: "GET", path: "/v1/ring/status" },
  { method: "POST", path: "/v1/ring/peer/token", body: JSON.stringify({ from: "c", token }) },
  { method: "POST", path: "/v1/ring/peer/token", body: JSON.stringify({ from: "a", token: { ...token, commit: 1 } }) },
  { method: "POST", path: "/v1/ring/peer/writes", body: JSON.stringify({ from: "a", epoch: 1, entries: [{ wseq: 1 }] }) },
  { method: "POST", path: "/v1/ring/peer/writes", body: JSON.stringify({ from: "a", epoch: 0, entries: [] }) },
  { method: "POST", path: "/v1/ring/peer/token", body: JSON.stringify({ from: "a", token }) },
  { method: "POST", path: "/v1/ring/enter", body: JSON.stringify({ waitMs: 1_000, leaseMs: 500 }) },
  { method: "GET", path: "/v1/ring/status" },
  { method: "POST", path: "/v1/ring/leave", body: JSON.stringify({ fence: 1 }) },
  { method: "POST", path: "/v1/ring/leave", body: JSON.stringify({ fence: fenceFloor(1) + 1 }) },
  { method: "POST", path: "/v1/ring/peer/wake", body: JSON.stringify({ from: "a" }) },
  { method: "POST", path: "/v1/ring/peer/view", body: JSON.stringify({ type: "renew", from: "a", epoch: 1, seq: 3, voters: ["a", "b", "c"] }) },
  { method: "POST", path: "/v1/ring/peer/view", body: JSON.stringify({ type: "renew", from: "a", epoch: -1, seq: 3, voters: ["a", "b", "c"] }) },
  { method: "POST", path: "/v1/ring/peer/token", body: JSON.stringify({ from: "a", token: { ...token, epoch: 0 } }) },
  { method: "GET", path: "/v1/ring/status" },
];

test("the simulator's ring HTTP path answers every request as the binary's Hono app does", async () => {
  const app = createRingApp(ringNodeService(), { nodeId: "b", settings });
  const sim = new SimRingHttp(ringRoutes(ringNodeService(), { nodeId: "b", settings }), () => {});
  const statuses = new Set<number>();
  /** Answers that show the view change and the section went through (not only refusals). */
  const seen = new Set<string>();
  for (const request of REQUESTS) {
    const what = `${request.method} ${request.path} ${request.body?.slice(0, 60) ?? ""}`;
    const response = await app.request(request.path, {
      method: request.method,
      ...(request.body === undefined ? {} : { body: request.body, headers: { "content-type": "application/json" } }),
    });
    const expected = { status: response.status, body: JSON.parse(await response.text()) };
    let answered: { status: number; body: unknown } | undefined;
    sim.serve(request.method, request.path, request.body, (answer) => (answered = { status: answer.status, body: JSON.parse(answer.body) }));
    // A grant waits for the token lease: the service's renewal (a promise of its peers, already
    // resolved here) continues in the microtask queued before this await's continuation. The
    // HTTP path itself adds no turn.
    if (request.path === "/v1/ring/enter") await Promise.resolve();
    assert.ok(answered, `${what}: the simulator's path answered within the call`);
    assert.deepEqual(answered, expected, what);
    statuses.add(expected.status);
    const body = expected.body as Record<string, unknown>;
    if (body.granted === true) seen.add("granted");
    if (body.left === true) seen.add("left");
    if (body.type === "notYet" || body.type === "stale") seen.add(body.type);
  }
  assert.deepEqual([...seen].sort(), ["granted", "left", "notYet", "stale"]);
  // Not vacuous: successes and each kind of refusal were compared.
  assert.deepEqual([...statuses].sort(), [200, 400, 404, 409, 413]);
});
