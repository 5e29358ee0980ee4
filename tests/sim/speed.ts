/**
 * Simulator speed: simulated seconds per wall second for a 5-node ring with a primary, its
 * backup and the arbiter (kinds ring + failover, with the failover kind's clients), over a fixed
 * set of seeds with their drawn faults. Prints each repeat and the median. `--kinds lock,ring`
 * measures the earlier scenario (a single lock server).
 *
 *   deno run -A tests/sim/speed.ts [--repeats 5] [--seeds 8] [--kinds ring,failover]
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { runBatch } from "./run.ts";

const { values } = parseArgs({ args: process.argv.slice(2), options: { repeats: { type: "string" }, seeds: { type: "string" }, kinds: { type: "string" } } });
const repeats = Number(values.repeats ?? 5);
const seeds = Number(values.seeds ?? 8);
const kinds = (values.kinds ?? "ring,failover").split(",");

const rates: number[] = [];
for (let repeat = 0; repeat < repeats; repeat++) {
  const startedMs = performance.now();
  const batch = runBatch({ spec: { kinds, params: { "ring.nodes": 5 } }, startSeed: 1, runsMax: seeds });
  const wallS = (performance.now() - startedMs) / 1000;
  const rate = batch.simulatedMs / 1000 / wallS;
  rates.push(rate);
  process.stdout.write(`repeat ${repeat + 1}: ${batch.runs} seeds, ${(batch.simulatedMs / 1000).toFixed(0)} simulated s in ${wallS.toFixed(2)} s wall = ${rate.toFixed(0)}× real time${batch.failures.length ? ` (${batch.failures.length} failed)` : ""}\n`);
}
rates.sort((a, b) => a - b);
process.stdout.write(`median: ${rates[Math.floor(rates.length / 2)].toFixed(0)} simulated seconds per wall second (5-node ring + ${kinds.filter((k) => k !== "ring").join(" + ")})\n`);
