/**
 * What the ring's section announcement costs (docs/ring-view.md step 7: a holder sends `section`
 * to the other voters at each grant). Two 3-node rings run side by side on loopback with the
 * default settings: one of this tree, one of a copy whose ring node leaves out the announcement
 * (its `sectionGranted` effect taken out, on the bench side only). Rounds alternate between them,
 * `--sections` uncontended sections (lock, release) at r1 per round; the CPU time of the ring's
 * three node processes (/proc/PID/stat) over its own rounds, divided by its sections, gives µs of
 * CPU per section; the ratio of the two is taken in one run, so the machine's load hits both.
 *
 *   bun tests/bench/section_announce_cost.ts [--sections 200] [--rounds 6]
 *
 * Stops its processes by PID and removes its folders (the copy too).
 */
import process from "node:process";
import { cpSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { removeDir, ROOT, tempDir } from "../_harness.ts";
import { makeRing, type RingCluster } from "../_ring_cluster.ts";
import { cpuSeconds } from "./lib/server.ts";

const { values } = parseArgs({ args: process.argv.slice(2), options: { sections: { type: "string" }, rounds: { type: "string" } } });
const sectionsPerRound = Number(values.sections ?? 200);
const rounds = Number(values.rounds ?? 6);
if (!(sectionsPerRound >= 1 && sectionsPerRound <= 10_000) || !(rounds >= 1 && rounds <= 100)) throw new Error("--sections 1..10000, --rounds 1..100");

/** A copy of this tree in `dir` whose holder does not announce its sections; returns its main.ts. */
function buildWithoutAnnouncement(dir: string): string {
  mkdirSync(dir, { recursive: true });
  for (const part of ["main.ts", "package.json", "deno.json", "bunfig.toml", "cluster", "lib"]) cpSync(join(ROOT, part), join(dir, part), { recursive: true });
  symlinkSync(join(ROOT, "node_modules"), join(dir, "node_modules"));
  const file = join(dir, "lib/core/ring/ring_sections.ts");
  const source = readFileSync(file, "utf8");
  const line = '    this.effects.push({ type: "sectionGranted", epoch: this.epoch, leaseMs: waiter.leaseMs });\n';
  if (!source.includes(line)) throw new Error("the announcement's line was not found in the copy");
  writeFileSync(file, source.replace(line, ""));
  return join(dir, "main.ts");
}

async function start(main?: string): Promise<RingCluster> {
  const ring = await makeRing({ size: 3 });
  for (const id of ring.ids) await ring.start(id, main);
  await ring.waitTokenEverywhere();
  return ring;
}

const cpuOf = (ring: RingCluster) => [...ring.procs.values()].reduce((sum, p) => sum + cpuSeconds(p.pid), 0);

const builds = tempDir("mutexd-announce-cost-");
const rings: RingCluster[] = [];
try {
  const without = buildWithoutAnnouncement(join(builds, "without"));
  const named = [["with", await start()], ["without", await start(without)]] as const;
  for (const [, ring] of named) rings.push(ring);
  const totals = new Map<string, { cpuS: number; sections: number; wallMs: number }>(named.map(([name]) => [name, { cpuS: 0, sections: 0, wallMs: 0 }]));
  for (let round = 0; round < rounds; round++) {
    for (const [name, ring] of named) {
      const client = ring.client("r1");
      const cpuBefore = cpuOf(ring);
      const startedAtMs = performance.now();
      for (let i = 0; i < sectionsPerRound; i++) await (await client.lock({ waitMs: 10_000 })).release();
      const total = totals.get(name)!;
      total.cpuS += cpuOf(ring) - cpuBefore;
      total.wallMs += performance.now() - startedAtMs;
      total.sections += sectionsPerRound;
    }
  }
  const perSection = (name: string) => (totals.get(name)!.cpuS * 1e6) / totals.get(name)!.sections;
  for (const [name] of named) {
    const t = totals.get(name)!;
    console.log(`${name.padEnd(8)} ${t.sections} sections, ${Math.round(perSection(name))} µs CPU per section (3 nodes), ${(t.wallMs / t.sections).toFixed(2)} ms wall per section`);
  }
  console.log(`ratio with / without: ${(perSection("with") / perSection("without")).toFixed(2)}× CPU per section; load ${readFileSync("/proc/loadavg", "utf8").trim()}`);
} finally {
  for (const ring of rings) await ring.remove();
  removeDir(builds);
}
