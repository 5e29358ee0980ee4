/**
 * The ring's repair channel (cluster/ring/udp.ts) on loopback, under the runtime running the
 * tests (Deno and Bun): three channels on distinct UDP ports. Proves that broadcast alone reaches
 * every node, that unicast alone reaches each, that the copies of one datagram (broadcast +
 * unicast) reach the core once, that oversized and malformed datagrams are dropped and counted
 * before they reach it, that a restarted sender is not taken for a copy, and that close frees
 * the port. With the cluster secret (docs/security.md, "Repair datagrams (UDP)"): sealed
 * datagrams pass, in order; forged ones (no MAC, another secret's, a field changed after
 * sealing, a broken seal) are dropped and counted as `forged`; a replayed one is dropped as
 * `replayed` even after the copies' memory forgot it (the per-sender window and the ordered
 * incarnation); a flood beyond the MAC-check queue is dropped as `overloaded`, and the queue
 * recovers; without a secret a datagram from a non-loopback source is dropped. Every
 * channel and socket a test opens is closed at its end.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import process from "node:process";
import { networkInterfaces } from "node:os";
import {
  datagramKey,
  encodeDatagram,
  REPLAY_WINDOW,
  VERIFY_QUEUE_MAX,
  type RepairChannelOptions,
  RepairChannel,
  type RepairDatagram,
  type RepairPeer,
  sourceAllowed,
} from "../cluster/ring/udp.ts";
import type { RepairMessage } from "../lib/core/ring/repair.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { eventually, freeUdpPort } from "./_harness.ts";

const IDS = ["r1", "r2", "r3"];
/** UDP on loopback arrives in microseconds; this only bounds a wait on a loaded machine. */
const DELIVERY_MS = 3_000;
/** TEST-NET-1 (RFC 5737): an address nothing answers on, to make one path carry nothing. */
const NOWHERE = "192.0.2.1";
const ASK: RepairMessage = { type: "whoLostPred", epoch: 4, suspect: "r2", from: "r1" };
const SECRET = "a-cluster-secret-of-at-least-32-characters";
/** Each channel's incarnation in these tests (a daemon takes it from RingStorage.nextIncarnation). */
const INC = 7;

interface Node {
  channel: RepairChannel;
  got: RepairDatagram[];
}

/** Opens one channel per id of `peers`; `tweak` may change one node's view (its broadcast, its peers' hosts). */
async function openAll(peers: RepairPeer[], tweak: (id: string, o: RepairChannelOptions) => RepairChannelOptions = (_, o) => o): Promise<Map<string, Node>> {
  const nodes = new Map<string, Node>();
  for (const { id } of peers) {
    const got: RepairDatagram[] = [];
    const options = tweak(id, {
      self: id,
      peers,
      broadcast: "127.255.255.255",
      datagramBytesMax: DEFAULT_SETTINGS.ringDatagramBytesMax,
      rememberedMax: DEFAULT_SETTINGS.ringDatagramsRememberedMax,
      incarnation: INC,
      onMessage: (d) => got.push(d),
    });
    nodes.set(id, { channel: await RepairChannel.open(options), got });
  }
  return nodes;
}

async function closeAll(nodes: Map<string, Node>): Promise<void> {
  await Promise.all([...nodes.values()].map((n) => n.channel.close()));
}

async function ringPeers(): Promise<RepairPeer[]> {
  const peers: RepairPeer[] = [];
  for (const id of IDS) peers.push({ id, host: "127.0.0.1", udpPort: await freeUdpPort() });
  return peers;
}

const payload = (d: RepairDatagram) => ({ type: d.type, epoch: d.epoch, suspect: d.suspect, from: d.from });

