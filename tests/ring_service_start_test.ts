/**
 * The ring driver's start (cluster/ring/service.ts `start`): nodes started together ask for a
 * view one after the other (place in the file × viewChangeRetryMs), and a node that a view took
 * in before its own turn came does not ask again. Before, the last nodes of a 5-node ring each
 * started one more view change after the first view had formed (epochs 2 and 3 on every start,
 * seen in tests/ring_process_test.ts under Bun: a section granted in between was ended by the
 * new epoch). Five in-process RingServices on a manual clock, with peers that deliver each
 * message 1 ms later (the simulator's SimFuture ports, so the driver's `.then` chains settle in
 * order).
 *
 * And the driver's tick, which sleeps until the cores' next deadline (`armTick`): an idle ring's
 * nodes tick a few times a second instead of every tickMs, the token still goes round at its
 * pace, and when the holder dies the first survivor's token-loss probe goes out within one tick
 * of its deadline (tokenLossMs after it last saw the token), not at the next idle tick. And the
 * level of the lines a section writes.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { manualClock } from "../cluster/clock.ts";
import type { Logger } from "../cluster/log.ts";
import { type RingPeers, RingService } from "../cluster/ring/service.ts";
import type { TimerHandle, Timers } from "../cluster/timers.ts";
import { RingNode } from "../lib/core/ring/ring_node.ts";
import type { CatchUpReply } from "../lib/core/ring/ring_types.ts";
import type { Settings } from "../lib/settings.ts";
import { QUICK_RING_SETTINGS } from "./_harness.ts";
import { ringSettings } from "./_ring_cluster.ts";
import { Microtasks, SimFuture } from "./sim/ring/ports.ts";

const SETTINGS = ringSettings(QUICK_RING_SETTINGS);
const IDS = ["r1", "r2", "r3", "r4", "r5"];
/** Steps of the manual event loop at most (timers re-arm every tickMs: far more than 5 s needs). */
const STEPS_MAX = 1_000_000;

/**
 * Five RingServices of `settings` on one manual clock (not started): `runUntil(ms)` runs every
 * timer due by then in order; `sentAtMs` records each view message sent, by sender, with its time;
 * `kill(id)` stops a node and makes every call to it fail like a refused connection.
 */
function manualRing(settings: Settings) {
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
  const events = new Map<string, Array<{ event: string; fields: Record<string, unknown>; level: string }>>(IDS.map((id) => [id, []]));
  const services = new Map<string, RingService>();
  const ticks = new Map<string, number>(IDS.map((id) => [id, 0]));
  const sent: Array<{ from: string; type: string; atMs: number }> = [];

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
      view: (to, message) => {
        sent.push({ from, type: message.type, atMs: clock.nowMs() });
        return call(to, (target) => target.onViewMessage(structuredClone(message)));
      },
    };
  };

  for (const id of IDS) {
    const log: Logger = { event: (event, fields = {}, level = "info") => events.get(id)!.push({ event, fields, level }), flush() {} };
    const service = new RingService({
      node: new RingNode({ id, ring: IDS, limits: settings, ticketPrefix: `${id}-` }),
      settings,
      clock,
      timers,
      log,
      storage: { apply() {}, storeView() {} },
      storedView: null,
      peers: peersOf(id),
      onFatal: (error) => assert.fail(`${id} failed: ${error.message}`),
      onTick: () => ticks.set(id, ticks.get(id)! + 1),
    });
    services.set(id, service);
  }
  const runUntil = (endMs: number) => {
    for (let step = 0; step < STEPS_MAX; step++) {
      due.sort((a, b) => a.atMs - b.atMs || a.seq - b.seq);
      const next = due[0];
      if (!next || next.atMs > endMs) break;
      due.shift();
      clock.set(next.atMs);
      next.fn();
      microtasks.drain();
    }
    clock.set(Math.max(clock.nowMs(), endMs));
  };
  const kill = (id: string) => {
    services.get(id)!.stop();
    services.delete(id);
  };
  return { clock, services, events, ticks, sent, runUntil, kill };
}

