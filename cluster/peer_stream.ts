/**
 * The replication stream (issue 14, docs/security.md "The replication stream"): lock peer
 * messages (`POST /v1/peer`) over ONE WebSocket per peer on the same HTTP port
 * (`GET /v1/peer/stream`), requests and answers matched by the request's seq, many in flight.
 * The semantics are the HTTP transport's: at most once, may time out, a timed-out request may
 * still arrive; a dropped connection fails every request in flight at once, and the next send
 * reconnects (after a wait doubling from 50 ms to 2 s when the open failed or the connection
 * dropped before any answer; requests go over HTTP meanwhile). A request that cannot go on the stream (it is not open, or cannot open: a member
 * of an older build without the route) goes over HTTP, and every request does under a runtime
 * whose WebSocket client does not serve (runtime.ts webSocketClientProblem; Deno's client is ws_client.ts). The
 * receiving side serves the stream under both runtimes.
 *
 * Opening: the sender first GETs the route over HTTP, signed (peer_auth.ts): that proves the
 * route is there and, through the signer's challenge, leaves it holding the receiver's current
 * nonce. It then opens the WebSocket with the same signature of `GET /v1/peer/stream` under
 * the next seq in the query (a browser-standard WebSocket sets no headers): the receiver checks
 * it with its PeerVerifier (MAC, member, nonce, replay window) BEFORE upgrading, and refuses
 * with 401 and a security-log line otherwise. Its first frame, the hello, carries a nonce it chose
 * for this connection, MACed with the upgrade's MAC (so a hello of another connection is refused).
 *
 * A frame is text: `SEQ RE STATUS MAC\nBODY`. SEQ counts the sender's frames on the connection
 * from 1, strictly increasing; RE is 0 in a request and the request's SEQ in its answer; STATUS is
 * 0 in a request and the answer's HTTP status in an answer. MAC (hex; `-` without a secret) is
 * HMAC-SHA256 with the peer key over [label, the connection's nonce, the direction, sender id,
 * receiver id, SEQ, RE, STATUS], a newline, and the body. A forged, replayed, reordered or
 * other-connection frame fails its MAC or its seq: the connection is closed, the refusal
 * logged, and nothing else happens (the requests in flight fail, as on any drop). A request's
 * body goes through the same `answerPeer` as the HTTP route, with the connection's
 * authenticated sender: the `from` of a body proves nothing.
 *
 * Here is the sending side (streamPeerTransport); the receiving side is peer_stream_server.ts,
 * the frames and the hello both sides write and check are peer_frame.ts's.
 */
import { encodeFrame, encodeHello, FRAME_HEAD_BYTES_MAX, FrameCodec, type FrameKeys, helloNonce, STREAM_PATH } from "./peer_frame.ts";
import { PEER_HEADER } from "./peer_head.ts";
import type { PeerKey } from "./peer_mac.ts";
import type { PeerFetch, PeerSigner } from "./peer_signer.ts";
import { decodePeerBody, encodePeerBody, type PeerTransport } from "./peer_transport.ts";
import { openWebSocket, webSocketClientProblem } from "./runtime.ts";
import type { SecurityLog } from "./security_log.ts";
import { backoffMs, type Timers } from "./timers.ts";
import type { Clock } from "./clock.ts";
import type { Logger } from "./log.ts";
import { FORMAT_HEADER, formatText, WIRE_FORMAT } from "../lib/wire/version.ts";

/** What the lock driver and tests/peer_stream_test.ts import from here, where it was before the split. */
export { encodeFrame, encodeHello, type FrameKeys, STREAM_PATH };
export { peerStreamServer, STREAM_CONNECTIONS_MAX } from "./peer_stream_server.ts";

/** The path whose requests the stream carries (every other goes over HTTP: arbiter, ring). */
const STREAMED_PATH = "/v1/peer";
/** Requests sent on one connection and not answered yet, at most; a send over it fails at once. */
export const STREAM_IN_FLIGHT_MAX = 1_024;
/** Requests waiting for the connection to open, at most; a send over it fails at once. */
export const STREAM_QUEUED_MAX = 1_024;
/** The wait before the next attempt after the first failed one, doubled per failure up to the max. */
const RECONNECT_FIRST_MS = 50;
const RECONNECT_MAX_MS = 2_000;

/** One request on its way: settled once (answer, failure or timeout). */
interface Pending {
  /** The message, and its text on the wire. */
  message: unknown;
  body: string;
  /** Its seq once written on the connection (0 while queued). */
  seq: number;
  /** When it fails (on options.clock), unless settled before. */
  deadlineMs: number;
  /** For the timeout's message, built only if it times out (not a string per request). */
  url: string;
  timeoutMs: number;
  resolve(answer: unknown): void;
  reject(error: Error): void;
}

