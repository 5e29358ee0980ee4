/**
 * Loads and validates a cluster file (TOML). A bad file stops the program with exit code 2 and a
 * message naming the file, the line where one is known, and the key.
 *
 * Shape:
 *   [cluster]  name = "demo"
 *              optional: broadcast = "127.255.255.255" (IPv4 address the ring's repair datagrams
 *              are broadcast to; "255.255.255.255" or the subnet's broadcast address on real hosts)
 *              optional: durable = true (lock servers log every change to their dataDir and fsync
 *              it before they answer; default false)
 *              optional: logLevel = "debug" | "info" | "warn" | "error" (the lowest level of the
 *              node's log lines, cluster/log.ts; default info; `mutexd node --log-level` overrides)
 *              optional, at most one of: secret = "…", secretFile = "path", secretEnv = "VAR":
 *              the cluster secret (at least 32 characters) that authenticates every peer message
 *              and datagram (cluster/peer_auth.ts). Without one, nodes listen on loopback only.
 *              optional: tlsCa = "ca.pem" (PEM: the CA that signed the nodes' certificates; peers
 *              and the CLI trust it; default: the system's roots)
 *   [settings] any key of DEFAULT_SETTINGS (lib/settings.ts), e.g. sessionTtlMs = 10000
 *   [[tokens]] optional client bearer tokens (cluster/client_auth.ts): name = "ci" (like a node
 *              id), exactly one of secret / secretFile / secretEnv (as the cluster secret, at
 *              least 32 characters), permissions = [{ prefix = "jobs/", allow = ["lock"] }, …]
 *              (allow: read, lock, admin), optional sessionsMax, waitersMax (positive integers).
 *              Without any [[tokens]] the client API is open (every caller is anonymous).
 *   [[nodes]]  id = "p1", role = "primary" | "backup" | "arbiter" | "ring", http = "127.0.0.1:7101"
 *              optional: dataDir = ".data/r1"
 *              optional, both or neither: tlsCert = "p1.pem", tlsKey = "p1.key" (PEM): the node
 *              serves HTTPS with them, and its URL is https:// (docs/security.md, "TLS")
 *              ring nodes, optional: udp = 7201 (the repair channel's UDP port; default: the
 *              HTTP port, as TCP and UDP ports do not collide). Unique per host among ring nodes.
 *
 * `udp` on a node that is not a ring node is refused: only the ring has a repair channel, and a
 * key read but unused would let an operator believe something is configured.
 *
 * Paths (dataDir, secretFile, tlsCert, tlsKey, tlsCa) are relative to the cluster file. tlsCa is
 * read at load. A node's tlsCert and tlsKey are read by that node alone when it starts
 * (readNodeTls): on a real cluster each host holds only its own key, and the others (peers, the
 * CLI) only learn from the keys that the node's URL is https://. A missing or unreadable TLS
 * file, or one without its PEM block, stops the start naming its key.
 */
import { readFileSync } from "node:fs";
import process from "node:process";
import { parse, TomlError } from "smol-toml";
import { mergeSettings, type Settings } from "../lib/settings.ts";
import { DEFAULT_LOG_LEVEL, LOG_LEVELS, type LogLevel } from "./log.ts";

export const ROLES = ["primary", "backup", "arbiter", "ring"] as const;
export type Role = (typeof ROLES)[number];

export interface NodeConfig {
  id: string;
  role: Role;
  /** host:port this node's HTTP server listens on. */
  http: string;
  host: string;
  port: number;
  /** Where the node keeps durable state; relative paths are relative to the cluster file. */
  dataDir: string;
  /** Ring nodes: the UDP port of the repair channel (cluster/ring/udp.ts); default the HTTP port. */
  udpPort: number;
  /** Paths of the certificate and key this node serves HTTPS with (readNodeTls reads them); undefined: plain HTTP. */
  tls: { certFile: string; keyFile: string } | undefined;
}

