/**
 * `mutexd ring …`: the token ring from the command line: a critical section around a command,
 * and the replicated key/value map (put, get, delete, keys), and a node's status.
 */
import process from "node:process";
import { connectRing, type RingClient, RingNotAcquiredError } from "../../lib/client/ring_client.ts";
import { DEFAULT_SETTINGS, type Settings } from "../../lib/settings.ts";
import { MutexdError } from "../../lib/wire/errors.ts";
import { type ClusterConfig, findNode, nodeUrl } from "../config.ts";
import { CA_FLAG, CA_HELP, caFrom, caGiven, clientToken, clusterFrom, commandToRun, didYouMean, EXIT, parseDuration, parseFlags, runCommand, serverUrl, TOKEN_FLAGS, TOKEN_HELP, UsageError } from "./common.ts";
import { runWhileHeld } from "./hold.ts";

const WHERE = `  --config FILE     cluster file; with --id ID that ring node, else the first ring node (or MUTEXD_CONFIG)
  --id ID           the ring node of the cluster file to talk to
  --server URL      the ring node's URL or host:port (or MUTEXD_RING_SERVER, which \`ring lock\` sets for CMD)
${CA_HELP}
${TOKEN_HELP}
                    (ring lock: lock on "@ring"; put/delete: lock on KEY; get: read on KEY)`;

const HELP = `Usage: mutexd ring <lock|put|get|delete|keys|status> [options]   (mutexd ring <sub> --help)

  lock  [--wait DUR] [--lease DUR] [--grace DUR] -- CMD [ARG…]   run CMD in a critical section
  put KEY VALUE        write a key (inside \`ring lock\`: in that section; else in a short one of its own)
  get KEY [--dirty]    read a key (committed by default; --dirty includes writes still travelling)
  delete KEY           delete a key (like put)
  keys [--dirty]       list the keys
  status [--json]      the node's view (members, epoch, last view change), token, neighbours, lease, commit watermark

Where:
${WHERE}
`;

const LOCK_HELP = `Usage: mutexd ring lock [--config FILE --id ID | --server URL] [--ca FILE] [--token-file FILE]
                       [--wait DUR] [--lease DUR] [--grace DUR] -- CMD [ARG…]

Waits for the ring node's critical section, runs CMD with MUTEXD_TOKEN (the fencing token: a
decimal integer that only grows, also across token regenerations), MUTEXD_LOCK=ring and
MUTEXD_RING_SERVER in its environment (and MUTEXD_AUTH_TOKEN, the client token, if one was
given, and MUTEXD_CA if --ca was: with a CA from the cluster file only, give --ca too when CMD
runs mutexd ring put), leaves the section when CMD exits, and exits with CMD's status. \`mutexd ring
put/get/delete\` run by CMD use the section. When the section's lease ends
first, CMD gets SIGTERM, then SIGKILL after the grace, and mutexd exits 4. Everything after the
first -- is CMD and its arguments, even --help or --config.
CMD also sees MUTEXD_DEADLINE (wall-clock ISO time) and MUTEXD_DEADLINE_MS: when the lease ends.
On Linux CMD starts through \`setpriv --pdeathsig KILL\` (when setpriv exists): it dies with mutexd.

${WHERE}
  --wait DUR        how long to wait for the section (default: ${DEFAULT_SETTINGS.waitMaxMs / 3_600_000}h). 0 tries: it fails
                    at once when a section runs on this node or a waiter is ahead; else it is
                    granted on the token's next visit, which can take up to one rotation,
                    other nodes' sections included (each at most its lease)
  --lease DUR       the section's lease (default: the node's ringLeaseMs, ${DEFAULT_SETTINGS.ringLeaseMs / 1000}s)
  --grace DUR       SIGTERM, then SIGKILL after DUR when the lease ends (default ${DEFAULT_SETTINGS.killGraceMs / 1000}s)

Exit codes: CMD's status when it ran (128+N when killed by signal N); 2 usage error;
  3 not acquired (--wait ran out, or a try found it taken); 4 the lease ended while CMD ran
  (CMD was stopped); 5 node unreachable or error.
`;

