/**
 * NodeMetrics without a server: a wall-clock step against the monotonic clock is counted and
 * logged by direction, ordinary ticks are not; a stall past the lease safety margin is counted
 * and logged, a shorter one is not. The per-lock wait and hold histograms keep their own series for
 * the top N names by total time, re-ranked at an interval: a late hot lock enters, a name that
 * drops out counts under `other`, and the series stay at most N + 1 however many names are used.
 * Answers, grants and releases, counted in plain numbers on the request path, scrape as prom-client's
 * own counters did; the wait and hold histograms' plain counts scrape as prom-client's Histogram does
 * for the same observations, byte for byte.
 * Clocks are moved by hand (no real time passes).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { manualClock } from "../cluster/clock.ts";
import { memoryLogger } from "../cluster/log.ts";
import { CLOCK_JUMP_MIN_MS, NodeMetrics } from "../cluster/metrics.ts";
import { LockMetrics } from "../cluster/lock/metrics.ts";
import { OTHER_LOCK_NAME, TopNamesHistogram } from "../cluster/top_names_histogram.ts";
import { ScrapedHistogram, TIME_BUCKETS_SECONDS } from "../cluster/scraped_metrics.ts";
import { SecurityLog } from "../cluster/security_log.ts";
import { Histogram, Registry } from "prom-client";
import { Prng } from "../lib/core/prng.ts";

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

test("per-lock histograms in plain counts scrape byte for byte as prom-client's Histogram does for the same observations (series order, removals, bounds, +Inf, sums), scrape after scrape", async () => {
  // One TopNamesHistogram feeds both: the plain counts (registry `plain`) and prom-client's own
  // Histogram as LockMetrics used it before (registry `reference`), so both see the same label per
  // observation and the same removals at each ranking.
  const plain = new Registry();
  const reference = new Registry();
  for (const registry of [plain, reference]) registry.setDefaultLabels({ node: "n1" });
  const config = { name: "mutexd_lock_wait_seconds", help: "Time from an enter to its grant." };
  const scraped = new ScrapedHistogram({ ...config, registers: [plain] }, "lock");
  const prom = new Histogram({ ...config, labelNames: ["lock"], buckets: TIME_BUCKETS_SECONDS, registers: [reference] });
  let nowMs = 0;
  const top = new TopNamesHistogram({
    observe(label, seconds) {
      scraped.observe(label, seconds);
      prom.observe({ lock: label }, seconds);
    },
    remove(label) {
      scraped.remove(label);
      prom.remove({ lock: label });
    },
  }, nowMs, { namesMax: 3, rankIntervalMs: 1_000, scoredMax: 6 });
  const random = new Prng(14);
  // Names that need escaping in a label, the bounds themselves, 0, past the last bound, fractions.
  const names = ['q"uote', "back\\slash", "a", "b", "c", "d", "e", "f"];
  const special = [0, ...TIME_BUCKETS_SECONDS, 300.5, 1e6, 0.1 + 0.2];
  let removals = 0;
  const seen = new Set<string>();
  for (let step = 0; step < 3_000; step++) {
    const before = top.names();
    nowMs += random.below(40);
    const seconds = random.below(4) === 0 ? special[random.below(special.length)] : random.float() * 10 ** (random.below(6) - 3);
    top.observe(names[random.below(names.length)], seconds, nowMs);
    removals += before.filter((name) => !top.names().includes(name)).length;
    if (step % 97 === 0 || step === 2_999) {
      const text = await plain.metrics();
      assert.equal(text, await reference.metrics(), `scrape at step ${step}`);
      for (const label of ['lock="q\\"uote"', 'lock="back\\\\slash"', `lock="${OTHER_LOCK_NAME}"`]) if (text.includes(label)) seen.add(label);
    }
  }
  assert.deepEqual(await plain.getMetricsAsJSON(), await reference.getMetricsAsJSON());
  // The run did what it is meant to compare: names removed at rankings, escaped labels, `other`.
  assert.ok(removals > 10, `removals ${removals}`);
  assert.equal(seen.size, 3, [...seen].join(" "));
});

test("hold and wait times: each hold timed from its own grant to its own release (shared holders of one name, released out of order), a queued enter's wait up to its grant", async () => {
  const { metrics, clock } = setup();
  const lock = new LockMetrics(metrics, clock, () => ({ sessionCount: 0, lockCount: 0, epoch: 1, lagEntries: null }));
  lock.effect({ type: "granted", grant: { name: "L", session: "a", token: 1, mode: "shared" } });
  clock.advance(100);
  lock.effect({ type: "granted", grant: { name: "L", session: "b", token: 2, mode: "shared" } });
  lock.queued("L", "c");
  clock.advance(300);
  lock.effect({ type: "released", name: "L", session: "a", token: 1, reason: "leave" }); // held 400 ms
  clock.advance(50);
  lock.effect({ type: "released", name: "L", session: "b", token: 2, reason: "leave" }); // held 350 ms
  lock.effect({ type: "granted", grant: { name: "L", session: "c", token: 3, mode: "exclusive" } }); // waited 350 ms
  clock.advance(20);
  lock.effect({ type: "released", name: "L", session: "c", token: 3, reason: "expired" }); // held 20 ms
  // A release whose grant this process never saw (taken over) is not observed.
  lock.effect({ type: "released", name: "L", session: "d", token: 9, reason: "leave" });
  const text = await metrics.text();
  assert.equal(sampleValue(text, 'mutexd_lock_hold_seconds_count{node="n1",lock="L"}'), 3, text);
  assert.ok(Math.abs(sampleValue(text, 'mutexd_lock_hold_seconds_sum{node="n1",lock="L"}') - (0.4 + 0.35 + 0.02)) < 1e-9, text);
  assert.equal(sampleValue(text, 'mutexd_lock_wait_seconds_count{node="n1",lock="L"}'), 3, text);
  assert.ok(Math.abs(sampleValue(text, 'mutexd_lock_wait_seconds_sum{node="n1",lock="L"}') - 0.35) < 1e-9, text);
});