export interface ClusterConfig {
  /** Path of the file this was loaded from (for messages). */
  file: string;
  name: string;
  /** IPv4 address the ring's repair datagrams are broadcast to (besides unicast to every ring node). */
  broadcast: string;
  /** Lock servers keep a durable log in their dataDir (cluster/lock/durable_log.ts). */
  durable: boolean;
  /** The lowest level of log lines the nodes write (cluster/log.ts; `mutexd node --log-level` overrides). */
  logLevel: LogLevel;
  /**
   * The cluster secret (its text, from `secret`, the file `secretFile` or the environment variable
   * `secretEnv`), or undefined: then no peer message is authenticated and nodes listen on loopback only.
   */
  secret: string | undefined;
  /** The CA certificate(s) (PEM text) peers and the CLI verify TLS nodes against; undefined: the system's roots. */
  tlsCa: string | undefined;
  settings: Settings;
  nodes: NodeConfig[];
  /** Client bearer tokens; empty: the client API is open (cluster/client_auth.ts). */
  tokens: TokenConfig[];
}

/** What a token may do on a lock name: each level includes the ones before it. */
export const PERMISSIONS = ["read", "lock", "admin"] as const;
export type Permission = (typeof PERMISSIONS)[number];

/** One `permissions` entry: `allow` on every name that starts with `prefix` ("" is every name). */
export interface PermissionEntry {
  prefix: string;
  allow: Permission[];
}

/** A client bearer token of the cluster file (`[[tokens]]`). */
export interface TokenConfig {
  name: string;
  /** The bearer value clients send; never logged or echoed. */
  secret: string;
  permissions: PermissionEntry[];
  /** Most sessions / waiting enters at once for this token (null: only the server-wide limits). */
  sessionsMax: number | null;
  waitersMax: number | null;
}

/** A problem with a cluster file; `message` already names the file, line and key. */
export class ConfigError extends Error {
  override name = "ConfigError";
  constructor(readonly file: string, readonly key: string, readonly detail: string, readonly line?: number) {
    super(`${file}${line !== undefined ? `:${line}` : ""}: ${key ? `${key}: ` : ""}${detail}`);
  }
}

const NODE_KEYS = ["id", "role", "http", "dataDir", "udp", "tlsCert", "tlsKey"];
const CLUSTER_KEYS = ["name", "broadcast", "durable", "logLevel", "secret", "secretFile", "secretEnv", "tlsCa"];
/** The shortest cluster secret taken (`openssl rand -hex 32` makes 64 characters). */
export const SECRET_LENGTH_MIN = 32;
/** Default broadcast address: loopback's, right for the clusters this repository runs on one host. */
export const DEFAULT_BROADCAST = "127.255.255.255";
const IPV4_PATTERN = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const TOP_KEYS = ["cluster", "settings", "nodes", "tokens"];
const TOKEN_KEYS = ["name", "secret", "secretFile", "secretEnv", "permissions", "sessionsMax", "waitersMax"];
/** The most permission entries one token may have (a limit on what every request scans). */
export const TOKEN_PERMISSIONS_MAX = 64;
/**
 * The most tokens a cluster file may define: each request compares against every one, about
 * 1 µs per token under Deno (its node:crypto timingSafeEqual), so 256 cost a request ~0.25 ms.
 */
export const TOKENS_MAX = 256;
const ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

/** Reads and validates `file`. Throws ConfigError. */
export function loadClusterFile(file: string): ClusterConfig {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    throw new ConfigError(file, "", `cannot read: ${(error as Error).message}`);
  }
  return parseClusterText(text, file);
}

