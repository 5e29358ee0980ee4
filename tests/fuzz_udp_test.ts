/**
 * Fuzzing the ring's repair datagrams (fast-check), plain and sealed.
 *
 * Plain (a cluster without a secret): `decodeDatagram` on random bytes and on mutated valid
 * datagrams never throws, answers `{ error }` for anything invalid and returns only datagrams
 * that pass an independent check; a live RepairChannel on loopback, sent a bounded number of
 * invalid datagrams from a plain UDP socket, counts every one as dropped, delivers none, and
 * still delivers a valid datagram after them.
 *
 * Sealed (with the cluster secret, docs/security.md "Repair datagrams (UDP)"): random bytes and a
 * genuine sealed datagram with a byte changed anywhere, cut short, sealed under another key or
 * the secret itself, or sealed over another label never pass `unsealDatagram`; every genuine
 * sealed datagram does and decodes to itself; data sealed with the right key (a member sending
 * garbage) passes the MAC and is then judged by the schema alone. A live sealed channel drops and
 * counts the forged ones (`forged`), old incarnations and sequence numbers below the window
 * (`replayed`) and right-key garbage (`malformed`), delivers none of them, and still delivers a
 * valid one. Every socket and channel is closed at the end.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import fc from "fast-check";
import { datagramKey, decodeDatagram, encodeDatagram, REPLAY_WINDOW, RepairChannel, type RepairDatagram, unsealDatagram } from "../cluster/ring/udp.ts";
import { EPOCH_MAX } from "../lib/core/ring/view_wire.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { FUZZ_SEED, FUZZ_TEST_TIMEOUT_MS, fuzz, fuzzRuns, hostileValue, mutatedObject } from "./_fuzz.ts";
import { eventually, freeUdpPort } from "./_harness.ts";

const RING = new Set(["r1", "r2", "r3"]);
/** The sender's incarnation: an ordered boot count (RingStorage.nextIncarnation). */
const INC = 7;
const VALID: RepairDatagram = { type: "whoLostPred", epoch: 4, suspect: "r2", from: "r3", inc: INC, seq: 7 };
const KEYS = ["type", "epoch", "suspect", "from", "inc", "seq"];
const SECRET = "a-cluster-secret-of-at-least-32-characters";
const KEY = await datagramKey(SECRET);
const OTHER_KEY = await datagramKey("another-secret-of-at-least-32-characters");
/** The label udp.ts MACs before the data (written here apart from udp.ts: the seal below must match its own). */
const MAC_LABEL = "mutexd repair datagram v1\n";

/** What a decoded datagram must be (written apart from udp.ts, so the two check each other). */
function isValid(value: Record<string, unknown>): boolean {
  const count = (n: unknown) => typeof n === "number" && Number.isSafeInteger(n) && n >= 0;
  return Object.keys(value).every((k) => KEYS.includes(k)) && (value.type === "whoLostPred" || value.type === "iLostPred") &&
    count(value.epoch) && (value.epoch as number) <= EPOCH_MAX && count(value.seq) && count(value.inc) &&
    RING.has(value.suspect as string) && RING.has(value.from as string);
}

const utf8 = (text: string) => new TextEncoder().encode(text);

/** Valid bytes with one byte replaced by another value (never the same one) or cut at a position. */
function changedOrCut(valid: Uint8Array): fc.Arbitrary<Uint8Array> {
  return fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 }), fc.boolean()).map(([at, delta, cut]) => {
    const i = at % valid.length;
    if (cut) return valid.slice(0, i);
    const copy = valid.slice();
    copy[i] = (copy[i] + delta) % 256;
    return copy;
  });
}

/** Bytes: random ones, JSON of random values, mutated valid datagrams, valid ones with a byte changed or cut. */
const datagramBytes: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 2, arbitrary: fc.uint8Array({ maxLength: 200 }) },
  { weight: 1, arbitrary: hostileValue.map((v) => utf8(JSON.stringify(v) ?? "null")) },
  { weight: 5, arbitrary: mutatedObject(VALID).map((d) => utf8(JSON.stringify(d))) },
  { weight: 2, arbitrary: changedOrCut(await encodeDatagram(VALID)) },
);