/** How the sending side reaches the others. */
export interface StreamTransportOptions {
  self: string;
  /** The member a base URL belongs to (the MACs name the receiver). */
  idOf(url: string): string;
  /** Signed HTTP (peer_signer.ts): the probe, and every request that cannot go on the stream. */
  peerFetch: PeerFetch;
  http: PeerTransport;
  keyed: { key: PeerKey; signer: PeerSigner } | undefined;
  /** [cluster] tlsCa (runtime.ts openWebSocket trusts it, under both runtimes). */
  caPem: string | undefined;
  /** The largest body (peerBodyBytesMax): with a frame's head, the longest answer the client takes. */
  bodyBytesMax: number;
  security: SecurityLog;
  log: Logger;
  clock: Clock;
  timers: Timers;
  /** What a connection may wait for its hello, and the probe for its answer. */
  openTimeoutMs: number;
  /**
   * Why this runtime's WebSocket client is not used (then every request goes over HTTP); default
   * runtime.ts webSocketClientProblem. The unit tests pass null to test the client under Deno too.
   */
  clientProblem?: string | null;
}

/** The sending side: a PeerTransport whose `/v1/peer` requests go on one stream per peer. */
export interface StreamTransport extends PeerTransport {
  /** Closes every connection (the node stops); requests in flight fail. */
  close(): void;
  /** Whether the stream to `baseUrl` is open now (tests). */
  isOpen(baseUrl: string): boolean;
}

export function streamPeerTransport(options: StreamTransportOptions): StreamTransport {
  const streams = new Map<string, PeerStream>();
  /**
   * The last URL streamed and its stream: a driver sends every append to the same URL string, so
   * most sends find their stream without a slice of the URL and a Map lookup by a new string.
   */
  let last: { url: string; stream: PeerStream } | undefined;
  const problem = options.clientProblem === undefined ? webSocketClientProblem(options.caPem) : options.clientProblem;
  if (problem !== null) options.log.event("peerStreamUnavailable", { why: `${problem}: replication goes over HTTP` });
  return {
    send(url, body, timeoutMs) {
      if (last !== undefined && last.url === url) return last.stream.send(url, body, timeoutMs);
      if (problem !== null || !url.endsWith(STREAMED_PATH)) return options.http.send(url, body, timeoutMs);
      const base = url.slice(0, -STREAMED_PATH.length);
      let stream = streams.get(base);
      if (!stream) {
        stream = new PeerStream(base, options);
        streams.set(base, stream);
      }
      last = { url, stream };
      return stream.send(url, body, timeoutMs);
    },
    close() {
      for (const stream of streams.values()) stream.close();
    },
    isOpen: (baseUrl) => streams.get(baseUrl)?.isOpen() ?? false,
  };
}

/** The stream to one peer: idle, connecting (requests queue), open, or waiting to retry (requests go over HTTP). */
class PeerStream {
  private socket: WebSocket | null = null;
  private state: "idle" | "connecting" | "open" | "closed" = "idle";
  /** The open connection's frames: the requests it sends and the answers it takes. */
  private codecs: { requests: FrameCodec; answers: FrameCodec } | null = null;
  private seqOut = 0;
  private lastSeqIn = 0;
  private readonly inFlight = new Map<number, Pending>();
  private queued: Pending[] = [];
  /** Failed opens (and connections dropped before any answer) in a row: the backoff's exponent. */
  private failures = 0;
  /** Whether an answer checked on the current connection (then a drop does not back off). */
  private answeredOnConnection = false;
  private retryAtMs = 0;
  /**
   * ONE timer for every request's timeout, armed for the earliest deadline it knows of (Infinity:
   * none armed): a request answered before it arms and clears nothing. A timer per request cost a
   * replicated change a setTimeout and a clearTimeout (docs/bench.md "Replication cost", sixth pass).
   */
  private deadlineTimer: unknown = undefined;
  private deadlineTimerAtMs = Number.POSITIVE_INFINITY;
  private readonly to: string;

  constructor(private readonly base: string, private readonly options: StreamTransportOptions) {
    this.to = options.idOf(`${base}/`);
  }

  isOpen(): boolean {
    return this.state === "open";
  }

  send(url: string, body: unknown, timeoutMs: number): Promise<unknown> {
    if (this.state === "closed") return Promise.reject(new Error(`${this.base}: the transport is closed`));
    if (this.state === "idle") {
      // Waiting out the backoff after a failed open: this request goes over HTTP.
      if (this.options.clock.nowMs() < this.retryAtMs) return this.options.http.send(url, body, timeoutMs);
      this.connect();
    }
    const full = this.state === "open" ? this.inFlight.size >= STREAM_IN_FLIGHT_MAX : this.queued.length >= STREAM_QUEUED_MAX;
    if (full) return Promise.reject(new Error(`${this.base}: too many requests on the stream (${this.state})`));
    return new Promise((resolve, reject) => {
      const deadlineMs = this.options.clock.nowMs() + timeoutMs;
      const pending: Pending = { message: body, body: encodePeerBody(body), seq: 0, deadlineMs, url, timeoutMs, resolve, reject };
      this.armDeadline(deadlineMs);
      if (this.state === "open") this.write(pending);
      else this.queued.push(pending);
    });
  }

