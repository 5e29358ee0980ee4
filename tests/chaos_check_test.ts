/**
 * The chaos checker (tests/chaos/check.ts) on small hand-written histories: one good history
 * that must pass, and for every rule a history that breaks it and must be caught, so the checker
 * is shown to bite. Method: each history is a list of operations with explicit times, turned into
 * invoke + completion records as the runner writes them.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  CHAOS_SETTINGS,
  checkFile,
  checkHistory,
  formatViolation,
  grantGaps,
  pairOps,
  RING_GAP_MAX_MS,
  ringGapBoundMs,
  type Rule,
  STALL_FAULT_MS,
  type Violation,
} from "./chaos/check.ts";
import { formatSummary, summarize } from "./chaos/summary.ts";
import type { HistoryRecord, OpName } from "./chaos/history.ts";
import { HistoryWriter } from "./chaos/history.ts";
import { removeDir, tempDir } from "./_harness.ts";

type Line = [type: "ok" | "fail" | "info" | "event" | "open", op: OpName, client: string, start: number, end: number, extra?: Partial<HistoryRecord>];

/** Invoke + completion records per line; "event" is a lone info record, "open" a lone invoke. */
function history(lines: Line[]): HistoryRecord[] {
  const records: HistoryRecord[] = [];
  lines.forEach(([type, op, client, start, end, extra = {}], i) => {
    const id = i + 1;
    if (type === "event") {
      records.push({ id, type: "info", op, client, ...extra, start, end: start });
      return;
    }
    records.push({ id, type: "invoke", op, client, lock: extra.lock, node: extra.node, start });
    if (type !== "open") records.push({ id, type, op, client, ...extra, start, end });
  });
  return records.sort((a, b) => (a.end ?? a.start) - (b.end ?? b.start));
}

const L0 = { lock: "l0" };
const L1 = { lock: "l1" };
const RING = { lock: "ring" };

/** A clean run: two locks (one with a lost lock and a refused zombie write), the ring, finals. */
function good(): Line[] {
  return [
    ["ok", "fault", "nemesis", 1, 30, { fault: "kill", node: "p1" }],
    ["ok", "acquire", "c1", 0, 10, { ...L0, token: 5 }],
    ["ok", "read", "c1", 11, 12, { ...L0, token: 5, value: 0 }],
    ["ok", "write", "c1", 13, 14, { ...L0, token: 5, value: 1 }],
    ["ok", "release", "c1", 15, 20, { ...L0, token: 5 }],
    ["ok", "acquire", "c2", 5, 25, { ...L0, token: 7 }], // waited; granted after c1's release
    ["ok", "read", "c2", 26, 27, { ...L0, token: 7, value: 1 }],
    ["ok", "write", "c2", 28, 29, { ...L0, token: 7, value: 2 }],
    ["ok", "release", "c2", 30, 31, { ...L0, token: 7 }],
    ["fail", "acquire", "c3", 26, 28, { ...L0, error: "not_acquired" }],
    ["info", "acquire", "c3", 32, 40, { ...L0, error: "unreachable" }],
    // l1: c1 is told it lost the lock (45) before c2's grant (50); its late write is refused.
    ["ok", "acquire", "c1", 40, 41, { ...L1, token: 9 }],
    ["ok", "read", "c1", 42, 43, { ...L1, token: 9, value: 0 }],
    ["event", "lost", "c1", 45, 45, { ...L1, token: 9 }],
    ["ok", "acquire", "c2", 42, 50, { ...L1, token: 10 }],
    ["ok", "read", "c2", 51, 52, { ...L1, token: 10, value: 0 }],
    ["ok", "write", "c2", 53, 54, { ...L1, token: 10, value: 1 }],
    ["fail", "write", "c1", 55, 56, { ...L1, token: 9, value: 1, fault: "zombie", error: "stale" }],
    ["ok", "release", "c2", 57, 58, { ...L1, token: 10 }],
    ["ok", "release", "c1", 60, 61, { ...L1, token: 9 }],
    // ring: two sections in turn; a third whose put is unknown.
    ["ok", "ring-enter", "q0", 0, 5, { ...RING, node: "r1", token: 1 }],
    ["ok", "ring-read", "q0", 6, 6, { ...RING, token: 1, value: 0 }],
    ["ok", "ring-put", "q0", 7, 9, { ...RING, token: 1, value: 1 }],
    ["ok", "ring-release", "q0", 10, 11, { ...RING, token: 1 }],
    ["ok", "ring-enter", "q1", 3, 12, { ...RING, node: "r2", token: 2 }],
    ["ok", "ring-read", "q1", 13, 13, { ...RING, token: 2, value: 1 }],
    ["ok", "ring-put", "q1", 14, 15, { ...RING, token: 2, value: 2 }],
    ["ok", "ring-release", "q1", 16, 17, { ...RING, token: 2 }],
    ["ok", "ring-enter", "q2", 18, 19, { ...RING, node: "r3", token: 4 }],
    ["info", "ring-put", "q2", 20, 25, { ...RING, token: 4, value: 3, error: "unreachable" }],
    ["ok", "ring-release", "q2", 26, 27, { ...RING, token: 4 }],
    ["ok", "liveness", "final", 70, 71, { ...L0, token: 20 }],
    ["ok", "liveness", "final", 70, 72, { node: "r1", token: 21 }],
    ["ok", "final", "final", 80, 80, { ...L0, value: 2 }],
    ["ok", "final", "final", 80, 80, { ...L1, value: 1 }],
    ["ok", "final", "final", 81, 81, { ...RING, node: "r1", value: 3 }],
    ["ok", "final", "final", 81, 81, { ...RING, node: "r2", value: 3 }],
    ["ok", "final", "final", 81, 81, { ...RING, node: "r3", value: 3 }],
  ];
}

