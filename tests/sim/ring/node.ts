/**
 * A simulated ring node: the real RingNode core (lib/core/ring_node.ts) behind a driver that
 * mirrors cluster/ring/service.ts and cluster/ring/peer_link.ts on virtual time:
 *
 * - store first, then act (the simulated disk keeps what was stored across crashes);
 * - a link to the successor with one item in flight, resent until acknowledged, backoff from
 *   tokenRetryMs doubling up to tokenHopTimeoutMs; a "stale" answer drops older-epoch items;
 * - client enters long-poll for min(waitMs, longPollMaxMs), then `detach` answers "waiting";
 * - the first ring node's regeneration loop: probe all, then prepare all, then regenerate.
 */
import { assertNever } from "../../../lib/core/assert.ts";
import { type ClientReply, type RingEffect, type RingInput, RingNode, type RingOutput, type RingResult } from "../../../lib/core/ring_node.ts";
import type { RingPromise } from "../../../lib/core/ring_types.ts";
import type { Settings } from "../../../lib/settings.ts";
import { isBefore, type LinkItem } from "../../../cluster/ring/peer_link.ts";
import { Actor } from "../actor.ts";
import type { Envelope } from "../network.ts";
import type { Sim } from "../simulator.ts";
import type { NodeClock } from "../time.ts";
import { SimRingDisk } from "./disk.ts";
import type { RingClientRequest, RingMessage, RingPeerRequest } from "./messages.ts";

export interface RingObserver {
  afterStep(node: RingNodeActor, input: RingInput | { type: "start" }, output: RingOutput): void;
  restarted(node: RingNodeActor): void;
}

interface Outgoing {
  onAnswer(message: RingMessage): void;
}

/** Requests of this node waiting for a peer's answer, at most this many (bounded). */
const OUTGOING_MAX = 10_000;

export class RingNodeActor extends Actor {
  core: RingNode | undefined;
  readonly disk = new SimRingDisk();
  /** Client requests in the core (its reqId) → who asked, with their id. */
  private readonly clientReqs = new Map<number, { from: string; reqId: number }>();
  private coreReqIdNext = 1;
  private readonly outgoing = new Map<number, Outgoing>();
  private outReqIdNext = 1;
  private link: LinkItem[] = [];
  private linkBusy = false;
  private linkAttempt = 0;
  private regenerating = false;

  constructor(
    sim: Sim,
    id: string,
    clock: NodeClock,
    readonly ring: string[],
    private readonly settings: Settings,
    private readonly observer: RingObserver,
    private readonly clientIds: () => string[],
  ) {
    super(sim, id, "ring", clock);
    this.start();
  }

  peers(): string[] {
    return [...this.ring.filter((id) => id !== this.id), ...this.clientIds()];
  }

  private start(): void {
    this.core = new RingNode({
      id: this.id,
      ring: this.ring,
      limits: this.settings,
      ticketPrefix: `${this.id}-${this.incarnation}-`,
      stored: this.disk.load(),
    });
    this.observer.restarted(this);
    this.execute({ type: "start" }, this.core.start(this.clock.nowMs()));
    this.tickLoop();
    if (this.id === this.ring[0]) this.regenerationLoop();
  }

  protected onCrash(): void {
    this.core = undefined;
    this.clientReqs.clear();
    this.outgoing.clear();
    this.link = [];
    this.linkBusy = false;
    this.linkAttempt = 0;
    this.regenerating = false;
  }

  protected onRestart(): void {
    this.start();
  }

  private tickLoop(): void {
    this.after(this.settings.tickMs, () => {
      this.step({ type: "tick" });
      this.tickLoop();
    });
  }

  step(input: RingInput): RingResult {
    const output = this.core!.step(input, this.clock.nowMs());
    this.execute(input, output);
    return output.result;
  }

  /** Stores first, then acts: the order every RingOutput demands. */
  private execute(input: RingInput | { type: "start" }, output: RingOutput): void {
    if (output.persist.length > 0) this.disk.apply(output.persist);
    this.observer.afterStep(this, input, output);
    for (const effect of output.effects) this.onEffect(effect);
  }

