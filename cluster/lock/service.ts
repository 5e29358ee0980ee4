/**
 * The driver around a lock server's pure core (lib/core/lock/lock_replica.ts): it feeds the core the
 * monotonic clock, client requests and peer messages, executes what `ready()` asks (sends to the
 * peer and the arbiter, answers to clients), runs the enter long-poll (submit; when "waiting",
 * wait for a committed change, then submit once more), turns committed effects into wake-ups of
 * long-polls and log lines, and presents the state for status. No lock or replication logic
 * lives here; the HTTP API (cluster/lock/api.ts, with its api_*.ts) only decodes and encodes
 * around it. Its parts, one concept a file: the long-polls (long_polls.ts), the continuations
 * of a step (step_continuations.ts), the requests held for a takeover (takeover_hold.ts), the
 * acks held for the disk (durable_acks.ts) and the status presentation (status_view.ts).
 *
 * Everything it needs from the runtime comes in as a port (clock, timers, transport, log), and
 * the tick is driven from outside, so the simulator (tests/sim/lock/server.ts) runs this class
 * as it is, on virtual time. For the same reason its own continuations (a client's answer, the
 * end of a long-poll) are callbacks it runs itself at one defined point, right after the step
 * that decided them, not promise callbacks in the runtime's microtask queue; and what the
 * transport returns is continued with `.then(onAnswer, onFailure)` only (cluster/timers.ts, port
 * rule). `submit` and `enter` wrap the callback forms in a promise for the HTTP handlers.
 */
import { assertNever } from "../../lib/core/assert.ts";
import { packedOrNone } from "../../lib/core/lock/call_id.ts";
import { type Command, type Effect, type Grant, LockTable } from "../../lib/core/lock/lock_table.ts";
import { type ClientAnswer, LockReplica, type Outbound, type PeerMessage } from "../../lib/core/lock/lock_replica.ts";
import type { RestoredCopy } from "../../lib/core/lock/durable_copy.ts";
import type { Settings } from "../../lib/settings.ts";
import type { Clock } from "../clock.ts";
import type { Logger } from "../log.ts";
import type { Timers } from "../timers.ts";
import { SecurityLog } from "../security_log.ts";
import { checkPeerAnswer, arbiterReplySchema } from "../../lib/wire/lock_peer.ts";
import { check } from "../../lib/wire/schema.ts";
import type { LockMetrics } from "./metrics.ts";
import { DurableAcks, type DurableSink } from "./durable_acks.ts";
import { LongPolls, type PollEnd } from "./long_polls.ts";
import { lockView, type LockView, statusSummary, type StatusSummary, statusView, type StatusView } from "./status_view.ts";
import { StepContinuations } from "./step_continuations.ts";
import { type HeldForTakeover, TakeoverHold } from "./takeover_hold.ts";

export type EnterCommand = Extract<Command, { type: "enter" }>;

/**
 * A client's request in flight: submitted to the core as `clientRef`, answered through `done`. The
 * same object is what a takeover holds (takeover_hold.ts), so a request costs one object, not a
 * closure per answer.
 */
interface ClientRequest extends HeldForTakeover {
  clientRef: number;
  /** Whether a takeover may hold it: false for a held request submitted again (held once at most). */
  mayHold: boolean;
}

/**
 * What the driver needs of a transport: `PeerTransport` (peer_transport.ts) in the daemon; any
 * sender whose answers are thenable elsewhere (the simulator settles its own).
 */
export interface PeerSender {
  send(url: string, body: unknown, timeoutMs: number): PromiseLike<unknown>;
}

export interface LockServiceOptions {
  settings: Settings;
  clock: Clock;
  log: Logger;
  nodeId: string;
  /** The other lock server and the arbiter, with their base URLs; null when absent. */
  peer: { id: string; url: string } | null;
  arbiter: { id: string; url: string } | null;
  /** Requests to the peer and the arbiter (only `.then(onAnswer, onFailure)` is called on the answer). */
  transport: PeerSender;
  /** For the long-poll timeout. */
  timers: Timers;
  /** Prefix of session ids (unique per server incarnation). */
  sessionIdPrefix: string;
  /** Tokens of a fresh table start above this (see LockTableOptions.tokenFloor). */
  tokenFloor: number;
  /** With a durable log (cluster `durable = true`): the copy read at start, and the log. */
  durable?: { restored: RestoredCopy | null; sink: DurableSink };
  /** Where refused input is counted and logged (the process's one; absent: the service's own). */
  security?: SecurityLog;
  /** Metrics fed from committed effects and core events (cluster/lock/metrics.ts); absent: none. */
  metrics?: LockMetrics;
}

