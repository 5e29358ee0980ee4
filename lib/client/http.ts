/**
 * One JSON request to a mutexd server, shared by the clients (lock_client.ts; ring_client.ts can
 * switch to it): a JSON body, a timeout, the answer decoded, an error answer turned into a
 * MutexdError with the server's code.
 *
 * The runtime comes in through ports (`HttpPorts`: fetch and timers), defaulting to the real
 * ones, so the simulator (tests/sim) can run the client as it is. Port rule (as for the drivers,
 * cluster/timers.ts): what a port returns is continued with `.then(onFulfilled, onRejected)`
 * only, never awaited, and the answer comes back through a callback; `httpRequest` is the
 * Promise form for everybody else.
 */
import { MutexdError } from "../wire/errors.ts";
import { FORMAT_HEADER, formatRefusal, formatText, UNVERSIONED, WIRE_FORMAT } from "../wire/version.ts";
import { fetchTrusting, type TlsOptions } from "./tls.ts";

/** What the client reads of a fetch answer (a web `Response` has it). */
export interface HttpResponse {
  readonly ok: boolean;
  readonly status: number;
  text(): PromiseLike<string>;
  /** The answer's headers (a `Response` has them); absent: read as a server before format versions (1.0). */
  readonly headers?: { get(name: string): string | null };
  /** The body as a stream (a `Response` has it; only a lock watch reads it: lock_watch.ts). */
  readonly body?: ReadableStream<Uint8Array> | null;
}

export interface HttpInit {
  method: string;
  headers?: Record<string, string>;
  body?: string;
  signal: AbortSignal;
}

export type FetchPort = (url: string, init: HttpInit) => PromiseLike<HttpResponse>;