/** Validates the text of a cluster file; `file` is used in messages and to resolve dataDir. */
export function parseClusterText(text: string, file: string): ClusterConfig {
  let doc: Record<string, unknown>;
  try {
    doc = parse(text) as Record<string, unknown>;
  } catch (error) {
    if (error instanceof TomlError) {
      const firstLine = error.message.split("\n")[0];
      throw new ConfigError(file, "", `TOML syntax: ${firstLine}`, error.line);
    }
    throw error;
  }
  const lines = new LineFinder(text);
  const problem = (key: string, detail: string, line = lines.find(key)) => new ConfigError(file, key, detail, line);

  for (const key of Object.keys(doc)) {
    if (!TOP_KEYS.includes(key)) throw problem(key, `unknown table (known: ${TOP_KEYS.join(", ")})`);
  }
  const cluster = asTable(doc.cluster ?? {}, "cluster", problem);
  for (const key of Object.keys(cluster)) {
    if (!CLUSTER_KEYS.includes(key)) throw problem(`cluster.${key}`, `unknown key (known: ${CLUSTER_KEYS.join(", ")})`);
  }
  const name = cluster.name ?? "mutexd";
  if (typeof name !== "string" || !ID_PATTERN.test(name)) {
    throw problem("cluster.name", "must be 1-64 characters of A-Z a-z 0-9 _ -");
  }
  const broadcast = cluster.broadcast ?? DEFAULT_BROADCAST;
  if (typeof broadcast !== "string" || !IPV4_PATTERN.test(broadcast)) {
    throw problem("cluster.broadcast", `must be an IPv4 address such as "255.255.255.255"; got ${JSON.stringify(broadcast)}`);
  }

  const durable = cluster.durable ?? false;
  if (typeof durable !== "boolean") throw problem("cluster.durable", `must be true or false; got ${JSON.stringify(durable)}`);

  const logLevel = cluster.logLevel ?? DEFAULT_LOG_LEVEL;
  if (typeof logLevel !== "string" || !(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw problem("cluster.logLevel", `must be one of ${LOG_LEVELS.join(", ")}; got ${JSON.stringify(logLevel)}`);
  }

  const baseDir = file.includes("/") ? file.slice(0, file.lastIndexOf("/")) : ".";
  const secret = readSecret(cluster, "cluster", baseDir, problem);
  const tlsCa = cluster.tlsCa === undefined
    ? undefined
    : readPem(pathIn(baseDir, cluster.tlsCa, "cluster.tlsCa", problem), "cluster.tlsCa", "CERTIFICATE", problem);

  const { settings, problems } = mergeSettings(asTable(doc.settings ?? {}, "settings", problem));
  if (problems.length > 0) throw problem(`settings.${problems[0].key}`, problems[0].message);

  if (!Array.isArray(doc.nodes) || doc.nodes.length === 0) {
    throw problem("nodes", "the file must list at least one [[nodes]] entry");
  }
  const nodes = doc.nodes.map((raw, index) => parseNode(raw, index, baseDir, problem));
  checkUnique(nodes, problem);
  const tokens = parseTokens(doc.tokens, secret, baseDir, problem);
  return { file, name, broadcast, durable, logLevel: logLevel as LogLevel, secret, tlsCa, settings, nodes, tokens };
}

type Problem = (key: string, detail: string, line?: number) => ConfigError;

/**
 * A secret (the cluster's, or a client token's) from at most one of `secret`, `secretFile`
 * (relative to the cluster file; one trailing newline is dropped) and `secretEnv` of `table`
 * (named `where` in messages); undefined when none is given. A secret that is named but missing
 * or short is an error, never a silent "no secret".
 */
function readSecret(table: Record<string, unknown>, where: string, baseDir: string, problem: Problem): string | undefined {
  const given = ["secret", "secretFile", "secretEnv"].filter((key) => table[key] !== undefined);
  if (given.length > 1) throw problem(`${where}.${given[1]}`, `give at most one of secret, secretFile, secretEnv (also ${given[0]})`);
  if (given.length === 0) return undefined;
  const key = `${where}.${given[0]}`;
  const value = table[given[0]];
  if (typeof value !== "string" || value.length === 0) throw problem(key, "must be a non-empty string");
  let secret: string;
  if (given[0] === "secret") {
    secret = value;
  } else if (given[0] === "secretFile") {
    const path = value.startsWith("/") ? value : `${baseDir}/${value}`;
    try {
      secret = readFileSync(path, "utf8").replace(/\r?\n$/, "");
    } catch (error) {
      throw problem(key, `cannot read ${path}: ${(error as Error).message}`);
    }
  } else {
    const fromEnv = process.env[value];
    if (fromEnv === undefined || fromEnv.length === 0) throw problem(key, `environment variable ${value} is not set`);
    secret = fromEnv;
  }
  if (secret.length < SECRET_LENGTH_MIN) {
    throw problem(key, `the secret must have at least ${SECRET_LENGTH_MIN} characters (make one with: openssl rand -hex 32)`);
  }
  return secret;
}

/** The path `value` of `key`, relative to the cluster file's directory unless absolute. */
function pathIn(baseDir: string, value: unknown, key: string, problem: Problem): string {
  if (typeof value !== "string" || value.length === 0) throw problem(key, "must be a path to a PEM file");
  return value.startsWith("/") ? value : `${baseDir}/${value}`;
}

/**
 * The text of the PEM file `path` named by `key`, checked to hold a PEM block of `kind`
 * ("CERTIFICATE", or "PRIVATE KEY", which also matches "EC PRIVATE KEY" and "RSA PRIVATE KEY"),
 * so a swapped or empty file is named here rather than failing the TLS handshake later.
 */
function readPem(path: string, key: string, kind: string, problem: Problem): string {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw problem(key, `cannot read ${path}: ${(error as Error).message}`);
  }
  if (!new RegExp(`-----BEGIN [A-Z ]*${kind}-----`).test(text)) throw problem(key, `${path} holds no PEM ${kind}`);
  return text;
}

