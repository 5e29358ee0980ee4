/**
 * Request decoding and error answers shared by every Hono app of mutexd: bodies are size-limited
 * JSON objects, fields are checked by type, and every failure is `{ error: { code, message } }`
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
    if (error instanceof RequestError) return errorResponse(c, { code: error.code, message: error.message });
    onInternal(error);
    return errorResponse(c, { code: "internal", message: `internal error: ${error.message}` });
  });
}

/**
 * The body's bytes, at most `bytesMax` of them, else body_too_large. The size is checked on
 * the bytes read, not only on Content-Length, which a client may omit.
 */
async function readBodyBytes(c: Context, bytesMax: number): Promise<Uint8Array> {
  const declared = Number(c.req.header("content-length") ?? "0");
  if (declared > bytesMax) throw new RequestError("body_too_large", `body is larger than ${bytesMax} bytes`);
  const bytes = new Uint8Array(await c.req.arrayBuffer());
  if (bytes.byteLength > bytesMax) throw new RequestError("body_too_large", `body is larger than ${bytesMax} bytes`);
  return bytes;
}

/**
 * Reads a message between cluster members (superjson of an object, see peer_transport.ts) of
 * at most `bytesMax` bytes; anything else is bad_request. The caller checks its shape.
 */
export async function readPeerBody(c: Context, bytesMax: number): Promise<Record<string, unknown>> {
  const bytes = await readBodyBytes(c, bytesMax);
  try {
    return decodePeerBody(new TextDecoder().decode(bytes));
  } catch (error) {
    throw new RequestError("bad_request", (error as Error).message);
  }
}

/** Reads the body as a JSON object of at most `bytesMax` bytes. An empty body is `{}`. */
export async function readJsonObject(c: Context, bytesMax: number): Promise<Record<string, unknown>> {
  const bytes = await readBodyBytes(c, bytesMax);
  if (bytes.byteLength === 0) return {};
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(bytes));
  } catch (error) {
    throw new RequestError("bad_request", `malformed JSON: ${(error as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new RequestError("bad_request", "body must be a JSON object");
  }
  return value as Record<string, unknown>;
}

/** Field readers: each names the field in its error. */
export const field = {
  string(body: Record<string, unknown>, key: string): string {
    const value = body[key];
    if (typeof value !== "string" || value.length === 0) {
      throw new RequestError("bad_request", `${key} must be a non-empty string`);
    }
    return value;
  },
  optionalString(body: Record<string, unknown>, key: string): string | undefined {
    return body[key] === undefined ? undefined : field.string(body, key);
  },
  integer(body: Record<string, unknown>, key: string, fallback?: number): number {
    const value = body[key] ?? fallback;
    if (typeof value !== "number" || !Number.isSafeInteger(value)) {
      throw new RequestError("bad_request", `${key} must be an integer`);
    }
    return value;
  },
  optionalInteger(body: Record<string, unknown>, key: string): number | undefined {
    return body[key] === undefined ? undefined : field.integer(body, key);
  },
  oneOf<T extends string>(body: Record<string, unknown>, key: string, allowed: readonly T[], fallback: T): T {
    const value = body[key] ?? fallback;
    if (typeof value !== "string" || !(allowed as readonly string[]).includes(value)) {
      throw new RequestError("bad_request", `${key} must be one of ${allowed.join(", ")}`);
    }
    return value as T;
  },
  boolean(body: Record<string, unknown>, key: string, fallback: boolean): boolean {
    const value = body[key] ?? fallback;
    if (typeof value !== "boolean") throw new RequestError("bad_request", `${key} must be true or false`);
    return value;
  },
};

/** Rejects fields the endpoint does not know, so a typo is an error and not a silent default. */
export function onlyFields(body: Record<string, unknown>, allowed: readonly string[]): void {
  for (const key of Object.keys(body)) {
    if (!allowed.includes(key)) {
      throw new RequestError("bad_request", `unknown field ${key} (allowed: ${allowed.join(", ")})`);
    }
  }
}
