/**
 * Cluster-file loading: a good file gives nodes and settings; every kind of bad file is refused
 * with a message that names the file, the line (where one is known) and the key.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import process from "node:process";
import { ConfigError, isLoopbackHost, loadClusterFile, parseClusterText } from "../cluster/config.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { removeDir, ROOT, startMutexd, tempDir, writeCluster } from "./_harness.ts";

const GOOD = `[cluster]
name = "demo"

[settings]
sessionTtlMs = 4000

[[nodes]]
id = "p1"
role = "primary"
http = "127.0.0.1:7101"

[[nodes]]
id = "r1"
role = "ring"
http = "127.0.0.1:7201"
`;

test("config: a good file gives its nodes, overridden settings and defaults for the rest", () => {
  const config = parseClusterText(GOOD, "/etc/mutexd/cluster.toml");
  assert.equal(config.name, "demo");
  assert.deepEqual(config.nodes.map((n) => [n.id, n.role, n.host, n.port]), [
    ["p1", "primary", "127.0.0.1", 7101],
    ["r1", "ring", "127.0.0.1", 7201],
  ]);
  assert.equal(config.nodes[0].dataDir, "/etc/mutexd/.data/p1");
  assert.equal(config.settings.sessionTtlMs, 4000);
  assert.equal(config.settings.tickMs, DEFAULT_SETTINGS.tickMs);
});

test("config: a ring node's udp port defaults to its HTTP port, may be set, and the broadcast address defaults to loopback's", () => {
  const defaults = parseClusterText(GOOD, "c.toml");
  assert.equal(defaults.nodes[1].udpPort, 7201);
  assert.equal(defaults.broadcast, "127.255.255.255");
  const text = `${GOOD.replace('name = "demo"', 'name = "demo"\nbroadcast = "10.0.0.255"')}\n[[nodes]]\nid = "r2"\nrole = "ring"\nhttp = "127.0.0.1:7202"\nudp = 7302\n`;
  const set = parseClusterText(text, "c.toml");
  assert.equal(set.broadcast, "10.0.0.255");
  assert.deepEqual(set.nodes.map((n) => n.udpPort), [7101, 7201, 7302]);
  // The same UDP port on two hosts is fine (unique per host).
  const twoHosts = `${GOOD}\n[[nodes]]\nid = "r2"\nrole = "ring"\nhttp = "127.0.0.2:7202"\nudp = 7201\n`;
  assert.deepEqual(parseClusterText(twoHosts, "c.toml").nodes.map((n) => n.udpPort), [7101, 7201, 7201]);
});

test("config: durable is off unless the [cluster] table says durable = true", () => {
  assert.equal(parseClusterText(GOOD, "c.toml").durable, false);
  assert.equal(parseClusterText(GOOD.replace('name = "demo"', 'name = "demo"\ndurable = true'), "c.toml").durable, true);
});

test("config: the shipped example cluster file is valid", () => {
  const config = loadClusterFile(`${ROOT}/cluster/cluster.toml`);
  assert.ok(config.nodes.some((n) => n.role === "primary"));
});

interface BadCase {
  name: string;
  text: string;
  key: string;
  line?: number;
  detail: RegExp;
}

const BAD: BadCase[] = [
  { name: "TOML syntax error", text: `[cluster]\nname = "x"\n[[nodes]]\nid = \n`, key: "", line: 4, detail: /TOML syntax/ },
  { name: "unknown top-level table", text: `${GOOD}\n[extra]\na = 1\n`, key: "extra", line: 17, detail: /unknown table/ },
  { name: "unknown node key", text: GOOD.replace('role = "ring"', 'role = "ring"\nport = 1'), key: "nodes[1].port", line: 15, detail: /unknown key/ },
  { name: "unknown setting", text: GOOD.replace("sessionTtlMs = 4000", "sessionTTL = 4000"), key: "settings.sessionTTL", line: 5, detail: /unknown setting/ },
  { name: "setting of the wrong type", text: GOOD.replace("sessionTtlMs = 4000", 'sessionTtlMs = "4s"'), key: "settings.sessionTtlMs", line: 5, detail: /positive integer/ },
  { name: "settings that contradict each other", text: GOOD.replace("sessionTtlMs = 4000", "sessionTtlMs = 100"), key: "settings.sessionTtlMs", line: 5, detail: /sessionTtlMinMs/ },
  { name: "duplicate id", text: GOOD.replace('id = "r1"', 'id = "p1"'), key: "nodes[1].id", line: 13, detail: /duplicate id p1/ },
  { name: "duplicate address", text: GOOD.replace("127.0.0.1:7201", "127.0.0.1:7101"), key: "nodes[1].http", line: 15, detail: /duplicate address/ },
  { name: "missing field", text: GOOD.replace('http = "127.0.0.1:7201"\n', ""), key: "nodes[1].http", line: 12, detail: /missing/ },
  { name: "bad role", text: GOOD.replace('role = "ring"', 'role = "leader"'), key: "nodes[1].role", line: 14, detail: /must be one of/ },
  { name: "bad address", text: GOOD.replace("127.0.0.1:7201", "127.0.0.1:99999"), key: "nodes[1].http", line: 15, detail: /host:port/ },
  { name: "udp port out of range", text: GOOD.replace('http = "127.0.0.1:7201"', 'http = "127.0.0.1:7201"\nudp = 70000'), key: "nodes[1].udp", line: 16, detail: /1\.\.65535/ },
  { name: "udp port not a number", text: GOOD.replace('http = "127.0.0.1:7201"', 'http = "127.0.0.1:7201"\nudp = "7301"'), key: "nodes[1].udp", line: 16, detail: /1\.\.65535/ },
  // Only ring nodes have a repair channel: a udp key elsewhere would be read and do nothing.
  { name: "udp key on a node that is not a ring node", text: GOOD.replace('http = "127.0.0.1:7101"', 'http = "127.0.0.1:7101"\nudp = 7301'), key: "nodes[0].udp", line: 11, detail: /only ring nodes/ },
  // r2's udp is r1's HTTP port, which is r1's default udp port: the same host and UDP port twice.
  { name: "duplicate udp port on one host", text: `${GOOD}\n[[nodes]]\nid = "r2"\nrole = "ring"\nhttp = "127.0.0.1:7202"\nudp = 7201\n`, key: "nodes[2].udp", line: 21, detail: /duplicate UDP port 127\.0\.0\.1:7201/ },
  { name: "broadcast address that is not IPv4", text: GOOD.replace('name = "demo"', 'name = "demo"\nbroadcast = "10.0.0"'), key: "cluster.broadcast", line: 3, detail: /IPv4/ },
  { name: "durable that is not a boolean", text: GOOD.replace('name = "demo"', 'name = "demo"\ndurable = "yes"'), key: "cluster.durable", line: 3, detail: /true or false/ },
  { name: "no nodes", text: `[cluster]\nname = "x"\n`, key: "nodes", detail: /at least one/ },
  { name: "two primaries", text: GOOD.replace('role = "ring"', 'role = "primary"'), key: "nodes", detail: /at most one/ },
];

for (const c of BAD) {
  test(`config: ${c.name} is refused naming the file${c.line ? ", line" : ""} and key`, () => {
    let error: unknown;
    try {
      parseClusterText(c.text, "bad.toml");
    } catch (e) {
      error = e;
    }
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${error}`);
    assert.equal(error.file, "bad.toml");
    assert.equal(error.key, c.key);
    if (c.line !== undefined) assert.equal(error.line, c.line);
    assert.match(error.detail, c.detail);
    assert.ok(error.message.startsWith(`bad.toml${c.line !== undefined ? `:${c.line}` : ""}: `), error.message);
  });
}

test("config: `mutexd node` with a bad file exits 2 and names file, line and key on stderr", async () => {
  const dir = tempDir();
  try {
    const file = writeCluster(dir, GOOD.replace('role = "ring"', 'role = "leader"'));
    const proc = startMutexd(["node", "--config", file, "--id", "p1"]);
    assert.equal(await proc.exited, 2);
    assert.match(proc.stderr(), new RegExp(`${file.replace(/[.]/g, "\\.")}:14: nodes\\[1\\]\\.role: must be one of`));
  } finally {
    removeDir(dir);
  }
});

test("config: `mutexd node` with an unknown id exits 2 and lists the known ids", async () => {
  const dir = tempDir();
  try {
    const file = writeCluster(dir, GOOD);
    const proc = startMutexd(["node", "--config", file, "--id", "zz"]);
    assert.equal(await proc.exited, 2);
    assert.match(proc.stderr(), /no node "zz" \(known: p1, r1\)/);
  } finally {
    removeDir(dir);
  }
});

test("config: without a cluster secret `mutexd node` refuses a non-loopback address (exit 2, says why)", async () => {
  const dir = tempDir();
  try {
    const file = writeCluster(dir, GOOD.replace('http = "127.0.0.1:7101"', 'http = "10.213.255.1:7101"'));
    const proc = startMutexd(["node", "--config", file, "--id", "p1"]);
    assert.equal(await proc.exited, 2);
    assert.match(proc.stderr(), /would listen on 10\.213\.255\.1, which is not loopback: without a cluster secret/);
  } finally {
    removeDir(dir);
  }
});

test("the cluster secret: inline, from a file (one trailing newline dropped) or from an environment variable; at most one, at least 32 characters", () => {
  const dir = tempDir("mutexd-config-secret-");
  try {
    const withCluster = (line: string) => GOOD.replace('name = "demo"', `name = "demo"\n${line}`);
    assert.equal(parseClusterText(GOOD, `${dir}/c.toml`).secret, undefined, "no secret given: none");
    assert.equal(parseClusterText(withCluster(`secret = "${"a".repeat(32)}"`), `${dir}/c.toml`).secret, "a".repeat(32));
    writeFileSync(`${dir}/secret`, `${"f".repeat(40)}\n`);
    assert.equal(parseClusterText(withCluster('secretFile = "secret"'), `${dir}/c.toml`).secret, "f".repeat(40));
    process.env.MUTEXD_TEST_SECRET = "e".repeat(33);
    assert.equal(parseClusterText(withCluster('secretEnv = "MUTEXD_TEST_SECRET"'), `${dir}/c.toml`).secret, "e".repeat(33));
    const refused: [string, RegExp][] = [
      [`secret = "${"a".repeat(31)}"`, /at least 32 characters/],
      ['secretFile = "missing"', /cannot read/],
      ['secretEnv = "MUTEXD_TEST_SECRET_UNSET"', /is not set/],
      [`secret = "${"a".repeat(32)}"\nsecretEnv = "MUTEXD_TEST_SECRET"`, /at most one/],
    ];
    for (const [line, detail] of refused) {
      assert.throws(() => parseClusterText(withCluster(line), `${dir}/c.toml`), (error: ConfigError) => detail.test(error.message), line);
    }
  } finally {
    delete process.env.MUTEXD_TEST_SECRET;
    removeDir(dir);
  }
});

test("isLoopbackHost: 127.0.0.0/8, ::1 and localhost only", () => {
  for (const host of ["127.0.0.1", "127.1.2.3", "::1", "localhost"]) assert.ok(isLoopbackHost(host), host);
  for (const host of ["0.0.0.0", "10.0.0.1", "128.0.0.1", "::", "example.com"]) assert.ok(!isLoopbackHost(host), host);
});
