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
 * `PeerSigner` is the sending side (peer_signer.ts; the two transports use `signer.fetch`),
 * `PeerVerifier` the receiving side (peer_verifier.ts), `peerAuthMiddleware` here serves it on a
 * Hono app's peer routes; what the MACs cover is peer_head.ts's, the keys and MACs peer_mac.ts's.
 * Without a secret there are neither: no headers, no checks (loopback only, cluster/config.ts).
 */
import type { Context, MiddlewareHandler } from "hono";
import { readBodyBytes, RequestError } from "./http_util.ts";
import type { SecurityLog } from "./security_log.ts";
import { FORMAT_HEADER } from "../lib/wire/version.ts";
import { HEADER_VALUE_LENGTH_MAX, PEER_HEADER } from "./peer_head.ts";
import { type PeerKey, peerKey } from "./peer_mac.ts";
import { type BaseFetch, type PeerFetch, peerFetchOf, plainPeerFetch, PeerSigner } from "./peer_signer.ts";
import { PeerVerifier, UNAUTHENTICATED_SENDER } from "./peer_verifier.ts";

/** What the drivers and the stream's tests import from here, where it was before the split. */
export { derivedKey, mac, type PeerKey, peerKey } from "./peer_mac.ts";
export { PEER_HEADER } from "./peer_head.ts";
export { type PeerFetch, plainPeerFetch, PeerSigner } from "./peer_signer.ts";
export { PeerVerifier } from "./peer_verifier.ts";

/** The longest path put in a refusal's log line (the path is the sender's to choose). */
const PATH_LOGGED_MAX = 256;

const encoder = new TextEncoder();

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
