/**
 * `mutexd --version` and `mutexd completion bash|zsh` (issue 17), as real processes: the version
 * is package.json's; the bash script, sourced into a real bash, completes commands, ring
 * subcommands, each command's flags (the ones it parses) and files after --config and after
 * `--`; every flag it offers is in that command's help; the zsh script offers the same words and,
 * sourced into a real zsh (skipped where there is none), offers them at the same places.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { PACKAGE_VERSION, removeDir, startMutexd, startProcess, tempDir } from "./_harness.ts";

async function runMutexd(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = startMutexd(args);
  const code = await proc.exited;
  return { code, stdout: proc.stdout(), stderr: proc.stderr() };
}

test("mutexd --version prints package.json's version, and the help names --version", { timeout: 60_000 }, async () => {
  const version = await runMutexd(["--version"]);
  assert.equal(version.code, 0, version.stderr);
  assert.equal(version.stdout, `mutexd ${PACKAGE_VERSION}\n`);
  const help = await runMutexd(["--help"]);
  assert.match(help.stdout, /mutexd --version/);
  assert.match(help.stdout, /completion +print a bash or zsh completion script/);
  const typo = await runMutexd(["--versoin"]);
  assert.equal(typo.code, 2);
  assert.match(typo.stderr, /did you mean --version\?/);
});

/** Each line `mutexd CMD… <TAB>` → what bash offers (COMPREPLY), from the sourced script. */
async function bashComplete(script: string, dir: string, lines: string[][]): Promise<string[]> {
  const file = join(dir, "mutexd.bash");
  writeFileSync(file, script);
  // One bash for all: source the script, then for each line set COMP_WORDS/COMP_CWORD as bash
  // does at a TAB, call the function `complete` registered, print COMPREPLY on one line.
  const driver = [
    `source ${JSON.stringify(file)}`,
    `fn=$(complete -p mutexd | sed -E 's/.*-F ([^ ]+) .*/\\1/')`,
    ...lines.map((words) => `COMP_WORDS=(${words.map((w) => `'${w}'`).join(" ")}); COMP_CWORD=${words.length - 1}; COMPREPLY=(); $fn; echo "\${COMPREPLY[*]}"`),
  ].join("\n");
  const bash = startProcess("bash", ["--norc", "--noprofile", "-c", driver]);
  const code = await bash.exited;
  assert.equal(code, 0, bash.stderr());
  assert.equal(bash.stderr(), "");
  return bash.stdout().split("\n").slice(0, lines.length);
}

test("mutexd completion bash: commands, subcommands, flags, files after --config and after --", { timeout: 60_000 }, async () => {
  const dir = tempDir("mutexd-completion-");
  try {
    const result = await runMutexd(["completion", "bash"]);
    assert.equal(result.code, 0, result.stderr);
    const offered = await bashComplete(result.stdout, dir, [
      ["mutexd", ""],
      ["mutexd", "r"],
      ["mutexd", "ring", ""],
      ["mutexd", "ring", "lock", "--l"],
      ["mutexd", "lock", "L", "--s"],
      ["mutexd", "status", "--config", ""],
      ["mutexd", "lock", "L", "--", "l"],
      ["mutexd", "completion", ""],
      ["mutexd", "arbiter", ""],
      ["mutexd", "-"],
    ]);
    assert.deepEqual(offered, [
      "node up lock release status ring arbiter completion help --help --version",
      "release ring",
      "lock put get delete keys status --help",
      "--lease",
      "--server --shared",
      // Empty: `complete -o default` then completes file names (the cluster file; CMD after --).
      "",
      "",
      "bash zsh",
      "recover --help",
      "--help --version",
    ]);
    assert.match(result.stdout, /complete -o default -F _mutexd mutexd/);
  } finally {
    removeDir(dir);
  }
});

