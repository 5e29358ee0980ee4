/**
 * A minimal RFC 6455 WebSocket client for Deno, for the replication stream (cluster/peer_stream.ts)
 * only; cluster/runtime.ts `openWebSocket` is its one importer. Deno's own WebSocket client does
 * not serve there: it sets no TCP_NODELAY (a frame sent while another is unanswered waited on
 * Nagle's algorithm: W2 replicated fell from 944 to 230 a+r/s, docs/bench.md "Replication cost")
 * and takes no CA. This one opens its TCP connection itself with `setNoDelay(true)`, and TLS on it
 * trusting the cluster's CA (`Deno.startTls`: a TlsConn has no setNoDelay of its own). Deno ADDS
 * `caCerts` to its default roots, it does not replace them: a certificate a public CA issued for a
 * peer's name passes TLS too. What authenticates the peer is the cluster secret's MACs over the
 * upgrade and every frame (cluster/peer_stream.ts), not TLS alone (docs/security.md).
 *
 * What it does: the HTTP/1.1 upgrade (status 101, Sec-WebSocket-Accept checked, no extension or
 * subprotocol), masked client frames (a random mask per frame), text messages (binary ones are
 * delivered as bytes, which peer_stream.ts refuses), fragmented messages reassembled, a ping
 * answered with a pong, and the close handshake. Every read is bounded: a frame or message whose
 * length goes over `messageBytesMax` closes the connection as soon as its header says so, before
 * its payload is read, and so does every protocol error (a masked frame from the server, an
 * unknown opcode, reserved bits, invalid UTF-8, …). What waits to be written is bounded too.
 *
 * It exposes the part of the WebSocket interface peer_stream.ts uses: `onopen`, `onmessage`,
 * `onclose`, `onerror`, `send`, `close` and `readyState`. The frame codec (cluster/ws_frame.ts:
 * FrameDecoder, encodeFrame) and the upgrade (cluster/ws_handshake.ts: acceptFor,
 * parseUpgradeAnswer) are pure and run under both runtimes (tests/ws_client_test.ts); only
 * `DenoWebSocket`, here, needs Deno.
 */
import { CONTROL_PAYLOAD_BYTES_MAX, concat, encodeFrame, FrameDecoder, MaskPool, OP, WebSocketProtocolError } from "./ws_frame.ts";
import { randomKey, readUpgradeAnswer, upgradeRequest } from "./ws_handshake.ts";

// The codec and the handshake keep their import path here (tests/ws_client_test.ts and any caller).
export { type Decoded, encodeFrame, FRAGMENTS_MAX, FrameDecoder, isCloseCodeOnWire, OP, WebSocketProtocolError } from "./ws_frame.ts";
export { acceptFor, parseUpgradeAnswer, upgradeRequest } from "./ws_handshake.ts";

/** Bytes asked of the connection per read (the decoder copies out of it, so one buffer serves). */
const READ_CHUNK_BYTES = 65_536;
/** Bytes joined into one write when frames queue up behind a write under way (fewer syscalls). */
const WRITE_BATCH_BYTES_MAX = 1_048_576;
/** Bytes waiting to be written, at most: a peer that reads nothing gets the connection closed, not our memory. */
export const SEND_QUEUE_BYTES_MAX = 67_108_864;
/** How long the close handshake may wait for the server's close frame before the TCP connection is cut. */
const CLOSE_WAIT_MS = 1_000;

/** Text messages are encoded with it. */
const encoder = new TextEncoder();

/** The Deno connection the client needs (Deno.Conn's shape). */
interface Conn {
  read(buffer: Uint8Array): Promise<number | null>;
  write(bytes: Uint8Array): Promise<number>;
  close(): void;
}

/** The close event it delivers (the fields of a CloseEvent peer_stream.ts could read). */
export interface ClientCloseEvent {
  code: number;
  reason: string;
  wasClean: boolean;
}

