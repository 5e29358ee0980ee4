/**
 * `mutexd release NAME --force`: an operator's release of a lock from whoever holds it (a holder
 * that hangs, a lock left by a lost machine before its TTL). The holder's lock-delay applies, the
 * fencing counter moves past its token, and the queue moves on; the holder's `mutexd lock` notices
 * within a keepalive period, stops its command and exits 4.
 */
import process from "node:process";
import { connect } from "../../lib/client/lock_client.ts";
import { MutexdError } from "../../lib/wire/errors.ts";
import { DEFAULT_SETTINGS } from "../../lib/settings.ts";
import { CA_FLAG, CA_HELP, caFrom, clientToken, EXIT, lockServers, parseFlags, runCommand, TOKEN_FLAGS, TOKEN_HELP, UsageError } from "./common.ts";

const HELP = `Usage: mutexd release NAME --force [--config FILE | --server URL] [--ca FILE] [--token-file FILE] [--json]

Releases the lock NAME from whoever holds it (every holder of a shared lock), as if the holder had
died: its lock-delay applies, the fencing counter moves past its token (the resource refuses the
old holder's writes once it saw a newer token), and the next waiter gets the lock. The holder's
\`mutexd lock\` notices within a keepalive period (TTL/3), stops its command and exits 4. A lock is
released by its holder; --force says you mean someone else's. It needs a client token with admin
permission on NAME: a cluster without client tokens ([[tokens]]) refuses it.

  --force           required: release whoever holds NAME
  --config FILE     cluster file (its primary, then backup); or MUTEXD_CONFIG
  --server URL      lock server URL(s) or host:port, comma-separated; or MUTEXD_SERVER
${CA_HELP}
${TOKEN_HELP}
  --json            print the answer as JSON: {"name", "tokens"} (the released holders' tokens)

Exit codes: 0 released; 2 usage or cluster-file error; 5 server unreachable or error (also: nobody
holds NAME, lock_not_found; no token with admin on NAME, or no client tokens at all, 403).
`;

export const flags = {
  force: { type: "boolean" },
  config: { type: "string" },
  server: { type: "string" },
  ...CA_FLAG,
  ...TOKEN_FLAGS,
  json: { type: "boolean" },
} as const;

export function run(argv: string[]): Promise<number> {
  return runCommand(HELP, argv, async () => {
    const { values, positionals } = parseFlags(argv, flags);
    if (positionals.length !== 1) throw new UsageError("give exactly one lock NAME");
    if (!values.force) throw new UsageError("a lock is released by its holder; --force releases it from whoever holds it");
    const name = positionals[0];
    const { urls, cluster } = lockServers(values);
    const settings = cluster?.settings ?? DEFAULT_SETTINGS;
    const ca = caFrom(values.ca, cluster);
    const client = connect({ servers: urls, requestTimeoutMs: settings.requestTimeoutMs, tls: ca === undefined ? undefined : { ca }, token: clientToken(values) });
    try {
      const released = await client.forceRelease(name);
      const tokens = Array.isArray(released.tokens) ? released.tokens : [];
      process.stdout.write(values.json ? `${JSON.stringify({ name, tokens })}\n` : `released lock ${name} (token ${tokens.join(", ")})\n`);
      return EXIT.ok;
    } catch (error) {
      if (!(error instanceof MutexdError)) throw error;
      process.stderr.write(`mutexd: ${error.code}: ${error.message}\n`);
      return error.code === "bad_request" ? EXIT.usage : EXIT.unavailable;
    }
  });
}
