/**
 * The backup's side of a takeover's timing (cluster/lock/service.ts and takeover_hold.ts, issue
 * 14 F1): it holds a client's request while its takeover is pending, and it claims at the moment
 * its promises ran out rather than at its next tick. Primary p1, backup b1 and arbiter a1 in process
 * (tests/_fuzz_apps.ts lockPair) on a manual clock; p1 is stopped (it sends nothing more, as
 * after kill -9) and only b1 ticks.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import type { ClientAnswer } from "../lib/core/lock/lock_replica.ts";
import type { Command } from "../lib/core/lock/lock_table.ts";
import { realTimers, type Timers } from "../cluster/timers.ts";
import { lockPair } from "./_fuzz_apps.ts";
import { SECRET_HASH } from "./_session.ts";

const OPEN: Command = { type: "openSession", ttlMs: 5_000, secretHash: SECRET_HASH };
/** Ticks in a test at most (far more than a takeover's 500 ms in 20 ms ticks). */
const TICKS_MAX = 200;

/** The pair with p1 gone; `tickB` moves the clock one tick and lets b1's transport answers arrive. */
async function primaryGone() {
  const pair = await lockPair(); // default timing; the long-poll of 1 ms keeps real timers out
  pair.p.stop();
  const tickB = async () => {
    pair.clock.advance(pair.settings.tickMs);
    pair.b.tick();
    await new Promise((resolve) => setTimeout(resolve, 0));
  };
  return { ...pair, tickB };
}

/** Submits at b1 and records the answer and the clock reading it came at. */
function submitAtB(pair: Awaited<ReturnType<typeof primaryGone>>) {
  const got: { answer?: ClientAnswer; atMs?: number } = {};
  pair.b.submitThen(OPEN, undefined, (answer) => {
    got.answer = answer;
    got.atMs = pair.clock.nowMs();
  });
  return got;
}

test("a backup whose primary went silent holds a client's request and answers it as the new primary at the takeover, not after the client's backoff", { timeout: 60_000 }, async () => {
  const pair = await primaryGone();
  const { b, clock, tickB } = pair;
  try {
    // Before the silence it refuses at once: the primary may be alive (the client asks it).
    const early = submitAtB(pair);
    assert.equal(early.answer?.ok === false && early.answer.code, "not_primary");
    for (let i = 0; i < TICKS_MAX && !b.replica.takeoverPending(clock.nowMs()); i++) await tickB();
    assert.ok(b.replica.takeoverPending(clock.nowMs()), "b1 noticed the silence");
    const held = submitAtB(pair);
    await new Promise((resolve) => setTimeout(resolve, 0));
    assert.equal(held.answer, undefined, "held, not refused");
    let servingFromMs: number | undefined;
    for (let i = 0; i < TICKS_MAX && held.answer === undefined; i++) {
      await tickB();
      if (servingFromMs === undefined && b.replica.serving()) servingFromMs = clock.nowMs();
    }
    const answer = held.answer as ClientAnswer | undefined; // set by the ticks above
    assert.ok(answer?.ok, `served: ${JSON.stringify(answer)}`);
    assert.equal(b.replica.status().role, "primary");
    assert.equal(held.atMs, servingFromMs, "answered in the step b1 began to serve");
  } finally {
    pair.stop();
  }
});

test("a request held for a takeover that does not come is refused 'not primary' once a dead primary's leases would have ended (one tick late at most)", { timeout: 60_000 }, async () => {
  const pair = await primaryGone();
  const { b, clock, core, settings, tickB } = pair;
  // Test-side: the arbiter refuses every claim (as while p1's lease runs), so b1 never takes over.
  core.step = () => ({ reply: { type: "refused", epoch: core.current.epoch, primary: "p1", reason: "test: lease runs", becomeBackup: true } });
  try {
    for (let i = 0; i < TICKS_MAX && !b.replica.takeoverPending(clock.nowMs()); i++) await tickB();
    const heardLastAtMs = clock.nowMs() - b.replica.status().lastHeardFromPrimaryMs!;
    const held = submitAtB(pair);
    await new Promise((resolve) => setTimeout(resolve, 0));
    assert.equal(held.answer, undefined, "held");
    for (let i = 0; i < TICKS_MAX && held.answer === undefined; i++) await tickB();
    // The window: a primary that died when b1 last heard it has lost the arbiter's lease by then.
    const windowEndsAtMs = heardLastAtMs + settings.primaryLeaseMs + settings.leaseRenewMs;
    const answer = held.answer as ClientAnswer | undefined; // set by the ticks above
    assert.equal(answer?.ok === false && answer.code, "not_primary");
    assert.ok(held.atMs! >= windowEndsAtMs && held.atMs! < windowEndsAtMs + settings.tickMs, `answered ${held.atMs! - windowEndsAtMs} ms after the window`);
    assert.equal(b.replica.role, "backup", "no takeover: the window ended the hold");
    // Past the window a request is refused at once (the primary is most likely alive, cut off from b1).
    const late = submitAtB(pair);
    assert.equal(late.answer?.ok === false && late.answer.code, "not_primary");
  } finally {
    pair.stop();
  }
});

