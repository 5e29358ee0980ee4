/**
 * The replication stream (cluster/peer_stream.ts) on loopback, with the runtime's own server and
 * WebSocket (cluster/runtime.ts) and a cluster secret: a receiver `b` whose answer records each
 * request's `n` (what a request changed) and checks its `from` against the connection's sender,
 * and a sender `a`. Proves: requests pipelined on one connection are each answered with their
 * own answer; a timeout, a dropped connection (every request in flight fails at once) and the
 * reconnect; the fallback to HTTP when the route is absent or the hello does not check; and that
 * an unauthenticated or replayed upgrade, a forged, replayed, reordered, other-connection or
 * oversize frame is refused (logged), answered with nothing and changes nothing; and that the
 * sender refuses a forged or replayed answer frame from a receiver that lies; and that with
 * peerBodyBytesMax set above its default an answer longer than the default takes the stream.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Hono } from "hono";
import { type Clock, manualClock, monotonicClock } from "../cluster/clock.ts";
import { installErrorHandlers, readBodyBytes } from "../cluster/http_util.ts";
import { memoryLogger } from "../cluster/log.ts";
import {
  mac,
  PEER_HEADER,
  peerAuthMiddleware,
  type PeerKey,
  peerKey,
  PeerSigner,
  PeerVerifier,
} from "../cluster/peer_auth.ts";
import {
  encodeFrame,
  encodeHello,
  type FrameKeys,
  peerStreamServer,
  STREAM_CONNECTIONS_MAX,
  STREAM_PATH,
  streamPeerTransport,
} from "../cluster/peer_stream.ts";
import type { PeerTransport } from "../cluster/peer_transport.ts";
import { type HttpServer, runtimeName, serveHttp, type StreamSocket } from "../cluster/runtime.ts";
import { SecurityLog } from "../cluster/security_log.ts";
import { realTimers, type Timers } from "../cluster/timers.ts";
import { FORMAT_HEADER } from "../lib/wire/version.ts";
import { eventually } from "./_harness.ts";

const SECRET = "peer-stream-test-secret-0123456789abcdef";
const OTHER_SECRET = "not-the-cluster-secret-0123456789abcdef";
const BODY_BYTES_MAX = 4_096;
const TIMEOUT_MS = 2_000;
const MEMBERS = ["a", "b", "c"];

interface Receiver {
  server: HttpServer;
  base: string;
  security: SecurityLog;
  /** The `n` of every request answered, in order. */
  taken: number[];
  /** Requests whose answer is held (n < 0): their `done`, to answer later or never. */
  held: Array<() => void>;
  stream: ReturnType<typeof peerStreamServer>;
  close(): Promise<void>;
}

/**
 * Receiver `b` on a port of 127.0.0.1. `route: false`: an older build, without the stream's route.
 * `frameKey`: the key its stream MACs frames with (another secret's: its hello cannot check).
 */
async function receiver(options: { route?: boolean; frameSecret?: string } = {}): Promise<Receiver> {
  const security = new SecurityLog(monotonicClock, memoryLogger(), 10_000);
  const key = await peerKey(SECRET);
  const verifier = new PeerVerifier(key, "b", (id) => MEMBERS.includes(id));
  const taken: number[] = [];
  const held: Array<() => void> = [];
  const app = new Hono();
  installErrorHandlers(app, () => {});
  app.use("/v1/peer/*", peerAuthMiddleware(verifier, security, (c) => readBodyBytes(c, BODY_BYTES_MAX)));
  if (options.route !== false) app.get(STREAM_PATH, (c) => c.json({ stream: true }));
  const stream = peerStreamServer({
    self: "b",
    keyed: { key: options.frameSecret ? await peerKey(options.frameSecret) : key, verifier },
    security,
    bodyBytesMax: BODY_BYTES_MAX,
    answer(text, sender, done) {
      const body = JSON.parse(text) as { from: string; n: number; pad?: number };
      // As answerPeerFrame answers a refusal (cluster/lock/api_peer.ts): with its status.
      try {
        sender!.check(body.from);
      } catch (error) {
        return done(401, JSON.stringify({ error: { code: "unauthorized", message: (error as Error).message } }));
      }
      const answer = () => {
        taken.push(body.n);
        // `pad`: an answer that long in padding (a large sync answer).
        done(200, JSON.stringify(body.pad === undefined ? { took: body.n, sender: sender!.id } : { took: body.n, pad: "x".repeat(body.pad) }));
      };
      if (body.n < 0) held.push(answer);
      else answer();
    },
  });
  const server = await serveHttp(app.fetch, {
    hostname: "127.0.0.1",
    port: 0,
    stream: options.route === false ? undefined : stream.route,
  });
  return {
    server,
    base: `http://127.0.0.1:${server.port}`,
    security,
    taken,
    held,
    stream,
    async close() {
      stream.stop();
      await server.close();
    },
  };
}

