/**
 * W4's memory per held lock, counted in the lock table itself rather than read from RSS (issue 14:
 * ≤ 300 bytes per held lock). Builds a LockMachine as the servers do, opens SESSIONS sessions and
 * has each take LOCKS_PER_SESSION locks with W4's names and a fresh UUID call id per enter (as
 * mutexd's client sends), then reads the heap after a full collection before and after the
 * enters. A backup that follows applies the same entries to the same machine, so its table costs
 * the same; a backup that synced loads a streamed copy (loadSession/loadLock), measured too: the
 * primary's table is copied as the wire carries it (JSON text), the primary dropped, the copy
 * loaded, and the heap read against the one before anything was built (so the copy's figure also
 * holds its 100 sessions). What differs between the servers (the primary's log for the backup,
 * which keeps only entries the backup has not acked; HTTP) is not in here.
 *
 *   bun tests/bench/lock_bytes.ts            deno run -A --v8-flags=--expose-gc tests/bench/lock_bytes.ts
 *
 * Prints bytes per held lock for 10,000 and 100,000 locks. Loops are bounded by their counts.
 */
import process from "node:process";
import { collectGarbage } from "../../cluster/runtime.ts";
import { DEFAULT_SETTINGS } from "../../lib/settings.ts";
import { LockTable } from "../../lib/core/lock/lock_table.ts";
import { LockMachine } from "../../lib/core/lock/lock_machine.ts";

const SESSIONS = 100;

function heapBytes(): number {
  collectGarbage();
  collectGarbage();
  return process.memoryUsage().heapUsed;
}

function limitsFor(locksPerSession: number) {
  return { ...DEFAULT_SETTINGS, locksMax: SESSIONS * locksPerSession };
}

/**
 * Bytes of heap per held lock with `locksPerSession` locks in each of SESSIONS sessions, and the
 * table's copy as the wire carries it (JSON text). The machine dies with this call's frame (Bun's
 * collector scans the stack conservatively: a machine dropped in the measuring frame may stay).
 */
function primaryBytes(locksPerSession: number): { perLock: number; held: number; text: { json: string | null } } {
  const limits = limitsFor(locksPerSession);
  const machine = new LockMachine(new LockTable({ limits, sessionIdPrefix: "p1-0badcafe-1-", tokenFloor: 0 }), limits);
  let index = 0;
  let atMs = 1_000;
  const sessions: Array<{ id: string; secretHash: string }> = [];
  for (let s = 0; s < SESSIONS; s++) {
    const secretHash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".slice(0, 63) + (s % 10);
    const output = machine.apply({ index: ++index, epoch: 1, atMs, requestId: crypto.randomUUID(), command: { type: "openSession", ttlMs: 600_000, secretHash } });
    if (!output.result.ok || output.result.type !== "session") throw new Error("openSession failed");
    sessions.push({ id: output.result.session, secretHash });
  }
  const before = heapBytes();
  for (let k = 0; k < locksPerSession; k++) {
    for (let s = 0; s < SESSIONS; s++) {
      atMs += 0.01;
      // Names and ids are built here as a parsed request body builds them: a fresh string each.
      const command = {
        type: "enter" as const,
        name: `w4-${s}-${k}`,
        session: sessions[s].id.slice(0),
        secretHash: sessions[s].secretHash.slice(0),
        mode: "exclusive" as const,
        waitMs: 10_000,
        lockDelayMs: 0,
        callId: crypto.randomUUID(),
      };
      const output = machine.apply({ index: ++index, epoch: 1, atMs, requestId: crypto.randomUUID(), command });
      if (!output.result.ok || output.result.type !== "granted") throw new Error(`enter failed: ${JSON.stringify(output.result)}`);
    }
  }
  const after = heapBytes();
  const held = machine.table.locks.size;
  return { perLock: (after - before) / held, held, text: { json: JSON.stringify(machine.table.snapshot()) } };
}

/** A backup's table loaded from the copy's text (loadSession/loadLock, as a streamed copy); the text is dropped. */
function loadedCopy(text: { json: string | null }, locksPerSession: number): LockTable {
  const copy = LockTable.fromSnapshot(JSON.parse(text.json!), limitsFor(locksPerSession));
  text.json = null;
  return copy;
}

function bytesPerLock(locksPerSession: number): { perLock: number; copyPerLock: number; held: number } {
  const empty = heapBytes();
  const { perLock, held, text } = primaryBytes(locksPerSession);
  const copy = loadedCopy(text, locksPerSession);
  const copied = heapBytes();
  if (copy.locks.size !== held) throw new Error(`the copy has ${copy.locks.size} locks of ${held}`);
  return { perLock, copyPerLock: (copied - empty) / held, held };
}

for (const locksPerSession of [100, 1_000]) {
  const { perLock, copyPerLock, held } = bytesPerLock(locksPerSession);
  console.log(`${held} held locks: ${Math.round(perLock)} bytes of heap per held lock; a streamed copy of them (backup) ${Math.round(copyPerLock)}`);
}
