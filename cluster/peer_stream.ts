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
 */
import { type AuthenticatedSender, senderProvenAs } from "./peer_auth.ts";
import { PEER_HEADER } from "./peer_head.ts";
import { freshNonce, mac, macMatches, macValid, type PeerKey, prefixedMac } from "./peer_mac.ts";
import type { PeerFetch, PeerSigner } from "./peer_signer.ts";
import type { PeerVerifier } from "./peer_verifier.ts";
import { decodePeerBody, encodePeerBody, type PeerTransport } from "./peer_transport.ts";
import { openWebSocket, type StreamConnection, type StreamRoute, type StreamSocket, webSocketClientProblem } from "./runtime.ts";
import type { SecurityLog } from "./security_log.ts";
import { backoffMs, type Timers } from "./timers.ts";
import type { Clock } from "./clock.ts";
import type { Logger } from "./log.ts";
import { FORMAT_HEADER, formatRefusal, formatText, UNVERSIONED, WIRE_FORMAT } from "../lib/wire/version.ts";

/** The route of the stream, and of the probe that comes before it. */
export const STREAM_PATH = "/v1/peer/stream";
/** The path whose requests the stream carries (every other goes over HTTP: arbiter, ring). */
const STREAMED_PATH = "/v1/peer";

/** Labels of what is MACed: a frame's MAC never passes for a request's or answer's of HTTP. */
const FRAME_LABEL = "mutexd peer stream frame v1";
const HELLO_LABEL = "mutexd peer stream hello v1";
/** The head's bytes a frame may have besides its body (four fields: three numbers and a MAC). */
export const FRAME_HEAD_BYTES_MAX = 128;
/** Requests sent on one connection and not answered yet, at most; a send over it fails at once. */
export const STREAM_IN_FLIGHT_MAX = 1_024;
/**
 * Streams one receiver serves at once, at most (a member opens one per peer; a reconnect may
 * overlap the old connection's close): an upgrade beyond it is answered 429 limit_reached.
 */
export const STREAM_CONNECTIONS_MAX = 8;
/** Requests waiting for the connection to open, at most; a send over it fails at once. */
export const STREAM_QUEUED_MAX = 1_024;
/** The wait before the next attempt after the first failed one, doubled per failure up to the max. */
const RECONNECT_FIRST_MS = 50;
const RECONNECT_MAX_MS = 2_000;
const NO_MAC = "-";
/** SEQ 0 is the hello's only: every other frame's must be above the last (FrameCodec.check). */
const FRAME_HEAD = /^(0|[1-9][0-9]{0,14}) (0|[1-9][0-9]{0,14}) ([0-9]{1,3}) ([0-9a-f]{64}|-)$/;

type Direction = "request" | "answer";

/** A frame's fields once parsed; a malformed one is null. */
interface Frame {
  seq: number;
  re: number;
  status: number;
  mac: string;
  body: string;
}

function parseFrame(text: string): Frame | null {
  const newline = text.indexOf("\n");
  if (newline < 0 || newline > FRAME_HEAD_BYTES_MAX) return null;
  const head = FRAME_HEAD.exec(text.slice(0, newline));
  if (!head) return null;
  return { seq: Number(head[1]), re: Number(head[2]), status: Number(head[3]), mac: head[4], body: text.slice(newline + 1) };
}

/** What a connection's frames are MACed with: the peer key (none without a secret) and the receiver's nonce for it. */
export interface FrameKeys {
  key: PeerKey | undefined;
  nonce: string;
}

/**
 * A connection's frames one way (`direction` from `from` to `to`): their MAC covers the fixed
 * head [label, nonce, direction, from, to], hashed once per connection (peer_auth.ts prefixedMac),
 * then [seq, re, status], a newline and the body: the same MAC as hashing the whole head per frame,
 * which cost a replicated change up to four head JSONs and hashes (docs/bench.md "Replication
 * cost", third pass).
 */
export class FrameCodec {
  private readonly macOf: ((integers: number[], body: string) => Buffer) | null;

  constructor(keys: FrameKeys, private readonly direction: Direction, from: string, to: string) {
    this.macOf = keys.key ? prefixedMac(keys.key, [FRAME_LABEL, keys.nonce, direction, from, to]) : null;
  }

  /** A frame to send: its text, MACed. */
  encode(frame: Omit<Frame, "mac">): string {
    const macHex = this.macOf ? this.macOf([frame.seq, frame.re, frame.status], frame.body).toString("hex") : NO_MAC;
    return `${frame.seq} ${frame.re} ${frame.status} ${macHex}\n${frame.body}`;
  }