/**
 * Sender `a`: the stream transport to `target`, with an HTTP transport that records what falls back
 * to it. The WebSocket client under both runtimes, unless `runtimeDefault` (then as a node runs).
 */
async function sender(target: Receiver, secret = SECRET, runtimeDefault = false, clock: Clock = monotonicClock, bodyBytesMax = BODY_BYTES_MAX, timers: Timers = realTimers, alsoTo: Receiver[] = []) {
  const key = await peerKey(secret);
  const signer = new PeerSigner(key, "a");
  const peerFetch = (to: string, url: string, request: Parameters<PeerSigner["fetch"]>[2]) =>
    signer.fetch(to, url, request);
  const overHttp: unknown[] = [];
  const http: PeerTransport = { send: (_url, body) => (overHttp.push(body), Promise.resolve({ overHttp: true })) };
  const security = new SecurityLog(monotonicClock, memoryLogger(), 10_000);
  const log = memoryLogger();
  const transport = streamPeerTransport({
    self: "a",
    // `alsoTo`: more receivers, each a "b" of its own (same key and members).
    idOf: (url) => ([target, ...alsoTo].some((r) => url.startsWith(`${r.base}/`)) ? "b" : ""),
    peerFetch,
    http,
    keyed: { key, signer },
    caPem: undefined,
    bodyBytesMax,
    security,
    log,
    clock,
    timers,
    openTimeoutMs: TIMEOUT_MS,
    // null: the client whatever runtime.ts says; undefined: what a node does (runtime.ts webSocketClientProblem).
    clientProblem: runtimeDefault ? undefined : null,
  });
  const send = (n: number, from = "a") => transport.send(`${target.base}/v1/peer`, { from, n }, TIMEOUT_MS);
  return { transport, send, overHttp, security, log, signer, key };
}

type Sender = Awaited<ReturnType<typeof sender>>;

/** Runs `body` with a receiver and a sender to it, then closes both (whatever `body` did). */
async function withPair(body: (a: Sender, b: Receiver) => Promise<void>, runtimeDefault = false): Promise<void> {
  const b = await receiver();
  const a = await sender(b, SECRET, runtimeDefault);
  try {
    await body(a, b);
  } finally {
    a.transport.close();
    await b.close();
  }
}

test("peer stream: 50 requests sent at once go on one connection, each answered with its own answer, none over HTTP", () =>
  withPair(async (a, b) => {
    const answers = await Promise.all(Array.from({ length: 50 }, (_, n) => a.send(n)));
    assert.deepEqual(a.log.lines, [], "no fallback");
    assert.deepEqual(answers, Array.from({ length: 50 }, (_, n) => ({ took: n, sender: "a" })));
    assert.deepEqual([...b.taken].sort((x, y) => x - y), Array.from({ length: 50 }, (_, n) => n));
    assert.equal(a.transport.isOpen(b.base), true);
    assert.equal(b.stream.connections(), 1);
    assert.deepEqual(a.overHttp, []);
    assert.deepEqual(await a.send(50), { took: 50, sender: "a" });
    assert.deepEqual(
      b.security.view(),
      { peerChallenged: 1 },
      "nothing refused but the first contact's challenge (its nonce)",
    );
  }));