const KV_HELP = `Usage: mutexd ring put KEY VALUE [where] [--fence N] [--wait DUR] [--json]
       mutexd ring delete KEY [where] [--fence N] [--wait DUR] [--json]
       mutexd ring get KEY [where] [--dirty]
       mutexd ring keys [where] [--dirty]

put and delete return once the write went around the whole ring (every node applied it), and
print "put KEY at write N (section F), applied by every ring node" (--json: {"op", "key",
"wseq", "fence"}), N being the write's sequence number in the ring's log. Inside
\`mutexd ring lock\` they write in that section (MUTEXD_TOKEN); elsewhere they take a short section
of their own, waiting up to --wait (default ${DEFAULT_SETTINGS.ringWriteWaitMs / 1000}s). get and keys read the node's committed data;
--dirty includes writes still travelling the ring.

${WHERE}
  --fence N         write in section N (default: MUTEXD_TOKEN when run by \`mutexd ring lock\`)
  --json            put/delete: print the result as JSON

Exit codes: 0 ok; 1 get: no such key; 2 usage error; 3 put/delete: no section within --wait;
  4 the section ended before the write; 5 node unreachable or error.
`;

const STATUS_HELP = `Usage: mutexd ring status [where] [--json]

Shows the node's epoch, where the token is (held, sending, away), its neighbours, the last
rotation time, the fencing counter, the log and commit watermark, and the current section.

${WHERE}
  --json            print the raw JSON answer

Exit codes: 0 ok; 2 usage error; 5 node unreachable or error.
`;

const WHERE_FLAGS = {
  config: { type: "string" },
  id: { type: "string" },
  server: { type: "string" },
  ...CA_FLAG,
  ...TOKEN_FLAGS,
} as const;
const LOCK_FLAGS = { ...WHERE_FLAGS, wait: { type: "string" }, lease: { type: "string" }, grace: { type: "string" } } as const;
const WRITE_FLAGS = { ...WHERE_FLAGS, fence: { type: "string" }, wait: { type: "string" }, json: { type: "boolean" } } as const;
const READ_FLAGS = { ...WHERE_FLAGS, dirty: { type: "boolean" } } as const;
const STATUS_FLAGS = { ...WHERE_FLAGS, json: { type: "boolean" } } as const;

/** Each ring subcommand's flags: what it parses, and what `mutexd completion` offers. */
export const subcommands = { lock: LOCK_FLAGS, put: WRITE_FLAGS, get: READ_FLAGS, delete: WRITE_FLAGS, keys: READ_FLAGS, status: STATUS_FLAGS };
const RING_SUBCOMMANDS = Object.keys(subcommands);

export function run(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case "lock":
      return runCommand(LOCK_HELP, rest, () => lock(rest));
    case "put":
    case "delete":
      return runCommand(KV_HELP, rest, () => write(sub, rest));
    case "get":
    case "keys":
      return runCommand(KV_HELP, rest, () => read(sub, rest));
    case "status":
      return runCommand(STATUS_HELP, rest, () => status(rest));
    default:
      return runCommand(HELP, argv, () => {
        throw new UsageError(sub === undefined ? "missing the ring subcommand" : `unknown ring subcommand ${JSON.stringify(sub)}${didYouMean(sub, RING_SUBCOMMANDS)}`);
      });
  }
}

/** The ring node to talk to, and the settings of its cluster file (defaults without one). */
function target(values: { config?: string; id?: string; server?: string; ca?: string; token?: string; "token-file"?: string }): { client: RingClient; settings: Settings; token?: string } {
  const token = clientToken(values);
  const tlsFor = (cluster?: ClusterConfig) => {
    const ca = caFrom(values.ca, cluster);
    return ca === undefined ? undefined : { ca };
  };
  if (values.server !== undefined) {
    const server = serverUrl(values.server, "--server", caGiven(values.ca));
    return { client: connectRing({ server, tls: tlsFor(), token }), settings: DEFAULT_SETTINGS, token };
  }
  if (values.config || values.id || !process.env.MUTEXD_RING_SERVER) {
    const cluster = clusterFrom(values.config);
    if (!cluster) {
      throw new UsageError("say which ring node: --server URL or --config FILE [--id ID] (or MUTEXD_RING_SERVER / MUTEXD_CONFIG)");
    }
    const node = values.id ? findNode(cluster, values.id) : cluster.nodes.find((n) => n.role === "ring");
    if (!node) throw new UsageError(`${cluster.file} has no ring node`);
    if (node.role !== "ring") throw new UsageError(`node ${node.id} has role ${node.role}, not ring`);
    const client = connectRing({ server: nodeUrl(node), requestTimeoutMs: cluster.settings.requestTimeoutMs, tls: tlsFor(cluster), token });
    return { client, settings: cluster.settings, token };
  }
  const server = serverUrl(process.env.MUTEXD_RING_SERVER!, "MUTEXD_RING_SERVER", caGiven(values.ca));
  return { client: connectRing({ server, tls: tlsFor(), token }), settings: DEFAULT_SETTINGS, token };
}

