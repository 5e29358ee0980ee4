/**
 * `mutexd completion bash|zsh`: prints a completion script made from the command table
 * (table.ts) and each command's flags, the ones it parses, so the script cannot offer a flag
 * that mutexd refuses. Completes commands, ring/arbiter subcommands and flags; files after
 * --config, --ca, --token-file and everything after `--` (the command `lock` runs).
 */
import process from "node:process";
import { EXIT, parseFlags, runCommand, UsageError } from "./common.ts";
import { COMMANDS, type Flags, TOP_FLAGS } from "./table.ts";

const HELP = `Usage: mutexd completion <bash|zsh>

Prints a shell completion script for mutexd's commands, subcommands and flags.

  bash: source <(mutexd completion bash)       (in ~/.bashrc), or save it as
        /etc/bash_completion.d/mutexd
  zsh:  source <(mutexd completion zsh)        (in ~/.zshrc, after compinit), or save it as
        _mutexd in a directory of $fpath
`;

const SHELLS = ["bash", "zsh"] as const;
type Shell = typeof SHELLS[number];

/** Flags whose value is a file name: the shell completes files there. */
const FILE_FLAGS = ["--config", "--ca", "--token-file"];

/** The words to offer: each command's flags, or its subcommands and then theirs. */
export interface CompletionTable {
  commands: string[];
  /** command → the words after it: its flags with --help (`help`: the commands; `completion`: the shells). */
  flags: Record<string, string[]>;
  /** A command with subcommands (ring, arbiter): subcommand → its flags with --help. */
  subcommands: Record<string, Record<string, string[]>>;
}

const flagWords = (flags: Flags | undefined) => [...Object.keys(flags ?? {}).map((name) => `--${name}`), "--help"];

/** Loads every command module (no side effects at import) and reads its flags. */
export async function completionTable(): Promise<CompletionTable> {
  const table: CompletionTable = { commands: [...Object.keys(COMMANDS), "help"], flags: {}, subcommands: {} };
  for (const [name, entry] of Object.entries(COMMANDS)) {
    const module = await entry.load();
    if (module.subcommands) {
      table.subcommands[name] = Object.fromEntries(Object.entries(module.subcommands).map(([sub, flags]) => [sub, flagWords(flags)]));
    } else {
      table.flags[name] = flagWords(module.flags);
    }
  }
  table.flags.help = Object.keys(COMMANDS);
  table.flags.completion = [...SHELLS];
  return table;
}

/** How each shell spells the few things that differ; the logic between them is the same text. */
const SYNTAX: Record<Shell, { head: string; arg: (index: string) => string; files: string; offer: string; tail: string }> = {
  bash: {
    head: `# bash completion for mutexd (mutexd completion bash)
_mutexd() {
  local cword=$COMP_CWORD cur=\${COMP_WORDS[COMP_CWORD]}`,
    arg: (index) => `\${COMP_WORDS[${index}]}`,
    // Nothing offered: \`complete -o default\` falls back to file names.
    files: "COMPREPLY=()",
    offer: `COMPREPLY=($(compgen -W "$candidates" -- "$cur"))`,
    tail: `complete -o default -F _mutexd mutexd`,
  },
  zsh: {
    head: `#compdef mutexd
# zsh completion for mutexd (mutexd completion zsh)
_mutexd() {
  local cword=$((CURRENT - 1))`,
    // zsh's words are numbered from 1 (words[1] is mutexd); bash's from 0.
    arg: (index) => `\${words[${index}+1]}`,
    files: "_files",
    offer: `compadd -- \${=candidates}`,
    tail: `if [[ \${zsh_eval_context[-1]} == loadautofunc ]]; then
  _mutexd "$@"
else
  compdef _mutexd mutexd
fi`,
  },
};

/** A case branch per key: `key) candidates="…";;`. */
function cases(subject: string, entries: [string, string][], indent: string): string {
  const branches = entries.map(([key, body]) => `${indent}  ${key}) ${body};;`);
  return [`${indent}case ${subject} in`, ...branches, `${indent}esac`].join("\n");
}

const offerWords = (words: string[]) => `candidates="${words.join(" ")}"`;

export function completionScript(shell: Shell, table: CompletionTable): string {
  const s = SYNTAX[shell];
  const byCommand: [string, string][] = [
    ...Object.entries(table.flags).map(([command, words]): [string, string] => [command, offerWords(words)]),
    ...Object.entries(table.subcommands).map(([command, subs]): [string, string] => [
      command,
      `if ((cword == 2)); then ${offerWords([...Object.keys(subs), "--help"])}; else\n` +
      cases(s.arg("2"), Object.entries(subs).map(([sub, words]) => [sub, offerWords(words)]), "        ") + "\n      fi",
    ]),
  ];
  return `${s.head}
  local candidates="" i
  # After --: the command that \`lock\` runs and its arguments, so files.
  for ((i = 1; i < cword; i++)); do
    if [[ ${s.arg("i")} == -- ]]; then ${s.files}; return 0; fi
  done
  case ${s.arg("cword-1")} in
    ${FILE_FLAGS.join("|")}) ${s.files}; return 0;;
  esac
  if ((cword == 1)); then
    ${offerWords([...table.commands, ...TOP_FLAGS])}
  else
${cases(s.arg("1"), byCommand, "    ")}
  fi
  ${s.offer}
}
${s.tail}
`;
}

export function run(argv: string[]): Promise<number> {
  return runCommand(HELP, argv, async () => {
    const { positionals } = parseFlags(argv, {});
    const shell = positionals[0];
    if (positionals.length !== 1 || !(SHELLS as readonly string[]).includes(shell)) throw new UsageError(`say which shell: ${SHELLS.join(" or ")}`);
    process.stdout.write(completionScript(shell as Shell, await completionTable()));
    return EXIT.ok;
  });
}