test("fuzz udp: decodeDatagram never throws and returns only valid datagrams; a valid one decodes to itself", { timeout: FUZZ_TEST_TIMEOUT_MS }, async () => {
  assert.deepEqual(decodeDatagram(await encodeDatagram(VALID), RING), VALID);
  let [errors, decoded] = [0, 0];
  await fuzz("udp decodeDatagram", datagramBytes, (bytes) => {
    const result = decodeDatagram(bytes, RING);
    if ("error" in result) {
      assert.equal(typeof result.error, "string");
      assert.ok(result.error.length > 0 && result.error.length <= 200, `a short reason: ${result.error}`);
      errors += 1;
    } else {
      assert.ok(isValid(result as unknown as Record<string, unknown>), `decoded an invalid datagram: ${JSON.stringify(result)}`);
      decoded += 1;
    }
  }, 20_000);
  console.log(`fuzz udp decodeDatagram: ${errors} refused, ${decoded} decoded`);
  assert.ok(errors > 0 && decoded > 0, "both outcomes were exercised");
});

// ---- Sealed datagrams ------------------------------------------------------------------------

/** `data` sealed as udp.ts seals it, but with any key and label: `{"mac":"<hex>","data":<data>}`. */
async function seal(key: CryptoKey, label: string, data: Uint8Array): Promise<Uint8Array> {
  const input = new Uint8Array([...utf8(label), ...data]);
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, input));
  const hex = Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join("");
  return new Uint8Array([...utf8(`{"mac":"${hex}","data":`), ...data, ...utf8("}")]);
}

/** The secret itself as an HMAC key (no derivation): a key that must not fit either. */
const RAW_SECRET_KEY = await crypto.subtle.importKey("raw", utf8(SECRET), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);

/** Any datagram the schema admits (the fields a sender may set; names from the ring). */
const validDatagram: fc.Arbitrary<RepairDatagram> = fc.record({
  type: fc.constantFrom("whoLostPred" as const, "iLostPred" as const),
  epoch: fc.integer({ min: 0, max: EPOCH_MAX }),
  suspect: fc.constantFrom(...RING),
  from: fc.constantFrom(...RING),
  inc: fc.oneof(fc.nat(), fc.constant(Number.MAX_SAFE_INTEGER)),
  seq: fc.oneof(fc.nat(), fc.constant(Number.MAX_SAFE_INTEGER)),
}, { noNullPrototype: true });

type SealedCase = { kind: string; bytes: Uint8Array; genuine?: RepairDatagram };

/**
 * Sealed bytes as an attacker without the key makes them (`kind` says how) or as a member does
 * (`genuine`, sealed by encodeDatagram with the right key). The data is a valid datagram or a
 * mutated one, so a forged seal over valid data is tried too.
 */
const sealedCases: fc.Arbitrary<Promise<SealedCase>> = fc.record({
  datagram: validDatagram,
  mutated: fc.option(mutatedObject(VALID), { freq: 2 }),
  kind: fc.constantFrom("genuine", "changed", "otherKey", "rawSecret", "otherLabel", "unsealed", "random", "garbageRightKey"),
  change: fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 }), fc.boolean()),
  random: fc.uint8Array({ maxLength: 300 }),
}).map(async ({ datagram, mutated, kind, change, random }): Promise<SealedCase> => {
  const data = utf8(JSON.stringify(mutated ?? datagram));
  switch (kind) {
    case "genuine":
      return { kind, bytes: await encodeDatagram(datagram, KEY), genuine: datagram };
    case "changed": {
      const [at, delta, cut] = change;
      const bytes = await encodeDatagram(datagram, KEY);
      const i = at % bytes.length;
      if (cut) return { kind: "cut", bytes: bytes.slice(0, i) };
      bytes[i] = (bytes[i] + delta) % 256;
      return { kind, bytes };
    }
    case "otherKey":
      return { kind, bytes: await seal(OTHER_KEY, MAC_LABEL, data) };
    case "rawSecret":
      return { kind, bytes: await seal(RAW_SECRET_KEY, MAC_LABEL, data) };
    case "otherLabel":
      // The right key over another label: the HTTP peer request's, or none at all.
      return { kind, bytes: await seal(KEY, change[2] ? "mutexd peer request v1" : "", data) };
    case "unsealed":
      return { kind, bytes: data };
    case "random":
      return { kind, bytes: random };
    default:
      return { kind, bytes: await seal(KEY, MAC_LABEL, data) };
  }
});