/**
 * The `[[tokens]]` tables: names unique (like node ids), secrets unique and none equal to the
 * cluster secret (a client holding it could forge peer messages), permissions well-formed.
 */
function parseTokens(raw: unknown, clusterSecret: string | undefined, baseDir: string, problem: Problem): TokenConfig[] {
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) throw problem("tokens", "must be [[tokens]] tables");
  if (raw.length > TOKENS_MAX) throw problem("tokens", `at most ${TOKENS_MAX} tokens`);
  const names = new Map<string, number>();
  const secrets = new Map<string, number>();
  return raw.map((entry, index) => {
    const where = `tokens[${index}]`;
    const table = asTable(entry, where, problem);
    for (const key of Object.keys(table)) {
      if (!TOKEN_KEYS.includes(key)) throw problem(`${where}.${key}`, `unknown key (known: ${TOKEN_KEYS.join(", ")})`);
    }
    const name = table.name;
    if (name === undefined) throw problem(`${where}.name`, "missing (required: name, one of secret/secretFile/secretEnv, permissions)");
    if (typeof name !== "string" || !ID_PATTERN.test(name)) throw problem(`${where}.name`, "must be 1-64 characters of A-Z a-z 0-9 _ -");
    if (names.has(name)) throw problem(`${where}.name`, `duplicate token name ${name} (also tokens[${names.get(name)}])`);
    names.set(name, index);
    const secret = readSecret(table, where, baseDir, problem);
    if (secret === undefined) throw problem(`${where}.secret`, "missing: give one of secret, secretFile, secretEnv");
    // The secret itself is never put in a message; only which tokens share it.
    if (secrets.has(secret)) throw problem(`${where}.secret`, `the same secret as tokens[${secrets.get(secret)}]: each token needs its own`);
    if (secret === clusterSecret) throw problem(`${where}.secret`, "the same as the cluster secret: a client token must differ from it");
    secrets.set(secret, index);
    return {
      name,
      secret,
      permissions: parsePermissions(table.permissions, where, problem),
      sessionsMax: optionalPositive(table, "sessionsMax", where, problem),
      waitersMax: optionalPositive(table, "waitersMax", where, problem),
    };
  });
}

function parsePermissions(raw: unknown, where: string, problem: Problem): PermissionEntry[] {
  const key = `${where}.permissions`;
  if (raw === undefined) throw problem(key, 'missing, e.g. permissions = [{ prefix = "jobs/", allow = ["lock"] }]');
  if (!Array.isArray(raw) || raw.length === 0 || raw.length > TOKEN_PERMISSIONS_MAX) {
    throw problem(key, `must be a list of 1..${TOKEN_PERMISSIONS_MAX} entries like { prefix = "jobs/", allow = ["lock"] }`);
  }
  return raw.map((entry, index) => {
    const at = `${key}[${index}]`;
    if (typeof entry !== "object" || entry === null || Array.isArray(entry)) throw problem(at, "must be a table { prefix, allow }");
    const { prefix, allow, ...rest } = entry as Record<string, unknown>;
    const unknown = Object.keys(rest);
    if (unknown.length > 0) throw problem(`${at}.${unknown[0]}`, "unknown key (known: prefix, allow)");
    if (typeof prefix !== "string") throw problem(`${at}.prefix`, `must be a string ("" for every name); got ${JSON.stringify(prefix)}`);
    if (!Array.isArray(allow) || allow.length === 0) throw problem(`${at}.allow`, `must be a non-empty list of ${PERMISSIONS.join(", ")}`);
    for (const permission of allow) {
      if (!(PERMISSIONS as readonly unknown[]).includes(permission)) {
        throw problem(`${at}.allow`, `unknown permission ${JSON.stringify(permission)} (known: ${PERMISSIONS.join(", ")})`);
      }
    }
    return { prefix, allow: allow as Permission[] };
  });
}