test("peer stream: sends alternating between two peers' URLs and a URL that is not streamed each reach their own: the transport's memo of the last URL's stream never sends one peer's request to the other", async () => {
  const [b, c] = [await receiver(), await receiver()];
  const a = await sender(b, SECRET, false, monotonicClock, BODY_BYTES_MAX, realTimers, [c]);
  try {
    const to = (r: Receiver, n: number) => a.transport.send(`${r.base}/v1/peer`, { from: "a", n }, TIMEOUT_MS);
    const other = (n: number) => a.transport.send(`${b.base}/v1/arbiter`, { from: "a", n }, TIMEOUT_MS);
    const answers: unknown[] = [];
    // Sequential: each send follows the one before, so the memo changes between every pair.
    for (let n = 0; n < 12; n++) answers.push(await (n % 3 === 0 ? to(b, n) : n % 3 === 1 ? to(c, n) : other(n)));
    assert.deepEqual(b.taken, [0, 3, 6, 9], "b took its own");
    assert.deepEqual(c.taken, [1, 4, 7, 10], "c took its own");
    assert.deepEqual(a.overHttp, [2, 5, 8, 11].map((n) => ({ from: "a", n })), "not streamed: over HTTP");
    assert.deepEqual(answers.filter((_, n) => n % 3 !== 2), [0, 1, 3, 4, 6, 7, 9, 10].map((n) => ({ took: n, sender: "a" })));
    assert.equal(a.transport.isOpen(b.base) && a.transport.isOpen(c.base), true, "one stream each");
  } finally {
    a.transport.close();
    await b.close();
    await c.close();
  }
});

test("peer stream: a body claiming another sender is refused (401) and changes nothing: the connection's sender is who sent it", () =>
  withPair(async (a, b) => {
    await assert.rejects(a.send(1, "c"), /status 401/);
    assert.deepEqual(b.taken, []);
    assert.equal(b.security.view().peerFromMismatch, 1);
    assert.deepEqual(await a.send(2), { took: 2, sender: "a" }, "the connection stays open for the next request");
  }));

test("peer stream: an unanswered request times out; a dropped connection fails every request in flight at once; the next send reconnects", () =>
  withPair(async (a, b) => {
    const started = monotonicClock.nowMs();
    await assert.rejects(a.send(-1), /no answer in 2000 ms/);
    assert.ok(monotonicClock.nowMs() - started >= TIMEOUT_MS - 5, "not before its timeout");
    // Its late answer arrives and is ignored; the stream goes on.
    b.held.shift()!();
    assert.deepEqual(await a.send(3), { took: 3, sender: "a" });

    const inFlight = [a.send(-2), a.send(-3), a.send(-4)];
    await eventually("the three requests reach the receiver", () => b.held.length === 3);
    const dropped = monotonicClock.nowMs();
    b.stream.stop();
    const outcomes = await Promise.allSettled(inFlight);
    assert.deepEqual(outcomes.map((o) => o.status), ["rejected", "rejected", "rejected"]);
    assert.ok(monotonicClock.nowMs() - dropped < TIMEOUT_MS / 2, "failed by the drop, not by their timeouts");
    await eventually("the sender sees the stream closed", () => !a.transport.isOpen(b.base));
    assert.deepEqual(await a.send(4), { took: 4, sender: "a" }, "the next send reconnects");
    assert.equal(a.transport.isOpen(b.base), true);
    assert.deepEqual(a.overHttp, []);
  }));

/**
 * Timers on a manual clock: `advanceTo` moves the clock and runs, in order of their due time,
 * the timers due by then, as late as a loaded machine may run them.
 */
