/**
 * The keys and MACs of peer authentication (docs/security.md "Peer authentication (HTTP)"): the
 * keys derived from the cluster secret, one per purpose, HMAC-SHA256 over a head and a body (whole,
 * or with a fixed prefix of the head hashed once: prefixedMac), the constant-time check, and the
 * nonces. What a head holds is the callers' (peer_head.ts, peer_frame.ts); the construction is here.
 */
import { Buffer } from "node:buffer";
import { createHash, createHmac, type Hash, hash, timingSafeEqual } from "node:crypto";

/** What the cluster secret is derived with for this channel (the UDP datagrams use another key). */
const KEY_PURPOSE = "mutexd peer v1";

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
 * The padded keys' bytes (RFC 2104: K ⊕ ipad, K ⊕ opad, each one block), for prefixedMac's
 * one-shot hashes.
 */
const padBlocks = new WeakMap<PeerKey, { ipad: Uint8Array; opad: Uint8Array }>();

function padBlocksOf(key: PeerKey): { ipad: Uint8Array; opad: Uint8Array } {
  let pads = padBlocks.get(key);
  if (pads === undefined) {
    const bytes = key.bytes.byteLength > SHA256_BLOCK_BYTES ? createHash("sha256").update(key.bytes).digest() : key.bytes;
    const ipad = new Uint8Array(SHA256_BLOCK_BYTES).fill(0x36);
    const opad = new Uint8Array(SHA256_BLOCK_BYTES).fill(0x5c);
    for (let i = 0; i < bytes.byteLength; i++) {
      ipad[i] ^= bytes[i];
      opad[i] ^= bytes[i];
    }
    pads = { ipad, opad };
    padBlocks.set(key, pads);
  }
  return pads;
}

/** SHA-256's digest: 32 bytes. */
const SHA256_BYTES = 32;
/**
 * The buffer a frame's inner hash input is written into (its key's ipad block, then the MACed
 * text's UTF-8), kept between calls up to this size; an input that may be longer (a large sync
 * chunk) hashes through copied Hash states instead, as before.
 */
const SCRATCH_BYTES_MAX = 64 * 1024;
let scratch = new Uint8Array(4_096);
/** The scratch after its pad block, where the text is written (a view made once per scratch, not per MAC). */
let scratchText = scratch.subarray(SHA256_BLOCK_BYTES);

/**
 * `mac` for many heads that begin with the same fields and end with integers (a stream's frames:
 * label, nonce, direction, sender and receiver, then seq, re and status), as hex: per frame only
 * the integers' JSON is written, not the whole head's (docs/bench.md "Replication cost", third
 * pass). The same bytes are MACed, so the same MAC as `mac(key, [...fixed, ...integers],
 * body).toString("hex")` (tests/peer_auth_test.ts). A frame's MAC is two one-shot SHA-256 (RFC 2104:
 * H((K ⊕ opad) ‖ H((K ⊕ ipad) ‖ m)), the message written once into a kept buffer): copying Hash
 * states cost two native objects per MAC, each freed by the garbage collector, and made a
 * replicated change's four MACs about 12 µs of CPU in the processes (docs/bench.md, sixth pass).
 * Integers only: JSON writes a safe integer as String does; anything else is a bug here, so it throws.
 */
export function prefixedMac(key: PeerKey, fixed: unknown[]): (integers: number[], body: string) => string {
  const { ipad, opad } = padBlocksOf(key);
  const { inner, outer: outerState } = paddedKey(key);
  // `["a","b"]` without its `]`: the integers continue the array.
  const prefix = fixed.length > 0 ? `${JSON.stringify(fixed).slice(0, -1)},` : "[";
  const innerAfterFixed = inner.copy().update(prefix);
  const outer = new Uint8Array(SHA256_BLOCK_BYTES + SHA256_BYTES);
  outer.set(opad);
  return (integers, body) => {
    // At least one: `[` + fixed + `,` continues only with an integer (an empty list would hash `[…,]`).
    if (integers.length === 0) throw new Error("prefixedMac: no integers");
    for (const n of integers) if (!Number.isSafeInteger(n)) throw new Error(`prefixedMac: ${n} is not a safe integer`);
    const head = `${integers.join(",")}]\n`;
    // UTF-8 takes at most 3 bytes per UTF-16 unit.
    const bytesBound = SHA256_BLOCK_BYTES + 3 * (prefix.length + head.length + body.length);
    if (bytesBound > SCRATCH_BYTES_MAX) {
      return outerState.copy().update(innerAfterFixed.copy().update(head).update(body).digest()).digest("hex");
    }
    if (bytesBound > scratch.byteLength) {
      scratch = new Uint8Array(bytesBound);
      scratchText = scratch.subarray(SHA256_BLOCK_BYTES);
    }
    scratch.set(ipad);
    const { written } = encoder.encodeInto(`${prefix}${head}${body}`, scratchText);
    outer.set(hash("sha256", scratch.subarray(0, SHA256_BLOCK_BYTES + written), "buffer") as unknown as Uint8Array, SHA256_BLOCK_BYTES);
    return hash("sha256", outer, "hex");
  };
}

/**
 * Whether `givenHex` is `expectedHex` (a MAC's 64 lowercase hex digits), compared in constant time:
 * every character is read whatever differs (no early exit), as timingSafeEqual does for bytes.
 */
export function hexMacMatches(givenHex: string, expectedHex: string): boolean {
  if (givenHex.length !== expectedHex.length || expectedHex.length !== 2 * SHA256_BYTES) return false;
  let difference = 0;
  for (let i = 0; i < expectedHex.length; i++) difference |= givenHex.charCodeAt(i) ^ expectedHex.charCodeAt(i);
  return difference === 0;
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