/** The good history with the lines of `from` (by index) replaced or removed. */
function mutate(changes: Record<number, Line | null>, extra: Line[] = []): HistoryRecord[] {
  const lines = good().map((line, i) => (i in changes ? changes[i] : line)).filter((l): l is Line => l !== null);
  return history([...lines, ...extra]);
}

function rules(records: HistoryRecord[]): Rule[] {
  return checkHistory(records).violations.map((v) => v.rule);
}

test("chaos checker: a clean history passes (a lost lock, a refused zombie write, an unknown ring put)", () => {
  const result = checkHistory(history(good()));
  assert.deepEqual(result.violations, []);
  assert.equal(result.stats["acquire:ok"], 4);
});

test("chaos checker: a token granted twice on one lock is caught", () => {
  assert.deepEqual(rules(mutate({ 5: ["ok", "acquire", "c2", 5, 25, { ...L0, token: 5 }] })), ["token-order"]);
});

test("chaos checker: a token below one granted before it was invoked is caught", () => {
  // c2's grant (token 4) was invoked at 16, after c1's grant (token 5) completed at 10.
  const found = rules(mutate({ 5: ["ok", "acquire", "c2", 16, 25, { ...L0, token: 4 }] }));
  assert.deepEqual(found, ["token-order"]);
  // Concurrent acquires may complete in either order: no violation then.
  assert.deepEqual(rules(mutate({ 5: ["ok", "acquire", "c2", 5, 25, { ...L0, token: 4 }] })), []);
});

test("chaos checker: two holders at once are caught, with the offending window", () => {
  // c2 granted at 14, before c1 invoked its release at 15.
  const records = mutate({ 5: ["ok", "acquire", "c2", 5, 14.5, { ...L0, token: 7 }] });
  const { violations } = checkHistory(records);
  assert.deepEqual(violations.map((v) => v.rule), ["mutex"]);
  const text = formatViolation(violations[0], records);
  assert.match(text, /VIOLATION mutex \(l0\): c2 was granted token 7 .* while c1 held token 5/);
  assert.match(text, /> .*ok\s+acquire\s+c2/, "the offending grant is marked");
  assert.match(text, /fault=kill/, "faults in the window are shown");
});

test("chaos checker: a lock reported lost only after the next grant is an overlap", () => {
  assert.deepEqual(rules(mutate({ 13: ["event", "lost", "c1", 50.5, 50.5, { ...L1, token: 9 }] })), ["mutex"]);
});

test("chaos checker: a hold never released overlaps every later grant", () => {
  assert.deepEqual(rules(mutate({ 4: null })), ["mutex"]);
});

