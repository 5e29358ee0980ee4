/**
 * Checkers on the lock tables themselves, after EACH command any table applies: the lock kind's
 * standalone server's, and the failover kind's primary's and backup's (a backup applies the
 * primary's entries; a takeover keeps its table; a snapshot replaces it). Both are hooks (the
 * evidence is the command's effects and the table right after them):
 *
 * - `<kind>.lock-delay`: no grant of a lock before (the expiry that released a holder of it) +
 *   (that holder's lock-delay). Counted on the table's own clock (the log's time base, which a
 *   new primary continues), from the `released … expired` effect and the holder's lockDelayMs
 *   as this checker last saw it, not from the table's `delayUntilMs` (the field a bug would get
 *   wrong). A leave or a close frees a lock with no delay.
 * - `<kind>.table-structure`: every session in the table is live (expiry after the table's
 *   clock: expired ones were dropped by the command's expiry pass); every holder and waiter
 *   belongs to a session of the table, once per lock; the per-session index (`Session.locks`)
 *   names exactly the locks the session holds or waits for; no idle lock is kept, and none keeps
 *   its one holder in a list or apart from the lock (`LockState.held`, a lone holder is the lock
 *   itself: W4's memory); tokens are
 *   unique and at most the table's highest; the limits hold; the due index (`dueAtMs`, which lets
 *   ticks skip the expiry pass) is at most every pending expiry, deadline and lock-delay end; each
 *   session's left calls (`leftCalls`) are distinct, at most `leftCallsPerSessionMax`, and no
 *   holder or waiter of that session carries one of them; call ids (unpacked: the table keeps
 *   them packed, call_id.ts) are at most `CALL_ID_LENGTH_MAX` long; every session has a secret hash (issue 12: the API opens none
 *   without); the per-owner counts of sessions and waiting enters equal a recount of the table
 *   (`recountOwners`); and a snapshot round-trips (`fromSnapshot(snapshot(t)).snapshot()`
 *   equals `snapshot(t)`).
 * - `<kind>.left-call` (finding 12): no enter of a call its session already left is granted or
 *   queued. Computed from the commands alone, not from the table's `callId` and `leftCalls`
 *   fields (what a bug would get wrong): the call id of each session's last granted or queued
 *   enter per lock, and the calls whose leave was answered `left`, all of them (a session of the
 *   workload lives at most 30 cycles, fewer than the table's limit of 32 left calls).
 *
 * How the tables are reached without touching lib/core: the server actor's `started` hook (one
 * per incarnation) is wrapped on the instance; the replica's `machine` field becomes an accessor
 * on that instance, so every table the core installs (a fresh one, a snapshot's) is wrapped as
 * it arrives; each table's `apply` is wrapped on the instance.
 */
import { unpackCallId } from "../../../lib/core/lock/call_id.ts";
import { CALL_ID_LENGTH_MAX, type Command, LockTable, type LockTableLimits, type LockTableSnapshot, type Output } from "../../../lib/core/lock/lock_table.ts";
import type { LockMachine } from "../../../lib/core/lock/lock_machine.ts";
import { OwnerCounts, ownerKey } from "../../../lib/core/lock/session_owners.ts";
import type { LockService } from "../../../cluster/lock/service.ts";
import type { Sim } from "../simulator.ts";
import type { LockServiceActor } from "./server.ts";

export function tableCheckerNames(kind: string) {
  return { lockDelay: `${kind}.lock-delay`, structure: `${kind}.table-structure`, leftCall: `${kind}.left-call` } as const;
}

/** The table's private fields the checks read (not part of its API). */
interface TableInternals {
  options: { limits: LockTableLimits };
  dueAtMs: number;
  leases: { dueAtMs: number };
}

/** A lock-delay in force: no grant of its lock before `untilMs` (table clock). */
interface DelayWindow {
  untilMs: number;
  why: string;
}

/** What the checks remember of one table instance between its commands. */
interface TableMemory {
  /** lockDelayMs of each holder (`lock\0session`), as of the end of the last command. */
  holderDelaysMs: Map<string, number>;
  /** Per lock, the latest-ending lock-delay window. */
  windows: Map<string, DelayWindow>;
  /** Call id of each session's last granted or queued enter per lock (`lock\0session`). */
  calls: Map<string, string>;
  /** Per session, the calls it left and when (table clock); dropped with the session. */
  leftCalls: Map<string, Map<string, number>>;
}

/**
 * Hooks the table checkers of `kind` ("lock", "failover") onto every table of `servers`, from
 * now on and across their restarts. Violations name the server whose table broke the rule.
 */