test("fuzz udp sealed: only a genuine seal opens; forged, changed, cut, other-key and other-label datagrams never decode", { timeout: FUZZ_TEST_TIMEOUT_MS }, async () => {
  // The seal written here is udp.ts's own: the forgeries below differ from a genuine one only where they say.
  assert.deepEqual(await seal(KEY, MAC_LABEL, await encodeDatagram(VALID)), await encodeDatagram(VALID, KEY));
  const tally: Record<string, number> = {};
  await fuzz("udp sealed datagrams", sealedCases, async (promised) => {
    const c = await promised;
    const opened = await unsealDatagram(c.bytes, KEY);
    const decoded = "error" in opened ? opened : decodeDatagram(opened.data, RING);
    const outcome = "error" in decoded ? "refused" : "decoded";
    tally[`${c.kind} ${outcome}`] = (tally[`${c.kind} ${outcome}`] ?? 0) + 1;
    if (c.genuine) {
      assert.deepEqual(decoded, c.genuine, `a genuine sealed datagram: ${JSON.stringify(c.genuine)}`);
    } else if (c.kind === "garbageRightKey") {
      // The MAC holds (a member sent it): the schema alone judges the data.
      assert.ok(!("error" in opened), `right key and label: ${JSON.stringify(opened)}`);
      if (!("error" in decoded)) assert.ok(isValid(decoded as unknown as Record<string, unknown>), `decoded an invalid datagram: ${JSON.stringify(decoded)}`);
    } else {
      assert.ok("error" in opened, `${c.kind}: a forged seal opened: ${new TextDecoder().decode(c.bytes).slice(0, 200)}`);
    }
  }, 5_000);
  console.log(`fuzz udp sealed datagrams: ${JSON.stringify(tally)}`);
  for (const kind of ["genuine decoded", "changed refused", "cut refused", "otherKey refused", "rawSecret refused", "otherLabel refused", "unsealed refused", "random refused", "garbageRightKey refused", "garbageRightKey decoded"]) {
    assert.ok((tally[kind] ?? 0) > 0, `exercised: ${kind}`);
  }
});

// ---- Live channels ---------------------------------------------------------------------------

/** Three ring peers on loopback with free UDP ports; r1 is the channel under test. */
async function loopbackPeers() {
  return [
    { id: "r1", host: "127.0.0.1", udpPort: await freeUdpPort() },
    { id: "r2", host: "127.0.0.1", udpPort: await freeUdpPort() },
    { id: "r3", host: "127.0.0.1", udpPort: await freeUdpPort() },
  ];
}

/**
 * Opens channel r1 (with `secret` if given), runs `body` with a plain UDP socket's `sendAll`
 * (which sends datagrams in batches and waits until the channel has judged each: `judged()`
 * counts the drops and deliveries) and closes both.
 */
async function withChannel(secret: string | undefined, body: (h: { channel: RepairChannel; got: RepairDatagram[]; sendAll(datagrams: Uint8Array[]): Promise<void> }) => Promise<void>) {
  const got: RepairDatagram[] = [];
  const channel = await RepairChannel.open({
    self: "r1",
    peers: await loopbackPeers(),
    broadcast: "127.255.255.255",
    datagramBytesMax: DEFAULT_SETTINGS.ringDatagramBytesMax,
    rememberedMax: DEFAULT_SETTINGS.ringDatagramsRememberedMax,
    secret,
    incarnation: 1,
    onMessage: (d) => got.push(d),
  });
  const socket = dgram.createSocket("udp4");
  const sendTo = (bytes: Uint8Array) => new Promise<void>((resolve, reject) => socket.send(bytes, channel.port, "127.0.0.1", (error) => (error ? reject(error) : resolve())));
  const { sent: _sent, sendErrors: _errors, received: _received, ...drops } = channel.counts;
  const judged = () => got.length + Object.keys(drops).reduce((sum, k) => sum + channel.counts[k as keyof typeof drops], 0);
  const sendAll = async (datagrams: Uint8Array[]) => {
    // In batches of BATCH (a few KiB, under the MAC-check queue): a larger burst could overflow
    // the socket's receive buffer, and UDP drops what does not fit without a trace. An empty
    // datagram is legal UDP.
    const BATCH = 20;
    const start = judged();
    for (let i = 0; i < datagrams.length; i += BATCH) {
      for (const bytes of datagrams.slice(i, i + BATCH)) await sendTo(bytes);
      const done = start + Math.min(i + BATCH, datagrams.length);
      await eventually(`the channel judged ${done} datagrams`, () => judged() >= done, 5_000);
    }
  };
  try {
    await body({ channel, got, sendAll });
  } finally {
    socket.close();
    await channel.close();
  }
}

