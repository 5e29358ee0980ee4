/**
 * `mutexd status [--config FILE | --server URL] [--json] [--watch]`: the lock table (holders,
 * tokens, waiters, ages) and the sessions, as tables for people or JSON for scripts; `--watch`
 * shows it again every second.
 */
import process from "node:process";
import type { ArbiterStatus } from "../arbiter/server.ts";
import { type ClusterConfig, nodeUrl } from "../config.ts";
import { monotonicClock } from "../clock.ts";
import { DEFAULT_SETTINGS } from "../../lib/settings.ts";
import type { LockStatus } from "../lock/api.ts";
import { CA_FLAG, CA_HELP, caFrom, clientToken, EXIT, lockServers, parseFlags, runCommand, TOKEN_FLAGS, TOKEN_HELP, UsageError } from "./common.ts";
import { fetchFor } from "../runtime.ts";
import { failureText, type FetchPort, httpRequest, realTimers } from "../../lib/client/http.ts";
import { MutexdError } from "../../lib/wire/errors.ts";

const HELP = `Usage: mutexd status [--config FILE | --server URL] [--ca FILE] [--token-file FILE] [--json] [--watch [--count N]]

Shows each lock server (its role now, epoch, whether it serves, lease left and who backs it: the arbiter,
the backup's promise or both; backup sync state and lag; its mutexd version),
the arbiter's record and version, and the lock table of the serving server: each lock's holders (session,
fencing token, mode, how long held; with its owner's token name in [] when clients use tokens),
its FIFO queue, any lock-delay left, and the sessions. Session secrets are never shown.
  --json            print it all as JSON (for scripts; with --watch one line of JSON per refresh)
  --watch           show it again every second until Ctrl-C (the screen is cleared first only on a
                    terminal); a refresh where no server answers says so and the next one tries again
  --count N         with --watch: stop after N refreshes (exit code of the last one)
${CA_HELP}
${TOKEN_HELP}
                    (the lock table needs admin on every name, prefix ""; the arbiter's record read)
Exit codes: 0 shown, 2 usage or cluster-file error, 5 no server answered (or all refused the token).
`;

// The servers' own answer types, so a field they add or rename breaks this at type-check.
interface ServerReport {
  /** The cluster file's id for this URL (absent with --server): a server that does not answer is named too. */
  id?: string;
  url: string;
  status?: LockStatus;
  error?: string;
}

interface ArbiterReport {
  url: string;
  node?: ArbiterStatus["node"];
  arbiter?: ArbiterStatus["arbiter"];
  error?: string;
}

/** An error for people: a server's refusal with its code ("forbidden: token …"), else the failure and its cause. */
function describe(error: unknown): string {
  return error instanceof MutexdError && error.code !== "unreachable" ? `${error.code}: ${error.message}` : failureText(error);
}

/** `GET path` of a server as JSON; an error answer rejects with its code and message (e.g. 403 forbidden). */
function getJson<T>(fetchFn: FetchPort, base: string, path: string, timeoutMs: number, token: string | undefined): Promise<T> {
  return httpRequest<T>({ base, method: "GET", path, timeoutMs, token }, { fetch: fetchFn, timers: realTimers });
}

/** What `status` parses, and what `mutexd completion` offers. */
export const flags = {
  config: { type: "string" },
  server: { type: "string" },
  ...CA_FLAG,
  ...TOKEN_FLAGS,
  json: { type: "boolean" },
  watch: { type: "boolean" },
  count: { type: "string" },
} as const;

