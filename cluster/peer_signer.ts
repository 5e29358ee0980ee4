/**
 * The sending side of peer authentication (docs/security.md "Peer authentication (HTTP)"): the
 * fetch the transports send peer requests with, signed by a PeerSigner with a cluster secret
 * (its nonce per receiver taken from the receiver's challenge, its seqs, the answer's MAC
 * checked), plain without one (loopback only).
 */
import { FORMAT_HEADER } from "../lib/wire/version.ts";
import { answerHead, OUR_FORMAT, PEER_HEADER, type RequestHead, signRequest } from "./peer_head.ts";
import { freshNonce, macValid, type PeerKey } from "./peer_mac.ts";

const encoder = new TextEncoder();

/** One peer request as the transports make it. */
export interface PeerRequest {
  method: "GET" | "POST";
  /** The text sent as the body (absent for a GET). */
  body?: string;
  contentType?: string;
  timeoutMs: number;
}

/** An answer whose MAC was checked (or, without a secret, any answer). */
export interface PeerAnswer {
  status: number;
  text: string;
  /**
   * The wire format the answer names (FORMAT_HEADER; every node's answers carry it), so a sender
   * learns which optional fields the peer reads (cluster/ring/http_peers.ts). Absent: none (a
   * build before versions, 1.0). Not under the answer's MAC: a forged one can at most make the
   * sender leave optional fields out (safe) or put in fields the peer refuses, which an attacker
   * on the path could do anyway by dropping the request.
   */
  format?: string;
}

/** Sends one request to cluster member `to` at `url` and resolves with its answer; rejects on failure or timeout. */
export type PeerFetch = (to: string, url: string, request: PeerRequest) => Promise<PeerAnswer>;

/** The fetch a request goes out with (the runtime's; with TLS one that checks the peer's certificate). */
export type BaseFetch = (url: string, init: RequestInit) => Promise<Response>;

const globalFetch: BaseFetch = (url, init) => fetch(url, init);

/** Without a secret: a plain request over `send`, no headers (loopback only). */
export function plainPeerFetch(send: BaseFetch = globalFetch): PeerFetch {
  return async (_to, url, request) => {
    const response = await send(url, {
      method: request.method,
      headers: { ...(request.contentType ? { "content-type": request.contentType } : {}), [FORMAT_HEADER]: OUR_FORMAT },
      body: request.body,
      signal: AbortSignal.timeout(request.timeoutMs),
    });
    return { status: response.status, text: await response.text(), ...formatOf(response) };
  };
}

/** The answer's FORMAT_HEADER as PeerAnswer carries it. */
function formatOf(response: Response): { format?: string } {
  const format = response.headers.get(FORMAT_HEADER);
  return format === null ? {} : { format };
}

/** The signing fetch with a secret, the plain one without. */
export function peerFetchOf(signer: PeerSigner | undefined): PeerFetch {
  return signer ? (to, url, request) => signer.fetch(to, url, request) : plainPeerFetch();
}

/**
 * The sending side: per receiver the nonce it issued and the last seq used under it. A challenge
 * answer (MAC checked) gives a new nonce; the request is sent once more under it, at once.
 * Before the first contact the nonce is one this process made up (the receiver knows it not, so
 * it challenges): with the same nonce in every process ("" once), a restarted sender's first
 * request could carry the MAC of an earlier process's first request, and a challenge answer
 * captured then, replayed to it, was valid and moved it to a nonce whose window has long seen
 * its seqs: every request refused as a replay, from one injected answer.
 */
export class PeerSigner {
  private readonly sessions = new Map<string, { nonce: string; seq: number }>();

  /** `send`: the fetch to use (tests put a recording or tampering proxy there). */
  constructor(
    private readonly key: PeerKey,
    readonly self: string,
    private readonly send: BaseFetch = globalFetch,
  ) {}

  async fetch(to: string, url: string, request: PeerRequest): Promise<PeerAnswer> {
    const body = encoder.encode(request.body ?? "");
    const first = await this.attempt(to, url, request, body);
    if (first.challenge === null) return first.answer;
    const session = this.session(to);
    // Concurrent requests may all be challenged: the first to come back moves to the new nonce,
    // the others find it moved and retry under it.
    if (session.nonce === first.nonce) {
      session.nonce = first.challenge;
      session.seq = 0;
    }
    const second = await this.attempt(to, url, request, body);
    if (second.challenge !== null) throw new Error(`${to} ${request.method} ${url}: challenged twice`);
    return second.answer;
  }

  private session(to: string): { nonce: string; seq: number } {
    let session = this.sessions.get(to);
    if (!session) {
      session = { nonce: freshNonce(), seq: 0 };
      this.sessions.set(to, session);
    }
    return session;
  }

  /**
   * The authentication of one request to `to` (`path` with its query, as the receiver sees it)
   * under the session's nonce and its next seq: the headers, by PEER_HEADER's and FORMAT_HEADER's
   * names. The stream's upgrade (peer_stream.ts) carries them in its query.
   */
  sign(to: string, method: string, path: string, body: Uint8Array): { nonce: string; headers: Record<string, string> } {
    const session = this.session(to);
    const nonce = session.nonce;
    session.seq += 1;
    const head: RequestHead = { from: this.self, to, nonce, seq: session.seq, method, path, format: OUR_FORMAT };
    const headers = {
      [PEER_HEADER.from]: head.from,
      [PEER_HEADER.nonce]: nonce,
      [PEER_HEADER.seq]: String(head.seq),
      [PEER_HEADER.mac]: signRequest(this.key, head, body),
      [FORMAT_HEADER]: OUR_FORMAT,
    };
    return { nonce, headers };
  }

  /** One signed request; its answer's MAC checked (a bad one throws). */
  private async attempt(to: string, url: string, request: PeerRequest, body: Uint8Array<ArrayBuffer>) {
    const parsed = new URL(url);
    const { nonce, headers } = this.sign(to, request.method, parsed.pathname + parsed.search, body);
    const requestMac = headers[PEER_HEADER.mac];
    const response = await this.send(url, {
      method: request.method,
      headers: {
        ...(request.contentType ? { "content-type": request.contentType } : {}),
        ...headers,
      },
      body: request.method === "GET" ? undefined : body,
      signal: AbortSignal.timeout(request.timeoutMs),
    });
    const answerBody = new Uint8Array(await response.arrayBuffer());
    const challenge = response.headers.get(PEER_HEADER.challenge) ?? "";
    const answerMac = response.headers.get(PEER_HEADER.mac) ?? "";
    if (!macValid(this.key, answerHead(requestMac, response.status, challenge), answerBody, answerMac)) {
      // An answer we cannot trust is no answer: a forged ack would lose an acknowledged write.
      const text = new TextDecoder().decode(answerBody.subarray(0, 200));
      throw new Error(`${to} ${request.method} ${url}: answer (status ${response.status}) without a valid MAC: ${text}`);
    }
    const answer: PeerAnswer = { status: response.status, text: new TextDecoder().decode(answerBody), ...formatOf(response) };
    const challenged = response.status === 401 && challenge !== "";
    return { answer, nonce, challenge: challenged ? challenge : null };
  }
}
