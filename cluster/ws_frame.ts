/**
 * The RFC 6455 frame codec of cluster/ws_client.ts: frames decoded as they arrive in pieces of any
 * size, with every limit checked on a frame's header before its payload is kept (`FrameDecoder`),
 * client frames encoded and masked (`encodeFrame`, `MaskPool`), and the close codes an endpoint may
 * send. No I/O (MaskPool alone draws random bytes): it runs under both runtimes (tests/ws_client_test.ts).
 */

/** Opcodes (RFC 6455 section 5.2). */
export const OP = { continuation: 0x0, text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa } as const;
/** A control frame's payload is at most 125 bytes and never fragmented (section 5.5). */
export const CONTROL_PAYLOAD_BYTES_MAX = 125;
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

/** `parts` joined into one array of `total` bytes. */
export function concat(parts: Uint8Array[], total: number): Uint8Array {
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

/** Masks for frames: random bytes drawn MASK_POOL_BYTES at a time. */
export class MaskPool {
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
