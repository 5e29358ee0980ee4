/**
 * `GET /metrics` of real `mutexd node` processes (a lock cluster, a ring of two): the answer
 * parses as Prometheus text format 0.0.4 (parsed here by a small strict parser, not by the
 * library that wrote it), and its counters move exactly with the operations the test makes.
 * Each test stops the processes it started and removes its temp dir.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "../lib/client/lock_client.ts";
import { startCluster } from "./_lock_cluster.ts";
import { startRing } from "./_ring_cluster.ts";
import { eventually, startMutexd } from "./_harness.ts";

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Metric and label names of the text format; a sample line is `name{l="v",…} value [timestamp]`. */
const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: -?\d+)?$/;
const LABEL = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\["\\n])*)"(?:,|$)/;
const SUFFIXES: Record<string, string[]> = { counter: [""], gauge: [""], histogram: ["_bucket", "_sum", "_count"], summary: ["", "_sum", "_count"], untyped: [""] };

/**
 * Parses exposition text strictly: every sample belongs to a family declared by a `# TYPE` line
 * before it (with the type's suffixes), names and labels are well formed, values are numbers,
 * a family is declared once, and histogram buckets grow with `le` up to `+Inf` = `_count`.
 * Throws on anything else.
 */
function parseProm(text: string): Sample[] {
  assert.ok(text.endsWith("\n"), "the text ends with a newline");
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  for (const [index, line] of text.split("\n").entries()) {
    const where = `line ${index + 1}: ${line}`;
    if (line === "") continue;
    if (line.startsWith("# HELP ")) {
      assert.match(line.split(" ")[2], NAME, where);
      continue;
    }
    if (line.startsWith("# TYPE ")) {
      const [, , name, type, ...rest] = line.split(" ");
      assert.match(name, NAME, where);
      assert.ok(type in SUFFIXES && rest.length === 0, where);
      assert.ok(!types.has(name), `${where}: declared twice`);
      types.set(name, type);
      continue;
    }
    assert.ok(!line.startsWith("#"), `${where}: unknown comment`);
    const match = SAMPLE.exec(line);
    assert.ok(match, `${where}: not a sample`);
    const [, name, labelText = "", valueText] = match;
    const labels: Record<string, string> = {};
    for (let rest = labelText; rest !== "";) {
      const label = LABEL.exec(rest);
      assert.ok(label, `${where}: bad labels`);
      labels[label[1]] = label[2];
      rest = rest.slice(label[0].length);
    }
    const value = valueText === "+Inf" ? Infinity : valueText === "-Inf" ? -Infinity : Number(valueText);
    assert.ok(valueText === "NaN" || !Number.isNaN(value), `${where}: bad value`);
    const family = [...types.entries()].find(([family, type]) => SUFFIXES[type].some((suffix) => name === family + suffix));
    assert.ok(family, `${where}: no # TYPE before it`);
    samples.push({ name, labels, value });
  }
  checkHistograms(samples, types);
  return samples;
}

/** Per histogram series: cumulative buckets, and the `+Inf` bucket equals `_count`. */
function checkHistograms(samples: Sample[], types: Map<string, string>): void {
  for (const [family, type] of types) {
    if (type !== "histogram") continue;
    const series = new Map<string, Sample[]>();
    for (const s of samples.filter((s) => s.name === `${family}_bucket`)) {
      const { le: _le, ...rest } = s.labels;
      const key = JSON.stringify(rest);
      series.set(key, [...(series.get(key) ?? []), s]);
    }
    for (const [key, buckets] of series) {
      for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i].value >= buckets[i - 1].value, `${family}${key}: buckets grow`);
      assert.equal(buckets.at(-1)!.labels.le, "+Inf", `${family}${key}: last bucket is +Inf`);
      const count = samples.find((s) => s.name === `${family}_count` && JSON.stringify(s.labels) === key);
      assert.equal(count?.value, buckets.at(-1)!.value, `${family}${key}: +Inf bucket = _count`);
    }
  }
}

