/**
 * The ring's repair channel: small JSON datagrams over UDP (node:dgram), for the suspicion
 * protocol of lib/core/ring/repair.ts (docs/ring.md, "Repair"). It is a separate path from the
 * HTTP links on purpose: it is used exactly when a link to a successor has failed.
 *
 * Each datagram goes out twice over: broadcast (one copy to `broadcast:port` for each distinct
 * UDP port among the ring nodes, which reaches every ring node of the local network) and unicast
 * to every other ring node's host:udp (clouds and routers drop broadcast). So a receiver gets the
 * same datagram more than once and drops the copies by (sender, incarnation, sequence number).
 * Datagrams over `datagramBytesMax` and datagrams whose JSON shape is wrong are dropped and
 * counted before anything reaches a core: the wire is not trusted. A datagram names its wire
 * format in `format` (absent: 1.0, lib/wire/version.ts); another major is dropped as `versionMismatch`.
 *
 * Authentication (docs/security.md, "Repair datagrams (UDP)"). With the cluster secret every
 * datagram is sealed: `{"mac":"<64 hex>","data":<the datagram's JSON>}`, the MAC an HMAC-SHA256
 * (Web Crypto) of a label and version and the exact bytes of `data`, under a key derived from
 * the secret for this purpose only. A receiver checks the size, then the MAC over the bytes as
 * they came, and parses `data` only when it holds: an unsealed or badly sealed datagram is
 * `forged`. A sealed datagram is bound to its sender (`from`), its ring epoch and its sender's
 * (incarnation, sequence): incarnations are ordered (a boot count kept in the node's data
 * directory, RingStorage.nextIncarnation), so per sender a receiver keeps the highest
 * incarnation seen and, in it, a window of the last REPLAY_WINDOW sequence numbers; an older
 * incarnation, a sequence number seen or below the window is `replayed`. Web Crypto is async:
 * datagrams are verified one at a time in arrival order (at most VERIFY_QUEUE_MAX waiting, the
 * rest dropped as `overloaded`), and sealed and sent in the order `send` was called.
 * Without a secret (a cluster on loopback only) nothing is sealed, and a datagram whose source
 * address is not loopback is dropped (`notLoopback`): the socket binds every address.
 *
 * The socket binds the node's UDP port on every IPv4 address (0.0.0.0): on Linux a socket bound
 * to one address does not receive broadcasts. `reuseAddr` lets a restarted node bind at once.
 *
 * node:dgram (with setBroadcast and reuseAddr) and Web Crypto behave the same under Deno and Bun
 * (tests/udp_channel_test.ts runs under both), so nothing of it is in cluster/runtime.ts.
 */
import dgram from "node:dgram";
import type { RepairMessage } from "../../lib/core/ring/repair.ts";
import { isLoopbackHost } from "../config.ts";
import { repairDatagramSchema } from "../../lib/wire/ring_peer.ts";
import { check } from "../../lib/wire/schema.ts";
import { derivedKey } from "../peer_auth.ts";
import { type FormatVersion, formatRefusal, formatText, UNVERSIONED, WIRE_FORMAT } from "../../lib/wire/version.ts";

/** A repair message as it travels: the core's message plus the sender's incarnation and sequence number. */
export type RepairDatagram = RepairMessage & { inc: number; seq: number };

export interface RepairPeer {
  id: string;
  host: string;
  udpPort: number;
}

export type DropReason = "oversized" | "malformed" | "duplicate" | "own" | "forged" | "replayed" | "notLoopback" | "overloaded" | "versionMismatch";

/**
 * The drops that are refused input, by the reason a SecurityLog counts them under (ring status
 * `security`). Copies (`duplicate`) and a node's own broadcasts (`own`) are expected, not refused.
 */
export const REFUSED_AS: Partial<Record<DropReason, string>> = {
  oversized: "datagramOversized",
  malformed: "datagramMalformed",
  forged: "datagramForged",
  replayed: "datagramReplayed",
  notLoopback: "datagramNotLoopback",
  overloaded: "datagramOverloaded",
  versionMismatch: "datagramVersionMismatch",
};

export interface RepairChannelOptions {
  self: string;
  /** Every ring node, this one included (its udpPort is the port bound; 0 binds any free port). */
  peers: readonly RepairPeer[];
  /** IPv4 broadcast address ([cluster] broadcast). */
  broadcast: string;
  datagramBytesMax: number;
  /** (sender, incarnation, sequence) triples remembered to drop copies; the oldest is forgotten first. */
  rememberedMax: number;
  /** The cluster secret: datagrams are sealed and checked. Without it only loopback sources are heard. */
  secret?: string;
  /** This process's incarnation: above every earlier one of this node (RingStorage.nextIncarnation). */
  incarnation: number;
  onMessage(datagram: RepairDatagram): void;
  /** A datagram was dropped (counted in `counts` too); `source` is the address it came from. */
  onDropped?(reason: DropReason, detail: string, source: string): void;
  /** Sending one copy failed (e.g. no route); the others still go. */
  onSendError?(error: Error, to: string): void;
}