export function watchLockTables(sim: Sim, kind: string, servers: readonly LockServiceActor[]): void {
  const names = tableCheckerNames(kind);
  sim.checkers.declareHook(names.lockDelay);
  sim.checkers.declareHook(names.structure);
  sim.checkers.declareHook(names.leftCall);
  const watched = new WeakSet<LockTable>();

  const watchTable = (server: LockServiceActor, table: LockTable, isPrimary: () => boolean) => {
    if (watched.has(table)) return;
    watched.add(table);
    const memory = rememberTable(table);
    const apply = table.apply.bind(table);
    table.apply = (command, nowMs) => {
      const output = apply(command, nowMs);
      const late = checkLockDelay(table, memory, output);
      if (late) sim.violate(names.lockDelay, `${server.id}: ${late}`);
      // Before the structure: a grant of a left call also leaves a holder carrying a left call id.
      const regranted = checkLeftCall(table, memory, command, output);
      if (regranted) sim.violate(names.leftCall, `${server.id}: ${regranted}`);
      const broken = checkStructure(table, isPrimary());
      if (broken) sim.violate(names.structure, `${server.id} after ${command.type}: ${broken}`);
      return output;
    };
  };

  const watchService = (server: LockServiceActor, service: LockService) => {
    const replica = service.replica;
    let machine: LockMachine | null = replica.machine;
    const isPrimary = () => replica.role === "primary";
    Object.defineProperty(replica, "machine", {
      configurable: true,
      enumerable: true,
      get: () => machine,
      set: (next: LockMachine | null) => {
        machine = next;
        if (next) watchTable(server, next.table, isPrimary);
      },
    });
    if (machine) watchTable(server, machine.table, isPrimary);
  };

  for (const server of servers) {
    if (server.service) watchService(server, server.service);
    // Later incarnations: wrap this instance's hook (the class's stays as it is).
    const actor = server as unknown as { started(service: LockService): void };
    const started = actor.started;
    actor.started = (service: LockService) => {
      started.call(server, service);
      watchService(server, service);
    };
  }
}

function holderKey(lock: string, session: string): string {
  return `${lock}\u0000${session}`;
}

/** The memory of a table first seen now: its holders, and the lock-delays its state carries. */
function rememberTable(table: LockTable): TableMemory {
  const memory: TableMemory = { holderDelaysMs: new Map(), windows: new Map(), calls: new Map(), leftCalls: new Map() };
  for (const lock of table.locks.values()) {
    // A table that arrives with state (a backup's snapshot) carries the primary's windows, which
    // were checked on the primary's table as they opened.
    if (lock.delayUntilMs > table.clockMs) memory.windows.set(lock.name, { untilMs: lock.delayUntilMs, why: "lock-delay from a snapshot" });
  }
  refreshHolders(table, memory);
  return memory;
}

function refreshHolders(table: LockTable, memory: TableMemory): void {
  memory.holderDelaysMs.clear();
  for (const lock of table.locks.values()) {
    for (const holder of lock.holders) memory.holderDelaysMs.set(holderKey(lock.name, holder.session), holder.lockDelayMs);
  }
}

/** Walks the command's effects in order: expiries open windows, grants must fall outside them. */
function checkLockDelay(table: LockTable, memory: TableMemory, output: Output): string | undefined {
  const nowMs = table.clockMs;
  let problem: string | undefined;
  for (const effect of output.effects) {
    if (effect.type === "released" && effect.reason === "expired") {
      const delayMs = memory.holderDelaysMs.get(holderKey(effect.name, effect.session)) ?? 0;
      const open = memory.windows.get(effect.name);
      if (delayMs > 0 && (!open || open.untilMs < nowMs + delayMs)) {
        memory.windows.set(effect.name, {
          untilMs: nowMs + delayMs,
          why: `${effect.session} (token ${effect.token}) expired at ${nowMs}ms with lock-delay ${delayMs}ms`,
        });
      }
    } else if (effect.type === "granted" && problem === undefined) {
      const window = memory.windows.get(effect.grant.name);
      if (window && nowMs < window.untilMs) {
        problem = `${effect.grant.name} granted to ${effect.grant.session} (token ${effect.grant.token}) at ${nowMs}ms, ` +
          `before ${window.untilMs}ms: ${window.why}`;
      }
    }
  }
  for (const [name, window] of memory.windows) if (window.untilMs <= nowMs) memory.windows.delete(name);
  refreshHolders(table, memory);
  return problem;
}

/**
 * An enter of a call its session left must change nothing. A call is left when its grant or
 * wait is left (an answered leave), when its wait ran to its deadline (a `waitEnded` effect), or
 * when a newer call of the same session took over its grant or queue place; the memory keeps
 * the last `leftCallsPerSessionMax` per session, as the table promises. A table that arrives
 * with state (a snapshot) starts with no memory: only what this table applied counts.
 */
