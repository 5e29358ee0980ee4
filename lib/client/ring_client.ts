/**
 * The TypeScript client of a ring node's HTTP API (web-standard fetch; Deno, Bun, Node).
 *
 *   const ring = connectRing({ server: "http://127.0.0.1:7201" });
 *   await using section = await ring.lock({ waitMs: 10_000 });
 *   const n = Number((await ring.get("counter", { fence: section.token }))?.value ?? "0");
 *   await section.put("counter", String(n + 1));      // returns once every node applied it
 *
 * A section lives on the node the client talks to, while the token rests there. Its lease is
 * fixed at the grant; `signal` aborts when the lease runs out (measured from when the enter
 * request whose answer carried the grant was sent, so it fires no later than the server revokes),
 * or when the node reports the section ended (a watch long-poll), whichever comes first.
 */
import type { SuspicionStatus } from "../core/ring/repair.ts";
import type { RingStatus as CoreRingStatus } from "../core/ring_node.ts";
import { MutexdError } from "../wire/errors.ts";

export interface RingConnectOptions {
  /** Base URL of the ring node (sections are local to a node). */
  server: string;
  /** One HTTP request gives up after this (long-polls get their wait on top). */
  requestTimeoutMs?: number;
}

export interface RingEnterOptions {
  /** How long to wait for the token; 0 tries (waits only for its next visit, if nobody is ahead). */
  waitMs?: number;
  /** Section lease; the node's ringLeaseMs when omitted. */
  leaseMs?: number;
}

export type RingEnterResult =
  | { granted: true; fence: number; leaseMs: number; epoch: number; ticket: string }
  | { granted: false; reason: "taken" | "deadline" | "withdrawn" };

export interface RingGetResult {
  key: string;
  value: string;
  commit: number;
}

/** What `GET /v1/ring/status` answers: the core's view plus what the driver adds. */
export interface RingStatus extends CoreRingStatus {
  linkQueue: number;
  /** Ring repair's suspicions (docs/ring.md, "Repair"): hints, not membership. */
  suspicions: SuspicionStatus[];
  successorUrl?: string;
  predecessorUrl?: string;
}

/** Waits longer than this are asked for in several enters (the node keeps the place by ticket). */
const WAIT_CHUNK_MS = 60_000;
/** Slack for a long-poll beyond the wait it asked for. */
const LONG_POLL_SLACK_MS = 10_000;
/** A section watch asks to be held this long per request. */
const WATCH_POLL_MS = 5_000;

function nowMs(): number {
  return performance.now();
}

export class RingClient {
  readonly server: string;
  private readonly requestTimeoutMs: number;

  constructor(options: RingConnectOptions) {
    this.server = options.server.replace(/\/$/, "");
    this.requestTimeoutMs = options.requestTimeoutMs ?? 3_000;
  }

