/**
 * The token lease in the ring driver (cluster/ring/service.ts) with hand-made peers: node b of
 * a → b → c joins the view of epoch 1 and holds its token; the test plays a and c, answering each
 * renewal (a view message) by hand, and fires b's tick timer by hand on a manual clock.
 *
 * The lease's rules live in the view core and are tested there (tests/ring_view_test.ts: the
 * renewer's hold, the send time and its margin, a restarted node's hold, a busy holder, clock
 * rates). This file keeps only the driver's part of them: the node's `wantLease` effect becomes
 * `renew` messages to every other ring node, their answers come back through `onViewMessage`,
 * the lease decision reaches the node, which grants; a minority grants nothing and says so in
 * `lease()` and the log; a renewal nobody answers fails on the tick and the next one goes out;
 * a renewal from a peer is answered through the peers; a prepare waits out b's own hold, then
 * its promise ends b's section. Each test stops its service and removes its data dir.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { type ClientReply, RingNode } from "../lib/core/ring/ring_node.ts";
import type { ViewMessage } from "../lib/core/ring/view_wire.ts";
import { DEFAULT_SETTINGS, validateSettings } from "../lib/settings.ts";
import { manualClock } from "../cluster/clock.ts";
import { memoryLogger } from "../cluster/log.ts";
import type { Timers } from "../cluster/timers.ts";
import { type RingPeers, RingService } from "../cluster/ring/service.ts";
import { RingStorage } from "../cluster/ring/storage.ts";
import { removeDir, tempDir } from "./_harness.ts";
import { joinView, never } from "./_ring_service.ts";

const settings = DEFAULT_SETTINGS;
const START_MS = 10_000;

/** A renewal sent to `to`: the test answers it (in a view message from `to`). */
type Renewal = { to: string; epoch: number; seq: number; answer(ok: boolean): void };

type Harness = {
  service: RingService;
  clock: ReturnType<typeof manualClock>;
  renewals: Renewal[];
  /** Every other view message b sent, in order. */
  sent: Array<{ to: string; message: ViewMessage }>;
  log: ReturnType<typeof memoryLogger>;
  /** Runs b's tick loop once (its only timer of tickMs). */
  tick(): void;
  enter(): { reply: () => ClientReply | undefined };
};

/**
 * Timers that run only when the test fires them; `fire(ms)` runs the timers set for `ms` (the
 * tick loop re-arms itself, so one fire is one tick). b's first view change (a timer of another
 * length) is never fired: the test joins the view by hand.
 */
function manualTimers(): Timers & { fire(ms: number): void } {
  const pending = new Map<number, { fn: () => void; ms: number }>();
  let next = 1;
  return {
    setTimeout: (fn, ms) => (pending.set(next, { fn, ms }), next++),
    clearTimeout: (handle) => void pending.delete(handle as number),
    fire(ms) {
      const due = [...pending].filter(([, t]) => t.ms === ms);
      assert.ok(due.length > 0, `no timer of ${ms} ms pending`);
      for (const [handle, t] of due) {
        pending.delete(handle);
        t.fn();
      }
    },
  };
}

async function withService(body: (h: Harness) => Promise<void> | void): Promise<void> {
  const dir = tempDir("mutexd-ring-lease-");
  const storage = new RingStorage(dir);
  const renewals: Renewal[] = [];
  const sent: Harness["sent"] = [];
  const log = memoryLogger();
  const timers = manualTimers();
  const peers: RingPeers = {
    deliver: never,
    fetchLog: never,
    wake: () => Promise.resolve(),
    view: (to, message) => {
      if (message.type === "renew") {
        const { epoch, seq } = message;
        renewals.push({ to, epoch, seq, answer: (ok) => service.onViewMessage({ type: "renewAnswer", from: to, epoch, seq, ok }) });
      } else {
        sent.push({ to, message });
      }
      return Promise.resolve();
    },
  };
  const clock = manualClock(START_MS);
  const node = new RingNode({ id: "b", ring: ["a", "b", "c"], limits: settings, ticketPrefix: "t-" });
  const service = new RingService({ node, settings, clock, timers, log, storage, storedView: null, peers, onFatal: () => {} });
  assert.equal(service.lease().heldUntilMs, START_MS + settings.tokenLeaseMs, "held from its start (it may have backed a lease just before a restart)");
  joinView(service, clock);
  service.start();
  const enter = () => {
    let answer: ClientReply | undefined;
    service.request({ type: "enter", waitMs: 60_000, leaseMs: 1_000 }, (reply) => void (answer = reply));
    return { reply: () => answer };
  };
  try {
    await body({ service, clock, renewals, sent, log, tick: () => timers.fire(settings.tickMs), enter });
  } finally {
    service.stop();
    storage.close();
    removeDir(dir);
  }
}

/** The token of epoch 1 arrives at b and rests there (idle: idleHops = ring size). */
function giveToken(service: RingService): void {
  const result = service.stepItem("a", { kind: "token", token: { epoch: 1, hop: 1, wseq: 0, commit: 0, fence: 0, idleHops: 3 } });
  assert.ok(result.ok && result.type === "token", JSON.stringify(result));
}

function granted(reply: ClientReply | undefined): number {
  assert.ok(reply?.ok && reply.type === "granted", JSON.stringify(reply));
  return reply.fence;
}