test("chaos checker: a guarded counter that is not exact is caught", () => {
  assert.deepEqual(rules(mutate({ 33: ["ok", "final", "final", 80, 80, { ...L0, value: 1 }] })), ["resource"]);
  assert.deepEqual(rules(mutate({ 33: ["ok", "final", "final", 80, 80, { ...L0, value: 3 }] })), ["resource"]);
  assert.deepEqual(rules(mutate({ 33: null })), ["history"], "no final read: cannot be checked");
});

test("chaos checker: ring nodes that end with different counters are caught", () => {
  const found = rules(mutate({ 37: ["ok", "final", "final", 81, 81, { ...RING, node: "r3", value: 2 }] }));
  assert.deepEqual(found, ["ring-counter"]);
});

test("chaos checker: a lost ring update (two acknowledged increments wrote one value) is caught", () => {
  const found = rules(mutate({
    25: ["ok", "ring-read", "q1", 13, 13, { ...RING, token: 2, value: 0 }],
    26: ["ok", "ring-put", "q1", 14, 15, { ...RING, token: 2, value: 1 }],
    29: ["fail", "ring-put", "q2", 20, 25, { ...RING, token: 4, value: 2, error: "not_in_section" }],
    35: ["ok", "final", "final", 81, 81, { ...RING, node: "r1", value: 1 }],
    36: ["ok", "final", "final", 81, 81, { ...RING, node: "r2", value: 1 }],
    37: ["ok", "final", "final", 81, 81, { ...RING, node: "r3", value: 1 }],
  }));
  // The duplicate value, the value not rising with the fence, and each of three nodes below 2.
  assert.deepEqual(found, Array(5).fill("ring-counter"));
});

test("chaos checker: ring counters below the acknowledged increments, or fences out of order, are caught", () => {
  const low = (node: string): Line => ["ok", "final", "final", 81, 81, { ...RING, node, value: 1 }];
  assert.deepEqual(rules(mutate({ 35: low("r1"), 36: low("r2"), 37: low("r3") })), ["ring-counter", "ring-counter", "ring-counter"]);
  // q1's section (invoked at 3) completes at 12 with fence 2; a later section with fence 2 again.
  const found = rules(mutate({ 28: ["ok", "ring-enter", "q2", 18, 19, { ...RING, node: "r3", token: 2 }] }));
  assert.ok(found.includes("token-order"), `got ${found}`);
});

test("chaos checker: two ring sections at once are caught", () => {
  // q1 granted at 9.5 while q0 still held its section (release invoked at 10).
  const found = rules(mutate({ 24: ["ok", "ring-enter", "q1", 3, 9.5, { ...RING, node: "r2", token: 2 }] }));
  assert.deepEqual(found, ["mutex"]);
});

test("chaos checker: a ring section ends for its client at its own lease end, even when the runner processes the loss later", () => {
  // q0's section: granted at 100, its lease ends at 2,100 (client's clock); a busy runner
  // processes the node's "ended" notice only at 2,290, after q1's grant at 2,289.
  const sections = (q1GrantMs: number): Line[] => [
    ["ok", "ring-enter", "q0", 0, 100, { ...RING, node: "r1", token: 1, leaseEnd: 2_100 }],
    ["event", "ring-lost", "q0", 2_290, 2_290, { ...RING, node: "r1", token: 1 }],
    ["ok", "ring-enter", "q1", 50, q1GrantMs, { ...RING, node: "r2", token: 2, leaseEnd: q1GrantMs + 1_000 }],
    ["ok", "ring-release", "q1", q1GrantMs + 10, q1GrantMs + 20, { ...RING, node: "r2", token: 2 }],
  ];
  const mutexOf = (lines: Line[]) => checkHistory(history(lines)).violations.filter((v) => v.rule === "mutex");
  assert.deepEqual(mutexOf(sections(2_289)), []);
  const early = mutexOf(sections(2_000));
  assert.equal(early.length, 1, "a grant before the holder's own lease end is caught");
  assert.match(early[0].message, /its own lease ended at 2100/);
});