for (const secret of [undefined, SECRET]) {
  const mode = secret === undefined ? "without a secret" : "sealed with the secret";
  test(`udp (${mode}): one datagram reaches every other node exactly once (broadcast and unicast copies merged), not its sender`, { timeout: 10_000 }, async () => {
    const nodes = await openAll(await ringPeers(), (_, o) => ({ ...o, secret }));
    try {
      nodes.get("r1")!.channel.send(ASK);
      // Each receiver gets two copies: the broadcast to its port and the unicast to it.
      await eventually("r2 and r3 got both copies", () =>
        ["r2", "r3"].every((id) => nodes.get(id)!.channel.counts.received === 2), DELIVERY_MS);
      for (const id of ["r2", "r3"]) {
        const node = nodes.get(id)!;
        assert.deepEqual(node.got.map(payload), [ASK], `${id} passes one copy on`);
        assert.equal(node.channel.counts.duplicate, 1, `${id} dropped the other copy`);
      }
      // Its own broadcast comes back to its port: counted as its own and dropped.
      await eventually("r1 got its own broadcast back", () => nodes.get("r1")!.channel.counts.own === 1, DELIVERY_MS);
      assert.equal(nodes.get("r1")!.got.length, 0, "the sender does not hear itself");
      // Three distinct ports: three broadcasts and two unicasts.
      assert.equal(nodes.get("r1")!.channel.counts.sent, 5);
      for (const id of ["r2", "r3"]) assert.deepEqual(nodes.get(id)!.got.map((d) => [d.inc, d.seq]), [[INC, 1]]);
    } finally {
      await closeAll(nodes);
    }
  });
}

test("udp: broadcast alone reaches every node (unicast sent nowhere)", { timeout: 10_000 }, async () => {
  const peers = await ringPeers();
  // r1 believes every other node lives at an address nothing answers on: only its broadcast can arrive.
  const nodes = await openAll(peers, (id, o) => id === "r1" ? { ...o, peers: peers.map((p) => (p.id === "r1" ? p : { ...p, host: NOWHERE })) } : o);
  try {
    nodes.get("r1")!.channel.send(ASK);
    await eventually("r2 and r3 got the broadcast", () => ["r2", "r3"].every((id) => nodes.get(id)!.got.length === 1), DELIVERY_MS);
  } finally {
    await closeAll(nodes);
  }
});

test("udp: unicast alone reaches each node (broadcast sent nowhere)", { timeout: 10_000 }, async () => {
  const nodes = await openAll(await ringPeers(), (id, o) => id === "r1" ? { ...o, broadcast: NOWHERE } : o);
  try {
    nodes.get("r1")!.channel.send(ASK);
    await eventually("r2 and r3 got the unicast", () => ["r2", "r3"].every((id) => nodes.get(id)!.got.length === 1), DELIVERY_MS);
    for (const id of ["r2", "r3"]) assert.equal(nodes.get(id)!.channel.counts.duplicate, 0, `${id}: no broadcast copy arrived`);
  } finally {
    await closeAll(nodes);
  }
});

test("udp: oversized and malformed datagrams are dropped and counted; a well-formed one after them gets through", { timeout: 10_000 }, async () => {
  const peers = await ringPeers();
  const nodes = await openAll(peers);
  const raw = dgram.createSocket("udp4");
  try {
    const r2 = nodes.get("r2")!;
    const good = { type: "iLostPred", epoch: 1, suspect: "r1", from: "r3", inc: 3, seq: 1 };
    const bad: Array<[string, string]> = [
      ["oversized", JSON.stringify({ ...good, pad: "x".repeat(DEFAULT_SETTINGS.ringDatagramBytesMax) })],
      ["not JSON", "{not json"],
      ["not an object", "[1,2]"],
      ["unknown key", JSON.stringify({ ...good, extra: 1 })],
      ["unknown type", JSON.stringify({ ...good, type: "iAmLeader" })],
      ["sender not a ring node", JSON.stringify({ ...good, from: "mallory" })],
      ["negative epoch", JSON.stringify({ ...good, epoch: -1 })],
      ["fractional sequence", JSON.stringify({ ...good, seq: 1.5 })],
      ["missing suspect", JSON.stringify({ ...good, suspect: undefined })],
      ["bad incarnation", JSON.stringify({ ...good, inc: "ab" })],
      ["sealed without a secret", JSON.stringify({ mac: "0".repeat(64), data: good })],
    ];
    const port = peers.find((p) => p.id === "r2")!.udpPort;
    for (const [, text] of bad) raw.send(text, port, "127.0.0.1");
    await eventually("r2 counted every bad datagram", () => r2.channel.counts.received === bad.length, DELIVERY_MS);
    assert.equal(r2.channel.counts.oversized, 1);
    assert.equal(r2.channel.counts.malformed, bad.length - 1);
    assert.equal(r2.got.length, 0, "nothing bad reached the core");
    // The control: the same path carries a well-formed datagram.
    raw.send(JSON.stringify(good), port, "127.0.0.1");
    await eventually("r2 got the good datagram", () => r2.got.length === 1, DELIVERY_MS);
    assert.deepEqual(r2.got[0], good);
  } finally {
    await new Promise<void>((resolve) => raw.close(() => resolve()));
    await closeAll(nodes);
  }
});