/** Maps client errors to exit codes with one line on stderr. */
function failure(error: unknown): number {
  if (error instanceof RingNotAcquiredError) {
    process.stderr.write(`mutexd: ${error.message}\n`);
    return EXIT.notAcquired;
  }
  if (error instanceof MutexdError) {
    process.stderr.write(`mutexd: ${error.code}: ${error.message}\n`);
    if (error.code === "bad_request") return EXIT.usage;
    if (error.code === "not_in_section" || error.code === "lock_lost") return EXIT.lost;
    return EXIT.unavailable;
  }
  throw error;
}

async function lock(argv: string[]): Promise<number> {
  const { own, command } = commandToRun(argv);
  const { values } = parseFlags(own, LOCK_FLAGS, false);
  const { client, settings, token } = target(values);
  const waitMs = values.wait ? parseDuration(values.wait, "--wait") : settings.waitMaxMs;
  const leaseMs = values.lease ? parseDuration(values.lease, "--lease") : undefined;
  const graceMs = values.grace ? parseDuration(values.grace, "--grace") : settings.killGraceMs;
  let section;
  try {
    section = await client.lock({ waitMs, leaseMs });
  } catch (error) {
    return failure(error);
  }
  // CMD's own `mutexd ring put` reaches the node as this command did: its URL, the CA named by
  // --ca, and the client token (in the environment, which only this user can read, unlike a command line).
  const env = {
    MUTEXD_TOKEN: String(section.token),
    MUTEXD_LOCK: "ring",
    MUTEXD_RING_SERVER: client.server,
    ...(values.ca !== undefined ? { MUTEXD_CA: values.ca } : {}),
    ...(token !== undefined ? { MUTEXD_AUTH_TOKEN: token } : {}),
  };
  const hold = { signal: section.signal, release: () => section.release(), describe: `ring section ${section.token}`, remainingMs: () => section.remainingMs };
  return await runWhileHeld(command, env, hold, graceMs);
}

async function write(sub: "put" | "delete", argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, WRITE_FLAGS);
  const arity = sub === "put" ? 2 : 1;
  if (positionals.length !== arity) throw new UsageError(sub === "put" ? "give KEY and VALUE" : "give KEY");
  const [key, value] = positionals;
  const { client, settings } = target(values);
  const inherited = process.env.MUTEXD_LOCK === "ring" ? process.env.MUTEXD_TOKEN : undefined;
  const fenceText = values.fence ?? inherited;
  if (fenceText !== undefined && !/^\d+$/.test(fenceText)) throw new UsageError(`--fence must be a decimal integer`);
  const apply = (fence: number) => sub === "put" ? client.put(fence, key, value) : client.delete(fence, key);
  try {
    let wseq: number;
    let fence: number;
    if (fenceText !== undefined) {
      fence = Number(fenceText);
      wseq = await apply(fence);
    } else {
      const waitMs = values.wait ? parseDuration(values.wait, "--wait") : settings.ringWriteWaitMs;
      // The node's own lease (its ringLeaseMs): with --server this command has no cluster file, and
      // the default settings' lease may be above the node's ringLeaseMaxMs.
      const section = await client.lock({ waitMs });
      fence = section.token;
      try {
        wseq = await apply(fence);
      } finally {
        await section.release().catch(() => {});
      }
    }
    // The write's sequence number in the ring's log (docs/ring.md, "wseq"): every node applied it.
    process.stdout.write(values.json
      ? JSON.stringify({ op: sub, key, wseq, fence }) + "\n"
      : `${sub === "put" ? "put" : "deleted"} ${key} at write ${wseq} (section ${fence}), applied by every ring node\n`);
    return EXIT.ok;
  } catch (error) {
    return failure(error);
  }
}