/** The value of the sample `name` whose labels include `labels` (0 when absent: a counter not yet moved). */
function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.ok(found.length <= 1, `${name} ${JSON.stringify(labels)}: one series`);
  return found[0]?.value ?? 0;
}

async function scrape(url: string, fetchFn: (url: string) => Promise<Response> = fetch): Promise<Sample[]> {
  const response = await fetchFn(`${url}/metrics`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  return parseProm(await response.text());
}

test("the parser refuses what is not Prometheus text (so the tests below can fail)", () => {
  assert.throws(() => parseProm("x_total 1\n"), /no # TYPE/);
  assert.throws(() => parseProm("# TYPE x_total counter\nx_total{a=b} 1\n"), /bad labels/);
  assert.throws(() => parseProm("# TYPE x_total counter\nx_total one\n"), /bad value/);
  assert.throws(() => parseProm("# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n"), /buckets grow/);
  assert.deepEqual(parseProm("# TYPE x_total counter\nx_total{a=\"b\\\"c\"} 3\n"), [{ name: "x_total", labels: { a: 'b\\"c' }, value: 3 }]);
});

test("lock cluster: /metrics parses on primary, backup and arbiter; grants, waits, releases and the per-lock wait and hold histograms move with one contended lock", { timeout: 60_000 }, async () => {
  const c = await startCluster();
  try {
    const before = await scrape(c.urls.p1);
    const client = connect({ servers: [c.urls.p1, c.urls.b1] });
    const a = await client.openSession();
    const b = await client.openSession();
    const held = await client.enter("m1", { session: a, waitMs: 0 });
    assert.equal(held.granted, true);
    // b queues behind a; the server counts the wait once however often its long-poll asks again.
    const waited = client.enter("m1", { session: b, waitMs: 20_000 });
    await eventually("b's enter is queued", async () => value(await scrape(c.urls.p1), "mutexd_lock_waits_total") === 1);
    await client.leave("m1", { session: a, token: held.granted ? held.token : 0 });
    const second = await waited;
    assert.equal(second.granted, true);
    await client.leave("m1", { session: b, token: second.granted ? second.token : 0 });

    const after = await scrape(c.urls.p1);
    const moved = (name: string, labels: Record<string, string> = {}) => value(after, name, labels) - value(before, name, labels);
    assert.equal(moved("mutexd_lock_grants_total"), 2);
    assert.equal(moved("mutexd_lock_waits_total"), 1);
    assert.equal(moved("mutexd_lock_releases_total", { reason: "leave" }), 2);
    assert.equal(value(after, "mutexd_lock_wait_seconds_count", { lock: "m1" }), 2);
    assert.equal(value(after, "mutexd_lock_hold_seconds_count", { lock: "m1" }), 2);
    // b waited while a held: at least one wait is above the first bucket's zero.
    assert.ok(value(after, "mutexd_lock_wait_seconds_sum", { lock: "m1" }) > 0);
    assert.equal(value(after, "mutexd_lock_sessions"), 2);
    assert.equal(value(after, "mutexd_lock_replication_lag_entries"), 0, "the backup acknowledged everything (leave waits for it)");
    assert.ok(moved("mutexd_http_responses_total", { code: "200" }) >= 4, "the answers to enter and leave are counted");
    assert.ok(after.some((s) => s.name === "mutexd_event_loop_stall_seconds" && s.labels.window === "recent"));
    assert.ok(after.every((s) => s.labels.node === "p1"), "every series names its node");
    await a.close();
    await b.close();

    for (const id of ["b1", "a1"] as const) {
      const samples = await scrape(c.urls[id]);
      assert.ok(samples.some((s) => s.name === "mutexd_http_responses_total"), `${id} counts its answers`);
      assert.ok(samples.every((s) => s.labels.node === id));
    }
    assert.equal(value(await scrape(c.urls.b1), "mutexd_lock_grants_total"), 0, "only the primary commits grants");
  } finally {
    await c.stopAll();
  }
});

test("lock cluster: after the primary is killed, the backup's /metrics counts one takeover and its role change to primary", { timeout: 60_000 }, async () => {
  const c = await startCluster();
  try {
    const before = await scrape(c.urls.b1);
    assert.equal(value(before, "mutexd_lock_takeovers_total"), 0);
    c.procs.get("p1")!.kill("SIGKILL");
    await eventually("b1 took over", async () => value(await scrape(c.urls.b1), "mutexd_lock_takeovers_total") === 1, 30_000);
    const after = await scrape(c.urls.b1);
    assert.equal(value(after, "mutexd_lock_role_changes_total", { role: "primary" }), 1);
    assert.equal(value(after, "mutexd_lock_epoch"), value(before, "mutexd_lock_epoch") + 1);
  } finally {
    await c.stopAll();
  }
});

test("ring of two: /metrics parses; token hops and rotations grow, a section counts one grant and one end", { timeout: 60_000 }, async () => {
  const ring = await startRing({ size: 2 });
  try {
    const url = ring.urls[0];
    const first = await scrape(url);
    assert.ok(value(first, "mutexd_ring_view_changes_total") >= 1, "the node entered a view");
    await eventually("the token keeps coming back", async () => {
      const now = await scrape(url);
      return value(now, "mutexd_ring_token_hops_total") > value(first, "mutexd_ring_token_hops_total") + 2 &&
        value(now, "mutexd_ring_rotation_seconds_count") > value(first, "mutexd_ring_rotation_seconds_count");
    });
    const before = await scrape(url);
    const lock = await ring.clients[0].lock();
    await lock.release();
    const after = await scrape(url);
    assert.equal(value(after, "mutexd_ring_grants_total") - value(before, "mutexd_ring_grants_total"), 1);
    const ended = (samples: Sample[]) => samples.filter((s) => s.name === "mutexd_ring_sections_ended_total").reduce((sum, s) => sum + s.value, 0);
    assert.equal(ended(after) - ended(before), 1);
    assert.equal(value(after, "mutexd_ring_wait_seconds_count") - value(before, "mutexd_ring_wait_seconds_count"), 1);
  } catch (error) {
    throw new Error(`${(error as Error).message}\n${ring.logTails()}`, { cause: error });
  } finally {
    await ring.remove();
  }
});

test("`mutexd status --watch --count 2`: two refreshes, one JSON line each with --json; no screen clearing when stdout is not a terminal; --count without --watch is a usage error", { timeout: 60_000 }, async () => {
  const c = await startCluster();
  try {
    const run = async (args: string[]) => {
      const proc = startMutexd(["status", "--config", c.file, ...args]);
      return { code: await proc.exited, stdout: proc.stdout(), stderr: proc.stderr() };
    };
    const json = await run(["--watch", "--count", "2", "--json"]);
    assert.equal(json.code, 0, json.stderr);
    const lines = json.stdout.trimEnd().split("\n");
    assert.equal(lines.length, 2, json.stdout);
    for (const line of lines) assert.equal(JSON.parse(line).shownFrom, c.urls.p1);

    const table = await run(["--watch", "--count", "2"]);
    assert.equal(table.code, 0, table.stderr);
    assert.equal(table.stdout.match(/^SERVERS$/gm)?.length, 2, table.stdout);
    assert.ok(!table.stdout.includes("\x1b["), "a pipe gets no terminal escapes");

    const once = await run(["--json"]);
    assert.equal(once.code, 0, once.stderr);
    assert.equal(JSON.parse(once.stdout).shownFrom, c.urls.p1, "--json without --watch is one document, as before");

    const misuse = await run(["--count", "2"]);
    assert.equal(misuse.code, 2);
    assert.match(misuse.stderr, /--count needs --watch/);
  } finally {
    await c.stopAll();
  }
});
