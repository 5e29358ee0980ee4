/**
 * The ring's HTTP calls as simulated messages: a request carries method, path and the body as
 * JSON text, exactly what the binary's fetch sends, and the node answers it with its real Hono
 * app (cluster/ring/api.ts); the reply carries the status and the body text. Both the ring client
 * (lib/client/ring_client.ts, through `simFetch` in client.ts) and the nodes' peer calls travel
 * this way. A reply repeats its request's id.
 */
export interface HttpRequestMessage {
  type: "http";
  reqId: number;
  method: string;
  /** Path and query, e.g. `/v1/ring/peer/log?from=3`. */
  path: string;
  body?: string;
}

export interface HttpReplyMessage {
  type: "httpReply";
  reqId: number;
  status: number;
  body: string;
}

/**
 * A request that reached a crashed node: its host refused it (ECONNREFUSED), so nobody read it.
 * Only the nodes' peer calls take it as a failure; a client waits for its own timeout as before.
 */
export interface HttpRefusedMessage {
  type: "httpRefused";
  reqId: number;
}

export type RingMessage = HttpRequestMessage | HttpReplyMessage | HttpRefusedMessage;
