/**
 * The driver around the pure ring node (lib/core/ring_node.ts): it feeds the node the clock,
 * peer messages and client requests, stores what the node asks to store BEFORE anything else of
 * the same output happens, sends the node's messages through the link to the successor, answers
 * clients, and runs the first ring node's token regeneration. It holds no protocol logic itself.
 */
import { assertNever } from "../../lib/core/assert.ts";
import {
  type ClientReply,
  type RingEffect,
  type RingInput,
  RingNode,
  type RingOutput,
  type RingResult,
} from "../../lib/core/ring_node.ts";
import type { CatchUpReply, RingPromise } from "../../lib/core/ring_types.ts";
import type { Settings } from "../../lib/settings.ts";
import type { Clock } from "../clock.ts";
import type { Logger } from "../log.ts";
import { type LinkItem, PeerLink } from "./peer_link.ts";
import type { RingStorage } from "./storage.ts";

/** How the service reaches the other ring nodes (HTTP in the daemon, direct calls in tests). */
export interface RingPeers {
  /** Hands the token or writes to the successor. */
  deliver(to: string, item: LinkItem): Promise<RingResult>;
  fetchLog(from: string, fromWseq: number): Promise<CatchUpReply>;
  probe(to: string): Promise<ReturnType<RingNode["probe"]>>;
  prepare(to: string, epoch: number): Promise<RingResult>;
  wake(to: string): Promise<void>;
}

export interface RingServiceOptions {
  node: RingNode;
  settings: Settings;
  clock: Clock;
  log: Logger;
  storage: RingStorage;
  peers: RingPeers;
  /** Called when storing failed: the node's memory is ahead of its disk, so it must stop. */
  onFatal(error: Error): void;
}

type ClientInput =
  | Omit<Extract<RingInput, { type: "enter" }>, "reqId">
  | Omit<Extract<RingInput, { type: "leave" }>, "reqId">
  | Omit<Extract<RingInput, { type: "write" }>, "reqId">;

export class RingService {
  readonly node: RingNode;
  private readonly link: PeerLink;
  private readonly replies = new Map<number, (reply: ClientReply) => void>();
  private readonly watchers = new Map<number, Set<() => void>>();
  private reqSeq = 0;
  private timers: Array<ReturnType<typeof setInterval>> = [];
  private regenerating = false;
  private stopped = false;
  private lastTrouble = "";

  constructor(private readonly options: RingServiceOptions) {
    this.node = options.node;
    const { settings, peers, log } = options;
    this.link = new PeerLink({
      deliver: (item) => peers.deliver(this.node.successor, item),
      retryMs: settings.tokenRetryMs,
      retryMaxMs: settings.tokenHopTimeoutMs,
      batchWritesMax: settings.ringBatchWritesMax,
      onTokenDelivered: (token) => this.stepPeer({ type: "tokenDelivered", epoch: token.epoch, hop: token.hop }),
      onStale: (epoch, what) => this.stepPeer({ type: "peerStale", epoch, what }),
      onTrouble: (what, detail, attempt) => {
        // One line per streak of failures (and every 50th retry), not one per retry.
        const key = `${what}:${detail}`;
        if (attempt === 1 || attempt % 50 === 0 || key !== this.lastTrouble) {
          log.event("successorUnreachable", { successor: this.node.successor, what, detail, attempt });
        }
        this.lastTrouble = key;
      },
    });
  }

  /** Starts the clock and, on the first ring node, the regeneration loop. */
  start(): void {
    const { settings } = this.options;
    this.execute(this.node.start(this.now()));
    this.timers.push(setInterval(() => this.stepPeer({ type: "tick" }), settings.tickMs));
    if (this.node.id === this.node.ring[0]) {
      this.timers.push(setInterval(() => void this.maybeRegenerate(), settings.ringRegenRetryMs));
      queueMicrotask(() => void this.maybeRegenerate());
    }
  }

  /** Stops timers and answers every pending client request (so the HTTP server can close). */
  stop(): void {
    this.stopped = true;
    for (const timer of this.timers) clearInterval(timer);
    this.link.close();
    for (const [reqId, resolve] of [...this.replies]) {
      this.replies.delete(reqId);
      resolve({ ok: false, error: { code: "ring_unavailable", message: "the ring node is shutting down" } });
    }
    for (const set of this.watchers.values()) for (const wake of [...set]) wake();
  }

  /** A message from a peer, a tick or an acknowledgement: the result answers the peer. */
  stepPeer(input: RingInput): RingResult {
    if (this.stopped) return { ok: false, type: "error", error: { code: "ring_unavailable", message: "stopping" } };
    const output = this.node.step(input, this.now());
    this.execute(output);
    return output.result;
  }

  /** A client request; resolves with the node's reply (a waiting enter: see `enter`). */
  submit(input: ClientInput): Promise<ClientReply> {
    if (this.stopped) {
      return Promise.resolve({ ok: false, error: { code: "ring_unavailable", message: "the ring node is stopping" } });
    }
    this.reqSeq += 1;
    const reqId = this.reqSeq;
    const reply = new Promise<ClientReply>((resolve) => this.replies.set(reqId, resolve));
    this.execute(this.node.step({ ...input, reqId } as RingInput, this.now()));
    return reply;
  }

