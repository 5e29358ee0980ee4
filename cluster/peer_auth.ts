/**
 * Authenticated HTTP between cluster members (docs/security.md "Peer authentication (HTTP)"):
 * with a cluster secret every peer request and its answer carries an HMAC-SHA256, and a replay
 * is refused, across restarts of either side too, without synchronized clocks or disk.
 *
 * A request carries `x-mutexd-from` (the sender's id), `x-mutexd-nonce`, `x-mutexd-seq` and
 * `x-mutexd-mac` over a label, from, the RECEIVER's id, nonce, seq, method, path with query, the
 * wire format version (`x-mutexd-format`, lib/wire/version.ts; not when 1.0) and the body's bytes. The receiver issues the nonces: a request with a valid MAC under a nonce it
 * did not issue to that sender in this process is answered 401 `peer_challenge` with a nonce
 * (`x-mutexd-challenge`), which the sender takes and retries with at once. Under a nonce a
 * sliding window of seqs (the highest and a bitmap, as IPsec does) refuses a seq seen before.
 * So a message captured before a restart of either side carries a nonce no longer accepted, and
 * one captured since is refused by the window. The answer carries `x-mutexd-mac` over a label,
 * the request's MAC, the status, the challenge (if any) and the answer's body, so a forged ack
 * is refused by the sender as a network error would be.
 *
 * `PeerSigner` is the sending side (the two transports use `signer.fetch`), `PeerVerifier` the
 * receiving side, `peerAuthMiddleware` serves it on a Hono app's peer routes. Without a secret
 * there are neither: no headers, no checks (loopback only, cluster/config.ts).
 */
import { Buffer } from "node:buffer";
import { createHash, createHmac, type Hash, timingSafeEqual } from "node:crypto";
import type { Context, MiddlewareHandler } from "hono";
import { readBodyBytes, RequestError } from "./http_util.ts";
import type { SecurityLog } from "./security_log.ts";
import { FORMAT_HEADER, formatText, UNVERSIONED, WIRE_FORMAT } from "../lib/wire/version.ts";

export const PEER_HEADER = {
  from: "x-mutexd-from",
  nonce: "x-mutexd-nonce",
  seq: "x-mutexd-seq",
  mac: "x-mutexd-mac",
  challenge: "x-mutexd-challenge",
} as const;

/** Labels of what is MACed: a request's MAC can never pass for an answer's, nor a v1 one for a later scheme's. */
const REQUEST_LABEL = "mutexd peer request v1";
const ANSWER_LABEL = "mutexd peer answer v1";
/** What the cluster secret is derived with for this channel (the UDP datagrams use another key). */
const KEY_PURPOSE = "mutexd peer v1";

/** Seqs remembered below the highest under one nonce: requests run concurrently and arrive out of order. */
export const SEQ_WINDOW = 1_024;
/** Longest sender id and nonce taken from the headers (ours are short; a long one is not ours). */
const HEADER_VALUE_LENGTH_MAX = 128;
const SEQ_PATTERN = /^[1-9][0-9]{0,14}$/;
/** The sender a refusal is counted and logged under while the MAC has not proven who sent it. */
export const UNAUTHENTICATED_SENDER = "unauthenticated";
/** The longest path put in a refusal's log line (the path is the sender's to choose). */
const PATH_LOGGED_MAX = 256;

const encoder = new TextEncoder();

/**
 * The HMAC key of the peer requests: its raw bytes, for `node:crypto`'s synchronous createHmac
 * (a shared built-in under Deno and Bun). Web Crypto's HMAC is async and cost 12 µs per MAC
 * under Bun against 0.6 µs for createHmac (26 against 5.5 µs under Deno), four MACs per peer
 * request (docs/security.md "Peer authentication"); the construction and the MACs are the same.
 */
export interface PeerKey {
  readonly bytes: Uint8Array;
}

/** The HMAC key for peer requests, derived from the cluster secret: HMAC(secret, KEY_PURPOSE). */
export function peerKey(secret: string): Promise<PeerKey> {
  return Promise.resolve({ bytes: derivedKeyBytes(secret, KEY_PURPOSE) });
}

