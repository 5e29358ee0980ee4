/**
 * The ring's faults as real processes (issue 9, "Real processes, each a test"): 5-node rings of
 * `mutexd node` on loopback with QUICK_RING_SETTINGS, clients through lib/client/ring_client.ts
 * taking sections with writes. One test per fault: kill -9 of a non-holder, of the holder inside
 * its section, of the first node of the file; a node killed while a write is half-way round; the
 * holder paused past its lease; a killed node restarted; and a 2|3 split in network namespaces.
 *
 * Every wait is a bound derived from the settings (tests/_ring_cluster.ts) plus SLACK_MS, never
 * a sleep standing in for a condition. Times measured (kill to next grant, …) are printed as
 * `# …` lines. Each test kills the nodes it started (by PID) and removes its temp dir; the split
 * test also removes its namespaces and bridge.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";
import type { RingClient, RingLock } from "../lib/client/ring_client.ts";
import { eventually } from "./_harness.ts";
import { NetLab, netnsUnavailable } from "./_netns.ts";
import {
  committedLog,
  handoffFailuresMs,
  type LogEntry,
  type NodeStatus,
  RING,
  type RingCluster,
  roundMs,
  SLACK_MS,
  startRing,
  unknownTokenWaitMs,
  viewChangeMs,
} from "./_ring_cluster.ts";

const SIZE = 5;
/**
 * A non-holder killed: its predecessor's hand-off fails ringRepairRetries times, a view change
 * leaves it out, the token (refused at connect: it never left) needs no grant wait, one round.
 */
const NON_HOLDER_GRANT_MS = handoffFailuresMs() + viewChangeMs(SIZE) + roundMs(SIZE) + SLACK_MS;
/**
 * The holder killed (or cut off, or paused): nobody sees the token for tokenLossMs, the probe
 * finds it lost, a view change regenerates it, and its first grant waits out the longest
 * section the lost token may still serve (unknownTokenWaitMs), then one round.
 */
const HOLDER_GRANT_MS = RING.tokenLossMs + viewChangeMs(SIZE) + unknownTokenWaitMs() + roundMs(SIZE) + SLACK_MS;
/**
 * A silent cut: hand-offs across it time out (handoffFailuresMs) or the token is on the other
 * side (tokenLossMs); then as for a dead holder.
 */
const PARTITION_GRANT_MS = handoffFailuresMs() + HOLDER_GRANT_MS;
/** Writes reach every member and their commit watermark follows within two rounds (plus a view change's re-send). */
const SETTLE_MS = viewChangeMs(SIZE) + 2 * roundMs(SIZE) + SLACK_MS;

const log = (line: string) => process.stdout.write(`# ${line}\n`);

/** One section at `client`'s node: lock (waiting up to `waitMs`), put `key` = `value`, release. */
async function section(client: RingClient, key: string, value: string, waitMs: number): Promise<{ fence: number; epoch: number; grantedAtMs: number }> {
  const lock = await client.lock({ waitMs });
  const grantedAtMs = Date.now();
  try {
    await lock.put(key, value);
  } finally {
    await lock.release();
  }
  return { fence: lock.token, epoch: lock.epoch, grantedAtMs };
}

/** `count` sections in a row at each of `ids`, all nodes at once; their fences in order per node. */
async function sectionsAt(ring: RingCluster, ids: string[], count: number, tag: string, waitMs: number): Promise<number[]> {
  const runs = ids.map(async (id) => {
    const fences: number[] = [];
    for (let i = 0; i < count; i++) fences.push((await section(ring.client(id), `${tag}-${id}-${i}`, String(i), waitMs)).fence);
    return fences;
  });
  return (await Promise.all(runs)).flat();
}

/** Until every node of `ids` is in one epoch with exactly `members`, in its ring node and its view. */
async function waitForView(ring: RingCluster, ids: string[], members: string[], timeoutMs: number): Promise<NodeStatus[]> {
  let last: Array<NodeStatus | undefined> = [];
  await eventually(`${ids.join(",")} in one view of ${members.join(",")}`, async () => {
    last = await ring.statuses(ids);
    return last.every((s) =>
      s !== undefined && s.epoch === last[0]!.epoch && s.members.join() === members.join() &&
      s.view.view?.epoch === s.epoch && s.view.view.members.join() === members.join()
    );
  }, timeoutMs);
  return last as NodeStatus[];
}