function optionalPositive(table: Record<string, unknown>, key: string, where: string, problem: Problem): number | null {
  const value = table[key];
  if (value === undefined) return null;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 1) {
    throw problem(`${where}.${key}`, `must be a positive integer; got ${JSON.stringify(value)}`);
  }
  return value;
}

/** Whether `host` is a loopback address or name (127.0.0.0/8, ::1, localhost). */
export function isLoopbackHost(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

function parseNode(raw: unknown, index: number, baseDir: string, problem: Problem): NodeConfig {
  const where = `nodes[${index}]`;
  const node = asTable(raw, where, problem);
  for (const key of Object.keys(node)) {
    if (!NODE_KEYS.includes(key)) throw problem(`${where}.${key}`, `unknown key (known: ${NODE_KEYS.join(", ")})`);
  }
  for (const key of ["id", "role", "http"]) {
    if (node[key] === undefined) throw problem(`${where}.${key}`, "missing (required: id, role, http)");
  }
  const { id, role, http } = node;
  if (typeof id !== "string" || !ID_PATTERN.test(id)) {
    throw problem(`${where}.id`, "must be 1-64 characters of A-Z a-z 0-9 _ -");
  }
  if (typeof role !== "string" || !(ROLES as readonly string[]).includes(role)) {
    throw problem(`${where}.role`, `must be one of ${ROLES.join(", ")}; got ${JSON.stringify(role)}`);
  }
  const address = typeof http === "string" ? parseHostPort(http) : undefined;
  if (!address) throw problem(`${where}.http`, `must be "host:port" with a port in 1..65535; got ${JSON.stringify(http)}`);
  const dataDir = node.dataDir ?? `.data/${id}`;
  if (typeof dataDir !== "string" || dataDir.length === 0) throw problem(`${where}.dataDir`, "must be a path");
  if (node.udp !== undefined && role !== "ring") {
    throw problem(`${where}.udp`, "only ring nodes have a repair channel (UDP): remove the key");
  }
  if ((node.tlsCert === undefined) !== (node.tlsKey === undefined)) {
    const missing = node.tlsCert === undefined ? "tlsCert" : "tlsKey";
    throw problem(`${where}.${missing}`, "missing: give both tlsCert and tlsKey, or neither");
  }
  const tls = node.tlsCert === undefined ? undefined : {
    certFile: pathIn(baseDir, node.tlsCert, `${where}.tlsCert`, problem),
    keyFile: pathIn(baseDir, node.tlsKey, `${where}.tlsKey`, problem),
  };
  const udpPort = node.udp ?? address.port;
  if (typeof udpPort !== "number" || !Number.isInteger(udpPort) || udpPort < 1 || udpPort > 65535) {
    throw problem(`${where}.udp`, `must be a port in 1..65535; got ${JSON.stringify(node.udp)}`);
  }
  return {
    id,
    role: role as Role,
    http,
    host: address.host,
    port: address.port,
    dataDir: dataDir.startsWith("/") ? dataDir : `${baseDir}/${dataDir}`,
    udpPort,
    tls,
  } as NodeConfig;
}

function checkUnique(nodes: NodeConfig[], problem: Problem): void {
  const ids = new Map<string, number>();
  const addresses = new Map<string, number>();
  nodes.forEach((node, index) => {
    const sameId = ids.get(node.id);
    if (sameId !== undefined) throw problem(`nodes[${index}].id`, `duplicate id ${node.id} (also nodes[${sameId}])`);
    ids.set(node.id, index);
    const address = `${node.host}:${node.port}`;
    const sameAddress = addresses.get(address);
    if (sameAddress !== undefined) {
      throw problem(`nodes[${index}].http`, `duplicate address ${address} (also nodes[${sameAddress}])`);
    }
    addresses.set(address, index);
  });
  // Two ring nodes of one host cannot both bind one UDP port (they would split its datagrams).
  const udpAddresses = new Map<string, number>();
  nodes.forEach((node, index) => {
    if (node.role !== "ring") return;
    const address = `${node.host}:${node.udpPort}`;
    const same = udpAddresses.get(address);
    if (same !== undefined) {
      throw problem(`nodes[${index}].udp`, `duplicate UDP port ${address} (also nodes[${same}]; udp defaults to the HTTP port)`);
    }
    udpAddresses.set(address, index);
  });
  const count = (role: Role) => nodes.filter((n) => n.role === role).length;
  if (count("primary") > 1) throw problem("nodes", "at most one node may have role primary");
  if (count("backup") > 1) throw problem("nodes", "at most one node may have role backup");
  if (count("arbiter") > 1) throw problem("nodes", "at most one node may have role arbiter");
  if (count("backup") > 0 && count("arbiter") === 0) {
    throw problem("nodes", "a backup needs an arbiter (the witness that decides takeover)");
  }
  if (count("backup") > 0 && count("primary") === 0) throw problem("nodes", "a backup needs a primary");
}

/** Parses "host:port" (IPv6 as "[::1]:port"). */
export function parseHostPort(text: string): { host: string; port: number } | undefined {
  const match = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(text);
  if (!match) return undefined;
  const port = Number(match[2]);
  if (port < 1 || port > 65535) return undefined;
  return { host: match[1].replace(/^\[|\]$/g, ""), port };
}

function asTable(value: unknown, key: string, problem: Problem): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw problem(key, "must be a table");
  return value as Record<string, unknown>;
}

