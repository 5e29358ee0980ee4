/**
 * A fetch that trusts one certificate authority, for servers whose certificate a private CA
 * signed (docs/security.md, "TLS"). The clients take it as their `tls: { ca }` option; the
 * cluster's peers and CLI reach it through cluster/runtime.ts.
 *
 * Why a feature test here and not only a `fetch` option: the web's fetch has no way to name a CA,
 * and each runtime has its own extension, so a caller would have to write this switch itself. It
 * is the one runtime-specific piece of the client library, kept to what fetch needs:
 * - Deno: an HTTP client with the CA (`Deno.createHttpClient({ caCerts })`), passed as `client`;
 * - Bun: `tls: { ca }` in fetch's init.
 * Elsewhere (Node) it throws: there, pass a `fetch` option (e.g. undici with the CA) instead.
 * Verification is never turned off: a certificate the CA did not sign fails the request.
 */

/**
 * The `tls` option of both clients: the CA certificate(s), PEM text, that signed the servers'
 * certificates (a value: the client reads no files). Without it the runtime's roots are trusted.
 */
export interface TlsOptions {
  ca: string;
}

/** The part of fetch the clients use (URL as text). */
export type TrustingFetch = (url: string, init?: RequestInit) => Promise<Response>;

/** A fetch that verifies the server's certificate against `caPem` (PEM text, one or more certificates). */
export function fetchTrusting(caPem: string): TrustingFetch {
  // deno-lint-ignore no-explicit-any
  const g = globalThis as any;
  if (typeof g.Deno?.createHttpClient === "function") {
    // One client per CA, reused by every request: it keeps the connections alive.
    const client = g.Deno.createHttpClient({ caCerts: [caPem] });
    return (url, init) => fetch(url, { ...init, client } as RequestInit);
  }
  if (g.Bun !== undefined) {
    return (url, init) => fetch(url, { ...init, tls: { ca: caPem } } as RequestInit);
  }
  throw new Error("tls.ca is supported on Deno and Bun; elsewhere pass a fetch that trusts the CA");
}
