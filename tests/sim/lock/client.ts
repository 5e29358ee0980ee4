/**
 * A simulated lock client: the REAL client (lib/client/lock_client.ts) on the node's ports (its
 * clock, timers on its virtual time, a fetch over the simulated network: messages.ts), driven by
 * a seeded workload. This file only decides what to ask and records what the client believes;
 * failover, retries, idempotency keys, long-polls, keepalives and the lease rule are the real
 * client's.
 *
 * The workload is not polite. A cycle takes one lock and releases it, either
 * - as `client.lock(name)` then `handle.release()` (a session of its own), or
 * - on a session reused over several cycles (`enter`, hold, `leave` with the token), opened
 *   once and closed after a drawn number of cycles or when lost (in both phases; with
 *   `--set lock.reuseInHeal=0` in the safety phase only).
 * Waits are drawn (0 is a try-lock); modes are shared or exclusive; lock-delay as drawn. While it
 * holds a lock on a reused session, the client may send leaves with an OLD token of that lock
 * (stale, sometimes twice: duplicated): the server must refuse them and keep the grant, which
 * lock.grant-survives checks.
 *
 * `belief()` is what the checkers read: the lock held now, while the session's lease (the real
 * Session's `leaseEndsAtMs`: one TTL after the send time of the last acknowledged keepalive) runs.
 */
import type { Mode } from "../../../lib/core/lock/lock_table.ts";
import type { Prng } from "../../../lib/core/prng.ts";
import { DEFAULT_SETTINGS, type Settings } from "../../../lib/settings.ts";
import { type Done, type LockHandle, LockClient, type Session } from "../../../lib/client/lock_client.ts";
import { Actor } from "../actor.ts";
import type { Envelope } from "../network.ts";
import type { Sim } from "../simulator.ts";
import type { NodeClock } from "../time.ts";
import { Microtasks, simTimers } from "../ring/ports.ts";
import { isHttp, SimFetch, simUrl } from "./messages.ts";

export interface LockWorkload {
  lockNames: string[];
  ttlMs: number;
  sharedRate: number;
  lockDelayMs: number;
  holdMaxMs: number;
  thinkMaxMs: number;
  /** waitMs choices of the safety phase; the heal phase waits long (see LockKind). */
  waitChoicesMs: number[];
  healWaitMs: number;
  /** Cycles on one reused session, at most (1: every lock in a session of its own, lock()). */
  sessionCyclesMax: number;
  /** Chance that a hold on a reused session sends a leave with an old token (stale). */
  staleLeaveRate: number;
  /** Reuse sessions in the heal phase too (else only in the safety phase; see LOCK_KIND). */
  reuseInHeal: boolean;
  /** Chance that a hold is attacked by an outsider with its session id but not its secret (issue 12). */
  outsiderRate: number;
}

/** One lock attempt, for the liveness judgement. */
export interface Attempt {
  client: string;
  name: string;
  startedAtMs: number;
  grantedAtMs?: number;
  endedAtMs?: number;
  outcome?: "granted" | "notGranted" | "failed" | "lost";
  detail?: string;
}

export interface LockClientOptions {
  /** Fault group (crash faults pick by group); "lock-client" by default. */
  group?: string;
  /** ConnectOptions.failoverTimeoutMs (5000 by default, as the real client). */
  failoverTimeoutMs?: number;
}

export interface Belief {
  client: string;
  name: string;
  mode: Mode;
  token: number;
  session: string;
}

/** What one cycle holds: the grant, its session, and the handle when it came from lock(). */
interface Holding {
  belief: Belief;
  session: Session;
  handle?: LockHandle;
}

/** Old tokens kept per reused session for stale leaves (bounded). */
const OLD_TOKENS_MAX = 16;

export class LockClientActor extends Actor {
  private client!: LockClient;
  private microtasks = new Microtasks();
  private readonly timers = simTimers(this, (fn) => this.turn(fn));
  private http!: SimFetch;
  private busy = false;
  private attempt: Attempt | undefined;
  private holding: Holding | undefined;
  /** The reused session (session-style cycles), its cycles left, and its old grants. */
  private session: { session: Session; cyclesLeft: number; oldTokens: Array<{ name: string; token: number }> } | undefined;
  private readonly outsiderPrng: Prng;

