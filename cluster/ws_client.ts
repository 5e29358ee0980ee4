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
 * `onclose`, `onerror`, `send`, `close` and `readyState`. The frame codec (FrameDecoder,
 * encodeFrame, acceptFor, parseUpgradeAnswer) is pure and runs under both runtimes
 * (tests/ws_client_test.ts); only `DenoWebSocket` needs Deno.
 */
import { createHash } from "node:crypto";

/** The GUID RFC 6455 section 1.3 appends to the key before hashing. */
const ACCEPT_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/** Opcodes (RFC 6455 section 5.2). */
export const OP = { continuation: 0x0, text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa } as const;
/** A control frame's payload is at most 125 bytes and never fragmented (section 5.5). */
const CONTROL_PAYLOAD_BYTES_MAX = 125;
/** The longest upgrade answer read (status line and headers); longer is refused. */
const UPGRADE_ANSWER_BYTES_MAX = 8_192;
/** Bytes asked of the connection per read (the decoder copies out of it, so one buffer serves). */
const READ_CHUNK_BYTES = 65_536;
/** Bytes joined into one write when frames queue up behind a write under way (fewer syscalls). */
const WRITE_BATCH_BYTES_MAX = 1_048_576;
/** Bytes waiting to be written, at most: a peer that reads nothing gets the connection closed, not our memory. */
export const SEND_QUEUE_BYTES_MAX = 67_108_864;
/** How long the close handshake may wait for the server's close frame before the TCP connection is cut. */
const CLOSE_WAIT_MS = 1_000;
/** Fragments of one message, at most: empty or tiny fragments could otherwise pile up under the byte limit. */
export const FRAGMENTS_MAX = 1_024;
/** Random bytes drawn at once for the masks (4 a frame): one getRandomValues per 1024 frames. */
const MASK_POOL_BYTES = 4_096;

/** A violation of RFC 6455 by the server, or a limit crossed: the connection is closed with `code`. */
export class WebSocketProtocolError extends Error {
  constructor(message: string, readonly code = 1002) {
    super(message);
    this.name = "WebSocketProtocolError";
  }
}

/** What the decoder found: a whole message, or a control frame. */
export type Decoded =
  | { kind: "text"; text: string }
  | { kind: "binary"; bytes: Uint8Array }
  | { kind: "ping"; payload: Uint8Array }
  | { kind: "pong" }
  | { kind: "close"; code: number; reason: string };

/** ignoreBOM: a leading U+FEFF is the message's own character, not a marker to strip. */
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const encoder = new TextEncoder();

/**
 * Frames as they arrive from a server, in pieces of any size: `push` returns what became whole.
 * It holds at most one frame header (14 bytes) and one message (up to `messageBytesMax`); a frame
 * whose declared length would take the message over that throws before any of its payload is kept.
 */
export class FrameDecoder {
  private readonly head = new Uint8Array(14);
  private headFilled = 0;
  /** The payload being read (null while a header is), how much of it came, and the frame's opcode and FIN. */
  private payload: Uint8Array | null = null;
  private payloadFilled = 0;
  private opcode = 0;
  private fin = false;
  /** The fragments of a message not finished yet (its first frame's opcode), and their total length. */
  private fragments: Uint8Array[] = [];
  private fragmentedOpcode = 0;
  private fragmentedBytes = 0;
  /** Set once a frame broke the protocol: nothing more is decoded. */
  private broken = false;

  constructor(private readonly messageBytesMax: number) {}

  push(chunk: Uint8Array): Decoded[] {
    if (this.broken) throw new WebSocketProtocolError("the connection already broke the protocol");
    const out: Decoded[] = [];
    let at = 0;
    try {
      // Each turn takes bytes from the chunk or ends a frame (one whose header came on the turn before).
      for (;;) {
        if (this.payload === null) {
          if (at === chunk.length) break;
          at = this.readHead(chunk, at);
        } else {
          const take = Math.min(chunk.length - at, this.payload.length - this.payloadFilled);
          this.payload.set(chunk.subarray(at, at + take), this.payloadFilled);
          this.payloadFilled += take;
          at += take;
        }
        const payload = this.payload as Uint8Array | null;
        if (payload !== null && this.payloadFilled === payload.length) {
          const decoded = this.frameDone();
          if (decoded) out.push(decoded);
        } else if (at === chunk.length) {
          break;
        }
      }
    } catch (error) {
      this.broken = true;
      throw error;
    }
    return out;
  }

