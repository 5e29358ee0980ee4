/**
 * The deployment files of deploy/ (issue 17), checked without building anything or using the
 * network: the example cluster files load (3 hosts for the lock service, 5 for the ring) and a
 * node started from one gets as far as listening on its host's address (refused here: not this
 * host's), so its flags and file are what mutexd takes; the systemd unit has Restart=, a dedicated
 * user, StateDirectory= holding every dataDir, and passes `systemd-analyze verify` without a
 * warning where systemd-analyze exists; the container file uses only known instructions, fetches
 * nothing in RUN, copies the binary `make build` makes, runs as a user, and exposes exactly the
 * example files' ports. docs/deploy.md names each file, and the README points to it.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type ClusterConfig, loadClusterFile } from "../cluster/config.ts";
import { EXIT } from "../cluster/commands/common.ts";
import { removeDir, ROOT, startMutexd, tempDir, TEST_SECRET, writeMutexdWrapper } from "./_harness.ts";

const DEPLOY = join(ROOT, "deploy");
const read = (file: string) => readFileSync(join(DEPLOY, file), "utf8");

/** A deploy/ cluster file loaded as `mutexd node` would, from a temp copy next to a secret file. */
function loadExample(dir: string, file: string): ClusterConfig {
  copyFileSync(join(DEPLOY, file), join(dir, file));
  writeFileSync(join(dir, "secret"), TEST_SECRET + "\n");
  return loadClusterFile(join(dir, file));
}

/** An INI-style unit file as section → key → values (a key may repeat). */
function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let section: Map<string, string[]> | undefined;
  for (const [i, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[([A-Za-z]+)\]$/.exec(line);
    if (header) {
      section = new Map();
      sections.set(header[1], section);
      continue;
    }
    const pair = /^([A-Za-z]+)=(.*)$/.exec(line);
    assert.ok(pair && section, `mutexd@.service line ${i + 1}: neither a section nor Key=value: ${raw}`);
    section.set(pair[1], [...(section.get(pair[1]) ?? []), pair[2]]);
  }
  return sections;
}

const UNIT = parseUnit(read("mutexd@.service"));
const service = (key: string) => UNIT.get("Service")?.get(key)?.at(-1);

test("deploy: the example cluster files load: 3 lock-service hosts, 5 ring hosts, data under the unit's StateDirectory", () => {
  const dir = tempDir("mutexd-deploy-");
  try {
    const locks = loadExample(dir, "lock-cluster.toml");
    assert.deepEqual(locks.nodes.map((n) => n.role).sort(), ["arbiter", "backup", "primary"]);
    assert.equal(new Set(locks.nodes.map((n) => n.host)).size, 3, "three hosts");
    assert.ok(locks.durable && locks.secret !== undefined);
    const ring = loadExample(dir, "ring-cluster.toml");
    assert.deepEqual(ring.nodes.map((n) => n.role), Array(5).fill("ring"));
    assert.equal(new Set(ring.nodes.map((n) => n.host)).size, 5, "five hosts");
    assert.ok(ring.secret !== undefined);
    assert.notEqual(ring.broadcast, "127.255.255.255", "a real subnet's broadcast, not loopback's");
    const stateDir = `/var/lib/${service("StateDirectory")}`;
    for (const node of [...locks.nodes, ...ring.nodes]) {
      assert.equal(node.dataDir, `${stateDir}/${node.id}`, `${node.id}: its data under the unit's StateDirectory`);
    }
  } finally {
    removeDir(dir);
  }
});

test("deploy: `mutexd node` with the unit's flags and an example file gets as far as listening on the host's address", { timeout: 60_000 }, async () => {
  const dir = tempDir("mutexd-deploy-node-");
  try {
    const execStart = service("ExecStart")!.split(" ");
    assert.deepEqual(execStart.slice(1), ["node", "--config", "/etc/mutexd/cluster.toml", "--id", "%i"]);
    for (const [file, id, address] of [["lock-cluster.toml", "p1", "10.0.1.11:7101"], ["ring-cluster.toml", "r1", "10.0.2.21:7201"]]) {
      // The same file with its dataDir in the temp dir: this test writes nothing under /var/lib.
      const text = read(file).replaceAll("/var/lib/mutexd/", `${dir}/`);
      writeFileSync(join(dir, file), text);
      writeFileSync(join(dir, "secret"), TEST_SECRET + "\n");
      const args = execStart.slice(1).map((a) => (a === "/etc/mutexd/cluster.toml" ? join(dir, file) : a === "%i" ? id : a));
      const node = startMutexd(args, { cwd: dir });
      const code = await node.exited;
      assert.equal(code, EXIT.usage, `${file} ${id}: ${node.stderr()}`);
      assert.match(node.stderr(), new RegExp(`^mutexd: node ${id} cannot listen on ${address.replace(/\./g, "\\.")}`, "m"));
    }
  } finally {
    removeDir(dir);
  }
});

