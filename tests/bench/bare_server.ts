/**
 * The benchmark's `bare` baseline (issue 14): the least an HTTP server on this runtime can do per
 * request of mutexd's client API. The runtime's own server (Bun.serve, or Deno.serve under Deno,
 * through cluster/runtime.ts's serveHttp with the options mutexd's nodes use) reads each request's
 * JSON body and answers a small JSON body of the shape the client expects (a session, a grant, a
 * release), so mutexd's own client drives it exactly as it drives a lock server. No lock, no
 * session, no log, no validation: what it costs per request is the runtime's HTTP and JSON
 * floor, and `lone primary µs per a+r ÷ (2 × bare µs per request)` says how far above it mutexd is.
 *
 *   bun tests/bench/bare_server.ts PORT        (deno run -A tests/bench/bare_server.ts PORT)
 *
 * Listens on 127.0.0.1 only; runs until killed (tests/bench/lib/server.ts stops it by PID).
 */
import process from "node:process";
import { serveHttp } from "../../cluster/runtime.ts";

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0 || port > 65_535) throw new Error("usage: bare_server.ts PORT");

/** The long-poll bound mutexd announces by default (lib/settings.ts longPollMaxMs); the client reads it. */
const LONG_POLL_MAX_MS = 5_000;
let nextToken = 1;

async function handle(request: Request): Promise<Response> {
  const path = new URL(request.url).pathname;
  if (request.method === "GET") return Response.json({ ok: true, id: "bare", role: "bare" });
  const text = await request.text();
  const body = (text === "" ? {} : JSON.parse(text)) as Record<string, unknown>;
  if (path === "/v1/enter") {
    return Response.json({ granted: true, name: body.name, session: body.session, token: nextToken++, mode: body.mode ?? "exclusive" });
  }
  if (path === "/v1/leave") return Response.json({ left: true, name: body.name, wasHolder: true });
  if (path === "/v1/sessions") {
    return Response.json({ session: `bare-${nextToken++}`, sessionSecret: body.sessionSecret ?? "bare".repeat(16), ttlMs: body.ttlMs, longPollMaxMs: LONG_POLL_MAX_MS }, { status: 201 });
  }
  const session = decodeURIComponent(path.split("/")[3] ?? "");
  if (path.endsWith("/keepalive")) return Response.json({ session, ttlMs: 10_000 });
  return Response.json({ session, released: [] });
}

await serveHttp(handle, { hostname: "127.0.0.1", port });
