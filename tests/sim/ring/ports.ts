/**
 * The ports of the real ring driver (cluster/ring/service.ts, peer_link.ts) on simulated
 * ground: timers on the actor's virtual clock, and promises the simulator settles itself.
 *
 * A native promise continues in the runtime's microtask queue, which a synchronous simulation
 * never reaches. The driver only ever calls `.then` on what its ports return (the port rule in
 * cluster/timers.ts), so the ports here return `SimFuture`s instead: settling one queues its
 * callbacks in the node's `Microtasks`, and the node drains that queue at the end of each of its
 * turns (a delivered message, a timer), as the runtime drains microtasks after each macrotask. A
 * callback added to a settled future is queued too, never run at once, as with a native promise.
 */
import type { TimerHandle, Timers } from "../../../cluster/timers.ts";
import type { Actor } from "../actor.ts";

/** One incarnation's microtask queue; a crash abandons it with whatever it held. */
export class Microtasks {
  private queue: Array<() => void> = [];

  push(task: () => void): void {
    this.queue.push(task);
  }

  /** Runs queued tasks, and those they queue, until none is left. */
  drain(): void {
    try {
      for (let i = 0; i < this.queue.length; i++) this.queue[i]();
    } finally {
      this.queue = []; // after a throw too: the run ends with it
    }
  }
}

type State<T> = { type: "pending" } | { type: "fulfilled"; value: T } | { type: "rejected"; error: unknown };

/** A promise the simulator settles (`resolve`, `reject`); callbacks run in `microtasks`. */
export class SimFuture<T> implements PromiseLike<T> {
  private state: State<T> = { type: "pending" };
  private reactions: Array<() => void> = [];

  constructor(private readonly microtasks: Microtasks) {}

  static resolved<T>(microtasks: Microtasks, value: T): SimFuture<T> {
    const future = new SimFuture<T>(microtasks);
    future.resolve(value);
    return future;
  }

  resolve(value: T): void {
    this.settle({ type: "fulfilled", value });
  }

  reject(error: unknown): void {
    this.settle({ type: "rejected", error });
  }

  then<R1 = T, R2 = never>(
    onFulfilled?: ((value: T) => R1 | PromiseLike<R1>) | null,
    onRejected?: ((error: unknown) => R2 | PromiseLike<R2>) | null,
  ): SimFuture<R1 | R2> {
    const next = new SimFuture<R1 | R2>(this.microtasks);
    const react = () => {
      const state = this.state;
      if (state.type === "pending") return;
      let result: R1 | R2 | PromiseLike<R1 | R2>;
      try {
        if (state.type === "fulfilled") {
          if (!onFulfilled) return next.resolve(state.value as unknown as R1);
          result = onFulfilled(state.value);
        } else {
          if (!onRejected) return next.reject(state.error);
          result = onRejected(state.error);
        }
      } catch (error) {
        // Nobody continues the derived promise: in the binary an unhandled rejection, which
        // ends the process. Here it ends the run (sim.exception or core.assertion).
        if (next.reactions.length === 0) throw error;
        return next.reject(error);
      }
      if (isThenable(result)) result.then((value) => next.resolve(value), (error) => next.reject(error));
      else next.resolve(result);
    };
    if (this.state.type === "pending") this.reactions.push(react);
    else this.microtasks.push(react);
    return next;
  }

  private settle(state: State<T>): void {
    if (this.state.type !== "pending") return;
    this.state = state;
    for (const react of this.reactions) this.microtasks.push(react);
    this.reactions = [];
  }
}

function isThenable<T>(value: unknown): value is PromiseLike<T> {
  return typeof value === "object" && value !== null && typeof (value as { then?: unknown }).then === "function";
}

/**
 * Timers on `actor`'s clock, in its current incarnation (a crash cancels them all). `turn` runs
 * each callback as a macrotask: the callback, then the microtasks it queued.
 */
export function simTimers(actor: Actor, turn: (fn: () => void) => void): Timers {
  return {
    setTimeout: (fn, ms) => {
      const handle = { cancelled: false };
      actor.after(ms, () => {
        if (!handle.cancelled) turn(fn);
      });
      return handle;
    },
    clearTimeout: (handle: TimerHandle | undefined) => {
      if (handle) (handle as { cancelled: boolean }).cancelled = true;
    },
  };
}
