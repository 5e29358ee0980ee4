/**
 * NodeMetrics without a server: a wall-clock step against the monotonic clock is counted and
 * logged by direction, ordinary ticks are not; a stall past the lease safety margin is counted
 * and logged, a shorter one is not. The per-lock wait and hold histograms keep their own series for
 * the top N names by total time, re-ranked at an interval: a late hot lock enters, a name that
 * drops out counts under `other`, and the series stay at most N + 1 however many names are used.
 * Answers, grants and releases, counted in plain numbers on the request path, scrape as prom-client's
 * own counters did.
 * Clocks are moved by hand (no real time passes).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { manualClock } from "../cluster/clock.ts";
import { memoryLogger } from "../cluster/log.ts";
import { CLOCK_JUMP_MIN_MS, LockMetrics, NodeMetrics, OTHER_LOCK_NAME } from "../cluster/metrics.ts";
import { SecurityLog } from "../cluster/security_log.ts";

function setup() {
  const clock = manualClock(1_000);
  let wallMs = 1_700_000_000_000;
  const log = memoryLogger();
  const metrics = new NodeMetrics({
    nodeId: "n1",
    clock,
    log,
    security: new SecurityLog(clock, log, 1_000),
    loopStall: () => ({ loopStallMaxMs: 0, loopStallRecentMaxMs: 0 }),
    leaseSafetyMs: 100,
    wallNowMs: () => wallMs,
  });
  const step = (monoMs: number, wallStepMs: number) => {
    clock.advance(monoMs);
    wallMs += wallStepMs;
    metrics.checkClocks();
  };
  return { metrics, log, step, clock };
}

const sampleValue = (text: string, line: string) => Number(text.split("\n").find((l) => l.startsWith(line + " "))?.split(" ")[1] ?? "0");

test("clock jumps: a wall-clock step of at least CLOCK_JUMP_MIN_MS either way is counted and logged; ticks that agree within it are not", async () => {
  const { metrics, log, step } = setup();
  step(1_000, 1_000);
  step(1_000, 1_000 + CLOCK_JUMP_MIN_MS - 1);
  assert.equal(log.lines.filter((l) => l.event === "clockJump").length, 0);
  step(1_000, 1_000 - 5_000);
  step(1_000, 1_000 + 60_000);
  const text = await metrics.text();
  assert.equal(sampleValue(text, 'mutexd_clock_jumps_total{direction="backward",node="n1"}'), 1, text);
  assert.equal(sampleValue(text, 'mutexd_clock_jumps_total{direction="forward",node="n1"}'), 1, text);
  assert.deepEqual(log.lines.filter((l) => l.event === "clockJump").map((l) => [l.direction, l.jumpMs]), [["backward", -5_000], ["forward", 60_000]]);
});

test("stalls: one longer than the lease safety margin is counted and logged, one within it is not", async () => {
  const { metrics, log } = setup();
  metrics.stalled(100);
  metrics.stalled(350);
  metrics.stalled(400, 3); // with the CPU the process used in it (a wait: little)
  const text = await metrics.text();
  assert.equal(sampleValue(text, 'mutexd_stalls_past_lease_margin_total{node="n1"}'), 2, text);
  assert.deepEqual(log.lines.filter((l) => l.event === "stalledPastLeaseMargin"), [
    { event: "stalledPastLeaseMargin", stallMs: 350, leaseSafetyMs: 100 },
    { event: "stalledPastLeaseMargin", stallMs: 400, cpuMs: 3, leaseSafetyMs: 100 },
  ]);
});

/** A LockMetrics with N = 3 names, re-ranked every second, fed effects by hand. */
function lockSetup() {
  const { metrics, clock } = setup();
  const lock = new LockMetrics(metrics, clock, () => ({ sessionCount: 0, lockCount: 0, epoch: 1, lagEntries: null }), {
    namesMax: 3,
    rankIntervalMs: 1_000,
    scoredMax: 100,
  });
  let token = 0;
  /** One section of `name`: queued for `waitMs` (0: granted at once), held for `holdMs`. */
  const section = (name: string, waitMs: number, holdMs: number) => {
    const session = `s${token}`;
    if (waitMs > 0) lock.queued(name, session);
    clock.advance(waitMs);
    lock.effect({ type: "granted", grant: { name, session, token: ++token, mode: "exclusive" } });
    clock.advance(holdMs);
    lock.effect({ type: "released", name, session, token, reason: "leave" });
  };
  /** The `lock` label values of a histogram's series now, and each one's count. */
  const series = async (histogram: "wait" | "hold") => {
    const prefix = `mutexd_lock_${histogram}_seconds_count{`;
    const counts: Record<string, number> = {};
    for (const line of (await metrics.text()).split("\n").filter((l) => l.startsWith(prefix))) {
      counts[/lock="([^"]*)"/.exec(line)![1]] = Number(line.split(" ")[1]);
    }
    return counts;
  };
  return { clock, section, series };
}

