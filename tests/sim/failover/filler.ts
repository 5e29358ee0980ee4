/**
 * Issue 11: a backup that returns to a table near `locksMax` must sync without stopping the
 * primary. With `fillLocks` > 0 the failover kind lowers locksMax to a little above it and an
 * in-process client of whichever server serves fills the table: sessions that outlive the run,
 * each holding `LOCKS_PER_SESSION` locks of their own (`fill/<n>`, never a workload's name).
 * Every backup restart or resync then streams the whole table in many small chunks
 * (`chunkItemsMax`, `chunkBytesMax`) while the clients go on; the checkers are the kind's own.
 */
import type { Sim } from "../simulator.ts";
import type { FailoverServerActor } from "./server.ts";

const LOCKS_PER_SESSION = 15;
/** Longer than any run: the filler never keeps its sessions alive (a takeover restarts them). */
const FILL_TTL_MS = 600_000;
const STEP_MS = 100;
/** Bounded: at most this many steps (the fill usually completes in a few dozen). */
const STEPS_MAX = 600;

export function fillTable(sim: Sim, servers: readonly FailoverServerActor[], target: number, startMs: number): void {
  let named = 0;
  let opening = false;
  let steps = 0;
  const step = () => {
    steps += 1;
    const server = servers.find((s) => s.up && s.servingNow());
    const size = server?.table?.locks.size ?? 0;
    if (server && !opening && size < target) {
      opening = true;
      server.submitLocal({ type: "openSession", ttlMs: FILL_TTL_MS }, (answer) => {
        opening = false;
        if (!answer.ok || answer.result.type !== "session") return;
        const session = answer.result.session;
        // The enters go in as a macrotask of their own, not inside the step that answered.
        sim.at(sim.nowMs, () => {
          for (let i = 0; i < LOCKS_PER_SESSION && named < target; i++) {
            const name = `fill/${named++}`;
            server.submitLocal({ type: "enter", name, session, mode: "exclusive", waitMs: 0, lockDelayMs: 0 }, () => {});
          }
        });
      });
    }
    if (named < target && steps < STEPS_MAX) sim.at(sim.nowMs + STEP_MS, step);
    else sim.log("failover", "*", `table filler done: ${named} locks asked for, ${size} in the serving table`);
  };
  sim.at(startMs, step);
}
