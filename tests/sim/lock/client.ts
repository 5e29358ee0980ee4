/**
 * A simulated lock client: the rules of lib/client/lock_client.ts (LockClient.lock, Session)
 * replayed on the node's virtual clock, driven by a seeded workload. One cycle is what
 * `client.lock(name)` then `handle.release()` does:
 *
 *   open a session → enter (long-polls in chunks) → hold for a while → leave → close.
 *
 * Session rules, exactly as the real client: a keepalive every TTL/3; the lease ends one TTL
 * after the SEND time of the last acknowledged keepalive (the first lease counts from the send
 * of the open); once it ends, or the server says session_not_found, the session is lost and
 * the client stops acting on the lock. A request is retried once after a timeout (the real
 * client tries servers.length × 2 times), then fails as "unreachable".
 *
 * The client is where "believes it holds" lives: `belief()` is what the checkers read.
 */
import type { Mode } from "../../../lib/core/lock_table.ts";
import type { Prng } from "../../../lib/core/prng.ts";
import type { Settings } from "../../../lib/settings.ts";
import { WAIT_CHUNK_MS } from "../../../lib/client/lock_client.ts";
import { Actor } from "../actor.ts";
import type { Envelope } from "../network.ts";
import type { Sim } from "../simulator.ts";
import type { NodeClock } from "../time.ts";
import type { EnterAnswer, LockReply, LockRequest } from "./messages.ts";

/** Mirrors LONG_POLL_SLACK_MS in lib/client/lock_client.ts (not exported there). */
const LONG_POLL_SLACK_MS = 60_000;
/** Attempts per request: servers.length × 2 with the one server simulated. */
const ATTEMPTS_MAX = 2;

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
}

/** One lock() attempt, for the liveness judgement. */
export interface Attempt {
  client: string;
  name: string;
  startedAtMs: number;
  grantedAtMs?: number;
  endedAtMs?: number;
  outcome?: "granted" | "notGranted" | "failed" | "lost";
  detail?: string;
}

interface SessionState {
  id: string;
  ttlMs: number;
  leaseEndsAtMs: number;
  closed: boolean;
  lost: boolean;
}

interface Pending {
  request: LockRequest;
  attempt: number;
  extraTimeoutMs: number;
  onReply(body: Record<string, unknown>): void;
  onError(code: string): void;
}

export interface Belief {
  client: string;
  name: string;
  mode: Mode;
  token: number;
  session: string;
}

export class LockClientActor extends Actor {
  private phase: "idle" | "opening" | "entering" | "holding" | "releasing" | "closing" = "idle";
  private session: SessionState | undefined;
  private grant: Belief | undefined;
  private attempt: Attempt | undefined;
  private readonly pending = new Map<number, Pending>();
  private reqIdNext = 1;

  constructor(
    sim: Sim,
    id: string,
    clock: NodeClock,
    private readonly server: string,
    private readonly settings: Settings,
    private readonly workload: LockWorkload,
    private readonly prng: Prng,
    private readonly onAttempt: (attempt: Attempt) => void,
  ) {
    super(sim, id, "lock-client", clock);
    this.think();
  }

  peers(): string[] {
    return [this.server];
  }

  /** The lock this client believes it holds now under the lease rule, if any. */
  belief(): Belief | undefined {
    if (this.phase !== "holding" || !this.grant || !this.session) return undefined;
    if (this.session.closed || this.clock.nowMs() >= this.session.leaseEndsAtMs) return undefined;
    return this.grant;
  }

  /** The lock() attempt in progress, if any (liveness). */
  currentAttempt(): Attempt | undefined {
    return this.attempt;
  }

  protected onCrash(): void {
    this.endAttempt("failed", "client crashed");
    this.phase = "idle";
    this.session = undefined;
    this.grant = undefined;
    this.pending.clear();
  }

  protected onRestart(): void {
    this.think();
  }

  private think(): void {
    this.after(this.prng.between(0, this.workload.thinkMaxMs), () => this.startCycle());
  }

  private startCycle(): void {
    if (this.phase !== "idle") return;
    const w = this.workload;
    const name = this.prng.pick(w.lockNames);
    const mode: Mode = this.prng.chance(w.sharedRate) ? "shared" : "exclusive";
    const waitMs = this.sim.phase === "safety" ? this.prng.pick(w.waitChoicesMs) : w.healWaitMs;
    const holdMs = this.prng.between(1, w.holdMaxMs);
    this.attempt = { client: this.id, name, startedAtMs: this.sim.nowMs };
    this.phase = "opening";
    this.sim.log(this.id, "?", `lock ${name} ${mode} wait ${waitMs}ms`);
    const sentAtMs = this.clock.nowMs();
    this.request({ type: "open", reqId: 0, ttlMs: w.ttlMs }, 0, (body) => {
      const session: SessionState = {
        id: String(body.session),
        ttlMs: Number(body.ttlMs),
        leaseEndsAtMs: sentAtMs + Number(body.ttlMs),
        closed: false,
        lost: false,
      };
      this.session = session;
      this.keepAliveLoop(session);
      this.armLeaseTimer(session);
      this.enter(session, name, mode, this.clock.nowMs() + waitMs, holdMs);
    }, (code) => this.finishCycle("failed", `open: ${code}`));
  }