  /** Copies header bytes from `chunk` at `at`; once the header is whole, checks it and starts the payload. Returns the new `at`. */
  private readHead(chunk: Uint8Array, at: number): number {
    const needed = this.headFilled < 2 ? 2 : headBytes(this.head[1]);
    const take = Math.min(needed - this.headFilled, chunk.length - at);
    this.head.set(chunk.subarray(at, at + take), this.headFilled);
    this.headFilled += take;
    at += take;
    if (this.headFilled < 2 || this.headFilled < headBytes(this.head[1])) return at;
    const [b0, b1] = this.head;
    if (b0 & 0x70) throw new WebSocketProtocolError("reserved bits set (no extension was agreed)");
    if (b1 & 0x80) throw new WebSocketProtocolError("a masked frame from the server (servers must not mask)");
    this.fin = (b0 & 0x80) !== 0;
    this.opcode = b0 & 0x0f;
    const length = this.declaredLength();
    const isControl = (this.opcode & 0x08) !== 0;
    if (isControl) {
      if (this.opcode !== OP.close && this.opcode !== OP.ping && this.opcode !== OP.pong) throw new WebSocketProtocolError(`unknown opcode ${this.opcode}`);
      if (!this.fin) throw new WebSocketProtocolError("a fragmented control frame");
      if (length > CONTROL_PAYLOAD_BYTES_MAX) throw new WebSocketProtocolError(`a control frame of ${length} bytes`);
    } else if (this.opcode === OP.continuation) {
      if (this.fragmentedOpcode === 0) throw new WebSocketProtocolError("a continuation frame with no message begun");
      if (this.fragments.length >= FRAGMENTS_MAX) throw new WebSocketProtocolError(`a message in over ${FRAGMENTS_MAX} fragments`, 1009);
    } else if (this.opcode === OP.text || this.opcode === OP.binary) {
      if (this.fragmentedOpcode !== 0) throw new WebSocketProtocolError("a new message before the last one ended");
    } else {
      throw new WebSocketProtocolError(`unknown opcode ${this.opcode}`);
    }
    // Checked on the header, before one byte of the payload is kept.
    if (!isControl && this.fragmentedBytes + length > this.messageBytesMax) {
      throw new WebSocketProtocolError(`a message over ${this.messageBytesMax} bytes`, 1009);
    }
    this.headFilled = 0;
    this.payload = new Uint8Array(length);
    this.payloadFilled = 0;
    return at;
  }

  /** The payload length the header declares; a length not in its shortest form, or over 2^53, is refused. */
  private declaredLength(): number {
    const short = this.head[1] & 0x7f;
    if (short < 126) return short;
    const view = new DataView(this.head.buffer, 2);
    if (short === 126) {
      const length = view.getUint16(0);
      if (length < 126) throw new WebSocketProtocolError("a length not in its shortest form");
      return length;
    }
    const high = view.getUint32(0);
    const length = high * 0x1_0000_0000 + view.getUint32(4);
    if (high > 0x1f_ffff) throw new WebSocketProtocolError("a 64-bit length over 2^53");
    if (length < 65_536) throw new WebSocketProtocolError("a length not in its shortest form");
    return length;
  }