/** Until the committed logs of `ids` are equal, with nothing pending anywhere; returns that log. */
async function replicasEqual(ring: RingCluster, ids: string[], timeoutMs = SETTLE_MS): Promise<LogEntry[]> {
  let logs: LogEntry[][] = [];
  await eventually(`the replicas of ${ids.join(",")} are equal`, async () => {
    const statuses = await ring.statuses(ids);
    if (statuses.some((s) => s === undefined || s.lastApplied !== s.commit || s.commit !== statuses[0]!.commit)) return false;
    logs = await Promise.all(ids.map((id) => committedLog(ring.client(id))));
    return logs.every((l) => JSON.stringify(l) === JSON.stringify(logs[0]));
  }, timeoutMs);
  return logs[0];
}

/** The largest fence any of `ids` has handed out. */
async function fenceMax(ring: RingCluster, ids: string[]): Promise<number> {
  return Math.max(...(await ring.statuses(ids)).map((s) => s?.fenceMax ?? 0));
}

/** The tokens regenerated above `epoch` on `ids`: [epoch, node] pairs from their logs. */
function regenerations(ring: RingCluster, ids: string[], aboveEpoch: number): Array<[number, string]> {
  return ids.flatMap((id) => ring.events(id, "tokenRegenerated").filter((e) => (e.epoch as number) > aboveEpoch).map((e): [number, string] => [e.epoch as number, id]));
}

const without = (ids: string[], ...gone: string[]) => ids.filter((id) => !gone.includes(id));

async function withRing(body: (ring: RingCluster) => Promise<void>): Promise<void> {
  const ring = await startRing({ size: SIZE });
  try {
    await body(ring);
  } catch (error) {
    process.stdout.write(`${ring.logTails()}\n`);
    throw error;
  } finally {
    await ring.remove();
  }
}

test("kill -9 of a non-holder (r3, while r1 holds a section): r3's successor is granted, writes go on, the survivors' view excludes r3, replicas equal", { timeout: 60_000 }, async () => {
  await withRing(async (ring) => {
    await sectionsAt(ring, ring.ids, 1, "before", SETTLE_MS);
    // r1 holds the token in a section, so r3 is certainly not the holder when it dies, and
    // the token's next hand-offs (r1 → r2 → r3) find it dead.
    const held = await ring.client("r1").lock({ waitMs: SETTLE_MS });
    await held.put("held", "1");
    await ring.stop("r3", "SIGKILL");
    const killedAtMs = Date.now();
    await held.release();
    const first = await section(ring.client("r4"), "after-r4", "1", NON_HOLDER_GRANT_MS);
    log(`non-holder kill: r4 (r3's successor) granted ${first.grantedAtMs - killedAtMs} ms after the kill (bound ${NON_HOLDER_GRANT_MS} ms)`);

    const survivors = without(ring.ids, "r3");
    const fences = await sectionsAt(ring, survivors, 2, "after", SETTLE_MS);
    assert.equal(new Set(fences).size, fences.length, "every section has its own fence");
    await waitForView(ring, survivors, survivors, SETTLE_MS);
    const entries = await replicasEqual(ring, survivors);
    const keys = entries.map((e) => (e.op as { key: string }).key);
    for (const key of ["held", "after-r4", ...survivors.map((id) => `after-${id}-1`)]) assert.ok(keys.includes(key), `${key} is committed on every survivor`);
  });
});