test("fuzz udp: a live repair channel drops and counts invalid datagrams, delivers none, and still delivers a valid one", { timeout: FUZZ_TEST_TIMEOUT_MS }, async () => {
  const count = fuzzRuns(200);
  // The invalid datagrams: drawn with the fixed seed, kept only when the decoder refuses them or
  // they are oversized (a valid one would rightly be delivered).
  const max = DEFAULT_SETTINGS.ringDatagramBytesMax;
  const candidates = fc.sample(fc.oneof({ weight: 9, arbitrary: datagramBytes }, { weight: 1, arbitrary: fc.uint8Array({ minLength: max + 1, maxLength: max + 200 }) }), { seed: FUZZ_SEED, numRuns: count * 4 });
  const invalid = candidates.filter((bytes) => bytes.length > max || "error" in decodeDatagram(bytes, RING)).slice(0, count);
  assert.equal(invalid.length, count, "enough invalid datagrams drawn");
  await withChannel(undefined, async ({ channel, got, sendAll }) => {
    await sendAll(invalid);
    assert.equal(channel.counts.received, count);
    assert.equal(channel.counts.malformed + channel.counts.oversized, count, JSON.stringify(channel.counts));
    assert.deepEqual(got, [], "no invalid datagram reached the core");
    console.log(`fuzz udp live channel: ${count} invalid datagrams, counts ${JSON.stringify(channel.counts)}`);
    // Still working: a valid datagram from r3 is delivered once.
    await sendAll([await encodeDatagram(VALID)]);
    assert.deepEqual(got, [VALID]);
  });
});

test("fuzz udp sealed: a live sealed channel drops and counts forged, replayed and garbage datagrams, delivers none, and still delivers a valid one", { timeout: FUZZ_TEST_TIMEOUT_MS }, async () => {
  const count = fuzzRuns(200);
  const max = DEFAULT_SETTINGS.ringDatagramBytesMax;
  const [forgedCount, garbageCount] = [Math.floor(count / 2), Math.floor(count / 4)];
  const replayCount = count - forgedCount - garbageCount;
  const forged: Uint8Array[] = [];
  for (const c of await Promise.all(fc.sample(sealedCases, { seed: FUZZ_SEED, numRuns: count * 4 }))) {
    // Genuine ones would rightly be delivered, right-key garbage is drawn below; oversized ones are the plain test's.
    if (c.bytes.length <= max && "error" in await unsealDatagram(c.bytes, KEY)) forged.push(c.bytes);
  }
  // Garbage a member sends: mutated datagrams sealed with the right key that the schema refuses.
  const garbage: Uint8Array[] = [];
  for (const d of fc.sample(mutatedObject(VALID), { seed: FUZZ_SEED, numRuns: count * 4 })) {
    const data = utf8(JSON.stringify(d));
    if ("error" in decodeDatagram(data, RING)) garbage.push(await seal(KEY, MAC_LABEL, data));
  }
  garbage.splice(0, garbage.length, ...garbage.filter((bytes) => bytes.length <= max));
  // Replays: genuine seals of r3 from an older incarnation, or of its incarnation below the window.
  const first: RepairDatagram = { ...VALID, inc: INC, seq: 1_000 };
  const replays = fc.sample(fc.record({ older: fc.boolean(), seq: fc.nat({ max: 1_000 - REPLAY_WINDOW }), inc: fc.nat({ max: INC - 1 }) }), { seed: FUZZ_SEED, numRuns: replayCount })
    .map(({ older, seq, inc }) => ({ ...VALID, inc: older ? inc : INC, seq }));
  const sealedReplays = await Promise.all(replays.map((d) => encodeDatagram(d, KEY)));
  const take = { forged: forged.slice(0, forgedCount), garbage: garbage.slice(0, garbageCount) };
  assert.ok(take.forged.length === forgedCount && take.garbage.length === garbageCount, `enough drawn: ${forged.length} forged, ${garbage.length} garbage`);
  // Mixed in a fixed order (the seed's), so the replays are not all at the end.
  const hostile = fc.sample(fc.shuffledSubarray([...take.forged, ...take.garbage, ...sealedReplays], { minLength: count, maxLength: count }), { seed: FUZZ_SEED, numRuns: 1 })[0];
  await withChannel(SECRET, async ({ channel, got, sendAll }) => {
    await sendAll([await encodeDatagram(first, KEY)]);
    assert.deepEqual(got, [first], "a genuine sealed datagram is delivered");
    await sendAll(hostile);
    const { forged: f, replayed, malformed } = channel.counts;
    console.log(`fuzz udp live sealed channel: ${hostile.length} hostile datagrams, counts ${JSON.stringify(channel.counts)}`);
    assert.deepEqual({ forged: f, replayed, malformed }, { forged: take.forged.length, replayed: sealedReplays.length, malformed: take.garbage.length }, JSON.stringify(channel.counts));
    assert.deepEqual(got, [first], "no hostile datagram reached the core");
    // Still working: the next genuine one from r3 is delivered.
    const next = { ...first, seq: first.seq + 1 };
    await sendAll([await encodeDatagram(next, KEY)]);
    assert.deepEqual(got, [first, next]);
  });
});
