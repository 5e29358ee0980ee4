/**
 * The receiving side of the replication stream (docs/security.md "The replication stream";
 * peer_stream.ts has the design): the route that checks a stream's upgrade with the PeerVerifier
 * BEFORE upgrading, sends the hello, and answers each request frame through answerPeer.
 */
import { type AuthenticatedSender, senderProvenAs } from "./peer_auth.ts";
import { encodeHello, FRAME_HEAD_BYTES_MAX, FrameCodec, type FrameKeys, STREAM_PATH } from "./peer_frame.ts";
import { PEER_HEADER } from "./peer_head.ts";
import { freshNonce, type PeerKey } from "./peer_mac.ts";
import type { PeerVerifier } from "./peer_verifier.ts";
import type { StreamConnection, StreamRoute, StreamSocket } from "./runtime.ts";
import type { SecurityLog } from "./security_log.ts";
import { FORMAT_HEADER, formatRefusal, formatText, UNVERSIONED, WIRE_FORMAT } from "../lib/wire/version.ts";

/**
 * Streams one receiver serves at once, at most (a member opens one per peer; a reconnect may
 * overlap the old connection's close): an upgrade beyond it is answered 429 limit_reached.
 */
export const STREAM_CONNECTIONS_MAX = 8;

/** What the receiver does with a request's body: answers it (status and body text), through answerPeer. */
export type AnswerFrame = (body: string, sender: AuthenticatedSender | undefined, done: (status: number, body: string) => void) => void;

/** The receiving side: the route for serveHttp, and `stop` (closes every connection). */
export interface PeerStreamServer {
  route: StreamRoute;
  stop(): void;
  /** Connections open now (tests). */
  connections(): number;
}

/**
 * The receiving side. `keyed`: the key and verifier with a cluster secret (the upgrade and every
 * frame authenticated), undefined without one (loopback only: nothing checked but the shapes).
 * `bodyBytesMax`: the largest request body (peerBodyBytesMax), checked on every frame at once.
 */
export function peerStreamServer(options: {
  self: string;
  keyed: { key: PeerKey; verifier: PeerVerifier } | undefined;
  security: SecurityLog;
  bodyBytesMax: number;
  answer: AnswerFrame;
}): PeerStreamServer {
  const { self, keyed, security } = options;
  const open = new Set<StreamSocket>();
  const frameBytesMax = options.bodyBytesMax + FRAME_HEAD_BYTES_MAX;
  const refuse = (status: number, reason: string, sender: string, message: string, detail: Record<string, unknown> = {}) => {
    security.refused(reason, sender, { path: STREAM_PATH, ...detail });
    return Response.json({ error: { code: status === 401 ? "unauthorized" : "version_mismatch", message } }, { status });
  };
  const accept = (request: Request): Response | StreamConnection => {
    const query = new URL(request.url).searchParams;
    const format = query.get(FORMAT_HEADER) ?? formatText(UNVERSIONED);
    const from = query.get(PEER_HEADER.from);
    const formatProblem = formatRefusal("the stream's upgrade", format, WIRE_FORMAT);
    let sender: AuthenticatedSender | undefined;
    let client = from ?? "";
    let upgradeMac = "";
    if (keyed) {
      const verdict = keyed.verifier.verify({
        headers: { from, nonce: query.get(PEER_HEADER.nonce), seq: query.get(PEER_HEADER.seq), mac: query.get(PEER_HEADER.mac), format },
        method: "GET",
        path: STREAM_PATH,
        body: new Uint8Array(),
      });
      // A challenge too is a refusal here: the sender's probe just before should have left it the nonce.
      if (!verdict.ok) return refuse(401, verdict.reason, verdict.sender, verdict.message);
      sender = senderProvenAs(verdict.from, security, STREAM_PATH);
      client = verdict.from;
      upgradeMac = verdict.requestMac;
    }
    if (formatProblem !== null) return refuse(400, "versionMismatch", client.slice(0, 64) || "peer", formatProblem, { theirs: format.slice(0, 32) });
    if (open.size >= STREAM_CONNECTIONS_MAX) {
      return Response.json({ error: { code: "limit_reached", message: `${STREAM_CONNECTIONS_MAX} replication streams are open` } }, { status: 429 });
    }
    return connection(client, sender, upgradeMac);
  };
  const connection = (client: string, sender: AuthenticatedSender | undefined, upgradeMac: string): StreamConnection => {
    const keys: FrameKeys = { key: keyed?.key, nonce: freshNonce() };
    const requests = new FrameCodec(keys, "request", client, self);
    const answers = new FrameCodec(keys, "answer", self, client);
    /** The socket while frames are taken: null before it opens and once it is refused or closed. */
    let socket: StreamSocket | null = null;
    let opened: StreamSocket | null = null;
    let lastSeqIn = 0;
    let seqOut = 0;
    const close = (reason: string, detail: Record<string, unknown> = {}) => {
      security.refused(reason, client.slice(0, 64) || "peer", { path: STREAM_PATH, ...detail });
      socket?.close(1008, reason);
      socket = null;
    };
    return {
      opened(ws) {
        socket = opened = ws;
        open.add(ws);
        ws.send(encodeHello(keyed?.key, self, client, upgradeMac, keys.nonce));
      },
      message(data) {
        if (socket === null) return;
        // Checked at once: Deno reads a frame of any length (Bun refuses one over maxPayloadLength).
        if (typeof data !== "string") return close("peerStreamMalformed", { message: "a binary frame" });
        if (data.length > frameBytesMax) return close("peerBodyTooLarge", { length: data.length });
        const checked = requests.check(lastSeqIn, data);
        if ("refused" in checked) return close(checked.refused);
        lastSeqIn = checked.seq;
        const ws = socket;
        options.answer(checked.body, sender, (status, body) => {
          // The connection may have closed while a durable log waited for its disk: no answer then.
          if (socket !== ws) return;
          seqOut += 1;
          ws.send(answers.encode({ seq: seqOut, re: checked.seq, status, body }));
        });
      },
      closed() {
        if (opened) open.delete(opened);
        socket = null;
      },
    };
  };
  return {
    route: { path: STREAM_PATH, frameBytesMax, accept },
    stop() {
      for (const ws of open) ws.close(1001, "stopping");
      open.clear();
    },
    connections: () => open.size,
  };
}
