/**
 * The simulated arbiter: the real driver code of cluster/arbiter/server.ts (`restoreArbiter`,
 * `answerArbiter`: decode, one step of the real ArbiterCore, the record durable before the
 * answer, encode) on simulated ports: the node's clock, a simulated disk, a trace logger.
 * Requests arrive as JSON text over the simulated network (lock/messages.ts). The answer
 * goes out only after the fsync's latency (`fsyncMs`) when the step wrote the record, so a crash
 * between the write and the answer is a point the simulation reaches: the requester then times
 * out, and the restarted arbiter has the new state. A restart restores the core from the disk.
 */
import type { ArbiterCore, ArbiterRequest, ArbiterState, ArbiterStep } from "../../../lib/core/arbiter/arbiter.ts";
import type { Prng } from "../../../lib/core/prng.ts";
import { answerArbiter, type ArbiterPorts, type ArbiterSettings, type ArbiterStore, restoreArbiter } from "../../../cluster/arbiter/server.ts";
import { Actor } from "../actor.ts";
import type { Envelope } from "../network.ts";
import type { Sim } from "../simulator.ts";
import type { NodeClock } from "../time.ts";
import { isHttp, replyTo } from "../lock/messages.ts";

/** The arbiter's state file (arbiter.json): replaced whole, durable once written (JSON text, as on disk). */
export class SimArbiterDisk implements ArbiterStore {
  private stored: string | null = null;
  writes = 0;

  save(state: ArbiterState): void {
    this.stored = JSON.stringify(state);
    this.writes += 1;
  }

  load(): ArbiterState | null {
    return this.stored === null ? null : JSON.parse(this.stored) as ArbiterState;
  }
}

export interface ArbiterObserver {
  /** After each step, with what it persisted; the checkers look at the reply and the state. */
  stepped(arbiter: ArbiterActor, request: ArbiterRequest, step: ArbiterStep): void;
}

export class ArbiterActor extends Actor {
  core: ArbiterCore;
  readonly disk = new SimArbiterDisk();
  private readonly ports: ArbiterPorts;

  constructor(
    sim: Sim,
    id: string,
    clock: NodeClock,
    private readonly options: ArbiterSettings & { fsyncMs: readonly [number, number] },
    private readonly servers: readonly string[],
    private readonly observer: ArbiterObserver,
    private readonly prng: Prng,
  ) {
    super(sim, id, "failover-arbiter", clock);
    const text = (fields: Record<string, unknown>) =>
      Object.entries(fields).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : String(v)}`).join(" ");
    this.ports = {
      store: this.disk,
      clock,
      log: { event: (event, fields = {}) => this.sim.log(this.id, "*", `${event} ${text(fields)}`), flush: () => {} },
      // The simulated disk never refuses a write (yet): reaching this is a bug, and ends the run.
      failStop: (reason) => {
        throw new Error(`arbiter fail-stop: ${reason}`);
      },
    };
    this.core = restoreArbiter(this.options, this.ports);
  }

  peers(): string[] {
    return [...this.servers];
  }

  protected onCrash(): void {}

  protected onRestart(): void {
    this.core = restoreArbiter(this.options, this.ports);
  }

  protected receive(envelope: Envelope): void {
    const request = envelope.payload;
    if (!isHttp(request) || request.http !== "request") return;
    let persisted = false;
    replyTo(this, envelope.from, request, () => {
      const answer = answerArbiter(this.core, request.body ?? "", this.ports);
      persisted = answer.step.persist !== undefined;
      this.observer.stepped(this, answer.request, answer.step);
      return { status: 200, body: answer.body };
    }, "arbiter", (send) => {
      // Durable before the answer: the fsync takes a while, and a crash may come in between.
      if (persisted) this.after(this.prng.between(...this.options.fsyncMs), send);
      else send();
    });
  }
}
