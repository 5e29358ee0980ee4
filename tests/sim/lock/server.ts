/**
 * A simulated lock server: the real LockService (cluster/lock_service.ts, which wraps the real
 * LockTable) behind a simulated HTTP layer that mirrors cluster/lock_api.ts, a simulated ticker
 * (settings.tickMs) and the node's virtual clock. Long-polls are parked here and answered on
 * the table's effects or after min(waitMs, longPollMaxMs), as LockService.waitForTurn does
 * with setTimeout in the binary.
 *
 * What persists across a crash: nothing, as in cluster/lock_server.ts today (a new session-id
 * prefix per incarnation, tokens above the wall clock × 1000).
 */
import type { Command, Output } from "../../../lib/core/lock_table.ts";
import type { Settings } from "../../../lib/settings.ts";
import { LockService } from "../../../cluster/lock_service.ts";
import type { Logger } from "../../../cluster/log.ts";
import { Actor } from "../actor.ts";
import type { Envelope } from "../network.ts";
import type { Sim } from "../simulator.ts";
import type { NodeClock } from "../time.ts";
import type { EnterAnswer, LockReply, LockRequest } from "./messages.ts";

/** What the lock kind's checkers see of every command the table applies. */
export interface LockServerObserver {
  /** Before `command` is applied: returns what the check after needs of the old state. */
  before(server: LockServerActor): unknown;
  after(server: LockServerActor, before: unknown, command: Command, output: Output): void;
}

interface Poll {
  from: string;
  reqId: number;
  name: string;
  session: string;
  mode: "exclusive" | "shared";
  answered: boolean;
}

/** Parked long-polls beyond this are answered at once (a server has a connection limit too). */
const POLLS_MAX = 10_000;

export class LockServerActor extends Actor {
  service: LockService | undefined;
  private readonly polls = new Map<string, Poll[]>();
  private pollCount = 0;

  constructor(
    sim: Sim,
    id: string,
    clock: NodeClock,
    private readonly settings: Settings,
    private readonly observer: LockServerObserver,
    private readonly clientIds: () => string[],
  ) {
    super(sim, id, "lock-server", clock);
    this.start();
  }

  peers(): string[] {
    return this.clientIds();
  }

  private start(): void {
    const log: Logger = {
      event: (event, fields = {}) => this.sim.log(this.id, event === "granted" ? "+" : "-", `${event} ${brief(fields)}`),
    };
    this.service = new LockService({
      settings: this.settings,
      clock: this.clock,
      log,
      sessionIdPrefix: `${this.id}-${this.incarnation}-`,
      tokenFloor: this.clock.wallMs() * 1000,
    });
    this.scheduleTick();
  }

  private scheduleTick(): void {
    this.after(this.settings.tickMs, () => {
      this.submit({ type: "tick" });
      this.scheduleTick();
    });
  }

  protected onCrash(): void {
    this.service = undefined;
    this.polls.clear();
    this.pollCount = 0;
  }

  protected onRestart(): void {
    this.start();
  }

  /** Applies one command through the service, lets the checkers look, answers woken polls. */
  private submit(command: Command): Output {
    const service = this.service!;
    const before = this.observer.before(this);
    const output = service.submit(command);
    this.observer.after(this, before, command, output);
    for (const effect of output.effects) {
      if (effect.type === "granted") this.wake(effect.grant.name, effect.grant.session);
      else if (effect.type === "waitEnded") this.wake(effect.name, effect.session);
    }
    return output;
  }