  constructor(
    sim: Sim,
    id: string,
    clock: NodeClock,
    private readonly servers: readonly string[],
    private readonly settings: Settings,
    private readonly workload: LockWorkload,
    private readonly prng: Prng,
    private readonly onAttempt: (attempt: Attempt) => void,
    private readonly options: LockClientOptions = {},
  ) {
    super(sim, id, options.group ?? "lock-client", clock);
    // A fork (no draw from `prng`): with outsiderRate 0 every run is the one it was before.
    this.outsiderPrng = prng.fork("outsider");
    this.start();
  }

  peers(): string[] {
    return [...this.servers];
  }

  /** A new incarnation: a new LockClient on fresh ports (the old one's timers died with it). */
  private start(): void {
    this.microtasks = new Microtasks();
    this.http = new SimFetch(this, this.microtasks);
    let requestIdNext = 1;
    const incarnation = this.incarnation;
    // A fork (no draw from `prng`), so the secrets move no other draw of the run.
    const secrets = this.prng.fork(`sessionSecrets:${this.id}:${incarnation}`);
    this.client = new LockClient({
      servers: this.servers.map(simUrl),
      requestTimeoutMs: this.settings.requestTimeoutMs,
      failoverTimeoutMs: this.options.failoverTimeoutMs ?? DEFAULT_SETTINGS.failoverTimeoutMs,
      fetch: this.http.fetch,
      clock: this.clock,
      timers: this.timers,
      newRequestId: () => simRequestId(this.id, incarnation, requestIdNext++),
      newSessionSecret: () => [0, 1, 2, 3, 4, 5, 6, 7].map(() => secrets.nextU32().toString(16).padStart(8, "0")).join(""),
    });
    this.think();
  }

  /** One macrotask of this process: `fn`, then the microtasks it queued. */
  private turn(fn: () => void): void {
    fn();
    this.microtasks.drain();
  }

  /** The lock this client believes it holds now under the lease rule, if any. */
  belief(): Belief | undefined {
    const holding = this.holding;
    if (!holding || holding.session.lost || this.clock.nowMs() >= holding.session.leaseEndsAtMs) return undefined;
    return holding.belief;
  }

  /** The lock attempt in progress, if any (liveness). */
  currentAttempt(): Attempt | undefined {
    return this.attempt;
  }

  protected onCrash(): void {
    this.endAttempt("failed", "client crashed");
    this.busy = false;
    this.holding = undefined;
    this.session = undefined;
  }

  protected onRestart(): void {
    this.start();
  }

  protected receive(envelope: Envelope): void {
    const payload = envelope.payload;
    if (isHttp(payload) && payload.http === "reply") this.turn(() => this.http.receive(payload));
  }

  private think(): void {
    this.after(this.prng.between(0, this.workload.thinkMaxMs), () => this.turn(() => this.startCycle()));
  }

