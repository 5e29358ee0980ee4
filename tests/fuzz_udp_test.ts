/**
 * Fuzzing the ring's repair datagrams (fast-check): `decodeDatagram` on random bytes and on
 * mutated valid datagrams never throws, answers `{ error }` for anything invalid and returns only
 * datagrams that pass an independent check; and a live RepairChannel on loopback, sent a
 * bounded number of invalid datagrams from a plain UDP socket, counts every one as dropped,
 * delivers none, and still delivers a valid datagram after them. The sockets are closed at the end.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import fc from "fast-check";
import { decodeDatagram, encodeDatagram, RepairChannel, type RepairDatagram } from "../cluster/ring/udp.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { FUZZ_SEED, FUZZ_TEST_TIMEOUT_MS, fuzz, fuzzRuns, hostileValue, mutatedObject } from "./_fuzz.ts";
import { eventually, freeUdpPort } from "./_harness.ts";

const RING = new Set(["r1", "r2", "r3"]);
/**
 * The sender's incarnation as udp.ts writes it here (hex); the repair channel's authentication
 * makes it an ordered number: then these two lines change, the rest stays.
 */
const INC = "0a1b2c3d";
const incValid = (inc: unknown) => typeof inc === "string" && /^[0-9a-f]{1,32}$/.test(inc);
const VALID: RepairDatagram = { type: "whoLostPred", epoch: 4, suspect: "r2", from: "r3", inc: INC, seq: 7 };
const KEYS = ["type", "epoch", "suspect", "from", "inc", "seq"];

/** What a decoded datagram must be (written apart from udp.ts, so the two check each other). */
function isValid(value: Record<string, unknown>): boolean {
  const count = (n: unknown) => typeof n === "number" && Number.isSafeInteger(n) && n >= 0;
  return Object.keys(value).every((k) => KEYS.includes(k)) && (value.type === "whoLostPred" || value.type === "iLostPred") &&
    count(value.epoch) && count(value.seq) && RING.has(value.suspect as string) && RING.has(value.from as string) && incValid(value.inc);
}

const utf8 = (text: string) => new TextEncoder().encode(text);

/** Bytes: random ones, JSON of random values, mutated valid datagrams, valid ones with a byte flipped or cut. */
const datagramBytes: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 2, arbitrary: fc.uint8Array({ maxLength: 200 }) },
  { weight: 1, arbitrary: hostileValue.map((v) => utf8(JSON.stringify(v) ?? "null")) },
  { weight: 5, arbitrary: mutatedObject(VALID).map((d) => utf8(JSON.stringify(d))) },
  {
    weight: 2,
    arbitrary: fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.boolean()).map(([at, byte, cut]) => {
      const bytes = encodeDatagram(VALID);
      const i = at % bytes.length;
      if (cut) return bytes.slice(0, i);
      const copy = bytes.slice();
      copy[i] = byte;
      return copy;
    }),
  },
);

test("fuzz udp: decodeDatagram never throws and returns only valid datagrams; a valid one decodes to itself", { timeout: FUZZ_TEST_TIMEOUT_MS }, async () => {
  assert.deepEqual(decodeDatagram(encodeDatagram(VALID), RING), VALID);
  let [errors, decoded] = [0, 0];
  await fuzz("udp decodeDatagram", datagramBytes, (bytes) => {
    const result = decodeDatagram(bytes, RING);
    if ("error" in result) {
      assert.equal(typeof result.error, "string");
      assert.ok(result.error.length > 0 && result.error.length <= 100, `a short reason: ${result.error}`);
      errors += 1;
    } else {
      assert.ok(isValid(result as unknown as Record<string, unknown>), `decoded an invalid datagram: ${JSON.stringify(result)}`);
      decoded += 1;
    }
  }, 20_000);
  console.log(`fuzz udp decodeDatagram: ${errors} refused, ${decoded} decoded`);
  assert.ok(errors > 0 && decoded > 0, "both outcomes were exercised");
});

test("fuzz udp: a live repair channel drops and counts invalid datagrams, delivers none, and still delivers a valid one", { timeout: FUZZ_TEST_TIMEOUT_MS }, async () => {
  const count = fuzzRuns(200);
  // The invalid datagrams: drawn with the fixed seed, kept only when the decoder refuses them or
  // they are oversized (a valid one would rightly be delivered).
  const max = DEFAULT_SETTINGS.ringDatagramBytesMax;
  const candidates = fc.sample(fc.oneof({ weight: 9, arbitrary: datagramBytes }, { weight: 1, arbitrary: fc.uint8Array({ minLength: max + 1, maxLength: max + 200 }) }), { seed: FUZZ_SEED, numRuns: count * 4 });
  const invalid = candidates.filter((bytes) => bytes.length > max || "error" in decodeDatagram(bytes, RING)).slice(0, count);
  assert.equal(invalid.length, count, "enough invalid datagrams drawn");
  const peers = [{ id: "r1", host: "127.0.0.1", udpPort: await freeUdpPort() }, { id: "r2", host: "127.0.0.1", udpPort: await freeUdpPort() }, { id: "r3", host: "127.0.0.1", udpPort: await freeUdpPort() }];
  const got: RepairDatagram[] = [];
  const channel = await RepairChannel.open({
    self: "r1",
    peers,
    broadcast: "127.255.255.255",
    datagramBytesMax: max,
    rememberedMax: DEFAULT_SETTINGS.ringDatagramsRememberedMax,
    onMessage: (d) => got.push(d),
  });
  const socket = dgram.createSocket("udp4");
  const sendTo = (bytes: Uint8Array) => new Promise<void>((resolve, reject) => socket.send(bytes, channel.port, "127.0.0.1", (error) => (error ? reject(error) : resolve())));
  try {
    // In batches of BATCH (a few KiB): a larger burst could overflow the socket's receive buffer,
    // and UDP drops what does not fit without a trace. An empty datagram is legal UDP.
    const BATCH = 20;
    for (let i = 0; i < invalid.length; i += BATCH) {
      for (const bytes of invalid.slice(i, i + BATCH)) await sendTo(bytes);
      const sent = Math.min(i + BATCH, invalid.length);
      await eventually(`the channel received ${sent} datagrams`, () => channel.counts.received >= sent, 5_000);
    }
    assert.equal(channel.counts.received, count);
    assert.equal(channel.counts.malformed + channel.counts.oversized, count, JSON.stringify(channel.counts));
    assert.deepEqual(got, [], "no invalid datagram reached the core");
    console.log(`fuzz udp live channel: ${count} invalid datagrams, counts ${JSON.stringify(channel.counts)}`);
    // Still working: a valid datagram from r3 is delivered once.
    await sendTo(encodeDatagram(VALID));
    await eventually("the valid datagram is delivered", () => got.length === 1, 5_000);
    assert.deepEqual(got, [VALID]);
  } finally {
    socket.close();
    await channel.close();
  }
});
