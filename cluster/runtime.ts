/**
 * The one module that knows which runtime runs us. Everything else is web-standard TypeScript
 * plus `node:` built-ins that Deno and Bun share.
 */
import process from "node:process";
import { hash as nodeHash } from "node:crypto";
import { fetchTrusting, type TrustingFetch } from "../lib/client/tls.ts";
import { DenoWebSocket } from "./ws_client.ts";

// deno-lint-ignore no-explicit-any
const g = globalThis as any;

export const runtimeName: "deno" | "bun" | "other" = g.Deno ? "deno" : g.Bun ? "bun" : "other";

export interface HttpServer {
  /** The port actually bound (useful with port 0). */
  port: number;
  close(): Promise<void>;
}

type FetchHandler = (request: Request) => Response | Promise<Response>;

/** A node's certificate (chain) and private key, PEM text (cluster/config.ts reads them). */
export interface TlsFiles {
  cert: string;
  key: string;
}

/**
 * A port that cannot be bound: taken, an address not on this host, or no permission. Both
 * runtimes set these `code`s on their own errors, with different texts and stack traces; the
 * node prints this one line instead (cluster/commands/node.ts).
 */
export class ListenError extends Error {
  constructor(readonly address: string, readonly code: string) {
    super(`${address}: ${LISTEN_PROBLEMS[code] ?? code}`);
    this.name = "ListenError";
  }
}

const LISTEN_PROBLEMS: Record<string, string> = {
  EADDRINUSE: "already in use (another process listens there)",
  EADDRNOTAVAIL: "not an address of this host",
  EACCES: "permission denied (ports below 1024 need privileges)",
};

/** `error` as a ListenError when it is a failure to bind `address` (see LISTEN_PROBLEMS), else itself. */
export function listenError(error: unknown, address: string): unknown {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && code in LISTEN_PROBLEMS ? new ListenError(address, code) : error;
}

/** One accepted WebSocket, as a stream route's connection sees it (text frames only). */
export interface StreamSocket {
  send(text: string): void;
  close(code: number, reason: string): void;
}

/** The handlers of one accepted WebSocket: `opened` first, then its frames, then `closed` once. */
export interface StreamConnection {
  opened(socket: StreamSocket): void;
  /** A frame as received (a string for text, bytes for binary), before any check of its length under Deno. */
  message(data: string | Uint8Array): void;
  closed(): void;
}

/**
 * A WebSocket route on the HTTP port (cluster/peer_stream_server.ts): an upgrade request (`GET path`
 * with `upgrade: websocket`) goes to `accept` before anything is upgraded, and its Response, if
 * it returns one, is the answer (a refusal). Every other request goes to `fetch`.
 */
export interface StreamRoute {
  path: string;
  /** Bun refuses a longer frame while reading it (`maxPayloadLength`); Deno has no such limit: the connection checks. */
  frameBytesMax: number;
  accept(request: Request): Response | StreamConnection;
}

/** Serves `fetch` on host:port with the runtime's native server; over TLS (HTTPS) when `tls` is given. */
export async function serveHttp(fetch: FetchHandler, options: { hostname: string; port: number; tls?: TlsFiles; stream?: StreamRoute }): Promise<HttpServer> {
  try {
    return await serveNative(fetch, options);
  } catch (error) {
    throw listenError(error, `${options.hostname}:${options.port}`);
  }
}

/** Whether `request` asks to upgrade to a WebSocket on `route`'s path. */
function isStreamUpgrade(request: Request, route: StreamRoute | undefined): route is StreamRoute {
  if (route === undefined || request.method !== "GET" || request.headers.get("upgrade")?.toLowerCase() !== "websocket") return false;
  const url = request.url;
  const start = url.indexOf("/", url.indexOf("://") + 3);
  const query = url.indexOf("?", start);
  return start >= 0 && (query < 0 ? url.slice(start) : url.slice(start, query)) === route.path;
}

/** A runtime's WebSocket as a StreamSocket (both runtimes name the two methods so). */
function streamSocketOf(ws: { send(text: string): unknown; close(code?: number, reason?: string): unknown }): StreamSocket {
  return { send: (text) => void ws.send(text), close: (code, reason) => void ws.close(code, reason) };
}

