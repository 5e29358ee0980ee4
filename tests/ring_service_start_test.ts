/**
 * The ring driver's start (cluster/ring/service.ts `start`): nodes started together ask for a
 * view one after the other (place in the file × viewChangeRetryMs), and a node that a view took
 * in before its own turn came does not ask again. Before, the last nodes of a 5-node ring each
 * started one more view change after the first view had formed (epochs 2 and 3 on every start,
 * seen in tests/ring_process_test.ts under Bun: a section granted in between was ended by the
 * new epoch). Five in-process RingServices on a manual clock, with peers that deliver each
 * message 1 ms later (the simulator's SimFuture ports, so the driver's `.then` chains settle in
 * order).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { manualClock } from "../cluster/clock.ts";
import type { Logger } from "../cluster/log.ts";
import { type RingPeers, RingService } from "../cluster/ring/service.ts";
import type { TimerHandle, Timers } from "../cluster/timers.ts";
import { RingNode } from "../lib/core/ring/ring_node.ts";
import type { CatchUpReply } from "../lib/core/ring/ring_types.ts";
import { QUICK_RING_SETTINGS } from "./_harness.ts";
import { ringSettings } from "./_ring_cluster.ts";
import { Microtasks, SimFuture } from "./sim/ring/ports.ts";

const SETTINGS = ringSettings(QUICK_RING_SETTINGS);
const IDS = ["r1", "r2", "r3", "r4", "r5"];
/** Steps of the manual event loop at most (timers re-arm every tickMs: far more than 5 s needs). */
const STEPS_MAX = 1_000_000;

test("5 ring nodes started together form one view (epoch 1) and ask for no other: a node taken in before its turn does not bootstrap again", () => {
  const clock = manualClock(0);
  const microtasks = new Microtasks();
  let seq = 0;
  const due: Array<{ atMs: number; seq: number; fn: () => void }> = [];
  const timers: Timers = {
    setTimeout(fn, ms) {
      const entry = { atMs: clock.nowMs() + Math.max(0, ms), seq: ++seq, fn };
      due.push(entry);
      return entry;
    },
    clearTimeout(handle: TimerHandle) {
      const index = due.indexOf(handle as (typeof due)[number]);
      if (index >= 0) due.splice(index, 1);
    },
  };
  const later = (fn: () => void) => timers.setTimeout(fn, 1);
  const events = new Map<string, Array<{ event: string; fields: Record<string, unknown> }>>(IDS.map((id) => [id, []]));
  const services = new Map<string, RingService>();

  const peersOf = (from: string): RingPeers => {
    /** `answer` 1 ms from now, on the target's service; rejected like a refused connection without one. */
    const call = <T>(to: string, answer: (target: RingService) => T): SimFuture<T> => {
      const future = new SimFuture<T>(microtasks);
      later(() => {
        const target = services.get(to);
        if (target) future.resolve(answer(target));
        else future.reject(new Error("ECONNREFUSED"));
      });
      return future;
    };
    return {
      deliver: (to, item) => call(to, (target) => target.stepItem(from, structuredClone(item))),
      fetchLog: (to, fromWseq) => call<CatchUpReply>(to, (target) => structuredClone(target.node.catchUp(fromWseq))),
      wake: () => SimFuture.resolved(microtasks, undefined),
      view: (to, message) => call(to, (target) => target.onViewMessage(structuredClone(message))),
    };
  };

  for (const id of IDS) {
    const log: Logger = { event: (event, fields = {}) => events.get(id)!.push({ event, fields }), flush() {} };
    const service = new RingService({
      node: new RingNode({ id, ring: IDS, limits: SETTINGS, ticketPrefix: `${id}-` }),
      settings: SETTINGS,
      clock,
      timers,
      log,
      storage: { apply() {}, storeView() {} },
      storedView: null,
      peers: peersOf(id),
      onFatal: (error) => assert.fail(`${id} failed: ${error.message}`),
    });
    services.set(id, service);
  }
  for (const service of services.values()) service.start();

  // Five seconds: the last node's turn (4 × viewChangeRetryMs) and a view change's timeout lie well inside.
  const endMs = 5_000;
  assert.ok(endMs > (IDS.length - 1) * SETTINGS.viewChangeRetryMs + SETTINGS.viewChangeTimeoutMs);
  for (let step = 0; step < STEPS_MAX; step++) {
    due.sort((a, b) => a.atMs - b.atMs || a.seq - b.seq);
    const next = due[0];
    if (!next || next.atMs > endMs) break;
    due.shift();
    clock.set(next.atMs);
    next.fn();
    microtasks.drain();
  }

  for (const [id, service] of services) {
    const status = service.node.status(clock.nowMs());
    const installed = events.get(id)!.filter((e) => e.event === "ringView").map((e) => e.fields.epoch);
    assert.deepEqual(installed, [1], `${id} installed exactly the first view`);
    assert.equal(status.epoch, 1, `${id} is in epoch 1`);
    assert.deepEqual(status.members, IDS, `${id}: every node is a member`);
    assert.notEqual(status.lastTokenAgeMs, null, `${id} has seen the token`);
  }
  for (const service of services.values()) service.stop();
});