test("5 ring nodes started together form one view (epoch 1) and ask for no other: a node taken in before its turn does not bootstrap again", () => {
  const { clock, services, events, runUntil } = manualRing(SETTINGS);
  for (const service of services.values()) service.start();

  // Five seconds: the last node's turn (4 × viewChangeRetryMs) and a view change's timeout lie well inside.
  const endMs = 5_000;
  assert.ok(endMs > (IDS.length - 1) * SETTINGS.viewChangeRetryMs + SETTINGS.viewChangeTimeoutMs);
  runUntil(endMs);

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

test("an idle ring's drivers tick only when a core has something due, and a dead holder's token-loss probe still goes out on time", () => {
  // The default idle pace (200 ms), so a tick missed at a deadline would come up to 200 ms late.
  const settings = ringSettings([...QUICK_RING_SETTINGS, "tokenIdlePaceMs = 200"]);
  const { clock, services, ticks, sent, runUntil, kill } = manualRing(settings);
  for (const service of services.values()) service.start();
  runUntil(5_000);
  for (const service of services.values()) assert.equal(service.node.status(clock.nowMs()).epoch, 1, "one view formed");

  // Ten idle seconds: a fixed tick would run 10,000 / tickMs times per node.
  for (const id of IDS) ticks.set(id, 0);
  runUntil(15_000);
  const fixedTicks = 10_000 / settings.tickMs;
  for (const id of IDS) {
    assert.ok(ticks.get(id)! <= fixedTicks / 4, `${id} ticked ${ticks.get(id)} times in 10 idle s (a fixed tick: ${fixedTicks})`);
    const status = services.get(id)!.node.status(clock.nowMs());
    assert.ok(status.lastTokenAgeMs !== null && status.lastTokenAgeMs < 2 * IDS.length * settings.tokenIdlePaceMs, `${id} saw the token lately`);
  }

  // Kill the holder: each survivor's probe is due tokenLossMs after it last saw the token.
  let holder: string | undefined;
  for (let stepMs = 15_001; holder === undefined && stepMs < 20_000; stepMs++) {
    runUntil(stepMs);
    holder = IDS.find((id) => services.get(id)!.node.status(clock.nowMs()).token === "held");
  }
  assert.ok(holder !== undefined, "the token rests at some node");
  const killedAtMs = clock.nowMs();
  const dueAtMs = IDS.filter((id) => id !== holder).map((id) => killedAtMs - services.get(id)!.node.status(killedAtMs).lastTokenAgeMs! + settings.tokenLossMs);
  kill(holder);
  runUntil(killedAtMs + 2 * settings.tokenLossMs);
  const firstProbe = sent.find((m) => m.type === "probe" && m.atMs >= killedAtMs);
  assert.ok(firstProbe, "a survivor probed for the lost token");
  const lateMs = firstProbe.atMs - Math.min(...dueAtMs);
  assert.ok(lateMs >= 0 && lateMs <= settings.tickMs, `the first probe went out ${lateMs} ms after its deadline (at most tickMs: ${settings.tickMs})`);
  for (const service of services.values()) service.stop();
});

test("a section's grant and its end by a leave are debug lines (none per section at the default level); a section whose lease ran out is an info line", () => {
  // Two info lines per section (a JSON line with its date each) were a steady cost of the ring under load.
  const { services, events, runUntil, clock } = manualRing(SETTINGS);
  for (const service of services.values()) service.start();
  runUntil(5_000);
  const r1 = services.get("r1")!;
  const replies: Array<{ type?: string; fence?: number }> = [];
  const enter = () => r1.request({ type: "enter", waitMs: 5_000, leaseMs: 100 }, (reply) => void replies.push(reply as { type?: string; fence?: number }));
  enter();
  // Leaves as soon as it is granted, well within its lease (bounded: the token comes within a rotation).
  for (let stepMs = 0; stepMs < 2_000 && !replies.some((r) => r.type === "granted"); stepMs++) runUntil(clock.nowMs() + 1);
  const first = replies.find((r) => r.type === "granted");
  assert.ok(first?.fence !== undefined, `granted: ${JSON.stringify(replies)}`);
  r1.request({ type: "leave", fence: first.fence }, (reply) => void replies.push(reply as { type?: string }));
  enter(); // this one is not left: its lease (100 ms) runs out
  runUntil(clock.nowMs() + 2_000);
  const lines = events.get("r1")!;
  const levels = (event: string, reason?: string) => lines.filter((l) => l.event === event && (reason === undefined || l.fields.reason === reason)).map((l) => l.level);
  assert.deepEqual(levels("granted"), ["debug", "debug"], "each grant");
  assert.deepEqual(levels("sectionEnded", "left"), ["debug"], "the end by a leave");
  assert.deepEqual(levels("sectionEnded", "lease"), ["info"], "a lease that ran out tells of a client that failed: info");
  for (const service of services.values()) service.stop();
});
