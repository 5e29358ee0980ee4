/**
 * cluster/ws_client.ts, the WebSocket client a Deno node opens the replication stream with (its
 * codec in cluster/ws_frame.ts, its upgrade in cluster/ws_handshake.ts).
 *
 * The frame codec is pure and tested under both runtimes: masking, the length encodings at
 * 0/125/126/65535/65536 bytes, fragmented messages (with a ping between the fragments), a frame
 * or message over the limit refused on its header (before its payload is read), a masked frame
 * from a server and the other protocol errors refused, the Accept of RFC 6455's own example, and a
 * wrong Sec-WebSocket-Accept (or status, or an extension nobody offered) refused, a leading BOM
 * kept in a message and a close reason, a close code no endpoint may send refused (1002). The
 * constructor throws a SyntaxError for a URL that is not ws: or wss:, under both runtimes.
 *
 * The client itself needs Deno (Deno.connect): under Bun those tests skip (a Bun node uses Bun's
 * own WebSocket). Under Deno it talks to Deno.serve's upgrade (in this process) and to Bun.serve's
 * websocket (a Bun process this test spawns): messages both ways, a 70000-byte one, a ping
 * answered with a pong, the close handshake from either side. And to a raw TCP server playing a
 * bad one: a wrong Accept never opens; a masked frame and an oversize header close the connection
 * at once with 1002 and 1009 in the close frame; after close() a message is not delivered; on a
 * protocol error the client is CLOSING before its close frame goes, so no frame follows it. With
 * Deno.connect replaced for one test: close() while it is pending aborts it through its signal,
 * and a connection whose setNoDelay throws is closed (close() while a REAL connect hangs, or during
 * the TLS handshake: tests/ws_client_connect_test.ts). Each test closes what it opened (servers,
 * sockets, the Bun process by PID) and puts back what it patched.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  acceptFor,
  type ClientCloseEvent,
  type Decoded,
  DenoWebSocket,
  encodeFrame,
  FRAGMENTS_MAX,
  FrameDecoder,
  isCloseCodeOnWire,
  OP,
  parseUpgradeAnswer,
  WebSocketProtocolError,
} from "../cluster/ws_client.ts";
import { runtimeName } from "../cluster/runtime.ts";
import { eventually, ROOT, startProcess, stdoutMatch } from "./_harness.ts";

const encoder = new TextEncoder();
const MASK = new Uint8Array([0x37, 0xfa, 0x21, 0x3d]);

/** `frame` with FIN cleared: a fragment that is not the message's last. */
function notLast(frame: Uint8Array): Uint8Array {
  frame[0] &= 0x7f;
  return frame;
}

/** Pushes `bytes` into `decoder` in pieces of `pieceBytes`, and returns everything decoded. */
function pushInPieces(decoder: FrameDecoder, bytes: Uint8Array, pieceBytes: number): Decoded[] {
  const out: Decoded[] = [];
  for (let at = 0; at < bytes.length; at += pieceBytes) out.push(...decoder.push(bytes.subarray(at, at + pieceBytes)));
  return out;
}

function refusal(fn: () => unknown): WebSocketProtocolError {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof WebSocketProtocolError, `not a protocol error: ${error}`);
    return error;
  }
  assert.fail("not refused");
}

test("ws codec: a client frame is masked with its mask (XOR, the MASK bit set), the server's frame is not", () => {
  const payload = encoder.encode("Hello");
  const masked = encodeFrame(OP.text, payload, MASK);
  assert.deepEqual([...masked.subarray(0, 2)], [0x81, 0x80 | 5]);
  assert.deepEqual([...masked.subarray(2, 6)], [...MASK]);
  const unmasked = masked.subarray(6).map((b, i) => b ^ MASK[i & 3]);
  assert.deepEqual(unmasked, payload);
  assert.notDeepEqual(masked.subarray(6), payload, "the payload on the wire is not the text");
  assert.deepEqual([...encodeFrame(OP.text, payload, null)], [0x81, 5, ...payload]);
});