/**
 * A WebSocket client over Deno.connect (TCP_NODELAY set), with TLS on it trusting `caPem` (added
 * to Deno's default roots) when given (wss:). Its readyState and events follow the WebSocket
 * interface: CONNECTING until the upgrade is answered, then `onopen`; `onclose` once,
 * asynchronously, whatever ended it.
 */
export class DenoWebSocket {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;

  readyState = 0;
  onopen: ((event: Event) => void) | null = null;
  onmessage: ((event: { data: string | Uint8Array }) => void) | null = null;
  onclose: ((event: ClientCloseEvent) => void) | null = null;
  onerror: ((event: Event) => void) | null = null;

  private conn: Conn | null = null;
  private readonly decoder: FrameDecoder;
  private readonly masks = new MaskPool();
  /** Frames waiting for the write under way, and their bytes (at most SEND_QUEUE_BYTES_MAX). */
  private writeQueue: Uint8Array[] = [];
  private queuedBytes = 0;
  /** The writer under way, if any. */
  private draining: Promise<void> | null = null;
  /** Whether a close frame was sent and whether one came (the handshake is clean when both). */
  private closeSent = false;
  private closeReceived: { code: number; reason: string } | null = null;
  private closeTimer: ReturnType<typeof setTimeout> | undefined;
  private closedEventSent = false;
  /** Aborts Deno.connect when close() comes while it is pending (else it waits out the kernel's SYN retries). */
  private readonly connecting = new AbortController();
  private connected = false;