test("kill -9 of the holder inside its section (r3): exactly one new token per new epoch, every fence after above every fence before, sections resume, replicas equal", { timeout: 60_000 }, async () => {
  await withRing(async (ring) => {
    await sectionsAt(ring, ring.ids, 1, "before", SETTLE_MS);
    const held = await ring.client("r3").lock({ waitMs: SETTLE_MS });
    // The dead holder's section could run until its grant + ringLeaseMaxMs: the survivors' wait
    // counts from its last lease hold, which may be before the kill (the put and the status
    // reads below take tens of ms), so the bound is checked from the grant's arrival here.
    const heldGrantedAtMs = Date.now();
    await held.put("acked", "1");
    const epochBefore = (await ring.statuses(["r3"]))[0]!.epoch;
    const fenceBefore = await fenceMax(ring, ring.ids);
    await ring.stop("r3", "SIGKILL");
    const killedAtMs = Date.now();
    await held.release().catch(() => {});

    const survivors = without(ring.ids, "r3");
    const first = await section(ring.client("r4"), "after-r4", "1", HOLDER_GRANT_MS);
    log(`holder kill: next grant (r4) ${first.grantedAtMs - killedAtMs} ms after the kill (bound ${HOLDER_GRANT_MS} ms; it waits ringLeaseMaxMs + tokenLeaseSafetyMs = ${unknownTokenWaitMs()} ms)`);
    assert.ok(first.epoch > epochBefore, `a new epoch (${first.epoch} > ${epochBefore})`);
    assert.ok(first.fence > fenceBefore, `the first fence after is above every fence before (${first.fence} > ${fenceBefore})`);
    assert.ok(
      first.grantedAtMs - heldGrantedAtMs >= unknownTokenWaitMs(),
      `no grant before the dead holder's longest section could have ended (${first.grantedAtMs - heldGrantedAtMs} ms after its grant arrived)`,
    );

    const fences = await sectionsAt(ring, survivors, 2, "after", SETTLE_MS);
    assert.ok(fences.every((f) => f > fenceBefore), "every fence after is above every fence before");
    const statuses = await waitForView(ring, survivors, survivors, SETTLE_MS);
    // One token per epoch: each epoch above the old one has exactly one regeneration, and the
    // token of the epoch the survivors are in is one of them.
    const made = regenerations(ring, survivors, epochBefore);
    const epochs = made.map(([epoch]) => epoch);
    assert.equal(new Set(epochs).size, epochs.length, `one token per epoch: ${JSON.stringify(made)}`);
    assert.ok(epochs.includes(statuses[0].epoch), `the current epoch's token was made once: ${JSON.stringify(made)}`);
    const entries = await replicasEqual(ring, survivors);
    assert.ok(entries.some((e) => (e.op as { key: string }).key === "acked"), "the dead holder's acknowledged write is on every survivor");
  });
});

test("kill -9 of the first node of the file (r1, the old scheme's only regenerator): the ring goes on without it", { timeout: 60_000 }, async () => {
  await withRing(async (ring) => {
    await sectionsAt(ring, ring.ids, 1, "before", SETTLE_MS);
    const fenceBefore = await fenceMax(ring, ring.ids);
    // Whatever r1 does at the kill (idle, holding or passing the token): the holder's bound covers all.
    await ring.stop("r1", "SIGKILL");
    const killedAtMs = Date.now();
    const survivors = without(ring.ids, "r1");
    // First the view without r1: a survivor holding the old token with a lease left may still
    // grant in the old epoch, but that section's writes cannot get round past the dead r1.
    await waitForView(ring, survivors, survivors, HOLDER_GRANT_MS);
    const first = await section(ring.client("r2"), "after-r2", "1", HOLDER_GRANT_MS);
    log(`first-node kill: r2 granted ${first.grantedAtMs - killedAtMs} ms after the kill (bound ${HOLDER_GRANT_MS} ms)`);
    const fences = await sectionsAt(ring, survivors, 2, "after", SETTLE_MS);
    assert.ok([first.fence, ...fences].every((f) => f > fenceBefore), "fences keep growing");
    const entries = await replicasEqual(ring, survivors);
    assert.equal(entries.filter((e) => (e.op as { key: string }).key.startsWith("after-")).length, 1 + 2 * survivors.length, "every write after the kill is committed everywhere");
  });
});