  async request<T>(method: string, path: string, body?: unknown, extraTimeoutMs = 0, cancel?: AbortSignal): Promise<T> {
    const timeout = AbortSignal.timeout(this.requestTimeoutMs + extraTimeoutMs);
    let response: Response;
    try {
      response = await fetch(this.server + path, {
        method,
        headers: body === undefined ? undefined : { "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: cancel ? AbortSignal.any([timeout, cancel]) : timeout,
      });
    } catch (error) {
      throw new MutexdError("unreachable", `${this.server}: ${(error as Error).message}`);
    }
    const text = await response.text();
    let data: unknown;
    try {
      data = text ? JSON.parse(text) : {};
    } catch {
      throw new MutexdError("internal", `${this.server}${path}: answer is not JSON (status ${response.status})`, response.status);
    }
    if (response.ok) return data as T;
    const error = (data as { error?: { code?: string; message?: string } }).error;
    throw new MutexdError((error?.code ?? "internal") as MutexdError["code"], error?.message ?? `status ${response.status}`, response.status);
  }

  /** mutex_enter on this node: waits up to `waitMs` for the token and a grant. */
  async enter(options: RingEnterOptions = {}): Promise<RingEnterResult> {
    return (await this.enterTimed(options)).result;
  }

  /**
   * `enter`, plus when the request that got the answer was sent (performance.now scale). A
   * grant's `leaseMs` is what is left of the lease when the node answers, and the node answers
   * after that request reached it, so that send time plus `leaseMs` is never later than the
   * node's lease end. Earlier requests of a long wait (long-polls that ended "waiting") do not
   * count: the lease starts at the grant, not at the first request.
   */
  async enterTimed(options: RingEnterOptions = {}): Promise<{ result: RingEnterResult; sentAtMs: number }> {
    const waitMs = options.waitMs ?? 0;
    const deadlineMs = nowMs() + waitMs;
    let ticket: string | undefined;
    // Each round is one long-poll; the node answers within longPollMaxMs, so rounds are bounded
    // by the wait (plus the token's next visit for a try).
    for (let round = 0; round < 1_000_000; round++) {
      const remainingMs = Math.max(0, Math.round(deadlineMs - nowMs()));
      if (ticket !== undefined && remainingMs === 0 && waitMs > 0) {
        const sentAtMs = nowMs();
        await this.request("POST", "/v1/ring/leave", { ticket }).catch(() => {});
        return { result: { granted: false, reason: "deadline" }, sentAtMs };
      }
      const chunkMs = Math.min(remainingMs, WAIT_CHUNK_MS);
      const sentAtMs = nowMs();
      const answer = await this.request<
        | { granted: true; fence: number; leaseMs: number; epoch: number; ticket: string }
        | { granted: false; waiting: true; ticket: string; position: number }
        | { granted: false; waiting: false; reason: "taken" | "deadline" | "withdrawn" }
      >(
        "POST",
        "/v1/ring/enter",
        { waitMs: chunkMs, ...(options.leaseMs === undefined ? {} : { leaseMs: options.leaseMs }), ...(ticket ? { ticket } : {}) },
        Math.min(Math.max(chunkMs, 1), WAIT_CHUNK_MS) + LONG_POLL_SLACK_MS,
      );
      if (answer.granted) return { result: answer, sentAtMs };
      if (!answer.waiting) return { result: { granted: false, reason: answer.reason }, sentAtMs };
      ticket = answer.ticket;
    }
    throw new MutexdError("internal", "enter: too many rounds");
  }

  /** mutex_leave: ends the section `fence` (or withdraws the wait of `ticket`). */
  async leave(target: { fence: number } | { ticket: string }): Promise<void> {
    await this.request("POST", "/v1/ring/leave", target);
  }

  /** Writes inside section `fence`; resolves once the write came back around the ring. */
  async put(fence: number, key: string, value: string): Promise<number> {
    const answer = await this.request<{ wseq: number }>("POST", "/v1/ring/put", { fence, key, value });
    return answer.wseq;
  }

  async delete(fence: number, key: string): Promise<number> {
    const answer = await this.request<{ wseq: number }>("POST", "/v1/ring/delete", { fence, key });
    return answer.wseq;
  }

  /** The committed value of `key` (or with writes still travelling, `dirty`); undefined if none. */
  async get(key: string, options: { dirty?: boolean } = {}): Promise<RingGetResult | undefined> {
    try {
      return await this.request<RingGetResult>("GET", `/v1/ring/get?key=${encodeURIComponent(key)}${options.dirty ? "&dirty=1" : ""}`);
    } catch (error) {
      if (error instanceof MutexdError && error.code === "key_not_found") return undefined;
      throw error;
    }
  }

  async keys(options: { dirty?: boolean } = {}): Promise<string[]> {
    return (await this.request<{ keys: string[] }>("GET", `/v1/ring/keys${options.dirty ? "?dirty=1" : ""}`)).keys;
  }

  status(): Promise<RingStatus> {
    return this.request<RingStatus>("GET", "/v1/ring/status");
  }

  /** The node's write log from `from` on (at most one batch). */
  log(from = 1): Promise<{ commit: number; entries: Array<{ wseq: number; epoch: number; author: string; op: unknown }> }> {
    return this.request("GET", `/v1/ring/log?from=${from}`);
  }

  /** Whether section `fence` still runs; waits up to `waitMs` for it to end. */
  async sectionActive(fence: number, waitMs = 0, cancel?: AbortSignal): Promise<boolean> {
    const path = `/v1/ring/section/${fence}?waitMs=${waitMs}`;
    const answer = await this.request<{ active: boolean }>("GET", path, undefined, waitMs, cancel);
    return answer.active;
  }

  /**
   * Enters and returns a handle; throws RingNotAcquiredError (code "not_acquired") when the wait
   * ran out or the try found the section taken.
   */
  async lock(options: RingEnterOptions = {}): Promise<RingLock> {
    const { result, sentAtMs } = await this.enterTimed(options);
    if (!result.granted) throw new RingNotAcquiredError(result.reason);
    return new RingLock(this, result.fence, result.epoch, sentAtMs + result.leaseMs);
  }
}

export class RingNotAcquiredError extends MutexdError {
  constructor(readonly reason: string) {
    super("not_acquired", `ring section not acquired (${reason})`);
    this.name = "RingNotAcquiredError";
  }
}

/** A held ring section. `await using` leaves it; `signal` aborts when it is lost or its lease ends. */
export class RingLock {
  private readonly controller = new AbortController();
  /** Ends the watch long-poll at release or loss, so nothing outlives the section. */
  private readonly watchCancel = new AbortController();
  private readonly leaseTimer: ReturnType<typeof setTimeout>;
  private done = false;

