/**
 * The ring's HTTP server in the simulator: the routes of cluster/ring/api.ts (`ringRoutes` of a
 * ring node, `viewRoute` of the arbiter: the same handlers the binaries' Hono apps serve) behind
 * Hono's own router and the API's own body checks (`parseJsonObject`, `errorAnswer`). What the simulator does not run is Hono's
 * request plumbing (Request/Response objects, whose bodies are read asynchronously): the request
 * arrives as method, path and JSON text, and the answer leaves as status and JSON text.
 */
import { TrieRouter } from "hono/router/trie-router";
import { errorAnswer, type RingAnswer, type RingRoute } from "../../../cluster/ring/api.ts";
import { parseJsonObject } from "../../../cluster/http_util.ts";
import { apiError } from "../../../lib/wire/errors.ts";

/** A status and a body as JSON text: what the wire carries back. */
export interface HttpAnswerText {
  status: number;
  body: string;
}

export class SimRingHttp {
  private readonly router = new TrieRouter<RingRoute>();
  /** Serves `routes` (a ring node's `ringRoutes`, the arbiter's `viewRoute`); `onInternal` sees what they throw. */
  constructor(routes: readonly RingRoute[], private readonly onInternal: (error: Error) => void) {
    for (const route of routes) this.router.add(route.method, route.path, route);
  }

  /** Answers one request through `reply`, once, now or later (a long-poll). */
  serve(method: string, pathAndQuery: string, bodyText: string | undefined, reply: (answer: HttpAnswerText) => void): void {
    const send = (answer: RingAnswer) => reply({ status: answer.status, body: JSON.stringify(answer.body) });
    const url = new URL(pathAndQuery, "http://ring.sim");
    const [matches] = this.router.match(method, url.pathname);
    if (matches.length === 0) {
      // As installErrorHandlers' notFound.
      return send({ status: 404, body: apiError("not_found", `no route ${method} ${url.pathname}`) });
    }
    const [route, params] = matches[0] as [RingRoute, Record<string, string>];
    try {
      const body = method === "POST" ? parseJsonObject(new TextEncoder().encode(bodyText ?? ""), route.bodyBytesMax) : {};
      route.handle({ body, query: (name) => url.searchParams.get(name) ?? undefined, param: (name) => params[name] }, send);
    } catch (error) {
      send(errorAnswer(error as Error, this.onInternal));
    }
  }
}

