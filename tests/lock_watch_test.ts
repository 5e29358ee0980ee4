/**
 * The watch hub (cluster/lock/watch.ts) on a stand-in service, no server: a change of holders or
 * queue is sent once, ages alone are not; a reader that falls WATCH_BUFFER_EVENTS events behind
 * is cut (its stream fails, the cut is logged) while a reading one goes on; a step-down ends
 * every stream with `end` naming the new primary. Timers are a stand-in that never fires.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { memoryLogger } from "../cluster/log.ts";
import type { LockService } from "../cluster/lock/service.ts";
import type { LockView } from "../cluster/lock/status_view.ts";
import { LockWatchHub, WATCH_BUFFER_EVENTS } from "../cluster/lock/watch.ts";

function standIn() {
  let lock: LockView | undefined;
  let role = "primary";
  const listeners = new Set<() => void>();
  const service = {
    onStep: (listener: () => void) => (listeners.add(listener), () => listeners.delete(listener)),
    lockView: () => lock,
    summary: () => ({ server: { role, epoch: 7, primary: role === "primary" ? "p1" : "b1" } }),
  } as unknown as LockService;
  const step = () => listeners.forEach((l) => l());
  return {
    service,
    /** The lock now has these holders (tokens from 1) and `ageMs` on each. */
    set(holders: string[], ageMs = 0) {
      lock = { name: "x", holders: holders.map((session, i) => ({ session, token: i + 1, mode: "exclusive", heldForMs: ageMs, lockDelayMs: 0 })), waiters: [], lockDelayRemainingMs: 0 };
      step();
    },
    stepDown() {
      role = "backup";
      step();
    },
  };
}

const neverTimers = { setTimeout: () => 0, clearTimeout: () => {} };

async function readEvent(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<string> {
  const { value } = await reader.read();
  return new TextDecoder().decode(value);
}

test("watch hub: one change per change of holders; ages alone send nothing", async () => {
  const s = standIn();
  const hub = new LockWatchHub(s.service, { timers: neverTimers, log: memoryLogger() });
  const reader = hub.open("x").getReader();
  assert.match(await readEvent(reader), /^event: snapshot\ndata: \{"name":"x","holders":\[\]/);
  s.set(["s1"], 0);
  s.set(["s1"], 500);
  s.set(["s2"], 0);
  assert.match(await readEvent(reader), /^event: change\ndata: .*"session":"s1"/);
  assert.match(await readEvent(reader), /^event: change\ndata: .*"session":"s2"/, "the age-only step sent nothing");
  hub.stop();
  assert.match(await readEvent(reader), /^event: end\ndata: \{"reason":"stopping"/);
  assert.equal((await reader.read()).done, true);
});

test("watch hub: a reader WATCH_BUFFER_EVENTS events behind is cut and logged; a reader that keeps up is not", async () => {
  const s = standIn();
  const log = memoryLogger();
  const hub = new LockWatchHub(s.service, { timers: neverTimers, log });
  const slow = hub.open("x").getReader();
  const fast = hub.open("x").getReader();
  const fastSeen: string[] = [];
  // The snapshot plus WATCH_BUFFER_EVENTS changes: the slow reader's buffer is full before the last.
  for (let i = 0; i <= WATCH_BUFFER_EVENTS; i++) {
    if (i > 0) s.set([`s${i}`]);
    fastSeen.push(await readEvent(fast));
  }
  assert.equal(fastSeen.length, WATCH_BUFFER_EVENTS + 1);
  await assert.rejects(slow.read(), /fell 64 events behind/);
  assert.deepEqual(log.lines.filter((l) => l.event === "watchCut"), [{ event: "watchCut", name: "x", bufferedEvents: WATCH_BUFFER_EVENTS }]);
  s.set(["after"]);
  assert.match(await readEvent(fast), /"session":"after"/, "the other stream goes on");
  hub.stop();
});

test("watch hub: a step-down ends every stream with `end` naming the new primary and its URL", async () => {
  const s = standIn();
  const hub = new LockWatchHub(s.service, { timers: neverTimers, log: memoryLogger(), urlOf: (id) => `http://${id}.example:1` });
  const reader = hub.open("x").getReader();
  await readEvent(reader);
  s.stepDown();
  assert.equal(await readEvent(reader), `event: end\ndata: {"reason":"notPrimary","epoch":7,"primary":"b1","primaryUrl":"http://b1.example:1"}\n\n`);
  assert.equal((await reader.read()).done, true);
  assert.equal(hub.full, false);
});
