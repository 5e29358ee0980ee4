/**
 * The lock API as simulated messages: one request type per HTTP route of cluster/lock_api.ts,
 * and replies shaped like its JSON answers. Each request carries an id the reply repeats, as an
 * HTTP response belongs to its request. Open, close and leave carry the client's idempotency
 * key (`requestId`, the same on every retry of one call), as lib/client/lock_client.ts sends it;
 * the servers pass it to the core, as lock_api.ts does.
 */
import type { Mode, Output } from "../../../lib/core/lock_table.ts";

export type LockRequest =
  | { type: "open"; reqId: number; ttlMs: number; requestId?: string }
  | { type: "keepalive"; reqId: number; session: string }
  | { type: "close"; reqId: number; session: string; requestId?: string }
  | { type: "enter"; reqId: number; name: string; session: string; mode: Mode; waitMs: number; lockDelayMs: number }
  | { type: "leave"; reqId: number; name: string; session: string; token?: number; requestId?: string };

export type EnterAnswer =
  | { granted: true; name: string; session: string; token: number; mode: Mode }
  | { granted: false; waiting: boolean; name: string; position: number };

export type LockReply =
  | { type: "reply"; reqId: number; ok: true; body: Record<string, unknown> }
  /** `primary`: the "not primary" hint of lock_api (the server the client should try). */
  | { type: "reply"; reqId: number; ok: false; code: string; message: string; primary?: string | null };

/**
 * The JSON body lock_api answers for a successful result (the "waiting" answer of an enter is
 * the caller's: it long-polls first). One function for both simulated servers.
 */
export function answerBody(request: LockRequest, result: Extract<Output["result"], { ok: true }>): Record<string, unknown> {
  switch (result.type) {
    case "session":
      return { session: result.session, ttlMs: result.ttlMs };
    case "closed":
      return { session: result.session, released: result.released };
    case "left":
      return { left: true, name: result.name, wasHolder: result.wasHolder };
    case "granted":
      return { granted: true, ...result.grant };
    case "notGranted":
      return { granted: false, waiting: false, name: result.name, position: result.position };
    case "waiting":
      if (request.type === "enter") return { granted: false, waiting: true, name: result.name, position: result.position };
      throw new Error(`waiting answer to ${request.type}`);
    default:
      throw new Error(`unexpected answer ${result.type} to ${request.type}`);
  }
}