test("ws codec: lengths 0, 125, 126, 65535 and 65536 take their encodings and decode whole, in pieces of any size", () => {
  const cases: Array<[number, number, number]> = [[0, 0, 2], [125, 125, 2], [126, 126, 4], [65_535, 126, 4], [65_536, 127, 10]];
  for (const [length, code, headBytes] of cases) {
    const text = "x".repeat(length);
    const clientFrame = encodeFrame(OP.text, encoder.encode(text), MASK);
    assert.equal(clientFrame[1], 0x80 | code, `length ${length}`);
    assert.equal(clientFrame.length, headBytes + 4 + length);
    const serverFrame = encodeFrame(OP.text, encoder.encode(text), null);
    assert.equal(serverFrame.length, headBytes + length);
    for (const pieceBytes of [1, 3, 1000, serverFrame.length]) {
      if (pieceBytes === 1 && length > 126) continue;
      assert.deepEqual(pushInPieces(new FrameDecoder(70_000), serverFrame, pieceBytes), [{ kind: "text", text }], `length ${length} in pieces of ${pieceBytes}`);
    }
  }
  // Two frames in one read, the second one empty.
  const two = new Uint8Array([...encodeFrame(OP.text, encoder.encode("a"), null), ...encodeFrame(OP.text, new Uint8Array(), null)]);
  assert.deepEqual(new FrameDecoder(10).push(two), [{ kind: "text", text: "a" }, { kind: "text", text: "" }]);
});

test("ws codec: a fragmented message is reassembled, a ping between its fragments comes first; a close frame's code and reason", () => {
  const frames = [
    notLast(encodeFrame(OP.text, encoder.encode("héllo "), null)),
    encodeFrame(OP.ping, encoder.encode("p"), null),
    notLast(encodeFrame(OP.continuation, encoder.encode("fragmented "), null)),
    encodeFrame(OP.continuation, encoder.encode("world"), null),
    encodeFrame(OP.close, new Uint8Array([0x0f, 0xa0, ...encoder.encode("bye")]), null),
  ];
  const decoded = new FrameDecoder(100).push(new Uint8Array(frames.flatMap((f) => [...f])));
  assert.deepEqual(decoded, [
    { kind: "ping", payload: encoder.encode("p") },
    { kind: "text", text: "héllo fragmented world" },
    { kind: "close", code: 4000, reason: "bye" },
  ]);
});

test("ws codec: a frame or a fragmented message over the limit (bytes, or fragments) is refused on its header, before its payload", () => {
  // Only the header of a 1001-byte frame: refused with 1009 without one byte of its payload.
  const header = encodeFrame(OP.text, new Uint8Array(1_001), null).subarray(0, 4);
  assert.equal(refusal(() => new FrameDecoder(1_000).push(header)).code, 1009);
  // 600 + 600 bytes of fragments: the second fragment's header is refused.
  const decoder = new FrameDecoder(1_000);
  assert.deepEqual(decoder.push(notLast(encodeFrame(OP.text, new Uint8Array(600).fill(97), null))), []);
  assert.equal(refusal(() => decoder.push(encodeFrame(OP.continuation, new Uint8Array(600), null).subarray(0, 4))).code, 1009);
  // A length claiming 2^63 bytes.
  assert.equal(refusal(() => new FrameDecoder(1_000).push(new Uint8Array([0x81, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]))).code, 1002);
  // Empty fragments cannot pile up under the byte limit: at most FRAGMENTS_MAX of them.
  const fragmented = new FrameDecoder(1_000);
  fragmented.push(notLast(encodeFrame(OP.text, encoder.encode("a"), null)));
  for (let i = 1; i < FRAGMENTS_MAX; i++) assert.deepEqual(fragmented.push(notLast(encodeFrame(OP.continuation, new Uint8Array(), null))), []);
  assert.equal(refusal(() => fragmented.push(notLast(encodeFrame(OP.continuation, new Uint8Array(), null)))).code, 1009);
  // Exactly the limit is taken.
  assert.equal(new FrameDecoder(1_000).push(encodeFrame(OP.text, new Uint8Array(1_000).fill(97), null)).length, 1);
});

