/**
 * Peer authentication (cluster/peer_auth.ts), in process: a signer and a Hono app with the peer
 * middleware, joined by a fetch that records (and may alter) each request and answer. Proves
 * that a request is taken only with a valid MAC for this receiver, under a nonce the receiver
 * issued, once; that both a receiver and a sender restart recover through one challenge while a
 * message captured before either is refused after it; and that the sender refuses an answer
 * without a valid MAC. The attacks on real processes are in peer_auth_process_test.ts.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { Hono } from "hono";
import { manualClock } from "../cluster/clock.ts";
import { installErrorHandlers, readBodyBytes } from "../cluster/http_util.ts";
import { memoryLogger } from "../cluster/log.ts";
import { authenticatedSender, peerAuthMiddleware } from "../cluster/peer_auth.ts";
import { PEER_HEADER, signRequest } from "../cluster/peer_head.ts";
import { hexMacMatches, mac, macMatches, macValid, type PeerKey, peerKey, prefixedMac } from "../cluster/peer_mac.ts";
import { PeerSigner } from "../cluster/peer_signer.ts";
import { PeerVerifier, SEQ_WINDOW } from "../cluster/peer_verifier.ts";
import { SecurityLog } from "../cluster/security_log.ts";

const SECRET = "peer-auth-test-secret-0123456789abcdef";
const OTHER_SECRET = "not-the-cluster-secret-0123456789abcdef";
const BASE = "http://b.test";

/**
 * Receiver `self` of a cluster {a, b, c}: `POST /peer/echo` takes `{ from, n }`, checks `from`
 * against the authenticated sender and records `n` (what a request changed); `GET /peer/log`
 * echoes its query.
 */
async function receiver(self = "b", secret = SECRET) {
  const security = new SecurityLog(manualClock(0), memoryLogger(), 10_000);
  const verifier = new PeerVerifier(await peerKey(secret), self, (id) => ["a", "b", "c"].includes(id));
  const taken: number[] = [];
  const app = new Hono();
  installErrorHandlers(app, () => {});
  app.use("/peer/*", peerAuthMiddleware(verifier, security, (c) => readBodyBytes(c, 65_536)));
  app.post("/peer/echo", async (c) => {
    const body = await c.req.json();
    authenticatedSender(c)!.check(body.from);
    taken.push(body.n);
    return c.json({ took: body.n, sender: authenticatedSender(c)!.id });
  });
  app.get("/peer/log", (c) => c.json({ from: c.req.query("from") }));
  return { app, security, taken };
}

type Receiver = Awaited<ReturnType<typeof receiver>>;

/** A signer for `self` whose requests go to `target.app` and are recorded (a copy each) in `sent`. */
async function sender(target: { app: Hono }, self = "a", secret = SECRET) {
  const sent: Request[] = [];
  const signer = new PeerSigner(await peerKey(secret), self, (url, init) => {
    const request = new Request(url, init);
    sent.push(request.clone());
    return Promise.resolve(target.app.fetch(request));
  });
  const echo = (n: number, from = self) =>
    signer.fetch("b", `${BASE}/peer/echo`, { method: "POST", contentType: "application/json", body: JSON.stringify({ from, n }), timeoutMs: 5_000 });
  return { signer, sent, echo };
}

