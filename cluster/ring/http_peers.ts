/**
 * RingPeers over HTTP: each call is one fetch to the peer's `/v1/ring/peer/...` endpoint with a
 * timeout of tokenHopTimeoutMs. Runtimes keep connections alive between calls (fetch reuses them).
 * A node that is its own successor (a ring of one) is called directly.
 *
 * Each answer names the peer's wire format (x-mutexd-format), and so does each of its requests
 * (the daemon passes on a view message's: `heard`, so a voter knows its coordinator's format from
 * the prepare before it promises); the last one heard per peer decides which optional fields of
 * a view message go to it, and whether a `section` announcement and its `sectionEnd` do (lib/wire/ring_peer.ts viewMessageFor). A peer never heard from is
 * asked its format first (formatOf); one of an older minor, or that did not answer, gets none, so
 * a ring mixing builds during a rolling upgrade keeps its renewals and promises (docs/deploy.md).
 */
import type { RingResult } from "../../lib/core/ring/ring_node.ts";
import type { CatchUpReply } from "../../lib/core/ring/ring_types.ts";
import type { ViewMessage } from "../../lib/core/ring/view_wire.ts";
import { dependsOnFormat, viewMessageFor } from "../../lib/wire/ring_peer.ts";
import { type FormatVersion, parseFormat, UNVERSIONED } from "../../lib/wire/version.ts";
import type { LinkItem } from "./peer_link.ts";
import type { RingPeers, RingService } from "./service.ts";
import { type PeerFetch, plainPeerFetch } from "../peer_auth.ts";

export function httpPeers(options: {
  self: string;
  urls: Map<string, string>;
  hopTimeoutMs: number;
  /** Set once the service exists: used to deliver to itself. */
  local: () => RingService;
  /**
   * Signs each request and checks its answer when the cluster has a secret (peer_auth.ts), over
   * cluster/runtime.ts fetchFor(cluster.tlsCa), which verifies the peers' certificates under TLS.
   */
  peerFetch?: PeerFetch;
}): RingPeers & { heard(from: string, format: string | undefined): void } {
  const { self, urls, hopTimeoutMs, local } = options;
  const peerFetch = options.peerFetch ?? plainPeerFetch();
  const baseOf = (id: string) => {
    const base = urls.get(id);
    if (!base) throw new Error(`unknown ring node ${id}`);
    return base;
  };
  const url = (id: string, path: string) => `${baseOf(id)}/v1/ring/peer/${path}`;
  // The wire format each peer last named, in an answer or a view message of its own; at most one
  // entry per id of `urls` (ids it never knew get none).
  const formats = new Map<string, FormatVersion | null>();
  const heard = (id: string, format: string | undefined) => {
    if (urls.has(id)) formats.set(id, format === undefined ? UNVERSIONED : parseFormat(format));
  };
  const call = async <T>(id: string, path: string, body?: unknown): Promise<T> => {
    const { status, text, format } = await peerFetch(id, url(id, path), body === undefined
      ? { method: "GET", timeoutMs: hopTimeoutMs }
      : { method: "POST", contentType: "application/json", body: JSON.stringify(body), timeoutMs: hopTimeoutMs });
    // Every answer counts, a refusal too (a downgraded peer's 400 tells the next message to leave the field out).
    heard(id, format);
    if (status < 200 || status > 299) throw new Error(`${id} ${path}: status ${status}: ${text.slice(0, 200)}`);
    return JSON.parse(text) as T;
  };
  // Peers whose format is being asked (one question at a time per peer).
  const asking = new Map<string, Promise<void>>();
  /**
   * The format `to` last named; never heard from, it is asked first (`GET /v1/health`, whose
   * answer names it as every answer does): a message without the section bound's fields would
   * make its receiver count ringLeaseMaxMs for that hold until a later renewal's bound outlasts
   * it (R1 and R4 waited 4 s longer when the first renewals after a start went without). No
   * answer: unknown (the message goes without them, which is always safe).
   */
  const formatOf = async (to: string): Promise<FormatVersion | null> => {
    if (!formats.has(to)) {
      let question = asking.get(to);
      if (!question) {
        question = peerFetch(to, `${baseOf(to)}/v1/health`, { method: "GET", timeoutMs: hopTimeoutMs })
          .then((answer) => heard(to, answer.format), () => {})
          .finally(() => asking.delete(to));
        asking.set(to, question);
      }
      await question;
    }
    return formats.get(to) ?? null;
  };
  return {
    heard,
    deliver(to: string, item: LinkItem): Promise<RingResult> {
      if (to === self) {
        // A ring of one: hand the item to ourselves on a later turn, like a network would.
        return new Promise((resolve) => setTimeout(() => resolve(local().stepItem(self, item)), 0));
      }
      return item.kind === "token"
        ? call<RingResult>(to, "token", { from: self, token: item.token })
        : call<RingResult>(to, "writes", { from: self, epoch: item.epoch, entries: item.entries });
    },
    fetchLog(from: string, fromWseq: number): Promise<CatchUpReply> {
      if (from === self) return Promise.resolve(local().node.catchUp(fromWseq));
      return call<CatchUpReply>(from, `log?from=${fromWseq}`);
    },
    async view(to: string, message: ViewMessage): Promise<void> {
      const theirs = dependsOnFormat(message) ? await formatOf(to) : null;
      const shaped = viewMessageFor(message, theirs);
      if (shaped !== null) await call(to, "view", shaped);
    },
    async wake(to: string): Promise<void> {
      await call(to, "wake", { from: self });
    },
  };
}
