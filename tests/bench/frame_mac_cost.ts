/**
 * What a replication stream frame's MAC costs (cluster/peer_frame.ts FrameCodec, through
 * peer_mac.ts `prefixedMac`: the head's fixed fields hashed once per connection), beside ways of
 * computing the same HMAC-SHA256 bytes: `mac` over the whole head, the body given to the HMAC as a
 * string (no TextEncoder copy), and the key as a reused KeyObject.
 * Every variant's MAC is checked equal to `mac`'s before it is timed.
 *
 *   deno run -A tests/bench/frame_mac_cost.ts      bun tests/bench/frame_mac_cost.ts
 *
 * Prints the median of 5 rounds, in µs per frame. Loops are bounded by their counts.
 */
import { createHmac, createSecretKey } from "node:crypto";
import { mac, peerKey, prefixedMac } from "../../cluster/peer_mac.ts";
import { microsecondsPerCall } from "./lib/stats.ts";

const ROUNDS = 5;
const COUNT = 20_000;

const microseconds = (fn: () => void) => microsecondsPerCall(COUNT, fn, ROUNDS);

const key = await peerKey("a cluster secret of the benchmark");
const keyObject = createSecretKey(key.bytes);
const head = ["mutexd-frame-v1", "0123456789abcdef0123456789abcdef", "request", "p1", "b1", 1_234, 0, 0];
// A typical append of one entry, as the stream sends it.
const body = JSON.stringify({ type: "append", from: "p1", epoch: 3, syncGen: 2, entries: [{ index: 1_234, epoch: 3, atMs: 987_654, requestId: "0b7c6a1e-2f4d-4c1b-9a57-3d2e1f0a9b8c", command: { type: "enter", name: "db/orders/42", session: "p1-0badcafe-3-17", secretHash: "5".repeat(64), mode: "exclusive", waitMs: 5_000, lockDelayMs: 0, callId: "5f0e4a2b-8c1d-4e3f-a9b7-6d5c4b3a2918" } }] });
const encoder = new TextEncoder();

const [fixedHead, integers] = [head.slice(0, 5), head.slice(5) as number[]];
const framePrefixedMac = prefixedMac(key, fixedHead);

const variants: Array<[string, () => Buffer | string]> = [
  ["mac(), the whole head per frame, body as text (the stream before)", () => mac(key, head, body)],
  ["prefixedMac, one-shot hashes, hex (as the stream calls it)", () => framePrefixedMac(integers, body)],
  ["mac(), body through TextEncoder", () => mac(key, head, encoder.encode(body))],
  ["createHmac, body through TextEncoder (the stream before)", () => createHmac("sha256", key.bytes).update(JSON.stringify(head) + "\n").update(encoder.encode(body)).digest()],
  ["createHmac, body as a string", () => createHmac("sha256", key.bytes).update(JSON.stringify(head) + "\n").update(body).digest()],
  ["createHmac, head and body as one string", () => createHmac("sha256", key.bytes).update(JSON.stringify(head) + "\n" + body).digest()],
  ["createHmac, reused KeyObject, body as a string", () => createHmac("sha256", keyObject).update(JSON.stringify(head) + "\n").update(body).digest()],
  ["mac() and its hex (what a frame carries)", () => Buffer.from(mac(key, head, body).toString("hex"))],
];

const expected = mac(key, head, encoder.encode(body)).toString("hex");
const runtime = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined" ? "bun" : "deno";
console.log(`frame MAC cost (${runtime}), median of ${ROUNDS} rounds, µs per frame (body ${body.length} characters):`);
for (const [what, fn] of variants.slice(0, 7)) {
  const macOf = fn();
  if ((typeof macOf === "string" ? macOf : macOf.toString("hex")) !== expected) throw new Error(`${what}: not the same MAC`);
}
for (const [what, fn] of variants) console.log(`${microseconds(fn).toFixed(2).padStart(9)} µs  ${what}`);
