/**
 * A simulated ring client bound to one ring node, following lib/client/ring_client.ts: it
 * enters (long-polls with a ticket until granted or the wait ends) and takes the section's lease
 * as `sentAt + leaseMs`, the remaining lease the node reported counted from the send time of
 * the request that got it, so never later than the node's end. (The real client counts from
 * the start of lock(), i.e. the FIRST request: after a wait longer than the lease it believes
 * the section over at once. Conservative, so safe; the simulator uses the last request, which
 * keeps sections usable in the workload.) Inside the section it writes (each write acknowledged only
 * after it went around the ring), checking the lease before each one, then leaves.
 */
import type { ClientReply } from "../../../lib/core/ring_node.ts";
import type { Prng } from "../../../lib/core/prng.ts";
import type { RingOp } from "../../../lib/core/ring_types.ts";
import type { Settings } from "../../../lib/settings.ts";
import { WAIT_CHUNK_MS } from "../../../lib/client/lock_client.ts";
import { Actor } from "../actor.ts";
import type { Envelope } from "../network.ts";
import type { Sim } from "../simulator.ts";
import type { NodeClock } from "../time.ts";
import type { RingClientRequest, RingMessage } from "./messages.ts";

/** Mirrors LONG_POLL_SLACK_MS of the clients. */
const LONG_POLL_SLACK_MS = 60_000;

export interface RingWorkload {
  leaseMs: number;
  writesMax: number;
  holdMaxMs: number;
  thinkMaxMs: number;
  waitChoicesMs: number[];
  healWaitMs: number;
  keys: number;
}

export interface RingSection {
  client: string;
  node: string;
  fence: number;
  epoch: number;
  leaseEndsAtMs: number;
}

export interface RingAttempt {
  client: string;
  startedAtMs: number;
  grantedAtMs?: number;
  endedAtMs?: number;
  outcome?: string;
}

export interface AckedWrite {
  wseq: number;
  author: string;
  op: RingOp;
}

export class RingClientActor extends Actor {
  private section: RingSection | undefined;
  private attempt: RingAttempt | undefined;
  private readonly pending = new Map<number, (reply: ClientReply | undefined) => void>();
  private reqIdNext = 1;
  private writeSeq = 0;

  constructor(
    sim: Sim,
    id: string,
    clock: NodeClock,
    readonly node: string,
    private readonly settings: Settings,
    private readonly workload: RingWorkload,
    private readonly prng: Prng,
    private readonly hooks: { attempt(a: RingAttempt): void; acked(w: AckedWrite): void },
  ) {
    super(sim, id, "ring-client", clock);
    this.think();
  }

  peers(): string[] {
    return [this.node];
  }

  /** The section this client believes it is in now (lease by its own clock), if any. */
  belief(): RingSection | undefined {
    const section = this.section;
    return section && this.clock.nowMs() < section.leaseEndsAtMs ? section : undefined;
  }

  currentAttempt(): RingAttempt | undefined {
    return this.attempt;
  }

  protected onCrash(): void {
    this.section = undefined;
    this.pending.clear();
    this.endAttempt("crashed");
  }

  protected onRestart(): void {
    this.think();
  }

  private think(): void {
    this.after(this.prng.between(0, this.workload.thinkMaxMs), () => this.lock());
  }

  private lock(): void {
    if (this.attempt || this.section) return;
    const w = this.workload;
    const waitMs = this.sim.phase === "safety" ? this.prng.pick(w.waitChoicesMs) : w.healWaitMs;
    this.attempt = { client: this.id, startedAtMs: this.sim.nowMs };
    this.sim.log(this.id, "?", `ring lock at ${this.node} wait ${waitMs}ms`);
    this.enter(this.clock.nowMs() + waitMs, waitMs, undefined);
  }