test("chaos checker: a lock ends for its client at its session's lease end, which the loss notice carries (chaos seed 251)", () => {
  // c3 granted at 100; its session's lease ended at 2,100 by its clock (no keepalive got through,
  // the runner stalled); the runner hears of the loss only at 2,290, after c0's grant at 2,289.
  const holds = (c0GrantMs: number): Line[] => [
    ["ok", "acquire", "c3", 0, 100, { ...L0, token: 1 }],
    ["event", "lost", "c3", 2_290, 2_290, { ...L0, token: 1, leaseEnd: 2_100 }],
    ["ok", "acquire", "c0", 50, c0GrantMs, { ...L0, token: 2 }],
    ["ok", "release", "c0", c0GrantMs + 10, c0GrantMs + 20, { ...L0, token: 2 }],
  ];
  const mutexOf = (lines: Line[]) => checkHistory(history(lines)).violations.filter((v) => v.rule === "mutex");
  assert.deepEqual(mutexOf(holds(2_289)), []);
  const early = mutexOf(holds(2_000));
  assert.equal(early.length, 1, "a grant before the holder's lease end is caught, however late the notice");
  assert.match(early[0].message, /its own lease ended at 2100/);
});

test("chaos checker: no grant after the final heal is a liveness violation", () => {
  assert.deepEqual(rules(mutate({ 31: ["fail", "liveness", "final", 70, 90, { ...L0, error: "not_acquired" }] })), ["liveness"]);
});

test("chaos checker: a single fault during which no lock was granted for longer than its bound is a grant-gap violation", () => {
  // An arbiter down from 100 to 2,000 ms; the probe granted every 50 ms except a 1.5 s hole after the kill.
  const grantsEvery = (fromMs: number, toMs: number): Line[] =>
    Array.from({ length: Math.floor((toMs - fromMs) / 50) }, (_, i): Line => ["ok", "probe", "probe", fromMs + i * 50, fromMs + i * 50 + 1, { lock: "probe", token: 1_000 + fromMs + i }]);
  const killArbiter: Line = ["ok", "fault", "nemesis", 100, 2_000, { fault: "kill", node: "a1", step: "kill-arbiter" }];
  const gapless = checkHistory(history([killArbiter, ...grantsEvery(0, 4_000)]));
  assert.deepEqual(gapless.violations.map((v) => v.rule).filter((r) => r === "grant-gap"), []);
  const holed = checkHistory(history([killArbiter, ...grantsEvery(0, 100), ...grantsEvery(1_600, 4_000)]));
  const gap = holed.violations.find((v) => v.rule === "grant-gap");
  assert.ok(gap, "a 1.5 s stop during an arbiter fault is caught");
  assert.match(gap.message, /no grant for 15\d\d ms during kill-arbiter of a1 \(bound 1000 ms\)/);
  // Two faults at once owe safety only.
  const doubleStep: Line = ["ok", "fault", "nemesis", 100, 2_000, { fault: "kill", node: "a1", step: "double" }];
  const double = checkHistory(history([doubleStep, ...grantsEvery(0, 100), ...grantsEvery(1_600, 4_000)]));
  assert.equal(double.violations.filter((v) => v.rule === "grant-gap").length, 0);
});

/** Grants (probe grants, or ring sections at r2) every 50 ms from `fromMs` to `toMs`. */
function grantsEvery(fromMs: number, toMs: number, op: "probe" | "ring-enter" = "probe"): Line[] {
  const extra = op === "probe" ? { lock: "probe" } : { ...RING, node: "r2" };
  return Array.from({ length: Math.floor((toMs - fromMs) / 50) }, (_, i): Line => [
    "ok", op, op === "probe" ? "probe" : "q1", fromMs + i * 50, fromMs + i * 50 + 1, { ...extra, token: 1_000 + fromMs + i },
  ]);
}
const gapRules = (lines: Line[]) => checkHistory(history(lines)).violations.filter((v) => v.rule === "grant-gap");

