/**
 * A Bun.serve WebSocket server on 127.0.0.1 for tests/ws_client_test.ts (which runs under Deno and
 * spawns this under Bun): prints `port=N`, then per text message: "ping" → it pings with payload
 * "p1" (the client's pong comes back as the text "pong:p1"), "close" → it closes with 4000 "bye",
 * "big" → a 70000-byte message of "b", anything else → echoed. Stopped by its parent (SIGTERM).
 */
// deno-lint-ignore no-explicit-any
const Bun = (globalThis as any).Bun;
type Socket = { send(data: string): void; ping(data: string): void; close(code: number, reason: string): void };

const server = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  fetch: (request: Request, srv: { upgrade(request: Request): boolean }) =>
    srv.upgrade(request) ? undefined : new Response("WebSocket only", { status: 400 }),
  websocket: {
    perMessageDeflate: false,
    message(ws: Socket, message: string | Uint8Array) {
      if (message === "ping") ws.ping("p1");
      else if (message === "close") ws.close(4000, "bye");
      else if (message === "big") ws.send("b".repeat(70_000));
      else ws.send(typeof message === "string" ? message : "binary?");
    },
    pong(ws: Socket, data: Uint8Array) {
      ws.send(`pong:${new TextDecoder().decode(data)}`);
    },
  },
});
console.log(`port=${server.port}`);