function serveNative(fetch: FetchHandler, options: { hostname: string; port: number; tls?: TlsFiles; stream?: StreamRoute }): Promise<HttpServer> {
  const { tls, stream } = options;
  if (runtimeName === "deno") {
    const denoFetch: FetchHandler = (request) => {
      if (!isStreamUpgrade(request, stream)) return fetch(request);
      const accepted = stream.accept(request);
      if (accepted instanceof Response) return accepted;
      const { socket, response } = g.Deno.upgradeWebSocket(request);
      socket.onopen = () => accepted.opened(streamSocketOf(socket));
      socket.onmessage = (event: MessageEvent) => accepted.message(typeof event.data === "string" ? event.data : new Uint8Array(event.data as ArrayBuffer));
      socket.onclose = () => accepted.closed();
      return response;
    };
    return new Promise((resolve, reject) => {
      try {
        const server = g.Deno.serve(
          {
            hostname: options.hostname,
            port: options.port,
            ...(tls ? { cert: tls.cert, key: tls.key } : {}),
            onListen: (addr: { port: number }) => resolve({ port: addr.port, close: () => server.shutdown() }),
          },
          denoFetch,
        );
      } catch (error) {
        reject(error);
      }
    });
  }
  if (runtimeName === "bun") {
    // idleTimeout (s) must exceed the longest long-poll; 255 is Bun's maximum.
    // Bun.serve throws at once on a port it cannot bind; serveHttp turns that into a ListenError.
    const server = g.Bun.serve({
      hostname: options.hostname,
      port: options.port,
      fetch: (request: Request, bunServer: { upgrade(request: Request, options: { data: StreamConnection }): boolean }) => {
        if (!isStreamUpgrade(request, stream)) return fetch(request);
        const accepted = stream.accept(request);
        if (accepted instanceof Response) return accepted;
        // undefined: Bun answers the upgrade itself.
        return bunServer.upgrade(request, { data: accepted }) ? undefined : new Response("WebSocket upgrade failed", { status: 400 });
      },
      ...(stream
        ? {
          websocket: {
            maxPayloadLength: stream.frameBytesMax,
            perMessageDeflate: false,
            open: (ws: { data: StreamConnection } & StreamSocket) => ws.data.opened(streamSocketOf(ws)),
            message: (ws: { data: StreamConnection }, data: string | Uint8Array) => ws.data.message(data),
            // A frame over maxPayloadLength: Bun drops the connection itself (close code 1006, as
            // for a lost peer), without `message`, so such a refusal is not in the security log.
            close: (ws: { data: StreamConnection }) => ws.data.closed(),
          },
        }
        : {}),
      idleTimeout: 255,
      ...(tls ? { tls: { cert: tls.cert, key: tls.key } } : {}),
    });
    // Not stop(true): that cuts the connections at once, before the answers a stopping service
    // has just given (long-polls ended) are written. stop() closes idle keep-alive connections and
    // resolves when the requests in progress are answered, as Deno's shutdown() does.
    return Promise.resolve({ port: server.port, close: () => Promise.resolve(server.stop()) });
  }
  return Promise.reject(new Error("mutexd runs on Deno or Bun"));
}

/**
 * The fetch for requests to other nodes and from the CLI: the runtime's own (the system's roots)
 * without a CA, else one that trusts `caPem` ([cluster] tlsCa, --ca). The switch between the
 * runtimes' ways to name a CA is lib/client/tls.ts's, which the client library needs too.
 */
export function fetchFor(caPem: string | undefined): TrustingFetch {
  return caPem === undefined ? (url, init) => fetch(url, init) : fetchTrusting(caPem);
}

/**
 * Why this runtime's WebSocket client cannot carry the replication stream (cluster/peer_stream.ts),
 * or null when it can; the stream's sender then keeps to HTTP. Under Deno the stream uses
 * cluster/ws_client.ts, not Deno's own WebSocket: that one sets no TCP_NODELAY (a frame sent while
 * another is unanswered waited on Nagle's algorithm, W2 replicated 944 → 230 a+r/s, docs/bench.md)
 * and takes no CA.
 */
export function webSocketClientProblem(_caPem: string | undefined): string | null {
  if (runtimeName === "bun" || runtimeName === "deno") return null;
  return "no WebSocket client known for this runtime";
}

