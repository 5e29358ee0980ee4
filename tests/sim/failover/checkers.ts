/**
 * The failover kind's invariants (issue 5). Per event:
 * - failover.one-serving: at no moment of virtual time do two servers serve. "Serves" is the
 *   core's own rule, `serving()` (role primary and its clock before the lease's end, which it
 *   counts from the SEND time of the renewal, minus leaseSafetyMs), evaluated on the server's
 *   clock reading at that moment; a paused server's clock runs on. So two servers of different
 *   epochs may both call themselves primary, but never both before their lease's end by their
 *   own clocks. This is also "never two serving in different epochs unless the older one's
 *   lease has lapsed by its own clock".
 * - failover.epoch-primary: all servers ever seen serving in one epoch are the same server.
 * - failover.epoch-monotone: the arbiter's epoch never goes back (across its restarts, from its
 *   disk), nor a server's within one incarnation (a restarted server starts from 0 and learns).
 * - failover.committed-on-backup: while the arbiter records the backup in sync in the primary's
 *   epoch (so it may promote it), a backup that follows that primary in that epoch with a copy
 *   has applied everything the primary committed (answered or turned into effects).
 * - failover.grant-survives: every grant a client believes in (lease rule) is a holder, with
 *   that session and token, in the table of the server serving now (none serving: nothing to
 *   check; the next one to serve must have it).
 * - failover.client-mutex: never two clients believing they hold one lock (unless all shared).
 * - failover.grants-after-grace (liveness, once): by the heal plus a fresh start plus a fresh
 *   table's grace, a server serves outside any grace (it grants), whatever crashed before.
 * Per step (hooks):
 * - failover.arbiter-epoch-unique: every lease the arbiter hands out for epoch E names the same
 *   server, across the arbiter's restarts.
 * - failover.fencing: a new committed grant of a lock carries a token above every earlier one
 *   of that lock, across takeovers; the same token never goes to two sessions.
 * - failover.takeover-has-commits: a backup taking over has applied every entry an earlier
 *   primary of its lineage committed.
 * - failover.steps-down: a primary that took a message of a higher epoch (a request, or the
 *   answer to a request it still waited for) is no longer primary of its older epoch.
 */
import type { ArbiterRequest, ArbiterStep } from "../../../lib/core/arbiter/arbiter.ts";
import type { Grant } from "../../../lib/core/lock/lock_table.ts";
import type { Sim } from "../simulator.ts";
import type { ArbiterActor, ArbiterObserver } from "./arbiter.ts";
import type { FailoverServerActor, FailoverServerObserver } from "./server.ts";

export const FAILOVER_CHECKERS = {
  oneServing: "failover.one-serving",
  epochPrimary: "failover.epoch-primary",
  epochMonotone: "failover.epoch-monotone",
  committedOnBackup: "failover.committed-on-backup",
  grantSurvives: "failover.grant-survives",
  clientMutex: "failover.client-mutex",
  arbiterEpochUnique: "failover.arbiter-epoch-unique",
  fencing: "failover.fencing",
  takeoverHasCommits: "failover.takeover-has-commits",
  stepsDown: "failover.steps-down",
  grantsAfterGrace: "failover.grants-after-grace",
} as const;

/** Private fields of the core that the checkers read (they are not part of its API). */
function commitIndexOf(server: FailoverServerActor): number {
  return (server.replica as unknown as { commitIndex: number } | undefined)?.commitIndex ?? 0;
}

export class FailoverChecks implements FailoverServerObserver, ArbiterObserver {
  private servers: FailoverServerActor[] = [];
  private arbiter: ArbiterActor | undefined;
  private readonly servedBy = new Map<number, string>();
  private readonly leasedTo = new Map<number, string>();
  private arbiterEpochMax = 0;
  private readonly serverEpoch = new Map<string, { incarnation: number; epoch: number }>();
  /** Per lock: token → session of every committed grant, and the highest token. */
  private readonly tokens = new Map<string, { max: number; sessions: Map<number, string> }>();
  /** Highest index committed by a primary of the current lineage (reset by a fresh start). */
  private committedMax = 0;
  private lineageEpoch = 0;
  /** Fresh starts after the first (state lost: the lone copy crashed). */
  freshStarts = 0;

