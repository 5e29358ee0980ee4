/**
 * The simulated arbiter: the real ArbiterCore (lib/core/arbiter.ts) behind a driver that
 * mirrors cluster/arbiter_server.ts: every request is one `step`; when the step asks to
 * persist, the state is written to the simulated disk at once (durable: a crash never loses
 * it) and the answer goes out only after the fsync's latency (`fsyncMs`), so a crash between
 * the write and the answer is a point the simulation reaches: the requester then times out,
 * and the restarted arbiter has the new state. A restart builds a new core from the disk.
 */
import { type ArbiterReply, type ArbiterRequest, type ArbiterState, ArbiterCore, type ArbiterStep } from "../../../lib/core/arbiter.ts";
import type { Prng } from "../../../lib/core/prng.ts";
import { Actor } from "../actor.ts";
import type { Envelope } from "../network.ts";
import type { Sim } from "../simulator.ts";
import type { NodeClock } from "../time.ts";
import { isRpc, type RpcReply, wire } from "./rpc.ts";

/** The arbiter's state file (arbiter.json): replaced whole, durable once written. */
export class SimArbiterDisk {
  private stored: ArbiterState | null = null;
  writes = 0;

  write(state: ArbiterState): void {
    this.stored = structuredClone(state);
    this.writes += 1;
  }

  read(): ArbiterState | null {
    return this.stored ? structuredClone(this.stored) : null;
  }
}

export interface ArbiterObserver {
  /** After each step, with what it persisted; the checkers look at the reply and the state. */
  stepped(arbiter: ArbiterActor, request: ArbiterRequest, step: ArbiterStep): void;
}

export class ArbiterActor extends Actor {
  core: ArbiterCore;
  readonly disk = new SimArbiterDisk();

  constructor(
    sim: Sim,
    id: string,
    clock: NodeClock,
    private readonly options: { primaryId: string; backupId: string; leaseMs: number; bootstrapWaitMs: number; fsyncMs: readonly [number, number] },
    private readonly servers: readonly string[],
    private readonly observer: ArbiterObserver,
    private readonly prng: Prng,
  ) {
    super(sim, id, "failover-arbiter", clock);
    this.core = this.newCore();
  }

  private newCore(): ArbiterCore {
    const { primaryId, backupId, leaseMs, bootstrapWaitMs } = this.options;
    return new ArbiterCore({ primaryId, backupId, leaseMs, bootstrapWaitMs }, this.disk.read(), this.clock.nowMs());
  }

  peers(): string[] {
    return [...this.servers];
  }

  protected onCrash(): void {}

  protected onRestart(): void {
    this.core = this.newCore();
    this.sim.log(this.id, "*", `restored epoch=${this.core.current.epoch} primary=${this.core.current.primary} backupInSync=${this.core.current.backupInSync}`);
  }

  protected receive(envelope: Envelope): void {
    const payload = envelope.payload;
    if (!isRpc(payload) || payload.rpc !== "request") return;
    const request = payload.body as ArbiterRequest;
    const before = this.core.current.epoch;
    const step = this.core.step(request, this.clock.nowMs());
    if (step.persist) this.disk.write(step.persist);
    if (this.core.current.epoch !== before) {
      this.sim.log(this.id, "*", `epoch ${this.core.current.epoch} primary=${this.core.current.primary} backup=${this.core.current.backup}`);
    }
    this.observer.stepped(this, request, step);
    const reply: RpcReply = { rpc: "reply", ref: payload.ref, incarnation: payload.incarnation, body: wire(step.reply) };
    const send = () => this.sim.network.send(this, envelope.from, reply, replyLabel(step.reply));
    // Durable before the answer: the fsync takes a while, and a crash may come in between.
    if (step.persist) this.after(this.prng.between(...this.options.fsyncMs), send);
    else send();
  }
}

function replyLabel(reply: ArbiterReply): string {
  if (reply.type === "lease") return `lease e${reply.epoch} ${reply.primary}${reply.fresh ? " fresh" : ""}`;
  if (reply.type === "refused") return `refused e${reply.epoch} (${reply.reason})`;
  return `view e${reply.epoch}`;
}
