/**
 * `mutexd lock NAME [...] -- CMD…`: runs CMD while holding NAME. CMD sees MUTEXD_TOKEN (the
 * fencing token), MUTEXD_LOCK and the lease's MUTEXD_DEADLINE. Without `-- CMD` it holds NAME
 * until SIGINT or SIGTERM (as `etcdctl lock NAME`). If the lock is lost while CMD runs, CMD is stopped (SIGTERM,
 * then SIGKILL after the grace) at once: `consul lock` let a child run ~90 s after losing its
 * lock (hashicorp/consul#9788); mutexd does not.
 */
import process from "node:process";
import { connect, NotAcquiredError } from "../../lib/client/lock_client.ts";
import { MutexdError } from "../../lib/wire/errors.ts";
import { DEFAULT_SETTINGS } from "../../lib/settings.ts";
import { CA_FLAG, CA_HELP, caFrom, clientToken, EXIT, lockServers, parseDuration, parseFlags, runCommand, splitAtDoubleDash, TOKEN_FLAGS, TOKEN_HELP, UsageError } from "./common.ts";
import { holdUntilSignal, runWhileHeld } from "./hold.ts";

const HELP = `Usage: mutexd lock NAME [--config FILE | --server URL] [--ca FILE] [--token-file FILE]
                  [--ttl DUR] [--wait DUR] [--shared] [--lock-delay DUR] [--grace DUR] [-- CMD [ARG…]]

Acquires the lock NAME, runs CMD with MUTEXD_TOKEN (fencing token, a decimal integer that only
grows) and MUTEXD_LOCK in its environment, keeps the session alive while CMD runs, releases the
lock when CMD exits, and exits with CMD's status. Everything after the first -- is CMD and its
arguments, even --help or --config.

Without -- CMD: prints the token, holds the lock until SIGINT or SIGTERM, then releases it
(exit 0), as \`etcdctl lock NAME\` does.

CMD also sees MUTEXD_DEADLINE (wall-clock ISO time) and MUTEXD_DEADLINE_MS (milliseconds left):
when the lease ends unless mutexd renews it, as of CMD's start (not updated). Until then the lock
is CMD's even if mutexd is stopped (SIGSTOP) and cannot stop CMD, unless an operator takes it
(mutexd release --force): check it before a side effect, and pass MUTEXD_TOKEN to the resource.
On Linux CMD is started through \`setpriv --pdeathsig KILL\` (when setpriv exists), so it dies if
mutexd is killed (SIGKILL); elsewhere it outlives a killed mutexd.

  --config FILE     cluster file (its primary, then backup); or MUTEXD_CONFIG
  --server URL      lock server URL(s) or host:port (http, https with a CA), comma-separated; or MUTEXD_SERVER
${CA_HELP}
${TOKEN_HELP}
  --ttl DUR         session TTL (default ${DEFAULT_SETTINGS.sessionTtlMs / 1000}s): if keepalives stop this long, the lock is freed
  --wait DUR        how long to wait for the lock (default: forever); --wait 0 is a try-lock
  --shared          take a shared (reader) lock instead of an exclusive one
  --lock-delay DUR  if this holder dies, nobody gets the lock for DUR (default 0)
  --grace DUR       when the lock is lost: SIGTERM, then SIGKILL after DUR (default ${DEFAULT_SETTINGS.killGraceMs / 1000}s)

Exit codes: CMD's status when it ran (128+N when killed by signal N);
  2 usage or cluster-file error; 3 lock not acquired (taken, --wait ran out);
  4 lock lost while CMD ran (CMD was stopped), or found released by another party at release;
  5 server unreachable or error (also: no or an
  unknown token, 401; a token without lock permission on NAME, 403).
Durations: 500ms, 2s, 1.5m, 1h, 0.
`;

/** What `lock` parses, and what `mutexd completion` offers. */
export const flags = {
  config: { type: "string" },
  server: { type: "string" },
  ...CA_FLAG,
  ...TOKEN_FLAGS,
  ttl: { type: "string" },
  wait: { type: "string" },
  shared: { type: "boolean" },
  "lock-delay": { type: "string" },
  grace: { type: "string" },
} as const;

export function run(argv: string[]): Promise<number> {
  return runCommand(HELP, argv, async () => {
    const { own, command } = splitAtDoubleDash(argv);
    if (command !== undefined && command.length === 0) throw new UsageError("missing the command to run after -- (or leave out -- to hold the lock until a signal)");
    const { values, positionals } = parseFlags(own, flags);
    if (positionals.length !== 1) throw new UsageError(positionals.length === 0 ? "give the lock NAME" : `give exactly one lock NAME (got ${positionals.length}; a command to run goes after --)`);
    const name = positionals[0];
    const { urls, cluster } = lockServers(values);
    const settings = cluster?.settings ?? DEFAULT_SETTINGS;
    const ttlMs = values.ttl ? parseDuration(values.ttl, "--ttl") : settings.sessionTtlMs;
    const waitMs = values.wait ? parseDuration(values.wait, "--wait") : Number.MAX_SAFE_INTEGER;
    const lockDelayMs = values["lock-delay"] ? parseDuration(values["lock-delay"], "--lock-delay") : 0;
    const graceMs = values.grace ? parseDuration(values.grace, "--grace") : settings.killGraceMs;

    const ca = caFrom(values.ca, cluster);
    const client = connect({ servers: urls, requestTimeoutMs: settings.requestTimeoutMs, tls: ca === undefined ? undefined : { ca }, token: clientToken(values) });
    let handle;
    try {
      handle = await client.lock(name, { ttlMs, waitMs, shared: values.shared ?? false, lockDelayMs });
    } catch (error) {
      if (error instanceof NotAcquiredError) {
        process.stderr.write(`mutexd: not acquired: ${error.message}\n`);
        return EXIT.notAcquired;
      }
      if (error instanceof MutexdError) {
        process.stderr.write(`mutexd: ${error.code}: ${error.message}\n`);
        return error.code === "bad_request" ? EXIT.usage : EXIT.unavailable;
      }
      throw error;
    }
    const lock = handle;
    const hold = { signal: lock.signal, release: () => lock.release(), describe: `lock ${name}`, remainingMs: () => lock.session.leaseRemainingMs };
    if (command === undefined) {
      process.stdout.write(`${lock.token}\n`);
      return await holdUntilSignal(hold);
    }
    return await runWhileHeld(command, { MUTEXD_TOKEN: String(lock.token), MUTEXD_LOCK: name }, hold, graceMs);
  });
}