  /** A frame's payload is whole: a control frame, or a fragment (a message once FIN). */
  private frameDone(): Decoded | null {
    const payload = this.payload!;
    this.payload = null;
    switch (this.opcode) {
      case OP.ping:
        return { kind: "ping", payload };
      case OP.pong:
        return { kind: "pong" };
      case OP.close:
        return decodeClose(payload);
    }
    if (this.opcode !== OP.continuation) this.fragmentedOpcode = this.opcode;
    if (!this.fin) {
      this.fragments.push(payload);
      this.fragmentedBytes += payload.length;
      return null;
    }
    const opcode = this.fragmentedOpcode;
    const whole = this.fragments.length === 0 ? payload : concat([...this.fragments, payload], this.fragmentedBytes + payload.length);
    this.fragments = [];
    this.fragmentedBytes = 0;
    this.fragmentedOpcode = 0;
    if (opcode === OP.binary) return { kind: "binary", bytes: whole };
    try {
      return { kind: "text", text: utf8.decode(whole) };
    } catch {
      throw new WebSocketProtocolError("a text message that is not UTF-8", 1007);
    }
  }
}

/** A header's length from its second byte: 2, plus the extended length's 2 or 8 bytes (a server's frame has no mask key). */
function headBytes(b1: number): number {
  const short = b1 & 0x7f;
  return short === 126 ? 4 : short === 127 ? 10 : 2;
}

function decodeClose(payload: Uint8Array): Decoded {
  if (payload.length === 0) return { kind: "close", code: 1005, reason: "" };
  if (payload.length === 1) throw new WebSocketProtocolError("a close frame of 1 byte");
  const code = (payload[0] << 8) | payload[1];
  if (!isCloseCodeOnWire(code)) throw new WebSocketProtocolError(`a close frame with code ${code}, which no endpoint may send`);
  let reason: string;
  try {
    reason = utf8.decode(payload.subarray(2));
  } catch {
    throw new WebSocketProtocolError("a close reason that is not UTF-8", 1007);
  }
  return { kind: "close", code, reason };
}

/**
 * Whether a close frame may carry `code` (RFC 6455 section 7.4): 1000-1003, 1007-1011, 1012-1014
 * (registered since with IANA), 3000-4999. Not 1004 (reserved), nor 1005, 1006 and 1015 (never on
 * the wire), nor the unregistered rest of 1000-2999, nor 0-999 or over 4999.
 */
export function isCloseCodeOnWire(code: number): boolean {
  if (code >= 3000 && code <= 4999) return true;
  return code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006;
}

