/**
 * The dashboard's routes on every node (docs/dashboard.md):
 * - `GET /`: the page (page.ts), open like /v1/health: it holds no data; it asks for a token when
 *   the cluster has client tokens.
 * - `GET /v1/dashboard/node` (`read` on some name): this node's part of the picture: its role's
 *   state, the lock table summarised (lock servers), and its recent events (events.ts).
 * - `GET /v1/dashboard/locks?prefix=&after=&limit=` (`read` on some name; lock servers): the
 *   lock table by name, one page at a time, for the page's "browse by name".
 * - `GET /v1/dashboard/events` (`read` on some name): Server-Sent Events; every `intervalMs` one
 *   `snapshot` event with every member's part (this node's own, the others' read from their
 *   `/v1/dashboard/node` with the caller's Authorization header, `down` when one does not answer
 *   within `memberTimeoutMs`) and the cluster's HTTP addresses, so the page can move to another
 *   node when this one dies. A stream ends after `streamMs` (the page connects again) and at most
 *   `streamsMax` run at once (else 503), so a page left open costs a bounded share.
 * - CORS: only the cluster's own members' origins may read these routes from a page (the page of
 *   one node falls back to another node); preflights pass the token check (they carry none).
 */
import type { Context, Hono } from "hono";
import { streamSSE } from "hono/streaming";
import type { ClientAuth } from "../client_auth.ts";
import { callerOf } from "../caller.ts";
import { errorResponse, RequestError } from "../http_util.ts";
import * as v from "valibot";
import { check } from "../../lib/wire/schema.ts";
import type { LockView } from "../lock/status_view.ts";
import { DASHBOARD_PAGE } from "./page.ts";
import { RecentEvents, recordingLogger } from "./events.ts";
import { type ClusterConfig, type NodeConfig, nodeUrl } from "../config.ts";
import type { Logger } from "../log.ts";
import { fetchFor } from "../runtime.ts";

export interface DashboardMember {
  id: string;
  role: string;
  url: string;
}

export interface DashboardOptions {
  nodeId: string;
  role: string;
  /** Every member of the cluster file (this node too), by id, role and base URL. */
  members: () => readonly DashboardMember[];
  /** This node's role state (already limited in size: the lock table summarised). */
  state: (may: (name: string) => boolean) => unknown;
  events: RecentEvents;
  /** Reaches the other members (the cluster's TLS CA trusted). */
  fetch: (url: string, init?: RequestInit) => Promise<Response>;
  limits?: Partial<DashboardLimits>;
  /**
   * A lock server's table by name, one page at a time (`GET /v1/dashboard/locks`); absent on the
   * other roles, whose route then answers 404.
   */
  lockPage?: (query: LockPageQuery, may: (name: string) => boolean) => unknown;
  /** A stream that ended on an error (logged; the stream's place is given back). */
  onStreamError?: (error: Error) => void;
}

export interface DashboardLimits {
  intervalMs: number;
  streamMs: number;
  streamsMax: number;
  memberTimeoutMs: number;
}

export const DASHBOARD_LIMITS: DashboardLimits = { intervalMs: 500, streamMs: 300_000, streamsMax: 8, memberTimeoutMs: 1_000 };

/** What `GET /v1/dashboard/node` answers. */
export interface NodePart {
  id: string;
  role: string;
  state: unknown;
  events: ReturnType<RecentEvents["list"]>;
}

