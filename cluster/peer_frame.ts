/**
 * The replication stream's wire (docs/security.md "The replication stream"): its route, its frames
 * (`SEQ RE STATUS MAC\nBODY`, MACed per connection and direction) and the receiver's hello. Both
 * ends (peer_stream.ts, peer_stream_server.ts) read and write frames through here only.
 */
import { hexMacMatches, mac, macValid, type PeerKey, prefixedMac } from "./peer_mac.ts";

/** The route of the stream, and of the probe that comes before it. */
export const STREAM_PATH = "/v1/peer/stream";

/** Labels of what is MACed: a frame's MAC never passes for a request's or answer's of HTTP. */
const FRAME_LABEL = "mutexd peer stream frame v1";
const HELLO_LABEL = "mutexd peer stream hello v1";
/** The head's bytes a frame may have besides its body (four fields: three numbers and a MAC). */
export const FRAME_HEAD_BYTES_MAX = 128;
const NO_MAC = "-";
/**
 * A frame's head is `SEQ RE STATUS MAC`: SEQ and RE `0|[1-9][0-9]{0,14}`, STATUS `[0-9]{1,3}`, MAC
 * `[0-9a-f]{64}|-` (the expression tests/peer_frame_test.ts checks `parseFrame` against). SEQ 0 is
 * the hello's only: every other frame's must be above the last (FrameCodec.check).
 */
const SEQ_DIGITS_MAX = 15;
const STATUS_DIGITS_MAX = 3;
const MAC_HEX_DIGITS = 64;

type Direction = "request" | "answer";

/** A frame's fields once parsed; a malformed one is null. */
interface Frame {
  seq: number;
  re: number;
  status: number;
  mac: string;
  body: string;
}

/**
 * The decimal integer `text` holds from `from` to `to` (1 to `digitsMax` ASCII digits; with
 * `canonical`, no leading zero but "0" itself), or -1. At most 15 digits: exact as a number.
 */
function decimalAt(text: string, from: number, to: number, digitsMax: number, canonical: boolean): number {
  const length = to - from;
  if (length < 1 || length > digitsMax) return -1;
  if (canonical && length > 1 && text.charCodeAt(from) === 48) return -1;
  let value = 0;
  for (let i = from; i < to; i++) {
    const digit = text.charCodeAt(i) - 48;
    if (!(digit >= 0 && digit <= 9)) return -1;
    value = value * 10 + digit;
  }
  return value;
}

/** Whether `text` from `from` to `to` is a MAC's 64 lowercase hex digits, or `-` (none). */
function macAt(text: string, from: number, to: number): boolean {
  if (to - from === 1) return text.charCodeAt(from) === 45;
  if (to - from !== MAC_HEX_DIGITS) return false;
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i);
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false;
  }
  return true;
}

/**
 * A frame's fields, or null when malformed. Read in place, character by character: what a regular
 * expression's match cost per frame on each side (its match list, the head and four substrings,
 * three Number calls: about 120 ns under Bun, 160 under Deno; docs/bench.md "Ninth pass").
 */
export function parseFrame(text: string): Frame | null {
  const newline = text.indexOf("\n");
  if (newline < 0 || newline > FRAME_HEAD_BYTES_MAX) return null;
  const afterSeq = text.indexOf(" ");
  const afterRe = afterSeq < 0 ? -1 : text.indexOf(" ", afterSeq + 1);
  const afterStatus = afterRe < 0 ? -1 : text.indexOf(" ", afterRe + 1);
  if (afterStatus < 0 || afterStatus > newline) return null;
  const seq = decimalAt(text, 0, afterSeq, SEQ_DIGITS_MAX, true);
  const re = decimalAt(text, afterSeq + 1, afterRe, SEQ_DIGITS_MAX, true);
  const status = decimalAt(text, afterRe + 1, afterStatus, STATUS_DIGITS_MAX, false);
  if (seq < 0 || re < 0 || status < 0 || !macAt(text, afterStatus + 1, newline)) return null;
  return { seq, re, status, mac: text.slice(afterStatus + 1, newline), body: text.slice(newline + 1) };
}

/** What a connection's frames are MACed with: the peer key (none without a secret) and the receiver's nonce for it. */
export interface FrameKeys {
  key: PeerKey | undefined;
  nonce: string;
}

/**
 * A connection's frames one way (`direction` from `from` to `to`): their MAC covers the fixed
 * head [label, nonce, direction, from, to], its JSON made once per connection (peer_mac.ts
 * prefixedMac), then [seq, re, status], a newline and the body: the same MAC as over the whole
 * head's JSON per frame, which cost a replicated change up to four head JSONs (docs/bench.md
 * "Replication cost", third pass). The MAC travels and is checked as hex (no bytes decoded).
 */
export class FrameCodec {
  private readonly macOf: ((integers: number[], body: string) => string) | null;

  constructor(keys: FrameKeys, private readonly direction: Direction, from: string, to: string) {
    this.macOf = keys.key ? prefixedMac(keys.key, [FRAME_LABEL, keys.nonce, direction, from, to]) : null;
  }

  /** A frame to send: its text, MACed. */
  encode(frame: Omit<Frame, "mac">): string {
    const macHex = this.macOf ? this.macOf([frame.seq, frame.re, frame.status], frame.body) : NO_MAC;
    return `${frame.seq} ${frame.re} ${frame.status} ${macHex}\n${frame.body}`;
  }

  /** Why a received frame is refused (the security log's reason), or the frame; `lastSeq`: the last one taken. */
  check(lastSeq: number, text: string): Frame | { refused: string } {
    const frame = parseFrame(text);
    if (frame === null) return { refused: "peerStreamMalformed" };
    if (this.macOf && !hexMacMatches(frame.mac, this.macOf([frame.seq, frame.re, frame.status], frame.body))) {
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

/**
 * The connection's nonce from the receiver's first frame, or null when it is not this connection's
 * hello: malformed, a SEQ other than 0, or (with a key) a MAC that is not over this upgrade's MAC.
 */
export function helloNonce(key: PeerKey | undefined, server: string, client: string, upgradeMac: string, text: string): string | null {
  const hello = parseFrame(text);
  if (hello === null || hello.seq !== 0) return null;
  if (key && !macValid(key, helloHead(server, client, upgradeMac), hello.body, hello.mac)) return null;
  return hello.body;
}