test("token lease: the holder's wantLease goes out as renew messages; it grants once a majority of the file backed the lease, counted from the send time", async () => {
  await withService(({ service, clock, renewals, enter }) => {
    giveToken(service);
    const sentAtMs = clock.nowMs();
    const waiter = enter();
    assert.deepEqual(renewals.map((r) => [r.to, r.epoch]), [["a", 1], ["c", 1]], "one renewal to every other ring node");
    assert.equal(waiter.reply(), undefined, "no grant before the lease");
    clock.advance(50);
    renewals[0].answer(false);
    assert.equal(waiter.reply(), undefined, "b's own OK and a's refusal: no majority yet");
    assert.equal(service.lease().quorum, "ok", "c may still say yes");
    renewals[1].answer(true);
    granted(waiter.reply());
    assert.equal(service.lease().validUntilMs, sentAtMs + settings.tokenLeaseMs - settings.tokenLeaseSafetyMs, "from the send time, minus the margin");
  });
});

test("token lease: a minority (both others refuse) grants nothing; status and the log say the quorum is lost", async () => {
  await withService(({ service, renewals, log, enter }) => {
    giveToken(service);
    const waiter = enter();
    for (const r of renewals.splice(0)) r.answer(false);
    assert.equal(service.lease().quorum, "lost");
    assert.equal(waiter.reply(), undefined, "no grant in a minority");
    assert.equal(service.lease().validUntilMs, null);
    assert.ok(log.lines.some((line) => line.event === "ringQuorumLost"), "logged");
    assert.equal(service.node.status(service.now()).token, "held", "the token stays (it is not usable, not lost)");
  });
});

test("token lease: a renewal nobody answers fails on the tick after viewChangeTimeoutMs; the next one goes out at once and can succeed", async () => {
  await withService(({ service, clock, renewals, tick, enter }) => {
    giveToken(service);
    const waiter = enter();
    assert.equal(renewals.length, 2);
    clock.advance(settings.viewChangeTimeoutMs - 1);
    tick();
    assert.equal(service.lease().quorum, "ok", "not before viewChangeTimeoutMs");
    assert.equal(renewals.length, 2, "one renewal in flight at a time");
    clock.advance(1);
    tick();
    assert.equal(service.lease().quorum, "lost", "the silent renewal failed");
    assert.deepEqual(renewals.slice(2).map((r) => [r.to, r.seq]), [["a", 2], ["c", 2]], "the waiter still waits: a new renewal");
    renewals[0].answer(true);
    assert.equal(waiter.reply(), undefined, "a late answer to the failed renewal counts for nothing");
    renewals[2].answer(true);
    granted(waiter.reply());
    assert.equal(service.lease().quorum, "ok");
  });
});

test("token lease, renewer side: a renewal from a peer is answered through the peers, and b holds its promises for tokenLeaseMs", async () => {
  await withService(({ service, clock, sent }) => {
    clock.advance(100);
    service.onViewMessage({ type: "renew", from: "a", epoch: 1, seq: 7, voters: ["a", "b", "c"] });
    assert.deepEqual(sent.at(-1), { to: "a", message: { type: "renewAnswer", from: "b", epoch: 1, seq: 7, ok: true } });
    assert.equal(service.lease().heldUntilMs, clock.nowMs() + settings.tokenLeaseMs);
  });
});

test("token lease: a prepare waits out the holder's own hold (deferred); its promise then ends the section and the lease at b", async () => {
  await withService(({ service, clock, renewals, sent, tick, enter }) => {
    giveToken(service);
    const waiter = enter();
    for (const r of renewals.splice(0)) r.answer(true);
    const fence = granted(waiter.reply());
    const heldUntilMs = service.lease().heldUntilMs;
    sent.splice(0); // b's answers while it joined the view
    service.onViewMessage({ type: "prepare", from: "a", ballot: { epoch: 2, coordinator: "a" }, voters: ["a", "b", "c"] });
    assert.deepEqual(sent.map((s) => s.message.type), ["deferred"], "no promise while b's lease may still be valid");
    assert.ok(service.node.sectionActive(fence));
    clock.advance(heldUntilMs - clock.nowMs());
    tick();
    assert.deepEqual(sent.map((s) => s.message.type), ["deferred", "promise"]);
    assert.equal(service.node.sectionActive(fence), false, "the promise ended the section (reason epoch)");
    const status = service.node.status(service.now());
    assert.deepEqual([status.token, status.refuseBelowEpoch, status.leaseValidUntilMs], ["away", 2, null]);
    assert.equal(service.lease().validUntilMs, null);
  });
});

test("token lease settings: the margin is below the lease, and a view change outlasts a lease hold", () => {
  assert.deepEqual(validateSettings(DEFAULT_SETTINGS), []);
  const margin = validateSettings({ ...DEFAULT_SETTINGS, tokenLeaseSafetyMs: DEFAULT_SETTINGS.tokenLeaseMs });
  assert.deepEqual(margin.map((p) => p.key), ["tokenLeaseSafetyMs"]);
  const timeout = validateSettings({ ...DEFAULT_SETTINGS, viewChangeTimeoutMs: DEFAULT_SETTINGS.tokenLeaseMs });
  assert.deepEqual(timeout.map((p) => p.key), ["viewChangeTimeoutMs"]);
});
