/**
 * The fast path of the client APIs (the lock server's and the ring node's): their client POST
 * routes without a path parameter answered without Hono's routing, context and middleware, which
 * cost a lone primary about a third of its CPU per request (docs/bench.md, "The lone primary's
 * HTTP path") and a ring node 12–28% of its CPU per section (docs/bench.md, "Ring speed"). Only when
 * the app has no client tokens: the bearer middleware then has nothing to check. The route's work
 * is the same as through Hono: the body read within the route's limit, parsed as a JSON object,
 * handed to the route's handler, which checks it against its schema; the same answers and errors,
 * with Hono's content type and the wire format header. A body without a declared length (chunked)
 * and every other request go to Hono. `app.fetch` is replaced, so `app.request` (the tests) takes
 * it too.
 */
import type { Hono } from "hono";
import { brokenOff, checkDeclaredLength, declaredLength, parseJsonText, RequestError } from "./http_util.ts";
import { FORMAT_HEADER, formatText, WIRE_FORMAT } from "../lib/wire/version.ts";
import { jsonResponder } from "./runtime.ts";

/** An answer: the status and the JSON body. */
export interface JsonAnswer {
  status: number;
  body: unknown;
}

/** A route the fast path answers: `POST` on its path. */
export interface FastRoute {
  /** Bodies above this many bytes get 413, refused before they are read. */
  bytesMax: number;
  /**
   * Answers the parsed body (`request`: the raw request, for its signal or headers) through
   * `reply`, once, now or later. What it throws is answered by the app's `errorAnswer`.
   */
  handle(input: Record<string, unknown>, request: Request, reply: (answer: JsonAnswer) => void): void;
}

/**
 * Answers `POST` on the paths of `routes` without Hono when the request declares its length;
 * `errorAnswer`: a thrown error as the app's error handler answers it. `auth`: the app's client
 * authentication, which this path skips: refused (a throw at start-up) when it has tokens, so a
 * caller that forgets to check fails closed.
 */
export function installPostFastPath(app: Hono, routes: ReadonlyMap<string, FastRoute>, errorAnswer: (error: Error) => JsonAnswer, auth: { readonly enabled: boolean }): void {
  if (auth.enabled) throw new Error("the fast path skips client authentication: only for an app without client tokens");
  const honoFetch = app.fetch;
  app.fetch = (request, env, executionCtx) => {
    const route = request.method === "POST" ? routes.get(pathOf(request.url)) : undefined;
    const declared = route === undefined ? null : request.headers.get("content-length");
    if (route === undefined || declared === null) return honoFetch(request, env, executionCtx);
    return answerFast(route, request, declared, errorAnswer);
  };
}

/**
 * `contentLength`: the request's Content-Length header (declaredLength reads it, as readBodyBytes
 * does); a length past the route's `bytesMax` is refused before the body is read, which the
 * runtime then reads whole as text. Promise callbacks on the body's own promise rather than async
 * functions: two promises per request, the body's and its `then`.
 */
function answerFast(route: FastRoute, request: Request, contentLength: string, errorAnswer: (error: Error) => JsonAnswer): Promise<Response> {
  let text: Promise<string>;
  try {
    checkDeclaredLength(declaredLength(contentLength), route.bytesMax);
    text = request.text();
  } catch (error) {
    return Promise.resolve(jsonAnswer(errorAnswer(error instanceof RequestError ? error : brokenOff(error))));
  }
  return text.then((body) => answerBody(route, request, body, errorAnswer), (error) => jsonAnswer(errorAnswer(brokenOff(error))));
}

/** The answer to a fast-path body's text: at once when decided within the call (a grant, a release), else promised. */
function answerBody(route: FastRoute, request: Request, text: string, errorAnswer: (error: Error) => JsonAnswer): Response | Promise<Response> {
  let now: JsonAnswer | undefined;
  let later: ((answer: JsonAnswer) => void) | undefined;
  try {
    // The runtime reads no more than the declared length over HTTP; an in-process request
    // (app.request) may carry a longer body: refused as Hono's read refuses it (UTF-16 units
    // are never more than the bytes, so this refuses nothing within the limit).
    checkDeclaredLength(text.length, route.bytesMax);
    // The first reply is the answer, as through Hono (its route awaits a promise): a handler that
    // replied and then threw keeps its reply; a throw before any reply is the answer (onError).
    route.handle(parseJsonText(text), request, (answer) => (later ? later(answer) : (now ??= answer)));
  } catch (error) {
    now ??= errorAnswer(error as Error);
  }
  if (now) return jsonAnswer(now);
  return new Promise<JsonAnswer>((resolve) => (later = resolve)).then(jsonAnswer);
}

/**
 * A fast-path answer as Hono's route answers it: the same body, status and headers (c.json's
 * content type and answerFormatMiddleware's format header; lock_fast_path_test and
 * ring_fast_path_test compare them byte for byte), made the runtime's cheapest way (runtime.ts
 * jsonResponder).
 */
const fastAnswer = jsonResponder({ "content-type": "application/json", [FORMAT_HEADER]: formatText(WIRE_FORMAT) });

function jsonAnswer(answer: JsonAnswer): Response {
  return fastAnswer(answer.body, answer.status);
}

/** The path of an absolute request URL (`http://host:port/path?query` → `/path`), as Hono routes it. */
function pathOf(url: string): string {
  const start = url.indexOf("/", url.indexOf("://") + 3);
  if (start < 0) return "/";
  const query = url.indexOf("?", start);
  return query < 0 ? url.slice(start) : url.slice(start, query);
}