  constructor(
    readonly client: RingClient,
    /** The fencing token: a decimal integer above every earlier one, also across token regenerations. */
    readonly token: number,
    readonly epoch: number,
    /** Local end of the lease (performance.now scale), never later than the node's. */
    readonly leaseEndsAtMs: number,
  ) {
    this.leaseTimer = setTimeout(() => this.lose("the lease ended"), Math.max(0, leaseEndsAtMs - nowMs()));
    void this.watch();
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get lost(): boolean {
    return this.controller.signal.aborted;
  }

  /** Milliseconds left of the lease by the local clock. */
  get remainingMs(): number {
    return Math.max(0, this.leaseEndsAtMs - nowMs());
  }

  put(key: string, value: string): Promise<number> {
    return this.guard(() => this.client.put(this.token, key, value));
  }

  delete(key: string): Promise<number> {
    return this.guard(() => this.client.delete(this.token, key));
  }

  /** Reads the committed value at the holder: inside the section this is linearizable. */
  async get(key: string): Promise<string | undefined> {
    this.signal.throwIfAborted();
    return (await this.client.get(key))?.value;
  }

  /** Leaves the section. Safe to call twice; a lost section needs no leave. */
  async release(): Promise<void> {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.leaseTimer);
    this.watchCancel.abort();
    // Leave also after a loss: the client's lease ends (by its own clock) before the node's, and
    // until the node ends the section the ring waits. A leave of an ended section is harmless.
    try {
      await this.client.leave({ fence: this.token });
    } catch (error) {
      const ended = error instanceof MutexdError && error.code === "not_in_section";
      if (!ended && !this.lost) throw error;
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.release().catch(() => {});
  }

  private async guard<T>(body: () => Promise<T>): Promise<T> {
    this.signal.throwIfAborted();
    try {
      return await body();
    } catch (error) {
      if (error instanceof MutexdError && error.code === "not_in_section") this.lose("the node ended the section");
      throw error;
    }
  }

  /** Long-polls the node for the end of the section (lease, token lost, or a leave elsewhere). */
  private async watch(): Promise<void> {
    // Bounded by the lease: each round waits up to WATCH_POLL_MS and the lease timer ends it.
    while (!this.done && !this.lost) {
      try {
        const waitMs = Math.min(WATCH_POLL_MS, Math.max(1, Math.round(this.remainingMs)));
        const active = await this.client.sectionActive(this.token, waitMs, this.watchCancel.signal);
        if (!active && !this.done) this.lose("the node ended the section");
      } catch {
        if (this.done || this.lost) return;
        // Unreachable node: the lease timer still bounds the section; pause before asking again.
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }
  }

  private lose(reason: string): void {
    if (this.lost) return;
    clearTimeout(this.leaseTimer);
    this.watchCancel.abort();
    this.controller.abort(new MutexdError("lock_lost", `ring section ${this.token} lost: ${reason}`));
  }
}

export function connectRing(options: RingConnectOptions): RingClient {
  return new RingClient(options);
}
