/**
 * The lock kind's invariants. Per event (`check`): mutual exclusion among the clients that
 * believe they hold a lock under the lease rule, and every such belief backed by the server's
 * table (an acknowledged grant survives). Per applied command (hooks): the table's holders are
 * compatible, fencing tokens strictly increase per lock (also across server restarts), grants
 * follow the FIFO queue, and no grant goes to a dead session.
 */
import type { Command, LockTable, Output } from "../../../lib/core/lock/lock_table.ts";
import type { Checker } from "../checkers.ts";
import type { Sim } from "../simulator.ts";
import type { Belief, LockClientActor } from "./client.ts";
import type { LockServerActor, LockServerObserver } from "./server.ts";

export const LOCK_CHECKERS = {
  clientMutex: "lock.client-mutex",
  grantSurvives: "lock.grant-survives",
  serverMutex: "lock.server-mutex",
  fencing: "lock.fencing",
  fifo: "lock.fifo",
  liveGrant: "lock.grant-to-live",
} as const;

/** Two believers of one lock are fine only if both hold it shared. */
export function clientMutexChecker(clients: () => readonly LockClientActor[], name: string = LOCK_CHECKERS.clientMutex): Checker {
  return {
    name,
    doc: "never two clients that believe (lease rule) they hold one lock, unless all shared",
    check() {
      const byLock = new Map<string, Belief>();
      for (const client of clients()) {
        const belief = client.belief();
        if (!belief) continue;
        const other = byLock.get(belief.name);
        if (other && (other.mode === "exclusive" || belief.mode === "exclusive")) {
          return `${other.client} (token ${other.token}, ${other.mode}) and ${belief.client} (token ${belief.token}, ${belief.mode}) both hold ${belief.name}`;
        }
        byLock.set(belief.name, belief);
      }
      return undefined;
    },
  };
}

/**
 * Where a believed grant must be: the table of the server that decides now. `null`: no server
 * decides at this moment (nothing to check); `table` undefined: the deciding server has none.
 */
export type AuthoritativeTable = { server: string; table: LockTable | undefined } | null;

/** Each believed grant is still in the deciding server's table, under the same session and token. */
export function grantSurvivesChecker(
  clients: () => readonly LockClientActor[],
  authority: () => AuthoritativeTable,
  name: string = LOCK_CHECKERS.grantSurvives,
  doc = "every grant a client believes in (acknowledged, lease live) is a holder in the server's table",
): Checker {
  return {
    name,
    doc,
    check() {
      for (const client of clients()) {
        const belief = client.belief();
        if (!belief) continue;
        const source = authority();
        if (!source) return undefined;
        const table = source.table;
        if (!table) return `${belief.client} holds ${belief.name} token ${belief.token} but the server lost its table (crashed)`;
        const holder = table.locks.get(belief.name)?.holders.find((h) => h.session === belief.session);
        if (!holder || holder.token !== belief.token) {
          return `${belief.client} holds ${belief.name} token ${belief.token} (${belief.session}) but ${source.server === "server" ? "the server" : source.server}'s holders are ` +
            JSON.stringify(table.locks.get(belief.name)?.holders.map((h) => `${h.session}:${h.token}`) ?? []);
        }
      }
      return undefined;
    },
  };
}

interface TableBefore {
  queues: Map<string, string[]>;
  held: Set<string>;
}

/** The per-command hooks: compatible holders, increasing tokens, FIFO, grants to live sessions. */
export class TableObserver implements LockServerObserver {
  /** Highest token granted per lock over the whole run (all server incarnations). */
  private readonly tokenMax = new Map<string, number>();

  constructor(private readonly sim: Sim) {
    for (const name of [LOCK_CHECKERS.serverMutex, LOCK_CHECKERS.fencing, LOCK_CHECKERS.fifo, LOCK_CHECKERS.liveGrant]) {
      sim.checkers.declareHook(name);
    }
  }

  /** The queues before the command (session ids per lock, in order) and who held what. */
  before(server: LockServerActor): TableBefore {
    const queues = new Map<string, string[]>();
    const held = new Set<string>();
    for (const [name, lock] of server.table!.locks) {
      if (lock.queue.length > 0) queues.set(name, lock.queue.map((w) => w.session));
      for (const holder of lock.holders) held.add(`${name}\u0000${holder.session}`);
    }
    return { queues, held };
  }

  /** `nowMs`: the time the table applied the command at (the log's time base, not the node's clock). */
  after(server: LockServerActor, beforeState: unknown, command: Command, output: Output, nowMs: number): void {
    const before = beforeState as TableBefore;
    const table = server.table!;
    const grants = output.effects.flatMap((e) => (e.type === "granted" ? [e.grant] : []));
    const result = output.result;
    if (result.ok && result.type === "granted" && command.type === "enter") {
      // A session entering a lock it holds gets its old grant back: not a new grant. Nor is the
      // answer to a waiter that the expiry pass of this same command promoted (an effect).
      const g = result.grant;
      const promoted = grants.some((e) => e.name === g.name && e.session === g.session && e.token === g.token);
      if (!promoted && !before.held.has(`${command.name}\u0000${command.session}`)) grants.push(g);
    }
    for (const grant of grants) {
      const max = this.tokenMax.get(grant.name) ?? -1;
      if (grant.token <= max) {
        return this.sim.violate(LOCK_CHECKERS.fencing, `${grant.name} granted to ${grant.session} with token ${grant.token} ≤ earlier ${max}`);
      }
      this.tokenMax.set(grant.name, grant.token);
      const session = table.sessions.get(grant.session);
      if (!session || session.expiresAtMs <= nowMs) {
        return this.sim.violate(LOCK_CHECKERS.liveGrant, `${grant.name} granted to dead session ${grant.session}`);
      }
    }
    // A waiter that left the queue in this command (its wait deadline or its session ended) was
    // not skipped, even if the same command queued it again at the back (a late re-ask).
    const left = new Set(output.effects.flatMap((e) => (e.type === "waitEnded" ? [`${e.name}\u0000${e.session}`] : [])));
    this.checkFifo(before.queues, grants, table.locks, left);
    for (const lock of table.locks.values()) {
      const exclusive = lock.holders.filter((h) => h.mode === "exclusive").length;
      if (exclusive > 1 || (exclusive === 1 && lock.holders.length > 1)) {
        return this.sim.violate(LOCK_CHECKERS.serverMutex, `${lock.name} holders ${lock.holders.map((h) => `${h.session}:${h.mode}`).join(", ")}`);
      }
    }
  }

  /**
   * A grant from the queue is FIFO when every waiter that was ahead of it is gone from the
   * queue now (granted in the same step, expired, withdrawn) or left it in this step (`left`:
   * "lock\0session" of the waitEnded effects) — none was skipped.
   */
  private checkFifo(
    before: Map<string, string[]>,
    grants: Array<{ name: string; session: string }>,
    locks: Map<string, { queue: Array<{ session: string }> }>,
    left: Set<string>,
  ): void {
    for (const grant of grants) {
      const queue = before.get(grant.name);
      const index = queue?.indexOf(grant.session) ?? -1;
      if (!queue || index <= 0) continue;
      const still = new Set(locks.get(grant.name)?.queue.map((w) => w.session) ?? []);
      const skipped = queue.slice(0, index).find((s) => still.has(s) && !left.has(`${grant.name}\u0000${s}`));
      if (skipped) {
        return this.sim.violate(LOCK_CHECKERS.fifo, `${grant.name} granted to ${grant.session} ahead of ${skipped}, queued earlier`);
      }
    }
  }
}
