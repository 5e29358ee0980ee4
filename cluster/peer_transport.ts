/**
 * Requests between cluster members (replication, sync, arbiter): one POST per message over
 * keep-alive connections, plain JSON on the wire. Delivery is "at most once, may time out": a
 * timed-out request may still arrive, and every receiver tolerates duplicates and stale epochs.
 *
 * Every message is plain data (strings, finite numbers, booleans, null, arrays and objects; the
 * schemas of lib/wire/lock_peer.ts admit nothing else, and a table copy travels as JSON text
 * already), so JSON carries it as it is. It was superjson until issue 14: superjson's walk of
 * every value was a third of a replicating primary's CPU (docs/bench.md, "Replication cost"),
 * for types no peer message has. A member still speaking superjson sends `{"json": …}`, which
 * no schema accepts: it is refused (400), not misread.
 */
import { type PeerFetch, plainPeerFetch } from "./peer_signer.ts";

export interface PeerTransport {
  /** Sends `body` to `url` and resolves with the decoded answer; rejects on failure or timeout. */
  send(url: string, body: unknown, timeoutMs: number): Promise<unknown>;
}

export const PEER_CONTENT_TYPE = "application/json";

/**
 * The transport over HTTP: `peerFetch` signs the request and checks the answer when the cluster
 * has a secret (peer_auth.ts); `idOf` names the member a URL belongs to (the MAC covers it).
 */
export function httpPeerTransport(peerFetch: PeerFetch = plainPeerFetch(), idOf: (url: string) => string = () => ""): PeerTransport {
  return {
    async send(url, body, timeoutMs) {
      const answer = await peerFetch(idOf(url), url, { method: "POST", contentType: PEER_CONTENT_TYPE, body: encodePeerBody(body), timeoutMs });
      if (answer.status !== 200) throw new Error(`${url}: status ${answer.status}: ${answer.text.slice(0, 200)}`);
      return decodePeerBody(answer.text);
    },
  };
}

/** Decodes a peer message (a request's body or an answer); throws on anything that is not JSON of an object. */
export function decodePeerBody(text: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new Error(`malformed peer message: ${(error as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new Error("peer message must be an object");
  return value as Record<string, unknown>;
}

export function encodePeerBody(value: unknown): string {
  return JSON.stringify(value);
}
