/**
 * Issue 11: a backup that returns to a table near `locksMax` must sync without stopping the
 * primary. With `fillLocks` > 0 the failover kind lowers locksMax to a little above it and an
 * in-process client of whichever server serves fills the table: sessions of the clients' TTL,
 * kept alive every TTL/3 like a client's, each holding `LOCKS_PER_SESSION` locks of their own
 * (`fill/<n>`, never a workload's name). Their TTL is the clients' so a fresh table's grace
 * (the longest TTL granted) stays what the kind's liveness bounds assume.
 * Every backup restart or resync then streams the whole table in many small chunks
 * (`chunkItemsMax`, `chunkBytesMax`) while the clients go on; the checkers are the kind's own.
 */
import type { Sim } from "../simulator.ts";
import type { FailoverServerActor } from "./server.ts";

const LOCKS_PER_SESSION = 15;
const STEP_MS = 100;
/** Bounded: at most this many steps (1,000 s of virtual time, longer than any run). */
const STEPS_MAX = 10_000;
/** The filler submits its commands below the API, so it passes a secret's hash directly. */
const SECRET_HASH = "filler-secret-hash";

export function fillTable(sim: Sim, servers: readonly FailoverServerActor[], target: number, startMs: number, ttlMs: number): void {
  let named = 0;
  let opening = false;
  let steps = 0;
  let logged = false;
  /** The filler's live sessions and when each was last kept alive (bounded: target / LOCKS_PER_SESSION + 1). */
  const sessions = new Map<string, number>();
  const step = () => {
    steps += 1;
    const server = servers.find((s) => s.up && s.servingNow());
    const size = server?.table?.locks.size ?? 0;
    for (const [session, keptAtMs] of sessions) {
      if (!server || sim.nowMs - keptAtMs < ttlMs / 3) continue;
      sessions.set(session, sim.nowMs);
      server.submitLocal({ type: "keepAlive", session, secretHash: SECRET_HASH }, (answer) => {
        // Gone with a lost table (both servers restarted) or expired: nothing more to keep.
        if (!answer.ok && answer.code === "session_not_found") sessions.delete(session);
      });
    }
    if (server && !opening && size < target && named < target) {
      opening = true;
      server.submitLocal({ type: "openSession", ttlMs, secretHash: SECRET_HASH }, (answer) => {
        opening = false;
        if (!answer.ok || answer.result.type !== "session") return;
        const session = answer.result.session;
        sessions.set(session, sim.nowMs);
        // The enters go in as a macrotask of their own, not inside the step that answered.
        sim.at(sim.nowMs, () => {
          for (let i = 0; i < LOCKS_PER_SESSION && named < target; i++) {
            const name = `fill/${named++}`;
            server.submitLocal({ type: "enter", name, session, secretHash: SECRET_HASH, mode: "exclusive", waitMs: 0, lockDelayMs: 0 }, () => {});
          }
        });
      });
    }
    if (named >= target && steps > 0 && sessions.size > 0 && !logged) {
      logged = true;
      sim.log("failover", "*", `table filler done: ${named} locks asked for, ${size} in the serving table`);
    }
    if (steps < STEPS_MAX && (named < target || sessions.size > 0)) sim.at(sim.nowMs + STEP_MS, step);
  };
  sim.at(startMs, step);
}