/**
 * The runtime's timers until `port.nowMs` is set (lockPair's set-up long-polls), then timers on
 * that manual clock: `fire` runs those due.
 */
function manualTimers() {
  const due = new Set<{ atMs: number; fn: () => void }>();
  const port: { nowMs?: () => number } = {};
  const timers: Timers = {
    setTimeout: (fn, ms) => {
      if (port.nowMs === undefined) return realTimers.setTimeout(fn, ms);
      const timer = { atMs: port.nowMs() + ms, fn };
      due.add(timer);
      return timer;
    },
    clearTimeout: (handle) => {
      if (!due.delete(handle as { atMs: number; fn: () => void })) realTimers.clearTimeout(handle);
    },
  };
  const fire = () => {
    for (const timer of [...due]) {
      if (timer.atMs > port.nowMs!()) continue;
      due.delete(timer);
      timer.fn();
    }
  };
  return { timers, fire, port };
}

test("a backup claims the moment its last promise ran out (a timer between two ticks), not at its next tick", async () => {
  const manual = manualTimers();
  const pair = await lockPair(undefined, { timers: manual.timers });
  const { b, p, clock, recorded, settings } = pair;
  manual.port.nowMs = () => clock.nowMs();
  try {
    // b1's last promise is given between two ticks: an append (a new session) 7 ms after one.
    clock.advance(7);
    await p.submit(OPEN);
    p.stop();
    const claimAtMs = b.replica.takeoverClaimAtMs(clock.nowMs())!;
    assert.ok(claimAtMs % settings.tickMs !== 0, `the claim's moment ${claimAtMs} falls between two ticks`);
    const claims = () => recorded.filter((r) => r.from === "b1" && r.message.type === "claim" && r.message.hasState === true).length;
    let claimedAtMs: number | undefined;
    // Millisecond steps; b1 ticks every tickMs, as the daemon's interval does, and its timers fire when due.
    for (let ms = 0; ms < 2_000 && claimedAtMs === undefined; ms++) {
      clock.advance(1);
      manual.fire();
      if (clock.nowMs() % settings.tickMs === 0) b.tick();
      await new Promise((resolve) => setTimeout(resolve, 0));
      if (claims() > 0) claimedAtMs = clock.nowMs();
    }
    assert.ok(claimedAtMs !== undefined, "b1 claimed");
    assert.ok(claimedAtMs - claimAtMs >= 0 && claimedAtMs - claimAtMs <= 1, `claimed ${claimedAtMs - claimAtMs} ms after its promise ran out`);
  } finally {
    pair.stop();
  }
});

test("a request held for a takeover is answered when the backup stops meanwhile (the stopping answer, not never)", { timeout: 60_000 }, async () => {
  const pair = await primaryGone();
  const { b, clock, tickB } = pair;
  try {
    for (let i = 0; i < TICKS_MAX && !b.replica.takeoverPending(clock.nowMs()); i++) await tickB();
    const held = submitAtB(pair);
    await new Promise((resolve) => setTimeout(resolve, 0));
    assert.equal(held.answer, undefined, "held");
    b.stop();
    await new Promise((resolve) => setTimeout(resolve, 0));
    const answer = held.answer as ClientAnswer | undefined; // set by the stop above
    assert.ok(answer !== undefined && !answer.ok, `answered by the stop: ${JSON.stringify(answer)}`);
    assert.equal(answer.code, "not_primary");
  } finally {
    pair.stop();
  }
});