export class LockService {
  readonly replica: LockReplica;
  /** Refused input: malformed peer requests and answers (status `security`). */
  readonly security: SecurityLog;
  /** Requests in flight that their own step did not answer (replicated, held for the arbiter's cover), by client reference. */
  private readonly answers = new Map<number, ClientRequest>();
  /**
   * The request whose step runs now. A lone primary answers it within that step, and so does
   * any refusal: its answer is taken from here, without an entry in `answers` set and deleted
   * in the same turn. One still unanswered when its step ends, or when another request is
   * submitted within it (by a continuation), moves to `answers`.
   */
  private submitting: ClientRequest | undefined = undefined;
  private nextClientRef = 1;
  /** Continuations decided by the current step, run in order once it is done. */
  private readonly continuations = new StepContinuations();
  /** Long-polls waiting for a change to their request. */
  private readonly polls: LongPolls;
  private stopped = false;
  /** With a durable log: the acks held until the disk has what they acknowledge. */
  private readonly durableAcks: DurableAcks | undefined;
  /** A tick set for the moment a takeover claim may go out, when that falls between two ticks. */
  private claimTick: unknown = undefined;
  /** Client requests held for a takeover about to happen here. */
  private readonly takeoverHold: TakeoverHold;
  /** Called after every step (lock watches compare the locks they stream: watch.ts); few (one per app). */
  private readonly stepListeners = new Set<() => void>();
  /** Where peer and arbiter requests go, made once (not a string per append: docs/bench.md "Ninth pass"). */
  private readonly peerUrl: string | undefined;
  private readonly arbiterUrl: string | undefined;

  constructor(private readonly options: LockServiceOptions) {
    const { settings } = options;
    this.security = options.security ?? new SecurityLog(options.clock, options.log, settings.securityLogIntervalMs);
    this.peerUrl = options.peer ? `${options.peer.url}/v1/peer` : undefined;
    this.arbiterUrl = options.arbiter ? `${options.arbiter.url}/v1/arbiter` : undefined;
    this.polls = new LongPolls(options.timers, this.continuations);
    this.replica = new LockReplica({
      nodeId: options.nodeId,
      peerId: options.peer?.id ?? null,
      arbiterId: options.arbiter?.id ?? null,
      settings,
      // The epoch in the prefix: a later fresh table of this process never reuses a lost one's ids.
      newTable: ({ epoch, tokenFloor }) => new LockTable({ limits: settings, sessionIdPrefix: `${options.sessionIdPrefix}${epoch}-`, tokenFloor }),
      tokenFloor: options.tokenFloor,
      // A new id per process: the arbiter tells a restarted backup from the copy it recorded
      // (a copy restored from a durable log keeps the id stored with it: durable_copy.ts).
      incarnation: options.sessionIdPrefix,
      durable: options.durable ? { restored: options.durable.restored } : undefined,
    }, options.clock.nowMs());
    this.takeoverHold = new TakeoverHold(this.replica, options.clock);
    // Bounded by the primary's pipeline; beyond a generous multiple, an ack claims nothing.
    this.durableAcks = options.durable
      ? new DurableAcks(options.durable.restored?.machine.appliedIndex ?? 0, 4 * settings.replicationPipelineMax)
      : undefined;
    options.durable?.sink.start((copyGen, index) => this.onDurable(copyGen, index));
    this.flush();
  }

  /** Submits one client command; resolves once it is committed (or refused). */
  submit(command: Command, requestId?: string): Promise<ClientAnswer> {
    return new Promise((done) => this.submitThen(command, requestId, done));
  }

  /**
   * `submit` with a callback: `done` runs right after the step that commits (or refuses) it. A
   * backup about to take over holds a request it refuses (`mayHold`) until the takeover is
   * decided, then submits it again without holding: the client is served as soon as this server
   * serves, instead of at its next try after a backoff of up to 100 ms (issue 14, F1).
   */
  submitThen(command: Command, requestId: string | undefined, done: (answer: ClientAnswer) => void, mayHold = true): void {
    this.submitAt(command, requestId, done, mayHold, this.options.clock.nowMs());
  }

