/**
 * The driver around the pure lock table: it feeds the table the monotonic clock, turns the
 * table's effects into wake-ups of long-polling requests and log lines, and presents the state
 * for status. It holds no lock logic of its own.
 */
import { assert, assertNever } from "../lib/core/assert.ts";
import { type Command, type Effect, LockTable, type Output } from "../lib/core/lock_table.ts";
import type { Settings } from "../lib/settings.ts";
import type { Clock } from "./clock.ts";
import type { Logger } from "./log.ts";

/** How a long-poll ended: the request was granted, left the queue, or the poll ran out first. */
export type WaitOutcome = "granted" | "ended" | "timeout";

export interface LockServiceOptions {
  settings: Settings;
  clock: Clock;
  log: Logger;
  /** Prefix of session ids (unique per server incarnation). */
  sessionIdPrefix: string;
  /** Tokens start above this (see LockTableOptions.tokenFloor). */
  tokenFloor: number;
}

export class LockService {
  readonly table: LockTable;
  /** Long-polls waiting for a grant, keyed by lock name and session. */
  private readonly polls = new Map<string, Set<(outcome: WaitOutcome) => void>>();

  constructor(private readonly options: LockServiceOptions) {
    this.table = new LockTable({
      limits: options.settings,
      sessionIdPrefix: options.sessionIdPrefix,
      tokenFloor: options.tokenFloor,
    });
  }

  /** Applies one command now and acts on its effects. */
  submit(command: Command): Output {
    const tokenBefore = this.table.highestToken;
    const output = this.table.apply(command, this.options.clock.nowMs());
    for (const effect of output.effects) this.onEffect(effect);
    const result = output.result;
    if (result.ok && result.type === "granted" && result.grant.token > tokenBefore) {
      this.options.log.event("granted", { ...result.grant, queued: false });
    }
    return output;
  }

  /** Feeds the clock to the table: expiries, wait deadlines and lock-delays happen here. */
  tick(): void {
    this.submit({ type: "tick" });
  }

  /**
   * Waits until (name, session) is granted or leaves the queue, for at most `timeoutMs`.
   * Checks the table first, so a grant that happened before the call is not missed.
   */
  waitForTurn(name: string, session: string, timeoutMs: number): Promise<WaitOutcome> {
    if (this.holderToken(name, session) !== undefined) return Promise.resolve("granted");
    if (this.queuePosition(name, session) === undefined) return Promise.resolve("ended");
    const key = pollKey(name, session);
    return new Promise((resolve) => {
      const waiters = this.polls.get(key) ?? new Set();
      this.polls.set(key, waiters);
      const finish = (outcome: WaitOutcome) => {
        clearTimeout(timer);
        waiters.delete(finish);
        if (waiters.size === 0) this.polls.delete(key);
        resolve(outcome);
      };
      const timer = setTimeout(() => finish("timeout"), timeoutMs);
      waiters.add(finish);
    });
  }

  /** Wakes every long-poll with "ended" (shutdown). */
  endAllPolls(): void {
    for (const waiters of [...this.polls.values()]) for (const finish of [...waiters]) finish("ended");
  }

  holderToken(name: string, session: string): number | undefined {
    return this.table.locks.get(name)?.holders.find((h) => h.session === session)?.token;
  }

  /** 1-based place in the queue, or undefined when not queued. */
  queuePosition(name: string, session: string): number | undefined {
    const index = this.table.locks.get(name)?.queue.findIndex((w) => w.session === session) ?? -1;
    return index >= 0 ? index + 1 : undefined;
  }

  private onEffect(effect: Effect): void {
    switch (effect.type) {
      case "granted":
        this.options.log.event("granted", { ...effect.grant, queued: true });
        this.wake(effect.grant.name, effect.grant.session, "granted");
        return;
      case "waitEnded":
        this.wake(effect.name, effect.session, "ended");
        return;
      case "sessionExpired":
        this.options.log.event("sessionExpired", { session: effect.session, released: effect.released });
        return;
      case "released": {
        const { type: _type, ...fields } = effect;
        this.options.log.event("released", fields);
        return;
      }
      default:
        assertNever(effect, "effect");
    }
  }

  private wake(name: string, session: string, outcome: WaitOutcome): void {
    const waiters = this.polls.get(pollKey(name, session));
    if (!waiters) return;
    for (const finish of [...waiters]) finish(outcome);
    assert(!this.polls.has(pollKey(name, session)), "woken polls must be removed");
  }

  /** The state for `status` and `GET /v1/locks`, with ages instead of clock readings. */
  view(): StatusView {
    const nowMs = this.options.clock.nowMs();
    const snapshot = this.table.snapshot();
    const heldBy = new Map<string, string[]>();
    for (const lock of snapshot.locks) {
      for (const entry of [...lock.holders, ...lock.queue]) {
        heldBy.set(entry.session, [...(heldBy.get(entry.session) ?? []), lock.name]);
      }
    }
    return {
      lastToken: snapshot.lastToken,
      sessions: snapshot.sessions.map((s) => ({
        session: s.id,
        ttlMs: s.ttlMs,
        ageMs: nowMs - s.createdAtMs,
        expiresInMs: Math.max(0, s.expiresAtMs - nowMs),
        locks: heldBy.get(s.id) ?? [],
      })),
      locks: snapshot.locks.map((lock) => ({
        name: lock.name,
        holders: lock.holders.map((h) => ({
          session: h.session,
          token: h.token,
          mode: h.mode,
          heldForMs: nowMs - h.sinceMs,
          lockDelayMs: h.lockDelayMs,
        })),
        waiters: lock.queue.map((w, index) => ({
          position: index + 1,
          session: w.session,
          mode: w.mode,
          waitingForMs: nowMs - w.queuedAtMs,
        })),
        lockDelayRemainingMs: Math.max(0, lock.delayUntilMs - nowMs),
      })),
    };
  }
}

function pollKey(name: string, session: string): string {
  return `${name}\u0000${session}`;
}

export interface LockView {
  name: string;
  holders: Array<{ session: string; token: number; mode: string; heldForMs: number; lockDelayMs: number }>;
  waiters: Array<{ position: number; session: string; mode: string; waitingForMs: number }>;
  lockDelayRemainingMs: number;
}

export interface StatusView {
  lastToken: number;
  sessions: Array<{ session: string; ttlMs: number; ageMs: number; expiresInMs: number; locks: string[] }>;
  locks: LockView[];
}