test("chaos checker: grant-gap bites for a network fault, by its target: a cut of the serving server owes a takeover, of the arbiter 1 s", () => {
  // The serving p1 cut off from 100 to 2,000 ms; the probe's grants stop from 100 to 1,600.
  const cut = (node: string, primary?: boolean): Line =>
    ["ok", "fault", "nemesis", 100, 2_000, { fault: "cut", node, step: "isolate-lock", detail: `cut ${node} | rest`, ...(primary === undefined ? {} : { primary }) }];
  const holed = [...grantsEvery(0, 100), ...grantsEvery(1_600, 4_000)];
  assert.deepEqual(gapRules([cut("p1", true), ...holed]), [], "1.5 s is within a takeover's 4 s");
  const arbiter = gapRules([cut("a1"), ...holed]);
  assert.equal(arbiter.length, 1, "the same hole with the arbiter cut off is caught");
  assert.match(arbiter[0].message, /no grant for 15\d\d ms during isolate-lock of a1 \(cut a1 \| rest\) \(bound 1000 ms\)/);
  // A takeover that never comes: 5 s without a grant, past the heal + 1 s: the gap runs to the next grant.
  const stuck = gapRules([cut("p1", true), ...grantsEvery(0, 100), ...grantsEvery(5_100, 6_000)]);
  assert.equal(stuck.length, 1);
  assert.match(stuck[0].message, /no grant for 50\d\d ms during isolate-lock of p1/);
  // cut-arbiter: a server cut from the arbiter only must not be noticed.
  const cutArbiter: Line = ["ok", "fault", "nemesis", 100, 2_000, { fault: "cut", node: "p1", step: "cut-arbiter", primary: true }];
  assert.equal(gapRules([cutArbiter, ...holed]).length, 1);
});

test("chaos checker: a wall-clock step owes the arbiter's bound on a lock node; next to another fault of the service it owes safety only", () => {
  const step = (node: string, fromMs = 100): Line => ["ok", "fault", "nemesis", fromMs, 2_000, { fault: "clock-step", node, step: "clock-step" }];
  const holed = [...grantsEvery(0, 100), ...grantsEvery(1_600, 4_000)];
  const found = gapRules([step("p1"), ...holed]);
  assert.equal(found.length, 1, "a 1.5 s hole after a clock step of p1 is caught");
  assert.match(found[0].message, /during clock-step of p1 .*\(bound 1000 ms\)/);
  // p1 killed at 50 ms (the lock track), its clock stepped at 100 ms: the step is the second fault.
  const kill: Line = ["ok", "fault", "nemesis", 50, 1_000, { fault: "kill", node: "p1", step: "kill-server", primary: true }];
  assert.deepEqual(gapRules([kill, step("p1"), ...holed]), []);
  const gap = grantGaps(pairOps(history([kill, step("p1"), ...holed]))).find((g) => g.fault.step === "clock-step")!;
  assert.equal(gap.safetyOnly, "p1 faulted too (kill-server)");
});

test("chaos checker: grant-gap bites for a ring fault, from the ring's settings; with the arbiter faulted too it owes safety only", () => {
  assert.equal(RING_GAP_MAX_MS, ringGapBoundMs(CHAOS_SETTINGS));
  // A longer token-loss timeout moves the bound with it (the derivation reads the settings).
  assert.equal(ringGapBoundMs({ ...CHAOS_SETTINGS, tokenLossMs: 10_000 }) - ringGapBoundMs({ ...CHAOS_SETTINGS, tokenLossMs: 9_000 }), 1_000);
  const isolate: Line = ["ok", "fault", "nemesis", 1_000, 3_000, { fault: "cut", node: "r4", step: "ring-isolate" }];
  const holeEndMs = 1_000 + RING_GAP_MAX_MS + 500;
  const lines = [isolate, ...grantsEvery(0, 1_000, "ring-enter"), ...grantsEvery(holeEndMs, holeEndMs + 1_000, "ring-enter")];
  const found = gapRules(lines);
  assert.equal(found.length, 1, "a ring that stops past its bound after one node is cut off is caught (r4: every ring node counts)");
  assert.match(found[0].message, new RegExp(`no grant for ${RING_GAP_MAX_MS + 501} ms during ring-isolate of r4`));
  const within = [isolate, ...grantsEvery(0, 1_000, "ring-enter"), ...grantsEvery(1_000 + RING_GAP_MAX_MS - 500, holeEndMs + 1_000, "ring-enter")];
  assert.deepEqual(gapRules(within), []);
  // The arbiter paused meanwhile (the lock track): two faults on the ring's view change.
  const arbiterPause: Line = ["ok", "fault", "nemesis", 2_000, 2_500, { fault: "pause", node: "a1", step: "pause-arbiter" }];
  assert.deepEqual(gapRules([...lines, arbiterPause, ...grantsEvery(0, holeEndMs + 1_000)]), []);
  const ringGap = grantGaps(pairOps(history([...lines, arbiterPause]))).find((g) => g.fault.node === "r4")!;
  assert.equal(ringGap.boundMs, undefined);
  assert.match(ringGap.safetyOnly!, /a1 faulted too/);
});