  /**
   * `submitThen` at `nowMs`, the clock read once for the request: the core's step and the metrics
   * of what it commits take that reading (a clock read costs 0.1-0.2 µs under Deno; a lone
   * primary read it five times per acquire+release, now twice: docs/bench.md, "Sixth pass").
   */
  private submitAt(command: Command, requestId: string | undefined, done: (answer: ClientAnswer) => void, mayHold: boolean, nowMs: number): void {
    if (this.stopped) {
      this.continuations.push(() => done(this.stoppingAnswer()));
      return this.continuations.run();
    }
    const request: ClientRequest = { clientRef: this.nextClientRef++, command, requestId, done, mayHold };
    this.parkSubmitting();
    this.submitting = request;
    this.replica.clientRequest(request.clientRef, command, requestId, nowMs);
    this.flush(nowMs);
    if (this.submitting === request) this.parkSubmitting();
  }

  /** The request being submitted, unanswered, waits in `answers` (see `submitting`). */
  private parkSubmitting(): void {
    if (this.submitting === undefined) return;
    this.answers.set(this.submitting.clientRef, this.submitting);
    this.submitting = undefined;
  }

  /** The request the core answered as `clientRef`, taken out of the driver's care (undefined: none, or stopped). */
  private takeRequest(clientRef: number): ClientRequest | undefined {
    const submitting = this.submitting;
    if (submitting !== undefined && submitting.clientRef === clientRef) {
      this.submitting = undefined;
      return submitting;
    }
    const request = this.answers.get(clientRef);
    if (request !== undefined) this.answers.delete(clientRef);
    return request;
  }

  /**
   * A request's answer, as a continuation of the step that decided it; a takeover about to happen
   * here may hold it, unless the service stopped meanwhile (stop() has already answered the held
   * ones: one held now would never be answered).
   */
  private readonly answerRequest = (request: ClientRequest, answer: ClientAnswer): void => {
    if (request.mayHold && !this.stopped) return this.takeoverHold.holdOrAnswer(request, answer);
    request.done(answer);
  };

  /**
   * mutex_enter: grant now, wait (a long-poll of at most min(waitMs, longPollMaxMs); the client
   * asks again to keep its place), or "not granted" with the queue position. Every answer comes
   * from a committed command. A poll that a committed grant to the waiter ended answers with that
   * grant, if the waiter holds it still for this call (`grantStands`): the entry that granted it
   * is committed, so the backup has it. Otherwise `enter` is submitted once more, with what is
   * left of waitMs, and that answer is the one given (enter is idempotent: a holder gets its
   * grant, a waiter keeps its place; one whose wait is over gets a try-lock's answer). waitMs = 0
   * is a try-lock. (Until issue 14 a grant was answered by that second enter too: one more log
   * entry, and with a backup one more replication round, on the path of every handoff.)
   */
  enter(command: EnterCommand): Promise<ClientAnswer> {
    return new Promise((done) => this.enterThen(command, done));
  }

  /** `enter` with a callback (see `submitThen`). */
  enterThen(command: EnterCommand, done: (answer: ClientAnswer) => void): void {
    const { clock, settings } = this.options;
    const askedAtMs = clock.nowMs();
    this.submitAt(command, undefined, (answer) => {
      if (!answer.ok || answer.result.type !== "waiting") return done(answer);
      this.options.metrics?.queued(command.name, command.session);
      const pollMs = Math.min(command.waitMs, settings.longPollMaxMs);
      this.waitForTurn(command.name, command.session, pollMs, (_outcome, grant) => {
        if (this.stopped) return done(this.stoppingAnswer());
        if (grant !== undefined && this.grantStands(command, grant)) return done({ ok: true, result: { ok: true, type: "granted", grant } });
        // Asked again for what is left of the wait: a poll that ran to the waiter's deadline
        // must not queue it again, at the back, for a whole new wait.
        const waitMs = Math.max(0, command.waitMs - (clock.nowMs() - askedAtMs));
        this.submitThen({ ...command, waitMs }, undefined, done);
      });
    }, true, askedAtMs);
  }

