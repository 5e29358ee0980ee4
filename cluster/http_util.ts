/**
 * Request decoding and error answers shared by every Hono app of mutexd: bodies are size-limited
 * JSON objects (read chunk by chunk, refused as soon as they pass the limit), checked against
 * their schemas (lib/wire/), and every failure is `{ error: { code, message } }`
 * with the status of lib/wire/errors.ts, never a stack trace.
 */
import type { Context, Hono } from "hono";
import { apiError, type ApiError, ERROR_STATUS, type ErrorCode } from "../lib/wire/errors.ts";
import { decodePeerBody } from "./peer_transport.ts";

/** Thrown by the readers below; the app's onError turns it into the error answer. */
export class RequestError extends Error {
  constructor(readonly code: ErrorCode, message: string) {
    super(message);
  }
}

export function errorResponse(c: Context, error: ApiError): Response {
  return c.json(apiError(error.code, error.message), ERROR_STATUS[error.code] as 400);
}

/**
 * Installs the JSON 404 and error handlers every app shares. `special` may answer an error of
 * its own kind first (e.g. "not primary" with a hint).
 */
export function installErrorHandlers(
  app: Hono,
  onInternal: (error: Error) => void,
  special?: (error: Error, c: Context) => Response | undefined,
): void {
  app.notFound((c) => errorResponse(c, { code: "not_found", message: `no route ${c.req.method} ${c.req.path}` }));
  app.onError((error, c) => {
    const answered = special?.(error, c);
    if (answered) return answered;
    return errorResponse(c, errorOf(error, onInternal));
  });
}

/** What a handler's error is answered with: its own code, or `internal` (reported) for a bug. */
export function errorOf(error: Error, onInternal: (error: Error) => void): ApiError {
  if (error instanceof RequestError) return { code: error.code, message: error.message };
  onInternal(error);
  return { code: "internal", message: `internal error: ${error.message}` };
}

/**
 * The body's bytes, at most `bytesMax` of them, else body_too_large. A declared Content-Length
 * over the limit is refused before reading; a body without one (chunked) is read chunk by chunk
 * and refused as soon as it passes the limit, without waiting for the rest: a client that sends
 * more and never ends its body gets its 413 at once and holds no more than `bytesMax` of memory.
 */
