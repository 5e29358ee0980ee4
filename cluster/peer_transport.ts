/**
 * Requests between cluster members (replication, sync, arbiter): one POST per message over
 * keep-alive connections, superjson on the wire so snapshots keep their shape. Delivery is
 * "at most once, may time out": a timed-out request may still arrive, and every receiver
 * tolerates duplicates and stale epochs.
 */
import superjson from "superjson";
import type { TrustingFetch } from "../lib/client/tls.ts";

export interface PeerTransport {
  /** Sends `body` to `url` and resolves with the decoded answer; rejects on failure or timeout. */
  send(url: string, body: unknown, timeoutMs: number): Promise<unknown>;
}

export const PEER_CONTENT_TYPE = "application/x-superjson";

/** The transport over `fetchFn`: cluster/runtime.ts fetchFor(cluster.tlsCa), which verifies TLS peers. */
export function httpPeerTransport(fetchFn: TrustingFetch): PeerTransport {
  return {
    async send(url, body, timeoutMs) {
      const response = await fetchFn(url, {
        method: "POST",
        headers: { "content-type": PEER_CONTENT_TYPE },
        body: superjson.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
      const text = await response.text();
      if (!response.ok) throw new Error(`${url}: status ${response.status}: ${text.slice(0, 200)}`);
      return superjson.parse(text);
    },
  };
}

/** Decodes a peer request body; throws on anything that is not superjson of an object. */
export function decodePeerBody(text: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = superjson.parse(text);
  } catch (error) {
    throw new Error(`malformed peer message: ${(error as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new Error("peer message must be an object");
  return value as Record<string, unknown>;
}

export function encodePeerBody(value: unknown): string {
  return superjson.stringify(value);
}
