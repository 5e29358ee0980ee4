/**
 * A lock service alone (no peer, no arbiter: it serves at once) on a manual clock, for tests of
 * the HTTP layer through `app.request`. Not a test file.
 */
import { type Clock, manualClock } from "../cluster/clock.ts";
import { LockService } from "../cluster/lock/service.ts";
import { memoryLogger } from "../cluster/log.ts";
import { realTimers, type Timers } from "../cluster/timers.ts";
import type { Settings } from "../lib/settings.ts";

export function soloLockService(settings: Settings, timers: Timers = realTimers, clock: Clock = manualClock(1_000)): LockService {
  return new LockService({
    settings,
    clock,
    log: memoryLogger(),
    nodeId: "p1",
    peer: null,
    arbiter: null,
    transport: { send: () => Promise.reject(new Error("no peers in this test")) },
    timers,
    sessionIdPrefix: "t-",
    tokenFloor: 0,
  });
}
