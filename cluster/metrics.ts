/**
 * Prometheus metrics of one node (`GET /metrics`, text format 0.0.4, through prom-client). Every
 * role has the process-wide ones here (HTTP answers by code, refused input, event-loop stalls, clock
 * jumps); a lock server adds its grants, waits, holds, sessions and replication (lock/metrics.ts),
 * a ring node its token hops, rotations, view changes and regenerations (ring/metrics.ts);
 * docs/http-api.md lists them. The kinds counted in plain numbers are in scraped_metrics.ts, the
 * per-lock histograms' bounded `lock` label in top_names_histogram.ts.
 *
 * The cores stay pure: the figures come from what the drivers already see — committed effects and
 * core events (through `observe`), the core's status read at scrape time (`collect` callbacks),
 * the driver's monotonic clock — never from inside lib/core.
 */
import type { Hono } from "hono";
import { Counter, Gauge, Registry } from "prom-client";
import type { ClientAuth } from "./client_auth.ts";
import type { Logger } from "./log.ts";
import type { SecurityLog } from "./security_log.ts";
import { type LoopStallView, processCpuMs, StallMonitor } from "./stall_monitor.ts";
import { realTimers, repeatEvery, type Timers } from "./timers.ts";
import { type Clock, monotonicClock } from "./clock.ts";
import { ScrapedCounter } from "./scraped_metrics.ts";

/** How often the wall clock is compared with the monotonic one. */
const CLOCK_CHECK_PERIOD_MS = 1_000;
/** A difference of the two clocks' advance over one period beyond this is a jump (NTP slews far less). */
export const CLOCK_JUMP_MIN_MS = 250;

export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

export interface NodeMetricsOptions {
  nodeId: string;
  clock: Clock;
  log: Logger;
  security: SecurityLog;
  /** The event loop's stalls (stall_monitor.ts). */
  loopStall: () => LoopStallView;
  /** The lease safety margin: a stall longer than this may have outlived a lease the node relies on. */
  leaseSafetyMs: number;
  /** The wall clock (Date.now by default; tests step their own). */
  wallNowMs?: () => number;
}


export class NodeMetrics {
  readonly registry = new Registry();
  private readonly httpAnswers: ScrapedCounter;
  private readonly clockJumps: Counter<"direction">;
  private readonly stallsPastMargin: Counter;
  private lastClockCheck: { monoMs: number; wallMs: number };

  constructor(private readonly options: NodeMetricsOptions) {
    const registers = [this.registry];
    this.registry.setDefaultLabels({ node: options.nodeId });
    this.httpAnswers = new ScrapedCounter({ name: "mutexd_http_responses_total", help: "HTTP answers by status code.", registers }, "code");
    const security = options.security;
    new Counter({
      name: "mutexd_security_refusals_total",
      help: "Refused input (forged or replayed peer messages, bad client tokens, malformed bodies) by reason.",
      labelNames: ["reason"],
      registers,
      collect() {
        this.reset();
        for (const [reason, count] of Object.entries(security.view())) this.inc({ reason }, count);
      },
    });
    const loopStall = options.loopStall;
    new Gauge({
      name: "mutexd_event_loop_stall_seconds",
      help: "The longest event-loop stall of the last ~10 s (window=recent) and since the start (window=max).",
      labelNames: ["window"],
      registers,
      collect() {
        const view = loopStall();
        this.set({ window: "recent" }, view.loopStallRecentMaxMs / 1000);
        this.set({ window: "max" }, view.loopStallMaxMs / 1000);
      },
    });
    this.stallsPastMargin = new Counter({
      name: "mutexd_stalls_past_lease_margin_total",
      help: "Event-loop stalls longer than the lease safety margin (the lease arguments assume shorter pauses).",
      registers,
    });
    this.clockJumps = new Counter({
      name: "mutexd_clock_jumps_total",
      help: "Wall-clock steps seen against the monotonic clock, by direction.",
      labelNames: ["direction"],
      registers,
    });
    this.lastClockCheck = { monoMs: options.clock.nowMs(), wallMs: this.wallNowMs() };
  }

  private wallNowMs(): number {
    return (this.options.wallNowMs ?? Date.now)();
  }

  /** Counts one HTTP answer. */
  answered(status: number): void {
    this.httpAnswers.inc(String(status));
  }