  /**
   * Whether the committed `grant` is the answer to `command` now: this server is the primary, and
   * the table (which may hold later entries, not yet committed) still has the session holding the
   * lock with that token for this call. If not (released, expired, another call of the session
   * took the grant over), the enter is submitted again and the table answers it.
   */
  private grantStands(command: EnterCommand, grant: Grant): boolean {
    if (this.replica.role !== "primary") return false;
    const holder = this.table?.locks.get(grant.name)?.holderOf(grant.session);
    // The table keeps call ids packed (call_id.ts).
    return holder !== undefined && holder.token === grant.token && holder.mode === command.mode && holder.callId === packedOrNone(command.callId);
  }

  /**
   * After a step (the tick's too): once no takeover is pending, every held request is submitted
   * again, without holding again, so each is held once at most.
   */
  private releaseHeld(): void {
    for (const h of this.takeoverHold.release()) this.continuations.push(() => this.submitThen(h.command, h.requestId, h.done, false));
  }

  /** Feeds the clock to the core: expiries, renewals, heartbeats, takeover checks. */
  tick(): void {
    this.replica.tick(this.options.clock.nowMs());
    this.flush();
    this.tickAtClaim();
  }

  /**
   * A backup whose takeover claim may go out before the next tick ticks once more at that moment
   * (plus 1 ms: a timer may fire a fraction early), so the claim does not wait up to tickMs.
   */
  private tickAtClaim(): void {
    const { clock, settings, timers } = this.options;
    const nowMs = clock.nowMs();
    const atMs = this.replica.takeoverClaimAtMs(nowMs);
    if (this.stopped || this.claimTick !== undefined || atMs === undefined || atMs >= nowMs + settings.tickMs) return;
    this.claimTick = timers.setTimeout(() => {
      this.claimTick = undefined;
      if (!this.stopped) this.tick();
    }, atMs - nowMs + 1);
  }

  /**
   * A message from the other lock server; `done` gets the answer to send back. With a durable
   * log an ack waits until the disk has every entry it acknowledges: the primary counts it as a
   * copy that survives a crash of both servers.
   */
  peerMessageThen(message: PeerMessage, done: (answer: PeerMessage) => void): void {
    const answer = this.replica.peerMessage(message, this.options.clock.nowMs());
    this.flush();
    if (!this.durableAcks) return done(answer);
    this.durableAcks.answer(answer, done);
  }

  /** The durable log has the copy of `copyGen` up to `index`. */
  private onDurable(copyGen: number, index: number): void {
    if (this.stopped) return;
    this.durableAcks!.onDisk(copyGen, index);
    this.replica.durable(copyGen, index, this.options.clock.nowMs());
    this.flush();
    this.durableAcks!.release();
  }

  /** Executes what the core asks for; `stepAtMs`: the clock reading the step ran at, when the caller has one. */
  private flush(stepAtMs?: number): void {
    const ready = this.replica.ready();
    if (ready.persist.length > 0) {
      this.durableAcks!.writing(ready.persist);
      this.options.durable!.sink.write(ready.persist);
    }
    for (const { clientRef, answer } of ready.answers) {
      const request = this.takeRequest(clientRef);
      if (request !== undefined) this.continuations.pushCall(this.answerRequest, request, answer);
    }
    for (const effect of ready.effects) this.onEffect(effect, stepAtMs);
    for (const { event, fields } of ready.events) {
      this.options.log.event(event, fields);
      this.options.metrics?.event(event, fields);
      // A role change may end waits: their clients must ask again (perhaps elsewhere).
      if (event === "steppedDown" || event === "backup") this.polls.endAll();
    }
    for (const outbound of ready.send) this.send(outbound);
    this.releaseHeld();
    this.continuations.run();
    for (const listener of this.stepListeners) listener();
  }

  /** Runs `listener` after every step of the core; returns its removal. */
  onStep(listener: () => void): () => void {
    this.stepListeners.add(listener);
    return () => this.stepListeners.delete(listener);
  }

