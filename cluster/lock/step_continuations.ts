/**
 * The lock service's own continuations (a client's answer, the end of a long-poll, a held request
 * submitted again): decided by a step of the core, run in order at one defined point once the step
 * is done, not as promise callbacks in the runtime's microtask queue, so the simulator runs the
 * driver as it is (service.ts's header says why). The queue holds at most what one step decides
 * plus what those continuations decide: each entry is one client call in flight or one poll.
 */
export class StepContinuations {
  private readonly queue: Array<() => void> = [];
  private running = false;

  push(continuation: () => void): void {
    this.queue.push(continuation);
  }

  /**
   * Runs the queued continuations, and those they add, in order. Called at the end of every step;
   * a step inside a continuation (a new submit) leaves its own to the loop already running.
   */
  run(): void {
    if (this.running) return;
    this.running = true;
    try {
      // One by one off the front: if one throws, the rest run at the end of the next step.
      while (this.queue.length > 0) this.queue.shift()!();
    } finally {
      this.running = false;
    }
  }
}
