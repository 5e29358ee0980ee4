/** The lock API's fast path: its client routes without a path parameter, answered without Hono. */
import type { Hono } from "hono";
import { brokenOff, checkDeclaredLength, declaredLength, parseJsonText, RequestError } from "../http_util.ts";
import { FORMAT_HEADER, formatText, WIRE_FORMAT } from "../../lib/wire/version.ts";
import { jsonResponder } from "../runtime.ts";
import { type ApiAnswer, errorAnswer } from "./api_answers.ts";
import { type LockRoute, runRoute } from "./api_routes.ts";
import type { LockApiOptions } from "./api_options.ts";

/**
 * The client routes without a path parameter (open a session, enter, leave, force-release)
 * answered without Hono's routing, context and middleware, which cost a lone primary about a
 * third of its CPU per request (docs/bench.md, "The lone primary's HTTP path"). Only without
 * client tokens: the bearer middleware then has nothing to check, so the route's work is the
 * same as through Hono: the body read within `bodyBytesMax`, parsed, checked by the route's schema
 * (runRoute), the same answers and errors. A body without a declared length (chunked) and every
 * other request go to Hono. `app.fetch` is replaced, so `app.request` (the tests) takes it too.
 */
export function installFastPath(app: Hono, routes: readonly LockRoute[], options: LockApiOptions): void {
  const fast = new Map(routes.filter((r) => r.method === "POST" && !r.path.includes(":")).map((r) => [r.path, r]));
  const bytesMax = options.settings.bodyBytesMax;
  const honoFetch = app.fetch;
  app.fetch = (request, env, executionCtx) => {
    const route = request.method === "POST" ? fast.get(pathOf(request.url)) : undefined;
    const declared = route === undefined ? null : request.headers.get("content-length");
    if (route === undefined || declared === null) return honoFetch(request, env, executionCtx);
    return answerFast(route, request, declared, bytesMax, options);
  };
}

/**
 * `contentLength`: the request's Content-Length header (declaredLength reads it, as readBodyBytes
 * does); a length past `bytesMax` is refused before the body is read, which the runtime then reads
 * whole as text. Promise callbacks on the body's own promise rather than async functions: two
 * promises per request, the body's and its `then`.
 */
function answerFast(route: LockRoute, request: Request, contentLength: string, bytesMax: number, options: LockApiOptions): Promise<Response> {
  let text: Promise<string>;
  try {
    checkDeclaredLength(declaredLength(contentLength), bytesMax);
    text = request.text();
  } catch (error) {
    return Promise.resolve(jsonAnswer(errorAnswer(error instanceof RequestError ? error : brokenOff(error), options)));
  }
  return text.then((body) => answerBody(route, body, options), (error) => jsonAnswer(errorAnswer(brokenOff(error), options)));
}

/** The answer to a fast-path body's text: at once when decided within the call (a grant, a release), else promised. */
function answerBody(route: LockRoute, text: string, options: LockApiOptions): Response | Promise<Response> {
  let input: Record<string, unknown>;
  try {
    input = parseJsonText(text);
  } catch (error) {
    return jsonAnswer(errorAnswer(error as Error, options));
  }
  let now: ApiAnswer | undefined;
  let later: ((answer: ApiAnswer) => void) | undefined;
  runRoute(route, {}, input, options, (answer) => (later ? later(answer) : (now = answer)));
  if (now) return jsonAnswer(now);
  return new Promise<ApiAnswer>((resolve) => (later = resolve)).then(jsonAnswer);
}

/**
 * A fast-path answer as Hono's route answers it: the same body, status and headers (c.json's
 * content type and answerFormatMiddleware's format header; lock_fast_path_test compares them byte
 * for byte), made the runtime's cheapest way (runtime.ts jsonResponder).
 */
const fastAnswer = jsonResponder({ "content-type": "application/json", [FORMAT_HEADER]: formatText(WIRE_FORMAT) });

function jsonAnswer(answer: ApiAnswer): Response {
  return fastAnswer(answer.body, answer.status);
}

/** The path of an absolute request URL (`http://host:port/path?query` → `/path`), as Hono routes it. */
function pathOf(url: string): string {
  const start = url.indexOf("/", url.indexOf("://") + 3);
  if (start < 0) return "/";
  const query = url.indexOf("?", start);
  return query < 0 ? url.slice(start) : url.slice(start, query);
}