test("ws codec: a masked frame from the server and every other protocol error are refused, and nothing is decoded after", () => {
  const masked = refusal(() => new FrameDecoder(100).push(encodeFrame(OP.text, encoder.encode("hi"), MASK)));
  assert.match(masked.message, /servers must not mask/);
  const broken: Array<[string, Uint8Array, number]> = [
    ["reserved bits", new Uint8Array([0xc1, 0]), 1002],
    ["unknown opcode", new Uint8Array([0x83, 0]), 1002],
    ["unknown control opcode", new Uint8Array([0x8b, 0]), 1002],
    ["continuation with nothing begun", new Uint8Array([0x80, 0]), 1002],
    ["fragmented control frame", new Uint8Array([0x09, 0]), 1002],
    ["control frame of 126 bytes", encodeFrame(OP.ping, new Uint8Array(126), null), 1002],
    ["length not in its shortest form", new Uint8Array([0x81, 126, 0, 5, 1, 2, 3, 4, 5]), 1002],
    ["text that is not UTF-8", new Uint8Array([0x81, 2, 0xc3, 0x28]), 1007],
    ["a close frame of 1 byte", new Uint8Array([0x88, 1, 3]), 1002],
  ];
  for (const [what, bytes, code] of broken) assert.equal(refusal(() => new FrameDecoder(1_000).push(bytes)).code, code, what);
  const decoder = new FrameDecoder(100);
  assert.deepEqual(decoder.push(notLast(encodeFrame(OP.text, encoder.encode("a"), null))), []);
  refusal(() => decoder.push(encodeFrame(OP.binary, encoder.encode("b"), null)));
  refusal(() => decoder.push(encodeFrame(OP.text, encoder.encode("c"), null)));
});

test("ws codec: a leading BOM (U+FEFF) is part of a text message and of a close reason, not stripped", () => {
  const frames = [
    encodeFrame(OP.text, encoder.encode("\uFEFFhi"), null),
    encodeFrame(OP.close, new Uint8Array([0x03, 0xe8, ...encoder.encode("\uFEFFbye")]), null),
  ];
  assert.deepEqual(new FrameDecoder(100).push(new Uint8Array(frames.flatMap((f) => [...f]))), [
    { kind: "text", text: "\uFEFFhi" },
    { kind: "close", code: 1000, reason: "\uFEFFbye" },
  ]);
});

test("ws codec: a close frame's code must be one an endpoint may send (RFC 6455 7.4): else a protocol error (1002); none at all is 1005", () => {
  const closeWith = (code: number) => encodeFrame(OP.close, new Uint8Array([code >> 8, code & 0xff]), null);
  for (const code of [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4000, 4999]) {
    assert.equal(isCloseCodeOnWire(code), true, `${code}`);
    assert.deepEqual(new FrameDecoder(100).push(closeWith(code)), [{ kind: "close", code, reason: "" }], `${code}`);
  }
  for (const code of [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65_535]) {
    assert.equal(isCloseCodeOnWire(code), false, `${code}`);
    const refused = refusal(() => new FrameDecoder(100).push(closeWith(code)));
    assert.equal(refused.code, 1002, `${code}`);
    assert.match(refused.message, new RegExp(`code ${code}\\b`));
  }
  assert.deepEqual(new FrameDecoder(100).push(encodeFrame(OP.close, new Uint8Array(), null)), [{ kind: "close", code: 1005, reason: "" }]);
});