/** Sequence numbers per sender incarnation a receiver keeps track of (as IPsec's and DTLS's windows: 64). */
export const REPLAY_WINDOW = 64;
/** Datagrams waiting for their MAC check; more are dropped (`overloaded`): a flood costs a bounded queue. */
export const VERIFY_QUEUE_MAX = 64;
/** Datagrams waiting to be sealed and sent; more are not sent (a send error). The core sends a few per second. */
const SEND_QUEUE_MAX = 64;

const encoder = new TextEncoder();
/** Derives the datagram key from the cluster secret; the HTTP peer key uses another label, so neither key serves for the other. */
const KEY_LABEL = "mutexd udp v1";
/** What the MAC covers before the data: a label and version, so a MAC made for anything else never fits. */
const MAC_LABEL = encoder.encode("mutexd repair datagram v1\n");
const SEAL_HEAD = encoder.encode('{"mac":"');
const SEAL_MIDDLE = encoder.encode('","data":');
const MAC_HEX_LENGTH = 64;
const DATA_START = SEAL_HEAD.length + MAC_HEX_LENGTH + SEAL_MIDDLE.length;
const CLOSING_BRACE = 0x7d;

/** The HMAC-SHA256 key for datagrams: HMAC(secret, "mutexd udp v1"), imported for sign and verify. */
export function datagramKey(secret: string): Promise<CryptoKey> {
  return derivedKey(secret, KEY_LABEL);
}

function macInput(data: Uint8Array): Uint8Array<ArrayBuffer> {
  const input = new Uint8Array(MAC_LABEL.length + data.length);
  input.set(MAC_LABEL);
  input.set(data, MAC_LABEL.length);
  return input;
}

/** The bytes of a datagram: its JSON, sealed with a MAC when a key is given. */
export async function encodeDatagram(datagram: RepairDatagram, key?: CryptoKey, wireFormat: FormatVersion = WIRE_FORMAT): Promise<Uint8Array> {
  const { type, epoch, suspect, from, inc, seq } = datagram;
  // 1.0 goes without the field, as before versions: such a build refuses a field it does not know.
  const format = formatText(wireFormat) === formatText(UNVERSIONED) ? {} : { format: formatText(wireFormat) };
  const data = encoder.encode(JSON.stringify({ type, epoch, suspect, from, inc, seq, ...format }));
  if (!key) return data;
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, macInput(data)));
  const hex = Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join("");
  const sealed = new Uint8Array(DATA_START + data.length + 1);
  sealed.set(SEAL_HEAD);
  sealed.set(encoder.encode(hex), SEAL_HEAD.length);
  sealed.set(SEAL_MIDDLE, SEAL_HEAD.length + MAC_HEX_LENGTH);
  sealed.set(data, DATA_START);
  sealed[sealed.length - 1] = CLOSING_BRACE;
  return sealed;
}

function hasAt(bytes: Uint8Array, part: Uint8Array, at: number): boolean {
  return part.every((b, i) => bytes[at + i] === b);
}

/** The MAC (lowercase hex) as bytes, or undefined. */
function macBytes(hex: Uint8Array): Uint8Array<ArrayBuffer> | undefined {
  const text = String.fromCharCode(...hex);
  if (!/^[0-9a-f]{64}$/.test(text)) return undefined;
  return Uint8Array.from({ length: MAC_HEX_LENGTH / 2 }, (_, i) => parseInt(text.slice(2 * i, 2 * i + 2), 16));
}

/**
 * The data of a sealed datagram whose MAC holds under `key`, or why not. Nothing of the data is
 * parsed before the MAC is checked: the envelope is taken apart by position.
 */
export async function unsealDatagram(bytes: Uint8Array, key: CryptoKey): Promise<{ data: Uint8Array } | { error: string }> {
  const sealed = bytes.length > DATA_START && bytes[bytes.length - 1] === CLOSING_BRACE &&
    hasAt(bytes, SEAL_HEAD, 0) && hasAt(bytes, SEAL_MIDDLE, SEAL_HEAD.length + MAC_HEX_LENGTH);
  if (!sealed) return { error: "not sealed" };
  const mac = macBytes(bytes.subarray(SEAL_HEAD.length, SEAL_HEAD.length + MAC_HEX_LENGTH));
  if (!mac) return { error: "MAC not 64 lowercase hex digits" };
  const data = bytes.subarray(DATA_START, bytes.length - 1);
  // Web Crypto's verify compares in constant time.
  if (!await crypto.subtle.verify("HMAC", key, mac, macInput(data))) return { error: "MAC does not match" };
  return { data };
}

