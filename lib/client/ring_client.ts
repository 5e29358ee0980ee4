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
 *
 * Transport, clock and timers are options (the runtime's by default), and the client keeps the
 * port rule of cluster/timers.ts: what `fetch` returns is continued with `.then` only, never
 * awaited. So the simulator (tests/sim/ring/client.ts) runs this client as it is, with a fetch
 * whose answers are its own promises (SimFuture), inside its synchronous event loop; with an
 * injected fetch, every method returns what that fetch's `.then` returns.
 */
import type { SuspicionStatus } from "../core/ring/repair.ts";
import type { RingStatus as CoreRingStatus } from "../core/ring/ring_node.ts";
import { MutexdError } from "../wire/errors.ts";
import { fetchTrusting, type TlsOptions } from "./tls.ts";
import { answerFormatError, checkedToken, type ClockPort, failureText, type HttpResponse, realClock, realTimers, requestHeaders, type TimersPort, WAIT_CHUNK_MS } from "./http.ts";

export interface RingConnectOptions {
  /** Base URL of the ring node (sections are local to a node). */
  server: string;
  /** One HTTP request gives up after this (long-polls get their wait on top). */
  requestTimeoutMs?: number;
  /** A node on HTTPS with a private CA: its certificate(s) as PEM text (ignored when `fetch` is given). */
  tls?: TlsOptions;
  /** The transport; the runtime's `fetch` when omitted. */
  fetch?: RingFetch;
  /** Monotonic milliseconds for leases and deadlines; `performance.now` when omitted. */
  clock?: RingClientClock;
  /** Request timeouts, the lease timer and retry pauses; the runtime's timers when omitted. */
  timers?: RingClientTimers;
  /**
   * The bearer token (a `[[tokens]]` secret's value) when the cluster requires client tokens;
   * the client reads no files. 401 `unauthorized` and 403 `forbidden` reject the call.
   */
  token?: string;
}

/** What the client reads of an answer (a `Response` has it): the ports of lib/client/http.ts. */
export type HttpAnswer = HttpResponse;

/** The transport: `fetch`, or anything that answers like it (its `signal` aborts the request). */
export type RingFetch = (url: string, init: RequestInit) => PromiseLike<HttpAnswer>;

/** What the client reads the time from (cluster/clock.ts `Clock` has this shape). */
export type RingClientClock = ClockPort;

/** The timers the client uses (cluster/timers.ts `Timers` has this shape). */
export type RingClientTimers = TimersPort;

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
  /** The node's mutexd version (package.json's). */
  version?: string;
  /** The wire and disk format versions of its build (`1.0`; docs/deploy.md, "Upgrades and format versions"). */
  formats?: { wire: string; disk: string };
  linkQueue: number;
  /** This node's last hand-offs (up to 256), pass to the successor's acknowledgement, ms (null: none yet). */
  hopMs: { p50: number | null; p99: number | null; samples: number; count: number };
  /** Ring repair's suspicions (docs/ring.md, "Repair"): hints, not membership. */
  suspicions: SuspicionStatus[];
  /**
   * The token lease (docs/ring.md, "The token lease"): quorum "lost" = the last renewal got no
   * majority, so this node grants nothing (a minority). Times are on the node's clock.
   */
  lease: { quorum: "ok" | "lost"; reason: string; validUntilMs: number | null; heldUntilMs: number };
  /**
   * The view change (docs/ring-view.md): the ballot promised, the installed view (epoch, members,
   * regenerator), whether this node is a member, and the last view change seen here with its timing.
   */
  view: {
    promised: { epoch: number; coordinator: string };
    view: { epoch: number; coordinator: string; members: string[]; regenerator: string; grantWaitMs: number } | null;
    member: boolean;
    quorum: "ok" | "lost";
    coordinating: { epoch: number; coordinator: string } | null;
    wanted: string | null;
    /** Until when (node's clock) a section its holder announced in this view may run: no token-loss probe before (null: none). */
    sectionSeenUntilMs?: number | null;
    lastChange: { reason: string; wantedAtMs: number; installedAtMs: number | null; epoch: number | null } | null;
  };
  successorUrl?: string;
  predecessorUrl?: string;
}

