/**
 * The arbiter's part in the ring, as real processes: it coordinates the view changes the ring
 * nodes ask for (without a vote), and when it is down the ring nodes coordinate themselves, so
 * the ring heals either way (docs/ring.md, "Views"). A 3-node ring with an arbiter a1 on
 * loopback, the tests' quick settings; bounds from the settings plus a named slack. The test
 * stops its processes and removes its temp dir.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { eventually } from "./_harness.ts";
import { QUICK_RING_SETTINGS } from "./_harness.ts";
import { handoffFailuresMs, ringSettings, SLACK_MS, startRing, viewChangeMs } from "./_ring_cluster.ts";

/**
 * A ring node leaves the arbiter viewChangeRetryMs to send its prepare before it coordinates
 * itself. 1 s here (200 ms by default), so a loaded machine's slow arbiter still goes first and
 * "the arbiter coordinated" does not depend on the machine's speed.
 */
const ARBITER_GRACE_MS = 1_000;
const SETTINGS = ringSettings([...QUICK_RING_SETTINGS, `viewChangeRetryMs = ${ARBITER_GRACE_MS}`]);
const REPAIR_MS = handoffFailuresMs(SETTINGS) + viewChangeMs(3, SETTINGS) + SETTINGS.ringLeaseMaxMs + SLACK_MS;

test("ring and arbiter: the arbiter coordinates the view that leaves a killed node out; with the arbiter killed too, a ring node coordinates the next one", { timeout: 90_000 }, async () => {
  const ring = await startRing({ size: 3, arbiter: true, settings: [`viewChangeRetryMs = ${ARBITER_GRACE_MS}`] });
  try {
    const survivors = async (ids: string[], coordinators: (c: string) => boolean) => {
      const all = await ring.statuses(ids);
      return all.every((s) => s !== undefined && s.view.view !== null && s.members.join(",") === ids.join(",") && coordinators(s.view.view.coordinator));
    };

    // r3 dies; its predecessor r2 asks the arbiter, which coordinates the view of r1, r2.
    const section = await ring.client("r2").lock({ waitMs: REPAIR_MS });
    await section.release();
    await ring.stop("r3", "SIGKILL");
    await ring.client("r2").lock({ waitMs: REPAIR_MS }).then((s) => s.release()); // a hand-off to r3 must fail for the repair to start
    await eventually("r1, r2 in a view the arbiter coordinated", () => survivors(["r1", "r2"], (c) => c === "a1"), REPAIR_MS);

    // r3 comes back: it asks the arbiter too, which coordinates its rejoin.
    await ring.start("r3");
    await eventually("r1..r3 in a view the arbiter coordinated", () => survivors(["r1", "r2", "r3"], (c) => c === "a1"), REPAIR_MS);

    // The arbiter dies, then r3 again: r2's wish reaches no arbiter, so a ring node coordinates.
    await ring.stop("a1", "SIGKILL");
    await ring.stop("r3", "SIGKILL");
    await ring.client("r2").lock({ waitMs: REPAIR_MS }).then((s) => s.release());
    await eventually("r1, r2 in a view a ring node coordinated", () => survivors(["r1", "r2"], (c) => c === "r1" || c === "r2"), REPAIR_MS);
    const granted = await ring.client("r1").lock({ waitMs: REPAIR_MS });
    await granted.release();
    assert.ok(ring.events("a1", "viewDecided").length >= 2, "the arbiter decided views while it was up");
  } catch (error) {
    throw new Error(`${(error as Error).message}\n${ring.logTails()}`);
  } finally {
    await ring.remove();
  }
});