/**
 * An HMAC-SHA256 key for one purpose, HMAC(secret, purpose): each use of the cluster secret
 * (peer requests here, repair datagrams in ring/udp.ts) has its own label, so a MAC made for one
 * never serves for another.
 */
export function derivedKeyBytes(secret: string, purpose: string): Uint8Array {
  return createHmac("sha256", encoder.encode(secret)).update(encoder.encode(purpose)).digest();
}

/** `derivedKeyBytes` imported as a Web Crypto key for sign and verify (ring/udp.ts). */
export function derivedKey(secret: string, purpose: string): Promise<CryptoKey> {
  const hmac = { name: "HMAC", hash: "SHA-256" };
  return crypto.subtle.importKey("raw", new Uint8Array(derivedKeyBytes(secret, purpose)), hmac, false, ["sign", "verify"]);
}

/** What a request's MAC covers, besides the body. */
export interface RequestHead {
  from: string;
  to: string;
  nonce: string;
  seq: number;
  method: string;
  /** The path with its query, as sent (`/v1/ring/peer/log?from=5`). */
  path: string;
  /** The wire format the request names (FORMAT_HEADER); absent or "" for none (a build before versions). */
  format?: string;
}

/** SHA-256's block: HMAC pads its key to it (RFC 2104). */
const SHA256_BLOCK_BYTES = 64;

/**
 * A key's two SHA-256 states after its padded key (RFC 2104: HMAC(K, m) = H((K ⊕ opad) ‖ H((K ⊕
 * ipad) ‖ m))), made once per key and copied for each MAC: createHmac hashes both padded keys again
 * at every call. Under Deno a frame's MAC (400-byte body, text) took 3.7 µs against 9.8 µs with
 * createHmac and TextEncoder; under Bun both about 0.8 µs (tests/bench/frame_mac_cost.ts, load 1.4).
 * The same MACs as createHmac's and Web Crypto's (tests/peer_auth_test.ts).
 */
const paddedKeys = new WeakMap<PeerKey, { inner: Hash; outer: Hash }>();

function paddedKey(key: PeerKey): { inner: Hash; outer: Hash } {
  let states = paddedKeys.get(key);
  if (states === undefined) {
    // A key longer than a block is hashed first (RFC 2104); a derived key has 32 bytes.
    const bytes = key.bytes.byteLength > SHA256_BLOCK_BYTES ? createHash("sha256").update(key.bytes).digest() : key.bytes;
    const ipad = Buffer.alloc(SHA256_BLOCK_BYTES, 0x36);
    const opad = Buffer.alloc(SHA256_BLOCK_BYTES, 0x5c);
    for (let i = 0; i < bytes.byteLength; i++) {
      ipad[i] ^= bytes[i];
      opad[i] ^= bytes[i];
    }
    states = { inner: createHash("sha256").update(ipad), outer: createHash("sha256").update(opad) };
    paddedKeys.set(key, states);
  }
  return states;
}

/**
 * The MAC (HMAC-SHA256) over the bytes MACed: a JSON array of the label and the head (JSON escapes
 * every newline, so the first newline ends it unambiguously), a newline, the body. A body given as
 * text is MACed as its UTF-8 bytes, the same as TextEncoder's (tests/peer_auth_test.ts), so the
 * stream hands its frames' text over without a copy.
 */
export function mac(key: PeerKey, head: unknown[], body: Uint8Array | string): Buffer {
  const { inner, outer } = paddedKey(key);
  const innerDigest = inner.copy().update(JSON.stringify(head) + "\n").update(body).digest();
  return outer.copy().update(innerDigest).digest();
}

/**
 * `mac` for many heads that begin with the same fields and end with integers (a stream's frames:
 * label, nonce, direction, sender and receiver, then seq, re and status): the fixed fields' JSON is
 * hashed once into a copy of the key's inner state, and each call hashes only the integers, the
 * newline and the body. The same bytes, so the same MAC as `mac(key, [...fixed, ...integers],
 * body)` (tests/peer_auth_test.ts); per frame it skips JSON.stringify of the whole head and hashing
 * its ~100 fixed bytes again (docs/bench.md "Replication cost", third pass). Integers only: JSON
 * writes a safe integer as String does; anything else is a bug here, so it throws.
 */
