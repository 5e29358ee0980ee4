/**
 * Requests between the two lock servers and to the arbiter, as cluster/peer_transport.ts does
 * them: one POST per message, "at most once, may time out". A request carries the sender's
 * reference and incarnation; the answer repeats both (an HTTP response belongs to its request
 * and to the process that sent it: a restarted server never sees answers meant for its
 * predecessor). Bodies are copied on send (the real transport serializes them), so no object is
 * shared between two simulated processes.
 */
export interface RpcRequest {
  rpc: "request";
  ref: number;
  incarnation: number;
  body: unknown;
}

export interface RpcReply {
  rpc: "reply";
  ref: number;
  incarnation: number;
  body: unknown;
}

export function isRpc(payload: unknown): payload is RpcRequest | RpcReply {
  return typeof payload === "object" && payload !== null && "rpc" in payload;
}

/** What crosses the wire: a deep copy (superjson on the real wire). */
export function wire<T>(value: T): T {
  return structuredClone(value);
}