function concat(parts: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** One frame to write, FIN set: masked with `mask` (a client's frames must be), or not (tests play a server with null). */
export function encodeFrame(opcode: number, payload: Uint8Array, mask: Uint8Array | null): Uint8Array {
  const length = payload.length;
  const lengthBytes = length < 126 ? 0 : length < 65_536 ? 2 : 8;
  const headLength = 2 + lengthBytes + (mask ? 4 : 0);
  const frame = new Uint8Array(headLength + length);
  frame[0] = 0x80 | opcode;
  frame[1] = (mask ? 0x80 : 0) | (lengthBytes === 0 ? length : lengthBytes === 2 ? 126 : 127);
  const view = new DataView(frame.buffer);
  if (lengthBytes === 2) view.setUint16(2, length);
  if (lengthBytes === 8) {
    view.setUint32(2, Math.floor(length / 0x1_0000_0000));
    view.setUint32(6, length >>> 0);
  }
  if (!mask) {
    frame.set(payload, headLength);
    return frame;
  }
  frame.set(mask, headLength - 4);
  for (let i = 0; i < length; i++) frame[headLength + i] = payload[i] ^ mask[i & 3];
  return frame;
}

/** The Sec-WebSocket-Accept a server must answer to `key`: base64(SHA-1(key + GUID)). */
export function acceptFor(key: string): string {
  return createHash("sha1").update(key + ACCEPT_GUID).digest("base64");
}

/** The upgrade request's text. */
export function upgradeRequest(url: URL, key: string): string {
  return [
    `GET ${url.pathname}${url.search} HTTP/1.1`,
    `Host: ${url.host}`,
    "Upgrade: websocket",
    "Connection: Upgrade",
    `Sec-WebSocket-Key: ${key}`,
    "Sec-WebSocket-Version: 13",
    "",
    "",
  ].join("\r\n");
}

/**
 * Checks the server's answer to the upgrade (the text up to its blank line): status 101, Upgrade
 * websocket, Connection upgrade, and the Accept of `key`; no extension or subprotocol, since none
 * was offered. Throws why it is refused.
 */
export function parseUpgradeAnswer(head: string, key: string): void {
  const [statusLine, ...lines] = head.split("\r\n");
  const status = /^HTTP\/1\.1 (\d{3})(?: |$)/.exec(statusLine);
  if (!status) throw new WebSocketProtocolError(`not an HTTP/1.1 answer: ${statusLine.slice(0, 100)}`);
  if (status[1] !== "101") throw new WebSocketProtocolError(`the upgrade was answered ${status[1]}`);
  const headers = new Map<string, string>();
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon <= 0) throw new WebSocketProtocolError(`a malformed header line: ${line.slice(0, 100)}`);
    headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  if (headers.get("upgrade")?.toLowerCase() !== "websocket") throw new WebSocketProtocolError("no Upgrade: websocket in the answer");
  if (!(headers.get("connection") ?? "").toLowerCase().split(",").some((token) => token.trim() === "upgrade")) {
    throw new WebSocketProtocolError("no Connection: upgrade in the answer");
  }
  if (headers.get("sec-websocket-accept") !== acceptFor(key)) throw new WebSocketProtocolError("a wrong Sec-WebSocket-Accept");
  if (headers.has("sec-websocket-extensions")) throw new WebSocketProtocolError("an extension nobody offered");
  if (headers.has("sec-websocket-protocol")) throw new WebSocketProtocolError("a subprotocol nobody offered");
}

/** A random Sec-WebSocket-Key: 16 random bytes in base64. */
function randomKey(): string {
  return btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
}

/** Masks for frames: random bytes drawn MASK_POOL_BYTES at a time. */
class MaskPool {
  private pool = new Uint8Array(MASK_POOL_BYTES);
  private at = MASK_POOL_BYTES;
  next(): Uint8Array {
    if (this.at === MASK_POOL_BYTES) {
      crypto.getRandomValues(this.pool);
      this.at = 0;
    }
    this.at += 4;
    return this.pool.subarray(this.at - 4, this.at);
  }
}

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
      // close() while TLS was set up: the connection it waited for is dropped at once.
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

/**
 * Reads the upgrade answer up to its blank line (at most UPGRADE_ANSWER_BYTES_MAX), checks it, and
 * returns the bytes read past it: the first frames, when the server sent them at once.
 */
async function readUpgradeAnswer(conn: Conn, key: string): Promise<Uint8Array> {
  const buffer = new Uint8Array(UPGRADE_ANSWER_BYTES_MAX);
  let filled = 0;
  while (filled < buffer.length) {
    const n = await conn.read(buffer.subarray(filled));
    if (n === null) throw new WebSocketProtocolError("the connection ended during the upgrade");
    // The blank line may straddle reads: search from 3 bytes before the new ones.
    const from = Math.max(0, filled - 3);
    filled += n;
    const end = indexOfBlankLine(buffer, from, filled);
    if (end >= 0) {
      parseUpgradeAnswer(new TextDecoder().decode(buffer.subarray(0, end)), key);
      return buffer.slice(end + 4, filled);
    }
  }
  throw new WebSocketProtocolError(`an upgrade answer over ${UPGRADE_ANSWER_BYTES_MAX} bytes`);
}

/** Where "\r\n\r\n" starts in buffer[from, to), or -1. */
function indexOfBlankLine(buffer: Uint8Array, from: number, to: number): number {
  for (let i = from; i + 3 < to; i++) {
    if (buffer[i] === 13 && buffer[i + 1] === 10 && buffer[i + 2] === 13 && buffer[i + 3] === 10) return i;
  }
  return -1;
}