export function prefixedMac(key: PeerKey, fixed: unknown[]): (integers: number[], body: string) => Buffer {
  const { inner, outer } = paddedKey(key);
  const fixedJson = JSON.stringify(fixed);
  // `["a","b"]` without its `]`: the integers continue the array.
  const innerAfterFixed = inner.copy().update(fixed.length > 0 ? `${fixedJson.slice(0, -1)},` : "[");
  return (integers, body) => {
    // At least one: `[` + fixed + `,` continues only with an integer (an empty list would hash `[…,]`).
    if (integers.length === 0) throw new Error("prefixedMac: no integers");
    for (const n of integers) if (!Number.isSafeInteger(n)) throw new Error(`prefixedMac: ${n} is not a safe integer`);
    const innerDigest = innerAfterFixed.copy().update(`${integers.join(",")}]\n`).update(body).digest();
    return outer.copy().update(innerDigest).digest();
  };
}

/** The wire format every peer request of this build names. */
const OUR_FORMAT = formatText(WIRE_FORMAT);
const UNVERSIONED_TEXT = formatText(UNVERSIONED);

/**
 * The format is MACed unless it is 1.0 or absent (the same: a build before versions sent none),
 * so a request of format 1.0 is signed as such a build signs it and the two still understand
 * each other during the rolling upgrade that brings in versions; any other format is covered.
 */
const formatSigned = (format: string | undefined) => (format === undefined || format === "" || format === UNVERSIONED_TEXT ? [] : [format]);
const requestHead = (h: RequestHead) => [REQUEST_LABEL, h.from, h.to, h.nonce, h.seq, h.method, h.path, ...formatSigned(h.format)];
const answerHead = (requestMac: string, status: number, challenge: string) => [ANSWER_LABEL, requestMac, status, challenge];

/** The MAC of a request (hex): what `x-mutexd-mac` carries. */
export function signRequest(key: PeerKey, head: RequestHead, body: Uint8Array): string {
  return mac(key, requestHead(head), body).toString("hex");
}

/** Checks `macHex` over the head and body, comparing in constant time. */
export function macValid(key: PeerKey, head: unknown[], body: Uint8Array | string, macHex: string): boolean {
  return macMatches(macHex, mac(key, head, body));
}

/** Whether `macHex` is the hex of `expected` (32 bytes), compared in constant time. */
export function macMatches(macHex: string, expected: Buffer): boolean {
  const given = fromHex(macHex);
  return given !== null && given.byteLength === 32 && timingSafeEqual(given, expected);
}

function fromHex(text: string): Uint8Array | null {
  if (text.length % 2 !== 0 || !/^[0-9a-f]*$/.test(text)) return null;
  return Buffer.from(text, "hex");
}

export function freshNonce(): string {
  return Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString("hex");
}

/** One peer request as the transports make it. */
export interface PeerRequest {
  method: "GET" | "POST";
  /** The text sent as the body (absent for a GET). */
  body?: string;
  contentType?: string;
  timeoutMs: number;
}

/** An answer whose MAC was checked (or, without a secret, any answer). */
export interface PeerAnswer {
  status: number;
  text: string;
  /**
   * The wire format the answer names (FORMAT_HEADER; every node's answers carry it), so a sender
   * learns which optional fields the peer reads (cluster/ring/http_peers.ts). Absent: none (a
   * build before versions, 1.0). Not under the answer's MAC: a forged one can at most make the
   * sender leave optional fields out (safe) or put in fields the peer refuses, which an attacker
   * on the path could do anyway by dropping the request.
   */
  format?: string;
}

/** Sends one request to cluster member `to` at `url` and resolves with its answer; rejects on failure or timeout. */
export type PeerFetch = (to: string, url: string, request: PeerRequest) => Promise<PeerAnswer>;

/** The fetch a request goes out with (the runtime's; with TLS one that checks the peer's certificate). */
export type BaseFetch = (url: string, init: RequestInit) => Promise<Response>;

const globalFetch: BaseFetch = (url, init) => fetch(url, init);