/** Slack for a long-poll beyond the wait it asked for. */
const LONG_POLL_SLACK_MS = 10_000;
/** A section watch asks to be held this long per request. */
const WATCH_POLL_MS = 5_000;
/** A section watch whose node did not answer asks again after this. */
const WATCH_RETRY_MS = 200;
/** Enter rounds (long-polls) of one lock() at most: each takes up to longPollMaxMs, so far more than a wait needs. */
const ENTER_ROUNDS_MAX = 1_000_000;


type EnterAnswer =
  | { granted: true; fence: number; leaseMs: number; epoch: number; ticket: string }
  | { granted: false; waiting: true; ticket: string; position: number }
  | { granted: false; waiting: false; reason: "taken" | "deadline" | "withdrawn" };

type EnterTimed = { result: RingEnterResult; sentAtMs: number };

export class RingClient {
  readonly server: string;
  readonly clock: RingClientClock;
  readonly timers: RingClientTimers;
  private readonly requestTimeoutMs: number;
  private readonly fetch: RingFetch;
  private readonly token: string | undefined;

  constructor(options: RingConnectOptions) {
    this.server = options.server.replace(/\/$/, "");
    this.requestTimeoutMs = options.requestTimeoutMs ?? 3_000;
    this.fetch = options.fetch ?? (options.tls ? fetchTrusting(options.tls.ca) : (url, init) => fetch(url, init));
    this.clock = options.clock ?? realClock;
    this.timers = options.timers ?? realTimers;
    this.token = checkedToken(options.token);
  }

  /**
   * One HTTP request: the answer's JSON, or a MutexdError with the node's code ("unreachable"
   * when no answer came, e.g. after `requestTimeoutMs + extraTimeoutMs` on the client's timers).
   */
  request<T>(method: string, path: string, body?: unknown, extraTimeoutMs = 0, cancel?: AbortSignal): Promise<T> {
    const timeoutMs = this.requestTimeoutMs + extraTimeoutMs;
    const timeout = new AbortController();
    const timer = this.timers.setTimeout(() => timeout.abort(new DOMException(`no answer within ${timeoutMs} ms`, "TimeoutError")), timeoutMs);
    const done = () => this.timers.clearTimeout(timer);
    let sent: PromiseLike<HttpAnswer>;
    try {
      sent = this.fetch(this.server + path, {
        method,
        headers: requestHeaders(body !== undefined, this.token),
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: cancel ? AbortSignal.any([timeout.signal, cancel]) : timeout.signal,
      });
    } catch (error) {
      // A transport that throws instead of rejecting (a malformed URL): answered as fetch would.
      done();
      return Promise.reject(new MutexdError("unreachable", `${this.server}: ${failureText(error)}`));
    }
    return promised(sent.then(
      (response) =>
        response.text().then((text) => {
          done();
          const mismatch = answerFormatError(this.server + path, response);
          if (mismatch !== null) throw mismatch;
          return this.decode<T>(path, response.status, text);
        }, (error) => {
          done();
          throw error;
        }),
      (error) => {
        done();
        throw new MutexdError("unreachable", `${this.server}: ${failureText(error)}`);
      },
    ));
  }

  private decode<T>(path: string, status: number, text: string): T {
    let data: unknown;
    try {
      data = text ? JSON.parse(text) : {};
    } catch {
      throw new MutexdError("internal", `${this.server}${path}: answer is not JSON (status ${status})`, status);
    }
    if (status >= 200 && status <= 299) return data as T;
    const error = (data as { error?: { code?: string; message?: string } }).error;
    throw new MutexdError((error?.code ?? "internal") as MutexdError["code"], error?.message ?? `status ${status}`, status);
  }

  /** mutex_enter on this node: waits up to `waitMs` for the token and a grant. */
  enter(options: RingEnterOptions = {}): Promise<RingEnterResult> {
    return promised(this.enterTimed(options).then((timed) => timed.result));
  }