test("a node killed while a write is half-way round (at r2 and r3, not yet at r4): afterwards every survivor has it or none has, and every acknowledged write is everywhere", { timeout: 60_000 }, async () => {
  await withRing(async (ring) => {
    await sectionsAt(ring, ring.ids, 1, "before", SETTLE_MS);
    const held = await ring.client("r2").lock({ waitMs: SETTLE_MS });
    // r4 paused first, so the write stops between r3 and r4 (r2 → r3 → r4 → r5 → r1 → r2);
    // then killed, with the write still half-way round.
    ring.pause("r4", "SIGSTOP");
    const put = ring.client("r2").put(held.token, "halfway", "1").then((wseq) => ({ acked: true as const, wseq }), (error: Error) => ({ acked: false as const, error }));
    await eventually("the write reached r3", async () => (await ring.client("r3").get("halfway", { dirty: true }))?.value === "1", SLACK_MS);
    await ring.stop("r4", "SIGKILL");
    const outcome = await put;
    // It cannot have come back round past the paused r4: the view change that leaves r4 out
    // takes the token from r2, which answers that the write may or may not commit.
    assert.ok(!outcome.acked && (outcome.error as Error & { code?: string }).code === "ring_unavailable", `not acknowledged: ${JSON.stringify(outcome)}`);
    log(`half-way write: not acknowledged (${outcome.error.message})`);
    await held.release().catch(() => {});

    const survivors = without(ring.ids, "r4");
    await waitForView(ring, survivors, survivors, HOLDER_GRANT_MS);
    await sectionsAt(ring, survivors, 1, "after", HOLDER_GRANT_MS);
    const entries = await replicasEqual(ring, survivors);
    const keys = entries.map((e) => (e.op as { key: string }).key);
    for (const key of [...ring.ids.map((id) => `before-${id}-0`), ...survivors.map((id) => `after-${id}-0`)]) {
      assert.ok(keys.includes(key), `the acknowledged write ${key} is on every survivor`);
    }
    const values = await Promise.all(survivors.map((id) => ring.client(id).get("halfway")));
    const holders = survivors.filter((_, i) => values[i]?.value === "1");
    assert.ok(holders.length === 0 || holders.length === survivors.length, `all or none have the write (have it: ${holders.join(",")})`);
    log(`half-way write: on ${holders.length} of ${survivors.length} survivors`);
  });
});

test("the holder paused (SIGSTOP) past its lease, then resumed: its write with the old fence fails, the others went on meanwhile, and it rejoins", { timeout: 60_000 }, async () => {
  await withRing(async (ring) => {
    await sectionsAt(ring, ring.ids, 1, "before", SETTLE_MS);
    const leaseMs = 1_000;
    const held: RingLock = await ring.client("r2").lock({ waitMs: SETTLE_MS, leaseMs });
    const fenceOld = held.token;
    ring.pause("r2", "SIGSTOP");
    const pausedAtMs = Date.now();
    const others = without(ring.ids, "r2");
    // While r2 sleeps with the token, the others get sections of a newer epoch.
    const first = await section(ring.client("r3"), "meanwhile-r3", "1", HOLDER_GRANT_MS);
    log(`paused holder: r3 granted ${first.grantedAtMs - pausedAtMs} ms after the pause (bound ${HOLDER_GRANT_MS} ms)`);
    assert.ok(first.fence > fenceOld, "the new section's fence is above the paused one's");
    assert.ok(Date.now() - pausedAtMs > leaseMs, "paused past its lease");
    await sectionsAt(ring, others, 1, "meanwhile", SETTLE_MS);

    ring.pause("r2", "SIGCONT");
    // The raw API, not held.put: the client's own lease timer would refuse without asking.
    await assert.rejects(ring.client("r2").put(fenceOld, "stale", "1"), (error: Error & { code?: string }) => {
      log(`paused holder: its write with the old fence failed: ${error.code}: ${error.message}`);
      return true;
    });
    await held.release().catch(() => {});
    const statuses = await waitForView(ring, ring.ids, ring.ids, HOLDER_GRANT_MS);
    assert.ok(statuses[0].epoch > first.epoch, "it came back through a newer view");
    await section(ring.client("r2"), "rejoined-r2", "1", SETTLE_MS);
    const entries = await replicasEqual(ring, ring.ids);
    assert.ok(!entries.some((e) => (e.op as { key: string }).key === "stale"), "the old fence's write is nowhere");
  });
});