test("chaos checker: a long event-loop stall of another node of the service is a second fault (the gap owes safety only); the runner's stalls are taken off the gap", () => {
  const cutArbiter: Line = ["ok", "fault", "nemesis", 100, 2_000, { fault: "cut", node: "p1", step: "cut-arbiter", primary: true }];
  const holed = [cutArbiter, ...grantsEvery(0, 100), ...grantsEvery(1_600, 4_000)];
  const stall = (node: string, ms: number): Line => ["event", "stall", "node-log", 500, 500 + ms, { node, value: ms }];
  // b1 silent for replicationTimeoutMs: p1 drops it out of sync and cannot tell the arbiter.
  assert.deepEqual(gapRules([...holed, stall("b1", STALL_FAULT_MS.lock)]), []);
  const gap = grantGaps(pairOps(history([...holed, stall("b1", 401)]))).find((g) => g.fault.node === "p1")!;
  assert.equal(gap.boundMs, undefined);
  assert.equal(gap.safetyOnly, "b1 stalled 401 ms");
  // Shorter stalls, or a stall of the faulted node itself (a pause shows as one), excuse nothing.
  assert.equal(gapRules([...holed, stall("b1", STALL_FAULT_MS.lock - 1)]).length, 1);
  assert.equal(gapRules([...holed, stall("p1", 1_000)]).length, 1);
  // The runner's own stall (the clients' process) excuses nothing: its time within the gap is taken off.
  const runner = (startMs: number, ms: number): Line => ["ok", "stall", "runner", startMs, startMs + ms, { node: "runner", value: ms }];
  assert.deepEqual(gapRules([...holed, runner(200, 600)]), [], "1.5 s less 600 ms of runner stall is within 1 s");
  const late = gapRules([...holed, runner(200, 400)]);
  assert.equal(late.length, 1);
  assert.match(late[0].message, /no grant for 15\d\d ms .*\(of it, the runner stalled 400 ms\) \(bound 1000 ms\)/);
  // A paused node's log shows the pause as a stall: that is the nemesis, not load, and excuses nothing.
  const b1Paused: Line = ["ok", "fault", "nemesis", 2_600, 3_000, { fault: "pause", node: "b1", step: "pause-short", primary: false }];
  const pauseStall: Line = ["event", "stall", "node-log", 3_050, 3_050, { node: "b1", value: 400 }];
  const s0 = summarize(pairOps(history([b1Paused, pauseStall, ...grantsEvery(0, 4_000)])), []);
  assert.deepEqual(s0.stalls, []);
  // The table counts the load's stalls per process and names the excused fault.
  const s = summarize(pairOps(history([...holed, stall("b1", 401), runner(3_000, 120)])), []);
  assert.deepEqual(s.stalls.map((r) => [r.kind, r.count, r.maxMs]), [["b1", 1, 401], ["runner", 1, 120]]);
  assert.match(formatSummary(s).join("\n"), /cut-arbiter .*1 safety only: b1 stalled 401 ms/);
});