export function run(argv: string[]): Promise<number> {
  return runCommand(HELP, argv, async () => {
    const { values } = parseFlags(argv, flags, false);
    const { urls, cluster } = lockServers(values);
    const fetchFn = fetchFor(caFrom(values.ca, cluster)) as FetchPort;
    const token = clientToken(values);
    const { requestTimeoutMs } = cluster?.settings ?? DEFAULT_SETTINGS;
    const show = () => showStatus({ urls, cluster, fetchFn, token, requestTimeoutMs, json: values.json === true, watching: values.watch === true });
    if (values.count !== undefined && !values.watch) throw new UsageError("--count needs --watch");
    if (!values.watch) return await show();
    if (values.count !== undefined && !/^[1-9]\d{0,8}$/.test(values.count)) throw new UsageError("--count must be a whole number of refreshes, at least 1");
    const count = values.count === undefined ? Infinity : Number(values.count);
    // Bounded by --count, else by Ctrl-C (the default SIGINT handling ends the process).
    let code: number = EXIT.ok;
    for (let refresh = 1; refresh <= count; refresh++) {
      const startedMs = monotonicClock.nowMs();
      // Clear the screen on a terminal only: a pipe or a file gets the refreshes one after another.
      if (process.stdout.isTTY && !values.json) process.stdout.write("\x1b[H\x1b[2J");
      code = await show();
      if (refresh < count) await new Promise((resolve) => setTimeout(resolve, Math.max(0, WATCH_PERIOD_MS - (monotonicClock.nowMs() - startedMs))));
    }
    return code;
  });
}

/** `--watch` refreshes this often. */
const WATCH_PERIOD_MS = 1_000;

/** Reads every server's status and the arbiter's, and prints them once; the exit code. */
async function showStatus(options: {
  urls: string[];
  cluster: ClusterConfig | undefined;
  fetchFn: FetchPort;
  token: string | undefined;
  requestTimeoutMs: number;
  json: boolean;
  /** One line of JSON per refresh, and the time of each table. */
  watching: boolean;
}): Promise<number> {
  const { urls, cluster, fetchFn, token, requestTimeoutMs } = options;
  const idOf = (url: string) => cluster?.nodes.find((n) => nodeUrl(n) === url)?.id;
  const servers: ServerReport[] = await Promise.all(urls.map(async (url) => {
    const id = idOf(url);
    try {
      return { ...(id === undefined ? {} : { id }), url, status: await getJson<LockStatus>(fetchFn, url, "/v1/status", requestTimeoutMs, token) };
    } catch (error) {
      return { ...(id === undefined ? {} : { id }), url, error: describe(error) };
    }
  }));
  const arbiterNode = cluster?.nodes.find((n) => n.role === "arbiter");
  let arbiter: ArbiterReport | undefined;
  if (arbiterNode) {
    const url = nodeUrl(arbiterNode);
    try {
      arbiter = { url, ...(await getJson<ArbiterStatus>(fetchFn, url, "/v1/status", requestTimeoutMs, token)) };
    } catch (error) {
      arbiter = { url, error: describe(error) };
    }
  }
  const answering = servers.filter((s) => s.status);
  if (answering.length === 0) {
    process.stderr.write(`mutexd: no lock server gave its status: ${servers.map((s) => `${s.url} (${s.error})`).join(", ")}\n`);
    return EXIT.unavailable;
  }
  // The lock table of the server that serves; else of the first that answered.
  const shown = answering.find((s) => s.status!.server?.serving) ?? answering[0];
  if (options.json) {
    const report = { ...shown.status, shownFrom: shown.url, servers, arbiter };
    process.stdout.write((options.watching ? JSON.stringify(report) : JSON.stringify(report, null, 2)) + "\n");
  } else {
    const time = options.watching ? `${new Date().toISOString()}\n` : "";
    process.stdout.write(time + formatServers(servers, arbiter) + "\n" + formatStatus(shown.status!));
  }
  return EXIT.ok;
}

