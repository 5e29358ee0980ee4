/**
 * The lock service's own continuations (a client's answer, the end of a long-poll, a held request
 * submitted again): decided by a step of the core, run in order at one defined point once the step
 * is done, not as promise callbacks in the runtime's microtask queue, so the simulator runs the
 * driver as it is (service.ts's header says why). The queue holds at most what one step decides
 * plus what those continuations decide: each entry is one client call in flight or one poll.
 */
export class StepContinuations {
  /**
   * Flat triples (function, first argument, second argument) from `head` on: a client's answer,
   * decided at every request, is queued as its function and values, without a closure per answer
   * (docs/bench.md "The lone primary's HTTP path", fifth pass).
   */
  private readonly queue: unknown[] = [];
  private head = 0;
  private running = false;

  push(continuation: () => void): void {
    this.queue.push(continuation, undefined, undefined);
  }

  /** Queues the call `run(first, second)`, as `push(() => run(first, second))` does. */
  pushCall<A, B>(run: (first: A, second: B) => void, first: A, second: B): void {
    this.queue.push(run, first, second);
  }

  /**
   * Runs the queued continuations, and those they add, in order. Called at the end of every step;
   * a step inside a continuation (a new submit) leaves its own to the loop already running.
   */
  run(): void {
    if (this.running) return;
    this.running = true;
    const queue = this.queue;
    try {
      // One by one off the front, the head moved before the call: if one throws, the rest run at
      // the end of the next step.
      while (this.head < queue.length) {
        const at = this.head;
        this.head = at + 3;
        (queue[at] as (first: unknown, second: unknown) => void)(queue[at + 1], queue[at + 2]);
      }
      // Drained: the places are reused (the queue does not grow past one step's continuations).
      queue.length = 0;
      this.head = 0;
    } finally {
      this.running = false;
    }
  }
}