  close(): void {
    this.state = "closed";
    this.drop(new Error(`${this.base}: the transport is closed`));
  }

  /** Fails `pending` once: forgotten by the queue and the in-flight map (the deadline timer stays). */
  private settle(pending: Pending, error: Error): void {
    this.forget(pending);
    pending.reject(error);
  }

  private forget(pending: Pending): void {
    if (pending.seq > 0) this.inFlight.delete(pending.seq);
    const queuedAt = pending.seq > 0 ? -1 : this.queued.indexOf(pending);
    if (queuedAt >= 0) this.queued.splice(queuedAt, 1);
  }

  /** Arms the deadline timer for `atMs` unless it is armed for that moment or earlier already. */
  private armDeadline(atMs: number): void {
    if (atMs >= this.deadlineTimerAtMs) return;
    this.options.timers.clearTimeout(this.deadlineTimer);
    this.deadlineTimerAtMs = atMs;
    this.deadlineTimer = this.options.timers.setTimeout(() => this.deadlinePassed(), Math.max(0, atMs - this.options.clock.nowMs()));
  }

  /**
   * The deadline timer fired: every request past its deadline fails, earliest deadline first (a
   * timer that fired late, under load, finds several: they fail as their own timers would have,
   * not in send order); armed again for the next one, if any.
   */
  private deadlinePassed(): void {
    this.deadlineTimer = undefined;
    this.deadlineTimerAtMs = Number.POSITIVE_INFINITY;
    const nowMs = this.options.clock.nowMs();
    let nextMs = Number.POSITIVE_INFINITY;
    const expired: Pending[] = [];
    // At most STREAM_IN_FLIGHT_MAX + STREAM_QUEUED_MAX requests.
    for (const pending of [...this.inFlight.values(), ...this.queued]) {
      if (pending.deadlineMs <= nowMs) expired.push(pending);
      else nextMs = Math.min(nextMs, pending.deadlineMs);
    }
    // Stable: equal deadlines keep send order.
    expired.sort((x, y) => x.deadlineMs - y.deadlineMs);
    for (const pending of expired) this.settle(pending, new Error(`${pending.url}: no answer in ${pending.timeoutMs} ms`));
    if (nextMs !== Number.POSITIVE_INFINITY) this.armDeadline(nextMs);
  }

  private write(pending: Pending): void {
    this.seqOut += 1;
    pending.seq = this.seqOut;
    this.inFlight.set(this.seqOut, pending);
    this.socket!.send(this.codecs!.requests.encode({ seq: this.seqOut, re: 0, status: 0, body: pending.body }));
  }

  private connect(): void {
    this.state = "connecting";
    const { peerFetch, openTimeoutMs } = this.options;
    peerFetch(this.to, this.base + STREAM_PATH, { method: "GET", timeoutMs: openTimeoutMs }).then(
      (probe) => {
        if (this.state !== "connecting") return;
        if (probe.status !== 200) return this.failOpen(`probe answered ${probe.status}`);
        this.upgrade();
      },
      (error: Error) => this.state === "connecting" && this.failOpen(`probe failed: ${error.message}`),
    );
  }