  /**
   * `enter`, plus when the request that got the answer was sent (the client's clock). A
   * grant's `leaseMs` is what is left of the lease when the node answers, and the node answers
   * after that request reached it, so that send time plus `leaseMs` is never later than the
   * node's lease end. Earlier requests of a long wait (long-polls that ended "waiting") do not
   * count: the lease starts at the grant, not at the first request.
   */
  enterTimed(options: RingEnterOptions = {}): Promise<EnterTimed> {
    const waitMs = options.waitMs ?? 0;
    const deadlineMs = this.clock.nowMs() + waitMs;
    // Each round is one long-poll; the node answers within longPollMaxMs, so rounds are bounded
    // by the wait (plus the token's next visit for a try).
    const round = (ticket: string | undefined, rounds: number): PromiseLike<EnterTimed> => {
      if (rounds >= ENTER_ROUNDS_MAX) throw new MutexdError("internal", "enter: too many rounds");
      const remainingMs = Math.max(0, Math.round(deadlineMs - this.clock.nowMs()));
      const sentAtMs = this.clock.nowMs();
      if (ticket !== undefined && remainingMs === 0 && waitMs > 0) {
        const deadline: EnterTimed = { result: { granted: false, reason: "deadline" }, sentAtMs };
        return this.request("POST", "/v1/ring/leave", { ticket }).then(() => deadline, () => deadline);
      }
      const chunkMs = Math.min(remainingMs, WAIT_CHUNK_MS);
      const body = { waitMs: chunkMs, ...(options.leaseMs === undefined ? {} : { leaseMs: options.leaseMs }), ...(ticket ? { ticket } : {}) };
      const longPollMs = Math.min(Math.max(chunkMs, 1), WAIT_CHUNK_MS) + LONG_POLL_SLACK_MS;
      return this.request<EnterAnswer>("POST", "/v1/ring/enter", body, longPollMs).then((answer): EnterTimed | PromiseLike<EnterTimed> => {
        if (answer.granted) return { result: answer, sentAtMs };
        if (!answer.waiting) return { result: { granted: false, reason: answer.reason }, sentAtMs };
        return round(answer.ticket, rounds + 1);
      });
    };
    return promised(round(undefined, 0));
  }

  /** mutex_leave: ends the section `fence` (or withdraws the wait of `ticket`). */
  leave(target: { fence: number } | { ticket: string }): Promise<void> {
    return promised(this.request("POST", "/v1/ring/leave", target).then(() => undefined));
  }

  /** Writes inside section `fence`; resolves once the write came back around the ring. */
  put(fence: number, key: string, value: string): Promise<number> {
    return promised(this.request<{ wseq: number }>("POST", "/v1/ring/put", { fence, key, value }).then((answer) => answer.wseq));
  }

  delete(fence: number, key: string): Promise<number> {
    return promised(this.request<{ wseq: number }>("POST", "/v1/ring/delete", { fence, key }).then((answer) => answer.wseq));
  }

  /** The committed value of `key` (or with writes still travelling, `dirty`); undefined if none. */
  get(key: string, options: { dirty?: boolean } = {}): Promise<RingGetResult | undefined> {
    const path = `/v1/ring/get?key=${encodeURIComponent(key)}${options.dirty ? "&dirty=1" : ""}`;
    return promised(this.request<RingGetResult>("GET", path).then(undefined, (error) => {
      if (error instanceof MutexdError && error.code === "key_not_found") return undefined;
      throw error;
    }));
  }

  keys(options: { dirty?: boolean } = {}): Promise<string[]> {
    return promised(this.request<{ keys: string[] }>("GET", `/v1/ring/keys${options.dirty ? "?dirty=1" : ""}`).then((answer) => answer.keys));
  }

  status(): Promise<RingStatus> {
    return this.request<RingStatus>("GET", "/v1/ring/status");
  }

  /** The node's write log from `from` on (at most one batch). */
  log(from = 1): Promise<{ commit: number; entries: Array<{ wseq: number; epoch: number; author: string; op: unknown }> }> {
    return this.request("GET", `/v1/ring/log?from=${from}`);
  }

  /** Whether section `fence` still runs; waits up to `waitMs` for it to end. */
  sectionActive(fence: number, waitMs = 0, cancel?: AbortSignal): Promise<boolean> {
    const path = `/v1/ring/section/${fence}?waitMs=${waitMs}`;
    return promised(this.request<{ active: boolean }>("GET", path, undefined, waitMs, cancel).then((answer) => answer.active));
  }