/**
 * A WebSocket to another node (cluster/peer_stream.ts); only when webSocketClientProblem is null.
 * Bun's takes `tls.ca`, as its fetch does; under Deno, ws_client.ts's client (TCP_NODELAY, the CA),
 * which has the part of WebSocket's interface peer_stream.ts uses. `messageBytesMax`: the longest
 * message that client takes (the configured peerBodyBytesMax and a frame's head: a sync answer may
 * be as long as the longest request); Bun's client keeps its own limit.
 */
export function openWebSocket(url: string, caPem: string | undefined, messageBytesMax: number): WebSocket {
  if (runtimeName === "deno") return new DenoWebSocket(url, { caPem, messageBytesMax }) as unknown as WebSocket;
  if (caPem === undefined) return new WebSocket(url);
  return new (WebSocket as unknown as new (url: string, options: unknown) => WebSocket)(url, { tls: { ca: caPem } });
}

/** The argv prefix that starts this same program again (for `mutexd up` and tests). */
export function selfCommand(): string[] {
  if (runtimeName === "deno") {
    const main: string = g.Deno.mainModule ?? "";
    // A `deno compile` binary is its own program; a script runs under the deno executable.
    if (main.startsWith("file://") && !main.includes("/deno-compile-")) {
      return [g.Deno.execPath(), "run", "-A", new URL(main).pathname];
    }
    return [g.Deno.execPath()];
  }
  if (runtimeName === "bun") {
    const main: string = g.Bun.main ?? "";
    // `bun build --compile` embeds the script under /$bunfs; then the executable is mutexd itself.
    if (main.startsWith("/$bunfs") || main.startsWith("B:/~BUN")) return [process.execPath];
    return [process.execPath, main];
  }
  return [process.execPath, process.argv[1]];
}

/**
 * A full garbage collection, when the runtime lets a script ask for one (Bun always; Deno with
 * `--v8-flags=--expose-gc`). Returns false when it could not: heap figures then include garbage.
 * Only for measuring memory (tests/bench/lock_bytes.ts), never on a server's path.
 */
export function collectGarbage(): boolean {
  if (runtimeName === "bun") {
    g.Bun.gc(true);
    return true;
  }
  if (typeof g.gc === "function") {
    g.gc();
    return true;
  }
  return false;
}

/**
 * SHA-256 of `text` (UTF-8) in hex: Bun's own one-shot hash under Bun, about half the time of
 * node:crypto's `hash` there (0.19 against 0.35 µs for a 43-character secret, twice per
 * acquire+release on a lock server: cluster/lock/session_secret.ts); node:crypto's elsewhere. The
 * same digest either way (lock_fast_path_test compares it with createHash under both runtimes).
 */
export const sha256Hex: (text: string) => string = runtimeName === "bun"
  ? (text) => g.Bun.SHA256.hash(text, "hex")
  : (text) => nodeHash("sha256", text, "hex");

/**
 * A maker of JSON answers with fixed `headers` (the lock server's fast path: Hono's c.json content
 * type and the wire format header), each the body's JSON.stringify text with `status`. The
 * cheapest way differs by runtime (a Response per answer, 2 per acquire+release; same run,
 * docs/bench.md): Bun copies a Headers object built once (0.26 µs, against 0.44 for the same
 * headers as an object); Deno pays about 1.7 µs for any init with two headers, and 0.25 for its
 * own `Response.json` with them set afterwards (which also sets `application/json` by itself, so
 * that one is not set again).
 */
export function jsonResponder(headers: Readonly<Record<string, string>>): (body: unknown, status: number) => Response {
  if (runtimeName === "bun") {
    const shared = new Headers(headers);
    return (body, status) => new Response(JSON.stringify(body), { status, headers: shared });
  }
  // Only the headers Response.json does not already set as wanted (it sets `application/json`):
  // each set costs Deno about 0.16 µs (name and value checked, the list searched).
  const preset = Response.json(null).headers;
  const entries = Object.entries(headers).filter(([name, value]) => preset.get(name) !== value);
  return (body, status) => {
    // A 200 (an acquire's and a release's answer) without an init: no ResponseInit to convert.
    const response = status === 200 ? Response.json(body) : Response.json(body, { status });
    for (const [name, value] of entries) response.headers.set(name, value);
    return response;
  };
}