/** The line of a key in the text, so messages can point at it (the TOML parser gives none there). */
class LineFinder {
  private readonly lines: string[];
  constructor(text: string) {
    this.lines = text.split(/\r?\n/);
  }

  find(key: string): number | undefined {
    // key is like "nodes[2].http", "settings.tickMs", "cluster.name" or "nodes"; a deeper key
    // ("tokens[0].permissions[1].allow") is found at its first two levels' line.
    const match = /^(\w+)(?:\[(\d+)\])?(?:\.(\w+))?(?=$|[.[])/.exec(key);
    if (!match) return undefined;
    const [, table, index, leaf] = match;
    const header = index !== undefined ? new RegExp(`^\\s*\\[\\[\\s*${table}\\s*\\]\\]`) : new RegExp(`^\\s*\\[\\s*${table}\\s*\\]`);
    let start = -1;
    let seen = -1;
    for (let i = 0; i < this.lines.length; i++) {
      if (header.test(this.lines[i])) {
        seen += 1;
        if (index === undefined || seen === Number(index)) {
          start = i;
          break;
        }
      }
    }
    if (start < 0) return undefined;
    if (leaf === undefined) return start + 1;
    const keyLine = new RegExp(`^\\s*["']?${leaf}["']?\\s*=`);
    for (let i = start + 1; i < this.lines.length && !/^\s*\[/.test(this.lines[i]); i++) {
      if (keyLine.test(this.lines[i])) return i + 1;
    }
    return start + 1;
  }
}

/** The node with `id`, or a ConfigError naming the known ids. */
export function findNode(config: ClusterConfig, id: string): NodeConfig {
  const node = config.nodes.find((n) => n.id === id);
  if (!node) {
    throw new ConfigError(config.file, "--id", `no node ${JSON.stringify(id)} (known: ${config.nodes.map((n) => n.id).join(", ")})`);
  }
  return node;
}

/**
 * The certificate and key (PEM text) `node` serves HTTPS with, read now; undefined for a node
 * without tlsCert. Throws a ConfigError naming the key (and its line) when a file is missing,
 * unreadable or holds no PEM block of its kind.
 */
export function readNodeTls(config: ClusterConfig, node: NodeConfig): { cert: string; key: string } | undefined {
  if (node.tls === undefined) return undefined;
  const where = `nodes[${config.nodes.findIndex((n) => n.id === node.id)}]`;
  let lines: LineFinder | undefined;
  try {
    lines = new LineFinder(readFileSync(config.file, "utf8"));
  } catch {
    // A file loaded from text (tests) or gone since: the message names the key without a line.
  }
  const problem: Problem = (key, detail) => new ConfigError(config.file, key, detail, lines?.find(key));
  return {
    cert: readPem(node.tls.certFile, `${where}.tlsCert`, "CERTIFICATE", problem),
    key: readPem(node.tls.keyFile, `${where}.tlsKey`, "PRIVATE KEY", problem),
  };
}

/** Base URL of a node's HTTP API: https:// for a node with a certificate. */
export function nodeUrl(node: Pick<NodeConfig, "host" | "port" | "tls">): string {
  const host = node.host.includes(":") ? `[${node.host}]` : node.host;
  return `${node.tls ? "https" : "http"}://${host}:${node.port}`;
}
