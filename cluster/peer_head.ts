/**
 * What a peer request's and its answer's MAC cover (docs/security.md "Peer authentication (HTTP)"),
 * and the headers that carry them: both sides (peer_signer.ts, peer_verifier.ts) build the same
 * heads from here, so they cannot drift apart.
 */
import { formatText, UNVERSIONED, WIRE_FORMAT } from "../lib/wire/version.ts";
import { mac, type PeerKey } from "./peer_mac.ts";

export const PEER_HEADER = {
  from: "x-mutexd-from",
  nonce: "x-mutexd-nonce",
  seq: "x-mutexd-seq",
  mac: "x-mutexd-mac",
  challenge: "x-mutexd-challenge",
} as const;

/** Labels of what is MACed: a request's MAC can never pass for an answer's, nor a v1 one for a later scheme's. */
const REQUEST_LABEL = "mutexd peer request v1";
const ANSWER_LABEL = "mutexd peer answer v1";
/** Longest sender id and nonce taken from the headers (ours are short; a long one is not ours). */
export const HEADER_VALUE_LENGTH_MAX = 128;

/** What a request's MAC covers, besides the body. */
export interface RequestHead {
  from: string;
  to: string;
  nonce: string;
  seq: number;
  method: string;
  /** The path with its query, as sent (`/v1/ring/peer/log?from=5`). */
  path: string;
  /** The wire format the request names (FORMAT_HEADER); absent or "" for none (a build before versions). */
  format?: string;
}

/** The wire format every peer request of this build names. */
export const OUR_FORMAT = formatText(WIRE_FORMAT);
const UNVERSIONED_TEXT = formatText(UNVERSIONED);

/**
 * The format is MACed unless it is 1.0 or absent (the same: a build before versions sent none),
 * so a request of format 1.0 is signed as such a build signs it and the two still understand
 * each other during the rolling upgrade that brings in versions; any other format is covered.
 */
const formatSigned = (format: string | undefined) => (format === undefined || format === "" || format === UNVERSIONED_TEXT ? [] : [format]);
export const requestHead = (h: RequestHead) => [REQUEST_LABEL, h.from, h.to, h.nonce, h.seq, h.method, h.path, ...formatSigned(h.format)];
export const answerHead = (requestMac: string, status: number, challenge: string) => [ANSWER_LABEL, requestMac, status, challenge];

/** The MAC of a request (hex): what `x-mutexd-mac` carries. */
export function signRequest(key: PeerKey, head: RequestHead, body: Uint8Array): string {
  return mac(key, requestHead(head), body).toString("hex");
}