export async function readBodyBytes(c: Context, bytesMax: number): Promise<Uint8Array> {
  const tooLarge = () => new RequestError("body_too_large", `body is larger than ${bytesMax} bytes`);
  // Read once already (the peer MAC's middleware reads it before the route does): the same bytes.
  // (Hono keeps promises in bodyCache, though its type names the values.)
  const bodyCache = c.req.bodyCache as { arrayBuffer?: Promise<ArrayBuffer> };
  const cached = bodyCache.arrayBuffer;
  if (cached !== undefined) {
    const bytes = new Uint8Array(await cached);
    if (bytes.byteLength > bytesMax) throw tooLarge();
    return bytes;
  }
  const header = c.req.header("content-length");
  const declared = header === undefined ? 0 : declaredLength(header);
  if (declared > bytesMax) throw tooLarge();
  const body = c.req.raw.body;
  if (body === null) return new Uint8Array(0);
  if (header !== undefined) {
    const bytes = await readDeclaredBody(c.req.raw, declared, bytesMax);
    bodyCache.arrayBuffer = Promise.resolve(bytes.buffer as ArrayBuffer);
    return bytes;
  }
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  // Bounded by bytesMax: every round adds its chunk to `total`, and the loop ends past the limit.
  for (;;) {
    const { done, value } = await readChunk(reader);
    if (done) break;
    total += value.byteLength;
    if (total > bytesMax) {
      // Not awaited: a stalled client would hold the answer until its stream ends.
      reader.cancel().catch(() => {});
      throw tooLarge();
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  // The stream is spent: later reads (this function again, or Hono's c.req.json()) take these bytes.
  bodyCache.arrayBuffer = Promise.resolve(bytes.buffer);
  return bytes;
}

const DECIMAL = /^[0-9]+$/;

/**
 * The length a Content-Length header declares, as the runtime framed the body. Deno and Bun both
 * accept the header repeated with one value, and Headers joins the repeats ("N, N"): Number() of
 * that is NaN, which passes every `> bytesMax`, so such a body was read (and on the fast path
 * parsed) whatever its size. Anything but one decimal value, possibly repeated, is refused here
 * too (the runtimes answer 400 to most such headers before the handler runs).
 */
export function declaredLength(header: string): number {
  // The usual header, one decimal value, without the split below (it runs on every request).
  if (DECIMAL.test(header)) return Number(header);
  const values = header.split(",").map((value) => value.trim());
  if (!DECIMAL.test(values[0]) || values.some((value) => value !== values[0])) {
    throw new RequestError("bad_request", `malformed Content-Length: ${JSON.stringify(header.slice(0, 64))}`);
  }
  return Number(values[0]);
}

/**
 * The body of a request that declared its length (`declaredBytes`, its Content-Length), at most
 * `bytesMax`, else body_too_large before anything is read. Within the limit the server reads
 * exactly that many bytes, so the body is read whole at once (the runtime's own path, cheaper
 * than a chunk loop in JavaScript).
 */
export async function readDeclaredBody(request: Request, declaredBytes: number, bytesMax: number): Promise<Uint8Array> {
  return new Uint8Array(await readDeclared(declaredBytes, bytesMax, () => request.arrayBuffer()));
}

/** Refuses a declared length past `bytesMax` (body_too_large) before anything is read. */
export function checkDeclaredLength(declaredBytes: number, bytesMax: number): void {
  if (declaredBytes > bytesMax) throw new RequestError("body_too_large", `body is larger than ${bytesMax} bytes`);
}

/** `read()` of a body whose declared length is within `bytesMax` (else body_too_large, unread); a broken-off body is a refusal. */
async function readDeclared<T>(declaredBytes: number, bytesMax: number, read: () => Promise<T>): Promise<T> {
  checkDeclaredLength(declaredBytes, bytesMax);
  try {
    return await read();
  } catch (error) {
    throw brokenOff(error);
  }
}

/**
 * The next chunk of a request body. The stream fails when the client closes its connection
 * before the body's end (a reset, or fewer bytes than its Content-Length): that is the
 * client's doing, so it is a refusal of the request (400), not a bug. Thrown as anything else,
 * it reached the app's onInternalError, and `mutexd node` exited 70 (fail-stop): a remote kill
 * switch for anyone who can open a connection, before any MAC or token is checked.
 */
async function readChunk(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<ReadableStreamReadResult<Uint8Array>> {
  try {
    return await reader.read();
  } catch (error) {
    throw brokenOff(error);
  }
}

/** A body that broke off (see readChunk) as the refusal it is. */
export function brokenOff(error: unknown): RequestError {
  return new RequestError("bad_request", `the request's body could not be read (the client closed its connection?): ${(error as Error)?.message ?? String(error)}`);
}

/** One decoder for every body (stateless between calls: `decode` without `stream`). */
const UTF8 = new TextDecoder();

/** Reads the body as a JSON object of at most `bytesMax` bytes. An empty body is `{}`. */
export async function readJsonObject(c: Context, bytesMax: number): Promise<Record<string, unknown>> {
  return parseJsonObject(await readBodyBytes(c, bytesMax), bytesMax);
}

/** The body as text, at most `bytesMax` bytes of it (for requests between cluster members). */
export async function readBodyText(c: Context, bytesMax: number): Promise<string> {
  return UTF8.decode(await readBodyBytes(c, bytesMax));
}

/** The body's bytes as a JSON object (readJsonObject once read; the simulator calls it directly). */
export function parseJsonObject(bytes: Uint8Array, bytesMax: number): Record<string, unknown> {
  if (bytes.byteLength > bytesMax) throw new RequestError("body_too_large", `body is larger than ${bytesMax} bytes`);
  return parseJsonText(UTF8.decode(bytes));
}

/** A body's text (within its size limit) as a JSON object. An empty body is `{}`. */
export function parseJsonText(text: string): Record<string, unknown> {
  if (text.length === 0) return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new RequestError("bad_request", `malformed JSON: ${(error as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new RequestError("bad_request", "body must be a JSON object");
  }
  return value as Record<string, unknown>;
}

/** What a schema check (lib/wire/schema.ts `check`) returns. */
export type Checked<T> = { ok: true; value: T } | { ok: false; message: string };

/**
 * Whether `text` takes more than `bytesMax` bytes as UTF-8. A UTF-16 unit takes at most 3 bytes
 * (a pair of them 4, a lone surrogate 3 as U+FFFD), so a text of at most bytesMax / 3 units is
 * not encoded: a replication frame of a few hundred characters was copied whole only to be
 * counted (every append, on the backup).
 */
export function utf8LongerThan(text: string, bytesMax: number): boolean {
  if (text.length * 3 <= bytesMax) return false;
  return new TextEncoder().encode(text).byteLength > bytesMax;
}

/**
 * A request between cluster members (JSON text, at most `bytesMax`) that `check` (its
 * schema) accepts; anything else is a RequestError (bad_request, naming the field), so it
 * changes nothing.
 */
export function readPeerRequest<T>(text: string, bytesMax: number, check: (value: unknown) => Checked<T>): T {
  // Bytes, not characters: a body of multi-byte characters must not pass a character count.
  if (utf8LongerThan(text, bytesMax)) throw new RequestError("body_too_large", `request larger than ${bytesMax} bytes`);
  let value: Record<string, unknown>;
  try {
    value = decodePeerBody(text);
  } catch (error) {
    throw new RequestError("bad_request", (error as Error).message);
  }
  const checked = check(value);
  if (!checked.ok) throw new RequestError("bad_request", checked.message);
  return checked.value;
}