  /** LockClient.enter: long-polls in chunks until granted, refused, or the deadline. */
  private enter(session: SessionState, name: string, mode: Mode, deadlineMs: number, holdMs: number): void {
    this.phase = "entering";
    const remainingMs = Math.max(0, deadlineMs - this.clock.nowMs());
    const chunkMs = Math.min(remainingMs, WAIT_CHUNK_MS);
    const request: LockRequest = {
      type: "enter", reqId: 0, name, session: session.id, mode, waitMs: chunkMs, lockDelayMs: this.workload.lockDelayMs,
    };
    this.request(request, Math.min(chunkMs, LONG_POLL_SLACK_MS), (body) => {
      const answer = body as unknown as EnterAnswer;
      if (answer.granted) {
        // lock(): session.signal.throwIfAborted() after the grant.
        if (session.lost) return this.close(session, "lost", "session lost before the grant arrived");
        return this.hold(session, { client: this.id, name, mode, token: answer.token, session: session.id }, holdMs);
      }
      if (answer.waiting && remainingMs > 0) return this.enter(session, name, mode, deadlineMs, holdMs);
      if (answer.waiting) return this.withdraw(session, name);
      this.close(session, "notGranted", `queue position ${answer.position}`);
    }, (code) => this.close(session, "failed", `enter: ${code}`));
  }

  private withdraw(session: SessionState, name: string): void {
    this.request({ type: "leave", reqId: 0, name, session: session.id }, 0, () => this.close(session, "notGranted", "wait over"),
      () => this.close(session, "notGranted", "wait over"));
  }

  private hold(session: SessionState, grant: Belief, holdMs: number): void {
    this.phase = "holding";
    this.grant = grant;
    if (this.attempt) this.attempt.grantedAtMs = this.sim.nowMs;
    this.sim.log(this.id, "+", `holds ${grant.name} ${grant.mode} token ${grant.token} (${grant.session})`);
    this.after(holdMs, () => this.release(session));
  }

  /** LockHandle.release: leave with the token unless the session was lost, then close. */
  private release(session: SessionState): void {
    if (this.session !== session || this.phase !== "holding") return;
    const grant = this.grant!;
    this.grant = undefined;
    if (session.lost) return this.finishCycle("lost", "lease lost while holding");
    this.phase = "releasing";
    this.sim.log(this.id, "-", `leave ${grant.name} token ${grant.token}`);
    const done = () => this.close(session, "granted", "released");
    this.request({ type: "leave", reqId: 0, name: grant.name, session: session.id, token: grant.token }, 0, done, done);
  }

  /** Session.close: stop keepalives first, then DELETE (a failure does not matter: it expires). */
  private close(session: SessionState, outcome: Attempt["outcome"] & string, detail: string): void {
    if (session.closed) return this.finishCycle(outcome, detail);
    session.closed = true;
    this.phase = "closing";
    const done = () => this.finishCycle(outcome, detail);
    this.request({ type: "close", reqId: 0, session: session.id }, 0, done, done);
  }

  private finishCycle(outcome: Attempt["outcome"] & string, detail: string): void {
    this.endAttempt(outcome, detail);
    this.phase = "idle";
    this.session = undefined;
    this.grant = undefined;
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

  // ---- Session: keepalive every TTL/3 and the lease timer (lib/client/lock_client.ts Session).

  private keepAliveLoop(session: SessionState): void {
    this.after(Math.max(1, Math.floor(session.ttlMs / 3)), () => {
      if (session.closed) return;
      this.keepAliveLoop(session);
      this.checkLease(session);
      if (session.closed) return;
      const sentAtMs = this.clock.nowMs();
      this.request({ type: "keepalive", reqId: 0, session: session.id }, 0, () => {
        if (session.closed) return;
        session.leaseEndsAtMs = Math.max(session.leaseEndsAtMs, sentAtMs + session.ttlMs);
        this.armLeaseTimer(session);
      }, (code) => {
        if (code === "session_not_found") this.lose(session, "the server expired the session");
      });
    });
  }

  private armLeaseTimer(session: SessionState): void {
    this.after(Math.max(0, session.leaseEndsAtMs - this.clock.nowMs()) + 1, () => this.checkLease(session));
  }

  private checkLease(session: SessionState): void {
    if (session.closed) return;
    if (this.clock.nowMs() >= session.leaseEndsAtMs) this.lose(session, "no keepalive reached the server for a whole TTL");
  }

  private lose(session: SessionState, reason: string): void {
    if (session.closed) return;
    session.closed = true;
    session.lost = true;
    this.sim.log(this.id, "!", `session ${session.id} lost: ${reason}`);
    // A holder stops acting at once (mutexd lock kills its command); the handle's release then
    // only closes, which a lost session skips.
    if (this.session === session && this.phase === "holding") {
      this.grant = undefined;
      this.finishCycle("lost", reason);
    }
  }

  // ---- Requests with a timeout and one retry (LockClient.request).

  private request(
    request: LockRequest,
    extraTimeoutMs: number,
    onReply: (body: Record<string, unknown>) => void,
    onError: (code: string) => void,
    attempt = 1,
  ): void {
    const reqId = this.reqIdNext++;
    const sent = { ...request, reqId } as LockRequest;
    this.pending.set(reqId, { request, attempt, extraTimeoutMs, onReply, onError });
    this.sim.network.send(this, this.server, sent, `${request.type} ${reqId}`);
    this.after(this.settings.requestTimeoutMs + extraTimeoutMs, () => {
      const pending = this.pending.get(reqId);
      if (!pending) return;
      this.pending.delete(reqId);
      // The fetch was aborted: a late answer to it is never seen.
      if (attempt < ATTEMPTS_MAX) this.request(request, extraTimeoutMs, onReply, onError, attempt + 1);
      else onError("unreachable");
    });
  }

  protected receive(envelope: Envelope): void {
    const reply = envelope.payload as LockReply;
    const pending = this.pending.get(reply.reqId);
    if (!pending) return; // a duplicate, or the answer to an aborted attempt
    this.pending.delete(reply.reqId);
    if (reply.ok) pending.onReply(reply.body);
    else pending.onError(reply.code);
  }
}
