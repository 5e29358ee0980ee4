/**
 * Fuzzing the cluster file (fast-check): `parseClusterText` on random TOML-ish text and on
 * mutations of a good file (lines dropped, duplicated, swapped; values replaced by wrong types,
 * huge numbers, unicode; unknown keys) either returns a config that passes its own invariants or
 * throws a ConfigError whose message names the file. Any other exception (a TypeError, a stack
 * overflow) fails the property. Fixed seed, bounded runs (tests/_fuzz.ts).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { type ClusterConfig, ConfigError, parseClusterText, ROLES, SECRET_LENGTH_MIN } from "../cluster/config.ts";
import { DEFAULT_SETTINGS, validateSettings } from "../lib/settings.ts";
import { fuzz, FUZZ_TEST_TIMEOUT_MS } from "./_fuzz.ts";

const FILE = "/fuzz/cluster.toml";

const GOOD = `[cluster]
name = "demo"
broadcast = "127.255.255.255"
durable = false
secret = "0123456789abcdef0123456789abcdef"

[settings]
sessionTtlMs = 4000
tickMs = 20

[[nodes]]
id = "p1"
role = "primary"
http = "127.0.0.1:7101"

[[nodes]]
id = "b1"
role = "backup"
http = "127.0.0.1:7102"
dataDir = ".data/b1"

[[nodes]]
id = "a1"
role = "arbiter"
http = "127.0.0.1:7103"

[[nodes]]
id = "r1"
role = "ring"
http = "127.0.0.1:7201"
udp = 7301
`;

const KEYS = ["name", "broadcast", "durable", "secret", "secretFile", "secretEnv", "id", "role", "http", "dataDir", "udp", ...Object.keys(DEFAULT_SETTINGS).slice(0, 12), "unknownKey", "é"];

/** TOML values, good and bad: strings (unicode, long), huge and negative integers, floats, arrays, inline tables. */
const tomlValue: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    '"p1"', '"primary"', '"backup"', '"ring"', '"arbiter"', '"127.0.0.1:7101"', '"[::1]:7000"', '"127.0.0.1:0"', '"127.0.0.1:99999"',
    "true", "false", "0", "-1", "1e400", "inf", "nan", "9223372036854775807", "-9223372036854775808", "99999999999999999999",
    "3.5", "[]", "[1, 2]", "{}", '{ a = 1 }', '"💥"', '"\\u0000"', '""', `"${"x".repeat(300)}"`, "1979-05-27T07:32:00Z",
  ),
  fc.integer().map(String),
  fc.string({ maxLength: 20 }).map((s) => JSON.stringify(s)),
);

const tomlLine: fc.Arbitrary<string> = fc.oneof(
  { weight: 2, arbitrary: fc.constantFrom("[cluster]", "[settings]", "[[nodes]]", "[nodes]", "[[cluster]]", "[extra]", "[settings.x]", "") },
  { weight: 6, arbitrary: fc.tuple(fc.constantFrom(...KEYS), tomlValue).map(([k, v]) => `${k} = ${v}`) },
  { weight: 1, arbitrary: fc.string({ maxLength: 30 }) },
);

/** Random TOML-ish text: lines of headers, key = value pairs and noise. */
const randomText = fc.array(tomlLine, { maxLength: 30 }).map((lines) => lines.join("\n"));

/** The good file with a few line-level changes. */
const goodLines = GOOD.split("\n");
const mutatedGood = fc.array(
  fc.oneof(
    fc.record({ kind: fc.constant("drop" as const), at: fc.nat() }),
    fc.record({ kind: fc.constant("duplicate" as const), at: fc.nat() }),
    fc.record({ kind: fc.constant("swap" as const), at: fc.nat(), with: fc.nat() }),
    fc.record({ kind: fc.constant("value" as const), at: fc.nat(), value: tomlValue }),
    fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), line: tomlLine }),
  ),
  { minLength: 1, maxLength: 4 },
).map((changes) => {
  const lines = [...goodLines];
  for (const c of changes) {
    const i = c.at % lines.length;
    if (c.kind === "drop") lines.splice(i, 1);
    else if (c.kind === "duplicate") lines.splice(i, 0, lines[i]);
    else if (c.kind === "swap") [lines[i], lines[c.with % lines.length]] = [lines[c.with % lines.length], lines[i]];
    else if (c.kind === "value") lines[i] = lines[i].includes("=") ? `${lines[i].split("=")[0]}= ${c.value}` : lines[i];
    else lines.splice(i, 0, c.line);
    if (lines.length === 0) lines.push("");
  }
  return lines.join("\n");
});

/** What a returned config promises (what the loader checked, checked again on its result). */
function checkInvariants(config: ClusterConfig): void {
  assert.equal(config.file, FILE);
  assert.ok(config.nodes.length > 0, "at least one node");
  assert.deepEqual(validateSettings(config.settings), [], "settings valid");
  assert.equal(new Set(config.nodes.map((n) => n.id)).size, config.nodes.length, "unique ids");
  assert.equal(new Set(config.nodes.map((n) => `${n.host}:${n.port}`)).size, config.nodes.length, "unique addresses");
  const ring = config.nodes.filter((n) => n.role === "ring");
  assert.equal(new Set(ring.map((n) => `${n.host}:${n.udpPort}`)).size, ring.length, "unique ring UDP ports per host");
  for (const node of config.nodes) {
    assert.ok((ROLES as readonly string[]).includes(node.role), `role ${node.role}`);
    assert.ok(/^[A-Za-z0-9_-]{1,64}$/.test(node.id), `id ${node.id}`);
    for (const port of [node.port, node.udpPort]) assert.ok(Number.isInteger(port) && port >= 1 && port <= 65_535, `port ${port}`);
    assert.equal(typeof node.dataDir, "string");
  }
  for (const role of ["primary", "backup", "arbiter"]) assert.ok(config.nodes.filter((n) => n.role === role).length <= 1, `one ${role} at most`);
  assert.ok(config.secret === undefined || config.secret.length >= SECRET_LENGTH_MIN, "secret long enough");
  assert.equal(typeof config.durable, "boolean");
}

/** The property: a valid config or a ConfigError naming the file; nothing else. */
function parsesOrRefuses(text: string): void {
  let config: ClusterConfig;
  try {
    config = parseClusterText(text, FILE);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `not a ConfigError: ${(error as Error)?.stack ?? error}`);
    assert.ok(error.message.startsWith(FILE), `the message names the file: ${error.message}`);
    return;
  }
  checkInvariants(config);
}

test("fuzz config: the good file itself parses (so the mutations start from a valid file)", () => {
  checkInvariants(parseClusterText(GOOD, FILE));
});

test("fuzz config: random TOML-ish text gives a valid config or a ConfigError naming the file", { timeout: FUZZ_TEST_TIMEOUT_MS }, async () => {
  assert.ok(await fuzz("config random text", randomText, parsesOrRefuses, 5_000) > 0);
});

test("fuzz config: mutations of a good file give a valid config or a ConfigError naming the file", { timeout: FUZZ_TEST_TIMEOUT_MS }, async () => {
  const accepted: number[] = [];
  assert.ok(await fuzz("config mutated file", mutatedGood, (text) => {
    parsesOrRefuses(text);
    try {
      parseClusterText(text, FILE);
      accepted.push(1);
    } catch { /* refused: checked above */ }
  }, 5_000) > 0);
  // Not vacuous: some mutations (a swapped pair of nodes, a dropped dataDir) are still valid files.
  assert.ok(accepted.length > 0, "some mutated files were accepted and their invariants checked");
});