/** Without a secret: a plain request over `send`, no headers (loopback only). */
export function plainPeerFetch(send: BaseFetch = globalFetch): PeerFetch {
  return async (_to, url, request) => {
    const response = await send(url, {
      method: request.method,
      headers: { ...(request.contentType ? { "content-type": request.contentType } : {}), [FORMAT_HEADER]: OUR_FORMAT },
      body: request.body,
      signal: AbortSignal.timeout(request.timeoutMs),
    });
    return { status: response.status, text: await response.text(), ...formatOf(response) };
  };
}

/** The answer's FORMAT_HEADER as PeerAnswer carries it. */
function formatOf(response: Response): { format?: string } {
  const format = response.headers.get(FORMAT_HEADER);
  return format === null ? {} : { format };
}

/** The signing fetch with a secret, the plain one without. */
export function peerFetchOf(signer: PeerSigner | undefined): PeerFetch {
  return signer ? (to, url, request) => signer.fetch(to, url, request) : plainPeerFetch();
}

/**
 * The sending side: per receiver the nonce it issued and the last seq used under it. A challenge
 * answer (MAC checked) gives a new nonce; the request is sent once more under it, at once.
 * Before the first contact the nonce is one this process made up (the receiver knows it not, so
 * it challenges): with the same nonce in every process ("" once), a restarted sender's first
 * request could carry the MAC of an earlier process's first request, and a challenge answer
 * captured then, replayed to it, was valid and moved it to a nonce whose window has long seen
 * its seqs: every request refused as a replay, from one injected answer.
 */
export class PeerSigner {
  private readonly sessions = new Map<string, { nonce: string; seq: number }>();

  /** `send`: the fetch to use (tests put a recording or tampering proxy there). */
  constructor(
    private readonly key: PeerKey,
    readonly self: string,
    private readonly send: BaseFetch = globalFetch,
  ) {}

  async fetch(to: string, url: string, request: PeerRequest): Promise<PeerAnswer> {
    const body = encoder.encode(request.body ?? "");
    const first = await this.attempt(to, url, request, body);
    if (first.challenge === null) return first.answer;
    const session = this.session(to);
    // Concurrent requests may all be challenged: the first to come back moves to the new nonce,
    // the others find it moved and retry under it.
    if (session.nonce === first.nonce) {
      session.nonce = first.challenge;
      session.seq = 0;
    }
    const second = await this.attempt(to, url, request, body);
    if (second.challenge !== null) throw new Error(`${to} ${request.method} ${url}: challenged twice`);
    return second.answer;
  }

  private session(to: string): { nonce: string; seq: number } {
    let session = this.sessions.get(to);
    if (!session) {
      session = { nonce: freshNonce(), seq: 0 };
      this.sessions.set(to, session);
    }
    return session;
  }

  /** One signed request; its answer's MAC checked (a bad one throws). */
  /**
   * The authentication of one request to `to` (`path` with its query, as the receiver sees it)
   * under the session's nonce and its next seq: the headers, by PEER_HEADER's and FORMAT_HEADER's
   * names. The stream's upgrade (peer_stream.ts) carries them in its query.
   */
  sign(to: string, method: string, path: string, body: Uint8Array): { nonce: string; headers: Record<string, string> } {
    const session = this.session(to);
    const nonce = session.nonce;
    session.seq += 1;
    const head: RequestHead = { from: this.self, to, nonce, seq: session.seq, method, path, format: OUR_FORMAT };
    const headers = {
      [PEER_HEADER.from]: head.from,
      [PEER_HEADER.nonce]: nonce,
      [PEER_HEADER.seq]: String(head.seq),
      [PEER_HEADER.mac]: signRequest(this.key, head, body),
      [FORMAT_HEADER]: OUR_FORMAT,
    };
    return { nonce, headers };
  }

