/**
 * A lock server's metrics (`GET /metrics` with every node's, cluster/metrics.ts): grants, waits,
 * holds, sessions and replication, fed from its committed effects and core events and the
 * table's status read at scrape time (docs/http-api.md lists them).
 */
import { Counter, Gauge } from "prom-client";
import type { Effect } from "../../lib/core/lock/lock_table.ts";
import type { Clock } from "../clock.ts";
import type { LogFields } from "../log.ts";
import type { NodeMetrics } from "../metrics.ts";
import { ScrapedCounter, ScrapedHistogram } from "../scraped_metrics.ts";
import { TOP_NAMES_LIMITS, TopNamesHistogram, type TopNamesLimits } from "../top_names_histogram.ts";

/** Most waits and holds being timed at once; past it the oldest is forgotten (not observed). */
const TIMED_MAX = 100_000;

/** Times by key, at most TIMED_MAX of them (the oldest forgotten first). */
class Timings<K> {
  private readonly startedMs = new Map<K, number>();

  get size(): number {
    return this.startedMs.size;
  }

  /** Starts timing `key`; false when it is timed already (a waiter asking again). */
  start(key: K, nowMs: number): boolean {
    if (this.startedMs.has(key)) return false;
    if (this.startedMs.size >= TIMED_MAX) this.startedMs.delete(this.startedMs.keys().next().value!);
    this.startedMs.set(key, nowMs);
    return true;
  }

  /** Seconds since `key` started (and forgets it), or undefined when it was not timed. */
  end(key: K, nowMs: number): number | undefined {
    const started = this.startedMs.get(key);
    if (started === undefined) return undefined;
    this.startedMs.delete(key);
    return (nowMs - started) / 1000;
  }

  forget(key: K): void {
    this.startedMs.delete(key);
  }
}

/** The lock server's status, read at scrape time. */
export interface LockStatusSource {
  sessionCount: number;
  lockCount: number;
  epoch: number;
  /** Entries the backup has not acknowledged (a primary's; null without a backup). */
  lagEntries: number | null;
}

/** A lock server's metrics, fed from its committed effects and core events (lock/service.ts). */
export class LockMetrics {
  private readonly grants: ScrapedCounter;
  private readonly releases: ScrapedCounter;
  private readonly expiries: Counter;
  private readonly waits: Counter;
  private readonly waitSeconds: TopNamesHistogram;
  private readonly holdSeconds: TopNamesHistogram;
  private readonly takeovers: Counter;
  private readonly roleChanges: Counter<"role">;
  /** Waits by (name, session): an enter has no token before its grant. */
  private readonly waiting = new Timings<string>();
  /**
   * Holds by fencing token: one per grant, carried by its release, so the W1 path (a grant and a
   * release, no wait) builds no key string (a new string is hashed at its first lookup).
   */
  private readonly holding = new Timings<number>();

  constructor(private readonly node: NodeMetrics, private readonly clock: Clock, status: () => LockStatusSource, topNames: TopNamesLimits = TOP_NAMES_LIMITS) {
    const registers = [node.registry];
    this.grants = new ScrapedCounter({ name: "mutexd_lock_grants_total", help: "Locks granted (committed).", registers });
    this.releases = new ScrapedCounter({ name: "mutexd_lock_releases_total", help: "Holds ended, by reason (leave, expired, closed).", registers }, "reason");
    this.expiries = new Counter({ name: "mutexd_lock_session_expiries_total", help: "Sessions that expired.", registers });
    this.waits = new Counter({ name: "mutexd_lock_waits_total", help: "Enters that were queued rather than granted at once.", registers });
    const histogram = (name: string, help: string) =>
      new TopNamesHistogram(new ScrapedHistogram({ name, help, registers }, "lock"), clock.nowMs(), topNames);
    this.waitSeconds = histogram(
      "mutexd_lock_wait_seconds",
      `Time from an enter to its grant, by lock name (the top ${topNames.namesMax} by total wait, re-ranked every ${topNames.rankIntervalMs / 1000} s; the rest under "other").`,
    );
    this.holdSeconds = histogram("mutexd_lock_hold_seconds", `Time from a grant to its release, by lock name (the top ${topNames.namesMax} by total hold, as the wait histogram).`);
    this.takeovers = new Counter({ name: "mutexd_lock_takeovers_total", help: "Times this server took over as primary from the other's copy.", registers });
    this.roleChanges = new Counter({ name: "mutexd_lock_role_changes_total", help: "Roles this server took, by role.", labelNames: ["role"], registers });
    new Gauge({
      name: "mutexd_lock_sessions",
      help: "Open sessions in this server's table.",
      registers,
      collect() {
        this.set(status().sessionCount);
      },
    });
    new Gauge({
      name: "mutexd_lock_locks",
      help: "Locks held or waited for in this server's table.",
      registers,
      collect() {
        this.set(status().lockCount);
      },
    });
    new Gauge({
      name: "mutexd_lock_epoch",
      help: "The replication epoch this server is in.",
      registers,
      collect() {
        this.set(status().epoch);
      },
    });
    new Gauge({
      name: "mutexd_lock_replication_lag_entries",
      help: "Log entries the backup has not acknowledged (a primary with a backup; absent otherwise).",
      registers,
      collect() {
        this.reset();
        const lag = status().lagEntries;
        if (lag !== null) this.set(lag);
      },
    });
  }

  /** The enter of (name, session) was queued; a waiter asking again (long-poll) counts once. */
  queued(name: string, session: string): void {
    if (this.waiting.start(holdKey(name, session), this.clock.nowMs())) this.waits.inc();
  }

  /**
   * A committed effect of the lock table (lock_table.ts). `stepAtMs`: when the step that committed
   * it ran, on this clock, if the caller read it (the lock service does per client request); else
   * the clock is read here.
   */
  effect(effect: Effect, stepAtMs?: number): void {
    const nowMs = stepAtMs ?? this.clock.nowMs();
    switch (effect.type) {
      case "granted": {
        const { name, session, token } = effect.grant;
        this.grants.inc();
        // No wait is timed in an uncontended run: no key to build then.
        const waitedSeconds = this.waiting.size === 0 ? undefined : this.waiting.end(holdKey(name, session), nowMs);
        this.waitSeconds.observe(name, waitedSeconds ?? 0, nowMs);
        this.holding.start(token, nowMs);
        return;
      }
      case "waitEnded":
        this.waiting.forget(holdKey(effect.name, effect.session));
        return;
      case "released": {
        this.releases.inc(effect.reason);
        const heldSeconds = this.holding.end(effect.token, nowMs);
        // A hold granted before this process served (taken over) has no start here: not observed.
        if (heldSeconds !== undefined) this.holdSeconds.observe(effect.name, heldSeconds, nowMs);
        return;
      }
      case "sessionExpired":
        this.expiries.inc();
        return;
    }
  }

  /** A core event (lock_replica.ts): role changes and takeovers. */
  event(event: string, fields: LogFields): void {
    if (event === "primary") {
      this.roleChanges.inc({ role: "primary" });
      if (fields.how === "takeover") this.takeovers.inc();
    } else if (event === "backup" || event === "steppedDown") {
      this.roleChanges.inc({ role: event === "backup" ? "backup" : "steppedDown" });
    }
  }
}

function holdKey(name: string, session: string): string {
  return `${name}\u0000${session}`;
}