function formatServers(servers: ServerReport[], arbiter: ArbiterReport | undefined): string {
  let out = "SERVERS\n" + table(
    ["ID", "URL", "ROLE", "EPOCH", "SERVING", "LEASE", "BACKUP (mode acked lag)", "INDEX", "VERSION"],
    servers.map(({ id, url, status, error }) => {
      const s = status?.server;
      if (!status || !s) return [status?.node.id ?? id ?? "?", url, error ? `unreachable (${error})` : "?", "", "", "", "", "", ""];
      const backup = s.backup ? `${s.backup.id} ${s.backup.mode} ${s.backup.ackedIndex} ${s.backup.lagEntries}` : "-";
      // Each server's own: during a rolling upgrade (docs/deploy.md) the two may differ.
      return [status.node.id, url, s.role, String(s.epoch), s.serving ? "yes" : "no", leaseCell(s), backup, String(s.lastIndex), status.node.version ?? "?"];
    }),
  );
  if (arbiter) {
    const a = arbiter.arbiter;
    out += a
      ? `ARBITER ${arbiter.url}${arbiter.node?.version === undefined ? "" : ` (version ${arbiter.node.version})`}: epoch ${a.epoch}, primary ${a.primary}, backup ${a.backup} ${a.backupInSync ? "in sync" : "out of sync"}, lease ${age(a.leaseRemainingMs)} left` +
        `, token ceiling ${a.tokenCeiling ?? "unknown"}, longest TTL ${a.ttlMaxMs == null ? "unknown" : age(a.ttlMaxMs)}\n` +
        // A record behind the servers' epoch (a lost disk) decides nothing until recovered.
        (a.behindEpoch !== undefined && a.behindEpoch > a.epoch ? `  its record is behind epoch ${a.behindEpoch}: run mutexd arbiter recover (docs/failover.md)\n` : "")
      : `ARBITER ${arbiter.url}: unreachable (${arbiter.error})\n`;
  }
  return out;
}

/**
 * A primary's lease and who backs it now (the arbiter, the backup's promise, or both: it serves
 * while either runs); a backup's promise not to take over.
 */
function leaseCell(s: NonNullable<LockStatus["server"]>): string {
  if (s.role === "primary" && s.leaseSupport) {
    const { arbiterRemainingMs: a, backupRemainingMs: b } = s.leaseSupport;
    const backers = [a > 0 ? `arbiter ${age(a)}` : "", b > 0 ? `backup ${age(b)}` : ""].filter(Boolean);
    return `${age(s.leaseRemainingMs)} (${backers.length > 0 ? backers.join(", ") : "no support"})`;
  }
  return s.promisedRemainingMs > 0 ? `promised ${age(s.promisedRemainingMs)}` : "-";
}

function age(ms: number): string {
  return ms < 1000 ? `${ms}ms` : ms < 120_000 ? `${(ms / 1000).toFixed(1)}s` : `${Math.round(ms / 60_000)}m`;
}

/** Renders rows as left-aligned columns. */
function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd();
  return [line(header), ...rows.map(line)].join("\n") + "\n";
}

/** A session as status shows it: its id, and the token that opened it when there are tokens (never its secret). */
const who = (entry: { session: string; owner?: string }) => (entry.owner === undefined ? entry.session : `${entry.session}[${entry.owner}]`);

export function formatStatus(status: LockStatus): string {
  // The role it has now; after a failover, also the cluster file's ("primary, backup in the cluster file").
  const { id, role, configuredRole } = status.node;
  const roleText = configuredRole !== undefined && configuredRole !== role ? `${role}, ${configuredRole} in the cluster file` : role;
  let out = `node ${id} (${roleText})${status.node.version === undefined ? "" : `, version ${status.node.version}`}, last fencing token ${status.lastToken}\n\n`;
  out += `LOCKS (${status.locks.length})\n`;
  out += table(
    ["NAME", "HOLDERS (session token mode held)", "WAITERS (position session mode waiting)", "DELAY"],
    status.locks.map((lock) => [
      lock.name,
      lock.holders.map((h) => `${who(h)} ${h.token} ${h.mode} ${age(h.heldForMs)}`).join("; ") || "-",
      lock.waiters.map((w) => `${w.position}. ${who(w)} ${w.mode} ${age(w.waitingForMs)}`).join("; ") || "-",
      lock.lockDelayRemainingMs > 0 ? age(lock.lockDelayRemainingMs) : "-",
    ]),
  );
  out += `\nSESSIONS (${status.sessions.length})\n`;
  out += table(
    ["SESSION", "OWNER", "TTL", "AGE", "EXPIRES IN", "LOCKS"],
    status.sessions.map((s) => [s.session, s.owner ?? "-", age(s.ttlMs), age(s.ageMs), age(s.expiresInMs), s.locks.join(",") || "-"]),
  );
  return out;
}