test("udp: a restarted sender's datagrams are not taken for copies, and close frees the port for it", { timeout: 10_000 }, async () => {
  const peers = await ringPeers();
  const nodes = await openAll(peers);
  let again: RepairChannel | undefined;
  try {
    const r2 = nodes.get("r2")!;
    nodes.get("r1")!.channel.send(ASK);
    await eventually("r2 got the first", () => r2.got.length === 1, DELIVERY_MS);
    await nodes.get("r1")!.channel.close();
    // The same node, restarted on the same port: its sequence numbers start at 1 again.
    again = await RepairChannel.open({
      self: "r1",
      peers,
      broadcast: "127.255.255.255",
      datagramBytesMax: DEFAULT_SETTINGS.ringDatagramBytesMax,
      rememberedMax: DEFAULT_SETTINGS.ringDatagramsRememberedMax,
      incarnation: INC + 1,
      onMessage: () => {},
    });
    again.send(ASK);
    await eventually("r2 got the restarted node's datagram", () => r2.got.length === 2, DELIVERY_MS);
    assert.equal(r2.got[0].seq, r2.got[1].seq, "same sequence number, different incarnation");
    assert.notEqual(r2.got[0].inc, r2.got[1].inc);
  } finally {
    await again?.close();
    await closeAll(nodes);
  }
});

/** A datagram from r3 as the tests below send it to r2 by hand (sealed or not). */
const FROM_R3: RepairDatagram = { type: "iLostPred", epoch: 1, suspect: "r1", from: "r3", inc: 5, seq: 1 };

/** What a channel did with every datagram it got: passed on, or dropped for some reason. */
function handled(node: Node): number {
  const { duplicate, oversized, malformed, own, forged, replayed, notLoopback, overloaded } = node.channel.counts;
  return node.got.length + duplicate + oversized + malformed + own + forged + replayed + notLoopback + overloaded;
}

function closeSocket(socket: dgram.Socket): Promise<void> {
  return new Promise((resolve) => socket.close(() => resolve()));
}