  /** Throws a SyntaxError (as WebSocket's constructor does) for a URL that is not ws: or wss:, before any handler could be set. */
  constructor(readonly url: string, options: { caPem?: string; messageBytesMax: number }) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new DOMException(`not a URL: ${url.slice(0, 100)}`, "SyntaxError");
    }
    if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") throw new DOMException(`not a ws: or wss: URL: ${parsed.protocol}`, "SyntaxError");
    this.decoder = new FrameDecoder(options.messageBytesMax);
    void this.run(parsed, options.caPem);
  }

  /** Sends a text message; ignored unless OPEN (as the WebSocket interface does once closing). */
  send(text: string): void {
    if (this.readyState !== DenoWebSocket.OPEN) {
      if (this.readyState === DenoWebSocket.CONNECTING) throw new DOMException("WebSocket is not open", "InvalidStateError");
      return;
    }
    this.write(encodeFrame(OP.text, encoder.encode(text), this.masks.next()));
  }

  /** Starts the close handshake (or abandons the connection while it is still connecting). */
  close(code = 1000, reason = ""): void {
    if (this.readyState === DenoWebSocket.CLOSING || this.readyState === DenoWebSocket.CLOSED) return;
    if (this.readyState === DenoWebSocket.CONNECTING) {
      this.readyState = DenoWebSocket.CLOSING;
      // Only while Deno.connect is pending: once it answered, its signal is no longer ours to use.
      if (!this.connected) this.connecting.abort();
      // Once connected (the upgrade, or the TLS handshake, which Deno runs in the first write): closing
      // the connection cancels what waits on it. Under TLS Deno keeps the socket itself until the
      // handshake ends (its TLS stream finishes it before closing): tests/ws_client_connect_test.ts.
      this.cut();
      return;
    }
    this.readyState = DenoWebSocket.CLOSING;
    this.sendClose(code, reason);
    // The server answers with its close frame and ends the TCP connection; if it does not, we do.
    this.cutLater();
  }

  /** Connects, upgrades, then reads frames until the connection ends; every end goes through `finish`. */
  private async run(url: URL, caPem: string | undefined): Promise<void> {
    let code = 1006;
    try {
      const conn = await connect(url, caPem, this.connecting.signal);
      this.connected = true;
      // close() while Deno.connect or Deno.startTls was pending: the connection it waited for is dropped at once.
      if (this.readyState !== DenoWebSocket.CONNECTING) return conn.close();
      this.conn = conn;
      const key = randomKey();
      await writeAll(conn, encoder.encode(upgradeRequest(url, key)));
      const rest = await readUpgradeAnswer(conn, key);
      if (this.readyState !== DenoWebSocket.CONNECTING) return;
      this.readyState = DenoWebSocket.OPEN;
      this.emit(this.onopen, new Event("open"));
      if (rest.length > 0) this.take(rest);
      const buffer = new Uint8Array(READ_CHUNK_BYTES);
      // Until the server ends the connection (after the close handshake, the server closes TCP
      // first, RFC 6455 section 7.1.1), or cut() does: each read is bounded, the loop by the connection.
      for (;;) {
        const n = await conn.read(buffer);
        if (n === null) break;
        this.take(buffer.subarray(0, n));
      }
    } catch (error) {
      // A read on a connection that cut() ended fails too: that is no fault of the server's.
      if (this.readyState !== DenoWebSocket.CLOSED) {
        if (error instanceof WebSocketProtocolError) {
          code = error.code;
          // Fail the connection (section 7.1.7): say why in a close frame if one can still go, then cut.
          if (!this.closeSent && this.readyState === DenoWebSocket.OPEN) {
            // CLOSING first: a send() while the close frame is written is dropped, not queued after it (section 5.5.1).
            this.readyState = DenoWebSocket.CLOSING;
            this.sendClose(error.code, error.message);
            await this.flushed();
          }
        }
        this.emit(this.onerror, new Event("error"));
      }
    } finally {
      this.finish(code);
    }
  }

  /** What a read brought: messages to `onmessage`, a ping answered, a close answered. */
  private take(bytes: Uint8Array): void {
    // After the server's close frame nothing more is taken (section 5.5.1).
    if (this.closeReceived) return;
    for (const decoded of this.decoder.push(bytes)) {
      // cut() ended it (a send queue over its bound, from a handler): nothing more is taken.
      if (this.readyState === DenoWebSocket.CLOSED) return;
      // Once closing (close(), or onmessage calling it), messages are dropped; the server's close frame is still taken.
      if (decoded.kind === "text") {
        if (this.readyState === DenoWebSocket.OPEN) this.emit(this.onmessage, { data: decoded.text });
      } else if (decoded.kind === "binary") {
        if (this.readyState === DenoWebSocket.OPEN) this.emit(this.onmessage, { data: decoded.bytes });
      } else if (decoded.kind === "ping") {
        if (this.readyState === DenoWebSocket.OPEN) this.write(encodeFrame(OP.pong, decoded.payload, this.masks.next()));
      } else if (decoded.kind === "close") {
        this.closeReceived = { code: decoded.code, reason: decoded.reason };
        this.readyState = DenoWebSocket.CLOSING;
        // Echo its code (1005, "no code", is never sent on the wire), then wait for the server
        // to close TCP, at most CLOSE_WAIT_MS.
        this.sendClose(decoded.code === 1005 ? 1000 : decoded.code, "");
        this.cutLater();
        return;
      }
    }
  }

  private sendClose(code: number, reason: string): void {
    if (this.closeSent) return;
    this.closeSent = true;
    const reasonBytes = encoder.encode(reason).subarray(0, CONTROL_PAYLOAD_BYTES_MAX - 2);
    const payload = new Uint8Array(2 + reasonBytes.length);
    payload[0] = code >> 8;
    payload[1] = code & 0xff;
    payload.set(reasonBytes, 2);
    this.write(encodeFrame(OP.close, payload, this.masks.next()));
  }

  /** The TCP connection is cut in CLOSE_WAIT_MS unless the server ends it first. */
  private cutLater(): void {
    if (this.closeTimer === undefined) this.closeTimer = setTimeout(() => this.cut(), CLOSE_WAIT_MS);
  }

  /** Queues `frame` and starts the writer if idle; over SEND_QUEUE_BYTES_MAX the connection is cut. */
  private write(frame: Uint8Array): void {
    if (!this.conn) return;
    if (this.queuedBytes + frame.length > SEND_QUEUE_BYTES_MAX) {
      this.emit(this.onerror, new Event("error"));
      this.cut();
      return;
    }
    this.writeQueue.push(frame);
    this.queuedBytes += frame.length;
    if (this.draining === null) this.draining = this.drain();
  }

  /** Writes what is queued, frames that queued meanwhile joined into one write (up to WRITE_BATCH_BYTES_MAX). */
  private async drain(): Promise<void> {
    try {
      while (this.writeQueue.length > 0 && this.conn) {
        let count = 0;
        let bytes = 0;
        while (count < this.writeQueue.length && (count === 0 || bytes + this.writeQueue[count].length <= WRITE_BATCH_BYTES_MAX)) {
          bytes += this.writeQueue[count].length;
          count += 1;
        }
        const batch = count === 1 ? this.writeQueue[0] : concat(this.writeQueue.slice(0, count), bytes);
        this.writeQueue.splice(0, count);
        this.queuedBytes -= bytes;
        await writeAll(this.conn, batch);
      }
    } catch {
      // The connection broke: the reader sees it too and ends it.
      this.cut();
    } finally {
      this.draining = null;
    }
  }

  /** Resolves once what is queued is written, or after CLOSE_WAIT_MS (a server that reads nothing). */
  private async flushed(): Promise<void> {
    if (this.draining === null) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<void>((resolve) => timer = setTimeout(resolve, CLOSE_WAIT_MS));
    await Promise.race([this.draining, late]);
    clearTimeout(timer);
  }

  /** Ends the TCP connection now (a read under way then fails, and run() reports the close). */
  private cut(): void {
    const conn = this.conn;
    this.conn = null;
    this.writeQueue = [];
    this.queuedBytes = 0;
    this.readyState = DenoWebSocket.CLOSED;
    try {
      conn?.close();
    } catch {
      // Closed already.
    }
  }

  /** Once, when the connection is over: the TCP connection closed, the timer cleared, `onclose`. */
  private finish(code: number): void {
    clearTimeout(this.closeTimer);
    this.cut();
    if (this.closedEventSent) return;
    this.closedEventSent = true;
    const clean = this.closeSent && this.closeReceived !== null;
    const event = clean ? { code: this.closeReceived!.code, reason: this.closeReceived!.reason, wasClean: true } : { code, reason: "", wasClean: false };
    this.emit(this.onclose, event);
  }

  /**
   * Calls a handler. What it throws is its own bug, not the connection's: thrown again outside the
   * reader, an uncaught error (as from a handler of Deno's WebSocket), not taken for a broken connection.
   */
  private emit<T>(handler: ((event: T) => void) | null, event: T): void {
    if (!handler) return;
    try {
      handler.call(this, event);
    } catch (error) {
      queueMicrotask(() => {
        throw error;
      });
    }
  }
}

/**
 * TCP to the URL's host with TCP_NODELAY, and TLS on it for wss: (Deno's default roots, and
 * `caPem` added to them). `signal` aborts a connect still pending (Deno's ConnectOptions.signal).
 */
async function connect(url: URL, caPem: string | undefined, signal: AbortSignal): Promise<Conn> {
  // deno-lint-ignore no-explicit-any
  const Deno = (globalThis as any).Deno;
  const secure = url.protocol === "wss:";
  const hostname = url.hostname.replace(/^\[(.*)\]$/, "$1");
  const port = Number(url.port || (secure ? 443 : 80));
  const tcp = await Deno.connect({ hostname, port, transport: "tcp", signal });
  try {
    // Why this client exists: without it a frame sent while another is unanswered waits (Nagle).
    tcp.setNoDelay(true);
    if (!secure) return tcp;
    return await Deno.startTls(tcp, { hostname, ...(caPem === undefined ? {} : { caCerts: [caPem] }) });
  } catch (error) {
    tcp.close();
    throw error;
  }
}

async function writeAll(conn: Conn, bytes: Uint8Array): Promise<void> {
  let at = 0;
  while (at < bytes.length) at += await conn.write(bytes.subarray(at));
}