  /** Why a received frame is refused (the security log's reason), or the frame; `lastSeq`: the last one taken. */
  check(lastSeq: number, text: string): Frame | { refused: string } {
    const frame = parseFrame(text);
    if (frame === null) return { refused: "peerStreamMalformed" };
    if (this.macOf && !macMatches(frame.mac, this.macOf([frame.seq, frame.re, frame.status], frame.body))) {
      return { refused: "peerStreamForged" };
    }
    // One connection delivers in order: a seq not above the last is a replay or a reordering.
    if (frame.seq <= lastSeq) return { refused: "peerStreamReplayed" };
    const isRequest = frame.re === 0 && frame.status === 0;
    if (isRequest !== (this.direction === "request")) return { refused: "peerStreamMalformed" };
    return frame;
  }
}

/** One frame's text, MACed for `direction` from `from` to `to` (tests and benches; a connection keeps its FrameCodec). */
export function encodeFrame(keys: FrameKeys, direction: Direction, from: string, to: string, frame: Omit<Frame, "mac">): string {
  return new FrameCodec(keys, direction, from, to).encode(frame);
}

/** What the hello's MAC covers besides the nonce (its body): the upgrade's MAC ties it to this connection. */
const helloHead = (server: string, client: string, upgradeMac: string) => [HELLO_LABEL, server, client, upgradeMac];

/** The receiver's first frame: the connection's nonce, MACed with the upgrade's MAC (`-` without a key). */
export function encodeHello(key: PeerKey | undefined, server: string, client: string, upgradeMac: string, nonce: string): string {
  const macHex = key ? mac(key, helloHead(server, client, upgradeMac), nonce).toString("hex") : NO_MAC;
  return `0 0 0 ${macHex}\n${nonce}`;
}

/** What the receiver does with a request's body: answers it (status and body text), through answerPeer. */
export type AnswerFrame = (body: string, sender: AuthenticatedSender | undefined, done: (status: number, body: string) => void) => void;

/** The receiving side: the route for serveHttp, and `stop` (closes every connection). */
export interface PeerStreamServer {
  route: StreamRoute;
  stop(): void;
  /** Connections open now (tests). */
  connections(): number;
}

/**
 * The receiving side. `keyed`: the key and verifier with a cluster secret (the upgrade and every
 * frame authenticated), undefined without one (loopback only: nothing checked but the shapes).
 * `bodyBytesMax`: the largest request body (peerBodyBytesMax), checked on every frame at once.
 */
export function peerStreamServer(options: {
  self: string;
  keyed: { key: PeerKey; verifier: PeerVerifier } | undefined;
  security: SecurityLog;
  bodyBytesMax: number;
  answer: AnswerFrame;
}): PeerStreamServer {
  const { self, keyed, security } = options;
  const open = new Set<StreamSocket>();
  const frameBytesMax = options.bodyBytesMax + FRAME_HEAD_BYTES_MAX;
  const refuse = (status: number, reason: string, sender: string, message: string, detail: Record<string, unknown> = {}) => {
    security.refused(reason, sender, { path: STREAM_PATH, ...detail });
    return Response.json({ error: { code: status === 401 ? "unauthorized" : "version_mismatch", message } }, { status });
  };
  const accept = (request: Request): Response | StreamConnection => {
    const query = new URL(request.url).searchParams;
    const format = query.get(FORMAT_HEADER) ?? formatText(UNVERSIONED);
    const from = query.get(PEER_HEADER.from);
    const formatProblem = formatRefusal("the stream's upgrade", format, WIRE_FORMAT);
    let sender: AuthenticatedSender | undefined;
    let client = from ?? "";
    let upgradeMac = "";
    if (keyed) {
      const verdict = keyed.verifier.verify({
        headers: { from, nonce: query.get(PEER_HEADER.nonce), seq: query.get(PEER_HEADER.seq), mac: query.get(PEER_HEADER.mac), format },
        method: "GET",
        path: STREAM_PATH,
        body: new Uint8Array(),
      });
      // A challenge too is a refusal here: the sender's probe just before should have left it the nonce.
      if (!verdict.ok) return refuse(401, verdict.reason, verdict.sender, verdict.message);
      sender = senderProvenAs(verdict.from, security, STREAM_PATH);
      client = verdict.from;
      upgradeMac = verdict.requestMac;
    }
    if (formatProblem !== null) return refuse(400, "versionMismatch", client.slice(0, 64) || "peer", formatProblem, { theirs: format.slice(0, 32) });
    if (open.size >= STREAM_CONNECTIONS_MAX) {
      return Response.json({ error: { code: "limit_reached", message: `${STREAM_CONNECTIONS_MAX} replication streams are open` } }, { status: 429 });
    }
    return connection(client, sender, upgradeMac);
  };
  const connection = (client: string, sender: AuthenticatedSender | undefined, upgradeMac: string): StreamConnection => {
    const keys: FrameKeys = { key: keyed?.key, nonce: freshNonce() };
    const requests = new FrameCodec(keys, "request", client, self);
    const answers = new FrameCodec(keys, "answer", self, client);
    /** The socket while frames are taken: null before it opens and once it is refused or closed. */
    let socket: StreamSocket | null = null;
    let opened: StreamSocket | null = null;
    let lastSeqIn = 0;
    let seqOut = 0;
    const close = (reason: string, detail: Record<string, unknown> = {}) => {
      security.refused(reason, client.slice(0, 64) || "peer", { path: STREAM_PATH, ...detail });
      socket?.close(1008, reason);
      socket = null;
    };
    return {
      opened(ws) {
        socket = opened = ws;
        open.add(ws);
        ws.send(encodeHello(keyed?.key, self, client, upgradeMac, keys.nonce));
      },
      message(data) {
        if (socket === null) return;
        // Checked at once: Deno reads a frame of any length (Bun refuses one over maxPayloadLength).
        if (typeof data !== "string") return close("peerStreamMalformed", { message: "a binary frame" });
        if (data.length > frameBytesMax) return close("peerBodyTooLarge", { length: data.length });
        const checked = requests.check(lastSeqIn, data);
        if ("refused" in checked) return close(checked.refused);
        lastSeqIn = checked.seq;
        const ws = socket;
        options.answer(checked.body, sender, (status, body) => {
          // The connection may have closed while a durable log waited for its disk: no answer then.
          if (socket !== ws) return;
          seqOut += 1;
          ws.send(answers.encode({ seq: seqOut, re: checked.seq, status, body }));
        });
      },
      closed() {
        if (opened) open.delete(opened);
        socket = null;
      },
    };
  };
  return {
    route: { path: STREAM_PATH, frameBytesMax, accept },
    stop() {
      for (const ws of open) ws.close(1001, "stopping");
      open.clear();
    },
    connections: () => open.size,
  };
}