test("a killed node restarted (r3): it rejoins through a view change (a member again, a higher epoch) and its replica catches up", { timeout: 60_000 }, async () => {
  await withRing(async (ring) => {
    await sectionsAt(ring, ring.ids, 1, "before", SETTLE_MS);
    const held = await ring.client("r1").lock({ waitMs: SETTLE_MS });
    await ring.stop("r3", "SIGKILL");
    await held.release();
    const survivors = without(ring.ids, "r3");
    // The view without r3 first: r2 may still get the old token from r1, but its writes could not pass r3.
    const [down] = await waitForView(ring, survivors, survivors, NON_HOLDER_GRANT_MS);
    await sectionsAt(ring, survivors, 2, "while-down", SETTLE_MS);

    const restartedAtMs = Date.now();
    await ring.start("r3");
    const [back] = await waitForView(ring, ring.ids, ring.ids, viewChangeMs(SIZE) + roundMs(SIZE) + SLACK_MS);
    log(`restart: r3 a member again ${Date.now() - restartedAtMs} ms after its start`);
    assert.ok(back.epoch > down.epoch, `a higher epoch (${back.epoch} > ${down.epoch})`);
    const entries = await replicasEqual(ring, ring.ids);
    assert.equal(entries.filter((e) => (e.op as { key: string }).key.startsWith("while-down-")).length, 2 * survivors.length, "r3 has every write made while it was down");
    await section(ring.client("r3"), "back-r3", "1", SETTLE_MS);
    await replicasEqual(ring, ring.ids);
  });
});

const NETNS_UNAVAILABLE = netnsUnavailable();
if (NETNS_UNAVAILABLE) log(`the 2|3 split test is skipped: ${NETNS_UNAVAILABLE}`);

test("the 2|3 split (network namespaces, silent drop between r1,r2 and r3,r4,r5): only the majority grants, the minority says quorum lost, healed the two rejoin", { timeout: 90_000, skip: NETNS_UNAVAILABLE ?? false }, async () => {
  // Each node in its own network namespace on a bridge (tests/_netns.ts); the cut is a
  // permanent neighbour entry to a MAC nobody has, both ways, so packets vanish silently.
  const lab = new NetLab();
  let ring: RingCluster | undefined;
  try {
    lab.create(SIZE);
    // Off loopback a node needs the cluster secret (README, "Security").
    // At logLevel debug: the check below counts the minority's `granted` lines (a debug line, none per section at info).
    ring = await startRing({ size: SIZE, clusterLines: [`secret = "${"s".repeat(32)}"`, `logLevel = "debug"`], addresses: lab.addresses.map((address) => `${address}:7201`), wrap: (id) => lab.wrap(Number(id.slice(1)) - 1) });
    const minority = ["r1", "r2"];
    const majority = without(ring.ids, ...minority);
    await sectionsAt(ring, ring.ids, 1, "before", SETTLE_MS);

    lab.cut([0, 1], [2, 3, 4]);
    const cutAtMs = Date.now();
    // The majority's view first. It forms only once every lease of the old epoch has ended (a
    // majority of promises shares a node with the lease's majority, which promises only after
    // its hold: docs/ring-view.md), so from then on no old token grants anywhere; before it, a
    // node holding the token with its lease left may still grant in the old epoch.
    await waitForView(ring, majority, majority, PARTITION_GRANT_MS);
    const majorityViewAtMs = Date.now();
    // A client at each minority node waits across the rest of the split: granted only after the heal.
    const minorityTries = minority.map((id) => ring!.client(id).lock({ waitMs: PARTITION_GRANT_MS + SETTLE_MS }).then(
      (lock) => lock.release().then(() => ({ id, grantedAtMs: Date.now(), fence: lock.token })),
    ));
    const first = await section(ring.client("r4"), "split-r4", "1", PARTITION_GRANT_MS);
    log(`split: the majority's first grant in its own view (r4) ${first.grantedAtMs - cutAtMs} ms after the cut (bound ${PARTITION_GRANT_MS} ms)`);
    const fences = [first.fence, ...await sectionsAt(ring, majority, 2, "split", SETTLE_MS)];
    await eventually("the minority's status says quorum lost", async () => (await ring!.statuses(minority)).every((s) => s?.lease.quorum === "lost"), viewChangeMs(SIZE) + SLACK_MS);
    const healAtMs = Date.now();
    const minorityGrants = minority.flatMap((id) => ring!.events(id, "granted").filter((e) => Date.parse(e.ts as string) >= majorityViewAtMs));
    assert.deepEqual(minorityGrants, [], "no grant in the minority once the majority has its view");

    lab.heal();
    const statuses = await waitForView(ring, ring.ids, ring.ids, 2 * viewChangeMs(SIZE) + handoffFailuresMs() + SLACK_MS);
    log(`split: healed, all five in one view (epoch ${statuses[0].epoch}) ${Date.now() - healAtMs} ms later`);
    for (const granted of await Promise.all(minorityTries)) {
      assert.ok(granted.grantedAtMs >= healAtMs, `${granted.id}'s waiting client was granted only after the heal`);
      assert.ok(fences.every((f) => granted.fence > f), `${granted.id}'s fence is above the majority's split fences`);
    }
    for (const id of minority) await section(ring.client(id), `healed-${id}`, "1", SETTLE_MS);
    const entries = await replicasEqual(ring, ring.ids);
    const keys = entries.map((e) => (e.op as { key: string }).key);
    for (const key of ["split-r4", ...majority.map((id) => `split-${id}-1`), "healed-r1", "healed-r2"]) assert.ok(keys.includes(key), `${key} is on every node`);
  } catch (error) {
    if (ring) process.stdout.write(`${ring.logTails()}\n`);
    throw error;
  } finally {
    await ring?.remove();
    lab.remove();
  }
});

