/**
 * Hop times of a ring node's token hand-offs, for status (`hopMs`, the benchmark's hop latency):
 * from the pass (queued on the link) to the successor's acknowledgement, so the successor's
 * storing and both network legs count. Read on the driver's hop clock (cluster/ring/service.ts
 * `hopClock`: fractional ms in the daemon), never an input of a core.
 */
import type { Clock } from "../clock.ts";

/** Hop times kept for status (a bounded sample: the latest hand-offs only). */
const HOP_SAMPLES_MAX = 256;

export interface HopTimesStatus {
  p50: number | null;
  p99: number | null;
  /** How many hop times the percentiles are over (at most HOP_SAMPLES_MAX). */
  samples: number;
  /** Every hop time taken since start. */
  count: number;
}

export class HopTimes {
  /** The token hand-off queued last, and when: its acknowledgement closes one hop time. */
  private queued: { epoch: number; hop: number; atMs: number } | null = null;
  /** The last HOP_SAMPLES_MAX hop times (queued to acknowledged, ms), oldest overwritten. */
  private readonly samples: number[] = [];
  private count = 0;

  constructor(private readonly clock: Clock) {}

  /** The token of (epoch, hop) was queued for the successor. */
  queuedToken(epoch: number, hop: number): void {
    this.queued = { epoch, hop, atMs: this.clock.nowMs() };
  }

  /** The successor acknowledged the token of (epoch, hop): one hop time, if it is the one queued last. */
  delivered(epoch: number, hop: number): void {
    const queued = this.queued;
    if (!queued || queued.epoch !== epoch || queued.hop !== hop) return;
    this.queued = null;
    this.samples[this.count % HOP_SAMPLES_MAX] = this.clock.nowMs() - queued.atMs;
    this.count += 1;
  }

  /** Percentiles over the last HOP_SAMPLES_MAX hand-offs; `count`: all of them. */
  status(): HopTimesStatus {
    const sorted = [...this.samples].sort((a, b) => a - b);
    const at = (q: number) => (sorted.length === 0 ? null : sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]);
    return { p50: at(0.5), p99: at(0.99), samples: sorted.length, count: this.count };
  }
}
