/**
 * The commands of `mutexd`: one table that the help (main.ts), `help CMD`, the closest-name hint
 * and `mutexd completion` all read, so a new command or flag shows up in each of them.
 */
import type { ParseArgsConfig } from "node:util";

/** A command's flags as `parseFlags` takes them. */
export type Flags = NonNullable<ParseArgsConfig["options"]>;

export interface CommandModule {
  run(argv: string[]): Promise<number>;
  /** The flags it parses (a command without subcommands). */
  flags?: Flags;
  /** Its subcommands and the flags of each (`ring lock`, `arbiter recover`). */
  subcommands?: Record<string, Flags>;
}

export const COMMANDS: Record<string, { summary: string; load: () => Promise<CommandModule> }> = {
  node: { summary: "run one node of a cluster file in its role", load: () => import("./node.ts") },
  up: { summary: "run every node of a cluster file on this machine", load: () => import("./up.ts") },
  lock: { summary: "run a command while holding a lock", load: () => import("./lock.ts") },
  release: { summary: "release a lock from whoever holds it (--force; an operator's tool)", load: () => import("./release.ts") },
  status: { summary: "show the lock table and sessions", load: () => import("./status.ts") },
  ring: { summary: "the token ring: lock, put, get, delete, keys, status (mutexd ring --help)", load: () => import("./ring.ts") },
  arbiter: { summary: "recover: write a replacement arbiter's record from the lock servers", load: () => import("./arbiter.ts") },
  completion: { summary: "print a bash or zsh completion script (mutexd completion bash)", load: () => import("./completion.ts") },
};

/** The flags of main.ts itself, before any command. */
export const TOP_FLAGS = ["--help", "--version"];