/**
 * A datagram from the bytes of its JSON, or why not: its shape by its schema
 * (lib/wire/ring_peer.ts: numbers non-negative safe integers, no other keys), then its names
 * must be ring nodes.
 */
export function decodeDatagram(bytes: Uint8Array, ringIds: ReadonlySet<string>): RepairDatagram | { error: string; reason?: DropReason } {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    return { error: "not UTF-8 JSON" };
  }
  const checked = check(repairDatagramSchema, value, "datagram");
  if (!checked.ok) return { error: checked.message.slice(0, 200) };
  const { format, ...d } = checked.value;
  const refusal = formatRefusal("the datagram", format ?? formatText(UNVERSIONED), WIRE_FORMAT);
  if (refusal !== null) return { error: refusal, reason: "versionMismatch" };
  for (const key of ["suspect", "from"] as const) {
    if (!ringIds.has(d[key])) return { error: `${key} is not a ring node` };
  }
  return d;
}

/**
 * Whether a datagram from `source` may be heard: with a secret the MAC decides, without one only
 * loopback sources count (a cluster without a secret runs on loopback only).
 */
export function sourceAllowed(source: string, authenticated: boolean): boolean {
  return authenticated || isLoopbackHost(source);
}

/**
 * Per sender, the highest incarnation seen and which sequence numbers of it arrived, the last
 * REPLAY_WINDOW of them: a datagram is admitted once, and never one of an older incarnation.
 * Bounded by the ring: only ring nodes are senders (decodeDatagram).
 */
export class ReplayWindows {
  private readonly senders = new Map<string, { inc: number; highestSeq: number; seen: Set<number> }>();

  /** Admits (inc, seq) of `from` and records it, or says why it is a replay. */
  admit(from: string, inc: number, seq: number): string | null {
    let sender = this.senders.get(from);
    if (sender && inc < sender.inc) return `incarnation ${inc} is older than ${sender.inc}`;
    if (!sender || inc > sender.inc) {
      sender = { inc, highestSeq: 0, seen: new Set() };
      this.senders.set(from, sender);
    }
    if (seq <= sender.highestSeq - REPLAY_WINDOW) return `sequence ${seq} is below the window (highest ${sender.highestSeq})`;
    if (sender.seen.has(seq)) return `sequence ${seq} was seen`;
    sender.seen.add(seq);
    if (seq > sender.highestSeq) {
      sender.highestSeq = seq;
      for (const old of sender.seen) if (old <= seq - REPLAY_WINDOW) sender.seen.delete(old);
    }
    return null;
  }
}

export class RepairChannel {
  /** What the channel did since it opened (status, tests). */
  readonly counts = {
    sent: 0,
    sendErrors: 0,
    received: 0,
    duplicate: 0,
    oversized: 0,
    malformed: 0,
    own: 0,
    forged: 0,
    replayed: 0,
    notLoopback: 0,
    overloaded: 0,
    versionMismatch: 0,
  };
  private seq = 0;
  private readonly remembered = new Set<string>();
  private readonly windows = new ReplayWindows();
  private ringIds: ReadonlySet<string>;
  private peers: readonly RepairPeer[];
  private closed = false;
  /** The datagrams received and waiting for (or in) their MAC check, checked one after the other. */
  private verifying = 0;
  private verified: Promise<void> = Promise.resolve();
  /** The datagrams waiting to be sealed, sent one after the other in the order of `send`. */
  private sealing = 0;
  private sealed: Promise<void> = Promise.resolve();

  private constructor(
    private readonly socket: dgram.Socket,
    private readonly options: RepairChannelOptions,
    private readonly key: CryptoKey | undefined,
    readonly port: number,
  ) {
    this.peers = options.peers;
    this.ringIds = new Set(options.peers.map((p) => p.id));
    socket.on("message", (bytes: Uint8Array, from: { address: string }) => this.receive(bytes, from.address));
  }

  /** The cluster file was reloaded (SIGHUP): datagrams go to, and are taken from, these ring nodes. */
  setPeers(peers: readonly RepairPeer[]): void {
    this.peers = [...peers];
    this.ringIds = new Set(peers.map((p) => p.id));
  }

  /** Derives the key (with a secret), binds the node's UDP port and enables broadcast. */
  static async open(options: RepairChannelOptions): Promise<RepairChannel> {
    const me = options.peers.find((p) => p.id === options.self);
    if (!me) throw new Error(`${options.self} is not a ring node`);
    if (!Number.isSafeInteger(options.incarnation) || options.incarnation < 0) throw new Error(`incarnation ${options.incarnation} is not a count`);
    const key = options.secret === undefined ? undefined : await datagramKey(options.secret);
    const socket = dgram.createSocket({ type: "udp4", reuseAddr: true });
    return new Promise((resolve, reject) => {
      socket.once("error", reject);
      socket.bind({ port: me.udpPort, address: "0.0.0.0" }, () => {
        socket.off("error", reject);
        socket.setBroadcast(true);
        const channel = new RepairChannel(socket, options, key, socket.address().port);
        // Errors after the bind (an ICMP unreachable reported on the socket) are not fatal.
        socket.on("error", (error) => options.onSendError?.(error, "socket"));
        resolve(channel);
      });
    });
  }

