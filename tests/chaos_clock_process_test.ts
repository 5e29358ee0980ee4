/**
 * `make chaos` with clock faults only (tests/chaos/run.ts --only clock-step,clock-rate, on
 * loopback: clocks need no namespaces): the real cluster with one node's whole clock slow for the
 * whole run and wall-clock steps of seconds to hours, forward and back, on the other nodes. It
 * proves each kind is applied, that a step reaches the node (its log's wall-clock times jump,
 * while each process's monotonic `uptimeMs` goes on), that every step is healed, and that the
 * history then has no violation and the liveness phase passed: leases and timeouts run on the
 * monotonic clock, which a step does not touch.
 * Skipped, with the reason, where libfaketime is missing.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import process from "node:process";
import { runChaos } from "./_chaos_run.ts";
import { faketimeLibrary } from "./chaos/clock.ts";

const FAKETIME = faketimeLibrary();
const UNAVAILABLE = "why" in FAKETIME ? FAKETIME.why : null;
/** Seed 7's clock track steps a1 and p1 back 2 h, then r2 forward 31 min, within 12 s; r3 runs 3.6 % slow. */
const SEED = 7;
const SECONDS = 12;

if (UNAVAILABLE) process.stderr.write(`chaos_clock_process_test skipped: ${UNAVAILABLE}\n`);

test(
  "chaos with clock faults: steps applied and healed, a step seen in the node's log, a rated node, no violation, liveness after heal",
  { timeout: 60_000, skip: UNAVAILABLE ?? false },
  async () => {
    const runStartMs = Date.now();
    let logs: NodeLogLine[] = [];
    const { code, runner } = await runChaos(
      [
        "--network",
        "loopback",
        "--seed",
        String(SEED),
        "--seconds",
        String(SECONDS),
        "--only",
        "clock-step,clock-rate",
      ],
      55_000,
      (dir) => (logs = nodeLogLines(join(dir, "logs"))),
    );
    const runEndMs = Date.now();
    const out = runner.stdout();
    assert.equal(code, 0, `exit ${code}\n${out}\n${runner.stderr()}`);
    assert.match(out, /^clock rates for the whole run, monotonic clock too: \w+ x0\.\d+$/m, "a rated node, slow");
    assert.match(out, /\[clock-step\]/);
    // Every step was healed by its step: the clock back to real time.
    const applied = out.match(/^\+ *[\d.]+s @ clock \w+ [+-]\d+ s/gm)?.length ?? 0;
    const healed = out.match(/^\+ *[\d.]+s ~ clock +\w+ back to real time/gm)?.length ?? 0;
    assert.ok(applied >= 2 && healed === applied, `${applied} clock steps, ${healed} healed`);
    // A step reached a node: a log line of it carries a wall-clock time outside the run by a minute or more.
    const minuteMs = 60_000;
    assert.ok(
      logs.some(({ tsMs }) => tsMs < runStartMs - minuteMs || tsMs > runEndMs + minuteMs),
      "no node logged a stepped time",
    );
    // Through the steps, each process's lines keep their order on the monotonic clock (uptimeMs).
    assert.ok(
      logs.length > 0 && logs.every((line) => Number.isSafeInteger(line.uptimeMs)),
      "every node log line has uptimeMs",
    );
    const backwards = logs.filter((line, i) =>
      i > 0 && line.start === logs[i - 1].start && line.uptimeMs < logs[i - 1].uptimeMs
    );
    assert.deepEqual(backwards, [], "uptimeMs went back within a process");
    assert.match(out, /liveness:ok=/);
    assert.doesNotMatch(out, /liveness:fail/);
    assert.match(out, /check: OK, no violation/);
  },
);

interface NodeLogLine {
  /** Which process of which node: the log file and the supervisor's `--- start N` line above it. */
  start: string;
  tsMs: number;
  uptimeMs: number;
}

/** Every JSON line of the nodes' logs (clients' logs have none), in file order. */
function nodeLogLines(logs: string): NodeLogLine[] {
  const lines: NodeLogLine[] = [];
  for (const name of readdirSync(logs)) {
    let start = name;
    for (const line of readFileSync(join(logs, name), "utf8").split("\n")) {
      if (line.startsWith("--- start")) start = `${name} ${line}`;
      if (!line.startsWith("{")) continue;
      const parsed = JSON.parse(line) as { ts: string; uptimeMs: number };
      lines.push({ start, tsMs: Date.parse(parsed.ts), uptimeMs: parsed.uptimeMs });
    }
  }
  return lines;
}