  private send(outbound: Outbound): void {
    if (this.stopped) return;
    const target = outbound.kind === "peer" ? this.options.peer : this.options.arbiter;
    if (!target || target.id !== outbound.to) {
      this.replica.failed(outbound.ref, this.options.clock.nowMs());
      return;
    }
    const url = outbound.kind === "peer" ? this.peerUrl! : this.arbiterUrl!;
    const body = outbound.kind === "peer" ? outbound.message : outbound.request;
    this.options.transport.send(url, body, this.options.settings.peerTimeoutMs).then(
      (answer) => {
        if (this.stopped) return;
        // Checked against its schema before the core sees it: a malformed answer counts as no answer.
        const checked = outbound.kind === "peer"
          ? checkPeerAnswer(answer, this.options.settings)
          : check(arbiterReplySchema, answer, "arbiter reply");
        if (checked.ok) {
          this.replica.reply(outbound.ref, checked.value, this.options.clock.nowMs());
        } else {
          this.security.refused("answerMalformed", outbound.to, { message: checked.message });
          this.replica.failed(outbound.ref, this.options.clock.nowMs());
        }
        this.flush();
      },
      () => {
        if (this.stopped) return;
        this.replica.failed(outbound.ref, this.options.clock.nowMs());
        this.flush();
      },
    );
  }

  /**
   * Waits until something changes for (name, session) — a committed grant, or the wait ended —
   * for at most `timeoutMs`. Ends at once when the request is no longer queued, so the caller
   * asks again and gets a committed answer.
   */
  private waitForTurn(name: string, session: string, timeoutMs: number, done: PollEnd): void {
    if (this.queuePosition(name, session) === undefined) {
      this.continuations.push(() => done("changed"));
      return this.continuations.run();
    }
    this.polls.wait(name, session, timeoutMs, done);
  }

  /**
   * Stops the driver so that the HTTP server can close at once: every client still waiting (a
   * long-poll, a command not yet committed) is answered "not primary" now, and so is any request
   * that still arrives. The client asks the other server with the same requestId or callId, so
   * a command this server appended but did not commit is applied there once or not at all, as
   * after a crash; nothing is half-applied here, since the process applies nothing after this.
   */
  stop(): void {
    this.stopped = true;
    if (this.claimTick !== undefined) this.options.timers.clearTimeout(this.claimTick);
    this.parkSubmitting();
    const waiting = [...this.answers.values()];
    this.answers.clear();
    for (const { done } of waiting) this.continuations.push(() => done(this.stoppingAnswer()));
    for (const { done } of this.takeoverHold.takeAll()) this.continuations.push(() => done(this.stoppingAnswer()));
    // Acks still waiting for the disk claim nothing now, so no peer request hangs on a stopped server.
    this.durableAcks?.stop();
    this.polls.endAll();
    this.continuations.run();
  }

  /** The refusal of a stopping server: "not primary", without a hint (the peer may take over). */
  private stoppingAnswer(): ClientAnswer {
    return { ok: false, code: "not_primary", message: `${this.options.nodeId} is stopping`, epoch: this.replica.epoch, primary: null };
  }

  get table(): LockTable | undefined {
    return this.replica.machine?.table;
  }

  /** 1-based place in the queue, or undefined when not queued. */
  queuePosition(name: string, session: string): number | undefined {
    const index = this.table?.locks.get(name)?.queue.findIndex((w) => w.session === session) ?? -1;
    return index >= 0 ? index + 1 : undefined;
  }

  private onEffect(effect: Effect, stepAtMs: number | undefined): void {
    this.options.metrics?.effect(effect, stepAtMs);
    switch (effect.type) {
      case "granted":
        // Per operation: debug only (cluster/log.ts), so the default level writes nothing per lock
        // and, asked first, builds nothing either.
        if (this.options.log.wants?.("debug") !== false) this.options.log.event("granted", { ...effect.grant, epoch: this.replica.epoch }, "debug");
        this.polls.wake(effect.grant.name, effect.grant.session, effect.grant);
        return;
      case "waitEnded":
        this.polls.wake(effect.name, effect.session);
        return;
      case "sessionExpired":
        this.options.log.event("sessionExpired", { session: effect.session, released: effect.released });
        return;
      case "released": {
        if (this.options.log.wants?.("debug") === false) return;
        const { type: _type, ...fields } = effect;
        this.options.log.event("released", fields, "debug");
        return;
      }
      default:
        assertNever(effect, "effect");
    }
  }

  /** `status` without the sessions and locks: their counts instead (cheap at any size). */
  summary(): StatusSummary {
    return statusSummary(this.replica);
  }

  /** One lock as `view` shows it (undefined: nobody holds, waits for or delays it), without copying the table. */
  lockView(name: string): LockView | undefined {
    return lockView(this.replica, this.options.clock, name);
  }

  /** The state for `status` and `GET /v1/locks`, with ages instead of clock readings. */
  view(): StatusView {
    return statusView(this.replica, this.options.clock);
  }
}