test("chaos checker: a lock fault while the serving server's backup was out of sync (its log's last word) is a second fault", () => {
  // p1 serves; killed at 100, back at 2,000; no grant for 5 s (no takeover: b1 was out of sync).
  const kill: Line = ["ok", "fault", "nemesis", 100, 2_000, { fault: "kill-serving", node: "p1", step: "kill-server", primary: true }];
  const lines = [kill, ...grantsEvery(0, 100), ...grantsEvery(5_100, 6_000)];
  const sync = (atMs: number, value: number): Line => ["event", "sync", "node-log", atMs, atMs, { node: "p1", value }];
  assert.equal(gapRules(lines).length, 1, "a takeover owed and none came");
  assert.deepEqual(gapRules([sync(20, 1), sync(50, 0), ...lines]), [], "b1 out of sync when p1 died: two faults");
  assert.equal(grantGaps(pairOps(history([sync(50, 0), ...lines]))).find((g) => g.fault.node === "p1")!.safetyOnly, "b1 out of sync at the fault (p1's log)");
  // The arbiter killed, then the primary drops its starved backup out of sync: two faults.
  const killArbiter: Line = ["ok", "fault", "nemesis", 100, 2_000, { fault: "kill", node: "a1", step: "kill-arbiter" }];
  const arbiterLines = [killArbiter, ...grantsEvery(0, 500), ...grantsEvery(2_200, 3_000)];
  assert.equal(gapRules(arbiterLines).length, 1);
  assert.deepEqual(gapRules([...arbiterLines, sync(600, 0)]), []);
  assert.equal(grantGaps(pairOps(history([...arbiterLines, sync(600, 0)]))).find((g) => g.fault.node === "a1")!.safetyOnly, "b1 out of sync during the fault (p1's log)");
  assert.equal(gapRules([sync(20, 0), sync(50, 1), ...lines]).length, 1, "back in sync before the fault: a takeover is owed");
  // The paused primary itself finds its backup silent when it resumes: the pause's own doing.
  const pauseP1: Line = ["ok", "fault", "nemesis", 100, 2_000, { fault: "pause-serving", node: "p1", step: "pause-long", primary: true }];
  assert.equal(gapRules([pauseP1, sync(1_990, 0), ...grantsEvery(0, 100), ...grantsEvery(5_100, 6_000)]).length, 1);
  // A fault of the out-of-sync backup itself is still a single fault.
  const killBackup: Line = ["ok", "fault", "nemesis", 100, 2_000, { fault: "kill", node: "b1", step: "kill-server", primary: false }];
  assert.equal(gapRules([sync(50, 0), killBackup, ...grantsEvery(0, 100), ...grantsEvery(5_100, 6_000)]).length, 1);
});

test("chaos checker: checkFile reads a history file and exits 1 on a violation, 0 on a clean one", () => {
  const dir = tempDir("mutexd-chaos-check-");
  const write = (name: string, records: HistoryRecord[]) => {
    const writer = new HistoryWriter(join(dir, name));
    for (const r of records) writer.write(r);
    return writer.file;
  };
  try {
    const out: string[] = [];
    assert.equal(checkFile(write("good.jsonl", history(good())), (l) => out.push(l)), 0);
    assert.match(out.at(-1)!, /OK, no violation/);
    const bad = write("bad.jsonl", mutate({ 4: null }));
    out.length = 0;
    assert.equal(checkFile(bad, (l) => out.push(l)), 1);
    assert.ok(out.some((l) => l.startsWith("VIOLATION mutex (l0)")), out.join("\n"));
  } finally {
    removeDir(dir);
  }
});