test("ws client: a URL that is not ws: or wss: (or no URL) throws a SyntaxError from the constructor, before any handler could be set", () => {
  for (const url of ["http://127.0.0.1:1/", "file:///tmp/x", "not a url"]) {
    assert.throws(() => new DenoWebSocket(url, { messageBytesMax: 100 }), (error: unknown) => error instanceof DOMException && error.name === "SyntaxError", url);
  }
});

test("ws codec: the Accept of RFC 6455's example; a wrong Accept, status or extension is refused", () => {
  const key = "dGhlIHNhbXBsZSBub25jZQ==";
  assert.equal(acceptFor(key), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  const answer = (status: string, accept: string, extra: string[] = []) =>
    [`HTTP/1.1 ${status}`, "Upgrade: websocket", "Connection: Upgrade", `Sec-WebSocket-Accept: ${accept}`, ...extra].join("\r\n");
  parseUpgradeAnswer(answer("101 Switching Protocols", acceptFor(key)), key);
  assert.match(refusal(() => parseUpgradeAnswer(answer("101 Switching Protocols", acceptFor("another key")), key)).message, /Sec-WebSocket-Accept/);
  assert.match(refusal(() => parseUpgradeAnswer(answer("401 Unauthorized", acceptFor(key)), key)).message, /answered 401/);
  assert.match(refusal(() => parseUpgradeAnswer(answer("101 Switching Protocols", acceptFor(key), ["Sec-WebSocket-Extensions: permessage-deflate"]), key)).message, /extension/);
});

const skipClient = runtimeName === "deno" ? false : "the client opens Deno.connect: a Bun node uses Bun's own WebSocket";
const TIMEOUT_MS = 5_000;

/** A client socket and what it saw: `opened` and `closed` resolve on its events, `messages` in order. */
function client(url: string, messageBytesMax = 100_000) {
  const ws = new DenoWebSocket(url, { messageBytesMax });
  const messages: Array<string | Uint8Array> = [];
  let errors = 0;
  const opened = new Promise<void>((resolve) => ws.onopen = () => resolve());
  const closed = new Promise<ClientCloseEvent>((resolve) => ws.onclose = resolve);
  ws.onmessage = (event) => messages.push(event.data);
  ws.onerror = () => errors += 1;
  return { ws, messages, opened, closed, errors: () => errors };
}

/** Resolves once `messages` has `count` entries; rejects after TIMEOUT_MS. */
async function messagesReach(messages: unknown[], count: number): Promise<void> {
  await eventually(`${count} messages (have ${messages.length})`, () => messages.length >= count, TIMEOUT_MS);
}

test("ws client against Deno.serve's upgrade: messages both ways (one of 70000 bytes), close from the client and from the server", { skip: skipClient }, async () => {
  // deno-lint-ignore no-explicit-any
  const Deno = (globalThis as any).Deno;
  const serverClosed: Array<{ code: number; reason: string }> = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request: Request) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.onopen = () => socket.send("hello");
    socket.onmessage = (event: MessageEvent) => {
      if (event.data === "close") socket.close(4000, "bye");
      else if (event.data === "big") socket.send("b".repeat(70_000));
      else socket.send(`echo:${event.data}`);
    };
    socket.onclose = (event: CloseEvent) => serverClosed.push({ code: event.code, reason: event.reason });
    return response;
  });
  try {
    const url = `ws://127.0.0.1:${server.addr.port}/any?x=1`;
    const a = client(url);
    await a.opened;
    a.ws.send("one");
    a.ws.send("ü".repeat(40_000));
    a.ws.send("big");
    await messagesReach(a.messages, 4);
    assert.deepEqual(a.messages.slice(0, 2), ["hello", "echo:one"]);
    assert.ok(a.messages[2] === `echo:${"ü".repeat(40_000)}`, "the 80000-byte message, echoed whole");
    assert.ok(a.messages[3] === "b".repeat(70_000), "the 70000-byte message, whole");
    a.ws.close(1000, "done");
    assert.deepEqual(await a.closed, { code: 1000, reason: "done", wasClean: true });
    assert.equal(a.ws.readyState, DenoWebSocket.CLOSED);

    const b = client(url);
    await b.opened;
    b.ws.send("close");
    assert.deepEqual(await b.closed, { code: 4000, reason: "bye", wasClean: true });
    assert.equal(a.errors() + b.errors(), 0);
    await eventually("the server saw both closes", () => serverClosed.length === 2, TIMEOUT_MS);
    assert.deepEqual(serverClosed.map((c) => c.code).sort(), [1000, 4000]);
  } finally {
    await server.shutdown();
  }
});

