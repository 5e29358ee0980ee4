/**
 * What the ring's section announcement costs (docs/ring-view.md step 7: a holder sends `section`
 * to the other voters at a grant, unless its last announcement covers it). Two rings of `--size`
 * nodes run side by side on loopback with the default settings (lib/settings.ts, written over the
 * process tests' quick ones): one of this tree, one of a copy whose ring node leaves out the
 * announcement (its `sectionGranted` effect taken out, on the bench side only). Rounds alternate
 * between them, `--sections` sections (lock, release) per round, taken by `--clients` clients
 * spread over the nodes (r1, r2, …, round robin; one client: uncontended at r1); the CPU time of
 * the ring's node processes (/proc/PID/stat) over its own rounds, divided by its sections, gives µs
 * of CPU per section; the ratio of the two is taken in one run, so the machine's load hits both.
 *
 *   bun tests/bench/section_announce_cost.ts [--sections 200] [--rounds 6] [--size 3] [--clients 1] [--control]
 *
 * --control: the copy keeps the announcement too (both rings announce), so the ratio shows what
 * the two rings differ by without it: the bench's own noise and bias at this load.
 *
 * Stops its processes by PID and removes its folders (the copy too).
 */
import process from "node:process";
import { cpSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { connectRing } from "../../lib/client/ring_client.ts";
import { DEFAULT_SETTINGS } from "../../lib/settings.ts";
import { QUICK_RING_SETTINGS, removeDir, ROOT, tempDir } from "../_harness.ts";
import { makeRing, type RingCluster } from "../_ring_cluster.ts";
import { cpuSeconds } from "./lib/server.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    sections: { type: "string" },
    rounds: { type: "string" },
    size: { type: "string" },
    clients: { type: "string" },
    control: { type: "boolean" },
  },
});
const sectionsPerRound = Number(values.sections ?? 200);
const rounds = Number(values.rounds ?? 6);
const size = Number(values.size ?? 3);
const clients = Number(values.clients ?? 1);
if (!(sectionsPerRound >= 1 && sectionsPerRound <= 10_000) || !(rounds >= 1 && rounds <= 100)) {
  throw new Error("--sections 1..10000, --rounds 1..100");
}
if (!(size >= 3 && size <= 9) || !(clients >= 1 && clients <= 16)) throw new Error("--size 3..9, --clients 1..16");

/**
 * The process tests' quick settings (tokenLossMs 1 s, 3 s sections, …) set back to the defaults:
 * the holder leaves out an announcement within tokenLossMs / 2 of its last one, so the quick
 * tokenLossMs would announce twice as often as a deployed ring does.
 */
const DEFAULT_LINES = QUICK_RING_SETTINGS.map((line) => line.split("=")[0].trim() as keyof typeof DEFAULT_SETTINGS)
  .map((key) => `${key} = ${DEFAULT_SETTINGS[key]}`);

/** A copy of this tree in `dir` whose holder does not announce its sections (unless `keep`); returns its main.ts. */
function buildWithoutAnnouncement(dir: string, keep: boolean): string {
  mkdirSync(dir, { recursive: true });
  for (const part of ["main.ts", "package.json", "deno.json", "bunfig.toml", "cluster", "lib"]) {
    cpSync(join(ROOT, part), join(dir, part), { recursive: true });
  }
  symlinkSync(join(ROOT, "node_modules"), join(dir, "node_modules"));
  const file = join(dir, "lib/core/ring/ring_sections.ts");
  const source = readFileSync(file, "utf8");
  const line = '    this.effects.push({ type: "sectionGranted", epoch: this.epoch, leaseMs: waiter.leaseMs });\n';
  if (!source.includes(line)) throw new Error("the announcement's line was not found in the copy");
  if (!keep) writeFileSync(file, source.replace(line, ""));
  return join(dir, "main.ts");
}

/** Every ring made, started or not: the `finally` below stops their processes and removes their folders. */
const rings: RingCluster[] = [];

async function start(main?: string): Promise<RingCluster> {
  const ring = await makeRing({ size, settings: DEFAULT_LINES });
  // Before its nodes start: a node that fails to start (or a token that never comes) leaves the
  // ones started already to the `finally`, which it could not reach through a ring never returned.
  rings.push(ring);
  for (const id of ring.ids) await ring.start(id, main);
  await ring.waitTokenEverywhere();
  return ring;
}

const cpuOf = (ring: RingCluster) => [...ring.procs.values()].reduce((sum, p) => sum + cpuSeconds(p.pid), 0);

const builds = tempDir("mutexd-announce-cost-");
try {
  const without = buildWithoutAnnouncement(join(builds, "without"), values.control ?? false);
  const named = [["with", await start()], ["without", await start(without)]] as const;
  const totals = new Map<string, { cpuS: number; sections: number; wallMs: number }>(
    named.map(([name]) => [name, { cpuS: 0, sections: 0, wallMs: 0 }]),
  );
  // A client of its own each, at r1, r2, … round robin.
  const clientsOf = new Map(named.map(([name, ring]) => [
    name,
    Array.from(
      { length: clients },
      (_, c) => c === 0 ? ring.client("r1") : connectRing({ server: ring.urls[c % size], requestTimeoutMs: 10_000 }),
    ),
  ]));
  for (let round = 0; round < rounds; round++) {
    // Which ring goes first alternates, so that an order effect does not count as the announcement's.
    for (const [name, ring] of round % 2 === 0 ? named : [...named].reverse()) {
      const cpuBefore = cpuOf(ring);
      const startedAtMs = performance.now();
      // The round's sections shared out over the ring's clients.
      await Promise.all(clientsOf.get(name)!.map(async (client, c) => {
        const own = Math.floor(sectionsPerRound / clients) + (c < sectionsPerRound % clients ? 1 : 0);
        for (let i = 0; i < own; i++) await (await client.lock({ waitMs: 10_000 })).release();
      }));
      const total = totals.get(name)!;
      total.cpuS += cpuOf(ring) - cpuBefore;
      total.wallMs += performance.now() - startedAtMs;
      total.sections += sectionsPerRound;
    }
  }
  const perSection = (name: string) => (totals.get(name)!.cpuS * 1e6) / totals.get(name)!.sections;
  const wallPerSection = (name: string) => totals.get(name)!.wallMs / totals.get(name)!.sections;
  for (const [name] of named) {
    const t = totals.get(name)!;
    console.log(
      `${name.padEnd(8)} ${t.sections} sections, ${
        Math.round(perSection(name))
      } µs CPU per section (${size} nodes, ${clients} client${clients === 1 ? "" : "s"}), ${
        wallPerSection(name).toFixed(2)
      } ms wall per section`,
    );
  }
  if (values.control) {
    console.log("control: the copy announces too (the ratio is the bench's noise and bias, no announcement's cost)");
  }
  console.log(
    `ratio with / without: ${(perSection("with") / perSection("without")).toFixed(2)}× CPU per section, ${
      (wallPerSection("with") / wallPerSection("without")).toFixed(2)
    }× wall per section; load ${readFileSync("/proc/loadavg", "utf8").trim()}`,
  );
} finally {
  for (const ring of rings) await ring.remove();
  removeDir(builds);
}
