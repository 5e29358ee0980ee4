/**
 * A simulated single lock server: the real LockTable core (lib/core/lock_table.ts) behind a
 * driver that mirrors the single-server cluster/lock_service.ts and cluster/lock_api.ts of
 * commit da73b91: a ticker every settings.tickMs, the node's virtual clock, and long-polls
 * parked here and answered on the table's effects or after min(waitMs, longPollMaxMs), as
 * LockService.waitForTurn does with setTimeout in the binary. (The service itself is not
 * imported: its long-poll needs real timers, and issue 5 turns it into the primary's driver,
 * which comes to the simulator as its own node kind.)
 *
 * What persists across a crash: nothing, as in cluster/lock_server.ts of da73b91 (a new
 * session-id prefix per incarnation, tokens above the wall clock × 1000).
 */
import { type Command, type Effect, LockTable, type Output } from "../../../lib/core/lock_table.ts";
import type { Settings } from "../../../lib/settings.ts";
import { Actor } from "../actor.ts";
import type { Envelope } from "../network.ts";
import type { Sim } from "../simulator.ts";
import type { NodeClock } from "../time.ts";
import { answerBody, type EnterAnswer, type LockReply, type LockRequest } from "./messages.ts";

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
  table: LockTable | undefined;
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
    this.table = new LockTable({
      limits: this.settings,
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
    this.table = undefined;
    this.polls.clear();
    this.pollCount = 0;
  }

  protected onRestart(): void {
    this.start();
  }

  /** Applies one command at the node's time, lets the checkers look, answers woken polls. */
  private submit(command: Command): Output {
    const before = this.observer.before(this);
    const output = this.table!.apply(command, this.clock.nowMs());
    this.observer.after(this, before, command, output);
    const result = output.result;
    if (result.ok && result.type === "granted" && !output.effects.some((e) => e.type === "granted" && e.grant.token === result.grant.token)) {
      this.sim.log(this.id, "+", `granted ${brief({ ...result.grant })}`);
    }
    for (const effect of output.effects) this.onEffect(effect);
    return output;
  }

  private onEffect(effect: Effect): void {
    const { type, ...fields } = effect;
    if (type !== "granted" && type !== "waitEnded") this.sim.log(this.id, "-", `${type} ${brief(fields)}`);
    if (effect.type === "granted") {
      this.sim.log(this.id, "+", `granted ${brief({ ...effect.grant })} (queued)`);
      this.wake(effect.grant.name, effect.grant.session);
    } else if (effect.type === "waitEnded") {
      this.wake(effect.name, effect.session);
    }
  }

  private holderToken(name: string, session: string): number | undefined {
    return this.table!.locks.get(name)?.holders.find((h) => h.session === session)?.token;
  }

  private queuePosition(name: string, session: string): number | undefined {
    const index = this.table!.locks.get(name)?.queue.findIndex((w) => w.session === session) ?? -1;
    return index >= 0 ? index + 1 : undefined;
  }

  protected receive(envelope: Envelope): void {
    const request = envelope.payload as LockRequest;
    const result = this.submitRequest(request);
    if (!result.ok) {
      this.reply(envelope.from, { type: "reply", reqId: request.reqId, ok: false, code: result.error.code, message: result.error.message });
      return;
    }
    if (result.type === "waiting" && request.type === "enter") return this.park(envelope.from, request);
    this.reply(envelope.from, { type: "reply", reqId: request.reqId, ok: true, body: answerBody(request, result) });
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
    if (poll.answered || !this.table) return;
    poll.answered = true;
    const key = pollKey(poll.name, poll.session);
    const left = (this.polls.get(key) ?? []).filter((p) => p !== poll);
    if (left.length > 0) this.polls.set(key, left);
    else this.polls.delete(key);
    this.pollCount = Math.max(0, this.pollCount - 1);
    const token = this.holderToken(poll.name, poll.session);
    let body: EnterAnswer;
    if (token !== undefined) {
      body = { granted: true, name: poll.name, session: poll.session, token, mode: poll.mode };
    } else {
      const position = this.queuePosition(poll.name, poll.session);
      if (position === undefined && !this.table.sessions.has(poll.session)) {
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