  constructor(private readonly sim: Sim) {
    for (const name of [
      FAILOVER_CHECKERS.arbiterEpochUnique,
      FAILOVER_CHECKERS.fencing,
      FAILOVER_CHECKERS.takeoverHasCommits,
      FAILOVER_CHECKERS.stepsDown,
      FAILOVER_CHECKERS.grantsAfterGrace,
    ]) {
      sim.checkers.declareHook(name);
    }
  }

  attach(servers: FailoverServerActor[], arbiter: ArbiterActor): void {
    this.servers = servers;
    this.arbiter = arbiter;
    const register = (name: string, doc: string, check: () => string | undefined) => this.sim.checkers.register({ name, doc, check });
    register(FAILOVER_CHECKERS.oneServing, "never two servers serving (core's serving() on their own clocks) at one moment", () => this.oneServing());
    register(FAILOVER_CHECKERS.epochPrimary, "one server serves per epoch", () => this.epochPrimary());
    register(FAILOVER_CHECKERS.epochMonotone, "epochs only grow (arbiter across restarts, servers per incarnation)", () => this.epochMonotone());
    register(FAILOVER_CHECKERS.committedOnBackup, "while the arbiter may promote the backup, it has everything committed", () => this.committedOnBackup());
  }

  private oneServing(): string | undefined {
    const serving = this.servers.filter((s) => s.servingNow());
    if (serving.length <= 1) return undefined;
    return serving.map((s) => `${s.id} (epoch ${s.replica!.epoch}, clock ${s.clock.nowMs()} < lease end ${s.leaseUntilMs})`).join(" and ") + " both serve";
  }

  private epochPrimary(): string | undefined {
    for (const server of this.servers) {
      if (!server.servingNow()) continue;
      const epoch = server.replica!.epoch;
      const earlier = this.servedBy.get(epoch);
      if (earlier === undefined) this.servedBy.set(epoch, server.id);
      else if (earlier !== server.id) return `${server.id} serves epoch ${epoch}, which ${earlier} served`;
    }
    return undefined;
  }

  private epochMonotone(): string | undefined {
    const arbiterEpoch = this.arbiter!.core.current.epoch;
    if (this.arbiter!.state !== "crashed") {
      if (arbiterEpoch < this.arbiterEpochMax) return `arbiter epoch ${arbiterEpoch} after ${this.arbiterEpochMax}`;
      this.arbiterEpochMax = arbiterEpoch;
    }
    for (const server of this.servers) {
      if (!server.replica) continue;
      const seen = this.serverEpoch.get(server.id);
      const epoch = server.replica.epoch;
      if (seen && seen.incarnation === server.incarnation && epoch < seen.epoch) {
        return `${server.id} went from epoch ${seen.epoch} back to ${epoch}`;
      }
      this.serverEpoch.set(server.id, { incarnation: server.incarnation, epoch });
      // The lineage's commit high-water mark (for takeover-has-commits).
      if (server.replica.role === "primary" && epoch >= this.lineageEpoch) {
        this.committedMax = Math.max(this.committedMax, commitIndexOf(server));
      }
    }
    return undefined;
  }

  private committedOnBackup(): string | undefined {
    const arbiter = this.arbiter!.core.current;
    if (!arbiter.backupInSync || arbiter.primary === null) return undefined;
    const primary = this.servers.find((s) => s.id === arbiter.primary);
    const backup = this.servers.find((s) => s.id !== arbiter.primary);
    const p = primary?.replica;
    const b = backup?.replica;
    if (!p || !b || p.role !== "primary" || p.epoch !== arbiter.epoch) return undefined;
    if (b.role !== "backup" || b.primary !== primary!.id || b.epoch !== p.epoch || !b.machine) return undefined;
    const committed = commitIndexOf(primary!);
    if (committed > b.machine.appliedIndex) {
      return `${primary!.id} committed up to ${committed} in epoch ${p.epoch}, the arbiter records ${backup!.id} in sync, ` +
        `but ${backup!.id} has applied only ${b.machine.appliedIndex}`;
    }
    return undefined;
  }