  private startCycle(): void {
    if (this.busy) return;
    const w = this.workload;
    const name = this.prng.pick(w.lockNames);
    const mode: Mode = this.prng.chance(w.sharedRate) ? "shared" : "exclusive";
    const waitMs = this.sim.phase === "safety" ? this.prng.pick(w.waitChoicesMs) : w.healWaitMs;
    const holdMs = this.prng.between(1, w.holdMaxMs);
    const reuse = w.sessionCyclesMax > 1 && this.prng.chance(0.7) && this.reusing();
    if (!this.reusing() && this.session) {
      // The heal phase began between two cycles: the reused session goes first (whatever it may hold).
      const idle = this.session;
      this.session = undefined;
      idle.session.closeThen(() => {});
    }
    this.busy = true;
    this.attempt = { client: this.id, name, startedAtMs: this.sim.nowMs };
    this.sim.log(this.id, "?", `${reuse ? "enter" : "lock"} ${name} ${mode} wait ${waitMs}ms`);
    if (!reuse) {
      return this.client.lockThen(name, { waitMs, ttlMs: w.ttlMs, shared: mode === "shared", lockDelayMs: w.lockDelayMs }, (outcome) => {
        if (outcome.ok) return this.hold({ belief: this.beliefOf(outcome.value.session, name, mode, outcome.value.token), session: outcome.value.session, handle: outcome.value }, holdMs);
        const notGranted = outcome.error.code === "not_acquired";
        this.finishCycle(notGranted ? "notGranted" : outcome.error.code === "lock_lost" ? "lost" : "failed", `lock: ${outcome.error.code}`);
      });
    }
    this.withSession((session) => {
      this.client.enterThen(name, { session: session.session, mode, waitMs, lockDelayMs: w.lockDelayMs }, (outcome) => {
        // A failed enter may have been granted (its answer lost): the session goes, with it.
        if (!outcome.ok) return this.finishCycle("failed", `enter: ${outcome.error.code}`, true);
        const result = outcome.value;
        if (!result.granted) return this.finishCycle("notGranted", `queue position ${result.position}`);
        // As lock() does: a grant that arrives after the session was lost is not believed.
        if (session.session.lost) return this.finishCycle("lost", "session lost before the grant arrived");
        this.hold({ belief: this.beliefOf(session.session, name, mode, result.token), session: session.session }, holdMs);
      });
    });
  }

  private beliefOf(session: Session, name: string, mode: Mode, token: number): Belief {
    return { client: this.id, name, mode, token, session: session.id };
  }

  /** The reused session, opened if there is none alive (the cycle fails if opening fails). */
  private withSession(use: (session: NonNullable<LockClientActor["session"]>) => void): void {
    const current = this.session;
    if (current && !current.session.lost && current.cyclesLeft > 0) {
      current.cyclesLeft -= 1;
      return use(current);
    }
    this.session = undefined;
    this.client.openSessionThen({ ttlMs: this.workload.ttlMs }, (outcome) => {
      if (!outcome.ok) return this.finishCycle("failed", `open: ${outcome.error.code}`);
      const cyclesLeft = this.prng.between(1, this.workload.sessionCyclesMax) - 1;
      this.session = { session: outcome.value, cyclesLeft, oldTokens: [] };
      use(this.session);
    });
  }

  private hold(holding: Holding, holdMs: number): void {
    this.holding = holding;
    const { belief, session } = holding;
    if (this.attempt) this.attempt.grantedAtMs = this.sim.nowMs;
    this.sim.log(this.id, "+", `holds ${belief.name} ${belief.mode} token ${belief.token} (${belief.session})`);
    // A holder stops acting at once when its session is lost (mutexd lock kills its command).
    session.signal.addEventListener("abort", () => {
      if (this.holding !== holding) return;
      this.sim.log(this.id, "!", `${(session.signal.reason as Error).message}`);
      this.holding = undefined;
      this.finishCycle("lost", "session lost while holding");
    }, { once: true });
    if (!holding.handle) this.staleLeaves(holding);
    this.outsiderActs(holding);
    this.after(holdMs, () => this.turn(() => this.release(holding)));
  }

