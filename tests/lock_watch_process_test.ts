/**
 * `GET /v1/locks/:name/watch` and the client's `watch` iterator against real `mutexd node`
 * processes (p1, b1, a1): a watcher sees acquire, queue and release in the order they happened;
 * a watch survives the primary's stop or kill (after a stop an `end` event), then a snapshot at
 * the new primary that still shows the holder, then its changes there. Each test stops its processes and removes its
 * temp dir.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "../lib/client/lock_client.ts";
import type { WatchEvent } from "../lib/client/lock_watch.ts";
import { startCluster } from "./_lock_cluster.ts";

/** A watch read into a queue, so the test can wait for the next event with a bound. */
function follow(events: AsyncGenerator<WatchEvent>) {
  const seen: WatchEvent[] = [];
  let wake = null as (() => void) | null;
  let failure: unknown;
  const done = (async () => {
    try {
      for await (const event of events) {
        seen.push(event);
        wake?.();
      }
    } catch (error) {
      failure = error;
      wake?.();
    }
  })();
  let read = 0;
  return {
    seen,
    /** The next event, failing after `timeoutMs`. */
    async next(timeoutMs = 15_000): Promise<WatchEvent> {
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        while (read >= seen.length) {
          if (failure) throw failure;
          await new Promise<void>((resolve, reject) => {
            wake = resolve;
            timer = setTimeout(() => reject(new Error(`no watch event within ${timeoutMs} ms; seen: ${JSON.stringify(seen)}`)), timeoutMs);
          });
          clearTimeout(timer);
        }
        return seen[read++];
      } finally {
        clearTimeout(timer);
      }
    },
    done,
  };
}

/** Holders' and waiters' sessions: what the assertions compare. */
const shape = (event: WatchEvent) =>
  event.type === "end" ? { type: "end" } : { type: event.type, holders: event.lock.holders.map((h) => h.session), waiters: event.lock.waiters.map((w) => w.session) };

test("watch: a watcher sees acquire, queue, release and the next grant in order, each once; the backup refuses a watch (421, naming the primary), a watch of an empty name is none (404)", { timeout: 60_000 }, async () => {
  const c = await startCluster();
  const stop = new AbortController();
  try {
    const client = connect({ servers: [c.urls.p1, c.urls.b1] });
    const watch = follow(client.watch("w/1", { signal: stop.signal }));
    assert.deepEqual(shape(await watch.next()), { type: "snapshot", holders: [], waiters: [] });
    const a = await client.openSession();
    const b = await client.openSession();
    const held = await client.enter("w/1", { session: a });
    assert.ok(held.granted);
    assert.deepEqual(shape(await watch.next()), { type: "change", holders: [a.id], waiters: [] });
    const queued = client.enter("w/1", { session: b, waitMs: 20_000 });
    assert.deepEqual(shape(await watch.next()), { type: "change", holders: [a.id], waiters: [b.id] });
    await client.leave("w/1", { session: a, token: held.token });
    assert.deepEqual(shape(await watch.next()), { type: "change", holders: [b.id], waiters: [] }, "the release and the next grant are one step");
    const second = await queued;
    assert.ok(second.granted);
    await client.leave("w/1", { session: b, token: second.token });
    assert.deepEqual(shape(await watch.next()), { type: "change", holders: [], waiters: [] });
    await a.close();
    await b.close();
    stop.abort();
    await watch.done;
    assert.equal(watch.seen.length, 5, "no other event: ages alone are no change");
    assert.ok(watch.seen.every((e) => e.server === c.urls.p1));
    const atBackup = await fetch(`${c.urls.b1}/v1/locks/w%2F1/watch`);
    assert.equal(atBackup.status, 421, "the backup serves no watch");
    assert.equal((await atBackup.json()).error.primary, "p1");
    const noName = await fetch(`${c.urls.p1}/v1/locks//watch`);
    assert.equal(noName.status, 404, "an empty name is no watch");
    await noName.body?.cancel();
  } finally {
    stop.abort();
    await c.stopAll();
  }
});

for (const signal of ["SIGTERM", "SIGKILL"] as const) {
  const how = signal === "SIGTERM" ? "stops (SIGTERM): the iterator gets `end` from it," : "is killed (SIGKILL): the stream breaks without `end`; the iterator";
  test(`watch: the primary ${how} resumes at the new primary with the holder still there, and follows changes there`, { timeout: 90_000 }, async () => {
    const c = await startCluster();
    const stop = new AbortController();
    try {
      const client = connect({ servers: [c.urls.p1, c.urls.b1], failoverTimeoutMs: 30_000 });
      const session = await client.openSession();
      const held = await client.enter("f1", { session });
      assert.ok(held.granted);
      const watch = follow(client.watch("f1", { signal: stop.signal }));
      assert.deepEqual(shape(await watch.next()), { type: "snapshot", holders: [session.id], waiters: [] });
      c.procs.get("p1")!.kill(signal);
      if (signal === "SIGTERM") {
        const end = await watch.next();
        assert.deepEqual({ type: end.type, server: end.server, reason: end.type === "end" ? end.reason : "" }, { type: "end", server: c.urls.p1, reason: "stopping" });
      }
      // The backup takes over after the primary's lease: the watch waits for it (bounded by failoverTimeoutMs).
      const resumed = await watch.next(40_000);
      assert.equal(resumed.type, "snapshot");
      assert.equal(resumed.server, c.urls.b1);
      assert.deepEqual(shape(resumed), { type: "snapshot", holders: [session.id], waiters: [] });
      assert.equal(resumed.type === "snapshot" ? resumed.lock.holders[0].token : 0, held.token, "the same hold, replicated");
      await client.leave("f1", { session, token: held.token });
      const freed = await watch.next();
      assert.deepEqual({ ...shape(freed), server: freed.server }, { type: "change", holders: [], waiters: [], server: c.urls.b1 });
    } finally {
      stop.abort();
      await c.stopAll();
    }
  });
}