function checkLeftCall(table: LockTable, memory: TableMemory, command: Command, output: Output): string | undefined {
  const result = output.result;
  const limit = (table as unknown as TableInternals).options.limits.leftCallsPerSessionMax;
  const leave = (session: string, callId: string | undefined) => {
    if (callId === undefined) return;
    const left = memory.leftCalls.get(session) ?? new Map<string, number>();
    left.delete(callId);
    left.set(callId, table.clockMs);
    while (left.size > limit) left.delete(left.keys().next().value!);
    memory.leftCalls.set(session, left);
  };
  for (const session of [...memory.leftCalls.keys()]) if (!table.sessions.has(session)) memory.leftCalls.delete(session);
  for (const effect of output.effects) {
    if (effect.type !== "waitEnded" || effect.reason !== "deadline") continue;
    const key = holderKey(effect.name, effect.session);
    leave(effect.session, memory.calls.get(key));
    memory.calls.delete(key);
  }
  if (command.type === "leave" && result.ok && result.type === "left") {
    const key = holderKey(command.name, command.session);
    leave(command.session, memory.calls.get(key));
    memory.calls.delete(key);
    return undefined;
  }
  if (command.type !== "enter" || command.callId === undefined || !result.ok) return undefined;
  if (result.type !== "granted" && result.type !== "waiting") return undefined;
  const leftAtMs = memory.leftCalls.get(command.session)?.get(command.callId);
  if (leftAtMs !== undefined) {
    return `enter of ${command.name} by ${command.session} for call ${command.callId}, which it left at ${leftAtMs}ms, ` +
      `answered ${result.type === "granted" ? `granted (token ${result.grant.token})` : "waiting (queued again)"} at ${table.clockMs}ms`;
  }
  const key = holderKey(command.name, command.session);
  const older = memory.calls.get(key);
  if (older !== undefined && older !== command.callId) leave(command.session, older); // taken over by the newer call
  memory.calls.set(key, command.callId);
  return undefined;
}

/**
 * The first broken structural rule of `table` right after a command, or undefined. `primary`:
 * the table is a primary's, whose leases are live (a backup's `expiresAtMs` is stale by design:
 * keepalives renew the primary's table only, session_leases.ts).
 */
export function checkStructure(table: LockTable, primary: boolean): string | undefined {
  const internals = table as unknown as TableInternals;
  const limits = internals.options.limits;
  const nowMs = table.clockMs;
  let dueMs = Number.POSITIVE_INFINITY;
  let leaseDueMs = Number.POSITIVE_INFINITY;
  if (table.sessions.size > limits.sessionsMax) return `${table.sessions.size} sessions > sessionsMax ${limits.sessionsMax}`;
  if (table.locks.size > limits.locksMax) return `${table.locks.size} locks > locksMax ${limits.locksMax}`;
  for (const [id, session] of table.sessions) {
    if (id !== session.id) return `session ${session.id} filed under ${id}`;
    if (primary && session.expiresAtMs <= nowMs) return `session ${id} expired at ${session.expiresAtMs}ms is still in the primary's table at ${nowMs}ms`;
    if (session.leftCalls.length > limits.leftCallsPerSessionMax) {
      return `session ${id} remembers ${session.leftCalls.length} left calls > leftCallsPerSessionMax ${limits.leftCallsPerSessionMax}`;
    }
    if (new Set(session.leftCalls).size !== session.leftCalls.length) return `session ${id} remembers a left call twice`;
    // The table keeps call ids packed (call_id.ts); the bound is on the client's text.
    if (session.leftCalls.some(callIdTooLong)) return `session ${id} remembers a call id longer than ${CALL_ID_LENGTH_MAX}`;
    leaseDueMs = Math.min(leaseDueMs, session.expiresAtMs);
  }
  const tokens = new Set<number>();
  // The index as the locks say it should be: session → names it holds or waits for.
  const expected = new Map<string, Set<string>>();
  for (const [name, lock] of table.locks) {
    if (name !== lock.name) return `lock ${lock.name} filed under ${name}`;
    if (lock.holders.length === 0 && lock.queue.length === 0 && lock.delayUntilMs <= nowMs) return `idle lock ${name} kept`;
    // One holder is the lock itself, never a list of one nor an object apart (lock_state.ts LockState).
    if (Array.isArray(lock.held) && lock.held.length === 1) return `lock ${name} keeps its one holder in a list`;
    if (!Array.isArray(lock.held) && lock.held !== lock) return `lock ${name} keeps its one holder apart from it`;
    if (Array.isArray(lock.held) && lock.held.includes(lock)) return `lock ${name} lists itself among its shared holders`;
    if (lock.queue.length > limits.waitersPerLockMax) return `${lock.queue.length} waiters on ${name} > ${limits.waitersPerLockMax}`;
    if (lock.delayUntilMs > nowMs) dueMs = Math.min(dueMs, lock.delayUntilMs);
    for (const entry of [...lock.holders, ...lock.queue]) {
      const role = "token" in entry ? "holder" : "waiter";
      if (!table.sessions.has(entry.session)) return `${role} ${entry.session} of ${name} has no session in the table`;
      const names = expected.get(entry.session) ?? new Set<string>();
      if (names.has(name)) return `${entry.session} appears twice among the holders and waiters of ${name}`;
      names.add(name);
      expected.set(entry.session, names);
      if (entry.callId !== undefined && table.sessions.get(entry.session)!.leftCalls.includes(entry.callId)) {
        return `${role} ${entry.session} of ${name} carries call ${entry.callId}, which its session left`;
      }
      if (entry.callId !== undefined && callIdTooLong(entry.callId)) return `${role} ${entry.session} of ${name}: call id longer than ${CALL_ID_LENGTH_MAX}`;
      if ("token" in entry) {
        if (tokens.has(entry.token)) return `token ${entry.token} held twice`;
        if (entry.token > table.highestToken) return `${name} holder token ${entry.token} > highest ${table.highestToken}`;
        tokens.add(entry.token);
      } else {
        dueMs = Math.min(dueMs, entry.deadlineMs);
      }
    }
  }
  for (const [id, session] of table.sessions) {
    // Each entry once, each one expected, as many as expected: the index names exactly those locks.
    // (One pass: a lookup per entry in the index's list would be quadratic in a filler session's locks.)
    const indexed = new Set<string>();
    for (const lock of session.locks) {
      const name = lock.name;
      if (table.locks.get(name) !== lock) return `session ${id}'s index names a lock ${name} the table does not have`;
      if (!expected.get(id)?.has(name)) return `session ${id}'s index names ${name}, which it neither holds nor waits for`;
      if (indexed.has(name)) return `session ${id}'s index names ${name} twice`;
      indexed.add(name);
    }
    const missing = [...(expected.get(id) ?? [])].find((name) => !indexed.has(name));
    if (missing !== undefined) return `session ${id}'s index lacks ${missing}, which it holds or waits for`;
  }
  for (const [id, session] of table.sessions) if (!session.secretHash) return `session ${id} has no secret hash`;
  const [kept, recounted] = [JSON.stringify(sortedEntries(table.owners)), JSON.stringify(sortedEntries(recountOwners(table)))];
  if (kept !== recounted) return `owner counts ${kept} differ from a recount of the table ${recounted}`;
  if (internals.dueAtMs > dueMs) return `due index ${internals.dueAtMs}ms is after the next deadline or lock-delay end ${dueMs}ms`;
  if (internals.leases.dueAtMs > leaseDueMs) return `lease index ${internals.leases.dueAtMs}ms is after the next lease end ${leaseDueMs}ms`;
  return roundTrip(table, limits);
}

