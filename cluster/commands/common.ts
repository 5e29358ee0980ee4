/**
 * What every subcommand shares: exit codes, flag parsing with clear usage errors, durations,
 * and finding the servers from --server, --config or the environment.
 */
import { readFileSync } from "node:fs";
import process from "node:process";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { ConfigError, loadClusterFile, nodeUrl, type ClusterConfig } from "../config.ts";
import { checkedToken } from "../../lib/client/http.ts";

export const EXIT = {
  ok: 0,
  usage: 2, // bad flags or a bad cluster file
  notAcquired: 3, // the lock was taken (try-lock) or --wait ran out
  lost: 4, // the lock was lost while the command ran; the command was stopped
  unavailable: 5, // no server answered, or it answered an error
  keepRunning: -1, // not an exit code: a daemon that keeps running until a signal
} as const;

export interface CommandModule {
  run(argv: string[]): Promise<number>;
}

/** Thrown for a usage error; the command prints it with its help and exits 2. */
export class UsageError extends Error {}

type Options = NonNullable<ParseArgsConfig["options"]>;

/** parseArgs with strict checking; unknown flags and missing values become UsageError. */
export function parseFlags<O extends Options>(argv: string[], options: O, allowPositionals = true) {
  try {
    return parseArgs({ args: argv, options, allowPositionals, strict: true });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

/**
 * Splits argv at the first `--`. What comes before is mutexd's (flags and names); everything
 * after belongs to the command mutexd runs, even `--help`, `-h` or `--config`, so that
 * `mutexd lock L -- ls --help` runs `ls --help` instead of printing mutexd's help and
 * skipping the job. `command` is undefined when there is no `--`.
 */
export function splitAtDoubleDash(argv: string[]): { own: string[]; command?: string[] } {
  const split = argv.indexOf("--");
  return split < 0 ? { own: argv } : { own: argv.slice(0, split), command: argv.slice(split + 1) };
}

/** The `-- CMD [ARG…]` part that `lock` and `ring lock` run; a UsageError when it is missing. */
export function commandToRun(argv: string[]): { own: string[]; command: string[] } {
  const { own, command } = splitAtDoubleDash(argv);
  if (command === undefined) throw new UsageError("missing -- before the command to run");
  if (command.length === 0) throw new UsageError("missing the command to run after --");
  return { own, command };
}

/**
 * Runs a command body, turning UsageError and ConfigError into exit code 2 with a message.
 * `--help` and `-h` ask for the help only before a `--` (see splitAtDoubleDash).
 */
export async function runCommand(help: string, argv: string[], body: () => Promise<number>): Promise<number> {
  const { own } = splitAtDoubleDash(argv);
  if (own.includes("--help") || own.includes("-h")) {
    process.stdout.write(help);
    return EXIT.ok;
  }
  try {
    return await body();
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`mutexd: ${error.message}\n\n${help}`);
      return EXIT.usage;
    }
    if (error instanceof ConfigError) {
      process.stderr.write(`mutexd: bad cluster file: ${error.message}\n`);
      return EXIT.usage;
    }
    throw error;
  }
}

/** Parses "500ms", "2s", "1.5s", "3m", "1h"; "0" is zero. Returns milliseconds. */
export function parseDuration(text: string, flag: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!match || (match[2] === undefined && Number(match[1]) !== 0)) {
    throw new UsageError(`${flag}: bad duration ${JSON.stringify(text)} (examples: 500ms, 2s, 1m, 0)`);
  }
  const unitMs = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[match[2] ?? "ms"]!;
  return Math.round(Number(match[1]) * unitMs);
}

/**
 * The client token flags of every command that talks to a server. MUTEXD_TOKEN is not the
 * variable for it: that one is the fencing token mutexd gives the command it runs.
 */
export const TOKEN_FLAGS = {
  token: { type: "string" },
  "token-file": { type: "string" },
} as const;

/** The help lines of TOKEN_FLAGS. */
export const TOKEN_HELP = `  --token-file FILE the client token (a [[tokens]] secret) when the cluster requires one; or
                    MUTEXD_AUTH_TOKEN. --token VALUE also works, but anyone on this host can read
                    a command line (ps): prefer the file or the variable`;

/**
 * The client's bearer token: --token, else the contents of --token-file (one trailing newline
 * dropped), else MUTEXD_AUTH_TOKEN; undefined when none is given (a cluster without tokens).
 */
export function clientToken(flags: { token?: string; "token-file"?: string }): string | undefined {
  const token = givenToken(flags);
  try {
    return checkedToken(token);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

function givenToken(flags: { token?: string; "token-file"?: string }): string | undefined {
  if (flags.token !== undefined) {
    if (flags.token.length === 0) throw new UsageError("--token: empty");
    return flags.token;
  }
  const file = flags["token-file"];
  if (file !== undefined) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (error) {
      throw new UsageError(`--token-file: cannot read ${file}: ${(error as Error).message}`);
    }
    const token = text.replace(/\r?\n$/, "");
    if (token.length === 0) throw new UsageError(`--token-file: ${file} is empty`);
    return token;
  }
  const fromEnv = process.env.MUTEXD_AUTH_TOKEN;
  return fromEnv === undefined || fromEnv.length === 0 ? undefined : fromEnv;
}

/** The cluster file named by --config or MUTEXD_CONFIG, if any. */
export function clusterFrom(configFlag: string | undefined): ClusterConfig | undefined {
  const file = configFlag ?? process.env.MUTEXD_CONFIG;
  return file ? loadClusterFile(file) : undefined;
}

/** The `--ca FILE` flag of the commands that talk to servers, and its help line. */
export const CA_FLAG = { ca: { type: "string" } } as const;
export const CA_HELP = `  --ca FILE         the CA certificate (PEM) of servers on HTTPS; or MUTEXD_CA, or the cluster file's tlsCa`;

/**
 * The CA certificate(s), PEM text, the CLI verifies HTTPS servers against: the file of --ca, else
 * the file MUTEXD_CA names, else the cluster file's tlsCa; undefined: the system's roots.
 */
export function caFrom(caFlag: string | undefined, cluster: ClusterConfig | undefined): string | undefined {
  const file = caFlag ?? process.env.MUTEXD_CA;
  if (file === undefined || file === "") return cluster?.tlsCa;
  const from = caFlag !== undefined ? "--ca" : "MUTEXD_CA";
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    throw new UsageError(`${from}: cannot read ${file}: ${(error as Error).message}`);
  }
  if (!text.includes("-----BEGIN CERTIFICATE-----")) throw new UsageError(`${from}: ${file} holds no PEM certificate`);
  return text;
}

/**
 * The lock servers to talk to, in the order to try them: --server (comma-separated), else the
 * primary then the backup of the cluster file, else MUTEXD_SERVER.
 */
export function lockServers(flags: { server?: string; config?: string }): { urls: string[]; cluster?: ClusterConfig } {
  if (flags.server) return { urls: flags.server.split(",").map((s) => s.trim()).filter(Boolean) };
  const cluster = clusterFrom(flags.config);
  if (cluster) {
    const urls = ["primary", "backup"].flatMap((role) => cluster.nodes.filter((n) => n.role === role).map(nodeUrl));
    if (urls.length === 0) throw new UsageError(`${cluster.file} has no primary or backup node`);
    return { urls, cluster };
  }
  if (process.env.MUTEXD_SERVER) return { urls: process.env.MUTEXD_SERVER.split(",") };
  throw new UsageError("say which server: --server URL or --config FILE (or MUTEXD_SERVER / MUTEXD_CONFIG)");
}