/** One request on its way: settled once (answer, failure or timeout). */
interface Pending {
  /** The message, and its text on the wire. */
  message: unknown;
  body: string;
  /** Its seq once written on the connection (0 while queued). */
  seq: number;
  deadlineMs: number;
  resolve(answer: unknown): void;
  reject(error: Error): void;
  timer: unknown;
}

/** How the sending side reaches the others. */
export interface StreamTransportOptions {
  self: string;
  /** The member a base URL belongs to (the MACs name the receiver). */
  idOf(url: string): string;
  /** Signed HTTP (peer_auth.ts): the probe, and every request that cannot go on the stream. */
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
  const problem = options.clientProblem === undefined ? webSocketClientProblem(options.caPem) : options.clientProblem;
  if (problem !== null) options.log.event("peerStreamUnavailable", { why: `${problem}: replication goes over HTTP` });
  return {
    send(url, body, timeoutMs) {
      if (problem !== null || !url.endsWith(STREAMED_PATH)) return options.http.send(url, body, timeoutMs);
      const base = url.slice(0, -STREAMED_PATH.length);
      let stream = streams.get(base);
      if (!stream) {
        stream = new PeerStream(base, options);
        streams.set(base, stream);
      }
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
      const pending: Pending = { message: body, body: encodePeerBody(body), seq: 0, deadlineMs, resolve, reject, timer: undefined };
      pending.timer = this.options.timers.setTimeout(() => this.settle(pending, new Error(`${url}: no answer in ${timeoutMs} ms`)), timeoutMs);
      if (this.state === "open") this.write(pending);
      else this.queued.push(pending);
    });
  }

  close(): void {
    this.state = "closed";
    this.drop(new Error(`${this.base}: the transport is closed`));
  }

  /** Settles `pending` once: forgotten by the queue and the in-flight map, its timer cleared. */
  private settle(pending: Pending, outcome: Error | { answer: unknown }): void {
    this.options.timers.clearTimeout(pending.timer);
    if (pending.seq > 0) this.inFlight.delete(pending.seq);
    const queuedAt = pending.seq > 0 ? -1 : this.queued.indexOf(pending);
    if (queuedAt >= 0) this.queued.splice(queuedAt, 1);
    if (outcome instanceof Error) pending.reject(outcome);
    else pending.resolve(outcome.answer);
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
        const hello = parseFrame(event.data);
        const valid = hello !== null && hello.seq === 0 &&
          (keyed ? macValid(keyed.key, helloHead(this.to, this.options.self, upgradeMac), hello.body, hello.mac) : true);
        if (!valid) return this.refuse("peerStreamForged");
        const keys: FrameKeys = { key: keyed?.key, nonce: hello.body };
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
    this.settle(pending, { answer });
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
      this.options.timers.clearTimeout(pending.timer);
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
    for (const pending of all) {
      this.options.timers.clearTimeout(pending.timer);
      pending.reject(error);
    }
    const socket = this.socket;
    this.socket = null;
    socket?.close();
  }
}