  /** Sends `message` to every ring node: broadcast per distinct UDP port, and unicast to each other node. */
  send(message: RepairMessage): void {
    if (this.closed) return;
    if (this.sealing >= SEND_QUEUE_MAX) {
      this.counts.sendErrors += 1;
      this.options.onSendError?.(new Error(`${SEND_QUEUE_MAX} datagrams already wait to be sealed`), "queue");
      return;
    }
    this.seq += 1;
    const datagram: RepairDatagram = { ...message, inc: this.options.incarnation, seq: this.seq };
    this.sealing += 1;
    this.sealed = this.sealed
      .then(() => encodeDatagram(datagram, this.key))
      .then((bytes) => this.sendToAll(bytes))
      .catch((error) => this.options.onSendError?.(error as Error, "seal"))
      .finally(() => void (this.sealing -= 1));
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    return new Promise((resolve) => this.socket.close(() => resolve()));
  }

  private sendToAll(bytes: Uint8Array): void {
    if (this.closed) return;
    const { self, broadcast } = this.options;
    const peers = this.peers;
    const ports = new Set(peers.map((p) => (p.id === self ? this.port : p.udpPort)));
    for (const port of ports) this.sendTo(bytes, broadcast, port);
    for (const peer of peers) if (peer.id !== self) this.sendTo(bytes, peer.host, peer.udpPort);
  }

  private sendTo(bytes: Uint8Array, host: string, port: number): void {
    this.counts.sent += 1;
    this.socket.send(bytes, port, host, (error) => {
      if (!error) return;
      this.counts.sendErrors += 1;
      this.options.onSendError?.(error, `${host}:${port}`);
    });
  }

  private receive(bytes: Uint8Array, source: string): void {
    if (this.closed) return;
    this.counts.received += 1;
    // The size first: nothing of an oversized datagram is read.
    if (bytes.length > this.options.datagramBytesMax) {
      return this.drop("oversized", `${bytes.length} bytes > ${this.options.datagramBytesMax}`, source);
    }
    const key = this.key;
    if (!key) {
      if (!sourceAllowed(source, false)) return this.drop("notLoopback", "no cluster secret: only loopback sources are heard", source);
      return this.accept(bytes, source, false);
    }
    if (this.verifying >= VERIFY_QUEUE_MAX) return this.drop("overloaded", `${VERIFY_QUEUE_MAX} datagrams wait for their MAC check`, source);
    this.verifying += 1;
    // One at a time, in arrival order: the window and the core see datagrams as they came.
    this.verified = this.verified.then(async () => {
      const unsealed = await unsealDatagram(bytes, key);
      if (this.closed) return;
      if ("error" in unsealed) return this.drop("forged", unsealed.error, source);
      this.accept(unsealed.data, source, true);
    }).catch((error) => {
      // A throw of the core's (a broken invariant) must not vanish in this chain: fail-stop as a
      // throw from the socket's event would.
      queueMicrotask(() => {
        throw error;
      });
    }).finally(() => void (this.verifying -= 1));
  }

  /** A datagram's JSON, from a source allowed (and, when `authenticated`, its MAC checked). */
  private accept(data: Uint8Array, source: string, authenticated: boolean): void {
    const datagram = decodeDatagram(data, this.ringIds);
    if ("error" in datagram) return this.drop(datagram.reason ?? "malformed", datagram.error, source);
    if (datagram.from === this.options.self) return this.drop("own", "", source);
    const key = `${datagram.from}/${datagram.inc}/${datagram.seq}`;
    if (this.remembered.has(key)) return this.drop("duplicate", key, source);
    // Without a secret anyone on loopback may send anything: a replay window would guard nothing.
    if (authenticated) {
      const replay = this.windows.admit(datagram.from, datagram.inc, datagram.seq);
      if (replay !== null) return this.drop("replayed", `${datagram.from}: ${replay}`, source);
    }
    this.remembered.add(key);
    // A Set iterates in insertion order: the first key is the oldest.
    if (this.remembered.size > this.options.rememberedMax) this.remembered.delete(this.remembered.values().next().value!);
    this.options.onMessage(datagram);
  }

  private drop(reason: DropReason, detail: string, source: string): void {
    this.counts[reason] += 1;
    this.options.onDropped?.(reason, detail, source);
  }
}