/**
 * Whether a call id the table keeps (packed, call_id.ts) was longer than CALL_ID_LENGTH_MAX as the
 * client sent it. The text is never longer than what the table keeps, but for a packed UUID's 36
 * characters, far below the bound; so only a long one is unpacked (this runs for every entry
 * after every command).
 */
function callIdTooLong(kept: string): boolean {
  return kept.length > CALL_ID_LENGTH_MAX && unpackCallId(kept).length > CALL_ID_LENGTH_MAX;
}

/** Sessions and waiting enters per owner, counted afresh from the table's sessions and queues. */
export function recountOwners(table: LockTable): OwnerCounts {
  const counts = new OwnerCounts();
  for (const session of table.sessions.values()) counts.sessionOpened(ownerKey(session.owner));
  for (const lock of table.locks.values()) {
    for (const waiter of lock.queue) counts.waiterAdded(ownerKey(table.sessions.get(waiter.session)?.owner));
  }
  return counts;
}

/** An OwnerCounts' entries in owner order (for comparing two). */
export function sortedEntries(counts: OwnerCounts): ReturnType<OwnerCounts["entries"]> {
  return counts.entries().sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** The snapshot is plain data (fresh copies), so restoring from it directly is a fair round trip. */
function roundTrip(table: LockTable, limits: LockTableLimits): string | undefined {
  const snapshot = table.snapshot();
  const text = JSON.stringify(snapshot);
  let restored: LockTableSnapshot;
  try {
    restored = LockTable.fromSnapshot(snapshot, limits).snapshot();
  } catch (error) {
    return `its snapshot does not restore: ${(error as Error).message}`;
  }
  if (JSON.stringify(restored) === text) return undefined;
  const original = JSON.parse(text) as LockTableSnapshot;
  const keys = Object.keys(original) as Array<keyof LockTableSnapshot>;
  const key = keys.find((k) => JSON.stringify(original[k]) !== JSON.stringify(restored[k]))!;
  const brief = (value: unknown) => String(JSON.stringify(value)).slice(0, 120);
  return `snapshot does not round-trip: ${key} ${brief(original[key])} comes back as ${brief(restored[key])}`;
}
