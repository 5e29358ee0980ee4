/**
 * Client bearer tokens (the cluster file's `[[tokens]]`, cluster/config.ts) and their permissions
 * per lock-name prefix. The Hono layer authenticates here; the simulator calls the route handlers
 * below it and stays unauthenticated (its network is trusted).
 *
 * - `ClientAuth.middleware` runs before every route: `/v1/health` stays open (liveness probes),
 *   so does `/` (the dashboard's page, which holds no data) and a CORS preflight of `/v1/dashboard/…`,
 *   the peer routes (`/v1/peer`, `/v1/peer/stream`, `/v1/arbiter`, `/v1/ring/peer/…`) are left to the cluster
 *   secret's authentication, and every other request must carry `Authorization: Bearer X` with X
 *   a token's secret: else 401 `unauthorized`. The known token is recorded as the request's
 *   Caller (cluster/caller.ts) for the per-token limits.
 * - The route then asks `require(c, access)`: the permission it needs on the name it acts on
 *   (known once the body is parsed), or on some name; else 403 `forbidden`, saying what the
 *   token may do. Listings keep only the names the token may read (`may`).
 *
 * Without tokens in the cluster file the API is open: every request is ANONYMOUS and allowed.
 * Secrets are compared in constant time: the SHA-256 of the presented value against the SHA-256
 * of EVERY token's secret with `timingSafeEqual`, no early exit, so neither which token matched
 * nor how much of a prefix matched shows in the time. A secret is never logged or echoed.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { Context, MiddlewareHandler } from "hono";
import { apiError, ERROR_STATUS } from "../lib/wire/errors.ts";
import { setCaller } from "./caller.ts";
import type { Permission, TokenConfig } from "./config.ts";
import { RequestError } from "./http_util.ts";
import type { SecurityLog } from "./security_log.ts";

/**
 * What a route needs: `level` on `name`, or, without a name, on some name (the token has an
 * entry allowing `level` on any prefix), or, with `every`, on every name (an entry with prefix "").
 */
export type Access =
  | { level: Permission; name: string }
  | { level: Permission; on: "some" | "every" };

/** The reserved name of the ring's critical section (lock names cannot contain "@"). */
export const RING_SECTION_NAME = "@ring";

/** Each level includes the ones below it: admin ⊇ lock ⊇ read. */
const RANK: Record<Permission, number> = { read: 1, lock: 2, admin: 3 };

/** Paths that carry no client credentials: liveness, and peer traffic (the cluster secret's). */
export function isUncheckedPath(path: string): boolean {
  return path === "/" || path === "/v1/health" || path === "/v1/peer" || path === "/v1/peer/stream" || path === "/v1/arbiter" || path.startsWith("/v1/ring/peer/");
}

/** The highest level one permission entry allows. */
function entryRank(allow: readonly Permission[]): number {
  return Math.max(0, ...allow.map((p) => RANK[p]));
}

/** Whether `token` has `access`: the union of its entries that apply to the name. */
export function allows(token: Pick<TokenConfig, "permissions">, access: Access): boolean {
  const need = RANK[access.level];
  return token.permissions.some((entry) => {
    if (entryRank(entry.allow) < need) return false;
    if ("name" in access) return access.name.startsWith(entry.prefix);
    return access.on === "some" || entry.prefix === "";
  });
}

/** "read \"\", lock \"ci/\"": what a token may do, for a 403's message. */
export function describePermissions(token: Pick<TokenConfig, "permissions">): string {
  return token.permissions.map((e) => `${e.allow.reduce((a, b) => (RANK[b] > RANK[a] ? b : a))} ${JSON.stringify(e.prefix)}`).join(", ");
}

/** The name is the caller's own input, not yet checked: shortened for the message and the log. */
const NAME_SHOWN_MAX = 256;

function describeAccess(access: Access): string {
  if ("name" in access) return `${access.level} ${access.name.length > NAME_SHOWN_MAX ? `${access.name.slice(0, NAME_SHOWN_MAX)}…` : access.name}`;
  return access.on === "every" ? `${access.level} every name (prefix "")` : `${access.level} any name`;
}