test("ws client against Bun.serve's websocket (a Bun process): messages both ways, a ping answered with a pong, close from either side", { skip: skipClient }, async () => {
  const bun = startProcess(`${ROOT}/node_modules/.bin/bun`, [`${ROOT}/tests/_ws_echo_bun.ts`]);
  try {
    await stdoutMatch(bun, /port=\d+/, 10_000);
    const url = `ws://127.0.0.1:${/port=(\d+)/.exec(bun.stdout())![1]}/`;
    const a = client(url);
    await a.opened;
    a.ws.send("one");
    a.ws.send("ping");
    // The pong's answer comes after the server read our pong: wait for it before the next request.
    await messagesReach(a.messages, 2);
    assert.deepEqual(a.messages, ["one", "pong:p1"]);
    a.ws.send("big");
    await messagesReach(a.messages, 3);
    assert.ok(a.messages[2] === "b".repeat(70_000), "the 70000-byte message, whole");
    a.ws.close(1000, "done");
    assert.deepEqual(await a.closed, { code: 1000, reason: "done", wasClean: true });

    const b = client(url);
    await b.opened;
    b.ws.send("close");
    assert.deepEqual(await b.closed, { code: 4000, reason: "bye", wasClean: true });
    assert.equal(a.errors() + b.errors(), 0);
  } finally {
    bun.kill("SIGTERM");
    await bun.exited;
  }
});

/**
 * A raw TCP server on 127.0.0.1 for one connection: it reads the upgrade request and hands
 * `script` the connection, the request's key and a reader of the client's (masked) frames.
 */
function rawServer(script: (conn: RawConn, key: string, frames: ClientFrames) => Promise<void>) {
  // deno-lint-ignore no-explicit-any
  const Deno = (globalThis as any).Deno;
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const done = (async () => {
    const conn: RawConn = await listener.accept();
    try {
      const frames = new ClientFrames(conn);
      const head = await frames.upTo("\r\n\r\n");
      const key = /sec-websocket-key: *(\S+)/i.exec(head)![1];
      await script(conn, key, frames);
    } finally {
      conn.close();
    }
  })();
  return { port: listener.addr.port as number, done, close: () => listener.close() };
}

interface RawConn {
  read(buffer: Uint8Array): Promise<number | null>;
  write(bytes: Uint8Array): Promise<number>;
  close(): void;
}

/** Reads what a client wrote: the upgrade request, then its frames (unmasked here, each checked to be masked). */
class ClientFrames {
  private pending = new Uint8Array();
  constructor(private readonly conn: RawConn) {}

  private async more(): Promise<void> {
    const buffer = new Uint8Array(65_536);
    const n = await this.conn.read(buffer);
    if (n === null) throw new Error("the client ended the connection");
    this.pending = new Uint8Array([...this.pending, ...buffer.subarray(0, n)]);
  }

  private async take(count: number): Promise<Uint8Array> {
    for (let i = 0; this.pending.length < count; i++) {
      assert.ok(i < 100, "too many reads");
      await this.more();
    }
    const out = this.pending.slice(0, count);
    this.pending = this.pending.slice(count);
    return out;
  }

