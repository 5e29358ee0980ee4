/**
 * The simulator's checker failover.keepalive-reaches-primary (tests/sim/failover/keepalive_checker.ts)
 * on hand-made traffic: it predicts the client's retry from the client's own clock, so a correct
 * client whose clock drifts passes, and a client that never retries still fails it.
 *
 * The case of the review: a client clock at +100 ppm; a keepalive sent at 9,980 ms (sim) and
 * refused naming the server itself at 10,010 ms is a 31 ms round trip on that clock (9,980 and
 * 10,011), so the client retries after selfRetryMs(31) = 62 local ms, at 10,072 ms (sim), where
 * sim time's 30 ms round trip would say 10,070 ms.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { selfRetryMs } from "../lib/client/failover.ts";
import type { Actor } from "./sim/actor.ts";
import type { Envelope } from "./sim/network.ts";
import type { Sim } from "./sim/simulator.ts";
import { keepaliveReachesPrimary } from "./sim/failover/keepalive_checker.ts";
import type { HttpReplyMessage, HttpRequestMessage } from "./sim/lock/messages.ts";
import { simUrl } from "./sim/lock/messages.ts";
import { NodeClock } from "./sim/time.ts";

const DELAY_MAX_MS = 20;
const PATH = "/v1/sessions/s1/keepalive";
/** When the client of the case below retries (sim ms). */
const RETRY_AT_MS = 10_072;

/** A sim with one client (`c`, clock at +100 ppm) and one server (`fp`) that serves throughout; sends and deliveries by hand. */
function world() {
  const state = { nowMs: 0 };
  const network = {
    profile: { delayMinMs: 1, delayMaxMs: DELAY_MAX_MS, reorderRate: 0, reorderDelayMaxMs: 0 },
    dropped: 0,
    heldBack: 0,
    impaired: () => false,
    send: (_from: Actor, _to: string, _payload: unknown, _label: string) => {},
  };
  const pending = new Map<number, unknown>();
  const client = {
    id: "c", incarnation: 0, up: true, state: "up",
    clock: new NodeClock(() => state.nowMs, 0, 100),
    http: { pending },
    receive(_envelope: Envelope) {},
  };
  const server = { id: "fp", up: true, state: "up", servingNow: () => true, receive(_envelope: Envelope) {} };
  const actors = new Map<string, unknown>([["c", client], ["fp", server]]);
  const sim = { network, get nowMs() { return state.nowMs; }, actor: (id: string) => actors.get(id) };
  const checker = keepaliveReachesPrimary(sim as unknown as Sim, {
    clients: () => [client as unknown as Actor],
    servers: [server as unknown as Actor & { servingNow(): boolean }],
  });
  assert.equal(checker.check(), undefined); // observes the client
  let refNext = 1;
  return {
    checker,
    at(nowMs: number) {
      state.nowMs = nowMs;
    },
    /** The client sends a keepalive to fp now (through the checker's wrap of network.send); its ref. */
    send(): number {
      const ref = refNext++;
      pending.set(ref, {});
      const request: HttpRequestMessage = { http: "request", ref, incarnation: 0, method: "POST", path: PATH, body: "{}" };
      network.send(client as unknown as Actor, "fp", request, "keepalive");
      return ref;
    },
    /** fp's "not primary" naming itself reaches the client now (it was waiting for it). */
    refused(ref: number) {
      const body = JSON.stringify({ error: { code: "not_primary", primaryUrl: simUrl("fp") } });
      const reply: HttpReplyMessage = { http: "reply", ref, incarnation: 0, status: 421, body };
      client.receive({ id: ref, from: "fp", to: "c", payload: reply });
      pending.delete(ref);
    },
    /** A keepalive from the client reaches fp now. */
    delivered(ref: number) {
      const request: HttpRequestMessage = { http: "request", ref, incarnation: 0, method: "POST", path: PATH, body: "{}" };
      server.receive({ id: ref, from: "c", to: "fp", payload: request });
    },
  };
}

/** The review's case up to the refusal: a keepalive sent at 9,980 ms, refused by fp naming itself at 10,010 ms. */
function refusedOnce() {
  const w = world();
  w.at(9_980);
  const first = w.send();
  w.at(10_010);
  w.refused(first);
  return {
    ...w,
    /** The client's retry, at its due time (10,072 ms); its ref. */
    retryAtDue(): number {
      w.at(RETRY_AT_MS);
      return w.send();
    },
  };
}

test("keepalive checker: the retry is due when the client's drifting clock says so (10,072 ms, not 10,070)", () => {
  // The case's numbers, on the clock itself: a 31 ms round trip, a 62 ms delay, 62 sim ms.
  const clock = new NodeClock(() => 0, 0, 100);
  assert.equal(selfRetryMs(31), 62);
  assert.equal(clock.globalDelayMs(62), 62);

  // (a) The retry is sent at 10,072 and takes the longest delivery: it is in time.
  const w = refusedOnce();
  const retry = w.retryAtDue();
  // The simulator checks after every event: one may run at the delivery's ms, before it.
  for (let nowMs = RETRY_AT_MS; nowMs <= RETRY_AT_MS + DELAY_MAX_MS; nowMs++) {
    w.at(nowMs);
    assert.equal(w.checker.check(), undefined, `no verdict up to the retry's delivery (${nowMs} ms)`);
  }
  w.delivered(retry);
  w.at(RETRY_AT_MS + DELAY_MAX_MS + 1_000);
  assert.equal(w.checker.check(), undefined, "a retry at the client's due time, delivered within delayMax, is in time");
});

test("keepalive checker: a refused retry at the client's due time is known as the retry (the client moves on after it)", () => {
  // (b) The retry at 10,072 is refused too: the client moves on by design and sends no second
  // retry, so that refusal must not open a verdict of its own.
  const w = refusedOnce();
  const retry = w.retryAtDue();
  w.at(10_080);
  w.delivered(retry);
  w.at(10_090);
  w.refused(retry);
  w.at(10_090 + 200 + DELAY_MAX_MS);
  assert.equal(w.checker.check(), undefined, "the refused retry opened no verdict");
});

test("keepalive checker: still fails a client that never retries the server naming itself", () => {
  const w = refusedOnce();
  w.at(RETRY_AT_MS + DELAY_MAX_MS);
  assert.equal(w.checker.check(), undefined, "the bound is not over yet");
  w.at(RETRY_AT_MS + DELAY_MAX_MS + 1);
  assert.match(w.checker.check() ?? "", /refused by fp naming itself at 10010ms.*no keepalive reached it/);
});
