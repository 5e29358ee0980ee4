/**
 * lib/core/ stays pure (developer guide, rule 1): its source files use no clock, no timer or
 * other scheduling, no randomness, no I/O and no runtime object, and import nothing but other
 * files inside lib/. The simulator and the backup's replay rely on it: the same commands at the
 * same times give the same state, on any runtime.
 *
 * The check is a scan of the source text with comments and string contents blanked out (a
 * comment or a log message may name `Date.now`; only code counts). The second test proves the
 * scanner bites: it flags each kind of violation in a synthetic source, and passes a clean one.
 *
 * Decisions:
 * - `queueMicrotask`, `Promise`, `async` and `await` are forbidden like `setTimeout`: a core is
 *   a synchronous step function; when its work runs is its driver's business (the port rule of
 *   cluster/timers.ts). A microtask inside a core would make its output depend on when the
 *   runtime drains the queue, which the simulator does not control.
 * - `console` is I/O. `globalThis` is the way around every other rule, so it is out too.
 * - Imports: relative paths that stay inside lib/ (lib/settings.ts, lib/wire/ are shared
 *   plain-data modules). No `node:`, `jsr:`, `npm:` or bare package imports; the allow-list of
 *   packages is empty.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";

const LIB_DIR = new URL("../lib/", import.meta.url).pathname;
const CORE_DIR = new URL("../lib/core/", import.meta.url).pathname;
/** Packages a core may import (none: a core needs nothing but the language). */
const PACKAGE_ALLOW_LIST: readonly string[] = [];