  async upTo(end: string): Promise<string> {
    for (let i = 0; !new TextDecoder().decode(this.pending).includes(end); i++) {
      assert.ok(i < 100, "too many reads");
      await this.more();
    }
    const text = new TextDecoder().decode(this.pending);
    const at = text.indexOf(end) + end.length;
    this.pending = this.pending.slice(at);
    return text.slice(0, at);
  }

  /** The next frame (small frames only: 7-bit lengths); it must be masked. */
  async next(): Promise<{ opcode: number; payload: Uint8Array }> {
    const [b0, b1] = await this.take(2);
    assert.ok(b1 & 0x80, "a client frame must be masked");
    assert.ok((b1 & 0x7f) < 126, "small frames only here");
    const mask = await this.take(4);
    const payload = (await this.take(b1 & 0x7f)).map((b, i) => b ^ mask[i & 3]);
    return { opcode: b0 & 0x0f, payload };
  }
}

const switching = (key: string, accept = acceptFor(key)) =>
  encoder.encode(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);

test("ws client against a raw server: a wrong Accept never opens; a ping is answered with its payload; a masked frame closes with 1002", { skip: skipClient }, async () => {
  const wrong = rawServer(async (conn, key) => {
    await conn.write(switching(key, acceptFor("not the key")));
  });
  try {
    const a = client(`ws://127.0.0.1:${wrong.port}/`);
    let opened = false;
    void a.opened.then(() => opened = true);
    assert.deepEqual(await a.closed, { code: 1002, reason: "", wasClean: false });
    assert.equal(opened, false);
    assert.equal(a.errors(), 1);
    await wrong.done;
  } finally {
    wrong.close();
  }

  const seen: Array<{ opcode: number; payload: Uint8Array }> = [];
  const rude = rawServer(async (conn, key, frames) => {
    await conn.write(new Uint8Array([...switching(key), ...encodeFrame(OP.ping, encoder.encode("are you there"), null)]));
    seen.push(await frames.next());
    await conn.write(encodeFrame(OP.text, encoder.encode("masked"), MASK));
    seen.push(await frames.next());
  });
  try {
    const b = client(`ws://127.0.0.1:${rude.port}/`);
    await b.opened;
    assert.deepEqual(await b.closed, { code: 1002, reason: "", wasClean: false });
    await rude.done;
    assert.deepEqual(b.messages, [], "the masked frame was not delivered");
    assert.equal(seen[0].opcode, OP.pong);
    assert.equal(new TextDecoder().decode(seen[0].payload), "are you there");
    assert.equal(seen[1].opcode, OP.close);
    assert.equal((seen[1].payload[0] << 8) | seen[1].payload[1], 1002);
  } finally {
    rude.close();
  }
});

test("ws client against a raw server: a frame whose header declares more than the limit closes the connection (1009) before its payload is sent", { skip: skipClient }, async () => {
  let closeCode = 0;
  const big = rawServer(async (conn, key, frames) => {
    // Only the header of a 2 MiB frame: the client must not wait for the payload to refuse it.
    const header = new Uint8Array([0x81, 127, 0, 0, 0, 0, 0, 0x20, 0, 0]);
    await conn.write(new Uint8Array([...switching(key), ...header]));
    const close = await frames.next();
    assert.equal(close.opcode, OP.close);
    closeCode = (close.payload[0] << 8) | close.payload[1];
  });
  try {
    const a = client(`ws://127.0.0.1:${big.port}/`, 1_048_576);
    await a.opened;
    assert.deepEqual(await a.closed, { code: 1009, reason: "", wasClean: false });
    await big.done;
    assert.equal(closeCode, 1009);
  } finally {
    big.close();
  }
});

