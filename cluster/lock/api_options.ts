/**
 * What the lock server's HTTP API is built with: the Hono app (api.ts), its client routes
 * (api_routes.ts), their fast path (api_fast_path.ts), the answer encoding (api_answers.ts) and the
 * peer route (api_peer.ts).
 */
import type { MiddlewareHandler } from "hono";
import type { Settings } from "../../lib/settings.ts";
import type { LoopStallView } from "../stall_monitor.ts";
import type { ClientAuth } from "../client_auth.ts";
import type { SecurityLog } from "../security_log.ts";
import type { LockWatchHub } from "./watch.ts";

export interface LockApiOptions {
  nodeId: string;
  role: string;
  settings: Settings;
  /** The server's process id, in /v1/health: `mutexd up` checks that the node answering is the process it started. */
  pid?: number;
  /** Base URL of a cluster member, for "not primary" hints. */
  urlOf?: (id: string) => string | undefined;
  onInternalError?: (error: Error) => void;
  /** The event loop's longest stalls (the server process; absent in the simulator). */
  loopStall?: () => LoopStallView;
  /** Client bearer tokens (the Hono app only; the simulator's calls are not authenticated). Default: open. */
  auth?: ClientAuth;
  /** The process's refusal counters, shown in status under `security`. */
  security?: SecurityLog;
  /** Authenticates `POST /v1/peer` (peer_auth.ts) when the cluster has a secret. */
  peerAuth?: MiddlewareHandler;
  /**
   * A new session's secret when the client chose none: cryptographic randomness
   * (session_secret.ts randomSessionSecret) by default, a seeded generator in the simulator.
   * Only its hash reaches the core.
   */
  newSessionSecret?: () => string;
  /** Serves `GET /v1/locks/:name/watch` (watch.ts); absent: that route answers 404. */
  watch?: LockWatchHub;
}