/** What a core must not use, each with the reason printed when found. */
const FORBIDDEN: ReadonlyArray<{ pattern: RegExp; what: string }> = [
  { pattern: /\bDate\s*\.\s*now\b/, what: "clock (Date.now)" },
  { pattern: /\bnew\s+Date\b|(?<![.\w$])Date\s*\(/, what: "clock (Date)" },
  { pattern: /\bperformance\b/, what: "clock (performance)" },
  { pattern: /\b(setTimeout|setInterval|setImmediate|clearTimeout|clearInterval|requestAnimationFrame)\b/, what: "timer" },
  { pattern: /\bqueueMicrotask\b|\bPromise\b|\basync\b|\bawait\b/, what: "scheduling (microtask, promise, async)" },
  { pattern: /\bMath\s*\.\s*random\b/, what: "randomness (Math.random)" },
  { pattern: /\bcrypto\b/, what: "randomness (crypto)" },
  { pattern: /(?<![.\w$])fetch\s*\(|\bWebSocket\b|\bXMLHttpRequest\b|\bEventSource\b/, what: "network I/O" },
  { pattern: /(?<![.\w$])(Deno|Bun|process)\s*\./, what: "runtime object (Deno., Bun., process.)" },
  { pattern: /\bconsole\b/, what: "I/O (console)" },
  { pattern: /\bglobalThis\b/, what: "globalThis" },
  { pattern: /(?<![.\w$])require\s*\(/, what: "require()" },
];

/**
 * Splits source into code without comments (strings kept, for the import check) and code
 * without comments and without string contents (for the API check). Template literals keep
 * their `${…}` expressions as code. Regex literals are taken as code (the cores' few are simple).
 */
export function stripSource(text: string): { code: string; bare: string } {
  let code = "";
  let bare = "";
  const templateDepths: number[] = []; // brace depth at which each open `${` returns to its template
  let braceDepth = 0;
  let i = 0;
  const emit = (c: string, inString: boolean) => {
    code += c;
    bare += inString && c !== "\n" ? " " : c;
  };
  const readString = (quote: string) => {
    emit(quote, false);
    i += 1;
    while (i < text.length && text[i] !== quote && text[i] !== "\n") {
      if (text[i] === "\\") emit(text[i++], true);
      if (i < text.length) emit(text[i++], true);
    }
    if (i < text.length) emit(text[i++], false);
  };
  /** Reads template text up to its end (returns to code) or to a `${` (code until its `}`). */
  const readTemplate = () => {
    while (i < text.length) {
      if (text[i] === "\\") {
        emit(text[i++], true);
        if (i < text.length) emit(text[i++], true);
      } else if (text[i] === "`") {
        emit(text[i++], false);
        return;
      } else if (text[i] === "$" && text[i + 1] === "{") {
        emit("${", false);
        i += 2;
        templateDepths.push(braceDepth);
        braceDepth += 1;
        return;
      } else {
        emit(text[i++], true);
      }
    }
  };
  while (i < text.length) {
    const c = text[i];
    if (c === "/" && text[i + 1] === "/") {
      while (i < text.length && text[i] !== "\n") i += 1;
    } else if (c === "/" && text[i + 1] === "*") {
      const end = text.indexOf("*/", i + 2);
      const comment = text.slice(i, end < 0 ? text.length : end + 2);
      for (const ch of comment) if (ch === "\n") emit("\n", false);
      i += comment.length;
    } else if (c === '"' || c === "'") {
      readString(c);
    } else if (c === "`") {
      emit(c, false);
      i += 1;
      readTemplate();
    } else if (c === "{") {
      braceDepth += 1;
      emit(c, false);
      i += 1;
    } else if (c === "}") {
      braceDepth -= 1;
      emit(c, false);
      i += 1;
      if (templateDepths.length > 0 && templateDepths[templateDepths.length - 1] === braceDepth) {
        templateDepths.pop();
        readTemplate();
      }
    } else {
      emit(c, false);
      i += 1;
    }
  }
  return { code, bare };
}

/** Module specifiers of static, side-effect, dynamic and type imports and of re-exports. */
function importsOf(code: string): string[] {
  const specifiers: string[] = [];
  const patterns = [
    /\b(?:import|export)\b[^;"'`]*?\bfrom\s*["']([^"']+)["']/g,
    /\bimport\s*["']([^"']+)["']/g,
    /\bimport\s*\(\s*["']([^"']+)["']\s*\)/g,
  ];
  for (const pattern of patterns) for (const match of code.matchAll(pattern)) specifiers.push(match[1]);
  return specifiers;
}

/** The problems of one core source file (empty when it is pure). */
export function scanCoreSource(path: string, text: string): string[] {
  const { code, bare } = stripSource(text);
  const problems: string[] = [];
  const lines = bare.split("\n");
  for (const [index, line] of lines.entries()) {
    for (const { pattern, what } of FORBIDDEN) {
      if (pattern.test(line)) problems.push(`${path}:${index + 1}: ${what}: ${line.trim()}`);
    }
  }
  for (const specifier of importsOf(code)) {
    if (PACKAGE_ALLOW_LIST.includes(specifier)) continue;
    const relative = specifier.startsWith("./") || specifier.startsWith("../");
    const target = resolve(dirname(path), specifier);
    if (!relative || !target.startsWith(LIB_DIR)) problems.push(`${path}: imports ${specifier} (only relative imports inside lib/)`);
  }
  return problems;
}

test("lib/core is pure: no clock, timers, randomness, I/O or runtime objects; imports only inside lib/", () => {
  // lib/core/ and its folders (lock/, ring/, arbiter/), one level deep.
  const entries = readdirSync(CORE_DIR, { withFileTypes: true });
  const folders = entries.filter((e) => e.isDirectory()).map((e) => `${CORE_DIR}${e.name}/`);
  const files = [CORE_DIR, ...folders].flatMap((dir) => readdirSync(dir).filter((f) => f.endsWith(".ts")).map((f) => `${dir}${f}`));
  assert.ok(files.length >= 8, `found ${files.length} core files`);
  assert.ok(files.includes(`${CORE_DIR}ring/ring_node.ts`), "the scan reaches the folders");
  // The layers of the ring node (ring_node_state.ts) and of the view change (view_state.ts) are
  // cores like the classes they make up: the scan must see each.
  const layers = ["ring_node_state", "ring_sections", "token_visit", "ring_views", "view_state", "view_voting", "view_lease"];
  for (const layer of layers) {
    assert.ok(files.includes(`${CORE_DIR}ring/${layer}.ts`), `the scan reaches ring/${layer}.ts`);
  }
  const problems = files.flatMap((file) => scanCoreSource(file, readFileSync(file, "utf8")));
  assert.deepEqual(problems, []);
  // The scan saw real imports (it would pass vacuously if it found none).
  // The lock table and its layers (lock_table.ts extends table_sessions.ts extends lock_grants.ts
  // extends table_base.ts): each file is scanned above, and each file's imports are seen here.
  const importsOfCore = (file: string) => importsOf(stripSource(readFileSync(`${CORE_DIR}lock/${file}`, "utf8")).code).sort();
  assert.deepEqual(importsOfCore("lock_table.ts"), ["../assert.ts", "./call_id.ts", "./lock_state.ts", "./session_locks.ts", "./session_owners.ts", "./table_base.ts", "./table_commands.ts", "./table_sessions.ts"]);
  assert.deepEqual(importsOfCore("table_sessions.ts"), ["../assert.ts", "./lock_grants.ts", "./lock_state.ts", "./session_leases.ts", "./session_locks.ts", "./session_owners.ts", "./table_base.ts", "./table_commands.ts"]);
  assert.deepEqual(importsOfCore("lock_grants.ts"), ["../assert.ts", "./lock_state.ts", "./session_owners.ts", "./table_base.ts", "./table_commands.ts"]);
  assert.deepEqual(importsOfCore("table_base.ts"), ["../../settings.ts", "../../wire/errors.ts", "../assert.ts", "./lock_state.ts", "./session_leases.ts", "./session_owners.ts", "./table_commands.ts"]);
});

test("the purity scanner bites: each kind of violation in a synthetic core file is flagged", () => {
  const path = `${CORE_DIR}synthetic.ts`;
  const bad: Array<[string, string]> = [
    ["const t = Date.now();", "clock (Date.now)"],
    ["const d = new Date();", "clock (Date)"],
    ["const t = performance.now();", "clock (performance)"],
    ["setTimeout(() => {}, 5);", "timer"],
    ["const id = setInterval(f, 5);", "timer"],
    ["queueMicrotask(() => step());", "scheduling"],
    ["async function go() { await x; }", "scheduling"],
    ["const r = Math.random();", "randomness (Math.random)"],
    ["crypto.getRandomValues(buffer);", "randomness (crypto)"],
    ["const answer = fetch(url);", "network I/O"],
    ["const env = Deno.env.get('X');", "runtime object"],
    ["Bun.write('f', 'x');", "runtime object"],
    ["const argv = process.argv;", "runtime object"],
    ["console.log('hi');", "I/O (console)"],
    ["const g = globalThis;", "globalThis"],
    ["const fs = require('fs');", "require()"],
    ["const label = `now ${Date.now()}`;", "clock (Date.now)"],
    ['import { readFileSync } from "node:fs";', "imports node:fs"],
    ['import { Prng } from "npm:some-prng";', "imports npm:some-prng"],
    ['import lodash from "lodash";', "imports lodash"],
    ['import { spawn } from "../../cluster/runtime.ts";', "imports ../../cluster/runtime.ts"],
    ['export { x } from "../../tests/sim/network.ts";', "imports ../../tests/sim/network.ts"],
    ['type T = import("node:net").Socket;', "imports node:net"],
  ];
  for (const [source, expected] of bad) {
    const problems = scanCoreSource(path, `${source}\n`);
    assert.ok(problems.some((p) => p.includes(expected)), `not flagged as ${expected}: ${source} (${problems.join("; ") || "nothing"})`);
  }
  // Forbidden names in comments and strings, method names and relative imports inside lib/ are fine.
  const clean = [
    "// Date.now() is the driver's business; so is setTimeout.",
    "/* Math.random() would break replay; process.exit too */",
    'const message = "no fetch(url), no console here";',
    "const label = `a crypto-free ${kind} step`;",
    "this.fetching = null; const type = node.fetch; const promise: RingPromise = p;",
    'import { assert } from "./assert.ts";',
    'import type { Settings } from "../settings.ts";',
    'type E = import("../wire/errors.ts").ErrorCode;',
    "const pattern = /^[A-Za-z0-9._:/-]+$/;",
  ].join("\n");
  assert.deepEqual(scanCoreSource(path, clean), []);
});
