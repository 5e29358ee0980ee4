/**
 * What every subcommand shares: exit codes, flag parsing with clear usage errors, durations,
 * and finding the servers from --server, --config or the environment.
 */
import { readFileSync } from "node:fs";
import process from "node:process";
import { parseArgs } from "node:util";
import { ConfigError, loadClusterFile, nodeUrl, type ClusterConfig } from "../config.ts";
import { checkedToken } from "../../lib/client/http.ts";
import type { Flags } from "./table.ts";

export const EXIT = {
  ok: 0,
  usage: 2, // bad flags or a bad cluster file
  notAcquired: 3, // the lock was taken (try-lock) or --wait ran out
  lost: 4, // the lock was lost while the command ran; the command was stopped
  unavailable: 5, // no server answered, or it answered an error
  keepRunning: -1, // not an exit code: a daemon that keeps running until a signal
} as const;


/** Thrown for a usage error; the command prints it on one line and exits 2. */
export class UsageError extends Error {}

type Options = Flags;

/**
 * parseArgs with strict checking. Unknown flags and missing values become a UsageError of one
 * line that names the closest known flag ("did you mean --config?"); parseArgs's own text is
 * runtime-specific and several lines long. A string flag's value may start with a dash
 * (`--wait -1s`) unless it is a flag of this command: the value's own check then says what is
 * wrong with it (parseArgs calls `-1s` "ambiguous").
 */
export function parseFlags<O extends Options>(argv: string[], options: O, allowPositionals = true) {
  const args = checkedFlags(argv, options);
  try {
    return parseArgs({ args, options, allowPositionals, strict: true });
  } catch (error) {
    // Left to parseArgs: a positional where none is allowed, a value given to a boolean flag.
    throw new UsageError((error as Error).message.split("\n")[0].replace(/\.$/, ""));
  }
}

/** argv with each dash-led value of a string flag joined to it (`--wait=-1s`); throws on an unknown or valueless flag. */
function checkedFlags(argv: string[], options: Options): string[] {
  const known = new Map<string, string>(); // "--name" or "-s" → name
  for (const [name, option] of Object.entries(options)) {
    known.set(`--${name}`, name);
    if (option.short) known.set(`-${option.short}`, name);
  }
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--") return [...args, ...argv.slice(i)];
    if (!arg.startsWith("-") || arg === "-") {
      args.push(arg);
      continue;
    }
    const flag = arg.includes("=") ? arg.slice(0, arg.indexOf("=")) : arg;
    const name = known.get(flag);
    if (name === undefined) throw new UsageError(`unknown flag ${flag}${didYouMean(flag, [...known.keys()].filter((k) => k.startsWith("--")))}`);
    if (options[name].type === "string" && flag === arg) {
      const value = argv[i + 1];
      if (value === undefined || value === "--" || known.has(value.split("=")[0])) throw new UsageError(`${flag} needs a value`);
      args.push(`--${name}=${value}`);
      i++;
      continue;
    }
    args.push(arg);
  }
  return args;
}

/**
 * " (did you mean --config?)" when one of `known` is close to `word` (a typo, or the start of
 * exactly one of them), else "". For flags and for command names.
 */
export function didYouMean(word: string, known: string[]): string {
  const prefixed = known.filter((k) => word.length > 2 && k.startsWith(word));
  if (prefixed.length === 1) return ` (did you mean ${prefixed[0]}?)`;
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of known) {
    const distance = editDistance(word, candidate);
    if (distance < bestDistance) [best, bestDistance] = [candidate, distance];
  }
  // At most two edits, and fewer than half the name's letters: "--confg" → "--config", "--x" → nothing.
  const letters = (name: string) => name.replace(/^-+/, "").length;
  return best !== undefined && bestDistance <= Math.min(2, Math.floor(letters(best) / 2)) ? ` (did you mean ${best}?)` : "";
}

/** Levenshtein distance (insertions, deletions, substitutions); flags are short, so O(a·b) is fine. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length];
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
      // One line a person can act on, and where the usage is; not the whole help after it.
      process.stderr.write(`mutexd: ${error.message}; \`${helpCommand(help)} --help\` shows the usage\n`);
      return EXIT.usage;
    }
    if (error instanceof ConfigError) {
      process.stderr.write(`mutexd: bad cluster file: ${error.message}\n`);
      return EXIT.usage;
    }
    throw error;
  }
}

/** "mutexd ring lock" from a help text's first line ("Usage: mutexd ring lock [--config …"). */
function helpCommand(help: string): string {
  const words = /^Usage: ((?:[a-z]+ ?)+)/.exec(help)?.[1].trim();
  return words ?? "mutexd";
}

/** Parses "500ms", "2s", "1.5s", "3m", "1h"; "0" is zero. Returns milliseconds. */
export function parseDuration(text: string, flag: string): number {
  if (text.trim().startsWith("-")) throw new UsageError(`${flag}: a duration cannot be negative: ${JSON.stringify(text)} (examples: 500ms, 2s, 1m, 0)`);
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
 * A server named on the command line or in MUTEXD_SERVER / MUTEXD_RING_SERVER as a base URL. A
 * bare host:port (as etcdctl takes it) gets http://, or https:// when a CA is given (--ca or
 * MUTEXD_CA): a CA is only needed for HTTPS. Anything else that is no http(s) URL is a usage
 * error at once, not a fetch failure after the failover window.
 */
export function serverUrl(text: string, from: string, hasCa: boolean): string {
  const trimmed = text.trim();
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(trimmed) ? trimmed : `${hasCa ? "https" : "http"}://${trimmed}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new UsageError(`${from}: ${JSON.stringify(text)} is neither a URL nor host:port`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new UsageError(`${from}: ${JSON.stringify(text)} is not an http or https URL`);
  return withScheme.replace(/\/+$/, "");
}

/** Whether the command has a CA for HTTPS servers from --ca or MUTEXD_CA (the cluster file's tlsCa comes with its own URLs). */
export function caGiven(caFlag: string | undefined): boolean {
  return caFlag !== undefined || (process.env.MUTEXD_CA ?? "") !== "";
}

/** A comma-separated server list (--server, MUTEXD_SERVER) as base URLs (serverUrl). */
function serverList(text: string, from: string, hasCa: boolean): string[] {
  const urls = text.split(",").map((s) => s.trim()).filter(Boolean).map((s) => serverUrl(s, from, hasCa));
  if (urls.length === 0) throw new UsageError(`${from}: no server given`);
  return urls;
}

/**
 * The lock servers to talk to, in the order to try them: --server (comma-separated), else the
 * primary then the backup of the cluster file, else MUTEXD_SERVER.
 */
export function lockServers(flags: { server?: string; config?: string; ca?: string }): { urls: string[]; cluster?: ClusterConfig } {
  if (flags.server !== undefined) return { urls: serverList(flags.server, "--server", caGiven(flags.ca)) };
  const cluster = clusterFrom(flags.config);
  if (cluster) {
    const urls = ["primary", "backup"].flatMap((role) => cluster.nodes.filter((n) => n.role === role).map(nodeUrl));
    if (urls.length === 0) throw new UsageError(`${cluster.file} has no primary or backup node`);
    return { urls, cluster };
  }
  if (process.env.MUTEXD_SERVER) return { urls: serverList(process.env.MUTEXD_SERVER, "MUTEXD_SERVER", caGiven(flags.ca)) };
  throw new UsageError("say which server: --server URL or --config FILE (or MUTEXD_SERVER / MUTEXD_CONFIG)");
}