  /**
   * Enters and returns a handle; throws RingNotAcquiredError (code "not_acquired") when the wait
   * ran out or the try found the section taken.
   */
  lock(options: RingEnterOptions = {}): Promise<RingLock> {
    return promised(this.enterTimed(options).then(({ result, sentAtMs }) => {
      if (!result.granted) throw new RingNotAcquiredError(result.reason);
      return new RingLock(this, result.fence, result.epoch, sentAtMs + result.leaseMs);
    }));
  }
}

/**
 * What the transport's `.then` returned. With the runtime's fetch that is a Promise; with an
 * injected fetch it is that fetch's own kind (the simulator's SimFuture), continued with `.then`
 * only, as the module comment says.
 */
function promised<T>(chain: PromiseLike<T>): Promise<T> {
  return chain as Promise<T>;
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
  private readonly leaseTimer: unknown;
  private released: Promise<void> | undefined;

  constructor(
    readonly client: RingClient,
    /** The fencing token: a decimal integer above every earlier one, also across token regenerations. */
    readonly token: number,
    readonly epoch: number,
    /** Local end of the lease (the client's clock), never later than the node's. */
    readonly leaseEndsAtMs: number,
  ) {
    this.leaseTimer = client.timers.setTimeout(() => this.lose("the lease ended"), Math.max(0, leaseEndsAtMs - client.clock.nowMs()));
    this.watch();
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get lost(): boolean {
    return this.controller.signal.aborted;
  }

  /** Milliseconds left of the lease by the local clock. */
  get remainingMs(): number {
    return Math.max(0, this.leaseEndsAtMs - this.client.clock.nowMs());
  }

  put(key: string, value: string): Promise<number> {
    return this.guard(() => this.client.put(this.token, key, value));
  }

  delete(key: string): Promise<number> {
    return this.guard(() => this.client.delete(this.token, key));
  }

  /** Reads the committed value at the holder: inside the section this is linearizable. */
  get(key: string): Promise<string | undefined> {
    if (this.lost) return Promise.reject(this.signal.reason);
    return promised(this.client.get(key).then((result) => result?.value));
  }

  /** Leaves the section. Safe to call twice (the second call returns the first's promise); a lost section needs no leave. */
  release(): Promise<void> {
    if (this.released) return this.released;
    this.client.timers.clearTimeout(this.leaseTimer);
    this.watchCancel.abort();
    // Leave also after a loss: the client's lease ends (by its own clock) before the node's, and
    // until the node ends the section the ring waits. A leave of an ended section is harmless.
    this.released = promised(this.client.leave({ fence: this.token }).then(undefined, (error) => {
      const ended = error instanceof MutexdError && error.code === "not_in_section";
      if (!ended && !this.lost) throw error;
    }));
    return this.released;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return promised(this.release().then(undefined, () => {}));
  }

  private get done(): boolean {
    return this.released !== undefined;
  }

  /** A write in the section: refused without a request once the section is lost (a native rejection). */
  private guard<T>(body: () => Promise<T>): Promise<T> {
    if (this.lost) return Promise.reject(this.signal.reason);
    return promised(body().then(undefined, (error) => {
      if (error instanceof MutexdError && error.code === "not_in_section") this.lose("the node ended the section");
      throw error;
    }));
  }

  /**
   * Long-polls the node for the end of the section (lease, token lost, or a leave elsewhere), one
   * round after the other. Bounded by the lease: each round waits up to WATCH_POLL_MS, and the
   * lease timer ends the section, which stops the rounds.
   */
  private watch(): void {
    if (this.done || this.lost) return;
    const waitMs = Math.min(WATCH_POLL_MS, Math.max(1, Math.round(this.remainingMs)));
    this.client.sectionActive(this.token, waitMs, this.watchCancel.signal).then(
      (active) => {
        if (!active && !this.done) this.lose("the node ended the section");
        this.watch();
      },
      () => {
        // Unreachable node: the lease timer still bounds the section; pause before asking again.
        if (!this.done && !this.lost) this.client.timers.setTimeout(() => this.watch(), WATCH_RETRY_MS);
      },
    );
  }

  private lose(reason: string): void {
    if (this.lost) return;
    this.client.timers.clearTimeout(this.leaseTimer);
    this.watchCancel.abort();
    this.controller.abort(new MutexdError("lock_lost", `ring section ${this.token} lost: ${reason}`));
  }
}

export function connectRing(options: RingConnectOptions): RingClient {
  return new RingClient(options);
}