test("the holder paused (SIGSTOP) inside its section for longer than tokenLossMs but within its lease: no token-loss view change, its section holds (a write with its fence after SIGCONT), every node still in the section's epoch", { timeout: 60_000 }, async () => {
  await withRing(async (ring) => {
    const others = without(ring.ids, "r2");
    // Not at r2: its first section is announced for sure (a holder leaves out a section that ends
    // soon after one it announced: ViewProbe.announceSection).
    await sectionsAt(ring, others, 1, "before", SETTLE_MS);
    const leaseMs = RING.ringLeaseMaxMs;
    // Past tokenLossMs and the probe's wait for the holder, well within the section's lease.
    const pauseMs = RING.tokenLossMs + 5 * RING.viewPromiseWaitMs;
    assert.ok(pauseMs + 1_000 < leaseMs, "the pause ends a second before the lease");
    const seenBefore = (await ring.statuses(others)).map((s) => s?.view.sectionSeenUntilMs ?? null);
    const held: RingLock = await ring.client("r2").lock({ waitMs: SETTLE_MS, leaseMs });
    const startedAtMs = Date.now();
    const before = (await ring.statuses(ring.ids)).map((s) => s!.epoch);
    // The section's announcement has reached every other node (the holder sends it at the grant).
    await eventually("the others heard of r2's section", async () => {
      const seen = (await ring.statuses(others)).map((s) => s?.view.sectionSeenUntilMs ?? null);
      return seen.every((until, i) => until !== null && until !== seenBefore[i]);
    }, SLACK_MS);
    ring.pause("r2", "SIGSTOP");
    // The fault itself is the pause's length (not a wait for a condition).
    await new Promise((resolve) => setTimeout(resolve, pauseMs));
    ring.pause("r2", "SIGCONT");
    const pausedEndMs = Date.now() - startedAtMs;
    log(`section pause: r2 paused ${pauseMs} ms, resumed ${pausedEndMs} ms into its ${leaseMs} ms section`);
    assert.ok(pausedEndMs < leaseMs - 500, `resumed ${pausedEndMs} ms into the section: too late to test it (machine too loaded)`);
    await held.put("after-pause", "1");
    await held.release();
    const after = (await ring.statuses(ring.ids)).map((s) => s!.epoch);
    assert.deepEqual(after, before, "every node is still in the section's epoch");
    for (const id of ring.ids) {
      assert.deepEqual(ring.events(id, "tokenLost"), [], `${id}: no token loss found`);
      assert.deepEqual(regenerations(ring, [id], before[0]), [], `${id}: no token regenerated`);
    }
    const entries = await replicasEqual(ring, ring.ids);
    assert.ok(entries.some((e) => (e.op as { key: string }).key === "after-pause"), "the section's write after the pause committed");
  });
});