/** `request` sent again as it was, or with some of its parts replaced. */
async function resend(app: Hono, request: Request, change: { url?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Response> {
  const headers = new Headers(request.headers);
  for (const [name, value] of Object.entries(change.headers ?? {})) headers.set(name, value);
  const body = change.body ?? (request.method === "GET" ? undefined : await request.clone().arrayBuffer());
  return app.fetch(new Request(change.url ?? request.url, { method: request.method, headers, body }));
}

async function errorCode(response: Response): Promise<string> {
  return ((await response.json()) as { error: { code: string } }).error.code;
}

/** The nonce `b` issued to the last request in `sent` (after the first contact's challenge). */
const nonceOf = (request: Request) => request.headers.get(PEER_HEADER.nonce)!;

/** A request signed with `key` by hand: any head, not sent by a signer (so not yet seen). */
function signedByHand(key: PeerKey, head: { from: string; to: string; nonce: string; seq: number }, body: string): Request {
  const bytes = new TextEncoder().encode(body);
  const mac = signRequest(key, { ...head, method: "POST", path: "/peer/echo" }, bytes);
  return new Request(`${BASE}/peer/echo`, {
    method: "POST",
    headers: { "content-type": "application/json", [PEER_HEADER.from]: head.from, [PEER_HEADER.nonce]: head.nonce, [PEER_HEADER.seq]: String(head.seq), [PEER_HEADER.mac]: mac },
    body: bytes,
  });
}

test("peer auth: a signed request round-trips; the first contact costs one challenge, later ones none; the answer is the route's", async () => {
  const b = await receiver();
  const a = await sender(b);
  const first = await a.echo(1);
  assert.equal(first.status, 200);
  assert.deepEqual(JSON.parse(first.text), { took: 1, sender: "a" });
  assert.equal(a.sent.length, 2, "first contact: challenged once, retried once");
  assert.notEqual(nonceOf(a.sent[0]), nonceOf(a.sent[1]), "before the first contact a nonce of the sender's own, which b does not take");
  const second = await a.echo(2);
  assert.equal(second.status, 200);
  assert.equal(a.sent.length, 3, "no challenge under the nonce in use");
  const log = await a.signer.fetch("b", `${BASE}/peer/log?from=5`, { method: "GET", timeoutMs: 5_000 });
  assert.deepEqual(JSON.parse(log.text), { from: "5" }, "a GET with a query is signed and checked too");
  assert.deepEqual(b.taken, [1, 2]);
  assert.deepEqual(b.security.view(), { peerChallenged: 1 });
});

test("peer auth: a request with its body, path, seq, sender, nonce or receiver changed, or made with another secret, is refused 401 and changes nothing", async () => {
  const b = await receiver();
  const a = await sender(b);
  await a.echo(1); // first contact: b issues a nonce
  const key = await peerKey(SECRET);
  const nonce = nonceOf(a.sent.at(-1)!);
  const good = signedByHand(key, { from: "a", to: "b", nonce, seq: 10 }, JSON.stringify({ from: "a", n: 10 }));
  const tampered: Array<[string, Parameters<typeof resend>[2]]> = [
    ["body", { body: JSON.stringify({ from: "a", n: 666 }) }],
    ["path", { url: `${BASE}/peer/echo?x=1` }],
    ["seq", { headers: { [PEER_HEADER.seq]: "11" } }],
    ["from", { headers: { [PEER_HEADER.from]: "c" } }],
    ["nonce", { headers: { [PEER_HEADER.nonce]: "0".repeat(32) } }],
    ["mac", { headers: { [PEER_HEADER.mac]: "0".repeat(64) } }],
  ];
  for (const [part, change] of tampered) {
    const response = await resend(b.app, good, change);
    assert.equal(response.status, 401, `${part} changed`);
    assert.equal(await errorCode(response), "unauthorized", `${part} changed`);
    assert.equal(response.headers.get(PEER_HEADER.challenge), null, `${part} changed: a request without a valid MAC never gets a nonce`);
  }
  // For another receiver: c checks the MAC with its own id.
  const c = await receiver("c");
  assert.equal((await resend(c.app, good)).status, 401, "a request for b is refused by c");
  // Another secret: the same head and body, another key.
  const outsider = signedByHand(await peerKey(OTHER_SECRET), { from: "a", to: "b", nonce, seq: 10 }, JSON.stringify({ from: "a", n: 10 }));
  assert.equal((await resend(b.app, outsider)).status, 401, "another secret");
  // No headers at all.
  const bare = await b.app.fetch(new Request(`${BASE}/peer/echo`, { method: "POST", body: JSON.stringify({ from: "a", n: 7 }) }));
  assert.equal(bare.status, 401);
  assert.deepEqual(b.taken, [1], "no refused request reached the route");
  assert.equal(b.security.view().peerForged, tampered.length + 1);
  assert.equal(b.security.view().peerUnauthenticated, 1);
  assert.equal(c.security.view().peerForged, 1);
  // The untouched request is taken: the refusals above were for the changes, not for the request.
  assert.equal((await resend(b.app, good)).status, 200);
  assert.deepEqual(b.taken, [1, 10]);
});

test("peer auth: a request from a member whose body claims another member is refused 401 (the body's from proves nothing)", async () => {
  const b = await receiver();
  const a = await sender(b);
  await a.echo(1);
  const spoofed = await a.echo(2, "c");
  assert.equal(spoofed.status, 401);
  assert.equal(JSON.parse(spoofed.text).error.code, "unauthorized");
  assert.deepEqual(b.taken, [1]);
  assert.equal(b.security.view().peerFromMismatch, 1);
});

test("peer auth: a request replayed within the receiver's process is refused 401; a signer with another secret cannot get an answer", async () => {
  const b = await receiver();
  const a = await sender(b);
  await a.echo(1);
  const captured = a.sent.at(-1)!;
  const replay = await resend(b.app, captured);
  assert.equal(replay.status, 401);
  assert.equal(await errorCode(replay), "unauthorized");
  assert.deepEqual(b.taken, [1], "the replay changed nothing");
  assert.equal(b.security.view().peerReplayed, 1);

  const outsider = await sender(b, "a", OTHER_SECRET);
  await assert.rejects(outsider.echo(3), /without a valid MAC/, "b's 401 to a forged request is unsigned: the sender throws");
  assert.deepEqual(b.taken, [1]);
});

test(`peer auth: seqs out of order within the window (${SEQ_WINDOW}) are each taken once; a seq below it or seen before is refused`, async () => {
  const b = await receiver();
  const a = await sender(b);
  await a.echo(0); // seq 1 under the new nonce
  const key = await peerKey(SECRET);
  const nonce = nonceOf(a.sent.at(-1)!);
  const send = async (seq: number) => (await resend(b.app, signedByHand(key, { from: "a", to: "b", nonce, seq }, JSON.stringify({ from: "a", n: seq })))).status;
  for (const seq of [5, 3, 4, 2, 6]) assert.equal(await send(seq), 200, `seq ${seq}`);
  for (const seq of [3, 5, 1]) assert.equal(await send(seq), 401, `seq ${seq} again`);
  const far = 16 + SEQ_WINDOW;
  assert.equal(await send(far), 200);
  assert.equal(await send(far - SEQ_WINDOW + 1), 200, "the oldest seq still in the window");
  assert.equal(await send(6), 401, "seq 6 (taken) fell out of the window");
  assert.equal(await send(far - SEQ_WINDOW), 401, "below the window, never seen, still refused");
  assert.deepEqual(b.taken, [0, 5, 3, 4, 2, 6, far, far - SEQ_WINDOW + 1]);
  assert.equal(b.security.view().peerReplayed, 5);
});

test("peer auth: a receiver restart and a sender restart each recover by one challenge; a message captured before either is refused after it", async () => {
  const key = await peerKey(SECRET);
  let b: Receiver = await receiver();
  const target = { app: b.app };
  const a = await sender(target);
  await a.echo(1);
  const beforeReceiverRestart = a.sent.at(-1)!;

  // The receiver restarts: it issued no nonce in this process, so the sender's is refused.
  b = await receiver();
  target.app = b.app;
  const sentBefore = a.sent.length;
  assert.equal((await a.echo(2)).status, 200);
  assert.equal(a.sent.length - sentBefore, 2, "one challenge, one retry");
  const replayed = await resend(b.app, beforeReceiverRestart);
  assert.equal(replayed.status, 401, "captured before the receiver's restart");
  assert.equal(await errorCode(replayed), "peer_challenge", "its nonce is unknown here: a challenge, which only a holder of the secret can take");
  assert.deepEqual(b.taken, [2]);

  // The sender restarts: it starts without a nonce; b's nonce for it changes once it takes the new one.
  const beforeSenderRestart = a.sent.at(-1)!;
  const a2 = await sender(target);
  assert.equal((await a2.echo(3)).status, 200);
  assert.equal(a2.sent.length, 2, "one challenge, one retry");
  assert.notEqual(nonceOf(a2.sent[1]), nonceOf(beforeSenderRestart));
  assert.equal((await resend(b.app, beforeSenderRestart)).status, 401, "captured before the sender's restart: its nonce is retired");
  // Even a never-delivered message of the old sender incarnation, signed under the retired nonce.
  const late = signedByHand(key, { from: "a", to: "b", nonce: nonceOf(beforeSenderRestart), seq: 99 }, JSON.stringify({ from: "a", n: 99 }));
  assert.equal((await resend(b.app, late)).status, 401);
  assert.deepEqual(b.taken, [2, 3]);
  assert.equal((await a2.echo(4)).status, 200, "the new sender goes on under its nonce");
  assert.deepEqual(b.taken, [2, 3, 4]);
});

test("peer auth: an answer whose body, status or MAC was changed on the way makes the sender throw, as a network error does", async () => {
  const b = await receiver();
  let tamper: ((response: Response) => Promise<Response>) | null = null;
  const signer = new PeerSigner(await peerKey(SECRET), "a", async (url, init) => {
    const response = await b.app.fetch(new Request(url, init));
    return tamper ? tamper(response) : response;
  });
  const echo = (n: number) => signer.fetch("b", `${BASE}/peer/echo`, { method: "POST", body: JSON.stringify({ from: "a", n }), timeoutMs: 5_000 });
  assert.equal((await echo(1)).status, 200);
  const changes: Array<(r: Response) => Promise<Response>> = [
    (r) => Promise.resolve(new Response(JSON.stringify({ took: 999, sender: "a" }), { status: r.status, headers: r.headers })),
    async (r) => new Response(await r.arrayBuffer(), { status: 202, headers: r.headers }),
    async (r) => {
      const headers = new Headers(r.headers);
      headers.delete(PEER_HEADER.mac);
      return new Response(await r.arrayBuffer(), { status: r.status, headers });
    },
  ];
  for (const [i, change] of changes.entries()) {
    tamper = change;
    await assert.rejects(echo(10 + i), /without a valid MAC/, `change ${i}`);
  }
  // A challenge whose nonce was swapped on the way is refused too (the MAC covers it).
  const fresh = new PeerSigner(await peerKey(SECRET), "c", async (url, init) => {
    const response = await b.app.fetch(new Request(url, init));
    const headers = new Headers(response.headers);
    if (headers.has(PEER_HEADER.challenge)) headers.set(PEER_HEADER.challenge, "f".repeat(32));
    return new Response(await response.arrayBuffer(), { status: response.status, headers });
  });
  await assert.rejects(fresh.fetch("b", `${BASE}/peer/echo`, { method: "POST", body: JSON.stringify({ from: "c", n: 5 }), timeoutMs: 5_000 }), /without a valid MAC/);
});

test("peer auth: a valid request from an id that is no member is refused and gets no nonce", async () => {
  const b = await receiver();
  const stranger = await sender(b, "z");
  const answer = await stranger.echo(1);
  assert.equal(answer.status, 401);
  assert.equal(JSON.parse(answer.text).error.code, "unauthorized");
  assert.equal(stranger.sent.length, 1, "no challenge");
  assert.deepEqual(b.taken, []);
  assert.equal(b.security.view().peerUnknownSender, 1);
});

test("peer auth: 20 requests sent at once at first contact, and again after a receiver restart, are each taken once (concurrent challenges share one nonce)", async () => {
  let b: Receiver = await receiver();
  const target = { app: b.app };
  const a = await sender(target);
  const batch = async (from: number) => (await Promise.all(Array.from({ length: 20 }, (_, i) => a.echo(from + i)))).map((answer) => answer.status);
  assert.deepEqual(await batch(0), Array(20).fill(200));
  assert.deepEqual([...b.taken].sort((x, y) => x - y), Array.from({ length: 20 }, (_, i) => i));
  b = await receiver();
  target.app = b.app;
  assert.deepEqual(await batch(100), Array(20).fill(200));
  assert.deepEqual([...b.taken].sort((x, y) => x - y), Array.from({ length: 20 }, (_, i) => 100 + i));
});

test("peer auth: the MAC is the same HMAC-SHA256 as with Web Crypto (createHmac since issue 14: same construction, no new version)", async () => {
  // HMAC(HMAC(secret, "mutexd peer v1"), JSON head + "\n" + body), hex: what issue 12 specified, computed here with Web Crypto.
  const encoder = new TextEncoder();
  const hmac = { name: "HMAC", hash: "SHA-256" };
  const master = await crypto.subtle.importKey("raw", encoder.encode(SECRET), hmac, false, ["sign"]);
  const derived = await crypto.subtle.sign("HMAC", master, encoder.encode("mutexd peer v1"));
  const webKey = await crypto.subtle.importKey("raw", derived, hmac, false, ["sign"]);
  const head = { from: "a", to: "b", nonce: "00ff", seq: 7, method: "POST", path: "/v1/peer?x=1" };
  const body = encoder.encode(JSON.stringify({ type: "append", n: "é" }));
  const prefix = encoder.encode(JSON.stringify(["mutexd peer request v1", head.from, head.to, head.nonce, head.seq, head.method, head.path]) + "\n");
  const signed = new Uint8Array([...prefix, ...body]);
  const expected = [...new Uint8Array(await crypto.subtle.sign("HMAC", webKey, signed))].map((b) => b.toString(16).padStart(2, "0")).join("");
  assert.equal(signRequest(await peerKey(SECRET), head, body), expected);
  assert.notEqual(signRequest(await peerKey(OTHER_SECRET), head, body), expected, "another secret, another MAC");
});

test("peer auth: a body given as text is MACed as its UTF-8 bytes (TextEncoder's), lone surrogates included, so the stream may hand its frames' text to the HMAC", async () => {
  const key = await peerKey(SECRET);
  const encoder = new TextEncoder();
  const head = ["mutexd-frame-v1", "00ff", "request", "a", "b", 1, 0, 0];
  const bodies = ["", "x", JSON.stringify({ type: "append", n: "é" }), "😀".repeat(100), "\ud800", "a\udc00b", "\ud83d", "\u0000\n\r", "x".repeat(70_000)];
  for (const body of bodies) {
    const fromBytes = mac(key, head, encoder.encode(body)).toString("hex");
    assert.equal(mac(key, head, body).toString("hex"), fromBytes, JSON.stringify(body.slice(0, 20)));
    assert.equal(macValid(key, head, body, fromBytes), true);
  }
  // The text form still covers the body: another body, another MAC.
  assert.notEqual(mac(key, head, "ab").toString("hex"), mac(key, head, "ba").toString("hex"));
  assert.equal(macValid(key, head, "ab", mac(key, head, "ba").toString("hex")), false);
});

test("peer auth: the MAC from the key's padded states is createHmac's, for keys of 0 to 200 bytes (longer than a block: hashed first) and bodies of any size", async () => {
  const head = ["mutexd-frame-v1", "00ff", "answer", "a", "b", 3, 2, 200];
  const bodies = ["", "x", "é😀", "y".repeat(63), "y".repeat(64), "y".repeat(65), "z".repeat(10_000)];
  for (const length of [0, 1, 31, 32, 33, 63, 64, 65, 100, 128, 200]) {
    const bytes = Uint8Array.from({ length }, (_, i) => (i * 37 + length) & 0xff);
    const key: PeerKey = { bytes };
    for (const body of bodies) {
      const expected = createHmac("sha256", bytes).update(JSON.stringify(head) + "\n").update(body).digest("hex");
      // Twice: the states are copied, never used up.
      assert.equal(mac(key, head, body).toString("hex"), expected, `key of ${length} bytes, body of ${body.length}`);
      assert.equal(mac(key, head, new TextEncoder().encode(body)).toString("hex"), expected, `key of ${length} bytes, body of ${body.length}, as bytes`);
    }
  }
  const key = await peerKey(SECRET);
  assert.equal(mac(key, head, "b").toString("hex"), createHmac("sha256", key.bytes).update(JSON.stringify(head) + "\n").update("b").digest("hex"));
});

test("peer auth: prefixedMac (the stream's frames: one-shot hashes through a kept buffer, or copied states past 64 KiB) gives mac's MAC for the whole head as hex, call after call, whatever the body's size or characters; a non-integer field throws", async () => {
  const key = await peerKey(SECRET);
  const fixedHeads: unknown[][] = [[], ["mutexd peer stream frame v1", "00ff", "request", "p1", "b1"], ["é😀\n\"", 7, null]];
  const integerTails = [[0, 0, 0], [1, 0, 0], [12_345, 678, 200], [Number.MAX_SAFE_INTEGER, -1, 0], [5]];
  // Small, lone surrogates (U+FFFD either way), one that grows the kept buffer, one just under and
  // ones over its 64 KiB bound (3 bytes counted per UTF-16 unit: copied states), and a small one after.
  const bodies = ["", "x", "é😀", "\ud800", "a\udc00b", "z".repeat(10_000), "y".repeat(21_650), "é".repeat(21_900), "😀".repeat(20_000), "z".repeat(70_000), "after"];
  for (const fixed of fixedHeads) {
    const prefixed = prefixedMac(key, fixed);
    // Each tail twice: the fixed state is copied, never used up.
    for (const integers of [...integerTails, ...integerTails]) {
      for (const body of bodies) {
        const expected = mac(key, [...fixed, ...integers], body).toString("hex");
        assert.equal(prefixed(integers, body), expected, `${JSON.stringify(fixed)} ${integers} body of ${body.length}`);
      }
    }
    // A different field or body gives another MAC.
    assert.notEqual(prefixed([1, 0, 0], "a"), prefixed([1, 0, 1], "a"));
    assert.notEqual(prefixed([10, 0], "a"), prefixed([1, 0], "0a"));
  }
  // Two keys' frames interleaved share the kept buffer: each still its own key's MAC.
  const otherKey = await peerKey(`${SECRET}-other`);
  const [one, two] = [prefixedMac(key, ["label"]), prefixedMac(otherKey, ["label"])];
  assert.equal(one([1], "b"), mac(key, ["label", 1], "b").toString("hex"));
  assert.equal(two([1], "b"), mac(otherKey, ["label", 1], "b").toString("hex"));
  assert.equal(one([1], "b"), mac(key, ["label", 1], "b").toString("hex"));
  const prefixed = prefixedMac(key, ["label"]);
  for (const bad of [1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53]) assert.throws(() => prefixed([bad], "b"), /not a safe integer/);
  // No integers would hash `["label",]`, which no mac() input is.
  assert.throws(() => prefixed([], "b"), /no integers/);
  // hexMacMatches: the same 64 lowercase hex digits only.
  const right = prefixed([1], "b");
  assert.equal(hexMacMatches(right, right), true);
  assert.equal(hexMacMatches(prefixed([2], "b"), right), false);
  assert.equal(hexMacMatches(right.slice(2), right), false);
  assert.equal(hexMacMatches(right.toUpperCase(), right), false);
  assert.equal(hexMacMatches(`${right.slice(0, 63)}${right[63] === "0" ? "1" : "0"}`, right), false, "the last digit differs");
  assert.equal(hexMacMatches("-", right), false);
  assert.equal(hexMacMatches("", ""), false, "not a MAC's length");
  // macMatches (the hello's and HTTP's check): the hex of the same 32 bytes only.
  const bytes = mac(key, ["label", 1], "b");
  assert.equal(macMatches(bytes.toString("hex"), bytes), true);
  assert.equal(macMatches(bytes.toString("hex").slice(2), bytes), false);
  assert.equal(macMatches(bytes.toString("hex").toUpperCase(), bytes), false);
});
