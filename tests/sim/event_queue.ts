/**
 * The simulator's agenda: events ordered by virtual time, ties broken by insertion order, so
 * a run is a total order that depends on nothing but the seed. A binary heap keeps push and pop
 * O(log n) for the long runs of `make sim-many`.
 */
import { assert } from "../../lib/core/assert.ts";

export interface SimEvent {
  atMs: number;
  /** Insertion number: equal times run in the order they were scheduled. */
  seq: number;
  run(): void;
}

export class EventQueue {
  private readonly heap: SimEvent[] = [];
  private seqNext = 0;

  /** Events pending at once above this mean a runaway actor: better to fail loudly. */
  constructor(private readonly eventsMax = 1_000_000) {}

  get size(): number {
    return this.heap.length;
  }

  push(atMs: number, run: () => void): void {
    assert(Number.isSafeInteger(atMs) && atMs >= 0, `event time must be an integer, got ${atMs}`);
    assert(this.heap.length < this.eventsMax, `more than ${this.eventsMax} pending events`);
    const event = { atMs, seq: this.seqNext++, run };
    const heap = this.heap;
    heap.push(event);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(event, heap[parent])) break;
      heap[i] = heap[parent];
      i = parent;
    }
    heap[i] = event;
  }

  /** The earliest event, removed; undefined when the agenda is empty. */
  pop(): SimEvent | undefined {
    const heap = this.heap;
    if (heap.length === 0) return undefined;
    const top = heap[0];
    const last = heap.pop()!;
    if (heap.length > 0) {
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        if (left >= heap.length) break;
        const right = left + 1;
        const child = right < heap.length && before(heap[right], heap[left]) ? right : left;
        if (!before(heap[child], last)) break;
        heap[i] = heap[child];
        i = child;
      }
      heap[i] = last;
    }
    return top;
  }

  peekAtMs(): number | undefined {
    return this.heap[0]?.atMs;
  }
}

function before(a: SimEvent, b: SimEvent): boolean {
  return a.atMs < b.atMs || (a.atMs === b.atMs && a.seq < b.seq);
}
