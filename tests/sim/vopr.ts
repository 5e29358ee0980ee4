/**
 * The simulator's command line (VOPR: Viewstamped Operation Replicator, TigerBeetle's name).
 *
 *   vopr.ts --seed 42                   one run, the full trace on stdout
 *   vopr.ts --many 500 [--start 1000]   a batch of every kind (or --kinds); failing seeds get
 *                                       tests/sim/failed/ (git-ignored); a summary per kind
 *   vopr.ts --replay FILE               run a saved failure again
 *
 * Options: --kinds lock,…  --safety-ms N  --heal-ms N  --seconds S (safety = heal = S/2)
 *          --faults +server-crash,-partition,none,+fo-cut=2 (=: events per second)  --set ring.nodes=5 (force a workload parameter)
 *          --verbose (every message)  --quiet  --no-save (no replay file)
 * Exit status 1 when a run fails. Line 1 of every run is its seed and fault profile.
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { failedRunPath, loadReplay, type RunSpec, saveReplay } from "./replay.ts";
import { describeKindReport, reportByKind, runBatch, runSpec } from "./run.ts";
import { kindsByName, NODE_KINDS } from "./kinds.ts";
import { allFaults } from "./profile.ts";

function usage(): string {
  const faults = allFaults(NODE_KINDS).map((f) => `  ${f.optInReason ? "+" : " "}${f.name.padEnd(16)} ${f.doc}`).join("\n");
  return `Usage: vopr.ts [--seed N | --many N [--start N] | --replay FILE] [options]\n` +
    `Options: --kinds a,b --safety-ms N --heal-ms N --seconds S --faults +x,+x=R,-y,none (R: events per second) --set kind.param=v --verbose --quiet --no-save\n` +
    `Node kinds: ${NODE_KINDS.map((k) => k.name).join(", ")}\nFaults (+ = opt-in):\n${faults}\n`;
}

/** `ring.nodes=5` → { "ring.nodes": 5 } (numbers when they look like numbers). */
function parseSets(sets: string[]): Record<string, number | string> {
  const params: Record<string, number | string> = {};
  for (const set of sets) {
    const [key, value] = set.split("=");
    if (!key || value === undefined) throw new Error(`--set wants kind.param=value, got ${set}`);
    params[key] = Number.isFinite(Number(value)) ? Number(value) : value;
  }
  return params;
}

/** Trace lines go out in blocks (a line per write is slow on long runs). */
const pendingLines: string[] = [];

function out(line: string): void {
  pendingLines.push(line);
  if (pendingLines.length >= 500) flush();
}

function flush(): void {
  if (pendingLines.length > 0) process.stdout.write(pendingLines.join("\n") + "\n");
  pendingLines.length = 0;
}

// A closed pipe (`vopr.ts --seed 1 | head`) ends the program quietly.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(0);
  throw error;
});

function main(argv: string[]): number {
  const { values } = parseArgs({
    args: argv,
    options: {
      seed: { type: "string" },
      many: { type: "string" },
      start: { type: "string" },
      replay: { type: "string" },
      kinds: { type: "string" },
      faults: { type: "string" },
      set: { type: "string", multiple: true },
      "safety-ms": { type: "string" },
      "heal-ms": { type: "string" },
      seconds: { type: "string" },
      verbose: { type: "boolean" },
      quiet: { type: "boolean" },
      "no-save": { type: "boolean" },
      help: { type: "boolean" },
    },
  });
  if (values.help) {
    process.stdout.write(usage());
    return 0;
  }
  const integer = (text: string | undefined, what: string): number | undefined => {
    if (text === undefined || text === "") return undefined;
    const value = Number(text);
    if (!Number.isSafeInteger(value) || value < 0) throw new Error(`${what} must be a non-negative integer, got ${text}`);
    return value;
  };
  const seconds = integer(values.seconds, "--seconds");
  const base: Omit<RunSpec, "seed"> = {
    kinds: values.kinds ? values.kinds.split(",") : undefined,
    safetyMs: integer(values["safety-ms"], "--safety-ms") ?? (seconds !== undefined ? seconds * 500 : undefined),
    healMs: integer(values["heal-ms"], "--heal-ms") ?? (seconds !== undefined ? seconds * 500 : undefined),
    faultOverrides: values.faults ? values.faults.split(",") : undefined,
    params: values.set ? parseSets(values.set) : undefined,
  };
  if (values.replay) {
    const file = loadReplay(values.replay);
    const result = runSpec(file.spec, { echo: out, verbose: values.verbose });
    const same = result.violation?.checker === file.violation?.checker && result.traceHash === file.traceHash;
    flush();
    process.stdout.write(`replay of ${values.replay}: ${same ? "same run (same checker, same trace hash)" : `DIFFERS (was ${file.violation?.checker ?? "pass"} ${file.traceHash}, now ${result.violation?.checker ?? "pass"} ${result.traceHash})`}\n`);
    return result.ok ? 0 : 1;
  }
  const many = integer(values.many, "--many");
  if (many !== undefined) {
    const startSeed = integer(values.start, "--start") ?? 1;
    const startedMs = performance.now();
    const batch = runBatch({
      spec: base,
      startSeed,
      runsMax: many,
      onResult(result) {
        if (!result.ok) {
          const path = failedRunPath(result.seed, base.kinds);
          if (!values["no-save"]) saveReplay(path, { ...base, seed: result.seed }, result);
          process.stdout.write(`FAIL seed=${result.seed} ${result.violation!.checker}: ${result.violation!.message}` +
            `${values["no-save"] ? "" : ` (replay: ${path})`}\n`);
        }
      },
    });
    const wallS = (performance.now() - startedMs) / 1000;
    process.stdout.write(`${batch.runs} runs from seed ${startSeed}: ${batch.failures.length} failed` +
      ` [${batch.failures.map((f) => f.seed).join(" ")}]; simulated ${(batch.simulatedMs / 1000).toFixed(0)}s in ${wallS.toFixed(1)}s wall\n`);
    const kinds = kindsByName(base.kinds).map((k) => k.name);
    for (const report of reportByKind(kinds, batch.runs, batch.failures)) process.stdout.write(`${describeKindReport(report)}\n`);
    return batch.failures.length > 0 ? 1 : 0;
  }
  // No seed given: take one from the wall clock (the only use of it) and print it on line 1.
  const seed = integer(values.seed, "--seed") ?? Date.now() % 0x1_0000_0000;
  const spec: RunSpec = { ...base, seed };
  const echo = values.quiet ? undefined : out;
  const result = runSpec(spec, { echo, verbose: values.verbose });
  flush();
  if (values.quiet) process.stdout.write(`${result.header}\n${result.lines.at(-1)}\n`);
  if (!result.ok && !values["no-save"]) {
    const path = failedRunPath(seed, base.kinds);
    saveReplay(path, spec, result);
    process.stdout.write(`replay saved: ${path}\n`);
  }
  return result.ok ? 0 : 1;
}

try {
  process.exitCode = main(process.argv.slice(2));
  flush();
} catch (error) {
  flush();
  process.stderr.write(`vopr: ${(error as Error).message}\n`);
  process.exitCode = 2;
}