  /** Opens the WebSocket with the upgrade signed in its query; open once its hello checks. */
  private upgrade(): void {
    const { keyed } = this.options;
    const signed = keyed?.signer.sign(this.to, "GET", STREAM_PATH, new Uint8Array());
    const query = new URLSearchParams(signed?.headers ?? { [FORMAT_HEADER]: formatText(WIRE_FORMAT) });
    const wsUrl = `${this.base.replace(/^http/, "ws")}${STREAM_PATH}?${query}`;
    let socket: WebSocket;
    try {
      socket = openWebSocket(wsUrl, this.options.caPem, this.options.bodyBytesMax + FRAME_HEAD_BYTES_MAX);
    } catch (error) {
      return this.failOpen(`WebSocket: ${(error as Error).message}`);
    }
    this.socket = socket;
    const upgradeMac = signed?.headers[PEER_HEADER.mac] ?? "";
    // No hello in time: the open failed now (queued requests go over HTTP, the next attempt backs
    // off), not when the close handshake ends, which a runtime may delay or never report.
    const helloTimer = this.options.timers.setTimeout(() => {
      if (this.socket === socket && this.state === "connecting") this.failOpen(`no hello in ${this.options.openTimeoutMs} ms`);
    }, this.options.openTimeoutMs);
    socket.onmessage = (event: MessageEvent) => {
      if (this.socket !== socket) return;
      if (typeof event.data !== "string") return this.refuse("peerStreamMalformed");
      if (this.state === "connecting") {
        this.options.timers.clearTimeout(helloTimer);
        const nonce = helloNonce(keyed?.key, this.to, this.options.self, upgradeMac, event.data);
        if (nonce === null) return this.refuse("peerStreamForged");
        const keys: FrameKeys = { key: keyed?.key, nonce };
        this.codecs = { requests: new FrameCodec(keys, "request", this.options.self, this.to), answers: new FrameCodec(keys, "answer", this.to, this.options.self) };
        this.opened();
        return;
      }
      this.receive(event.data);
    };
    socket.onclose = () => {
      this.options.timers.clearTimeout(helloTimer);
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.state === "connecting") return this.failOpen("closed before its hello");
      if (this.state === "open") {
        this.state = "idle";
        // A connection that opens and drops before any answer counts as a failed open: the
        // next attempts back off (a peer that accepts and closes every stream costs a probe
        // and an upgrade per 2 s at most, not per request).
        if (this.answeredOnConnection) this.failures = 0;
        else this.waitBeforeRetry();
        this.drop(new Error(`${this.base}: the stream closed`));
      }
    };
  }

  private opened(): void {
    this.state = "open";
    this.answeredOnConnection = false;
    this.seqOut = 0;
    this.lastSeqIn = 0;
    const queued = this.queued;
    this.queued = [];
    for (const pending of queued) this.write(pending);
  }

  private receive(text: string): void {
    const checked = this.codecs!.answers.check(this.lastSeqIn, text);
    if ("refused" in checked) return this.refuse(checked.refused);
    this.lastSeqIn = checked.seq;
    this.answeredOnConnection = true;
    const pending = this.inFlight.get(checked.re);
    // Timed out already (or never sent): a late answer changes nothing.
    if (!pending) return;
    if (checked.status !== 200) return this.settle(pending, new Error(`${this.base}${STREAMED_PATH}: status ${checked.status}: ${checked.body.slice(0, 200)}`));
    let answer: unknown;
    try {
      answer = decodePeerBody(checked.body);
    } catch (error) {
      return this.settle(pending, error as Error);
    }
    // Answered: no outcome object per answer (this runs for every ack).
    this.forget(pending);
    pending.resolve(answer);
  }

  /** A frame that does not check: the connection is closed, everything in flight fails, logged. */
  private refuse(reason: string): void {
    this.options.security.refused(reason, this.to || "peer", { path: STREAM_PATH });
    const socket = this.socket;
    this.socket = null;
    // 1000: a client may close with 1000 or 3000-4999 only (Deno's WebSocket throws on 1008).
    socket?.close(1000, reason);
    if (this.state === "connecting") return this.failOpen(reason);
    this.state = "idle";
    this.waitBeforeRetry();
    this.drop(new Error(`${this.base}: stream closed: ${reason}`));
  }

  /** The stream could not open: the queued requests go over HTTP (none was sent), the next attempt waits. */
  private failOpen(why: string): void {
    const socket = this.socket;
    this.socket = null;
    socket?.close();
    this.state = "idle";
    const waitMs = this.waitBeforeRetry();
    const nowMs = this.options.clock.nowMs();
    // Once per run of failures: a member of an older build fails every attempt.
    if (this.failures === 1) this.options.log.event("peerStreamUnavailable", { peer: this.to, why: why.slice(0, 200), retryMs: waitMs }, "warn");
    const queued = this.queued;
    this.queued = [];
    for (const pending of queued) {
      this.options.http.send(`${this.base}${STREAMED_PATH}`, pending.message, Math.max(1, pending.deadlineMs - nowMs)).then(pending.resolve, pending.reject);
    }
  }

  /** One more failure in a row: the next attempt waits (doubling, at most RECONNECT_MAX_MS); returns the wait. */
  private waitBeforeRetry(): number {
    this.failures += 1;
    const waitMs = backoffMs(this.failures, RECONNECT_FIRST_MS, RECONNECT_MAX_MS);
    this.retryAtMs = this.options.clock.nowMs() + waitMs;
    return waitMs;
  }

  /** Fails every request in flight and queued at once (a dropped connection). */
  private drop(error: Error): void {
    const all = [...this.inFlight.values(), ...this.queued];
    this.inFlight.clear();
    this.queued = [];
    // Nothing left to time out: no timer keeps a closed transport's process alive.
    this.options.timers.clearTimeout(this.deadlineTimer);
    this.deadlineTimer = undefined;
    this.deadlineTimerAtMs = Number.POSITIVE_INFINITY;
    for (const pending of all) pending.reject(error);
    const socket = this.socket;
    this.socket = null;
    socket?.close();
  }
}