test("ws client against a raw server: after close(), a message the server sends before its close frame is not delivered; the close is still clean", { skip: skipClient }, async () => {
  const late = rawServer(async (conn, key, frames) => {
    await conn.write(switching(key));
    const close = await frames.next();
    assert.equal(close.opcode, OP.close);
    // A message, then the close frame echoing the client's, in one write.
    await conn.write(new Uint8Array([...encodeFrame(OP.text, encoder.encode("late"), null), ...encodeFrame(OP.close, close.payload, null)]));
  });
  try {
    const a = client(`ws://127.0.0.1:${late.port}/`);
    await a.opened;
    a.ws.close(1000, "done");
    assert.equal(a.ws.readyState, DenoWebSocket.CLOSING);
    assert.deepEqual(await a.closed, { code: 1000, reason: "done", wasClean: true });
    await late.done;
    assert.deepEqual(a.messages, [], "nothing delivered once closing");
  } finally {
    late.close();
  }
});

test("ws client against a raw server: on a protocol error the client is CLOSING before its close frame goes, so a send() meanwhile is dropped, not written after the close frame", { skip: skipClient }, async () => {
  // The window is the wait for the close frame to be written (flushed): a send() there, as from
  // a timer of peer_stream.ts, is made by patching flushed for this test only.
  const proto = DenoWebSocket.prototype as unknown as { flushed(this: DenoWebSocket): Promise<void> };
  const original = proto.flushed;
  const statesAtFlush: number[] = [];
  proto.flushed = function (this: DenoWebSocket) {
    statesAtFlush.push(this.readyState);
    this.send("after the close frame");
    return original.call(this);
  };
  const bad = rawServer(async (conn, key, frames) => {
    await conn.write(new Uint8Array([...switching(key), ...encodeFrame(OP.text, encoder.encode("masked"), MASK)]));
    const close = await frames.next();
    assert.equal(close.opcode, OP.close);
    assert.equal((close.payload[0] << 8) | close.payload[1], 1002);
    await assert.rejects(frames.next(), /the client ended the connection/, "no frame after the close frame");
  });
  try {
    const a = client(`ws://127.0.0.1:${bad.port}/`);
    await a.opened;
    assert.deepEqual(await a.closed, { code: 1002, reason: "", wasClean: false });
    await bad.done;
    assert.deepEqual(statesAtFlush, [DenoWebSocket.CLOSING]);
  } finally {
    proto.flushed = original;
    bad.close();
  }
});

test("ws client: close() while Deno.connect is pending aborts it (its signal), and a connection whose setNoDelay throws is closed", { skip: skipClient }, async () => {
  // deno-lint-ignore no-explicit-any
  const Deno = (globalThis as any).Deno;
  const original = Deno.connect;
  try {
    // A connect that never answers (as to a host that drops SYNs) unless its signal aborts it.
    let signal: AbortSignal | undefined;
    Deno.connect = (options: { signal?: AbortSignal }) => {
      signal = options.signal;
      return new Promise((_, reject) => options.signal?.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError"))));
    };
    const a = client("ws://127.0.0.1:9/");
    let closedEvent: ClientCloseEvent | undefined;
    void a.closed.then((event) => closedEvent = event);
    a.ws.close();
    await eventually("onclose after close() while connecting", () => closedEvent !== undefined, TIMEOUT_MS);
    assert.deepEqual(closedEvent, { code: 1006, reason: "", wasClean: false });
    assert.equal(signal?.aborted, true);
    assert.equal(a.errors(), 0, "an abort asked for is no error");

    // A connection whose setNoDelay throws: closed, and the socket fails.
    let tcpClosed = 0;
    Deno.connect = () =>
      Promise.resolve({
        setNoDelay() {
          throw new Error("setNoDelay failed");
        },
        close: () => tcpClosed += 1,
        read: () => Promise.resolve(null),
        write: (bytes: Uint8Array) => Promise.resolve(bytes.length),
      });
    const b = client("ws://127.0.0.1:9/");
    assert.deepEqual(await b.closed, { code: 1006, reason: "", wasClean: false });
    assert.equal(tcpClosed, 1);
    assert.equal(b.errors(), 1);
  } finally {
    Deno.connect = original;
  }
});
