/**
 * Runs tests/chaos/run.ts as a process under the test's own runtime, for the chaos process
 * tests: bounded (SIGINT after `boundMs`, then SIGKILL), and the run's folder (history, logs,
 * data) removed afterwards, after `inspect` has read what it needs from it.
 */
import process from "node:process";
import { type Proc, removeDir, ROOT, startProcess } from "./_harness.ts";

export interface ChaosRun {
  code: number;
  runner: Proc;
}

export async function runChaos(args: string[], boundMs: number, inspect?: (dir: string) => void): Promise<ChaosRun> {
  // deno-lint-ignore no-explicit-any
  const deno = (globalThis as any).Deno;
  const argv = deno ? [deno.execPath(), "run", "-A"] : [process.execPath];
  const runner = startProcess(argv[0], [...argv.slice(1), `${ROOT}/tests/chaos/run.ts`, ...args]);
  // The runner bounds itself (--seconds + 180 s); the test's bound is shorter.
  const timer = setTimeout(() => runner.kill("SIGINT"), boundMs);
  try {
    return { code: await runner.exited, runner };
  } finally {
    clearTimeout(timer);
    runner.kill("SIGKILL");
    // The run's folder: its path is on the runner's `dir` line.
    const dir = runner.stdout().match(/ dir (\/\S+mutexd-chaos-\S+)/)?.[1];
    if (dir) {
      try {
        inspect?.(dir);
      } finally {
        removeDir(dir);
      }
    }
  }
}
