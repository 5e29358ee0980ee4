/**
 * What the ring driver's clients wait on (cluster/ring/service.ts): their pending requests,
 * answered by the ring node's `reply` effects (an enter long-polls: detached after its wait or
 * when the client leaves), and the watches of running sections, woken by `sectionEnded`. Both are
 * callbacks, not promises, so the simulator runs the HTTP API without one; both are bounded: a
 * request's wait by longPollMaxMs, the watches by ringWaitersMax.
 */
import type { ClientReply, RingInput } from "../../lib/core/ring/ring_node.ts";
import type { Settings } from "../../lib/settings.ts";
import type { TimerHandle, Timers } from "../timers.ts";

type EnterInput = Omit<Extract<RingInput, { type: "enter" }>, "reqId">;

/** A client request: enter (long-polls, see ClientWaits.request), leave or write. */
export type ClientInput =
  | EnterInput
  | Omit<Extract<RingInput, { type: "leave" }>, "reqId">
  | Omit<Extract<RingInput, { type: "write" }>, "reqId">;

export interface ClientWaitsPorts {
  timers: Timers;
  settings: Pick<Settings, "longPollMaxMs" | "ringWaitersMax">;
  /** Steps the ring node with a client's request (its answer may come at once, as a `reply` effect). */
  submit(input: RingInput): void;
  /** Steps the ring node with `detach`: it answers the request "waiting", with a ticket. */
  detach(reqId: number): void;
  sectionActive(fence: number): boolean;
}

export class ClientWaits {
  private readonly replies = new Map<number, (reply: ClientReply) => void>();
  private readonly watchers = new Map<number, Set<() => void>>();
  /** The watches waiting, over all fences (at most ringWaitersMax). */
  private watching = 0;
  private reqSeq = 0;

  constructor(private readonly ports: ClientWaitsPorts) {}

  /**
   * A client request answered through `onReply`, once. mutex_enter answers at once, at the
   * grant, or after a long-poll: after min(waitMs, longPollMaxMs) (longPollMaxMs for a try or a
   * re-ask with a ticket), or when `abort` fires, the node detaches it and answers "waiting",
   * with a ticket the client asks again with to keep its place.
   */
  request(input: ClientInput, onReply: (reply: ClientReply) => void, abort?: AbortSignal): void {
    const { timers, settings: { longPollMaxMs } } = this.ports;
    this.reqSeq += 1;
    const reqId = this.reqSeq;
    let timer: TimerHandle | undefined;
    const detach = () => {
      if (this.replies.has(reqId)) this.ports.detach(reqId);
    };
    this.replies.set(reqId, (answer) => {
      timers.clearTimeout(timer);
      abort?.removeEventListener("abort", detach);
      onReply(answer);
    });
    this.ports.submit({ ...input, reqId } as RingInput);
    if (input.type === "enter" && this.replies.has(reqId)) {
      const pollMs = input.waitMs === 0 || input.ticket !== undefined ? longPollMaxMs : Math.min(input.waitMs, longPollMaxMs);
      timer = timers.setTimeout(detach, pollMs);
      abort?.addEventListener("abort", detach, { once: true });
    }
  }

  /** The ring node's answer to request `reqId` (a `reply` effect). */
  reply(reqId: number, reply: ClientReply): void {
    const resolve = this.replies.get(reqId);
    this.replies.delete(reqId);
    resolve?.(reply);
  }

  /**
   * Waits until section `fence` ends, `waitMs` passes or `abort` fires (the client left), then
   * `onEnd(active)`: true while it is still running. False (and no call) when `ringWaitersMax`
   * watches wait already: each is a timer and a callback, and the fence of a running section is
   * easy to guess.
   */
  watch(fence: number, waitMs: number, onEnd: (active: boolean) => void, abort?: AbortSignal): boolean {
    if (!this.ports.sectionActive(fence)) {
      onEnd(false);
      return true;
    }
    if (this.watching >= this.ports.settings.ringWaitersMax) return false;
    const { timers } = this.ports;
    const set = this.watchers.get(fence) ?? new Set();
    this.watchers.set(fence, set);
    const done = () => {
      if (!set.delete(done)) return;
      timers.clearTimeout(timer);
      abort?.removeEventListener("abort", done);
      this.watching -= 1;
      if (set.size === 0) this.watchers.delete(fence);
      onEnd(this.ports.sectionActive(fence));
    };
    const timer = timers.setTimeout(done, waitMs);
    set.add(done);
    this.watching += 1;
    abort?.addEventListener("abort", done, { once: true });
    return true;
  }

  /** Section `fence` ended (a `sectionEnded` effect): its watches end. */
  sectionEnded(fence: number): void {
    for (const wake of [...(this.watchers.get(fence) ?? [])]) wake();
  }

  /** The driver stops: every pending request is answered unavailable, every watch ends. */
  close(): void {
    for (const [reqId, resolve] of [...this.replies]) {
      this.replies.delete(reqId);
      resolve({ ok: false, error: { code: "ring_unavailable", message: "the ring node is shutting down" } });
    }
    for (const set of this.watchers.values()) for (const wake of [...set]) wake();
  }
}
