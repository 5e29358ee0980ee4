/**
 * The replication gather rule (lib/core/lock/backup_feed.ts `roomForAppend`) through the real
 * LockService pair of tests/_fuzz_apps.ts (LockServices with their drivers, the peer route as JSON
 * text): changes made faster than round trips go two at once, then wait for an ack and leave
 * together in one frame; every one commits with no tick; the burst's peak makes the next busy
 * period gather from its second change. The transport answers in a later microtask, so the
 * frames sent during one synchronous turn are the ones the rule sent at once.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { FUZZ_LOCK_SETTINGS, lockPair } from "./_fuzz_apps.ts";
import { SECRET_HASH } from "./_session.ts";

test("lock service: five changes in one turn go as [1], [1], then [3] in one frame on the acks, all committed with no tick; the next two-change period gathers its second", async () => {
  // Room for the set-up's three sessions and the seven opened here.
  const pair = await lockPair({ ...FUZZ_LOCK_SETTINGS, sessionsMax: 16 });
  try {
    const appended = (since: number) =>
      pair.recorded.slice(since)
        .filter((r) => r.from === "p1" && r.to === "b1" && r.message.type === "append" && (r.message.entries as unknown[]).length > 0)
        .map((r) => (r.message.entries as unknown[]).length);
    const open = () => pair.p.submit({ type: "openSession", secretHash: SECRET_HASH, ttlMs: 5_000 });
    const committed = async (answers: ReturnType<typeof open>[]) => {
      for (const answer of await Promise.all(answers)) assert.ok(answer.ok && answer.result.type === "session", JSON.stringify(answer));
      const status = pair.p.replica.status();
      assert.equal(status.commitIndex, status.lastIndex, "every change committed");
    };

    const burstFrom = pair.recorded.length;
    const burst = [1, 2, 3, 4, 5].map(open);
    assert.deepEqual(appended(burstFrom), [1, 1], "two unacked at most go at once; the other three wait for an ack");
    await committed(burst); // no tick runs: the acks alone send the rest
    assert.deepEqual(appended(burstFrom), [1, 1, 3], "the three left in ONE frame once the two were acked");

    const nextFrom = pair.recorded.length;
    const next = [open(), open()];
    assert.deepEqual(appended(nextFrom), [1], "the burst's peak is remembered: the second change waits for the first's ack");
    await committed(next);
    assert.deepEqual(appended(nextFrom), [1, 1]);
  } finally {
    pair.stop();
  }
});