  /** Leaves with an old token of the held lock, on the holder's session: must change nothing. */
  private staleLeaves(holding: Holding): void {
    const reused = this.session;
    if (!reused || reused.session !== holding.session || !this.prng.chance(this.workload.staleLeaveRate)) return;
    const old = reused.oldTokens.filter((t) => t.name === holding.belief.name && t.token < holding.belief.token);
    if (old.length === 0) return;
    const { name, token } = this.prng.pick(old);
    const copies = this.prng.chance(0.5) ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      this.sim.log(this.id, "*", `stale leave ${name} token ${token} while holding token ${holding.belief.token}`);
      this.client.leaveThen(name, { session: holding.session, token }, (outcome) => {
        if (outcome.ok) this.sim.log(this.id, "*", `stale leave ${name} token ${token} accepted`);
      });
    }
  }

  /**
   * An outsider acts on the hold with what every listing shows (the session id and the token)
   * but not the session's secret: a leave, then a close. Both must be refused (403) and change
   * nothing; were one taken, the client would believe it holds a lock the server freed
   * (lock.grant-survives, lock.client-mutex). Sent from this client's process for simplicity:
   * the server cannot tell who sends a request, only what it carries.
   */
  private outsiderActs(holding: Holding): void {
    if (this.workload.outsiderRate === 0 || !this.outsiderPrng.chance(this.workload.outsiderRate)) return;
    const { name, token, session } = holding.belief;
    this.sim.log(this.id, "*", `outsider: leave ${name} token ${token} and close ${session}, without the secret`);
    this.client.leaveThen(name, { session, token }, (outcome) => {
      if (outcome.ok) this.sim.log(this.id, "*", `outsider's leave of ${name} accepted`);
    });
    this.client.requestThen("DELETE", `/v1/sessions/${encodeURIComponent(session)}`, { requestId: this.client.newRequestId() }, 0, (outcome) => {
      if (outcome.ok) this.sim.log(this.id, "*", `outsider's close of ${session} accepted`);
    });
  }

  /** Release: handle.release() for lock(), else a leave with the token on the reused session. */
  private release(holding: Holding): void {
    if (this.holding !== holding) return;
    this.holding = undefined;
    const { belief } = holding;
    this.sim.log(this.id, "-", `leave ${belief.name} token ${belief.token}`);
    // A leave that failed may not have applied: the reused session goes, with what it holds.
    const done: Done<void> = (outcome) => this.finishCycle("granted", "released", !outcome.ok);
    if (holding.handle) return holding.handle.releaseThen(done);
    const reused = this.session;
    if (reused?.session === holding.session) {
      reused.oldTokens.push({ name: belief.name, token: belief.token });
      if (reused.oldTokens.length > OLD_TOKENS_MAX) reused.oldTokens.shift();
    }
    this.client.leaveThen(belief.name, { session: holding.session, token: belief.token }, done);
  }

  /** Ends the cycle; the reused session is closed when lost, used up, or `retire`. */
  private finishCycle(outcome: Attempt["outcome"] & string, detail: string, retire = false): void {
    this.endAttempt(outcome, detail);
    const reused = this.session;
    if (reused && (retire || reused.session.lost || reused.cyclesLeft === 0 || !this.reusing())) {
      this.session = undefined;
      return reused.session.closeThen(() => this.idle());
    }
    this.idle();
  }

  /** Whether cycles may use a reused session now (the heal phase stops, unless reuseInHeal). */
  private reusing(): boolean {
    return this.sim.phase === "safety" || this.workload.reuseInHeal;
  }

  private idle(): void {
    this.busy = false;
    this.think();
  }

  private endAttempt(outcome: Attempt["outcome"] & string, detail: string): void {
    const attempt = this.attempt;
    if (!attempt) return;
    this.attempt = undefined;
    attempt.endedAtMs = this.sim.nowMs;
    attempt.outcome = attempt.grantedAtMs !== undefined && outcome !== "lost" ? "granted" : outcome;
    attempt.detail = detail;
    this.onAttempt(attempt);
  }
}

/**
 * A request (and call) id unique per client, incarnation and request, in the form of mutexd's
 * client's (a lowercase UUID), so the table packs call ids as it does in production (call_id.ts);
 * readable in logs: c3's 2nd incarnation's 17th is 00000003-0002-4000-8000-000000000011. A
 * client whose id has no number keeps the plain form.
 */
function simRequestId(clientId: string, incarnation: number, seq: number): string {
  const client = /^[a-z]+(\d+)$/.exec(clientId);
  if (!client) return `${clientId}.${incarnation}.${seq}`;
  const hex = (value: number, digits: number) => value.toString(16).padStart(digits, "0");
  return `${hex(Number(client[1]), 8)}-${hex(incarnation, 4)}-4000-8000-${hex(seq, 12)}`;
}
