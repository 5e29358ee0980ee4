/**
 * Measures how long the event loop stalls: a timer every `periodMs` notes how much later than
 * asked it ran. A server whose loop is blocked (a large JSON text, a long loop) answers nobody
 * meanwhile, so this is what a client sees as a pause. `GET /v1/status` shows it
 * (docs/http-api.md), benches and tests read it (docs/bench.md).
 *
 * Resolution: the timer's period (a stall shorter than that may go unseen) and the runtime's
 * timer slack (~1 ms), so small values mean "no stall" rather than an exact figure.
 */
import process from "node:process";
import type { Clock } from "./clock.ts";
import { repeatEvery, type Timers } from "./timers.ts";

export const STALL_PERIOD_MS = 10;

/**
 * The CPU time the process has used so far, in ms (all its threads): with it, a stall says
 * whether the node worked through it (its own code, GC) or waited (on a busy host's run queue,
 * SIGSTOP, a blocking call), which issue 14 needed to tell apart. Absent: stalls carry no figure.
 */
export type CpuClock = () => number;

/** This process's CpuClock (`process.cpuUsage`, the same in Deno and Bun): one getrusage call per beat. */
export const processCpuMs: CpuClock = () => {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1_000;
};
/** The recent maximum covers this many one-second buckets (the current one included). */
const RECENT_BUCKETS = 10;
const BUCKET_MS = 1_000;

export interface LoopStallView {
  /** The longest stall since the server started, in ms beyond the timer's period. */
  loopStallMaxMs: number;
  /** The longest stall of the last ~10 s. */
  loopStallRecentMaxMs: number;
}

export class StallMonitor {
  private maxMs = 0;
  /** The largest stall per second, the newest last; at most RECENT_BUCKETS. */
  private readonly buckets: Array<{ second: number; maxMs: number }> = [];
  /** The last beat, or the start; null before `start`/`startDriven` (a beat then measures nothing). */
  private lastMs: number | null = null;
  private stopTimer: (() => void) | null = null;
  /** The process's CPU time at the last beat (or the start), when there is a `cpuClock`. */
  private lastCpuMs = 0;

  /**
   * `periodMs`: how often `beat` runs (its own timer's period, or the caller's; see `startDriven`).
   * `onStall` gets, with a `cpuClock`, the CPU time the process used from the beat before the stall to its end.
   */
  constructor(
    private readonly clock: Clock,
    private readonly timers: Timers,
    private readonly onStall?: (stallMs: number, cpuMs?: number) => void,
    private readonly periodMs = STALL_PERIOD_MS,
    private readonly cpuClock?: CpuClock,
  ) {}

  /** Measures with a timer of its own, every `periodMs`. */
  start(): void {
    this.lastMs = this.clock.nowMs();
    this.lastCpuMs = this.cpuClock?.() ?? 0;
    this.stopTimer = repeatEvery(this.timers, this.periodMs, () => this.beat());
  }

  /**
   * Measures without a timer of its own: the caller calls `beat` from a timer it runs anyway,
   * every `periodMs`. An idle lock server (and ring node, and arbiter) woke 100 times a second
   * for this monitor's own 10 ms timer, more than for everything else together (docs/bench.md
   * "Idle CPU"); riding on its tick costs no wake-up, and a stall shorter than the tick may go
   * unseen, as before one shorter than 10 ms.
   */
  startDriven(): void {
    this.lastMs = this.clock.nowMs();
    this.lastCpuMs = this.cpuClock?.() ?? 0;
  }

  stop(): void {
    this.stopTimer?.();
    this.stopTimer = null;
  }

  view(): LoopStallView {
    this.note(0); // rotates the buckets so a quiet server's old stall leaves the recent window
    const oldest = Math.floor(this.clock.nowMs() / BUCKET_MS) - RECENT_BUCKETS + 1;
    const recent = this.buckets.filter((b) => b.second >= oldest).reduce((max, b) => Math.max(max, b.maxMs), 0);
    return { loopStallMaxMs: this.maxMs, loopStallRecentMaxMs: recent };
  }

  /** One beat of the period: how much later than `periodMs` after the last one it came. */
  beat(): void {
    const nowMs = this.clock.nowMs();
    if (this.lastMs === null) return; // a driver's tick that came before the start (the arbiter's ring coordinator starts first)
    const stallMs = Math.max(0, nowMs - this.lastMs - this.periodMs);
    this.lastMs = nowMs;
    this.late(stallMs);
  }

  /**
   * A driven timer ran `lateMs` later than armed: for a driver whose timer waits as long as its
   * cores allow (the ring node's tick: cluster/ring/service.ts), not a fixed period.
   */
  late(lateMs: number): void {
    if (this.lastMs === null) return;
    this.lastMs = this.clock.nowMs();
    this.note(lateMs);
    const cpuMs = this.cpuClock?.();
    const usedMs = cpuMs === undefined ? undefined : Math.round(cpuMs - this.lastCpuMs);
    this.lastCpuMs = cpuMs ?? 0;
    if (lateMs >= 100) this.onStall?.(lateMs, usedMs);
  }

  private note(stallMs: number): void {
    this.maxMs = Math.max(this.maxMs, stallMs);
    const second = Math.floor(this.clock.nowMs() / BUCKET_MS);
    const last = this.buckets[this.buckets.length - 1];
    if (last?.second === second) last.maxMs = Math.max(last.maxMs, stallMs);
    else this.buckets.push({ second, maxMs: stallMs });
    if (this.buckets.length > RECENT_BUCKETS) this.buckets.shift();
  }
}