function clockTimers(startMs: number) {
  const clock = manualClock(startMs);
  const due = new Map<number, { fn: () => void; atMs: number }>();
  let handleNext = 1;
  const armedMs: number[] = [];
  const timers: Timers = {
    setTimeout: (fn, ms) => {
      armedMs.push(ms);
      due.set(handleNext, { fn, atMs: clock.nowMs() + ms });
      return handleNext++;
    },
    clearTimeout: (handle) => void due.delete(handle as number),
  };
  const advanceTo = (atMs: number) => {
    clock.set(atMs);
    // Bounded: each turn runs (and forgets) one timer; a timer armed meanwhile for later waits.
    for (let turn = 0; turn < 1_000; turn++) {
      const next = [...due].filter(([, t]) => t.atMs <= atMs).sort(([, x], [, y]) => x.atMs - y.atMs)[0];
      if (!next) return;
      due.delete(next[0]);
      next[1].fn();
    }
    assert.fail("more than 1,000 timers due at once");
  };
  return { clock, timers, armedMs, advanceTo };
}

/** Lets the promise continuations of what just settled run (a macrotask runs after every microtask). */
const continuationsRun = () => new Promise<void>((resolve) => realTimers.setTimeout(resolve, 0));

test("peer stream: one timer for every request's timeout: answered requests arm none each, and unanswered ones fail in the order of their own deadlines (a shorter timeout sent after a longer one first, a late timer too), none before it", async () => {
  const b = await receiver();
  const { clock, timers, armedMs, advanceTo } = clockTimers(1_000);
  const a = await sender(b, SECRET, false, clock, BODY_BYTES_MAX, timers);
  try {
    assert.deepEqual(await a.send(0), { took: 0, sender: "a" }, "opens the stream (its hello's timer, the first deadline's)");
    const before = armedMs.length;
    for (let n = 1; n <= 50; n++) {
      clock.advance(1);
      assert.deepEqual(await a.send(n), { took: n, sender: "a" });
    }
    assert.deepEqual(armedMs.slice(before), [], "50 answered requests, no timer armed: their deadlines are after the one armed");

    const url = `${b.base}/v1/peer`;
    const sentAtMs = clock.nowMs();
    const failed: Array<{ name: string; atMs: number; message: string }> = [];
    const send = (name: string, n: number, timeoutMs: number) =>
      a.transport.send(url, { from: "a", n }, timeoutMs).then(
        () => assert.fail(`${name} was answered`),
        (error: Error) => void failed.push({ name, atMs: clock.nowMs(), message: error.message }),
      );
    const outcomes = Promise.all([send("long", -1, 1_250), send("short", -2, 250), send("middle", -3, 750)]);
    await eventually("all three reached the receiver", () => b.held.length === 3);

    advanceTo(sentAtMs + 249);
    await continuationsRun();
    assert.deepEqual(failed.map((f) => f.name), [], "none before its deadline");
    advanceTo(sentAtMs + 250);
    await continuationsRun();
    assert.deepEqual(failed.map((f) => f.name), ["short"], "the shorter timeout sent after a longer one first");
    // A timer late past both other deadlines (a loaded machine): they fail in deadline order, not send order.
    advanceTo(sentAtMs + 2_000);
    await outcomes;
    assert.deepEqual(failed.map((f) => f.name), ["short", "middle", "long"], JSON.stringify(failed));
    for (const { atMs, message } of failed) {
      const timeoutMs = Number(/no answer in ([0-9]+) ms/.exec(message)?.[1]);
      assert.ok(atMs >= sentAtMs + timeoutMs, `${message}: failed at ${atMs - sentAtMs} ms, not before its timeout`);
    }
    assert.deepEqual(await a.send(51), { took: 51, sender: "a" }, "the stream goes on");
  } finally {
    a.transport.close();
    await b.close();
  }
});

test("peer stream: a member without the route (an older build) and a hello that does not check: the request goes over HTTP", async () => {
  const old = await receiver({ route: false });
  const forged = await receiver({ frameSecret: OTHER_SECRET });
  const toOld = await sender(old);
  const toForged = await sender(forged);
  try {
    assert.deepEqual(await toOld.send(1), { overHttp: true });
    assert.deepEqual(toOld.overHttp, [{ from: "a", n: 1 }]);
    assert.deepEqual(old.taken, []);
    assert.equal(toOld.log.lines.filter((l) => l.event === "peerStreamUnavailable").length, 1);
    // Within the backoff, straight over HTTP.
    assert.deepEqual(await toOld.send(2), { overHttp: true });

    assert.deepEqual(await toForged.send(1), { overHttp: true });
    assert.equal(toForged.security.view().peerStreamForged, 1, "the sender refused the hello");
    assert.deepEqual(forged.taken, []);
  } finally {
    toOld.transport.close();
    toForged.transport.close();
    await old.close();
    await forged.close();
  }
});

