/**
 * The ring's repair channel (cluster/ring/udp.ts) on loopback, under the runtime running the
 * tests (Deno and Bun): three channels on distinct UDP ports. Proves that broadcast alone reaches
 * every node, that unicast alone reaches each, that the copies of one datagram (broadcast +
 * unicast) reach the core once, that oversized and malformed datagrams are dropped and counted
 * before they reach it, that a restarted sender is not taken for a copy, and that close frees
 * the port. Every channel and socket a test opens is closed at its end.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { type RepairChannelOptions, RepairChannel, type RepairDatagram, type RepairPeer } from "../cluster/ring/udp.ts";
import type { RepairMessage } from "../lib/core/ring/repair.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { eventually, freeUdpPort } from "./_harness.ts";

const IDS = ["r1", "r2", "r3"];
/** UDP on loopback arrives in microseconds; this only bounds a wait on a loaded machine. */
const DELIVERY_MS = 3_000;
/** TEST-NET-1 (RFC 5737): an address nothing answers on, to make one path carry nothing. */
const NOWHERE = "192.0.2.1";
const ASK: RepairMessage = { type: "whoLostPred", epoch: 4, suspect: "r2", from: "r1" };

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

test("udp: one datagram reaches every other node exactly once (broadcast and unicast copies merged), not its sender", { timeout: 10_000 }, async () => {
  const nodes = await openAll(await ringPeers());
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
  } finally {
    await closeAll(nodes);
  }
});

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
    const good = { type: "iLostPred", epoch: 1, suspect: "r1", from: "r3", inc: "ab", seq: 1 };
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
      ["bad incarnation", JSON.stringify({ ...good, inc: "ZZ" })],
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
