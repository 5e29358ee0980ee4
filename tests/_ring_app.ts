/**
 * A ring node in process behind its Hono app (tests/ring_http_test.ts, the fuzzers): node "b" of
 * a → b → c in the view of epoch 1, joined by hand, with peers that never answer except that a
 * and c back every token lease, and its whole state (status, view, log, keys, stored files,
 * writes sent). Not a test file.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { RingNode } from "../lib/core/ring/ring_node.ts";
import { DEFAULT_SETTINGS, type Settings } from "../lib/settings.ts";
import { manualClock } from "../cluster/clock.ts";
import { memoryLogger } from "../cluster/log.ts";
import { realTimers } from "../cluster/timers.ts";
import { createRingApp, ringPeerBytesMax } from "../cluster/ring/api.ts";
import { type RingPeers, RingService } from "../cluster/ring/service.ts";
import { RingStorage } from "../cluster/ring/storage.ts";
import type { ClientAuth } from "../cluster/client_auth.ts";
import { tempDir } from "./_harness.ts";
import { joinView, leaseBackingPeers, never } from "./_ring_service.ts";
import { type FuzzAnswer, type FuzzApp, type FuzzRequest, fuzzPeerAuth, send, SigningSender } from "./_fuzz_apps.ts";

/** The fuzzers' settings: 1 ms long-polls, so a waiting request answers at once. */
export const FUZZ_RING_SETTINGS: Settings = { ...DEFAULT_SETTINGS, bodyBytesMax: 65_536, longPollMaxMs: 1 };

/**
 * Node b, its data directory pushed on `dirs` (the test removes them). The service is not
 * started: no timer of its own runs (no view change, no tick) while a test compares states.
 * `state()` leaves out the view messages sent (`viewSent`, which some tests check one by one);
 * `stateWithSends()` counts them too. `auth`: the app's client tokens (default: none, open).
 */
export function ringNode(dirs: string[], settings: Settings = FUZZ_RING_SETTINGS, options: { peerAuth?: boolean; auth?: ClientAuth } = {}) {
  const dir = tempDir("mutexd-fuzz-ring-");
  dirs.push(dir);
  const storage = new RingStorage(dir);
  const node = new RingNode({ id: "b", ring: ["a", "b", "c"], limits: settings, ticketPrefix: "t-" });
  const sent: unknown[] = [];
  const viewPort = leaseBackingPeers(() => service);
  const peers: RingPeers = {
    deliver: (to, item) => (sent.push({ to, item }), never()),
    fetchLog: never,
    wake: () => Promise.resolve(),
    view: viewPort.view,
  };
  const clock = manualClock(1_000);
  const service = new RingService({ node, settings, clock, timers: realTimers, log: memoryLogger(), storage, storedView: null, peers, onFatal: () => {} });
  joinView(service, clock);
  // With `peerAuth` the peer routes verify as a node with FUZZ_SECRET does; `fromA` sends as a.
  const peerAuth = options.peerAuth ? fuzzPeerAuth("b", ["a", "b", "c"], service.security, ringPeerBytesMax(settings)) : undefined;
  const app = createRingApp(service, { nodeId: "b", settings, peerAuth, auth: options.auth });
  const signer = new SigningSender();
  const fromA = (request: FuzzRequest) => peerAuth ? signer.send(app, "a", "b", request) : send(app, request);
  const state = () => {
    const { lastTokenAgeMs: _age, ...status } = node.status(clock.nowMs());
    const files = readdirSync(dir).sort().map((f) => [f, readFileSync(join(dir, f), "utf8")]);
    return JSON.stringify({ status, view: service.viewStatus(), log: node.catchUp(1), keys: node.keys(true), files, sent: sent.length });
  };
  const stateWithSends = () => `${state()} viewSent ${viewPort.sent.length}`;
  const close = () => {
    service.stop();
    storage.close();
  };
  return { node, service, app, fromA, state, stateWithSends, settings, clock, storage, viewSent: viewPort.sent, close };
}

export type FuzzRingNode = ReturnType<typeof ringNode>;

/** Gives node b the token and a section (epoch 1's first fence); returns the fence. */
export async function withSection(h: FuzzRingNode): Promise<number> {
  // idleHops = ring size: the idle token rests here (the manual clock never ends the pause).
  const token = { epoch: 1, hop: 1, wseq: 0, commit: 0, fence: 0, idleHops: 3 };
  const handed = await h.fromA({ method: "POST", path: "/v1/ring/peer/token", body: JSON.stringify({ from: "a", token }), contentType: "application/json" });
  assert.equal(handed.status, 200, handed.text);
  const entered = await send(h.app, { method: "POST", path: "/v1/ring/enter", body: JSON.stringify({ waitMs: 1_000 }), contentType: "application/json" });
  const body = JSON.parse(entered.text);
  assert.equal(body.granted, true, entered.text);
  return body.fence;
}

/**
 * Sends `request` and returns its answer, or "pending" when the node's state changed while the
 * answer is still outstanding (an accepted put is answered only once its write came back around
 * the ring, which never happens here). Bounded: no answer and no change in 5 s fails.
 */
export async function sendOrPending(
  h: FuzzRingNode,
  request: FuzzRequest,
  /** h.stateWithSends() before */ before: string,
  sender: (app: FuzzApp, request: FuzzRequest) => Promise<FuzzAnswer> = send,
): Promise<FuzzAnswer | "pending"> {
  let answer: FuzzAnswer | undefined;
  let failure: unknown;
  sender(h.app, request).then((a) => (answer = a), (e) => (failure = e));
  const deadline = Date.now() + 5_000;
  while (Date.now() < deadline) {
    // A macrotask: the request's microtasks (routing, reading the body, answering) run first.
    await new Promise((resolve) => setTimeout(resolve, 1));
    if (failure !== undefined) throw failure;
    if (answer !== undefined) return answer;
    if (h.stateWithSends() !== before) return "pending";
  }
  throw new Error(`no answer and no change in 5 s: ${request.method} ${request.path}`);
}