test("peer stream: by default a node sends over the stream under both runtimes (under Deno with cluster/ws_client.ts)", () =>
  withPair(async (a, b) => {
    const answer = await a.send(1);
    assert.deepEqual(answer, { took: 1, sender: "a" });
    assert.equal(b.stream.connections(), 1);
    assert.equal(a.log.lines.filter((l) => l.event === "peerStreamUnavailable").length, 0);
  }, true));

/** The client's limit before it took the configured peerBodyBytesMax: the default (16 MiB) and 4 KiB. */
const OLD_FIXED_ANSWER_BYTES_MAX = 16_777_216 + 4_096;

test("peer stream: with peerBodyBytesMax set above its default, an answer longer than the default takes the stream under both runtimes (the node's client takes the configured limit)", async () => {
  const b = await receiver();
  const a = await sender(b, SECRET, true, monotonicClock, 2 * OLD_FIXED_ANSWER_BYTES_MAX);
  try {
    const padBytes = OLD_FIXED_ANSWER_BYTES_MAX + 1_000;
    const answer = await a.transport.send(`${b.base}/v1/peer`, { from: "a", n: 7, pad: padBytes }, 4 * TIMEOUT_MS) as { took: number; pad: string };
    assert.equal(answer.took, 7);
    assert.equal(answer.pad.length, padBytes, "the whole answer");
    assert.deepEqual(a.overHttp, [], "on the stream, not over HTTP");
    assert.equal(a.transport.isOpen(b.base), true, "the connection was not closed for its length");
  } finally {
    a.transport.close();
    await b.close();
  }
});

/** What an upgrade request to `b` carries, signed by `signer` under its nonce (after a probe). */
async function signedUpgrade(b: Receiver, signer: PeerSigner): Promise<{ url: string; mac: string }> {
  const probe = await signer.fetch("b", `${b.base}${STREAM_PATH}`, { method: "GET", timeoutMs: TIMEOUT_MS });
  assert.equal(probe.status, 200);
  const { headers } = signer.sign("b", "GET", STREAM_PATH, new Uint8Array());
  return {
    url: `${b.base.replace("http", "ws")}${STREAM_PATH}?${new URLSearchParams(headers)}`,
    mac: headers[PEER_HEADER.mac],
  };
}

/** A WebSocket opened by hand: resolves with its hello's nonce, its frames, and whether it was closed. */
function rawSocket(url: string): Promise<{ ws: WebSocket; nonce: string; frames: string[]; closed: () => boolean }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const frames: string[] = [];
    let closed = false;
    ws.onclose = () => {
      closed = true;
      reject(new Error("closed before its hello"));
    };
    ws.onmessage = (event) => {
      const text = String(event.data);
      if (frames.length === 0 && text.startsWith("0 ")) {
        frames.push(text);
        resolve({ ws, nonce: text.slice(text.indexOf("\n") + 1), frames, closed: () => closed });
      } else {
        frames.push(text);
      }
    };
  });
}

/** A request frame on the connection `nonce` names, MACed with `key`. */
const requestFrame = (key: PeerKey, nonce: string, seq: number, body: string) =>
  encodeFrame({ key, nonce } as FrameKeys, "request", "a", "b", { seq, re: 0, status: 0, body });

