/**
 * `mutexd status [--config FILE | --server URL] [--json]`: the lock table (holders, tokens,
 * waiters, ages) and the sessions, as tables for people or JSON for scripts.
 */
import process from "node:process";
import { connect, type StatusAnswer } from "../../lib/client/lock_client.ts";
import { MutexdError } from "../../lib/wire/errors.ts";
import { EXIT, lockServers, parseFlags, runCommand } from "./common.ts";

const HELP = `Usage: mutexd status [--config FILE | --server URL] [--json]

Shows the lock table of the serving lock server: each lock's holders (session, fencing token,
mode, how long held), its FIFO queue, any lock-delay left, and the open sessions.
  --json   print the server's answer as JSON (for scripts)
Exit codes: 0 shown, 2 usage or cluster-file error, 5 no server answered.
`;

export function run(argv: string[]): Promise<number> {
  return runCommand(HELP, argv, async () => {
    const { values } = parseFlags(argv, {
      config: { type: "string" },
      server: { type: "string" },
      json: { type: "boolean" },
    }, false);
    const { urls } = lockServers(values);
    let status: StatusAnswer;
    try {
      status = await connect({ servers: urls }).status();
    } catch (error) {
      if (error instanceof MutexdError) {
        process.stderr.write(`mutexd: ${error.code}: ${error.message}\n`);
        return EXIT.unavailable;
      }
      throw error;
    }
    process.stdout.write(values.json ? JSON.stringify(status, null, 2) + "\n" : formatStatus(status));
    return EXIT.ok;
  });
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

export function formatStatus(status: StatusAnswer): string {
  let out = `node ${status.node.id} (${status.node.role}), last fencing token ${status.lastToken}\n\n`;
  out += `LOCKS (${status.locks.length})\n`;
  out += table(
    ["NAME", "HOLDERS (session token mode held)", "WAITERS (position session mode waiting)", "DELAY"],
    status.locks.map((lock) => [
      lock.name,
      lock.holders.map((h) => `${h.session} ${h.token} ${h.mode} ${age(h.heldForMs)}`).join("; ") || "-",
      lock.waiters.map((w) => `${w.position}. ${w.session} ${w.mode} ${age(w.waitingForMs)}`).join("; ") || "-",
      lock.lockDelayRemainingMs > 0 ? age(lock.lockDelayRemainingMs) : "-",
    ]),
  );
  out += `\nSESSIONS (${status.sessions.length})\n`;
  out += table(
    ["SESSION", "TTL", "AGE", "EXPIRES IN", "LOCKS"],
    status.sessions.map((s) => [s.session, age(s.ttlMs), age(s.ageMs), age(s.expiresInMs), s.locks.join(",") || "-"]),
  );
  return out;
}