async function read(sub: "get" | "keys", argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, READ_FLAGS);
  if (positionals.length !== (sub === "get" ? 1 : 0)) throw new UsageError(sub === "get" ? "give exactly one KEY" : "keys takes no KEY");
  const { client } = target(values);
  const dirty = values.dirty ?? false;
  try {
    if (sub === "keys") {
      const keys = await client.keys({ dirty });
      process.stdout.write(keys.map((k) => `${k}\n`).join(""));
      return EXIT.ok;
    }
    const found = await client.get(positionals[0], { dirty });
    if (!found) {
      process.stderr.write(`mutexd: no key ${JSON.stringify(positionals[0])}\n`);
      return 1;
    }
    process.stdout.write(`${found.value}\n`);
    return EXIT.ok;
  } catch (error) {
    return failure(error);
  }
}

async function status(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, STATUS_FLAGS, false);
  const { client } = target(values);
  try {
    const s = await client.status();
    if (values.json) {
      process.stdout.write(JSON.stringify(s, null, 2) + "\n");
      return EXIT.ok;
    }
    const ms = (v: number | null) => (v === null ? "-" : `${v} ms`);
    const view = s.view?.view;
    const change = s.view?.lastChange;
    const lines = [
      `node        ${s.id}${s.version === undefined ? "" : ` (version ${s.version})`}   ring ${s.members.join(" → ")} → ${s.members[0]}` +
      `${s.members.length < s.ring.length ? `   (out of the view: ${s.ring.filter((id) => !s.members.includes(id)).join(", ")})` : ""}`,
      `neighbours  predecessor ${s.predecessor}, successor ${s.successor}`,
      `view        ${view ? `epoch ${view.epoch} by ${view.coordinator}, token made by ${view.regenerator}, grant wait ${view.grantWaitMs} ms` : "none yet"}` +
      `${s.view && !s.view.member ? "   NOT A MEMBER (rejoining)" : ""}${s.view?.wanted ? `   (view change wanted: ${s.view.wanted})` : ""}`,
      `last change ${!change ? "-" : `${change.reason}: ${change.installedAtMs === null ? "in progress" : `epoch ${change.epoch} after ${change.installedAtMs - change.wantedAtMs} ms`}`}`,
      `epoch       ${s.epoch}   fencing counter ${s.fenceMax}`,
      `token       ${s.token}   last seen ${ms(s.lastTokenAgeMs)} ago, hop ${s.lastHop}, last rotation ${ms(s.lastRotationMs)}`,
      `section     ${s.section ? `fence ${s.section.fence}, held ${s.section.heldForMs} ms, lease left ${s.section.leaseRemainingMs} ms` : "none"}   waiters ${s.waiters}`,
      `lease       ${!s.lease ? "-" : s.lease.quorum === "ok" ? "majority backs it" : `MINORITY, grants nothing (${s.lease.reason})`}` +
      `${s.lease?.validUntilMs == null ? "" : "   (valid now)"}`,
      `log         applied ${s.lastApplied}, committed ${s.commit}, kept from ${s.logStart}${s.catchingUp ? "   (catching up)" : ""}`,
      ...(s.suspicions.length === 0 ? ["suspicions  none"] : s.suspicions.map((x) =>
        `suspicion   ${x.node} suspected by ${x.suspectedBy.join(", ") || "-"} for ${x.suspectedForMs} ms (epoch ${x.epoch}), ` +
        `confirmed by ${x.confirmedBy.join(", ") || "nobody yet"}${x.newSuccessor ? `; next live node ${x.newSuccessor}` : ""}`)),
    ];
    process.stdout.write(lines.join("\n") + "\n");
    return EXIT.ok;
  } catch (error) {
    return failure(error);
  }
}
