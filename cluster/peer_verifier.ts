/**
 * The receiving side of peer authentication (docs/security.md "Peer authentication (HTTP)"): a
 * request's MAC checked with the receiver's own id, then its nonce (issued by this process, in a
 * challenge) and its seq (a sliding window per nonce, as IPsec's).
 */
import { answerHead, HEADER_VALUE_LENGTH_MAX, PEER_HEADER, type RequestHead, requestHead } from "./peer_head.ts";
import { freshNonce, mac, macValid, type PeerKey } from "./peer_mac.ts";

/** Seqs remembered below the highest under one nonce: requests run concurrently and arrive out of order. */
export const SEQ_WINDOW = 1_024;
const SEQ_PATTERN = /^[1-9][0-9]{0,14}$/;
/** The sender a refusal is counted and logged under while the MAC has not proven who sent it. */
export const UNAUTHENTICATED_SENDER = "unauthenticated";

/** What the receiver holds of one sender: the nonce in use with its window, and the one issued since. */
interface SenderState {
  current: { nonce: string; highestSeq: number; seen: Uint8Array } | null;
  /** Issued in a challenge and not used yet: its first valid request makes it current. */
  pending: string | null;
}

/** The receiver's verdict on a request. */
export type PeerVerdict =
  | { ok: true; from: string; requestMac: string }
  /** 401 `unauthorized`; `requestMac` is set when the MAC was valid (the answer is then signed). */
  | { ok: false; code: "unauthorized"; reason: string; message: string; sender: string; requestMac?: string }
  /** 401 `peer_challenge`: a valid request under a nonce not (or no longer) ours; take `challenge`. */
  | { ok: false; code: "peer_challenge"; reason: "peerChallenged"; message: string; sender: string; requestMac: string; challenge: string };

/** A request as the receiver sees it: the four headers (null when absent), method, path with query, body. */
export interface ReceivedRequest {
  headers: { from: string | null; nonce: string | null; seq: string | null; mac: string | null; format?: string | null };
  method: string;
  path: string;
  body: Uint8Array;
}

/**
 * The receiving side: checks a request's MAC (with its own id as the receiver), then its nonce
 * and seq. State per known sender only (a request without a valid MAC, or from an id that is no
 * member, makes none), one bitmap of SEQ_WINDOW bits each.
 */
export class PeerVerifier {
  private readonly senders = new Map<string, SenderState>();

  /** `isMember(id)`: whether `id` is a member of the cluster (read at each request: a reload may add one). */
  constructor(private readonly key: PeerKey, readonly self: string, private readonly isMember: (id: string) => boolean) {}

  verify(request: ReceivedRequest): PeerVerdict {
    const { from, nonce, seq, mac: givenMac } = request.headers;
    // The sender the refusal is logged under (SecurityLog logs once per sender and reason): the
    // claimed id only once the MAC proved it. An unproven one is the attacker's choice, and a new
    // id on every forged request would have made every one of them a log line.
    const refuse = (reason: string, message: string, requestMac?: string): PeerVerdict =>
      ({ ok: false, code: "unauthorized", reason, message, sender: requestMac !== undefined && from !== null ? from : UNAUTHENTICATED_SENDER, requestMac });
    if (from === null || nonce === null || seq === null || givenMac === null) {
      return refuse("peerUnauthenticated", `a peer request needs the headers ${Object.values(PEER_HEADER).slice(0, 4).join(", ")}`);
    }
    if (from.length === 0 || from.length > HEADER_VALUE_LENGTH_MAX || nonce.length > HEADER_VALUE_LENGTH_MAX || !SEQ_PATTERN.test(seq)) {
      return refuse("peerUnauthenticated", "malformed peer authentication headers");
    }
    const head: RequestHead = { from, to: this.self, nonce, seq: Number(seq), method: request.method, path: request.path, format: request.headers.format ?? "" };
    if (!macValid(this.key, requestHead(head), request.body, givenMac)) {
      return refuse("peerForged", `the request's MAC is not valid for ${this.self} (wrong secret, receiver or content)`);
    }
    if (!this.isMember(from)) return refuse("peerUnknownSender", `${from} is no member of this cluster`, givenMac);
    const state = this.senders.get(from) ?? { current: null, pending: null };
    this.senders.set(from, state);
    if (nonce === state.pending && nonce !== "") {
      // The sender took the nonce issued last: it is the one in use now, the older one is retired.
      state.current = { nonce, highestSeq: 0, seen: new Uint8Array(SEQ_WINDOW / 8) };
      state.pending = null;
    }
    if (state.current === null || nonce !== state.current.nonce) {
      // Unknown to this process (a restart of either side, or a replay from before one): one
      // nonce is issued until taken, whoever asks, so a flood of replays cannot push it out.
      state.pending ??= freshNonce();
      return { ok: false, code: "peer_challenge", reason: "peerChallenged", message: `${from}: take the nonce in ${PEER_HEADER.challenge} and retry`, sender: from, requestMac: givenMac, challenge: state.pending };
    }
    const replay = admitSeq(state.current, head.seq);
    if (replay) return refuse("peerReplayed", `seq ${head.seq} from ${from}: ${replay}`, givenMac);
    return { ok: true, from, requestMac: givenMac };
  }

  /** The MAC of the answer to a request whose MAC was valid. */
  signAnswer(requestMac: string, status: number, challenge: string, body: Uint8Array): string {
    return mac(this.key, answerHead(requestMac, status, challenge), body).toString("hex");
  }
}

/** Records `seq` in the window, or says why it is refused (seen, or below the window). */
function admitSeq(window: { highestSeq: number; seen: Uint8Array }, seq: number): string | null {
  const bit = (s: number) => [Math.floor((s % SEQ_WINDOW) / 8), 1 << (s % 8)] as const;
  if (seq > window.highestSeq) {
    // Clear the bits of the seqs the window moves over (at most all of them).
    const clearFrom = Math.max(window.highestSeq + 1, seq - SEQ_WINDOW + 1);
    for (let s = clearFrom; s <= seq; s++) {
      const [i, mask] = bit(s);
      window.seen[i] &= ~mask;
    }
    window.highestSeq = seq;
  } else if (window.highestSeq - seq >= SEQ_WINDOW) {
    return `below the window (highest ${window.highestSeq})`;
  }
  const [i, mask] = bit(seq);
  if (window.seen[i] & mask) return "seen before (a replay)";
  window.seen[i] |= mask;
  return null;
}
