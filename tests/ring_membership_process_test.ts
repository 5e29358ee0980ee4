/**
 * Ring membership changes as real processes: a ring node added to the cluster file, then removed,
 * each taken in or out by a view change once the running nodes reload the file (SIGHUP), while the
 * ring goes on (docs/ring.md, "Membership"); two changes at once are refused, at a reload and at a
 * restart. Bounds come from the ring's settings
 * (QUICK_RING_SETTINGS) plus a named slack; the test stops its nodes and removes its temp dir.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { connectRing, type RingClient } from "../lib/client/ring_client.ts";
import { eventually, freePort, type Proc, QUICK_RING_SETTINGS, removeDir, startMutexd, tempDir, waitForHttp, writeCluster } from "./_harness.ts";

const RING = Object.fromEntries(QUICK_RING_SETTINGS.map((line) => line.split(" = ")).map(([key, value]) => [key, Number(value)]));
/** Room for scheduling (every node is a process on two shared cores) and for a node's start. */
const SLACK_MS = 5_000;
/** A view change, with a grant wait of at most one maximum section lease, then a round of the token. */
const VIEW_CHANGE_MS = 2 * 2_000 + RING.ringLeaseMaxMs + 4 * (RING.tokenHopTimeoutMs + RING.tokenIdlePaceMs) + SLACK_MS;

function clusterToml(ids: string[], ports: Map<string, number>): string {
  return [
    "[cluster]",
    'name = "membership"',
    "[settings]",
    ...QUICK_RING_SETTINGS,
    ...ids.flatMap((id) => ["[[nodes]]", `id = "${id}"`, 'role = "ring"', `http = "127.0.0.1:${ports.get(id)}"`, `dataDir = "data/${id}"`]),
  ].join("\n") + "\n";
}

/** Every listed node is a member of one view of exactly `ids`, in that order. */
async function viewIs(clients: Map<string, RingClient>, ids: string[]): Promise<boolean> {
  const statuses = await Promise.all(ids.map((id) => clients.get(id)!.status().catch(() => undefined)));
  return statuses.every((s) => s !== undefined && s.view.member && s.epoch === statuses[0]!.epoch && s.members.join(",") === ids.join(","));
}

test("membership: a ring node added to the file joins by a view change after SIGHUP, takes sections, and leaves again when removed", { timeout: 120_000 }, async () => {
  const dir = tempDir("mutexd-ring-members-");
  const ids = ["r1", "r2", "r3", "r4"];
  const ports = new Map<string, number>();
  for (const id of ids) ports.set(id, await freePort());
  const clients = new Map(ids.map((id) => [id, connectRing({ server: `http://127.0.0.1:${ports.get(id)}`, requestTimeoutMs: 10_000 })]));
  const procs = new Map<string, Proc>();
  const file = writeCluster(dir, clusterToml(ids.slice(0, 3), ports));
  const start = async (id: string) => {
    procs.set(id, startMutexd(["node", "--config", file, "--id", id]));
    await waitForHttp(`http://127.0.0.1:${ports.get(id)}/v1/health`, SLACK_MS * 3);
  };
  try {
    for (const id of ids.slice(0, 3)) await start(id);
    await eventually("r1..r3 form a view", () => viewIs(clients, ids.slice(0, 3)), VIEW_CHANGE_MS);
    const epochBefore = (await clients.get("r1")!.status()).epoch;

    // Add r4: the running nodes reload the file, then r4 starts (it knows the new file).
    writeCluster(dir, clusterToml(ids, ports));
    for (const id of ids.slice(0, 3)) procs.get(id)!.kill("SIGHUP");
    await start("r4");
    await eventually("r1..r4 form one view", () => viewIs(clients, ids), VIEW_CHANGE_MS);
    assert.ok((await clients.get("r4")!.status()).epoch > epochBefore, "the new view has a newer epoch");
    const section = await clients.get("r4")!.lock({ waitMs: VIEW_CHANGE_MS });
    await section.put("joined", "r4");
    await section.release();
    await eventually("every node has r4's write", async () => {
      const reads = await Promise.all(ids.map((id) => clients.get(id)!.get("joined").catch(() => undefined)));
      return reads.every((r) => r?.value === "r4");
    }, VIEW_CHANGE_MS);

    // Remove r4 again: the others take it out by a view change; r4, no longer listed, stops.
    writeCluster(dir, clusterToml(ids.slice(0, 3), ports));
    for (const id of ids) procs.get(id)!.kill("SIGHUP");
    assert.equal(await procs.get("r4")!.exited, 0, "r4 stops by itself once it is no longer in the file");
    await eventually("r1..r3 form a view without r4", () => viewIs(clients, ids.slice(0, 3)), VIEW_CHANGE_MS);
    const after = await clients.get("r2")!.lock({ waitMs: VIEW_CHANGE_MS });
    await after.release();

    // More than one change at once (r3 out, r5 and r6 in) is refused: the view stays as it was.
    ports.set("r5", await freePort());
    ports.set("r6", await freePort());
    writeCluster(dir, clusterToml(["r1", "r2", "r5", "r6"], ports));
    procs.get("r1")!.kill("SIGHUP");
    await eventually("r1 logs the refusal", () => /ringReloadRefused.*one ring node at a time/.test(procs.get("r1")!.stderr()), SLACK_MS);
    assert.ok(await viewIs(clients, ids.slice(0, 3)), "the view is unchanged");

    // A file that does not parse changes nothing either: the node logs it and runs on.
    writeCluster(dir, "[cluster\nname = \"broken\n");
    procs.get("r2")!.kill("SIGHUP");
    await eventually("r2 logs the failed reload", () => /"event":"reloadFailed"/.test(procs.get("r2")!.stderr()), SLACK_MS);
    assert.equal(procs.get("r2")!.child.exitCode, null, "r2 still runs");
    assert.ok(await viewIs(clients, ids.slice(0, 3)), "the view is unchanged");
    writeCluster(dir, clusterToml(["r1", "r2", "r5", "r6"], ports));

    // r1 restarted with that file (two nodes from the voters of its stored view) refuses to start,
    // like a bad cluster file: two changes at once could form two disjoint views.
    const r1 = procs.get("r1")!;
    r1.kill("SIGTERM");
    assert.equal(await r1.exited, 0);
    const restarted = startMutexd(["node", "--config", file, "--id", "r1"]);
    procs.set("r1", restarted);
    assert.equal(await restarted.exited, 2, restarted.stderr());
    assert.match(restarted.stderr(), /bad cluster file: .*\(r1,r2,r5,r6\) differs by more than one node from the voters of the stored view \d+ \(r1,r2,r3\)/);
  } finally {
    for (const proc of procs.values()) proc.kill("SIGKILL");
    await Promise.all([...procs.values()].map((p) => p.exited));
    removeDir(dir);
  }
});