test("chaos summary: the end-of-run table's counts and recovery times from a hand-written history", () => {
  // Probe grants every 50 ms, except while the serving p1 is down (100 → 700 ms).
  const probes = (fromMs: number, toMs: number): Line[] =>
    Array.from({ length: Math.floor((toMs - fromMs) / 50) }, (_, i): Line => ["ok", "probe", "probe", fromMs + i * 50, fromMs + i * 50 + 1, { lock: "probe", token: 1_000 + fromMs + i }]);
  const lines: Line[] = [
    ["ok", "fault", "nemesis", 100, 1_000, { fault: "kill-serving", node: "p1", step: "kill-server", primary: true }],
    ["ok", "fault", "nemesis", 1_500, 1_700, { fault: "pause", node: "b1", step: "pause-short", primary: false }],
    ["ok", "fault", "nemesis", 2_000, 3_000, { fault: "kill", node: "r2", step: "ring-kill" }],
    ["info", "fault", "nemesis", 5_000, 5_100, { fault: "pause", node: "r1", step: "ring-pause", error: "restart not healthy" }],
    ...probes(0, 100),
    ...probes(700, 4_000),
    ["ok", "ring-enter", "q0", 1_900, 1_950, { ...RING, node: "r1", token: 1 }],
    ["ok", "ring-release", "q0", 1_960, 1_970, { ...RING, token: 1 }],
    ["ok", "ring-enter", "q1", 2_100, 2_500, { ...RING, node: "r3", token: 2 }], // invoked after the r2 kill
    ["ok", "ring-release", "q1", 2_600, 2_610, { ...RING, token: 2 }],
    ["info", "ring-enter", "q2", 2_050, 3_000, { ...RING, node: "r2", error: "unreachable" }],
    ["ok", "acquire", "c0", 10, 20, { ...L0, token: 5 }],
    ["fail", "write", "cli-l0", 30, 40, { ...L0, token: 4, value: 1, error: "stale" }],
    ["ok", "liveness", "final", 6_000, 6_010, { ...L0, token: 9 }],
  ];
  const ops = pairOps(history(lines));
  const violations: Violation[] = [{ rule: "mutex", message: "x", ops: [] }, { rule: "mutex", message: "y", ops: [] }, { rule: "resource", message: "z", ops: [] }];
  const s = summarize(ops, violations);
  assert.deepEqual(s.faults, [
    { kind: "kill-server/kill-serving", count: 1, unhealed: 0 },
    { kind: "pause-short/pause", count: 1, unhealed: 0 },
    { kind: "ring-kill/kill", count: 1, unhealed: 0 },
    { kind: "ring-pause/pause", count: 1, unhealed: 1 },
  ]);
  assert.deepEqual(s.operations, [
    { clients: "final", ok: 1, fail: 0, info: 0 },
    { clients: "lock", ok: 1, fail: 0, info: 0 },
    { clients: "lock (cli)", ok: 0, fail: 1, info: 0 },
    { clients: "probe", ok: 2 + 66, fail: 0, info: 0 },
    { clients: "ring", ok: 4, fail: 0, info: 1 },
  ]);
  assert.deepEqual(s.violations, [{ rule: "mutex", count: 2 }, { rule: "resource", count: 1 }]);
  // The r2 kill (2,000 → 3,000) ran while nothing else did; no two tracks overlapped.
  assert.deepEqual(s.overlaps, []);
  const both = summarize(pairOps(history([...lines, ["ok", "fault", "nemesis", 2_500, 2_700, { fault: "pause", node: "a1", step: "pause-arbiter" }], ["ok", "fault", "nemesis", 2_600, 2_650, { fault: "kill", node: "cli-l0", step: "client-kill" }]])), []);
  assert.deepEqual(both.overlaps, [{ tracks: "client + lock", count: 1 }, { tracks: "client + ring", count: 1 }, { tracks: "lock + ring", count: 1 }]);
  assert.match(formatSummary(both).join("\n"), /lock \+ ring\s+1/);
  // Takeover: only the serving server's fault; the first probe asked for after it: 700 → 701.
  assert.deepEqual(s.takeover, [{ kind: "kill-server", count: 1, none: 0, medianMs: 601, maxMs: 601 }]);
  // Ring: the r2 kill recovered when q1's section (invoked at 2,100) was granted at 2,500. After
  // the r1 pause nobody was granted a section: counted under `none`, with no time.
  assert.deepEqual(s.ring, [{ kind: "ring-kill", count: 1, none: 0, medianMs: 500, maxMs: 500 }, { kind: "ring-pause", count: 0, none: 1 }]);
  // Granting stopped: p1's fault 100 → 700 (the probe's next grant ends at 701: 601 ms);
  // b1's pause: 50 ms; the ring kill: from 2,000 to the grant at 2,500, then none to the last ask (2,100).
  const gaps = Object.fromEntries(s.gaps.map((g) => [g.kind, [Math.round(g.maxMs!), g.boundMs]]));
  assert.deepEqual(gaps, { "kill-server": [601, 4_000], "pause-short": [50, 1_500], "ring-kill": [100, RING_GAP_MAX_MS] });
  const text = formatSummary(s).join("\n");
  assert.match(text, /kill-server\s+1\s+601 ms\s+601 ms\s+0/);
  assert.match(text, /lock \(cli\)\s+0\s+1\s+0/);
});