  private async attempt(to: string, url: string, request: PeerRequest, body: Uint8Array<ArrayBuffer>) {
    const parsed = new URL(url);
    const { nonce, headers } = this.sign(to, request.method, parsed.pathname + parsed.search, body);
    const requestMac = headers[PEER_HEADER.mac];
    const response = await this.send(url, {
      method: request.method,
      headers: {
        ...(request.contentType ? { "content-type": request.contentType } : {}),
        ...headers,
      },
      body: request.method === "GET" ? undefined : body,
      signal: AbortSignal.timeout(request.timeoutMs),
    });
    const answerBody = new Uint8Array(await response.arrayBuffer());
    const challenge = response.headers.get(PEER_HEADER.challenge) ?? "";
    const answerMac = response.headers.get(PEER_HEADER.mac) ?? "";
    if (!macValid(this.key, answerHead(requestMac, response.status, challenge), answerBody, answerMac)) {
      // An answer we cannot trust is no answer: a forged ack would lose an acknowledged write.
      const text = new TextDecoder().decode(answerBody.subarray(0, 200));
      throw new Error(`${to} ${request.method} ${url}: answer (status ${response.status}) without a valid MAC: ${text}`);
    }
    const answer: PeerAnswer = { status: response.status, text: new TextDecoder().decode(answerBody), ...formatOf(response) };
    const challenged = response.status === 401 && challenge !== "";
    return { answer, nonce, challenge: challenged ? challenge : null };
  }
}

/** What the receiver holds of one sender: the nonce in use with its window, and the one issued since. */
interface SenderState {
  current: { nonce: string; highestSeq: number; seen: Uint8Array } | null;
  /** Issued in a challenge and not used yet: its first valid request makes it current. */
  pending: string | null;
}

/** The receiver's verdict on a request. */
export type PeerVerdict =
  | { ok: true; from: string; requestMac: string }
  /** 401 `unauthorized`; `requestMac` is set when the MAC was valid (the answer is then signed). */
  | { ok: false; code: "unauthorized"; reason: string; message: string; sender: string; requestMac?: string }
  /** 401 `peer_challenge`: a valid request under a nonce not (or no longer) ours; take `challenge`. */
  | { ok: false; code: "peer_challenge"; reason: "peerChallenged"; message: string; sender: string; requestMac: string; challenge: string };

/** A request as the receiver sees it: the four headers (null when absent), method, path with query, body. */
export interface ReceivedRequest {
  headers: { from: string | null; nonce: string | null; seq: string | null; mac: string | null; format?: string | null };
  method: string;
  path: string;
  body: Uint8Array;
}

/**
 * The receiving side: checks a request's MAC (with its own id as the receiver), then its nonce
 * and seq. State per known sender only (a request without a valid MAC, or from an id that is no
 * member, makes none), one bitmap of SEQ_WINDOW bits each.
 */
export class PeerVerifier {
  private readonly senders = new Map<string, SenderState>();

  /** `isMember(id)`: whether `id` is a member of the cluster (read at each request: a reload may add one). */
  constructor(private readonly key: PeerKey, readonly self: string, private readonly isMember: (id: string) => boolean) {}

  verify(request: ReceivedRequest): PeerVerdict {
    const { from, nonce, seq, mac: givenMac } = request.headers;
    // The sender the refusal is logged under (SecurityLog logs once per sender and reason): the
    // claimed id only once the MAC proved it. An unproven one is the attacker's choice, and a new
    // id on every forged request would have made every one of them a log line.
    const refuse = (reason: string, message: string, requestMac?: string): PeerVerdict =>
      ({ ok: false, code: "unauthorized", reason, message, sender: requestMac !== undefined && from !== null ? from : UNAUTHENTICATED_SENDER, requestMac });
    if (from === null || nonce === null || seq === null || givenMac === null) {
      return refuse("peerUnauthenticated", `a peer request needs the headers ${Object.values(PEER_HEADER).slice(0, 4).join(", ")}`);
    }
    if (from.length === 0 || from.length > HEADER_VALUE_LENGTH_MAX || nonce.length > HEADER_VALUE_LENGTH_MAX || !SEQ_PATTERN.test(seq)) {
      return refuse("peerUnauthenticated", "malformed peer authentication headers");
    }
    const head: RequestHead = { from, to: this.self, nonce, seq: Number(seq), method: request.method, path: request.path, format: request.headers.format ?? "" };
    if (!macValid(this.key, requestHead(head), request.body, givenMac)) {
      return refuse("peerForged", `the request's MAC is not valid for ${this.self} (wrong secret, receiver or content)`);
    }
    if (!this.isMember(from)) return refuse("peerUnknownSender", `${from} is no member of this cluster`, givenMac);
    const state = this.senders.get(from) ?? { current: null, pending: null };
    this.senders.set(from, state);
    if (nonce === state.pending && nonce !== "") {
      // The sender took the nonce issued last: it is the one in use now, the older one is retired.
      state.current = { nonce, highestSeq: 0, seen: new Uint8Array(SEQ_WINDOW / 8) };
      state.pending = null;
    }
    if (state.current === null || nonce !== state.current.nonce) {
      // Unknown to this process (a restart of either side, or a replay from before one): one
      // nonce is issued until taken, whoever asks, so a flood of replays cannot push it out.
      state.pending ??= freshNonce();
      return { ok: false, code: "peer_challenge", reason: "peerChallenged", message: `${from}: take the nonce in ${PEER_HEADER.challenge} and retry`, sender: from, requestMac: givenMac, challenge: state.pending };
    }
    const replay = admitSeq(state.current, head.seq);
    if (replay) return refuse("peerReplayed", `seq ${head.seq} from ${from}: ${replay}`, givenMac);
    return { ok: true, from, requestMac: givenMac };
  }

