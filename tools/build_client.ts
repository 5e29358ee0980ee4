/**
 * Builds the client package's files, dist/client/: JavaScript and .d.ts for `mutexd/client` and
 * `mutexd/ring` (package.json "exports"), so that Node, which cannot import .ts, can use them,
 * and Bun and Deno the same files. `npm pack` runs it (package.json "prepack"); `make client` too.
 *
 * The TypeScript goes through `deno pack` (the project's own toolchain, no tsc): it transpiles
 * each module to .js and extracts the .d.ts from the exported signatures (deno.json "exports").
 * Its tarball holds every module of the repository's graph; this keeps only the files the two
 * entry points reach by their imports, and fails if one imports anything but a relative file
 * (a bare package or a `node:` built-in): the client depends only on web-standard APIs.
 *
 *   bun tools/build_client.ts        (or: deno run -A tools/build_client.ts)
 */
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import process from "node:process";

const ROOT = join(dirname(new URL(import.meta.url).pathname), "..");
const OUT = join(ROOT, "dist", "client");
/** The entry points, as deno pack names their output (deno.json "exports" → lib/client/*.ts). */
const ENTRIES = ["lib/client/client", "lib/client/ring"];
/** A bound on the files the walk may reach: the client is a dozen modules; far more means a wrong import. */
const FILES_MAX = 200;

function run(cmd: string, args: string[]): void {
  const result = spawnSync(cmd, args, { cwd: ROOT, stdio: ["ignore", "inherit", "inherit"] });
  if (result.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (${result.error?.message ?? `exit ${result.status}`})`);
}

/** The specifiers a module imports or re-exports (`from "…"`, `import "…"`, `import("…")`). */
export function importedSpecifiers(text: string): string[] {
  const found = new Set<string>();
  for (const m of text.matchAll(/(?:\bfrom\s*|\bimport\s*\(?\s*)["']([^"']+)["']/g)) found.add(m[1]);
  return [...found];
}

/**
 * The files `entries` reach in `packageDir` (paths relative to it): a .js file's relative
 * imports, and for a .d.ts the .d.ts of each "x.js" it names. Throws on a non-relative import.
 */
export function reachable(packageDir: string, entries: string[]): string[] {
  const seen = new Set<string>();
  const queue = [...entries];
  while (queue.length > 0) {
    const file = queue.shift()!;
    if (seen.has(file)) continue;
    if (seen.size >= FILES_MAX) throw new Error(`more than ${FILES_MAX} files reached from ${entries.join(", ")}`);
    const path = join(packageDir, file);
    if (!existsSync(path)) throw new Error(`${file} is imported but deno pack made no such file`);
    seen.add(file);
    for (const specifier of importedSpecifiers(readFileSync(path, "utf8"))) {
      if (!specifier.startsWith("./") && !specifier.startsWith("../")) {
        throw new Error(`${file} imports ${JSON.stringify(specifier)}: the client may import only its own files (web-standard APIs, no packages)`);
      }
      const target = join(dirname(file), specifier);
      queue.push(file.endsWith(".d.ts") ? target.replace(/\.js$/, ".d.ts") : target);
    }
  }
  return [...seen].sort();
}

function main(): void {
  const version = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).version;
  const work = mkdtempSync(join(tmpdir(), "mutexd-client-build-"));
  try {
    const tarball = join(work, "deno-pack.tgz");
    // --allow-dirty: this builds from the working tree as it is, committed or not.
    run(join(ROOT, "node_modules", ".bin", "deno"), ["pack", "--allow-dirty", "--no-source-maps", "--set-version", version, "--output", tarball]);
    run("tar", ["-xzf", tarball, "-C", work]);
    const packageDir = join(work, "package");
    const files = reachable(packageDir, ENTRIES.flatMap((entry) => [`${entry}.js`, `${entry}.d.ts`]));
    rmSync(OUT, { recursive: true, force: true });
    for (const file of files) {
      mkdirSync(dirname(join(OUT, file)), { recursive: true });
      copyFileSync(join(packageDir, file), join(OUT, file));
    }
    process.stdout.write(`${relative(ROOT, OUT)}/: ${files.length} files for mutexd ${version}\n`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (import.meta.main) main();