  protected receive(envelope: Envelope): void {
    const request = envelope.payload as LockRequest;
    const reply = (body: Record<string, unknown>) => this.reply(envelope.from, { type: "reply", reqId: request.reqId, ok: true, body });
    const result = this.submitRequest(request);
    if (!result.ok) {
      this.reply(envelope.from, { type: "reply", reqId: request.reqId, ok: false, code: result.error.code, message: result.error.message });
      return;
    }
    switch (result.type) {
      case "session":
        return reply({ session: result.session, ttlMs: result.ttlMs });
      case "closed":
        return reply({ session: result.session, released: result.released });
      case "left":
        return reply({ left: true, name: result.name, wasHolder: result.wasHolder });
      case "granted":
        return reply({ granted: true, ...result.grant });
      case "notGranted":
        return reply({ granted: false, waiting: false, name: result.name, position: result.position });
      case "waiting":
        if (request.type === "enter") return this.park(envelope.from, request);
        throw new Error(`waiting answer to ${request.type}`);
      case "ticked":
        throw new Error("tick answer to a request");
    }
  }

  private submitRequest(request: LockRequest): Output["result"] {
    switch (request.type) {
      case "open":
        return this.submit({ type: "openSession", ttlMs: request.ttlMs }).result;
      case "keepalive":
        return this.submit({ type: "keepAlive", session: request.session }).result;
      case "close":
        return this.submit({ type: "closeSession", session: request.session }).result;
      case "enter": {
        const { name, session, mode, waitMs, lockDelayMs } = request;
        return this.submit({ type: "enter", name, session, mode, waitMs, lockDelayMs }).result;
      }
      case "leave":
        return this.submit({ type: "leave", name: request.name, session: request.session, token: request.token }).result;
    }
  }

  /** The long-poll of lock_api's enter: answer on a wake-up or after min(waitMs, longPollMaxMs). */
  private park(from: string, request: Extract<LockRequest, { type: "enter" }>): void {
    const poll: Poll = { from, reqId: request.reqId, name: request.name, session: request.session, mode: request.mode, answered: false };
    if (this.pollCount >= POLLS_MAX) return this.answer(poll);
    const key = pollKey(poll.name, poll.session);
    this.polls.set(key, [...(this.polls.get(key) ?? []), poll]);
    this.pollCount += 1;
    this.after(Math.min(request.waitMs, this.settings.longPollMaxMs), () => this.answer(poll));
  }

  private wake(name: string, session: string): void {
    const key = pollKey(name, session);
    const polls = this.polls.get(key);
    if (!polls) return;
    for (const poll of polls) this.answer(poll);
  }

  /** What lock_api answers after waitForTurn: the grant, the place, or why the wait ended. */
  private answer(poll: Poll): void {
    if (poll.answered || !this.service) return;
    poll.answered = true;
    const key = pollKey(poll.name, poll.session);
    const left = (this.polls.get(key) ?? []).filter((p) => p !== poll);
    if (left.length > 0) this.polls.set(key, left);
    else this.polls.delete(key);
    this.pollCount = Math.max(0, this.pollCount - 1);
    const service = this.service;
    const token = service.holderToken(poll.name, poll.session);
    let body: EnterAnswer;
    if (token !== undefined) {
      body = { granted: true, name: poll.name, session: poll.session, token, mode: poll.mode };
    } else {
      const position = service.queuePosition(poll.name, poll.session);
      if (position === undefined && !service.table.sessions.has(poll.session)) {
        const message = `session ${poll.session} expired while waiting`;
        return this.reply(poll.from, { type: "reply", reqId: poll.reqId, ok: false, code: "session_not_found", message });
      }
      body = { granted: false, waiting: position !== undefined, name: poll.name, position: position ?? 0 };
    }
    this.reply(poll.from, { type: "reply", reqId: poll.reqId, ok: true, body });
  }

  private reply(to: string, reply: LockReply): void {
    this.sim.network.send(this, to, reply, `reply ${reply.reqId}`);
  }
}

function pollKey(name: string, session: string): string {
  return `${name}\u0000${session}`;
}

/** `name L token 17 session p1-0-4`: the log fields on one short line. */
export function brief(fields: Record<string, unknown>): string {
  return Object.entries(fields).map(([k, v]) => `${k}=${Array.isArray(v) ? v.join("|") : String(v)}`).join(" ");
}