  private enter(deadlineMs: number, waitMs: number, ticket: string | undefined): void {
    const remainingMs = Math.max(0, deadlineMs - this.clock.nowMs());
    if (ticket !== undefined && remainingMs === 0 && waitMs > 0) {
      this.request({ type: "leave", reqId: 0, ticket }, 0, () => {});
      return this.finish("deadline");
    }
    const chunkMs = Math.min(remainingMs, WAIT_CHUNK_MS);
    const request: RingClientRequest = { type: "enter", reqId: 0, waitMs: chunkMs, leaseMs: this.workload.leaseMs, ...(ticket ? { ticket } : {}) };
    const sentAtMs = this.clock.nowMs();
    this.request(request, Math.min(Math.max(chunkMs, 1), WAIT_CHUNK_MS) + LONG_POLL_SLACK_MS, (reply) => {
      if (!reply || !reply.ok) return this.finish(reply ? `error ${reply.error.code}` : "unreachable");
      if (reply.type === "granted") return this.inSection(reply.fence, reply.epoch, sentAtMs + reply.leaseMs);
      if (reply.type === "waiting") return this.enter(deadlineMs, waitMs, reply.ticket);
      this.finish(reply.type === "notGranted" ? reply.reason : reply.type);
    });
  }

  private inSection(fence: number, epoch: number, leaseEndsAtMs: number): void {
    this.section = { client: this.id, node: this.node, fence, epoch, leaseEndsAtMs };
    if (this.attempt) this.attempt.grantedAtMs = this.sim.nowMs;
    this.sim.log(this.id, "+", `in section fence ${fence} epoch ${epoch} (lease to ${leaseEndsAtMs})`);
    this.writeLoop(this.section, this.prng.between(0, this.workload.writesMax));
  }

  private writeLoop(section: RingSection, left: number): void {
    if (this.section !== section) return;
    if (this.clock.nowMs() >= section.leaseEndsAtMs) return this.leave(section, "lease ended");
    if (left === 0) return this.after(this.prng.between(0, this.workload.holdMaxMs), () => this.leave(section, "done"));
    this.writeSeq += 1;
    const op: RingOp = { type: "put", key: `k${this.prng.below(this.workload.keys)}`, value: `${this.id}.${this.writeSeq}` };
    this.request({ type: "write", reqId: 0, fence: section.fence, op }, 0, (reply) => {
      if (reply?.ok && reply.type === "written") this.hooks.acked({ wseq: reply.wseq, author: this.node, op });
      if (!reply?.ok) return this.leave(section, reply ? `write: ${reply.error.code}` : "write: unreachable");
      this.writeLoop(section, left - 1);
    });
  }

  private leave(section: RingSection, why: string): void {
    if (this.section !== section) return;
    this.section = undefined; // stop acting before the leave is even sent
    this.sim.log(this.id, "-", `leave fence ${section.fence} (${why})`);
    this.request({ type: "leave", reqId: 0, fence: section.fence }, 0, () => {});
    this.finish("granted");
  }

  private finish(outcome: string): void {
    this.endAttempt(outcome);
    this.think();
  }

  private endAttempt(outcome: string): void {
    const attempt = this.attempt;
    if (!attempt) return;
    this.attempt = undefined;
    attempt.endedAtMs = this.sim.nowMs;
    attempt.outcome = attempt.grantedAtMs !== undefined ? "granted" : outcome;
    this.hooks.attempt(attempt);
  }

  private request(request: RingClientRequest, extraTimeoutMs: number, onReply: (reply: ClientReply | undefined) => void): void {
    const reqId = this.reqIdNext++;
    this.pending.set(reqId, onReply);
    const message: RingMessage = { type: "client", request: { ...request, reqId } };
    this.sim.network.send(this, this.node, message, `ring ${request.type} ${reqId}`);
    this.after(this.settings.requestTimeoutMs + extraTimeoutMs, () => {
      const waiting = this.pending.get(reqId);
      if (!waiting) return;
      this.pending.delete(reqId);
      waiting(undefined);
    });
  }

  protected receive(envelope: Envelope): void {
    const message = envelope.payload as RingMessage;
    if (message.type !== "clientReply") return;
    const waiting = this.pending.get(message.reqId);
    if (!waiting) return;
    this.pending.delete(message.reqId);
    waiting(message.reply);
  }
}