/** The subset of the runtime's timers the clients use (cluster/timers.ts has the same shape). */
export interface TimersPort {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export interface ClockPort {
  /** Milliseconds on a monotonic scale. */
  nowMs(): number;
}

export interface HttpPorts {
  fetch: FetchPort;
  timers: TimersPort;
}

/**
 * The wait one enter asks for; longer waits are split into several (both clients). The server
 * keeps the queue place while the client keeps asking (every long-poll), so a client that
 * vanishes leaves the queue within this time even before its session expires. Settings keep
 * waitMaxMs above it.
 */
export const WAIT_CHUNK_MS = 60_000;

export const realFetch: FetchPort = (url, init) => fetch(url, init);

/** The fetch a client uses: the one it was given, else one trusting `tls.ca` (tls.ts), else the runtime's. */
export function chooseFetch(given: FetchPort | undefined, tls: TlsOptions | undefined): FetchPort {
  return given ?? (tls ? fetchTrusting(tls.ca) : realFetch);
}

/**
 * What a failed fetch says, with its cause: Deno's fetch rejects with "fetch failed" and puts the
 * reason (a refused connection, "invalid peer certificate: UnknownIssuer") in `cause`.
 */
export function failureText(error: unknown): string {
  const message = (error as Error)?.message ?? String(error);
  const cause = (error as { cause?: { message?: unknown } })?.cause?.message;
  return typeof cause === "string" && !message.includes(cause) ? `${message}: ${cause}` : message;
}

export const realTimers: TimersPort = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

export const realClock: ClockPort = { nowMs: () => performance.now() };

/** A request's outcome. A failure keeps the answer's error object (a "not primary" hint). */
export type Outcome<T> =
  | { ok: true; value: T }
  | { ok: false; error: MutexdError; detail?: Record<string, unknown> };

export interface HttpRequest {
  /** Base URL of the server, without a trailing slash. */
  base: string;
  method: string;
  path: string;
  /** Sent as JSON text; none when undefined. */
  body?: unknown;
  /** The whole exchange (connect, answer, body) gives up after this. */
  timeoutMs: number;
  /** Aborts the request early (a caller that no longer needs the answer). */
  cancel?: AbortSignal;
  /** The client's bearer token (sent as `Authorization: Bearer …`); none without. */
  token?: string;
}

/** A bearer token as a header value carries it: visible ASCII, no spaces (RFC 6750's b64token and more). */
const TOKEN_PATTERN = /^[\x21-\x7e]{1,4096}$/;

/**
 * The `token` option of a client, checked once when the client is made: a value a header cannot
 * carry would otherwise fail every request as "unreachable". The message never shows the token.
 */
export function checkedToken(token: string | undefined): string | undefined {
  if (token !== undefined && !TOKEN_PATTERN.test(token)) {
    throw new MutexdError("bad_request", "token must be 1..4096 visible ASCII characters without spaces (the value of a [[tokens]] secret)");
  }
  return token;
}

/** The headers of a request: JSON content type with a body, the bearer token if any. */
export function requestHeaders(hasBody: boolean, token: string | undefined): Record<string, string> | undefined {
  if (!hasBody && token === undefined) return undefined;
  return {
    ...(hasBody ? { "content-type": "application/json" } : {}),
    ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
  };
}

/**
 * Sends one request and calls `done` exactly once: the decoded answer, "unreachable" when the
 * connection failed or the timeout ran out, "internal" when the answer is not JSON, or the
 * error the server answered.
 */
export function exchange<T>(ports: HttpPorts, request: HttpRequest, done: (outcome: Outcome<T>) => void): void {
  const { base, method, path, body } = request;
  const controller = new AbortController();
  let finished = false;
  // The timeout ends the exchange itself, whatever the runtime does with the abort: a fetch, or
  // a body still being read (`text()` after the headers), need not reject at once when the
  // server is paused, and the caller must not wait for the pause to end.
  const timer = ports.timers.setTimeout(() => {
    const error = new Error(`no answer in ${request.timeoutMs}ms`);
    controller.abort(error);
    unreachable(error);
  }, request.timeoutMs);
  const finish = (outcome: Outcome<T>) => {
    if (finished) return;
    finished = true;
    ports.timers.clearTimeout(timer);
    done(outcome);
  };
  const unreachable = (error: unknown) =>
    finish({ ok: false, error: new MutexdError("unreachable", `${base}: ${failureText(error)}`) });
  let signal = controller.signal;
  if (request.cancel) signal = AbortSignal.any([signal, request.cancel]);
  let sent: PromiseLike<HttpResponse>;
  try {
    sent = ports.fetch(base + path, {
      method,
      headers: requestHeaders(body !== undefined, request.token),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (error) {
    return unreachable(error);
  }
  sent.then((response) =>
    response.text().then((text) => finish(decodeAnswer<T>(base + path, response, text)), unreachable), unreachable);
}

/**
 * The error for an answer of another major wire format (its FORMAT_HEADER; none: a server before
 * format versions, 1.0), naming both versions; null when this client reads it. Checked before the
 * body: an answer of another major may mean something else in the same JSON.
 */
export function answerFormatError(where: string, response: HttpResponse): MutexdError | null {
  const refusal = formatRefusal(`the answer of ${where}`, response.headers?.get(FORMAT_HEADER) ?? formatText(UNVERSIONED), WIRE_FORMAT);
  return refusal === null ? null : new MutexdError("version_mismatch", refusal, response.status);
}

/** An answer's JSON text as its outcome: the value, or the error (and its fields) the server answered. */
export function decodeAnswer<T>(where: string, response: HttpResponse, text: string): Outcome<T> {
  const mismatch = answerFormatError(where, response);
  if (mismatch !== null) return { ok: false, error: mismatch };
  let data: unknown;
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    return { ok: false, error: new MutexdError("internal", `${where}: answer is not JSON (status ${response.status})`, response.status) };
  }
  if (response.ok) return { ok: true, value: data as T };
  const detail = (data as { error?: Record<string, unknown> } | null)?.error;
  const code = typeof detail?.code === "string" ? detail.code : "internal";
  const message = typeof detail?.message === "string" ? detail.message : `status ${response.status}`;
  return { ok: false, error: new MutexdError(code as MutexdError["code"], message, response.status), detail };
}

/** A function that answers through a callback, as a Promise. */
export function promised<T>(start: (done: (outcome: Outcome<T>) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => start((outcome) => (outcome.ok ? resolve(outcome.value) : reject(outcome.error))));
}

/** `exchange` with the real runtime, as a Promise: rejects with the MutexdError. */
export function httpRequest<T>(request: HttpRequest, ports: HttpPorts = { fetch: realFetch, timers: realTimers }): Promise<T> {
  return promised((done) => exchange<T>(ports, request, done));
}