  /**
   * mutex_enter: answers at once, at the grant, or after a long-poll of at most longPollMaxMs
   * ("waiting", with a ticket the client asks again with to keep its place).
   */
  enter(input: { waitMs: number; leaseMs: number; ticket?: string }, abort?: AbortSignal): Promise<ClientReply> {
    if (this.stopped) {
      return Promise.resolve({ ok: false, error: { code: "ring_unavailable", message: "the ring node is stopping" } });
    }
    this.reqSeq += 1;
    const reqId = this.reqSeq;
    const { longPollMaxMs } = this.options.settings;
    const pollMs = input.waitMs === 0 || input.ticket !== undefined ? longPollMaxMs : Math.min(input.waitMs, longPollMaxMs);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const detach = () => {
      if (this.replies.has(reqId)) this.stepPeer({ type: "detach", reqId });
    };
    const reply = new Promise<ClientReply>((resolve) => {
      this.replies.set(reqId, (answer) => {
        clearTimeout(timer);
        abort?.removeEventListener("abort", detach);
        resolve(answer);
      });
    });
    this.execute(this.node.step({ type: "enter", reqId, ...input }, this.now()));
    if (this.replies.has(reqId)) {
      timer = setTimeout(detach, pollMs);
      abort?.addEventListener("abort", detach, { once: true });
    }
    return reply;
  }

  /** Waits until section `fence` ends or `waitMs` passes; true while it is still running. */
  async watchSection(fence: number, waitMs: number): Promise<boolean> {
    if (!this.node.sectionActive(fence) || this.stopped) return false;
    await new Promise<void>((resolve) => {
      const set = this.watchers.get(fence) ?? new Set();
      this.watchers.set(fence, set);
      const done = () => {
        clearTimeout(timer);
        set.delete(done);
        if (set.size === 0) this.watchers.delete(fence);
        resolve();
      };
      const timer = setTimeout(done, waitMs);
      set.add(done);
    });
    return this.node.sectionActive(fence);
  }

  now(): number {
    return this.options.clock.nowMs();
  }

  get linkLength(): number {
    return this.link.length;
  }

  /** Stores first, then acts: the order every RingOutput demands. */
  private execute(output: RingOutput): void {
    if (output.persist.length > 0) {
      try {
        this.options.storage.apply(output.persist);
      } catch (error) {
        this.options.log.event("persistFailed", { message: (error as Error).message });
        this.options.onFatal(error as Error);
        throw error;
      }
    }
    for (const effect of output.effects) this.onEffect(effect);
  }

  private onEffect(effect: RingEffect): void {
    const { peers, log } = this.options;
    switch (effect.type) {
      case "sendToken":
        this.link.push({ kind: "token", token: effect.token });
        return;
      case "tokenReturned":
        this.link.dropTokensBefore(effect.epoch, effect.hop);
        return;
      case "sendWrites":
        this.link.push({ kind: "writes", epoch: effect.epoch, entries: effect.entries });
        return;
      case "fetch":
        peers.fetchLog(effect.from, effect.fromWseq).then(
          (reply) => this.stepPeer({ type: "caughtUp", reply }),
          (error) => log.event("fetchFailed", { from: effect.from, fromWseq: effect.fromWseq, message: (error as Error).message }),
        );
        return;
      case "wakeAll":
        for (const id of this.node.ring) if (id !== this.node.id) peers.wake(id).catch(() => {});
        return;
      case "reply": {
        const resolve = this.replies.get(effect.reqId);
        this.replies.delete(effect.reqId);
        resolve?.(effect.reply);
        return;
      }
      case "sectionEnded":
        for (const wake of [...(this.watchers.get(effect.fence) ?? [])]) wake();
        return;
      case "event":
        log.event(effect.event, effect.fields);
        return;
      default:
        assertNever(effect, "ring effect");
    }
  }

  /**
   * The first ring node's regeneration: every ring node must answer, none may hold, send or
   * have seen a token lately (read-only probe first, so a live token is not killed by a
   * premature attempt); then every node must promise the new epoch. Safe without an arbiter
   * because it needs all ring nodes; so it waits while any of them is down (docs/ring.md).
   */
  private async maybeRegenerate(): Promise<void> {
    if (this.regenerating || this.stopped || !this.node.wantsRegeneration(this.now())) return;
    this.regenerating = true;
    const { peers, log, settings } = this.options;
    try {
      const others = this.node.ring.filter((id) => id !== this.node.id);
      const probes = await Promise.allSettled(others.map((id) => peers.probe(id)));
      const missing = others.filter((_, i) => probes[i].status === "rejected");
      if (missing.length > 0) {
        log.event("regenerationWaiting", { missing });
        return;
      }
      const answers = probes.map((p) => (p as PromiseFulfilledResult<ReturnType<RingNode["probe"]>>).value);
      const busy = answers.filter((a) => a.live || (a.lastTokenAgeMs !== null && a.lastTokenAgeMs < settings.tokenLossMs));
      if (busy.length > 0 || !this.node.wantsRegeneration(this.now())) return;
      const epoch = Math.max(this.node.probe(this.now()).epoch, ...answers.map((a) => a.epoch)) + 1;
      const own = this.stepPeer({ type: "prepare", from: this.node.id, epoch });
      if (!own.ok || own.type !== "promised") return;
      const replies = await Promise.allSettled(others.map((id) => peers.prepare(id, epoch)));
      const promises: RingPromise[] = [own.promise];
      for (const [i, reply] of replies.entries()) {
        if (reply.status === "fulfilled" && reply.value.ok && reply.value.type === "promised") {
          promises.push(reply.value.promise);
        } else {
          const why = reply.status === "rejected" ? (reply.reason as Error).message : JSON.stringify(reply.value);
          log.event("regenerationRefused", { node: others[i], epoch, why });
          return;
        }
      }
      this.stepPeer({ type: "regenerate", epoch, promises });
    } catch (error) {
      log.event("regenerationFailed", { message: (error as Error).message });
    } finally {
      this.regenerating = false;
    }
  }
}
