/**
 * The arbiter stores before it answers (issue 10): a decision that could not be written is never
 * answered. Its driver (cluster/arbiter/server.ts) on ports with a store that refuses writes, and
 * the real process with a data folder where the record cannot be written: it stops (exit 70, a
 * `failStop` log line) without answering, and a restart works from what is on disk.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, rmdirSync } from "node:fs";
import type { ArbiterState } from "../lib/core/arbiter/arbiter.ts";
import { answerArbiter, type ArbiterPorts, fileArbiterStore, restoreArbiter } from "../cluster/arbiter/server.ts";
import { FAIL_STOP_EXIT } from "../cluster/fail_stop.ts";
import { memoryLogger } from "../cluster/log.ts";
import { freePort, removeDir, startMutexd, tempDir, waitForHttp, writeCluster } from "./_harness.ts";

const SETTINGS = { primaryId: "p1", backupId: "b1", leaseMs: 500, bootstrapWaitMs: 3_000 };
const claimText = (from: string) => JSON.stringify({ type: "claim", from, epoch: 0, hasState: false });

class FailStopped extends Error {}

test("arbiter driver: a decision whose record cannot be written gets no answer, and the core restored from the store never saw it", () => {
  let stored: ArbiterState | null = null;
  let refuse = true;
  const stops: string[] = [];
  const ports: ArbiterPorts = {
    store: {
      load: () => stored,
      save: (state) => {
        if (refuse) throw new Error("EIO: disk refused the write");
        stored = state;
      },
    },
    clock: { nowMs: () => 0 },
    log: memoryLogger(),
    failStop: (reason) => {
      stops.push(reason);
      throw new FailStopped(reason); // the process exits here
    },
  };
  const core = restoreArbiter(SETTINGS, ports);
  // At an empty record the primary starts once the backup, too, said it has no state: that
  // claim decides nothing (no write).
  assert.equal(answerArbiter(core, claimText("b1"), ports).step.persist, undefined);
  assert.throws(() => answerArbiter(core, claimText("p1"), ports), FailStopped, "no answer comes out");
  assert.deepEqual(stops, ["the arbiter's record could not be written"]);
  assert.equal(stored, null, "nothing reached the disk");
  // The restart reads the disk: epoch 0, and it decides again, durably this time.
  refuse = false;
  const restarted = restoreArbiter(SETTINGS, ports);
  assert.equal(restarted.current.epoch, 0);
  answerArbiter(restarted, claimText("b1"), ports);
  const { step } = answerArbiter(restarted, claimText("p1"), ports);
  assert.equal(step.reply.type, "lease");
  assert.equal((stored as ArbiterState | null)?.epoch, 1, "on disk before the answer");
});

test("arbiter process: with its record unwritable it exits 70 with a failStop line and answers nothing; restarted, it decides from its disk", { timeout: 60_000 }, async () => {
  const dir = tempDir();
  try {
    const [p, b, a] = [await freePort(), await freePort(), await freePort()];
    const file = writeCluster(
      dir,
      `[[nodes]]\nid = "p1"\nrole = "primary"\nhttp = "127.0.0.1:${p}"\n\n` +
        `[[nodes]]\nid = "b1"\nrole = "backup"\nhttp = "127.0.0.1:${b}"\n\n` +
        `[[nodes]]\nid = "a1"\nrole = "arbiter"\nhttp = "127.0.0.1:${a}"\ndataDir = "a1"\n`,
    );
    const url = `http://127.0.0.1:${a}`;
    const statePath = `${dir}/a1/arbiter.json`;
    const arbiter = startMutexd(["node", "--config", file, "--id", "a1"]);
    await waitForHttp(`${url}/v1/health`);
    // The record's temporary file cannot be created: a folder stands where it would go.
    mkdirSync(`${statePath}.tmp`, { recursive: true });
    const backupClaim = await fetch(`${url}/v1/arbiter`, { method: "POST", body: claimText("b1") });
    assert.equal(backupClaim.status, 200, "the backup's claim decides nothing (no write)");
    const claim = (async () => {
      try {
        const response = await fetch(`${url}/v1/arbiter`, { method: "POST", body: claimText("p1"), signal: AbortSignal.timeout(5_000) });
        return `answered ${response.status}`;
      } catch {
        return "no answer";
      }
    })();
    assert.equal(await arbiter.exited, FAIL_STOP_EXIT, arbiter.stderr());
    assert.equal(await claim, "no answer", "the decision in memory was never answered");
    assert.match(arbiter.stderr(), /"event":"failStop".*could not be written/);
    assert.equal(fileArbiterStore(statePath).load(), null, "nothing on disk");
    rmdirSync(`${statePath}.tmp`);
    const restarted = startMutexd(["node", "--config", file, "--id", "a1"]);
    try {
      await waitForHttp(`${url}/v1/health`);
      const status = await (await fetch(`${url}/v1/status`)).json();
      assert.equal(status.arbiter.epoch, 0, "the restart starts from the disk, not from the lost decision");
      await (await fetch(`${url}/v1/arbiter`, { method: "POST", body: claimText("b1") })).text();
      const answer = JSON.parse(await (await fetch(`${url}/v1/arbiter`, { method: "POST", body: claimText("p1") })).text()) as { type: string; epoch: number };
      assert.deepEqual([answer.type, answer.epoch], ["lease", 1]);
      assert.equal(fileArbiterStore(statePath).load()?.epoch, 1);
    } finally {
      restarted.kill("SIGKILL");
      await restarted.exited;
    }
  } finally {
    removeDir(dir);
  }
});