  /** The MAC of the answer to a request whose MAC was valid. */
  signAnswer(requestMac: string, status: number, challenge: string, body: Uint8Array): string {
    return mac(this.key, answerHead(requestMac, status, challenge), body).toString("hex");
  }
}

/** Records `seq` in the window, or says why it is refused (seen, or below the window). */
function admitSeq(window: { highestSeq: number; seen: Uint8Array }, seq: number): string | null {
  const bit = (s: number) => [Math.floor((s % SEQ_WINDOW) / 8), 1 << (s % 8)] as const;
  if (seq > window.highestSeq) {
    // Clear the bits of the seqs the window moves over (at most all of them).
    const clearFrom = Math.max(window.highestSeq + 1, seq - SEQ_WINDOW + 1);
    for (let s = clearFrom; s <= seq; s++) {
      const [i, mask] = bit(s);
      window.seen[i] &= ~mask;
    }
    window.highestSeq = seq;
  } else if (window.highestSeq - seq >= SEQ_WINDOW) {
    return `below the window (highest ${window.highestSeq})`;
  }
  const [i, mask] = bit(seq);
  if (window.seen[i] & mask) return "seen before (a replay)";
  window.seen[i] |= mask;
  return null;
}

const SENDER_KEY = "mutexdPeerSender";

/** The sender a request authenticated as; `check` refuses a body whose `from` claims another. */
export interface AuthenticatedSender {
  id: string;
  /** Throws 401 `unauthorized` (counted as `peerFromMismatch`) unless `claimed` is this sender's id. */
  check(claimed: unknown): void;
}

/** The authenticated sender of a peer request, or undefined (no secret, or the simulator). */
export function authenticatedSender(c: Context): AuthenticatedSender | undefined {
  return (c.get as (key: string) => unknown)(SENDER_KEY) as AuthenticatedSender | undefined;
}

/** The sender `id` proved by a MAC (of a request, or of a stream's upgrade): `path` names where, in a refusal's log line. */
export function senderProvenAs(id: string, security: SecurityLog, path: string): AuthenticatedSender {
  return {
    id,
    check(claimed) {
      if (claimed === id) return;
      security.refused("peerFromMismatch", id, { claimed: String(claimed).slice(0, HEADER_VALUE_LENGTH_MAX), path: path.slice(0, PATH_LOGGED_MAX) });
      throw new RequestError("unauthorized", `the message says it is from ${String(claimed).slice(0, HEADER_VALUE_LENGTH_MAX)}, but ${id} sent it`);
    },
  };
}

/**
 * Hono middleware for the peer routes: refuses (401, counted in `security`, nothing changes) a
 * request that does not verify, answers a challenge, and signs every answer to a request whose
 * MAC was valid. `bodyBytesMax`: the largest body of the routes it guards (each route checks
 * its own limit on the bytes read here, which Hono keeps).
 */