export function installDashboard(app: Hono, auth: ClientAuth, options: DashboardOptions): void {
  const limits = { ...DASHBOARD_LIMITS, ...options.limits };
  let streams = 0;
  // A part is built at most once per half interval per token, however many streams (here or on
  // other members) ask for it: a lock server's part walks its whole table. Bounded: one entry
  // per token of the cluster file (and one without tokens).
  const recentParts = new Map<string, { builtAtMs: number; part: NodePart }>();
  const part = (c: Context): NodePart => {
    const key = callerOf(c).token ?? "";
    const recent = recentParts.get(key);
    if (recent && performance.now() - recent.builtAtMs < limits.intervalMs / 2) return recent.part;
    const built = {
      id: options.nodeId,
      role: options.role,
      state: options.state((name) => auth.may(c, { level: "read", name })),
      events: options.events.list(),
    };
    recentParts.set(key, { builtAtMs: performance.now(), part: built });
    return built;
  };
  const cors = (c: Context) => {
    const origin = c.req.header("origin");
    if (origin === undefined || !options.members().some((m) => new URL(m.url).origin === origin)) return;
    c.header("access-control-allow-origin", origin);
    c.header("vary", "Origin");
  };

  app.get("/", (c) => c.html(DASHBOARD_PAGE));
  app.options("/v1/dashboard/*", (c) => {
    cors(c);
    c.header("access-control-allow-headers", "authorization");
    c.header("access-control-allow-methods", "GET");
    c.header("access-control-max-age", "600");
    return c.body(null, 204);
  });
  app.get("/v1/dashboard/node", (c) => {
    auth.require(c, { level: "read", on: "some" });
    cors(c);
    return c.json(part(c));
  });
  app.get("/v1/dashboard/locks", (c) => {
    auth.require(c, { level: "read", on: "some" });
    cors(c);
    if (!options.lockPage) return errorResponse(c, { code: "not_found", message: `${options.nodeId} is not a lock server` });
    const checked = check(lockPageQuery, c.req.query(), "query");
    if (!checked.ok) throw new RequestError("bad_request", checked.message);
    return c.json(options.lockPage(checked.value, (name) => auth.may(c, { level: "read", name })));
  });
  app.get("/v1/dashboard/events", (c) => {
    auth.require(c, { level: "read", on: "some" });
    if (streams >= limits.streamsMax) {
      return errorResponse(c, { code: "limit_reached", message: `${limits.streamsMax} dashboard streams run already; try later` });
    }
    cors(c);
    const authorization = c.req.header("authorization");
    const read = async (member: DashboardMember): Promise<NodePart | { id: string; role: string; down: string }> => {
      if (member.id === options.nodeId) return part(c);
      try {
        const answer = await options.fetch(`${member.url}/v1/dashboard/node`, {
          headers: authorization === undefined ? {} : { authorization },
          signal: AbortSignal.timeout(limits.memberTimeoutMs),
        });
        if (!answer.ok) return { id: member.id, role: member.role, down: `HTTP ${answer.status}` };
        return await answer.json() as NodePart;
      } catch (error) {
        return { id: member.id, role: member.role, down: (error as Error).message ?? String(error) };
      }
    };
    streams++;
    return streamSSE(c, async (stream) => {
      const endAtMs = performance.now() + limits.streamMs;
      try {
        // Bounded by streamMs: every round sleeps intervalMs.
        while (!stream.aborted && performance.now() < endAtMs) {
          const members = options.members();
          const parts = await Promise.all(members.map(read));
          const snapshot = { self: options.nodeId, members, parts, sentAtMs: Date.now() };
          await stream.writeSSE({ event: "snapshot", data: JSON.stringify(snapshot) });
          await stream.sleep(limits.intervalMs);
        }
      } finally {
        streams--;
      }
    }, (error) => {
      // A write to a connection that broke off; the finally above gives the stream's place back.
      options.onStreamError?.(error);
      return Promise.resolve();
    });
  });
}

/** Locks shown per list: a summary, so a table of 10,000 locks costs the page no more. */
export const LOCK_ROWS_MAX = 15;

/** The lock table as the dashboard shows it: counts, the hottest by wait, the longest held. */
export function summarizeLocks(locks: readonly LockView[], may: (name: string) => boolean) {
  const readable = locks.filter((lock) => may(lock.name));
  const waitMs = (lock: LockView) => lock.waiters.reduce((most, w) => Math.max(most, w.waitingForMs), 0);
  const heldMs = (lock: LockView) => lock.holders.reduce((most, h) => Math.max(most, h.heldForMs), 0);
  const top = (score: (lock: LockView) => number) =>
    readable.filter((lock) => score(lock) > 0).sort((a, b) => score(b) - score(a)).slice(0, LOCK_ROWS_MAX).map((lock) => ({
      name: lock.name,
      holders: lock.holders.slice(0, 4).map((h) => ({ owner: h.owner ?? h.session, token: h.token, mode: h.mode, heldForMs: h.heldForMs })),
      holderCount: lock.holders.length,
      waiterCount: lock.waiters.length,
      longestWaitMs: waitMs(lock),
      longestHeldMs: heldMs(lock),
    }));
  return {
    lockCount: readable.length,
    heldCount: readable.filter((lock) => lock.holders.length > 0).length,
    waiterCount: readable.reduce((sum, lock) => sum + lock.waiters.length, 0),
    hottest: top(waitMs),
    longestHeld: top(heldMs),
  };
}

