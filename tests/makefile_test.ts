/**
 * The Makefile builds dist/mutexd only when a source changed: before, its recipe depended on the
 * phony `install`, so `make up` and `make chaos` rebuilt the binary every time (issue 16). Runs
 * `make -n` (print, run nothing) on a copy of the Makefile in a temporary tree whose files'
 * times the test sets, so no build runs and the checkout is not touched.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { removeDir, ROOT, tempDir } from "./_harness.ts";

/** A tree with the Makefile, a source in each source folder, the install's stamp and a binary, at the given times (seconds). */
function tree(dir: string, times: { sources: number; installed: number; binary: number }): void {
  copyFileSync(join(ROOT, "Makefile"), join(dir, "Makefile"));
  for (const folder of ["lib", "cluster", "node_modules", "dist"]) mkdirSync(join(dir, folder), { recursive: true });
  const files: Array<[string, number]> = [
    ["main.ts", times.sources],
    ["lib/a.ts", times.sources],
    ["cluster/b.ts", times.sources],
    ["package.json", times.installed - 10],
    ["package-lock.json", times.installed - 10],
    ["node_modules/.installed", times.installed],
    ["dist/mutexd", times.binary],
  ];
  for (const [file, seconds] of files) {
    writeFileSync(join(dir, file), "");
    utimesSync(join(dir, file), seconds, seconds);
  }
}

/** What `make -n TARGET [VAR=VALUE…]` would run there. */
function planned(dir: string, target: string, ...variables: string[]): string {
  // --no-print-directory: under `make test` (CI) the inherited MAKELEVEL makes make print
  // "Entering directory" lines around the plan.
  return execFileSync("make", ["-n", "--no-print-directory", target, ...variables], { cwd: dir, encoding: "utf8" });
}

test("make up and make build rebuild dist/mutexd only when a source is newer than it", () => {
  const dir = tempDir("mutexd-make-");
  try {
    const base = 1_700_000_000;
    tree(dir, { sources: base, installed: base, binary: base + 100 });
    assert.equal(planned(dir, "up"), "dist/mutexd up --config cluster/cluster.toml\n", "an up-to-date binary is run as it is");
    assert.doesNotMatch(planned(dir, "build"), /bun build/);

    utimesSync(join(dir, "lib/a.ts"), base + 200, base + 200);
    assert.match(planned(dir, "up"), /bun build --compile main\.ts --outfile dist\/mutexd\n.*dist\/mutexd up/s, "a changed source rebuilds it first");

    tree(dir, { sources: base, installed: base, binary: base + 100 });
    assert.equal(planned(dir, "up", "CONFIG=other.toml"), "dist/mutexd up --config other.toml\n", "make up CONFIG=FILE");
  } finally {
    removeDir(dir);
  }
});
