/**
 * The one module that knows which runtime runs us. Everything else is web-standard TypeScript
 * plus `node:` built-ins that Deno and Bun share.
 */
import process from "node:process";
import { fetchTrusting, type TrustingFetch } from "../lib/client/tls.ts";

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

/** Serves `fetch` on host:port with the runtime's native server; over TLS (HTTPS) when `tls` is given. */
export async function serveHttp(fetch: FetchHandler, options: { hostname: string; port: number; tls?: TlsFiles }): Promise<HttpServer> {
  try {
    return await serveNative(fetch, options);
  } catch (error) {
    throw listenError(error, `${options.hostname}:${options.port}`);
  }
}

function serveNative(fetch: FetchHandler, options: { hostname: string; port: number; tls?: TlsFiles }): Promise<HttpServer> {
  const { tls } = options;
  if (runtimeName === "deno") {
    return new Promise((resolve, reject) => {
      try {
        const server = g.Deno.serve(
          {
            hostname: options.hostname,
            port: options.port,
            ...(tls ? { cert: tls.cert, key: tls.key } : {}),
            onListen: (addr: { port: number }) => resolve({ port: addr.port, close: () => server.shutdown() }),
          },
          fetch,
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
      fetch,
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
