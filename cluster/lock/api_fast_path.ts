/** The lock API's fast path: its client routes without a path parameter, answered without Hono. */
import type { Hono } from "hono";
import { type FastRoute, installPostFastPath } from "../post_fast_path.ts";
import { errorAnswer } from "./api_answers.ts";
import { type LockRoute, runRoute } from "./api_routes.ts";
import type { LockApiOptions } from "./api_options.ts";

/**
 * The client routes without a path parameter (open a session, enter, leave, force-release)
 * answered without Hono (cluster/post_fast_path.ts): only without client tokens (`auth`: it
 * refuses an app with tokens), each body within `bodyBytesMax` and checked by the route's schema (runRoute).
 */
export function installFastPath(app: Hono, routes: readonly LockRoute[], options: LockApiOptions, auth: { readonly enabled: boolean }): void {
  const bytesMax = options.settings.bodyBytesMax;
  const fast = new Map<string, FastRoute>(
    routes.filter((r) => r.method === "POST" && !r.path.includes(":")).map((route) => [route.path, {
      bytesMax,
      handle: (input, _request, reply) => runRoute(route, {}, input, options, reply),
    }]),
  );
  installPostFastPath(app, fast, (error) => errorAnswer(error, options), auth);
}
