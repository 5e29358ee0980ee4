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
 * the client stops acting on the lock.
 *
 * Requests: with one server (kind "lock", the single server of da73b91) a request is retried
 * once after a timeout, then fails as "unreachable". With several servers (kind "failover")
 * the client follows LockClient.request exactly: on a timeout (connection failure) or a
 * "not primary" answer it moves to the hinted or the other server and tries again, backing off
 * 25 ms doubling to 250 ms after every round over all servers, until failoverTimeoutMs has
 * passed; open, close and leave carry one idempotency key (`requestId`) across all retries.
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
/** Attempts per request of the single-server client (kind "lock"). */
const ATTEMPTS_MAX = 2;
/** LockClient.request's backoff between rounds over the servers. */
const BACKOFF_FIRST_MS = 25;
const BACKOFF_MAX_MS = 250;

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

/** One LockClient.request call: its retries share the body (and so the idempotency key). */
interface Call {
  request: LockRequest;
  extraTimeoutMs: number;
  onReply(body: Record<string, unknown>): void;
  onError(code: string): void;
  attempt: number;
  /** Failover client: give up once the local clock passes this; backoff of the next round. */
  deadlineMs: number;
  backoffMs: number;
  lastCode: string;
}

export interface LockClientOptions {
  /** Fault group (crash faults pick by group); "lock-client" by default. */
  group?: string;
  /** Follow LockClient.request's failover loop over `servers` (see the header). */
  failover?: boolean;
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

export class LockClientActor extends Actor {
  private phase: "idle" | "opening" | "entering" | "holding" | "releasing" | "closing" = "idle";
  private session: SessionState | undefined;
  private grant: Belief | undefined;
  private attempt: Attempt | undefined;
  private readonly pending = new Map<number, Call>();
  private reqIdNext = 1;
  /** Index into `servers` of the server the next request goes to first. */
  private current = 0;
  private requestIdNext = 1;

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
    this.think();
  }

  peers(): string[] {
    return [...this.servers];
  }

  /** A fresh idempotency key (crypto.randomUUID in the real client), unique per incarnation. */
  private requestId(): string {
    return `${this.id}.${this.incarnation}.${this.requestIdNext++}`;
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
    this.request({ type: "open", reqId: 0, ttlMs: w.ttlMs, requestId: this.requestId() }, 0, (body) => {
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
    this.request({ type: "leave", reqId: 0, name, session: session.id, requestId: this.requestId() }, 0, () => this.close(session, "notGranted", "wait over"),
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
    const leave: LockRequest = { type: "leave", reqId: 0, name: grant.name, session: session.id, token: grant.token, requestId: this.requestId() };
    this.request(leave, 0, done, done);
  }

  /** Session.close: stop keepalives first, then DELETE (a failure does not matter: it expires). */
  private close(session: SessionState, outcome: Attempt["outcome"] & string, detail: string): void {
    if (session.closed) return this.finishCycle(outcome, detail);
    session.closed = true;
    this.phase = "closing";
    const done = () => this.finishCycle(outcome, detail);
    this.request({ type: "close", reqId: 0, session: session.id, requestId: this.requestId() }, 0, done, done);
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

  // ---- Requests (LockClient.request): a timeout per attempt; retries as the header says.

  private request(
    request: LockRequest,
    extraTimeoutMs: number,
    onReply: (body: Record<string, unknown>) => void,
    onError: (code: string) => void,
  ): void {
    const deadlineMs = this.clock.nowMs() + (this.options.failoverTimeoutMs ?? 5_000);
    this.send({ request, extraTimeoutMs, onReply, onError, attempt: 1, deadlineMs, backoffMs: BACKOFF_FIRST_MS, lastCode: "unreachable" });
  }

  private send(call: Call): void {
    const reqId = this.reqIdNext++;
    const sent = { ...call.request, reqId } as LockRequest;
    const server = this.servers[this.current];
    this.pending.set(reqId, call);
    this.sim.network.send(this, server, sent, `${call.request.type} ${reqId}${this.servers.length > 1 ? ` to ${server}` : ""}`);
    this.after(this.settings.requestTimeoutMs + call.extraTimeoutMs, () => {
      if (this.pending.get(reqId) !== call) return;
      // The fetch was aborted: a late answer to it is never seen.
      this.pending.delete(reqId);
      this.retry(call, "unreachable", undefined);
    });
  }

  /** The attempt failed (timeout, or "not primary" with a hint): try again or give up. */
  private retry(call: Call, code: string, hint: string | null | undefined): void {
    call.lastCode = code;
    if (!this.options.failover) {
      if (call.attempt < ATTEMPTS_MAX) {
        call.attempt += 1;
        this.send(call);
      } else {
        call.onError("unreachable");
      }
      return;
    }
    const hinted = hint ? this.servers.indexOf(hint) : -1;
    this.current = hinted >= 0 && hinted !== this.current ? hinted : (this.current + 1) % this.servers.length;
    if (this.clock.nowMs() >= call.deadlineMs) return call.onError(call.lastCode);
    const attempt = call.attempt; // attempts made so far
    call.attempt += 1;
    if (attempt % this.servers.length !== 0) return this.send(call);
    const sleepMs = call.backoffMs;
    call.backoffMs = Math.min(call.backoffMs * 2, BACKOFF_MAX_MS);
    this.after(sleepMs, () => this.send(call));
  }

  protected receive(envelope: Envelope): void {
    const reply = envelope.payload as LockReply;
    const call = this.pending.get(reply.reqId);
    if (!call) return; // a duplicate, or the answer to an aborted attempt
    this.pending.delete(reply.reqId);
    if (reply.ok) call.onReply(reply.body);
    else if (reply.code === "not_primary" && this.options.failover) this.retry(call, reply.code, reply.primary);
    else call.onError(reply.code);
  }
}