  // ---- hooks ------------------------------------------------------------------------------

  stepped(_arbiter: ArbiterActor, _request: ArbiterRequest, step: ArbiterStep): void {
    const reply = step.reply;
    if (reply.type !== "lease") return;
    const earlier = this.leasedTo.get(reply.epoch);
    if (earlier === undefined) this.leasedTo.set(reply.epoch, reply.primary);
    else if (earlier !== reply.primary) {
      this.sim.violate(FAILOVER_CHECKERS.arbiterEpochUnique, `the arbiter leased epoch ${reply.epoch} to ${reply.primary} after ${earlier}`);
    }
  }

  committedGrant(server: FailoverServerActor, grant: Grant): void {
    let lock = this.tokens.get(grant.name);
    if (!lock) {
      lock = { max: Number.NEGATIVE_INFINITY, sessions: new Map() };
      this.tokens.set(grant.name, lock);
    }
    const holder = lock.sessions.get(grant.token);
    if (holder === grant.session) return; // the same grant answered again (a holder's enter)
    if (holder !== undefined || grant.token <= lock.max) {
      return this.sim.violate(FAILOVER_CHECKERS.fencing,
        `${server.id} granted ${grant.name} to ${grant.session} with token ${grant.token} ≤ earlier ${lock.max}` +
          (holder ? ` (token already granted to ${holder})` : ""));
    }
    lock.max = grant.token;
    lock.sessions.set(grant.token, grant.session);
  }

  /**
   * A new primary's copy may hold grants the old primary made but never committed (the backup
   * had the entry, the old primary died before the ack). They become committed with the takeover
   * and were made before anything the new primary grants: record them now, in token order, so a
   * later answer of such a grant counts as the same grant, not as a token going backwards.
   */
  private inheritGrants(server: FailoverServerActor): void {
    const table = server.replica?.machine?.table;
    if (!table) return;
    const held = [...table.locks.values()].flatMap((lock) => lock.holders.map((h) => ({ name: lock.name, session: h.session, token: h.token })));
    for (const holder of held.sort((a, b) => a.token - b.token)) {
      let lock = this.tokens.get(holder.name);
      if (!lock) {
        lock = { max: Number.NEGATIVE_INFINITY, sessions: new Map() };
        this.tokens.set(holder.name, lock);
      }
      if (lock.sessions.has(holder.token)) continue;
      lock.sessions.set(holder.token, holder.session);
      lock.max = Math.max(lock.max, holder.token);
    }
  }

  sawEpoch(server: FailoverServerActor, epoch: number): void {
    const replica = server.replica!;
    if (replica.role === "primary" && replica.epoch < epoch) {
      this.sim.violate(FAILOVER_CHECKERS.stepsDown, `${server.id} is still primary of epoch ${replica.epoch} after taking a message of epoch ${epoch}`);
    }
  }

  event(server: FailoverServerActor, event: string, fields: Record<string, unknown>): void {
    if (event !== "primary") return;
    const epoch = Number(fields.epoch);
    if (fields.how === "fresh") {
      if (this.lineageEpoch > 0) this.freshStarts += 1;
      this.lineageEpoch = epoch;
      this.committedMax = 0;
      return;
    }
    this.inheritGrants(server);
    const applied = Number(fields.index); // before the takeover's own restartLeases entry
    if (applied < this.committedMax) {
      this.sim.violate(FAILOVER_CHECKERS.takeoverHasCommits,
        `${server.id} took over epoch ${epoch} with entries up to ${applied}, but up to ${this.committedMax} were committed`);
    }
  }
}
