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
 * counted before anything reaches a core: the wire is not trusted.
 *
 * The socket binds the node's UDP port on every IPv4 address (0.0.0.0): on Linux a socket bound
 * to one address does not receive broadcasts. `reuseAddr` lets a restarted node bind at once.
 *
 * node:dgram (with setBroadcast and reuseAddr) behaves the same under Deno and Bun
 * (tests/udp_channel_test.ts runs under both), so nothing of it is in cluster/runtime.ts.
 *
 * Authentication is the security issue's: `encodeDatagram` and `decodeDatagram` are the one seam
 * where a MAC will be added and checked.
 */
import { randomBytes } from "node:crypto";
import dgram from "node:dgram";
import type { RepairMessage } from "../../lib/core/ring/repair.ts";
import { repairDatagramSchema } from "../../lib/wire/ring_peer.ts";
import { check } from "../../lib/wire/schema.ts";

/** A repair message as it travels: the core's message plus the sender's incarnation and sequence number. */
export type RepairDatagram = RepairMessage & { inc: string; seq: number };

export interface RepairPeer {
  id: string;
  host: string;
  udpPort: number;
}

export type DropReason = "oversized" | "malformed" | "duplicate" | "own";

export interface RepairChannelOptions {
  self: string;
  /** Every ring node, this one included (its udpPort is the port bound; 0 binds any free port). */
  peers: readonly RepairPeer[];
  /** IPv4 broadcast address ([cluster] broadcast). */
  broadcast: string;
  datagramBytesMax: number;
  /** (sender, incarnation, sequence) triples remembered to drop copies; the oldest is forgotten first. */
  rememberedMax: number;
  onMessage(datagram: RepairDatagram): void;
  /** A datagram was dropped (counted in `counts` too). */
  onDropped?(reason: DropReason, detail: string): void;
  /** Sending one copy failed (e.g. no route); the others still go. */
  onSendError?(error: Error, to: string): void;
}

/** The bytes of a datagram (the seam where authentication will sign). */
export function encodeDatagram(datagram: RepairDatagram): Uint8Array {
  const { type, epoch, suspect, from, inc, seq } = datagram;
  return new TextEncoder().encode(JSON.stringify({ type, epoch, suspect, from, inc, seq }));
}

/**
 * A datagram from bytes, or why not (the seam where authentication will verify): its shape by
 * its schema (lib/wire/ring_peer.ts: numbers non-negative safe integers, no other keys), then
 * its names must be ring nodes.
 */
export function decodeDatagram(bytes: Uint8Array, ringIds: ReadonlySet<string>): RepairDatagram | { error: string } {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    return { error: "not UTF-8 JSON" };
  }
  const checked = check(repairDatagramSchema, value, "datagram");
  if (!checked.ok) return { error: checked.message.slice(0, 200) };
  const d = checked.value;
  for (const key of ["suspect", "from"] as const) {
    if (!ringIds.has(d[key])) return { error: `${key} is not a ring node` };
  }
  return d;
}

export class RepairChannel {
  /** What the channel did since it opened (status, tests). */
  readonly counts = { sent: 0, sendErrors: 0, received: 0, duplicate: 0, oversized: 0, malformed: 0, own: 0 };
  /** This process's incarnation: a restarted node's sequence numbers start again at 1. */
  private readonly inc = randomBytes(4).toString("hex");
  private seq = 0;
  private readonly remembered = new Set<string>();
  private ringIds: ReadonlySet<string>;
  private peers: readonly RepairPeer[];
  private closed = false;

  private constructor(private readonly socket: dgram.Socket, private readonly options: RepairChannelOptions, readonly port: number) {
    this.peers = options.peers;
    this.ringIds = new Set(options.peers.map((p) => p.id));
    socket.on("message", (bytes: Uint8Array) => this.receive(bytes));
  }

  /** The cluster file was reloaded (SIGHUP): datagrams go to, and are taken from, these ring nodes. */
  setPeers(peers: readonly RepairPeer[]): void {
    this.peers = [...peers];
    this.ringIds = new Set(peers.map((p) => p.id));
  }

  /** Binds the node's UDP port and enables broadcast. */
  static open(options: RepairChannelOptions): Promise<RepairChannel> {
    const me = options.peers.find((p) => p.id === options.self);
    if (!me) return Promise.reject(new Error(`${options.self} is not a ring node`));
    const socket = dgram.createSocket({ type: "udp4", reuseAddr: true });
    return new Promise((resolve, reject) => {
      socket.once("error", reject);
      socket.bind({ port: me.udpPort, address: "0.0.0.0" }, () => {
        socket.off("error", reject);
        socket.setBroadcast(true);
        const channel = new RepairChannel(socket, options, socket.address().port);
        // Errors after the bind (an ICMP unreachable reported on the socket) are not fatal.
        socket.on("error", (error) => options.onSendError?.(error, "socket"));
        resolve(channel);
      });
    });
  }

  /** Sends `message` to every ring node: broadcast per distinct UDP port, and unicast to each other node. */
  send(message: RepairMessage): void {
    if (this.closed) return;
    this.seq += 1;
    const bytes = encodeDatagram({ ...message, inc: this.inc, seq: this.seq });
    const { self, broadcast } = this.options;
    const peers = this.peers;
    const ports = new Set(peers.map((p) => (p.id === self ? this.port : p.udpPort)));
    for (const port of ports) this.sendTo(bytes, broadcast, port);
    for (const peer of peers) if (peer.id !== self) this.sendTo(bytes, peer.host, peer.udpPort);
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    return new Promise((resolve) => this.socket.close(() => resolve()));
  }

  private sendTo(bytes: Uint8Array, host: string, port: number): void {
    this.counts.sent += 1;
    this.socket.send(bytes, port, host, (error) => {
      if (!error) return;
      this.counts.sendErrors += 1;
      this.options.onSendError?.(error, `${host}:${port}`);
    });
  }

  private receive(bytes: Uint8Array): void {
    if (this.closed) return;
    this.counts.received += 1;
    if (bytes.length > this.options.datagramBytesMax) {
      return this.drop("oversized", `${bytes.length} bytes > ${this.options.datagramBytesMax}`);
    }
    const datagram = decodeDatagram(bytes, this.ringIds);
    if ("error" in datagram) return this.drop("malformed", datagram.error);
    if (datagram.from === this.options.self) return this.drop("own", "");
    const key = `${datagram.from}/${datagram.inc}/${datagram.seq}`;
    if (this.remembered.has(key)) return this.drop("duplicate", key);
    this.remembered.add(key);
    // A Set iterates in insertion order: the first key is the oldest.
    if (this.remembered.size > this.options.rememberedMax) this.remembered.delete(this.remembered.values().next().value!);
    this.options.onMessage(datagram);
  }

  private drop(reason: DropReason, detail: string): void {
    this.counts[reason] += 1;
    this.options.onDropped?.(reason, detail);
  }
}