  private onEffect(effect: RingEffect): void {
    switch (effect.type) {
      case "sendToken":
        return this.linkPush({ kind: "token", token: effect.token });
      case "tokenReturned":
        // PeerLink.dropTokensBefore; one in flight is forgotten (linkAnswer, linkRetry).
        this.link = this.link.filter((queued) => !(queued.kind === "token" && isBefore(queued.token, effect.epoch, effect.hop)));
        return;
      case "sendWrites":
        return this.linkPush({ kind: "writes", epoch: effect.epoch, entries: [...effect.entries] });
      case "fetch":
        return this.call(effect.from, { type: "fetch", reqId: 0, fromWseq: effect.fromWseq }, (answer) => {
          if (answer.type === "caughtUp") this.step({ type: "caughtUp", reply: answer.reply });
        });
      case "wakeAll":
        for (const id of this.ring) if (id !== this.id) this.send(id, { type: "peer", request: { type: "wake", reqId: 0 } });
        return;
      case "reply": {
        const asker = this.clientReqs.get(effect.reqId);
        this.clientReqs.delete(effect.reqId);
        if (asker) this.send(asker.from, { type: "clientReply", reqId: asker.reqId, reply: effect.reply });
        return;
      }
      case "sectionEnded":
        return;
      case "event":
        if (effect.event === "granted" || effect.event === "sectionEnded" || effect.event === "tokenRegenerated" || effect.event === "epoch") {
          this.sim.log(this.id, effect.event === "granted" ? "+" : "-", `${effect.event} ${Object.entries(effect.fields).map(([k, v]) => `${k}=${v}`).join(" ")}`);
        }
        return;
      default:
        assertNever(effect, "ring effect");
    }
  }

  private send(to: string, message: RingMessage): void {
    this.sim.network.send(this, to, message, describeMessage(message));
  }

  /** A request to a peer; the answer (if any arrives in time) goes to `onAnswer`. */
  private call(to: string, request: RingPeerRequest, onAnswer: (answer: RingMessage) => void, onTimeout?: () => void): void {
    if (this.outgoing.size >= OUTGOING_MAX) return onTimeout?.();
    const reqId = this.outReqIdNext++;
    this.outgoing.set(reqId, { onAnswer });
    this.send(to, { type: "peer", request: { ...request, reqId } });
    this.after(this.settings.tokenHopTimeoutMs, () => {
      if (!this.outgoing.delete(reqId)) return;
      onTimeout?.();
    });
  }

  // ---- The link to the successor (cluster/ring/peer_link.ts) ------------------------------

  private linkPush(item: LinkItem): void {
    const last = this.link[this.link.length - 1];
    const mergeable = last?.kind === "writes" && item.kind === "writes" && last.epoch === item.epoch &&
      (this.link.length > 1 || !this.linkBusy) && last.entries.length + item.entries.length <= this.settings.ringBatchWritesMax;
    if (mergeable) last.entries.push(...item.entries);
    else this.link.push(item);
    this.linkPump();
  }

  private linkPump(): void {
    if (this.linkBusy || this.link.length === 0) return;
    this.linkBusy = true;
    const item = this.link[0];
    // The receiver copies what it takes off the wire (as JSON would), so the item is shared
    // here only until then.
    this.call(this.core!.successor, { type: "deliver", reqId: 0, item }, (answer) => {
      if (answer.type === "result") this.linkAnswer(item, answer.result);
    }, () => this.linkRetry(item));
  }

  private linkAnswer(item: LinkItem, result: RingResult): void {
    if (this.link[0] !== item) return this.linkDropped();
    if (result.ok) {
      this.link.shift();
      this.linkAttempt = 0;
      this.linkBusy = false;
      if (item.kind === "token") this.step({ type: "tokenDelivered", epoch: item.token.epoch, hop: item.token.hop });
      return this.linkPump();
    }
    if (result.type === "stale") {
      const epoch = result.epoch;
      this.link = this.link.filter((queued) => (queued.kind === "token" ? queued.token.epoch : queued.epoch) >= epoch);
      this.linkAttempt = 0;
      this.linkBusy = false;
      this.step({ type: "peerStale", epoch, what: item.kind === "token" ? "token" : "writes" });
      return this.linkPump();
    }
    if (result.type === "gap" && item.kind === "writes") {
      item.entries = item.entries.filter((entry) => entry.wseq > result.ackedTo);
      if (item.entries.length === 0) {
        this.link.shift();
        this.linkBusy = false;
        return this.linkPump();
      }
    }
    this.linkRetry(item);
  }

  /** The item in flight was dropped (tokenReturned): go on with the next one. */
  private linkDropped(): void {
    this.linkAttempt = 0;
    this.linkBusy = false;
    this.linkPump();
  }

  private linkRetry(item: LinkItem): void {
    if (this.link[0] !== item) return this.linkDropped();
    this.linkAttempt += 1;
    const { tokenRetryMs, tokenHopTimeoutMs } = this.settings;
    const delayMs = Math.min(tokenHopTimeoutMs, tokenRetryMs * 2 ** Math.min(this.linkAttempt - 1, 16));
    this.after(delayMs, () => {
      this.linkBusy = false;
      this.linkPump();
    });
  }

  // ---- Regeneration (RingService.maybeRegenerate) ------------------------------------------

  private regenerationLoop(): void {
    this.after(this.settings.ringRegenRetryMs, () => {
      this.maybeRegenerate();
      this.regenerationLoop();
    });
  }