  /**
   * `fetch` whose answers are counted by code. Not an async function: an answer made in the call
   * is counted and returned as it is, a promised one counted when it settles (one promise, not two).
   */
  countingFetch(fetch: (request: Request) => Response | Promise<Response>): (request: Request) => Response | Promise<Response> {
    return (request) => {
      let answer: Response | Promise<Response>;
      try {
        answer = fetch(request);
      } catch (error) {
        // As the async wrapper before: a throw is a rejected answer, for the server's error handling.
        return Promise.reject(error);
      }
      if (answer instanceof Response) {
        this.answered(answer.status);
        return answer;
      }
      return answer.then((response) => {
        this.answered(response.status);
        return response;
      });
    };
  }

  /**
   * A stall the stall monitor reported: past the lease safety margin, it is counted and logged,
   * since a lease this node held or promised may have run out meanwhile without it noticing.
   */
  stalled(stallMs: number, cpuMs?: number): void {
    if (stallMs <= this.options.leaseSafetyMs) return;
    this.stallsPastMargin.inc();
    this.options.log.event("stalledPastLeaseMargin", { stallMs, ...cpuField(cpuMs), leaseSafetyMs: this.options.leaseSafetyMs }, "warn");
  }

  /**
   * Compares how far the wall clock and the monotonic clock moved since the last check: a
   * difference past CLOCK_JUMP_MIN_MS is a step of the wall clock (or a suspended process whose
   * monotonic clock stood still), counted and logged.
   */
  checkClocks(): void {
    const now = { monoMs: this.options.clock.nowMs(), wallMs: this.wallNowMs() };
    const skewMs = (now.wallMs - this.lastClockCheck.wallMs) - (now.monoMs - this.lastClockCheck.monoMs);
    this.lastClockCheck = now;
    if (Math.abs(skewMs) < CLOCK_JUMP_MIN_MS) return;
    const direction = skewMs > 0 ? "forward" : "backward";
    this.clockJumps.inc({ direction });
    this.options.log.event("clockJump", { direction, jumpMs: skewMs }, "warn");
  }

  /** Starts the clock comparison; returns its stop. */
  start(timers: Timers): () => void {
    return repeatEvery(timers, CLOCK_CHECK_PERIOD_MS, () => this.checkClocks());
  }

  /** The exposition text. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  /** Serves `GET /metrics` on `app` (a `read` token on some name when tokens are set). */
  route(app: Hono, auth: ClientAuth): void {
    app.get("/metrics", async (c) => {
      auth.require(c, { level: "read", on: "some" });
      return c.body(await this.text(), 200, { "content-type": METRICS_CONTENT_TYPE });
    });
  }
}

/** A stall's `cpuMs` log field (stall_monitor.ts), none when the monitor has no CPU clock. */
function cpuField(cpuMs: number | undefined): { cpuMs?: number } {
  return cpuMs === undefined ? {} : { cpuMs };
}

/**
 * What every starter (lock server, arbiter, ring node) runs around its app: the stall monitor, the
 * clock comparison, `GET /metrics` and the counting of answers. `logStalls`: log every stall of
 * 100 ms or more (the lock server's `loopStall` lines), not only those past the margin.
 */
export function nodeInstruments(options: Omit<NodeMetricsOptions, "loopStall" | "clock"> & { logStalls?: boolean; stallEveryMs?: number; stallDriven?: boolean }) {
  const stalls = new StallMonitor(monotonicClock, realTimers, (stallMs, cpuMs) => {
    if (options.logStalls) options.log.event("loopStall", { stallMs, ...cpuField(cpuMs) }, "warn");
    metrics.stalled(stallMs, cpuMs);
  }, options.stallEveryMs, processCpuMs);
  const metrics = new NodeMetrics({ ...options, clock: monotonicClock, loopStall: () => stalls.view() });
  let stopClockChecks = () => {};
  return {
    metrics,
    stalls,
    /** Serves `/metrics` on `app` and returns its fetch with every answer counted. */
    serve(app: Hono, auth: ClientAuth) {
      metrics.route(app, auth);
      return metrics.countingFetch(app.fetch);
    },
    /**
     * Starts the timers (once the server listens: a start that fails leaves none behind). The
     * stall monitor beats every `stallEveryMs` (default STALL_PERIOD_MS) on a timer of its own,
     * or with `stallDriven` on none: the caller's tick calls `stalls.beat()` that often.
     */
    start(): void {
      if (!options.stallDriven) stalls.start();
      else stalls.startDriven();
      stopClockChecks = metrics.start(realTimers);
    },
    stop(): void {
      stalls.stop();
      stopClockChecks();
    },
  };
}