test("per-lock histograms: a late hot lock enters the top N at the next ranking; a name that drops out counts under other", async () => {
  const { clock, section, series } = lockSetup();
  // The first interval: six quiet names; the first three take the free places, the rest are other.
  for (const name of ["cold1", "cold2", "cold3", "cold4", "cold5", "cold6"]) section(name, 0, 10);
  assert.deepEqual(await series("hold"), { cold1: 1, cold2: 1, cold3: 1, [OTHER_LOCK_NAME]: 3 });
  assert.deepEqual(await series("wait"), { cold1: 1, cold2: 1, cold3: 1, [OTHER_LOCK_NAME]: 3 });
  // Before the interval ends a new name has no place: other.
  section("hot", 200, 300);
  assert.deepEqual(await series("hold"), { cold1: 1, cold2: 1, cold3: 1, [OTHER_LOCK_NAME]: 4 });
  // The next interval: hot waits and holds longest; the observation that makes the ranking due
  // ranks it first; cold3 (tied with cold1 and cold2, last by name) leaves, its series removed.
  clock.advance(1_000);
  section("hot", 200, 300);
  assert.deepEqual(await series("hold"), { cold1: 1, cold2: 1, hot: 1, [OTHER_LOCK_NAME]: 4 });
  assert.deepEqual(await series("wait"), { cold1: 1, cold2: 1, hot: 1, [OTHER_LOCK_NAME]: 4 });
  // cold3 counts under other from now on.
  section("cold3", 0, 10);
  assert.deepEqual(await series("hold"), { cold1: 1, cold2: 1, hot: 1, [OTHER_LOCK_NAME]: 5 });
});

test("per-lock histograms: with 500 names over 20 intervals, each histogram has at most N + 1 series at every scrape, the last interval's hottest among them", async () => {
  const { clock, section, series } = lockSetup();
  let namesSeen = 0;
  let lastHot: string | null = null;
  for (let interval = 0; interval < 20; interval++) {
    // Each interval 25 new names, one of them much hotter than the rest. The interval's first
    // section, a short one of the last interval's hot name, ranks the names of the last interval:
    // that name has its series from then on.
    clock.advance(1_000);
    if (lastHot !== null) section(lastHot, 1, 5);
    let hot = "";
    for (let i = 0; i < 25; i++) {
      const name = `n${namesSeen++}`;
      if (i === interval % 25) hot = name;
      section(name, name === hot ? 300 : 1, name === hot ? 500 : 5);
    }
    for (const histogram of ["wait", "hold"] as const) {
      const labels = Object.keys(await series(histogram));
      assert.ok(labels.length <= 3 + 1, `${histogram} after interval ${interval}: ${labels.join(", ")}`);
      assert.ok(labels.includes(OTHER_LOCK_NAME));
      if (lastHot !== null) assert.ok(labels.includes(lastHot), `${histogram} after interval ${interval}: ${lastHot} among ${labels.join(", ")}`);
    }
    lastHot = hot;
  }
  assert.equal(namesSeen, 500);
});

test("answers, grants and releases are counted in plain numbers and scraped as before: by code and reason, every scrape the totals so far; an answer made in the call stays a Response", async () => {
  const { metrics, clock } = setup();
  const lock = new LockMetrics(metrics, clock, () => ({ sessionCount: 0, lockCount: 0, epoch: 1, lagEntries: null }));
  let text = await metrics.text();
  // Before anything: the unlabelled counters read 0, the labelled ones have no series (as prom-client's own).
  assert.ok(text.includes("mutexd_lock_grants_total{node=\"n1\"} 0"), text);
  assert.ok(!text.includes("mutexd_http_responses_total{"), text);
  const fetch = metrics.countingFetch((request: Request) =>
    request.method === "GET" ? new Response("now", { status: 200 }) : Promise.resolve(new Response("later", { status: 409 }))
  );
  const now = fetch(new Request("http://x/now"));
  assert.ok(now instanceof Response, "an answer made in the call is returned as it is, not as a promise");
  assert.equal((await fetch(new Request("http://x/later", { method: "POST" }))).status, 409);
  fetch(new Request("http://x/now"));
  await assert.rejects(Promise.resolve(metrics.countingFetch(() => {
    throw new Error("bug");
  })(new Request("http://x/"))), /bug/);
  for (const token of [1, 2]) lock.effect({ type: "granted", grant: { name: "L", session: "s", token, mode: "exclusive" } });
  lock.effect({ type: "released", name: "L", session: "s", token: 1, reason: "leave" });
  lock.effect({ type: "released", name: "L", session: "s", token: 2, reason: "expired" });
  text = await metrics.text();
  assert.equal(sampleValue(text, 'mutexd_http_responses_total{code="200",node="n1"}'), 2, text);
  assert.equal(sampleValue(text, 'mutexd_http_responses_total{code="409",node="n1"}'), 1, text);
  assert.equal(sampleValue(text, 'mutexd_lock_grants_total{node="n1"}'), 2, text);
  assert.equal(sampleValue(text, 'mutexd_lock_releases_total{reason="leave",node="n1"}'), 1, text);
  assert.equal(sampleValue(text, 'mutexd_lock_releases_total{reason="expired",node="n1"}'), 1, text);
  // A second scrape shows the same totals (the counts are set, not added again), then what came since.
  lock.effect({ type: "granted", grant: { name: "L", session: "s", token: 3, mode: "exclusive" } });
  text = await metrics.text();
  assert.equal(sampleValue(text, 'mutexd_lock_grants_total{node="n1"}'), 3, text);
  assert.equal(sampleValue(text, 'mutexd_http_responses_total{code="200",node="n1"}'), 2, text);
});