  private maybeRegenerate(): void {
    const core = this.core!;
    if (this.regenerating || !core.wantsRegeneration(this.clock.nowMs())) return;
    this.regenerating = true;
    const others = this.ring.filter((id) => id !== this.id);
    const incarnation = this.incarnation;
    this.gather(others, { type: "probe", reqId: 0 }, (answers) => {
      if (incarnation !== this.incarnation) return;
      const probes = answers.map((a) => (a?.type === "probed" ? a.probe : undefined));
      const now = this.clock.nowMs();
      const busy = probes.some((p) => !p || p.live || (p.lastTokenAgeMs !== null && p.lastTokenAgeMs < this.settings.tokenLossMs));
      if (busy || !this.core!.wantsRegeneration(now)) return void (this.regenerating = false);
      const epoch = Math.max(this.core!.probe(now).epoch, ...probes.map((p) => p!.epoch)) + 1;
      const own = this.step({ type: "prepare", from: this.id, epoch });
      if (!own.ok || own.type !== "promised") return void (this.regenerating = false);
      this.gather(others, { type: "prepare", reqId: 0, epoch }, (replies) => {
        if (incarnation !== this.incarnation) return;
        this.regenerating = false;
        const promises: RingPromise[] = [own.promise];
        for (const reply of replies) {
          if (reply?.type !== "result" || !reply.result.ok || reply.result.type !== "promised") return;
          promises.push(reply.result.promise);
        }
        this.step({ type: "regenerate", epoch, promises });
      });
    });
  }

  /** Sends `request` to each of `to` and calls back once all answered or timed out. */
  private gather(to: string[], request: RingPeerRequest, done: (answers: Array<RingMessage | undefined>) => void): void {
    const answers: Array<RingMessage | undefined> = new Array(to.length).fill(undefined);
    let left = to.length;
    const settle = () => {
      left -= 1;
      if (left === 0) done(answers);
    };
    if (left === 0) return done(answers);
    to.forEach((id, i) => this.call(id, request, (answer) => {
      answers[i] = answer;
      settle();
    }, settle));
  }

  // ---- Inbound -----------------------------------------------------------------------------

  protected receive(envelope: Envelope): void {
    const message = envelope.payload as RingMessage;
    switch (message.type) {
      case "peer":
        return this.onPeer(envelope.from, message.request);
      case "client":
        return this.onClient(envelope.from, message.request);
      case "result":
      case "caughtUp":
      case "probed": {
        const waiting = this.outgoing.get(message.reqId);
        if (!waiting) return; // late: the call timed out (the fetch was aborted)
        this.outgoing.delete(message.reqId);
        return waiting.onAnswer(message);
      }
      case "clientReply":
        return;
      default:
        assertNever(message, "ring message");
    }
  }

  private onPeer(from: string, request: RingPeerRequest): void {
    const core = this.core!;
    const answer = (message: RingMessage) => this.send(from, message);
    switch (request.type) {
      case "deliver": {
        const item = structuredClone(request.item);
        const input: RingInput = item.kind === "token"
          ? { type: "token", from, token: item.token }
          : { type: "writes", from, epoch: item.epoch, entries: item.entries };
        return answer({ type: "result", reqId: request.reqId, result: this.step(input) });
      }
      case "fetch":
        return answer({ type: "caughtUp", reqId: request.reqId, reply: structuredClone(core.catchUp(request.fromWseq)) });
      case "probe":
        return answer({ type: "probed", reqId: request.reqId, probe: core.probe(this.clock.nowMs()) });
      case "prepare":
        return answer({ type: "result", reqId: request.reqId, result: this.step({ type: "prepare", from, epoch: request.epoch }) });
      case "wake":
        this.step({ type: "wake" });
        return;
      default:
        assertNever(request, "ring peer request");
    }
  }

  /** RingService.submit / enter: the core answers through a reply effect, maybe later. */
  private onClient(from: string, request: RingClientRequest): void {
    const reqId = this.coreReqIdNext++;
    this.clientReqs.set(reqId, { from, reqId: request.reqId });
    const { reqId: _ignored, ...input } = request;
    this.step({ ...input, reqId } as RingInput);
    if (request.type !== "enter" || !this.clientReqs.has(reqId)) return;
    const { longPollMaxMs } = this.settings;
    const pollMs = request.waitMs === 0 || request.ticket !== undefined ? longPollMaxMs : Math.min(request.waitMs, longPollMaxMs);
    this.after(pollMs, () => {
      if (this.clientReqs.has(reqId)) this.step({ type: "detach", reqId });
    });
  }
}

export type { ClientReply };

/** A short label for verbose traces: the token's epoch and hop, the writes' range. */
function describeMessage(message: RingMessage): string {
  if (message.type === "peer" && message.request.type === "deliver") {
    const item = message.request.item;
    if (item.kind === "token") return `token e${item.token.epoch} h${item.token.hop} wseq ${item.token.wseq}`;
    return `writes e${item.epoch} ${item.entries[0]?.wseq}..${item.entries.at(-1)?.wseq}`;
  }
  if (message.type === "result") return `result ${message.result.ok ? "ok" : "not ok"} ${message.result.type}`;
  return message.type === "peer" || message.type === "client" ? `${message.type}:${message.request.type}` : message.type;
}

