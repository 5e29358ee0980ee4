/**
 * `make chaos` on network namespaces (tests/chaos/run.ts --network netns): a short run with only
 * the network fault kinds proves that each one is applied to the real cluster (the lock service
 * and a 5-node ring, every node in its own namespace with a cluster secret and the subnet's
 * broadcast), healed, and that the history then has no violation and the liveness phase passed.
 * It also proves the run removes every namespace and link it made. Skipped, with the reason,
 * where namespaces cannot be made (not root, no `ip`).
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { test } from "node:test";
import process from "node:process";
import { runChaos } from "./_chaos_run.ts";
import { netnsUnavailable } from "./_netns.ts";
import { makeSchedule, NET_STEP_KINDS } from "./chaos/faults.ts";

const NETNS_UNAVAILABLE = netnsUnavailable();
/** A seed whose first steps hold one-way and two-way cuts, and fault r1, a1 and the serving server. */
const SEED = 7;
/** Long enough for the first step of every kind to start (9.4 s on the lock track at seed 7). */
const SECONDS = 15;
const ONLY = NET_STEP_KINDS.map((k) => k.name);

if (NETNS_UNAVAILABLE) process.stderr.write(`chaos_netns_process_test skipped: ${NETNS_UNAVAILABLE}\n`);

test("the schedule of the test's seed applies every network kind first, one-way and two-way cuts, r1 and a1 among the targets", () => {
  const schedule = makeSchedule(SEED, SECONDS, { ring: ["r1", "r2", "r3", "r4", "r5"], netnsOff: null, degradeOff: null, only: ONLY });
  const first = [...schedule.steps.lock.slice(0, 3), ...schedule.steps.ring.slice(0, 3)];
  assert.deepEqual(first.map((s) => s.name).sort(), [...ONLY].sort());
  const faults = first.flatMap((s) => s.faults);
  assert.ok(faults.some((f) => f.kind === "cut" && f.oneWay), "a one-way cut");
  assert.ok(faults.some((f) => f.kind === "cut" && !f.oneWay), "a two-way cut");
  const targets = new Set(faults.flatMap((f) => [f.target, ...(f.with ?? [])]));
  for (const id of ["r1", "a1", "serving"]) assert.ok(targets.has(id), `${id} is faulted`);
  // The loopback schedule is without them: the kinds are off with the reason.
  const loopback = makeSchedule(SEED, SECONDS, { ring: ["r1", "r2", "r3"], netnsOff: "loopback", degradeOff: "loopback" });
  for (const name of ONLY) assert.equal(loopback.off[name], "loopback");
  assert.ok([...loopback.steps.lock, ...loopback.steps.ring].every((s) => !ONLY.includes(s.name)));
});

test("chaos on namespaces: every network fault kind applied and healed, no violation, liveness after heal, nothing left behind", { timeout: 90_000, skip: NETNS_UNAVAILABLE ?? false }, async () => {
  const { code, runner } = await runChaos(["--network", "netns", "--seed", String(SEED), "--seconds", String(SECONDS), "--only", ONLY.join(",")], 80_000);
  const out = runner.stdout();
  assert.equal(code, 0, `exit ${code}\n${out}\n${runner.stderr()}`);
  assert.match(out.split("\n")[0], /network: netns 10\.213\.\d+\.0\/24 /, "line 1 names the network");
  for (const name of ONLY) assert.match(out, new RegExp(`\\[${name}\\]`), `${name} was applied`);
  assert.match(out, /\(one-way\)/);
  // Every fault was healed by its step: a mend or restore line for each cut and degrade.
  const applied = out.match(/^\+ *[\d.]+s [/%] /gm)?.length ?? 0;
  const healed = out.match(/^\+ *[\d.]+s ~ (mend|restore) /gm)?.length ?? 0;
  assert.ok(applied >= ONLY.length && healed === applied, `${applied} network faults, ${healed} healed`);
  assert.match(out, /liveness:ok=/);
  assert.doesNotMatch(out, /liveness:fail/);
  assert.match(out, /check: OK, no violation/);
  // The lab is named after the runner's PID: nothing of it is left.
  const ours = new RegExp(`\\bmxd${runner.pid}(br|n\\d|v\\d)`);
  assert.doesNotMatch(execFileSync("ip", ["netns", "list"], { encoding: "utf8" }), ours, "namespaces removed");
  assert.doesNotMatch(execFileSync("ip", ["-o", "link"], { encoding: "utf8" }), ours, "bridge and veths removed");
});
