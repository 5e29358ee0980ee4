/**
 * `mutexd arbiter recover --config FILE --id ID`: brings a replacement arbiter in after its disk
 * was lost (docs/failover.md, "The arbiter loses its disk"). Run it with the arbiter stopped; it
 * reads both lock servers' `GET /v1/status`, decides the record (lib/core/arbiter/recover.ts, or
 * refuses, saying why) and writes it durably where the arbiter `ID` keeps it; then start the
 * arbiter.
 */
import process from "node:process";
import type { ArbiterState } from "../../lib/core/arbiter/arbiter.ts";
import { recoverRecord, type ServerReport } from "../../lib/core/arbiter/recover.ts";
import { encodeArbiterState, loadArbiterState } from "../arbiter/server.ts";
import { nodeUrl } from "../config.ts";
import { fetchFor } from "../runtime.ts";
import { writeDurably } from "../durable_file.ts";
import { checkDiskFormat, DiskFormatError } from "../format_version.ts";
import type { LockStatus } from "../lock/api.ts";
import { clientToken, clusterFrom, EXIT, parseFlags, runCommand, TOKEN_FLAGS, TOKEN_HELP, UsageError } from "./common.ts";
import { type FetchPort, httpRequest, realTimers } from "../../lib/client/http.ts";
import { MutexdError } from "../../lib/wire/errors.ts";

const HELP = `Usage: mutexd arbiter recover --config FILE --id ID [--token-file FILE]

Writes the record of arbiter ID after its disk was lost or replaced, from what both lock servers
report: the primary's epoch, whether its backup is in sync, its report sequence, the longest
session TTL and the fencing-token ceiling its table needs. Run it while the arbiter is stopped,
then start the arbiter. It refuses (exit 5, saying why) unless both lock servers answer and
exactly one of them is primary of the highest epoch, or while the arbiter answers.
${TOKEN_HELP}
                    (the lock servers' status needs admin on every name, prefix "")
Exit codes: 0 written, 2 usage or cluster-file error (also: the dataDir has another major disk format version), 5 refused.
`;

/** Thrown when a server refused the token: recover says so rather than "did not answer". */
class Refused extends Error {}

/** `GET path` as JSON, undefined when the server does not answer; a refused token throws Refused. */
async function getJson<T>(fetchFn: FetchPort, base: string, path: string, timeoutMs: number, token: string | undefined): Promise<T | undefined> {
  try {
    return await httpRequest<T>({ base, method: "GET", path, timeoutMs, token }, { fetch: fetchFn, timers: realTimers });
  } catch (error) {
    if (error instanceof MutexdError && (error.code === "unauthorized" || error.code === "forbidden")) {
      throw new Refused(`${base}: ${error.code}: ${error.message}`);
    }
    return undefined;
  }
}

/** What `arbiter recover` parses, and what `mutexd completion` offers. */
const flags = { config: { type: "string" }, id: { type: "string" }, ...TOKEN_FLAGS } as const;
export const subcommands = { recover: flags };

export function run(argv: string[]): Promise<number> {
  return runCommand(HELP, argv, async () => {
    const { values, positionals } = parseFlags(argv, flags);
    if (positionals[0] !== "recover" || positionals.length !== 1) throw new UsageError("the one arbiter command is: recover");
    const cluster = clusterFrom(values.config);
    if (!cluster) throw new UsageError("--config FILE is required");
    const arbiter = cluster.nodes.find((n) => n.id === values.id && n.role === "arbiter");
    if (!arbiter) throw new UsageError(`--id must name an arbiter of ${cluster.file}`);
    const timeoutMs = cluster.settings.requestTimeoutMs;
    const fetchFn = fetchFor(cluster.tlsCa) as FetchPort;
    const token = clientToken(values);
    const refuse = (reason: string) => {
      process.stderr.write(`mutexd: not recovered: ${reason}\n`);
      return EXIT.unavailable;
    };
    // A running arbiter decides from its own memory: stop it first, so nothing changes meanwhile.
    if (await getJson(fetchFn, nodeUrl(arbiter), "/v1/health", timeoutMs, undefined)) return refuse(`arbiter ${arbiter.id} answers: stop it first`);
    const servers = cluster.nodes.filter((n) => n.role === "primary" || n.role === "backup");
    if (servers.length !== 2) return refuse("the cluster file needs a primary and a backup");
    let reports: ServerReport[];
    try {
      reports = await Promise.all(servers.map(async (n): Promise<ServerReport> => ({
        id: n.id,
        status: (await getJson<LockStatus>(fetchFn, nodeUrl(n), "/v1/status", timeoutMs, token))?.server,
      })));
    } catch (error) {
      if (error instanceof Refused) return refuse(error.message);
      throw error;
    }
    // The record is written in this build's disk format: not into a dataDir of another major.
    try {
      checkDiskFormat(arbiter.dataDir);
    } catch (error) {
      if (!(error instanceof DiskFormatError)) throw error;
      process.stderr.write(`mutexd: not recovered: ${error.message}\n`);
      return EXIT.usage;
    }
    const file = `${arbiter.dataDir}/arbiter.json`;
    let existing: ArbiterState | null;
    try {
      existing = loadArbiterState(file);
    } catch (error) {
      // A record of another major format is no damage: this build must not replace it.
      if (error instanceof DiskFormatError) {
        process.stderr.write(`mutexd: not recovered: ${error.message}\n`);
        return EXIT.usage;
      }
      existing = null; // unreadable: the disk is what is being replaced
    }
    const decision = recoverRecord([reports[0], reports[1]], existing);
    if (!decision.ok) return refuse(decision.reason);
    writeDurably(file, encodeArbiterState(decision.record));
    process.stdout.write(`${file}: ${JSON.stringify(decision.record)}\n`);
    return EXIT.ok;
  });
}