/** Events a node keeps for the timeline (about a minute of a busy failover's lines). */
export const RECENT_EVENTS_MAX = 200;

/**
 * What every starter does for the dashboard: a timeline buffer fed by `log` (use the returned
 * logger from then on), and the routes installed with the cluster file's members.
 */
export function dashboardOf(cluster: ClusterConfig, node: NodeConfig, log: Logger) {
  const events = new RecentEvents(node.id, RECENT_EVENTS_MAX);
  let members = membersOf(cluster);
  return {
    log: recordingLogger(log, events),
    /** The cluster file was read again (SIGHUP): the page is told the new members. */
    reload(reloaded: ClusterConfig) {
      members = membersOf(reloaded);
    },
    install(app: Hono, auth: ClientAuth, state: DashboardOptions["state"], lockPage?: DashboardOptions["lockPage"]) {
      installDashboard(app, auth, {
        lockPage,
        nodeId: node.id,
        role: node.role,
        members: () => members,
        state,
        events,
        fetch: fetchFor(cluster.tlsCa),
        onStreamError: (error) => log.event("dashboardStreamEnded", { message: error.message }),
      });
    },
  };
}

function membersOf(cluster: ClusterConfig): DashboardMember[] {
  return cluster.nodes.map((n) => ({ id: n.id, role: n.role, url: nodeUrl(n) }));
}

/** Locks per page of `GET /v1/dashboard/locks`, at most. */
export const LOCK_PAGE_MAX = 100;
/** Characters of a prefix or cursor: a lock name's limit (settings.lockNameLengthMax's default). */
const LOCK_QUERY_CHARS_MAX = 256;

/** `?prefix=&after=&limit=`: names starting with `prefix`, after the name `after`, `limit` of them. */
const lockPageQuery = v.strictObject({
  prefix: v.optional(v.pipe(v.string(), v.maxLength(LOCK_QUERY_CHARS_MAX)), ""),
  after: v.optional(v.pipe(v.string(), v.maxLength(LOCK_QUERY_CHARS_MAX)), ""),
  limit: v.optional(v.pipe(v.string(), v.regex(/^[1-9][0-9]{0,2}$/, "a count 1..100"), v.transform(Number), v.maxValue(LOCK_PAGE_MAX)), "50"),
});
export type LockPageQuery = v.InferOutput<typeof lockPageQuery>;

/**
 * One page of the lock table, by name: the locks after `after` whose names start with `prefix`
 * and that the token may read, each with every holder and its first waiters; `next` is the
 * cursor of the following page (null at the end).
 */
export function lockPage(locks: readonly LockView[], query: LockPageQuery, may: (name: string) => boolean) {
  const matching = locks.filter((lock) => lock.name.startsWith(query.prefix) && lock.name > query.after && may(lock.name));
  matching.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const page = matching.slice(0, query.limit);
  return {
    matching: matching.length,
    locks: page.map((lock) => ({
      name: lock.name,
      holders: lock.holders.map((h) => ({ owner: h.owner ?? h.session, token: h.token, mode: h.mode, heldForMs: h.heldForMs })),
      waiters: lock.waiters.slice(0, WAITERS_SHOWN_MAX).map((w) => ({ owner: w.owner ?? w.session, mode: w.mode, waitingForMs: w.waitingForMs })),
      waiterCount: lock.waiters.length,
    })),
    next: matching.length > page.length ? page[page.length - 1].name : null,
  };
}

/** Waiters listed per lock of a page (the count says how many more). */
const WAITERS_SHOWN_MAX = 10;
