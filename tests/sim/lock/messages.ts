/**
 * The lock API as simulated messages: one request type per HTTP route of cluster/lock_api.ts,
 * and replies shaped like its JSON answers. Each request carries an id the reply repeats, as an
 * HTTP response belongs to its request.
 */
import type { Mode } from "../../../lib/core/lock_table.ts";

export type LockRequest =
  | { type: "open"; reqId: number; ttlMs: number }
  | { type: "keepalive"; reqId: number; session: string }
  | { type: "close"; reqId: number; session: string }
  | { type: "enter"; reqId: number; name: string; session: string; mode: Mode; waitMs: number; lockDelayMs: number }
  | { type: "leave"; reqId: number; name: string; session: string; token?: number };

export type EnterAnswer =
  | { granted: true; name: string; session: string; token: number; mode: Mode }
  | { granted: false; waiting: boolean; name: string; position: number };

export type LockReply =
  | { type: "reply"; reqId: number; ok: true; body: Record<string, unknown> }
  | { type: "reply"; reqId: number; ok: false; code: string; message: string };
