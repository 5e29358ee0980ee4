/**
 * The chaos hub (tests/chaos/hub.ts) with its CMD (tests/chaos/cli_step.ts) as a real process,
 * without a cluster: what a client process run by `mutexd lock NAME -- CMD` records, and that its
 * write under a token gone stale is refused by the guarded counter and recorded as failed, so
 * the checker's resource rule covers the clients that run as processes. A CMD that mutexd stops
 * (SIGTERM, its lock lost) tells the hub when, before it exits: the moment that ends its hold for
 * the checker's mutex rule (the exit, seen later, would overstate it).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { eventually, mutexdArgv, removeDir, ROOT, startProcess, tempDir } from "./_harness.ts";
import { ChaosHub } from "./chaos/hub.ts";
import { HistoryWriter, readHistory } from "./chaos/history.ts";
import { GuardedCounters } from "./chaos/workload.ts";

/** A counter at which another holder with token + 1 reads right after each read: the reader's token is stale at once. */
class OvertakenCounters extends GuardedCounters {
  override read(lock: string, token: number): number {
    const value = super.read(lock, token);
    super.read(lock, token + 1);
    return value;
  }
}

async function runStep(counters: GuardedCounters, dir: string, token: number) {
  const history = new HistoryWriter(join(dir, `history-${token}.jsonl`));
  const hub = await ChaosHub.start(history, counters);
  const heard: string[] = [];
  hub.listen("cli-l0#1", { entered: (t, pid) => heard.push(`entered ${t} ${pid > 0}`), leaving: () => heard.push("leaving"), stopped: () => heard.push("stopped") });
  try {
    const [cmd, ...args] = [...mutexdArgv().slice(0, -1), join(ROOT, "tests/chaos/cli_step.ts")];
    const proc = startProcess(cmd, args, {
      env: { CHAOS_HUB: hub.url, CHAOS_CLIENT: "cli-l0", CHAOS_LISTENER: "cli-l0#1", CHAOS_LOCK: "l0", CHAOS_HOLD_MS: "0", MUTEXD_TOKEN: String(token) },
    });
    const status = await proc.exited;
    assert.equal(status, 0, proc.stderr());
    return { heard, records: readHistory(history.file).filter((r) => r.type !== "invoke").map((r) => [r.op, r.type, r.client, r.token, r.value ?? null]) };
  } finally {
    await hub.close();
  }
}

test("chaos hub: a client process's guarded increment is recorded, and its write under a stale token is refused (fail)", async () => {
  const dir = tempDir("mutexd-chaos-hub-");
  try {
    const fresh = await runStep(new GuardedCounters(join(dir, "fresh")), dir, 7);
    assert.deepEqual(fresh.heard, ["entered 7 true", "leaving"]);
    assert.deepEqual(fresh.records, [["read", "ok", "cli-l0", 7, 0], ["write", "ok", "cli-l0", 7, 1]]);
    const overtaken = new OvertakenCounters(join(dir, "overtaken"));
    const stale = await runStep(overtaken, dir, 7);
    assert.deepEqual(stale.records, [["read", "ok", "cli-l0", 7, 0], ["write", "fail", "cli-l0", 7, 1]]);
    assert.equal(overtaken.value("l0"), 0, "the refused write left the counter as it was");
  } finally {
    removeDir(dir);
  }
});

test("chaos hub: a CMD cannot set a record's id, type or times, and a malformed body is a 400", async () => {
  const dir = tempDir("mutexd-chaos-hub-");
  const history = new HistoryWriter(join(dir, "history.jsonl"));
  const hub = await ChaosHub.start(history, new GuardedCounters(join(dir, "resource")));
  try {
    const post = async (path: string, body: string) => {
      const response = await fetch(`${hub.url}${path}`, { method: "POST", body });
      return { status: response.status, json: await response.json() };
    };
    const { json } = await post("/invoke", JSON.stringify({ client: "cli-l0", op: "read", lock: "l0", id: 99, type: "ok", start: 1 }));
    assert.equal((await post("/done", JSON.stringify({ key: json.key, type: "ok", value: 3, end: 2 }))).status, 200);
    const [invoke, done] = readHistory(history.file);
    assert.deepEqual([invoke.id, invoke.type, done.id, done.type, done.value], [1, "invoke", 1, "ok", 3]);
    assert.ok(invoke.start > 1 && done.end! > 2, "the hub's clock stamps the times");
    assert.equal((await post("/invoke", "{not json")).status, 400);
    assert.equal((await post("/done", JSON.stringify({ key: json.key, type: "ok" }))).status, 400, "a completed operation cannot complete again");
    assert.equal((await post("/counter", JSON.stringify({ lock: "../etc", token: 1 }))).status, 400, "lock names are l<N> only");
  } finally {
    await hub.close();
    removeDir(dir);
  }
});

test("chaos hub: a CMD stopped by SIGTERM (mutexd's signal when the lock is lost) tells the hub when, then exits; it records no release", async () => {
  const dir = tempDir("mutexd-chaos-hub-");
  const history = new HistoryWriter(join(dir, "history.jsonl"));
  const hub = await ChaosHub.start(history, new GuardedCounters(join(dir, "resource")));
  const heard: string[] = [];
  const stoppedAt: number[] = [];
  hub.listen("cli-l0#1", {
    entered: () => heard.push("entered"),
    leaving: () => heard.push("leaving"),
    stopped: (atMs) => (heard.push("stopped"), stoppedAt.push(atMs)),
  });
  try {
    const [cmd, ...args] = [...mutexdArgv().slice(0, -1), join(ROOT, "tests/chaos/cli_step.ts")];
    // A hold of a minute: only the signal ends it.
    const proc = startProcess(cmd, args, {
      env: { CHAOS_HUB: hub.url, CHAOS_CLIENT: "cli-l0", CHAOS_LISTENER: "cli-l0#1", CHAOS_LOCK: "l0", CHAOS_HOLD_MS: "60000", MUTEXD_TOKEN: "7" },
    });
    await eventually("CMD entered and read", () => heard.includes("entered") && readHistory(history.file).some((r) => r.op === "read" && r.type === "ok"));
    const signalledAtMs = Date.now();
    proc.kill("SIGTERM");
    await proc.exited;
    const afterMs = Date.now();
    assert.deepEqual(heard, ["entered", "stopped"], "stopped, and no leaving: CMD did not finish");
    assert.ok(stoppedAt[0] >= signalledAtMs - 1 && stoppedAt[0] <= afterMs, `stopped at ${stoppedAt[0]}, signalled at ${signalledAtMs}, exited by ${afterMs}`);
  } finally {
    await hub.close();
    removeDir(dir);
  }
});