test("peer stream: a frame's text and MAC are the wire's before the head was hashed once per connection (HMAC over the whole head's JSON, a newline, the body): a rolling upgrade keeps both ends talking", async () => {
  const key = await peerKey(SECRET);
  const nonce = "0123456789abcdef0123456789abcdef";
  for (const [direction, from, to, seq, re, status, body] of [
    ["request", "a", "b", 1, 0, 0, "{}"],
    ["answer", "b", "a", 7, 3, 200, JSON.stringify({ took: 3, text: "é😀\n" })],
    ["answer", "b", "a", 123_456_789, 123_456_788, 503, ""],
  ] as const) {
    const head = ["mutexd peer stream frame v1", nonce, direction, from, to, seq, re, status];
    const before = `${seq} ${re} ${status} ${mac(key, head, body).toString("hex")}\n${body}`;
    assert.equal(encodeFrame({ key, nonce }, direction, from, to, { seq, re, status, body }), before);
  }
  assert.equal(encodeFrame({ key: undefined, nonce }, "request", "a", "b", { seq: 2, re: 0, status: 0, body: "x" }), "2 0 0 -\nx");
});

test("peer stream: an upgrade without authentication, with a wrong MAC, or replayed, is refused 401 before upgrading, logged, and opens nothing", () =>
  withPair(async (a, b) => {
    const bare = new Request(`${b.base}${STREAM_PATH}`, { headers: { upgrade: "websocket" } });
    const refused = b.stream.route.accept(bare);
    assert.ok(refused instanceof Response && refused.status === 401);
    assert.equal(b.security.view().peerUnauthenticated, 1);

    const { url } = await signedUpgrade(b, a.signer);
    const tampered = url.replace(/(x-mutexd-mac=)([0-9a-f])/, (_, name, digit) => name + (digit === "0" ? "1" : "0"));
    const forged = b.stream.route.accept(
      new Request(tampered.replace("ws", "http"), { headers: { upgrade: "websocket" } }),
    );
    assert.ok(forged instanceof Response && forged.status === 401);
    assert.equal(b.security.view().peerForged, 1);

    const first = await rawSocket(url);
    assert.equal(b.stream.connections(), 1);
    await assert.rejects(rawSocket(url), /closed before its hello/, "a replayed upgrade does not open");
    assert.equal(b.security.view().peerReplayed, 1);
    assert.equal(b.stream.connections(), 1);
    first.ws.close();
    assert.deepEqual(b.taken, []);
  }));

test("peer stream: a forged, replayed, reordered, other-connection or oversize frame closes the connection, is logged, is answered with nothing and changes nothing", async () => {
  const b = await receiver();
  const a = await sender(b);
  const body = (n: number) => JSON.stringify({ from: "a", n });
  /** Opens a connection, sends `frames(nonce)`, waits for it to close; returns the frames it got. */
  const attack = async (frames: (nonce: string) => string[]) => {
    const socket = await rawSocket((await signedUpgrade(b, a.signer)).url);
    for (const frame of frames(socket.nonce)) socket.ws.send(frame);
    await eventually("the receiver closes the connection", () => socket.closed(), 5_000);
    return socket.frames.slice(1);
  };
  try {
    // The frame as sent: answered.
    const honest = await rawSocket((await signedUpgrade(b, a.signer)).url);
    honest.ws.send(requestFrame(a.key, honest.nonce, 1, body(1)));
    await eventually("the honest frame is answered", () => honest.frames.length === 2);
    assert.deepEqual(b.taken, [1]);

    // Its body changed after the MAC.
    let answers = await attack((nonce) => [requestFrame(a.key, nonce, 1, body(2)).replace('"n":2', '"n":3')]);
    assert.deepEqual(answers, []);
    assert.equal(b.security.view().peerStreamForged, 1);
    // MACed with another secret.
    const otherKey = await peerKey(OTHER_SECRET);
    answers = await attack((nonce) => [requestFrame(otherKey, nonce, 1, body(4))]);
    assert.deepEqual(answers, []);
    // Replayed: the same seq twice; the first is answered, the second closes.
    answers = await attack((nonce) => [requestFrame(a.key, nonce, 1, body(5)), requestFrame(a.key, nonce, 1, body(5))]);
    assert.equal(answers.length, 1);
    assert.equal(b.security.view().peerStreamReplayed, 1);
    // Reordered: seq 2 before seq 1.
    answers = await attack((nonce) => [requestFrame(a.key, nonce, 2, body(6)), requestFrame(a.key, nonce, 1, body(7))]);
    assert.equal(answers.length, 1);
    assert.equal(b.security.view().peerStreamReplayed, 2);
    // A frame of the honest connection, sent on another one: its MAC names the other nonce.
    answers = await attack(() => [requestFrame(a.key, honest.nonce, 2, body(8))]);
    assert.deepEqual(answers, []);
    // Over the limit: refused while read (Bun) or at once (Deno).
    answers = await attack((
      nonce,
    ) => [requestFrame(a.key, nonce, 1, JSON.stringify({ from: "a", n: 9, pad: "x".repeat(BODY_BYTES_MAX * 2) }))]);
    assert.deepEqual(answers, []);
    // Deno reads it whole and the connection refuses it (logged); Bun drops the connection while
    // reading it (maxPayloadLength), before the connection sees a frame, so nothing is logged.
    assert.equal(b.security.view().peerBodyTooLarge, runtimeName === "deno" ? 1 : undefined);

    assert.deepEqual(b.taken, [1, 5, 6], "only the frames that checked changed anything");
    assert.ok((b.security.view().peerStreamForged ?? 0) >= 3);
    assert.equal(honest.closed(), false, "the honest connection is untouched");
    honest.ws.close();
  } finally {
    a.transport.close();
    await b.close();
  }
});