/** The request's authenticated token (a TokenConfig), or OPEN without tokens. */
const GRANT_KEY = "mutexdClientGrant";
const OPEN = "open" as const;
type Grant = TokenConfig | typeof OPEN;

function setGrant(c: Context, grant: Grant): void {
  (c.set as (key: string, value: unknown) => void)(GRANT_KEY, grant);
}

const sha256 = (text: string): Uint8Array => createHash("sha256").update(text, "utf8").digest();

/** Compares two 32-byte digests; `timingSafeEqual` by default (a test counts the calls). */
export type DigestEqual = (a: Uint8Array, b: Uint8Array) => boolean;

export class ClientAuth {
  private readonly digests: { token: TokenConfig; digest: Uint8Array }[];

  /**
   * `tokens` from the cluster file (none: open); refusals are counted and logged on `security`
   * (`clientUnauthorized`, `clientForbidden`).
   */
  constructor(
    tokens: readonly TokenConfig[],
    private readonly security: SecurityLog | null,
    private readonly equal: DigestEqual = (a, b) => timingSafeEqual(a, b),
  ) {
    this.digests = tokens.map((token) => ({ token, digest: sha256(token.secret) }));
  }

  /** No tokens: every request is anonymous and allowed (the default of the apps). */
  static open(): ClientAuth {
    return new ClientAuth([], null);
  }

  get enabled(): boolean {
    return this.digests.length > 0;
  }

  /** The token whose secret is `presented`, comparing against every token (no early exit). */
  private find(presented: string): TokenConfig | undefined {
    const digest = sha256(presented);
    let found: TokenConfig | undefined;
    for (const entry of this.digests) {
      if (this.equal(digest, entry.digest) && found === undefined) found = entry.token;
    }
    return found;
  }

  /** Authenticates every request but the unchecked paths (see the file's comment). */
  readonly middleware: MiddlewareHandler = async (c, next) => {
    if (!this.enabled) {
      setGrant(c, OPEN);
      return await next();
    }
    if (isUncheckedPath(c.req.path)) return await next();
    // A browser's CORS preflight carries no credentials by design; the dashboard's answers it
    // with headers only (cluster/dashboard/routes.ts).
    if (c.req.method === "OPTIONS" && c.req.path.startsWith("/v1/dashboard/")) return await next();
    const header = c.req.header("authorization");
    const match = header === undefined ? null : /^Bearer[ ]+(\S+)\s*$/i.exec(header);
    const token = match ? this.find(match[1]) : undefined;
    if (!token) {
      const message = header === undefined
        ? "missing bearer token: this cluster requires client tokens (Authorization: Bearer …)"
        : match ? "unknown bearer token" : "malformed Authorization header: expected \"Bearer <token>\"";
      this.security?.refused("clientUnauthorized", "client", { method: c.req.method, path: c.req.path.slice(0, 256), why: header === undefined ? "missing" : match ? "unknown" : "malformed" });
      return c.json(apiError("unauthorized", message), ERROR_STATUS.unauthorized, { "www-authenticate": 'Bearer realm="mutexd"' });
    }
    setGrant(c, token);
    setCaller(c, { token: token.name, sessionsMax: token.sessionsMax, waitersMax: token.waitersMax });
    return await next();
  };

  /** The request's grant; a route behind no middleware is a bug (fail closed, never open). */
  private grantOf(c: Context): Grant {
    const grant = (c.get as (key: string) => unknown)(GRANT_KEY) as Grant | undefined;
    if (grant === undefined) throw new Error(`no client authentication ran for ${c.req.method} ${c.req.path}`);
    return grant;
  }

  /** Whether the request's caller has `access` (always, without tokens). */
  may(c: Context, access: Access): boolean {
    const grant = this.grantOf(c);
    return grant === OPEN || allows(grant, access);
  }

  /** Throws 403 `forbidden` (counted, logged) unless the caller has `access`. */
  require(c: Context, access: Access): void {
    if (this.may(c, access)) return;
    const token = this.grantOf(c) as TokenConfig;
    this.security?.refused("clientForbidden", token.name, { method: c.req.method, path: c.req.path.slice(0, 256), need: describeAccess(access) });
    throw new RequestError("forbidden", `token ${token.name} may not ${describeAccess(access)}; it may ${describePermissions(token)}`);
  }
}
