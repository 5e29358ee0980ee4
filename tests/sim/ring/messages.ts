/**
 * The ring's HTTP calls as simulated messages: neighbour calls (`/v1/ring/peer/...`) and client
 * calls (`/v1/ring/{enter,leave,put,delete}`). A reply repeats its request's id.
 */
import type { ClientReply, RingNode, RingResult } from "../../../lib/core/ring_node.ts";
import type { CatchUpReply, RingOp } from "../../../lib/core/ring_types.ts";
import type { LinkItem } from "../../../cluster/ring/peer_link.ts";

export type RingPeerRequest =
  | { type: "deliver"; reqId: number; item: LinkItem }
  | { type: "fetch"; reqId: number; fromWseq: number }
  | { type: "probe"; reqId: number }
  | { type: "prepare"; reqId: number; epoch: number }
  | { type: "wake"; reqId: number };

export type RingClientRequest =
  | { type: "enter"; reqId: number; waitMs: number; leaseMs: number; ticket?: string }
  | { type: "leave"; reqId: number; fence?: number; ticket?: string }
  | { type: "write"; reqId: number; fence: number; op: RingOp };

export type RingMessage =
  | { type: "peer"; request: RingPeerRequest }
  | { type: "client"; request: RingClientRequest }
  | { type: "result"; reqId: number; result: RingResult }
  | { type: "caughtUp"; reqId: number; reply: CatchUpReply }
  | { type: "probed"; reqId: number; probe: ReturnType<RingNode["probe"]> }
  | { type: "clientReply"; reqId: number; reply: ClientReply };
