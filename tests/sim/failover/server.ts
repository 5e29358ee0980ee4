/**
 * A simulated lock server of the failover kind: the real driver (cluster/lock/service.ts, with
 * the LockReplica core) as lock/server.ts runs it, configured with the other server as its peer
 * and the arbiter; this class adds only what the failover checkers watch: committed grants (the
 * driver's "granted" log lines and enter answers), the core's events, and the epochs of the
 * messages the core took.
 */
import type { ReplicaSettings } from "../../../lib/core/lock/lock_replica.ts";
import type { Grant } from "../../../lib/core/lock/lock_table.ts";
import type { Settings } from "../../../lib/settings.ts";
import type { Sim } from "../simulator.ts";
import type { NodeClock } from "../time.ts";
import { LockServiceActor } from "../lock/server.ts";
import type { LockServiceOptions } from "../../../cluster/lock/service.ts";
import { DurableLog, parseDurableCopy } from "../../../cluster/lock/durable_log.ts";
import type { Prng } from "../../../lib/core/prng.ts";
import type { SimLogDisk } from "./disk.ts";

/** What the failover checkers see of a server's steps. */
export interface FailoverServerObserver {
  /** A grant left the server as committed: a "granted" effect or an enter answered "granted". */
  committedGrant(server: FailoverServerActor, grant: Grant): void;
  /** A role change or other fact of the core's `ready().events`, as the driver logs it. */
  event(server: FailoverServerActor, event: string, fields: Record<string, unknown>): void;
  /** The core took a message (a request, or the answer to one of its requests) of `epoch`. */
  sawEpoch(server: FailoverServerActor, epoch: number): void;
}

export class FailoverServerActor extends LockServiceActor {
  constructor(
    sim: Sim,
    id: string,
    clock: NodeClock,
    settings: Settings & ReplicaSettings,
    readonly peerId: string,
    readonly arbiterId: string,
    private readonly observer: FailoverServerObserver,
    clientIds: () => string[],
    /** The durable profile: this server's disk, and the draws of its fail-stop restarts. */
    private readonly durable: { disk: SimLogDisk; prng: Prng } | null = null,
  ) {
    super(sim, id, "failover-server", clock, { settings, peerId, arbiterId, clientIds });
    durable?.disk.attach(this);
    this.start();
  }

  /** The real DurableLog on the simulated disk, started from what the disk holds. */
  protected override durableLog(): LockServiceOptions["durable"] {
    if (!this.durable) return undefined;
    const { disk, prng } = this.durable;
    const settings = this.setup.settings;
    const opened = parseDurableCopy(disk.snapshot, disk.log, settings, settings);
    const log = new DurableLog({
      limits: settings,
      answered: settings,
      compactEntries: settings.durableCompactEntries,
      // Fail-stop (cluster/fail_stop.ts): the process exits; an operator restarts it later,
      // in the heal phase too (the heal's restarts may have come before).
      onFailure: () => {
        this.crash();
        this.sim.at(this.sim.nowMs + prng.between(0, 3_000), () => this.restart());
      },
      defer: (fn) => this.after(0, fn),
    }, disk, opened);
    return { restored: opened.restored, sink: log };
  }

  protected override onCrash(): void {
    super.onCrash();
    this.durable?.disk.crashed();
  }

  /** End of the lease on this server's clock (the later of the arbiter's and the backup's). */
  get leaseUntilMs(): number {
    return this.replica?.leaseUntilMs() ?? Number.NEGATIVE_INFINITY;
  }

  /**
   * Whether this server would accept a new command now: the core's `serving()` evaluated at
   * this node's clock reading now (a paused server's clock runs on; it serves again on resume
   * only if its lease has not lapsed by then).
   */
  servingNow(): boolean {
    if (this.state === "crashed" || !this.replica) return false;
    return this.replica.servingAt(this.clock.nowMs());
  }

  /** Whether this server's table is a fresh one in its grace (holdGrants): it grants nothing yet. */
  inGrace(): boolean {
    const replica = this.replica;
    if (this.state === "crashed" || !replica?.machine) return false;
    return replica.machine.table.grantsFrom > this.clock.nowMs() + replica.timeOffset;
  }

  protected override logged(event: string, fields: Record<string, unknown>): void {
    super.logged(event, fields);
    if (event === "granted") {
      const { name, session, token, mode } = fields as unknown as Grant;
      this.observer.committedGrant(this, { name, session, token, mode });
    } else {
      this.observer.event(this, event, fields);
    }
  }

  protected override entered(grant: Grant): void {
    this.observer.committedGrant(this, grant);
  }

  protected override tookEpoch(epoch: number): void {
    this.observer.sawEpoch(this, epoch);
  }
}
