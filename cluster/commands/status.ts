/**
 * `mutexd status [--config FILE | --server URL] [--json]`: the lock table (holders, tokens,
 * waiters, ages) and the sessions, as tables for people or JSON for scripts.
 */
import process from "node:process";
import type { ArbiterStatus } from "../arbiter/server.ts";
import { nodeUrl } from "../config.ts";
import { DEFAULT_SETTINGS } from "../../lib/settings.ts";
import type { LockStatus } from "../lock/api.ts";
import { EXIT, lockServers, parseFlags, runCommand } from "./common.ts";

const HELP = `Usage: mutexd status [--config FILE | --server URL] [--json]

Shows each lock server (role, epoch, whether it serves, lease left and who backs it: the arbiter,
the backup's promise or both; backup sync state and lag),
the arbiter's record, and the lock table of the serving server: each lock's holders (session,
with its owner's token name in [] when clients use tokens; fencing token, mode, how long held),
its FIFO queue, any lock-delay left, and the sessions. Session secrets are never shown.
  --json   print it all as JSON (for scripts)
Exit codes: 0 shown, 2 usage or cluster-file error, 5 no server answered.
`;

// The servers' own answer types, so a field they add or rename breaks this at type-check.
interface ServerReport {
  url: string;
  status?: LockStatus;
  error?: string;
}

interface ArbiterReport {
  url: string;
  arbiter?: ArbiterStatus["arbiter"];
  error?: string;
}

async function getJson<T>(url: string, timeoutMs: number): Promise<T> {
  const response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  if (!response.ok) throw new Error(`status ${response.status}`);
  return await response.json() as T;
}

export function run(argv: string[]): Promise<number> {
  return runCommand(HELP, argv, async () => {
    const { values } = parseFlags(argv, {
      config: { type: "string" },
      server: { type: "string" },
      json: { type: "boolean" },
    }, false);
    const { urls, cluster } = lockServers(values);
    const { requestTimeoutMs } = cluster?.settings ?? DEFAULT_SETTINGS;
    const servers: ServerReport[] = await Promise.all(urls.map(async (url) => {
      try {
        return { url, status: await getJson<LockStatus>(`${url}/v1/status`, requestTimeoutMs) };
      } catch (error) {
        return { url, error: (error as Error).message };
      }
    }));
    const arbiterNode = cluster?.nodes.find((n) => n.role === "arbiter");
    let arbiter: ArbiterReport | undefined;
    if (arbiterNode) {
      const url = nodeUrl(arbiterNode);
      try {
        arbiter = { url, ...(await getJson<ArbiterStatus>(`${url}/v1/status`, requestTimeoutMs)) };
      } catch (error) {
        arbiter = { url, error: (error as Error).message };
      }
    }
    const answering = servers.filter((s) => s.status);
    if (answering.length === 0) {
      process.stderr.write(`mutexd: no lock server answered: ${servers.map((s) => `${s.url} (${s.error})`).join(", ")}\n`);
      return EXIT.unavailable;
    }
    // The lock table of the server that serves; else of the first that answered.
    const shown = answering.find((s) => s.status!.server?.serving) ?? answering[0];
    if (values.json) {
      process.stdout.write(JSON.stringify({ ...shown.status, shownFrom: shown.url, servers, arbiter }, null, 2) + "\n");
    } else {
      process.stdout.write(formatServers(servers, arbiter) + "\n" + formatStatus(shown.status!));
    }
    return EXIT.ok;
  });
}

function formatServers(servers: ServerReport[], arbiter: ArbiterReport | undefined): string {
  let out = "SERVERS\n" + table(
    ["ID", "URL", "ROLE", "EPOCH", "SERVING", "LEASE", "BACKUP (mode acked lag)", "INDEX"],
    servers.map(({ url, status, error }) => {
      const s = status?.server;
      if (!status || !s) return [status?.node.id ?? "?", url, error ? `unreachable (${error})` : "?", "", "", "", "", ""];
      const backup = s.backup ? `${s.backup.id} ${s.backup.mode} ${s.backup.ackedIndex} ${s.backup.lagEntries}` : "-";
      return [status.node.id, url, s.role, String(s.epoch), s.serving ? "yes" : "no", leaseCell(s), backup, String(s.lastIndex)];
    }),
  );
  if (arbiter) {
    const a = arbiter.arbiter;
    out += a
      ? `ARBITER ${arbiter.url}: epoch ${a.epoch}, primary ${a.primary}, backup ${a.backup} ${a.backupInSync ? "in sync" : "out of sync"}, lease ${age(a.leaseRemainingMs)} left` +
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
  let out = `node ${status.node.id} (${status.node.role}), last fencing token ${status.lastToken}\n\n`;
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