/**
 * A receiver `b` that answers every request with `tamper(the honest answer frame, its nonce)`
 * ("close": closes the connection instead):
 * the upgrade is checked by a real verifier and the hello is honest, the answers are not.
 */
async function lyingReceiver(tamper: (frame: string, nonce: string, key: PeerKey) => string[] | "close", sendsHello = true) {
  const key = await peerKey(SECRET);
  const verifier = new PeerVerifier(key, "b", (id) => MEMBERS.includes(id));
  const security = new SecurityLog(monotonicClock, memoryLogger(), 10_000);
  const app = new Hono();
  app.use("/v1/peer/*", peerAuthMiddleware(verifier, security, (c) => readBodyBytes(c, BODY_BYTES_MAX)));
  app.get(STREAM_PATH, (c) => c.json({ stream: true }));
  const server = await serveHttp(app.fetch, {
    hostname: "127.0.0.1",
    port: 0,
    stream: {
      path: STREAM_PATH,
      frameBytesMax: BODY_BYTES_MAX,
      accept(request) {
        const query = new URL(request.url).searchParams;
        const verdict = verifier.verify({
          headers: { from: query.get(PEER_HEADER.from), nonce: query.get(PEER_HEADER.nonce), seq: query.get(PEER_HEADER.seq), mac: query.get(PEER_HEADER.mac), format: query.get(FORMAT_HEADER) },
          method: "GET",
          path: STREAM_PATH,
          body: new Uint8Array(),
        });
        assert.ok(verdict.ok);
        const nonce = "lying-receiver-nonce";
        let socket: StreamSocket | null = null;
        return {
          opened(ws) {
            socket = ws;
            if (sendsHello) ws.send(encodeHello(key, "b", "a", verdict.requestMac, nonce));
          },
          message(data) {
            const seq = Number(String(data).split(" ")[0]);
            const honest = encodeFrame({ key, nonce }, "answer", "b", "a", { seq, re: seq, status: 200, body: JSON.stringify({ took: seq }) });
            const frames = tamper(honest, nonce, key);
            if (frames === "close") return socket!.close(1000, "closing every stream");
            for (const frame of frames) socket!.send(frame);
          },
          closed() {},
        };
      },
    },
  });
  return { base: `http://127.0.0.1:${server.port}`, close: () => server.close() };
}

