/**
 * Real processes: both lock servers killed -9 and restarted (a host reboot, a deploy). The
 * service comes back by itself with a fresh table: the arbiter learns the backup's copy is gone
 * (its new process claims without state), the restarted primary gets a fresh epoch, grants
 * nothing until every session of the lost table has expired on its client's clock, and hands
 * out tokens above every token handed out before. The old holder's `mutexd lock` learns its
 * session is gone (session_not_found on its keepalive) and exits 4. Bounds come from the
 * settings; every wait is on a condition.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import type { ArbiterStatus } from "../cluster/arbiter/server.ts";
import { DEFAULT_SETTINGS as S } from "../lib/settings.ts";
import { eventually, startMutexd } from "./_harness.ts";
import { startCluster, status } from "./_lock_cluster.ts";

/** Room for scheduling on two shared cores; a bound missed by more than this is a finding. */
const SLACK_MS = 3_000;
/** The holder's TTL: longer than a restart of both servers, so its keepalive reaches the fresh table. */
const HOLDER_TTL_MS = 8_000;
/** The fresh table's grace: the record's ttlMaxMs (the holder's TTL, the longest granted) stretched by L/(L−δ). */
const GRACE_MS = Math.ceil(HOLDER_TTL_MS * S.primaryLeaseMs / (S.primaryLeaseMs - S.leaseSafetyMs));

async function arbiterRecord(url: string): Promise<ArbiterStatus["arbiter"] | undefined> {
  return ((await status(url)) as unknown as ArbiterStatus | undefined)?.arbiter;
}

test("both servers kill -9 + restart: serving again after the grace with higher tokens; the old holder's mutexd lock exits 4", { timeout: 90_000 }, async () => {
  // The default TTL is short (the grace covers the longest TTL granted, here the holder's).
  const c = await startCluster(["sessionTtlMs = 2000"]);
  const tokenFile = (name: string) => join(c.dir, name);
  // The command writes its pid (so the test can stop it whatever happens to its mutexd) and token.
  const holdScript = (file: string) => `echo $$ > ${file}.pid; echo $MUTEXD_TOKEN > ${file}; trap 'exit 0' TERM; while true; do sleep 0.05; done`;
  const holder = startMutexd(["lock", "L", "--config", c.file, "--ttl", `${HOLDER_TTL_MS}ms`, "--grace", "500ms", "--", "sh", "-c", holdScript(tokenFile("old"))]);
  let next: ReturnType<typeof startMutexd> | undefined;
  try {
    await eventually("the holder runs under L", () => existsSync(tokenFile("old")) && readFileSync(tokenFile("old"), "utf8").trim() !== "", 15_000);
    const oldToken = Number(readFileSync(tokenFile("old"), "utf8"));
    await eventually("the arbiter's record covers the token and the holder's TTL", async () => {
      const r = await arbiterRecord(c.urls.a1);
      return r !== undefined && (r.tokenCeiling ?? 0) >= oldToken && (r.ttlMaxMs ?? 0) >= HOLDER_TTL_MS;
    });
    const before = (await arbiterRecord(c.urls.a1))!;

    const killedAtMs = performance.now();
    for (const id of ["p1", "b1"] as const) c.procs.get(id)!.kill("SIGKILL");
    await Promise.all(["p1", "b1"].map((id) => c.procs.get(id)!.exited));
    await c.start("p1");
    await c.start("b1");

    // Nobody holds the old table's state: the primary starts a fresh epoch.
    await eventually("p1 serves a fresh epoch", async () => {
      const s = await status(c.urls.p1);
      return s?.server?.serving === true && s.server.epoch > before.epoch;
    }, 20_000);
    // The holder's keepalive reaches the fresh table, which knows no such session: lost, exit 4.
    const code = await Promise.race([holder.exited, new Promise<number>((r) => setTimeout(() => r(-1), GRACE_MS + SLACK_MS))]);
    assert.equal(code, 4, `exit code (-1: still running); stderr: ${holder.stderr()}`);
    assert.match(holder.stderr(), /lock L lost.*expired the session/);

    // A new client queues for L at once, and is granted only after the grace.
    next = startMutexd(["lock", "L", "--config", c.file, "--", "sh", "-c", holdScript(tokenFile("new"))]);
    await eventually("the new client is granted L", () => existsSync(tokenFile("new")) && readFileSync(tokenFile("new"), "utf8").trim() !== "", GRACE_MS + 20_000);
    const grantedAfterMs = performance.now() - killedAtMs;
    console.log(`both servers killed: the first grant of the fresh table came ${Math.round(grantedAfterMs)} ms after the kill (grace ${GRACE_MS} ms)`);
    assert.ok(grantedAfterMs >= GRACE_MS, `granted ${Math.round(grantedAfterMs)} ms after the kill, inside the ${GRACE_MS} ms grace`);
    const newToken = Number(readFileSync(tokenFile("new"), "utf8"));
    assert.ok(newToken > oldToken, `the new token ${newToken} is above the old ${oldToken}`);
    assert.ok(newToken > before.tokenCeiling!, `above the ceiling ${before.tokenCeiling} of the lost table`);
    const after = (await arbiterRecord(c.urls.a1))!;
    assert.ok(after.epoch > before.epoch && after.tokenCeiling! >= newToken, JSON.stringify(after));
  } finally {
    holder.kill("SIGKILL");
    next?.kill("SIGKILL");
    await Promise.all([holder.exited, next?.exited]);
    for (const name of ["old", "new"]) {
      if (!existsSync(`${tokenFile(name)}.pid`)) continue;
      try {
        process.kill(Number(readFileSync(`${tokenFile(name)}.pid`, "utf8")), "SIGKILL");
      } catch {
        // already gone (its mutexd stopped it)
      }
    }
    await c.stopAll();
  }
});
