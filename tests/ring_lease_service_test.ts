/**
 * The token lease in the ring driver (cluster/ring/service.ts) with hand-made peers: node b of
 * a → b → c holds the token; the test answers each renewal by hand. Proves: no grant before a
 * majority of the file (b itself and one more) backed the lease; a minority (both others refuse)
 * grants nothing and says so in status and the log; the lease runs from the send time minus the
 * safety margin; as a renewer, a node holds for tokenLeaseMs after an OK (and after its start),
 * and refuses to back a lease of an epoch older than it promised. Each
 * test stops its service and removes its data dir.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { type ClientReply, RingNode } from "../lib/core/ring/ring_node.ts";
import { DEFAULT_SETTINGS, validateSettings } from "../lib/settings.ts";
import { manualClock } from "../cluster/clock.ts";
import { memoryLogger } from "../cluster/log.ts";
import { realTimers } from "../cluster/timers.ts";
import { type RenewAnswer, type RingPeers, RingService } from "../cluster/ring/service.ts";
import { RingStorage } from "../cluster/ring/storage.ts";
import { eventually, removeDir, tempDir } from "./_harness.ts";

const settings = DEFAULT_SETTINGS;
const START_MS = 10_000;

/** A renewal sent to `to`: the test answers it. */
type Renewal = { to: string; epoch: number; seq: number; answer(ok: boolean): void };

type Harness = {
  service: RingService;
  clock: ReturnType<typeof manualClock>;
  renewals: Renewal[];
  log: ReturnType<typeof memoryLogger>;
  enter(): { reply: () => ClientReply | undefined };
};

async function withService(body: (h: Harness) => Promise<void>): Promise<void> {
  const dir = tempDir("mutexd-ring-lease-");
  const storage = new RingStorage(dir);
  const renewals: Renewal[] = [];
  const log = memoryLogger();
  const never = () => new Promise<never>(() => {});
  const peers: RingPeers = {
    deliver: never,
    fetchLog: never,
    probe: never,
    prepare: never,
    wake: () => Promise.resolve(),
    renew: (to, epoch, seq) =>
      new Promise<RenewAnswer>((resolve) => renewals.push({ to, epoch, seq, answer: (ok) => resolve({ epoch, seq, ok }) })),
  };
  const clock = manualClock(START_MS);
  const node = new RingNode({ id: "b", ring: ["a", "b", "c"], limits: settings, ticketPrefix: "t-" });
  const service = new RingService({ node, settings, clock, timers: realTimers, log, storage, peers, onFatal: () => {} });
  service.start();
  const enter = () => {
    let answer: ClientReply | undefined;
    service.request({ type: "enter", waitMs: 60_000, leaseMs: 1_000 }, (reply) => void (answer = reply));
    return { reply: () => answer };
  };
  try {
    await body({ service, clock, renewals, log, enter });
  } finally {
    service.stop();
    storage.close();
    removeDir(dir);
  }
}

/** The token of epoch 1 arrives at b and rests there (idle: idleHops = ring size). */
function giveToken(service: RingService): void {
  const result = service.stepItem("a", { kind: "token", token: { epoch: 1, hop: 1, wseq: 0, commit: 0, fence: 0, idleHops: 3 } });
  assert.ok(result.ok && result.type === "token");
}

test("token lease: the holder grants only once a majority of the file backed its lease, counted from the send time", async () => {
  await withService(async ({ service, clock, renewals, enter }) => {
    giveToken(service);
    const sentAtMs = clock.nowMs();
    const waiter = enter();
    assert.deepEqual(renewals.map((r) => [r.to, r.epoch]), [["a", 1], ["c", 1]], "one renewal to every other ring node");
    assert.equal(waiter.reply(), undefined, "no grant before the lease");
    clock.advance(50);
    renewals[0].answer(false);
    // b's own OK and a's refusal: one of the two needed, and c may still say yes.
    await eventually("a's refusal is counted", () => service.lease().quorum === "ok" && waiter.reply() === undefined);
    assert.equal(waiter.reply(), undefined, "one OK (its own) is no majority");
    renewals[1].answer(true);
    await eventually("granted once c backed the lease", () => waiter.reply() !== undefined);
    const reply = waiter.reply()!;
    assert.ok(reply.ok && reply.type === "granted", JSON.stringify(reply));
    assert.equal(service.lease().validUntilMs, sentAtMs + settings.tokenLeaseMs - settings.tokenLeaseSafetyMs, "from the send time, minus the margin");
  });
});