test("peer stream: the sender refuses an answer frame that is forged or replayed: the request fails, the connection closes, it is logged", async () => {
  const otherKey = await peerKey(OTHER_SECRET);
  const cases: Array<{ what: string; reason: string; tamper: (frame: string, nonce: string, key: PeerKey) => string[] }> = [
    { what: "its body changed", reason: "peerStreamForged", tamper: (frame) => [frame.replace('"took":', '"took":1')] },
    { what: "MACed with another secret", reason: "peerStreamForged", tamper: (_frame, nonce) => [encodeFrame({ key: otherKey, nonce }, "answer", "b", "a", { seq: 1, re: 1, status: 200, body: "{}" })] },
    { what: "MACed as a request", reason: "peerStreamForged", tamper: (_frame, nonce, key) => [encodeFrame({ key, nonce }, "request", "b", "a", { seq: 1, re: 1, status: 200, body: "{}" })] },
    { what: "sent twice", reason: "peerStreamReplayed", tamper: (frame) => [frame, frame] },
  ];
  for (const { what, reason, tamper } of cases) {
    const b = await lyingReceiver(tamper);
    const a = await sender({ base: b.base } as Receiver);
    try {
      const first = a.send(1);
      if (reason === "peerStreamReplayed") {
        assert.deepEqual(await first, { took: 1 }, `${what}: the first copy is the answer`);
        await eventually(`${what}: the copy is refused`, () => a.security.view()[reason] === 1);
      } else {
        await assert.rejects(first, /stream closed/, what);
        assert.equal(a.security.view()[reason], 1, what);
      }
      assert.equal(a.transport.isOpen(b.base), false, `${what}: the connection is closed`);
    } finally {
      a.transport.close();
      await b.close();
    }
  }
});

test(`peer stream: a receiver serves at most ${STREAM_CONNECTIONS_MAX} streams at once; one more is refused before upgrading`, () =>
  withPair(async (a, b) => {
    const sockets = [];
    for (let i = 0; i < STREAM_CONNECTIONS_MAX; i++) sockets.push(await rawSocket((await signedUpgrade(b, a.signer)).url));
    assert.equal(b.stream.connections(), STREAM_CONNECTIONS_MAX);
    await assert.rejects(rawSocket((await signedUpgrade(b, a.signer)).url), /closed before its hello/);
    assert.equal(b.stream.connections(), STREAM_CONNECTIONS_MAX);
    for (const socket of sockets) socket.ws.close();
    await eventually("the receiver sees them closed", () => b.stream.connections() === 0);
  }));

test("peer stream: a connection dropped before any answer backs off: the next request goes over HTTP until the wait is over, then the stream is tried again", async () => {
  const b = await lyingReceiver(() => "close");
  // Time stands still unless the test moves it: the backoff's wait is decided by the clock, not by the machine's speed.
  const clock = manualClock(1_000);
  const a = await sender({ base: b.base } as Receiver, SECRET, false, clock);
  try {
    await assert.rejects(a.send(1), /the stream closed/);
    assert.deepEqual(await a.send(2), { overHttp: true }, "within the wait: over HTTP, no new connection");
    clock.advance(50);
    await assert.rejects(a.send(3), /the stream closed/, "after the first wait (50 ms) the stream is tried again");
    clock.advance(50);
    assert.deepEqual(await a.send(4), { overHttp: true }, "the second wait is twice as long (100 ms)");
    assert.deepEqual(a.overHttp, [{ from: "a", n: 2 }, { from: "a", n: 4 }]);
  } finally {
    a.transport.close();
    await b.close();
  }
});

test("peer stream: a receiver that upgrades but never sends its hello: after openTimeoutMs the open has failed (the queued request goes over HTTP), whether or not the socket's close is ever reported", async () => {
  const b = await lyingReceiver(() => [], false);
  const a = await sender({ base: b.base } as Receiver);
  try {
    // The request's own timeout is longer than the open's (TIMEOUT_MS): only a failed open sends it over HTTP in time.
    assert.deepEqual(await a.transport.send(`${b.base}/v1/peer`, { from: "a", n: 1 }, 3 * TIMEOUT_MS), { overHttp: true });
    assert.deepEqual(a.overHttp, [{ from: "a", n: 1 }]);
    assert.match(String(a.log.lines.find((l) => l.event === "peerStreamUnavailable")?.why), /no hello in 2000 ms/);
    assert.equal(a.transport.isOpen(b.base), false);
  } finally {
    a.transport.close();
    await b.close();
  }
});