export function peerAuthMiddleware(verifier: PeerVerifier, security: SecurityLog, readBody: (c: Context) => Promise<Uint8Array>): MiddlewareHandler {
  return async (c, next) => {
    const url = new URL(c.req.url);
    const from = c.req.header(PEER_HEADER.from) ?? null;
    let requestBody: Uint8Array = new Uint8Array();
    if (c.req.method !== "GET") {
      try {
        requestBody = await readBody(c);
      } catch (error) {
        // Over the limit (413) before the MAC can be checked: counted as refused input too.
        if (error instanceof RequestError) security.refused("peerBodyTooLarge", (from ?? "unknown").slice(0, HEADER_VALUE_LENGTH_MAX), { path: url.pathname });
        throw error;
      }
    }
    const verdict = verifier.verify({
      headers: {
        from,
        nonce: c.req.header(PEER_HEADER.nonce) ?? null,
        seq: c.req.header(PEER_HEADER.seq) ?? null,
        mac: c.req.header(PEER_HEADER.mac) ?? null,
        format: c.req.header(FORMAT_HEADER) ?? null,
      },
      method: c.req.method,
      path: url.pathname + url.search,
      body: requestBody,
    });
    if (!verdict.ok) {
      const claimed = c.req.header(PEER_HEADER.from);
      security.refused(verdict.reason, verdict.sender, {
        path: url.pathname.slice(0, PATH_LOGGED_MAX),
        ...(verdict.sender === UNAUTHENTICATED_SENDER && claimed !== undefined ? { claimed: claimed.slice(0, HEADER_VALUE_LENGTH_MAX) } : {}),
      });
      const challenge = verdict.code === "peer_challenge" ? verdict.challenge : "";
      const body = encoder.encode(JSON.stringify({ error: { code: verdict.code, message: verdict.message } }));
      const headers: Record<string, string> = { "content-type": "application/json" };
      if (challenge) headers[PEER_HEADER.challenge] = challenge;
      if (verdict.requestMac) headers[PEER_HEADER.mac] = verifier.signAnswer(verdict.requestMac, 401, challenge, body);
      return new Response(body, { status: 401, headers });
    }
    (c.set as (key: string, value: unknown) => void)(SENDER_KEY, senderProvenAs(verdict.from, security, url.pathname));
    await next();
    // The answer read whole (peer answers are bounded like the requests), MACed, sent as bytes.
    const answered = c.res;
    const body = new Uint8Array(await answered.arrayBuffer());
    const headers = new Headers(answered.headers);
    headers.set(PEER_HEADER.mac, verifier.signAnswer(verdict.requestMac, answered.status, "", body));
    c.res = undefined;
    c.res = new Response(body, { status: answered.status, headers });
  };
}

/** A process's peer authentication: the fetch its transports use, the middleware its peer routes get. */
export interface PeerAuth {
  peerFetch: PeerFetch;
  /** Undefined without a secret: the routes take every request, as before. */
  middleware: MiddlewareHandler | undefined;
  /** The key and both sides, for the replication stream (peer_stream.ts); undefined without a secret. */
  keyed: { key: PeerKey; signer: PeerSigner; verifier: PeerVerifier } | undefined;
}

/**
 * Peer authentication for member `self` from the cluster's secret (the key imported once), or
 * plain HTTP without one. `isMember` is read at each request; `bodyBytesMax` bounds what the
 * middleware reads before the MAC is checked (the largest body of the routes it guards).
 */
export async function startPeerAuth(
  options: {
    secret: string | undefined;
    self: string;
    isMember: (id: string) => boolean;
    security: SecurityLog;
    bodyBytesMax: number;
    /** What the requests go out with (default: the runtime's fetch). */
    fetch?: BaseFetch;
  },
): Promise<PeerAuth> {
  if (options.secret === undefined) return { peerFetch: plainPeerFetch(options.fetch), middleware: undefined, keyed: undefined };
  const key = await peerKey(options.secret);
  const signer = new PeerSigner(key, options.self, options.fetch);
  const verifier = new PeerVerifier(key, options.self, options.isMember);
  return {
    peerFetch: peerFetchOf(signer),
    middleware: peerAuthMiddleware(verifier, options.security, (c) => readBodyBytes(c, options.bodyBytesMax)),
    keyed: { key, signer, verifier },
  };
}
