/**
 * The HTTP/1.1 upgrade of cluster/ws_client.ts (RFC 6455 section 4): the request, a random key, and
 * the server's answer read (bounded) and checked, Sec-WebSocket-Accept included. Only
 * `readUpgradeAnswer` touches a connection; the rest is pure and runs under both runtimes.
 */
import { createHash } from "node:crypto";
import { WebSocketProtocolError } from "./ws_frame.ts";

/** The GUID RFC 6455 section 1.3 appends to the key before hashing. */
const ACCEPT_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/** The longest upgrade answer read (status line and headers); longer is refused. */
const UPGRADE_ANSWER_BYTES_MAX = 8_192;

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
export function randomKey(): string {
  return btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
}

/** What the upgrade reads from (Deno.Conn's read). */
export interface Readable {
  read(buffer: Uint8Array): Promise<number | null>;
}

/**
 * Reads the upgrade answer up to its blank line (at most UPGRADE_ANSWER_BYTES_MAX), checks it, and
 * returns the bytes read past it: the first frames, when the server sent them at once.
 */
export async function readUpgradeAnswer(conn: Readable, key: string): Promise<Uint8Array> {
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
