/**
 * `make bench-peers`'s table, ratios and chart (tests/bench/peers/report.ts) on fixed numbers: no
 * live peers here. Proves: cells are medians over rounds (Jain: the worst round); ratios are
 * replicated mutexd ÷ each other system; a skipped peer gets no column but a line saying why;
 * the safety row sums every round; the SVG has one bar per system and workload, scaled per
 * panel, with the values written, and escapes text; the Redis adapter's RESP codec reads every
 * reply type and never mistakes a partial reply for a whole one; the etcd adapter sends a try that
 * got no answer to the next member (F1: a write lost with a dead leader), and only then.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { cellValue, peersMarkdown, peersSvg, peersTable, ratioText, ROWS, type PeersRun } from "./bench/peers/report.ts";
import { markdown } from "./bench/lib/stats.ts";
import { encodeResp, parseResp } from "./bench/peers/redis.ts";
import { Buffer } from "node:buffer";
import { createServer, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { EtcdLockClient } from "./bench/peers/etcd.ts";

const w1 = (rate: number, serverUsPerOp: number) => ({ rate, "cycle.p50": 1000 / rate, serverUsPerOp, clientUsPerOp: 50 });
const w3 = (handoffsPerS: number, jain: number) => ({ handoffsPerS, grantsPerS: handoffsPerS, "wait.p50": 5, jain, checked: 1000, overlaps: 0, duplicates: 0 });

function fixture(): PeersRun {
  return {
    started: "2026-11-28T15:00:00.000Z",
    commit: "abc1234",
    driver: "bun 1.4.5",
    rounds: 3,
    durationMs: 10_000,
    cpus: 2,
    loadavgStart: 1.5,
    loadavgEnd: 2.25,
    systems: [
      { id: "lone", title: "mutexd lone", short: "mutexd lone", check: "ok, 6 grants", runs: { W1: [w1(4000, 100), w1(5000, 90), w1(4500, 95)], W3: [w3(4000, 1), w3(4200, 0.999), w3(4100, 1)] } },
      { id: "replicated", title: "mutexd replicated", short: "mutexd replicated", check: "ok, 6 grants", runs: { W1: [w1(2000, 300), w1(1000, 400), w1(1500, 350)], W3: [w3(1200, 1), w3(1000, 0.98), w3(1100, 1)] } },
      { id: "etcd", title: "etcd 3.4.23", short: "etcd", check: "ok, 6 grants", runs: { W1: [w1(500, 1400), w1(600, 1300), w1(700, 1200)], W3: [w3(100, 1), w3(110, 1), w3(90, 1)] } },
      { id: "redis", title: "Redis <7>", short: "Redis", skipped: "redis-server could not be installed", runs: {} },
    ],
  };
}

test("cells are medians over rounds, Jain the worst round", () => {
  const run = fixture();
  const rate = ROWS.find((r) => r.workload === "W1" && r.key === "rate")!;
  const jain = ROWS.find((r) => r.key === "jain")!;
  assert.equal(cellValue(run.systems[1], rate), 1500);
  assert.equal(cellValue(run.systems[1], jain), 0.98);
  assert.equal(cellValue(run.systems[3], rate), undefined);
});

test("ratioText: two decimals below 10, none at 10 and above, empty when a side is missing", () => {
  assert.equal(ratioText(1500, 600), "2.50×");
  assert.equal(ratioText(1100, 100), "11×");
  assert.equal(ratioText(1, undefined), "");
  assert.equal(ratioText(undefined, 5), "");
  assert.equal(ratioText(1, 0), "");
});

test("the table: a column per system that ran, replicated ÷ each other one, the skipped peer left out", () => {
  const run = fixture();
  run.systems[0].runs.W1.forEach((m, i) => (m.loadavg1 = [3, 1, 2][i]));
  const table = peersTable(run);
  assert.deepEqual(table[0], [
    "workload",
    "mutexd lone",
    "mutexd replicated",
    "etcd 3.4.23",
    "mutexd replicated ÷ mutexd lone",
    "mutexd replicated ÷ etcd",
  ]);
  const row = (label: string) => table.find((r) => r[0] === label)!;
  assert.deepEqual(row("W1 acq+rel/s (1 client)"), ["W1 acq+rel/s (1 client)", "4,500/s", "1,500/s", "600/s", "0.33×", "2.50×"]);
  assert.deepEqual(row("W1 server CPU µs per a+r").slice(4), ["3.68×", "0.27×"]);
  // The driver's CPU has no ratio: it is there to tell a client limit from a server limit.
  assert.deepEqual(row("W1 driver CPU µs per a+r").slice(1), ["50", "50", "50", "", ""]);
  assert.deepEqual(row("W3 handoffs/s (32 clients, 1 lock)").slice(1), ["4,100/s", "1,100/s", "100/s", "0.27×", "11×"]);
  assert.deepEqual(row("W3 safety: overlapping/duplicate grants").slice(1, 4), ["0 of 3,000", "0 of 3,000", "0 of 3,000"]);
  assert.deepEqual(row("correctness check of the client").slice(1, 4), ["ok, 6 grants", "ok, 6 grants", "ok, 6 grants"]);
  assert.deepEqual(row("load average (1 min) after its runs").slice(1, 4), ["1.0–3.0", "–", "–"]);
  // W2 and F1 were not run: no rows for them.
  assert.equal(table.some((r) => r[0].startsWith("W2") || r[0].startsWith("F1")), false);
});

test("the Markdown says when, which commit, the load average, and why a peer was skipped", () => {
  const text = peersMarkdown(fixture());
  assert.match(text, /2026-11-28T15:00:00.000Z at commit abc1234/);
  assert.match(text, /load average 1\.50 at the start, 2\.25 at the end/);
  assert.match(text, /Redis <7>: skipped \(redis-server could not be installed\)/);
  assert.ok(text.endsWith(markdown(peersTable(fixture()))));
});

test("the SVG: a bar per system and workload, scaled per panel, values written, text escaped", () => {
  const svg = peersSvg(fixture());
  assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.ok(svg.trimEnd().endsWith("</svg>"));
  const bars = [...svg.matchAll(/<rect x="(\d+)" y="(\d+)" width="34" height="(\d+)"/g)].map((m) => Number(m[3]));
  // 2 panels (W1, W3) × 3 systems that ran; the tallest of each panel is the full height (220).
  assert.equal(bars.length, 6);
  assert.deepEqual(bars, [220, 73, 29, 220, 59, 5]);
  for (const value of ["4,500", "1,500", "600", "4,100", "1,100", "100"]) assert.ok(svg.includes(`>${value}</text>`), value);
  assert.ok(svg.includes("W1 acq+rel/s (1 client)"));
  assert.ok(!svg.includes("Redis"), "a skipped system has no bar and no legend entry");
  const escaped = peersSvg({ ...fixture(), systems: [{ ...fixture().systems[0], title: "a<b & c" }] });
  assert.ok(escaped.includes("a&lt;b &amp; c") && !escaped.includes("a<b"));
});

test("F1 rows: the takeover's median over rounds, the kills after which the held lock was kept", () => {
  const run = fixture();
  run.systems[1].runs.F1 = [{ takeoverMedian: 640, kills: 3, kept: 3 }, { takeoverMedian: 700, kills: 3, kept: 2 }, { takeoverMedian: 650, kills: 3, kept: 3 }];
  run.systems[2].runs.F1 = [{ takeoverMedian: 1300, kills: 3, kept: 3 }];
  const table = peersTable(run);
  assert.deepEqual(table.find((r) => r[0].startsWith("F1 kill"))!.slice(1), ["–", "650", "1,300", "", "0.50×"]);
  assert.deepEqual(table.find((r) => r[0].startsWith("F1 held"))!.slice(1, 4), ["–", "8/9", "3/3"]);
});

test("RESP: encodes commands; parses every reply type, also split across reads", () => {
  assert.equal(encodeResp(["SET", "k", 12]), "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n");
  assert.equal(encodeResp(["é"]), "*1\r\n$2\r\né\r\n", "bulk lengths are in bytes");
  const wire = Buffer.from("+OK\r\n:42\r\n$-1\r\n$5\r\nhello\r\n*2\r\n:1\r\n$1\r\nx\r\n-ERR no\r\n");
  const values: unknown[] = [];
  for (let at = 0; at < wire.length;) {
    const parsed = parseResp(wire, at)!;
    values.push(parsed.value instanceof Error ? `error: ${parsed.value.message}` : parsed.value);
    at = parsed.next;
  }
  assert.deepEqual(values, ["OK", 42, null, "hello", [1, "x"], "error: ERR no"]);
  // Every cut of a reply short of its end is "not yet" (undefined), never a wrong value.
  const bulk = Buffer.from("*2\r\n$5\r\nhello\r\n:7\r\n");
  for (let cut = 1; cut < bulk.length; cut++) assert.equal(parseResp(bulk.subarray(0, cut), 0), undefined, `cut at ${cut}`);
  assert.deepEqual(parseResp(bulk, 0), { value: ["hello", 7], next: bulk.length });
  assert.throws(() => parseResp(Buffer.from("?x\r\n"), 0), /out of step/);
});

/** A stand-in etcd member on loopback: "hang" never answers (a write lost with a dead leader), "error" answers 503, "ok" a range. */
async function fakeMember(kind: "hang" | "error" | "ok") {
  const held: ServerResponse[] = [];
  let requests = 0;
  const server = createServer((req, res) => {
    requests++;
    req.resume();
    if (kind === "hang") held.push(res);
    else if (kind === "error") res.writeHead(503).end('{"error":"etcdserver: request timed out"}');
    else res.writeHead(200, { "content-type": "application/json" }).end('{"header":{"revision":"7"},"kvs":[]}');
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests: () => requests,
    async close() {
      for (const res of held) res.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

test("etcd adapter: a try with no answer goes to the next member within the request's time; an error answer does not", async () => {
  const hang = await fakeMember("hang");
  const error = await fakeMember("error");
  const ok = await fakeMember("ok");
  try {
    // F1's client: 100 ms tries in a 10 s request, starting at the member that never answers. (A
    // try of "ok" slower than 100 ms, on a loaded machine, would go round once more: so at least.)
    const answer = await new EtcdLockClient([hang.url, ok.url], 10_000, 100, 0).post<{ header: { revision: string } }>("/v3/kv/range", {});
    assert.equal(answer.header.revision, "7");
    assert.ok(hang.requests() >= 1 && ok.requests() >= 1, "tried the silent member, then the next");
    // One try is the whole request (W1–W3): no answer, or a refused connection, is an error, and
    // the next request goes to the next member. (No timing: the refused connection needs none,
    // and the silent member's try ends at its limit whatever the machine's speed.)
    let okBefore = ok.requests();
    const whole = new EtcdLockClient([hang.url, ok.url], 300, 300, 0);
    await assert.rejects(whole.post("/v3/kv/range", {}));
    assert.equal(ok.requests(), okBefore, "a try that was the whole request is not sent again");
    const gone = await fakeMember("ok");
    await gone.close();
    await assert.rejects(new EtcdLockClient([gone.url, ok.url], 10_000, 10_000, 0).post("/v3/kv/range", {}));
    assert.equal(ok.requests(), okBefore, "a refused try that was the whole request is not sent again");
    // An answer that is an error is the request's answer: not sent again.
    await assert.rejects(new EtcdLockClient([error.url, ok.url], 10_000, 100, 0).post("/v3/kv/range", {}), /503/);
    assert.equal(error.requests(), 1);
    assert.equal(ok.requests(), okBefore, "an error answer is not sent to the next member");
    okBefore = ok.requests();
    await whole.post("/v3/kv/range", {}).catch(() => {});
    assert.equal(ok.requests(), okBefore + 1, "after a failed request the next one goes to the next member");
  } finally {
    await Promise.all([hang.close(), error.close(), ok.close()]);
  }
});
