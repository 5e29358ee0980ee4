/**
 * One simulated process: a server, a client or a ring node. The simulator owns its life cycle
 * (crash, restart, pause, resume) and its clock; subclasses own the protocol driver that runs the
 * real core. Timers belong to one incarnation, so a crash cancels them all at once; while paused
 * (SIGSTOP) nothing runs: timers and deliveries wait and run, in order, on resume.
 */
import type { NodeClock } from "./time.ts";
import type { Envelope } from "./network.ts";
import type { Sim } from "./simulator.ts";

export type ActorState = "up" | "crashed" | "paused";

/** Work held back by a pause beyond this is dropped, like a full socket buffer. */
const DEFERRED_MAX = 10_000;

export abstract class Actor {
  state: ActorState = "up";
  /** Grows at every crash: timers of an older incarnation never fire. */
  incarnation = 0;
  private deferred: Array<() => void> = [];

  constructor(
    readonly sim: Sim,
    readonly id: string,
    /** The fault group this actor belongs to, e.g. "lock-server", "lock-client", "ring". */
    readonly group: string,
    readonly clock: NodeClock,
  ) {}

  /** The actors this one talks to (one-way partitions pick a link among these). */
  abstract peers(): string[];

  /** Handles one delivered message (only called while up). */
  protected abstract receive(envelope: Envelope): void;

  /**
   * A message arrived while this process is down: what its host answers, if anything (the ring's
   * HTTP actors refuse requests, as a closed port does; by default the message is simply lost).
   * It must not touch the crashed process's state.
   */
  protected refuseWhileCrashed(_envelope: Envelope): void {}

  /** Called after the state became "crashed": drop volatile state. */
  protected abstract onCrash(): void;

  /** Called after the state became "up" again: start a fresh incarnation from what persisted. */
  protected abstract onRestart(): void;

  /** Runs `fn` after `localMs` of this node's clock, in this incarnation only. */
  after(localMs: number, fn: () => void): void {
    const incarnation = this.incarnation;
    this.sim.at(this.sim.nowMs + this.clock.globalDelayMs(localMs), () => this.runIn(incarnation, fn));
  }

  get up(): boolean {
    return this.state === "up";
  }

  deliver(envelope: Envelope): void {
    if (this.state === "crashed") {
      if (this.sim.trace.verbose) this.sim.log(this.id, ">", `lost (crashed) #${envelope.id}`);
      this.refuseWhileCrashed(envelope);
      return;
    }
    const incarnation = this.incarnation;
    this.runIn(incarnation, () => this.receive(envelope));
  }

  crash(): void {
    if (this.state === "crashed") return;
    this.state = "crashed";
    this.incarnation += 1;
    this.deferred = [];
    this.sim.log(this.id, "!", "crash");
    this.onCrash();
  }

  restart(): void {
    if (this.state !== "crashed") return;
    this.state = "up";
    this.sim.log(this.id, "^", `restart (incarnation ${this.incarnation})`);
    this.onRestart();
  }

  pause(): void {
    if (this.state !== "up") return;
    this.state = "paused";
    this.sim.log(this.id, "~", "pause");
  }

  resume(): void {
    if (this.state !== "paused") return;
    this.state = "up";
    const deferred = this.deferred;
    this.deferred = [];
    this.sim.log(this.id, "~", `resume (${deferred.length} deferred)`);
    // Each held-back item becomes its own event, so the checkers run between them.
    const incarnation = this.incarnation;
    for (const fn of deferred) this.sim.at(this.sim.nowMs, () => this.runIn(incarnation, fn));
  }

  private runIn(incarnation: number, fn: () => void): void {
    if (incarnation !== this.incarnation || this.state === "crashed") return;
    if (this.state === "paused") {
      if (this.deferred.length < DEFERRED_MAX) this.deferred.push(fn);
      return;
    }
    fn();
  }
}