function hex(bytes: ArrayBuffer): string {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** What the sealed tests below work with: three channels with the secret, r2's port, a raw socket and the key. */
interface SealedRing {
  r2: Node;
  port: number;
  raw: dgram.Socket;
  key: CryptoKey;
}

/** Opens three channels with the secret (`tweak` as for openAll) and a raw socket, runs `body`, closes them all. */
async function withSealedRing(tweak: (id: string, o: RepairChannelOptions) => RepairChannelOptions, body: (ring: SealedRing) => Promise<void>): Promise<void> {
  const peers = await ringPeers();
  const nodes = await openAll(peers, (id, o) => tweak(id, { ...o, secret: SECRET }));
  const raw = dgram.createSocket("udp4");
  try {
    await body({ r2: nodes.get("r2")!, port: peers.find((p) => p.id === "r2")!.udpPort, raw, key: await datagramKey(SECRET) });
  } finally {
    await closeSocket(raw);
    await closeAll(nodes);
  }
}

test("udp (sealed): forged datagrams (no MAC, another key's MAC, a field changed after sealing, a broken seal) are dropped as forged; a sealed one passes", { timeout: 10_000 }, async () => {
  await withSealedRing((_, o) => o, async ({ r2, port, raw, key }) => {
    const sealed = new TextDecoder().decode(await encodeDatagram(FROM_R3, key));
    const data = JSON.stringify(FROM_R3);
    const hmac = { name: "HMAC", hash: "SHA-256" };
    // The secret itself as the key (no derivation), and the derived key without the MAC's label: neither fits.
    const rawSecretKey = await crypto.subtle.importKey("raw", new TextEncoder().encode(SECRET), hmac, false, ["sign"]);
    const withRawSecret = `{"mac":"${hex(await crypto.subtle.sign("HMAC", rawSecretKey, new TextEncoder().encode(`mutexd repair datagram v1\n${data}`)))}","data":${data}}`;
    const withoutLabel = `{"mac":"${hex(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(data)))}","data":${data}}`;
    const forged: Array<[string, string | Uint8Array]> = [
      ["no MAC (the plain JSON of a cluster without a secret)", data],
      ["sealed under another secret", await encodeDatagram(FROM_R3, await datagramKey("another-secret-of-at-least-32-characters"))],
      ["the epoch changed after sealing", sealed.replace('"epoch":1', '"epoch":9')],
      ["the sender changed after sealing", sealed.replace('"from":"r3"', '"from":"r1"')],
      ["the MAC in capitals", sealed.replace(/"mac":"([0-9a-f]+)"/, (_, mac: string) => `"mac":"${mac.toUpperCase()}"`)],
      ["the MAC cut short", sealed.replace(/"mac":"[0-9a-f]{2}/, '"mac":"')],
      ["a key before the MAC", sealed.replace('{"mac"', '{"x":1,"mac"')],
      ["sealed with the secret itself as the key", withRawSecret],
      ["the derived key's MAC without the label", withoutLabel],
    ];
    for (const [, bytes] of forged) raw.send(bytes, port, "127.0.0.1");
    await eventually("r2 handled every forged datagram", () => handled(r2) === forged.length, DELIVERY_MS);
    assert.equal(r2.channel.counts.forged, forged.length, "each is forged, none merely malformed");
    assert.deepEqual(r2.got, [], "nothing forged reached the core");
    // The control: the same path carries the datagram as sealed.
    raw.send(sealed, port, "127.0.0.1");
    await eventually("r2 got the sealed datagram", () => r2.got.length === 1, DELIVERY_MS);
    assert.deepEqual(r2.got[0], FROM_R3);
  });
});

test("udp (sealed): a replayed datagram is dropped as replayed after the copies' memory forgot it, below the window, and from an older incarnation", { timeout: 10_000 }, async () => {
  // r2 remembers one datagram for copies: every earlier one must be refused by the window or the incarnation.
  await withSealedRing((id, o) => ({ ...o, rememberedMax: id === "r2" ? 1 : o.rememberedMax }), async ({ r2, port, raw, key }) => {
    let sent = 0;
    /** Sends r3's datagram (inc, seq) to r2 and waits until r2 has handled it; returns what r2 did with it. */
    const deliver = async (inc: number, seq: number): Promise<string> => {
      const before = { ...r2.channel.counts, got: r2.got.length };
      raw.send(await encodeDatagram({ ...FROM_R3, inc, seq }, key), port, "127.0.0.1");
      sent += 1;
      await eventually(`r2 handled (${inc}, ${seq})`, () => handled(r2) === sent, DELIVERY_MS);
      if (r2.got.length > before.got) return "passed";
      const counts = r2.channel.counts as Record<string, number>;
      return Object.keys(counts).find((k) => k !== "received" && counts[k] > (before as Record<string, number>)[k]) ?? "?";
    };
    assert.equal(await deliver(5, 1), "passed");
    assert.equal(await deliver(5, 1), "duplicate", "a copy the memory still holds is a copy");
    assert.equal(await deliver(5, 2), "passed");
    assert.equal(await deliver(5, 1), "replayed", "forgotten by the copies' memory, still seen by the window");
    assert.equal(await deliver(5, 2 + REPLAY_WINDOW), "passed");
    assert.equal(await deliver(5, 3), "passed", "a late datagram inside the window passes once");
    assert.equal(await deliver(5, 2), "replayed", "below the window: refused though never compared");
    assert.equal(await deliver(4, 100), "replayed", "an older incarnation, whatever its sequence");
    assert.equal(await deliver(6, 1), "passed", "a newer incarnation (the sender restarted) starts its sequence again");
    assert.equal(await deliver(5, 3 + REPLAY_WINDOW), "replayed", "the incarnation before the restart is now refused");
    assert.deepEqual(r2.got.map((d) => [d.inc, d.seq]), [[5, 1], [5, 2], [5, 2 + REPLAY_WINDOW], [5, 3], [6, 1]]);
    assert.equal(r2.channel.counts.forged, 0);
  });
});

test("udp (sealed): a burst of datagrams reaches the core in the order it arrived (MAC checks one at a time)", { timeout: 10_000 }, async () => {
  await withSealedRing((_, o) => o, async ({ r2, port, raw, key }) => {
    // Fewer than the verification queue holds, so none may be dropped as overloaded.
    const seqs = Array.from({ length: 40 }, (_, i) => i + 1);
    const bursts = await Promise.all(seqs.map((seq) => encodeDatagram({ ...FROM_R3, seq }, key)));
    // Each send waits for the one before to leave: Deno's node:dgram sends a burst of sends
    // issued at once in reverse order (seen here), and this test is about the receiver's order.
    for (const bytes of bursts) await new Promise<void>((resolve) => raw.send(bytes, port, "127.0.0.1", () => resolve()));
    await eventually("r2 handled the burst", () => handled(r2) === seqs.length, DELIVERY_MS);
    assert.deepEqual(r2.got.map((d) => d.seq), seqs, JSON.stringify(r2.channel.counts));
  });
});

test("udp (sealed): a flood beyond the MAC-check queue is dropped as overloaded, and the queue takes datagrams again once it drained", { timeout: 10_000 }, async () => {
  await withSealedRing((_, o) => o, async ({ r2, key }) => {
    // Datagrams handed to the channel within one turn of the event loop, as a flood read from
    // the socket at once: the test emits the socket's own event (a private field) so that none
    // is checked before the queue is full, on any machine.
    const socket = (r2.channel as unknown as { socket: { emit(event: string, ...args: unknown[]): boolean } }).socket;
    const flood = VERIFY_QUEUE_MAX + 10;
    const bytes = await Promise.all(Array.from({ length: flood }, (_, i) => encodeDatagram({ ...FROM_R3, seq: i + 1 }, key)));
    for (const b of bytes) socket.emit("message", b, { address: "127.0.0.1" });
    assert.equal(r2.channel.counts.overloaded, flood - VERIFY_QUEUE_MAX, "the ones beyond the queue are dropped at once");
    await eventually("the queue drained", () => r2.got.length === VERIFY_QUEUE_MAX, DELIVERY_MS);
    assert.deepEqual(r2.got.map((d) => d.seq), Array.from({ length: VERIFY_QUEUE_MAX }, (_, i) => i + 1));
    socket.emit("message", await encodeDatagram({ ...FROM_R3, seq: flood + 1 }, key), { address: "127.0.0.1" });
    await eventually("a datagram after the flood passes", () => r2.got.length === VERIFY_QUEUE_MAX + 1, DELIVERY_MS);
  });
});

/** This machine's first IPv4 address that is not loopback, if it has one. */
function nonLoopbackAddress(): string | undefined {
  for (const addresses of Object.values(networkInterfaces())) {
    for (const a of addresses ?? []) if (a.family === "IPv4" && !a.internal) return a.address;
  }
  return undefined;
}

test("udp (without a secret): a datagram from a non-loopback source is dropped as notLoopback; from loopback it passes", { timeout: 10_000 }, async () => {
  // The rule itself, for the addresses a test on one machine cannot send from.
  assert.equal(sourceAllowed("127.0.0.1", false), true);
  assert.equal(sourceAllowed("127.9.8.7", false), true);
  assert.equal(sourceAllowed("10.0.0.5", false), false);
  assert.equal(sourceAllowed("192.168.1.20", false), false);
  assert.equal(sourceAllowed("10.0.0.5", true), true, "with the secret the MAC decides, not the address");
  const address = nonLoopbackAddress();
  if (address === undefined) {
    process.stdout.write("# no non-loopback IPv4 address here: the channel's drop was not tried on a real datagram\n");
    return;
  }
  const peers = await ringPeers();
  const nodes = await openAll(peers);
  const outside = dgram.createSocket("udp4");
  const inside = dgram.createSocket("udp4");
  try {
    const r2 = nodes.get("r2")!;
    const port = peers.find((p) => p.id === "r2")!.udpPort;
    const bytes = await encodeDatagram(FROM_R3);
    // Bound to the machine's other address, sent to it: r2's socket (on 0.0.0.0) sees that source.
    await new Promise<void>((resolve) => outside.bind(0, address, () => resolve()));
    outside.send(bytes, port, address);
    await eventually("r2 dropped the outside datagram", () => r2.channel.counts.notLoopback === 1, DELIVERY_MS);
    assert.deepEqual(r2.got, []);
    inside.send(bytes, port, "127.0.0.1");
    await eventually("r2 got the same datagram from loopback", () => r2.got.length === 1, DELIVERY_MS);
  } finally {
    await closeSocket(outside);
    await closeSocket(inside);
    await closeAll(nodes);
  }
});
