/**
 * failover.serves-through-one-fault (issue 10): the lock service has no single point of failure.
 * Whenever at most one of the three (primary, backup, arbiter) is faulty — crashed or paused, or
 * one link among them cut or slowed, one way or both — some server serves. Only a lock server
 * that is down or paused may cost a takeover's gap; the arbiter's faults and every cut link
 * must cost no more than a blip (a few lost renewals). Each new fault configuration (a
 * different faulty node or link, or the end of a double fault) restarts the allowance.
 *
 * Faulty links are read from the network (the kind's own cuts and slow links, and the generic
 * partitions), faulty nodes from the actors (a restarted lock server is still faulty until it
 * has a copy of the table and the arbiter told it the epoch); lost, duplicated, reordered and late messages and
 * clock drift are not faults here: the service must serve through them.
 */
import type { Checker } from "../checkers.ts";
import type { Sim } from "../simulator.ts";

export const SERVES_THROUGH_ONE_FAULT = "failover.serves-through-one-fault";

export interface AvailabilitySubject {
  /** The three: the two lock servers and the arbiter, by actor id. */
  coreIds: readonly string[];
  /** Whether a lock server serves now (on its own clock). */
  servingNow(): boolean;
  /**
   * Whether a lock server (up) has recovered from a restart: it has a copy of the table and the
   * arbiter has told it the current epoch (until then it promises nothing: docs/failover.md).
   */
  recovered(id: string): boolean;
  /** The two lock servers' ids (a fault of one may cost a takeover). */
  serverIds: readonly string[];
  /** The longest time without a serving server after a lock server went down or paused. */
  takeoverGapMs: number;
  /** The longest time without one under any other single fault (or none). */
  blipGapMs: number;
}

export function servesThroughOneFault(sim: Sim, subject: AvailabilitySubject): Checker {
  let lastServingMs = 0;
  let signature = "";
  let sinceMs = 0;
  return {
    name: SERVES_THROUGH_ONE_FAULT,
    doc: "while at most one of primary, backup and arbiter is down, paused or cut off, a server serves (a takeover's gap at most)",
    check() {
      const now = sim.nowMs;
      if (subject.servingNow()) lastServingMs = now;
      const ids = subject.coreIds;
      const faults = ids.filter((id) => sim.actor(id).state !== "up").map((id) => `${id} ${sim.actor(id).state}`);
      // A lock server that came back has not recovered from its crash until it has a copy and
      // knows the epoch: a crash overlapping another fault stays two faults until then.
      faults.push(...subject.serverIds.filter((id) => sim.actor(id).state === "up" && !subject.recovered(id)).map((id) => `${id} recovering`));
      for (let i = 0; i < ids.length; i++) {
        for (let j = i + 1; j < ids.length; j++) {
          if (sim.network.impaired(ids[i], ids[j])) faults.push(`${ids[i]}-${ids[j]} cut`);
        }
      }
      const nowSignature = faults.length > 1 ? "many" : faults.join();
      if (nowSignature !== signature) {
        signature = nowSignature;
        sinceMs = now;
        lastServingMs = Math.max(lastServingMs, now); // the allowance starts with the configuration
      }
      if (signature === "many") return undefined;
      const serverDown = subject.serverIds.some((id) => sim.actor(id).state !== "up" || !subject.recovered(id));
      const boundMs = serverDown ? subject.takeoverGapMs : subject.blipGapMs;
      const gapMs = now - lastServingMs;
      if (gapMs <= boundMs) return undefined;
      return `no server has served for ${gapMs}ms (bound ${boundMs}ms) with ${signature || "no fault"} since ${sinceMs}ms`;
    },
  };
}
