/**
 * Issue 12, validation: body limits enforced while reading, every message checked against its
 * schema before it reaches a core (a refused message changes nothing), and fail-stop on a bug.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "node:net";
import { manualClock } from "../cluster/clock.ts";
import { createLockApp } from "../cluster/lock/api.ts";
import { LockService } from "../cluster/lock/service.ts";
import { memoryLogger } from "../cluster/log.ts";
import { serveHttp } from "../cluster/runtime.ts";
import { realTimers } from "../cluster/timers.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { eventually } from "./_harness.ts";

const SETTINGS = { ...DEFAULT_SETTINGS, bodyBytesMax: 1_024 };

function standaloneService(settings = SETTINGS): LockService {
  return new LockService({
    settings,
    clock: manualClock(1_000),
    log: memoryLogger(),
    nodeId: "p1",
    peer: null,
    arbiter: null,
    transport: { send: () => Promise.reject(new Error("no peers in this test")) },
    timers: realTimers,
    sessionIdPrefix: "t-",
    tokenFloor: 0,
  });
}

// On commit 2c9c5fa readBodyBytes awaited the whole body (`arrayBuffer()`) before it checked
// the size, so this request hung until the client gave up (here: the 5 s bound, a failure).
test("body limit: a chunked body that passes bodyBytesMax and never ends gets 413 at once", async () => {
  const service = standaloneService();
  const app = createLockApp(service, { nodeId: "p1", role: "primary", settings: SETTINGS });
  const server = await serveHttp(app.fetch, { hostname: "127.0.0.1", port: 0 });
  const socket = connect(server.port, "127.0.0.1");
  try {
    let received = "";
    socket.on("data", (data) => (received += data.toString()));
    socket.on("error", () => {}); // the server may close the connection after its answer
    await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
    socket.write("POST /v1/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
    const bytes = SETTINGS.bodyBytesMax + 1;
    // One byte past the limit, then the stream stays open: no terminating zero-length chunk.
    socket.write(`${bytes.toString(16)}\r\n${"x".repeat(bytes)}\r\n`);
    await eventually("the 413 answer", () => received.includes("\r\n\r\n") && received.includes("body_too_large"), 5_000);
    assert.match(received, /^HTTP\/1\.1 413 /);
    assert.equal(service.view().sessions.length, 0, "nothing was opened");
  } finally {
    socket.destroy();
    service.stop();
    await server.close();
  }
});

test("body limit: a chunked body within bodyBytesMax is read whole; Content-Length above it is refused unread", async () => {
  const service = standaloneService();
  const app = createLockApp(service, { nodeId: "p1", role: "primary", settings: SETTINGS });
  const chunks = ['{"ttlMs":', "5000}"];
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(new TextEncoder().encode(chunk));
      controller.close();
    },
  });
  const opened = await app.request("/v1/sessions", { method: "POST", body: stream, duplex: "half" } as RequestInit);
  assert.equal(opened.status, 201, await opened.clone().text());
  const declared = await app.request("/v1/sessions", {
    method: "POST",
    headers: { "content-length": String(SETTINGS.bodyBytesMax + 1) },
    body: "{}",
  });
  assert.equal(declared.status, 413);
  assert.equal((await declared.json()).error.code, "body_too_large");
  service.stop();
});