test("mutexd completion: every flag it offers is one that command's help describes", { timeout: 120_000 }, async () => {
  const script = (await runMutexd(["completion", "bash"])).stdout;
  // A command's branch: `      lock) candidates="--config …";;`; a subcommand's is nested deeper
  // under its command's (`      ring) if …` then `          lock) candidates=…`).
  const commands: { path: string[]; words: string[] }[] = [];
  let parent = "";
  for (const m of script.matchAll(/^( +)([a-z]+)\) (candidates="([^"]*)")?/gm)) {
    const nested = m[1].length > 6;
    if (!nested) parent = m[2];
    if (m[3] !== undefined) commands.push({ path: nested ? [parent, m[2]] : [m[2]], words: m[4].split(" ") });
  }
  let checked = 0;
  for (const { path, words } of commands) {
    const flags = words.filter((w) => w.startsWith("--") && w !== "--help");
    if (flags.length === 0) continue;
    // `arbiter recover`'s flags are in arbiter's help (recover is its one subcommand).
    const help = await runMutexd(["help", ...(path[0] === "arbiter" ? ["arbiter"] : path)]);
    assert.equal(help.code, 0, `help ${path.join(" ")}: ${help.stderr}`);
    for (const flag of flags) {
      assert.match(help.stdout, new RegExp(`(?<![\\w-])${flag}(?![\\w-])`), `${path.join(" ")}'s help describes ${flag}`);
      checked++;
    }
  }
  assert.ok(checked >= 40, `checked ${checked} flags`);
});

test("mutexd completion zsh: the same words as bash, as a compdef function that a real zsh runs (where zsh exists)", { timeout: 60_000 }, async (t) => {
  const [bash, zsh] = [await runMutexd(["completion", "bash"]), await runMutexd(["completion", "zsh"])];
  assert.equal(zsh.code, 0, zsh.stderr);
  const words = (script: string) => [...script.matchAll(/candidates="[^"]*"/g)].map((m) => m[0]);
  assert.deepEqual(words(zsh.stdout), words(bash.stdout));
  assert.ok(words(zsh.stdout).length > 10);
  assert.match(zsh.stdout, /^#compdef mutexd\n/);
  assert.match(zsh.stdout, /compdef _mutexd mutexd/);
  const unknown = await runMutexd(["completion", "fish"]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /say which shell: bash or zsh/);
  if (spawnSync("zsh", ["--version"]).error) {
    t.skip("zsh is not installed here: its script is checked against bash's words only");
    return;
  }
  const dir = tempDir("mutexd-completion-zsh-");
  try {
    const file = join(dir, "_mutexd");
    writeFileSync(file, zsh.stdout);
    // Outside a completion widget `words` and CURRENT are plain variables, and compadd, _files and
    // compdef can be stand-ins that print what the script offers (compadd unfiltered: zsh itself
    // matches the prefix, so every line ends with an empty word).
    const lines = [["mutexd", ""], ["mutexd", "ring", ""], ["mutexd", "ring", "put", ""], ["mutexd", "status", "--config", ""], ["mutexd", "lock", "L", "--", ""], ["mutexd", "completion", ""]];
    const driver = [
      `compdef() { print -r -- "compdef $*"; }`,
      `compadd() { [[ $1 == -- ]] && shift; print -r -- "$*"; }`,
      `_files() { print -r -- "<files>"; }`,
      `source ${JSON.stringify(file)}`,
      ...lines.map((words) => `words=(${words.map((w) => `'${w}'`).join(" ")}); CURRENT=${words.length}; _mutexd`),
    ].join("\n");
    const run = spawnSync("zsh", ["-f", "-c", driver], { encoding: "utf8" });
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.stderr, "");
    assert.deepEqual(run.stdout.split("\n").slice(0, lines.length + 1), [
      "compdef _mutexd mutexd",
      "node up lock release status ring arbiter completion help --help --version",
      "lock put get delete keys status --help",
      "--config --id --server --ca --token --token-file --fence --wait --json --help",
      "<files>",
      "<files>",
      "bash zsh",
    ]);
  } finally {
    removeDir(dir);
  }
});