test("token lease: a minority (both others refuse) grants nothing; status and the log say the quorum is lost", async () => {
  await withService(async ({ service, renewals, log, enter }) => {
    giveToken(service);
    const waiter = enter();
    for (const r of renewals.splice(0)) r.answer(false);
    await eventually("the renewal failed", () => service.lease().quorum === "lost");
    assert.equal(waiter.reply(), undefined, "no grant in a minority");
    assert.equal(service.lease().validUntilMs, null);
    assert.ok(log.lines.some((line) => line.event === "ringQuorumLost"), "logged");
    assert.equal(service.node.status(service.now()).token, "held", "the token stays (it is not usable, not lost)");
  });
});

test("token lease: a renewal nobody answers fails after viewChangeTimeoutMs; the retry after viewChangeRetryMs can succeed", async () => {
  await withService(async ({ service, clock, renewals, enter }) => {
    giveToken(service);
    const waiter = enter();
    assert.equal(renewals.length, 2);
    clock.advance(settings.viewChangeTimeoutMs);
    await eventually("the silent renewal failed", () => service.lease().quorum === "lost");
    clock.advance(settings.viewChangeRetryMs);
    await eventually("a new renewal went out", () => renewals.length === 4);
    renewals[2].answer(true);
    await eventually("granted", () => waiter.reply() !== undefined);
    assert.equal(service.lease().quorum, "ok");
    renewals[0].answer(true); // a late answer to the failed renewal changes nothing
  });
});

test("token lease, renewer side: it backs a lease of its epoch or a newer one and holds for tokenLeaseMs; none older than its promise, none for strangers", async () => {
  await withService(async ({ service, clock }) => {
    assert.equal(service.lease().heldUntilMs, START_MS + settings.tokenLeaseMs, "held from its start (it may have backed a lease just before a restart)");
    clock.advance(100);
    assert.deepEqual(service.renewFrom("a", 1, 7), { epoch: 1, seq: 7, ok: true });
    assert.equal(service.lease().heldUntilMs, START_MS + 100 + settings.tokenLeaseMs, "held for tokenLeaseMs from the OK");
    clock.advance(settings.tokenLeaseMs);
    assert.equal(service.stepPeer({ type: "prepare", from: "a", epoch: 2 }).type, "promised");
    assert.deepEqual(service.renewFrom("a", 1, 8), { epoch: 1, seq: 8, ok: false }, "promised epoch 2: no lease of epoch 1");
    assert.equal(service.renewFrom("a", 2, 9).ok, true, "its own epoch");
    assert.equal(service.renewFrom("x", 2, 10).ok, false, "not a ring node");
  });
});

test("token lease settings: the margin is below the lease, and a view change outlasts a lease hold", () => {
  assert.deepEqual(validateSettings(DEFAULT_SETTINGS), []);
  const margin = validateSettings({ ...DEFAULT_SETTINGS, tokenLeaseSafetyMs: DEFAULT_SETTINGS.tokenLeaseMs });
  assert.deepEqual(margin.map((p) => p.key), ["tokenLeaseSafetyMs"]);
  const timeout = validateSettings({ ...DEFAULT_SETTINGS, viewChangeTimeoutMs: DEFAULT_SETTINGS.tokenLeaseMs });
  assert.deepEqual(timeout.map((p) => p.key), ["viewChangeTimeoutMs"]);
});
