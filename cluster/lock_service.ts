/**
 * The driver around a lock server's pure core (lib/core/lock_replica.ts): it feeds the core the
 * monotonic clock, client requests and peer messages, executes what `ready()` asks (sends to the
 * peer and the arbiter, answers to clients), turns committed effects into wake-ups of
 * long-polling requests and log lines, and presents the state for status. No lock or
 * replication logic lives here.
 */
import { assertNever } from "../lib/core/assert.ts";
import { LockTable, type Command, type Effect } from "../lib/core/lock_table.ts";
import { type ClientAnswer, LockReplica, type Outbound, type PeerMessage, type ReplicaStatus } from "../lib/core/lock_replica.ts";
import type { Settings } from "../lib/settings.ts";
import type { Clock } from "./clock.ts";
import type { Logger } from "./log.ts";
import type { PeerTransport } from "./peer_transport.ts";

/** How a long-poll ended: something changed for the request, or the poll ran out first. */
export type WaitOutcome = "changed" | "timeout";

export interface LockServiceOptions {
  settings: Settings;
  clock: Clock;
  log: Logger;
  nodeId: string;
  /** The other lock server and the arbiter, with their base URLs; null when absent. */
  peer: { id: string; url: string } | null;
  arbiter: { id: string; url: string } | null;
  transport: PeerTransport;
  /** Prefix of session ids (unique per server incarnation). */
  sessionIdPrefix: string;
  /** Tokens of a fresh table start above this (see LockTableOptions.tokenFloor). */
  tokenFloor: number;
}

export class LockService {
  readonly replica: LockReplica;
  private readonly answers = new Map<number, (answer: ClientAnswer) => void>();
  private nextClientRef = 1;
  /** Long-polls waiting for a change to their request, keyed by lock name and session. */
  private readonly polls = new Map<string, Set<(outcome: WaitOutcome) => void>>();
  private stopped = false;

  constructor(private readonly options: LockServiceOptions) {
    const { settings } = options;
    this.replica = new LockReplica({
      nodeId: options.nodeId,
      peerId: options.peer?.id ?? null,
      arbiterId: options.arbiter?.id ?? null,
      settings,
      newTable: () => new LockTable({ limits: settings, sessionIdPrefix: options.sessionIdPrefix, tokenFloor: options.tokenFloor }),
    }, options.clock.nowMs());
    this.flush();
  }

  /** Submits one client command; resolves once it is committed (or refused). */
  submit(command: Command, requestId?: string): Promise<ClientAnswer> {
    const clientRef = this.nextClientRef++;
    const answered = new Promise<ClientAnswer>((resolve) => this.answers.set(clientRef, resolve));
    this.replica.clientRequest(clientRef, command, requestId, this.options.clock.nowMs());
    this.flush();
    return answered;
  }

  /** Feeds the clock to the core: expiries, renewals, heartbeats, takeover checks. */
  tick(): void {
    this.replica.tick(this.options.clock.nowMs());
    this.flush();
  }

  /** A message from the other lock server; returns the answer to send back. */
  peerMessage(message: PeerMessage): PeerMessage {
    const answer = this.replica.peerMessage(message, this.options.clock.nowMs());
    this.flush();
    return answer;
  }

  /** Executes what the core asks for. */
  private flush(): void {
    const ready = this.replica.ready();
    for (const { clientRef, answer } of ready.answers) {
      const resolve = this.answers.get(clientRef);
      this.answers.delete(clientRef);
      resolve?.(answer);
    }
    for (const effect of ready.effects) this.onEffect(effect);
    for (const { event, fields } of ready.events) {
      this.options.log.event(event, fields);
      // A role change may end waits: their clients must ask again (perhaps elsewhere).
      if (event === "steppedDown" || event === "backup") this.endAllPolls();
    }
    for (const outbound of ready.send) this.send(outbound);
  }

  private send(outbound: Outbound): void {
    if (this.stopped) return;
    const target = outbound.kind === "peer" ? this.options.peer : this.options.arbiter;
    if (!target || target.id !== outbound.to) {
      this.replica.failed(outbound.ref, this.options.clock.nowMs());
      return;
    }
    const path = outbound.kind === "peer" ? "/v1/peer" : "/v1/arbiter";
    const body = outbound.kind === "peer" ? outbound.message : outbound.request;
    this.options.transport.send(target.url + path, body, this.options.settings.peerTimeoutMs).then(
      (answer) => {
        if (this.stopped) return;
        this.replica.reply(outbound.ref, answer as never, this.options.clock.nowMs());
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
   * for at most `timeoutMs`. Returns at once when the request is no longer queued, so the
   * caller asks again and gets a committed answer.
   */
  waitForTurn(name: string, session: string, timeoutMs: number): Promise<WaitOutcome> {
    if (this.queuePosition(name, session) === undefined) return Promise.resolve("changed");
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

  /** Wakes every long-poll (shutdown, role change). */
  endAllPolls(): void {
    for (const waiters of [...this.polls.values()]) for (const finish of [...waiters]) finish("changed");
  }

  stop(): void {
    this.stopped = true;
    this.endAllPolls();
  }

  get table(): LockTable | undefined {
    return this.replica.machine?.table;
  }

  /** 1-based place in the queue, or undefined when not queued. */
  queuePosition(name: string, session: string): number | undefined {
    const index = this.table?.locks.get(name)?.queue.findIndex((w) => w.session === session) ?? -1;
    return index >= 0 ? index + 1 : undefined;
  }

  private onEffect(effect: Effect): void {
    switch (effect.type) {
      case "granted":
        this.options.log.event("granted", { ...effect.grant, epoch: this.replica.epoch });
        this.wake(effect.grant.name, effect.grant.session);
        return;
      case "waitEnded":
        this.wake(effect.name, effect.session);
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

  private wake(name: string, session: string): void {
    const waiters = this.polls.get(pollKey(name, session));
    if (!waiters) return;
    for (const finish of [...waiters]) finish("changed");
  }

  /** The state for `status` and `GET /v1/locks`, with ages instead of clock readings. */
  view(): StatusView {
    const server = this.replica.status();
    const table = this.table;
    if (!table) return { server, lastToken: 0, sessions: [], locks: [] };
    // The table runs on the primary's time base; ages are differences on that base. A backup
    // cannot read the primary's clock: it shows ages as of the last change it applied.
    const nowMs = server.role === "primary"
      ? Math.max(table.clockMs, this.options.clock.nowMs() + this.replica.timeOffset)
      : table.clockMs;
    const snapshot = table.snapshot();
    const heldBy = new Map<string, string[]>();
    for (const lock of snapshot.locks) {
      for (const entry of [...lock.holders, ...lock.queue]) {
        heldBy.set(entry.session, [...(heldBy.get(entry.session) ?? []), lock.name]);
      }
    }
    return {
      server,
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
  server: ReplicaStatus;
  lastToken: number;
  sessions: Array<{ session: string; ttlMs: number; ageMs: number; expiresInMs: number; locks: string[] }>;
  locks: LockView[];
}