test("deploy: the systemd unit restarts on failure (not on a usage error), runs as its own user, keeps state in StateDirectory", (t) => {
  assert.equal(service("Restart"), "on-failure");
  assert.equal(service("RestartPreventExitStatus"), String(EXIT.usage));
  assert.equal(service("User"), "mutexd");
  assert.equal(service("StateDirectory"), "mutexd");
  assert.equal(service("WorkingDirectory"), "/var/lib/mutexd");
  assert.equal(UNIT.get("Install")?.get("WantedBy")?.[0], "multi-user.target");
  const sysusers = read("mutexd.sysusers.conf").split("\n").filter((l) => l.trim() !== "" && !l.startsWith("#"));
  assert.equal(sysusers.length, 1);
  assert.match(sysusers[0], /^u mutexd - "[^"]+" \/var\/lib\/mutexd \/usr\/sbin\/nologin$/, "the unit's user, made by systemd-sysusers");

  if (spawnSync("systemd-analyze", ["--version"]).error) {
    t.skip("systemd-analyze is not installed here: the unit was parsed only");
    return;
  }
  const dir = tempDir("mutexd-deploy-unit-");
  try {
    // verify wants the ExecStart binary to exist: the same unit with mutexd at a temp path.
    const bin = join(writeMutexdWrapper(dir), "mutexd");
    const unit = join(dir, "mutexd@p1.service");
    writeFileSync(unit, read("mutexd@.service").replace("ExecStart=/usr/local/bin/mutexd ", `ExecStart=${bin} `));
    const verify = spawnSync("systemd-analyze", ["verify", "--man=no", unit], { encoding: "utf8" });
    assert.equal(verify.status, 0, verify.stderr);
    // It only warns about an unknown key or a bad value (exit 0): no output at all is the pass.
    assert.equal(verify.stderr.trim(), "", "systemd-analyze verify says nothing");
  } finally {
    removeDir(dir);
  }
});

/** The container file as instructions: continuation lines joined, comments dropped. */
function instructions(text: string): { name: string; args: string }[] {
  const joined = text.split("\n").filter((l) => !l.trimStart().startsWith("#")).join("\n").replace(/\\\n/g, " ");
  return joined.split("\n").filter((l) => l.trim() !== "").map((line) => {
    const [name, ...rest] = line.trim().split(/\s+/);
    return { name: name.toUpperCase(), args: rest.join(" ") };
  });
}

test("deploy: the container file copies the built binary, fetches nothing, runs as a user, exposes the example files' ports", () => {
  const steps = instructions(read("Containerfile"));
  const known = new Set(["FROM", "RUN", "COPY", "USER", "WORKDIR", "VOLUME", "EXPOSE", "STOPSIGNAL", "ENTRYPOINT", "CMD", "ENV", "LABEL", "ARG"]);
  for (const step of steps) assert.ok(known.has(step.name), `known instruction: ${step.name}`);
  assert.equal(steps[0].name, "FROM");
  assert.equal(steps.filter((s) => s.name === "FROM").length, 1, "one stage: nothing is built inside");
  for (const run of steps.filter((s) => s.name === "RUN")) {
    assert.doesNotMatch(run.args, /\b(curl|wget|apt-get|apt|apk|dnf|yum|npm|npx|bun|deno|pip|git)\b/, `RUN fetches nothing: ${run.args}`);
  }
  assert.ok(!steps.some((s) => s.name === "ADD"), "no ADD (it can fetch URLs)");
  const copies = steps.filter((s) => s.name === "COPY").map((s) => s.args.split(" "));
  assert.deepEqual(copies, [["dist/mutexd", "/usr/local/bin/mutexd"]]);
  assert.match(readFileSync(join(ROOT, "Makefile"), "utf8"), /^dist\/mutexd:.*\n\t\$\(BUN\) build --compile main\.ts --outfile dist\/mutexd$/m, "make build makes dist/mutexd");
  const user = steps.filter((s) => s.name === "USER").at(-1)?.args;
  assert.equal(user, "mutexd");
  assert.match(steps.find((s) => s.name === "RUN")!.args, /useradd --system .* mutexd\b/);
  assert.deepEqual(JSON.parse(steps.find((s) => s.name === "ENTRYPOINT")!.args), ["/usr/local/bin/mutexd"]);

  const dir = tempDir("mutexd-deploy-ports-");
  try {
    const nodes = [...loadExample(dir, "lock-cluster.toml").nodes, ...loadExample(dir, "ring-cluster.toml").nodes];
    const wanted = new Set([...nodes.map((n) => `${n.port}/tcp`), ...nodes.filter((n) => n.role === "ring").map((n) => `${n.udpPort}/udp`)]);
    const exposed = new Set(steps.filter((s) => s.name === "EXPOSE").flatMap((s) => s.args.split(" ")));
    assert.deepEqual([...exposed].sort(), [...wanted].sort());
  } finally {
    removeDir(dir);
  }
});

test("deploy: docs/deploy.md names every deploy/ file and the README points to it", () => {
  const guide = readFileSync(join(ROOT, "docs", "deploy.md"), "utf8");
  for (const file of ["lock-cluster.toml", "ring-cluster.toml", "mutexd@.service", "mutexd.sysusers.conf", "Containerfile"]) {
    assert.ok(existsSync(join(DEPLOY, file)), file);
    assert.ok(guide.includes(`deploy/${file}`), `docs/deploy.md names deploy/${file}`);
  }
  assert.match(readFileSync(join(ROOT, "README.md"), "utf8"), /\(docs\/deploy\.md\)/);
});
