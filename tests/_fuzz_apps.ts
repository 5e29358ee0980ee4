/**
 * In-process nodes for the fuzzers (tests/fuzz_*_test.ts): a lock server's Hono app on a real
 * LockService (manual clock, real timers with a 1 ms long-poll so a waiting enter answers at
 * once), a primary/backup/arbiter trio wired in memory, and what every fuzzer checks of an
 * answer. Not a test file.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { type Clock, manualClock } from "../cluster/clock.ts";
import { soloLockService } from "./_lock_service.ts";
import { ArbiterCore, type ArbiterState } from "../lib/core/arbiter/arbiter.ts";
import { answerArbiter, type ArbiterPorts } from "../cluster/arbiter/server.ts";
import { createLockApp } from "../cluster/lock/api.ts";
import type { LockApiOptions } from "../cluster/lock/api_options.ts";
import { answerPeer } from "../cluster/lock/api_peer.ts";
import type { MiddlewareHandler } from "hono";
import { readBodyBytes } from "../cluster/http_util.ts";
import { peerAuthMiddleware } from "../cluster/peer_auth.ts";
import { type PeerKey, peerKey } from "../cluster/peer_mac.ts";
import { PeerSigner } from "../cluster/peer_signer.ts";
import { PeerVerifier } from "../cluster/peer_verifier.ts";
import type { SecurityLog } from "../cluster/security_log.ts";
import { decodePeerBody, encodePeerBody } from "../cluster/peer_transport.ts";
import { LockService, type PeerSender } from "../cluster/lock/service.ts";
import { memoryLogger } from "../cluster/log.ts";
import { realTimers, type Timers } from "../cluster/timers.ts";
import { DEFAULT_SETTINGS, type Settings } from "../lib/settings.ts";
import { ERROR_STATUS } from "../lib/wire/errors.ts";
import { contentType, hostileString, mutatedObject, nonObjectText } from "./_fuzz.ts";

/** Small limits, so hostile bodies reach them: 4 KiB bodies, 1 ms long-polls, 8 sessions. */
export const FUZZ_LOCK_SETTINGS: Settings = { ...DEFAULT_SETTINGS, bodyBytesMax: 4_096, peerBodyBytesMax: 65_536, longPollMaxMs: 1, sessionsMax: 8 };

/** One request as a fuzzer sends it: `body` as text or bytes, `contentType` as claimed (or none). */
export interface FuzzRequest {
  method: string;
  path: string;
  body?: string | Uint8Array;
  contentType?: string;
  /** How the fuzzer made the body: a mutated valid one, raw bytes, an oversized one, or none. */
  shape?: "mutated" | "raw" | "oversized" | "none";
}

/** What came back: the status and the body's text. */
export interface FuzzAnswer {
  status: number;
  text: string;
}

/** A Hono app (what `app.request` needs of it), or a real server's base URL. */
export type FuzzApp = { request(path: string, init: RequestInit): Response | Promise<Response> } | string;

/** Sends `request` to a Hono app (`app.request`), or to a real server when `app` is a base URL. */
export async function send(app: FuzzApp, request: FuzzRequest, headers: Record<string, string> = {}): Promise<FuzzAnswer> {
  const init: RequestInit = {
    method: request.method,
    headers: { ...(request.contentType === undefined ? {} : { "content-type": request.contentType }), ...headers },
    body: request.method === "GET" || request.method === "HEAD" ? undefined : (request.body as BodyInit | undefined),
  };
  const response = typeof app === "string" ? await fetch(`${app}${request.path}`, { ...init, signal: AbortSignal.timeout(10_000) }) : await app.request(request.path, init);
  return { status: response.status, text: await response.text() };
}

/** How a peer request from member `from` reaches member `to`'s app (plain, signed, forged: fuzz_peer_test.ts). */
export type PeerSend = (app: FuzzApp, from: string, to: string, request: FuzzRequest) => Promise<FuzzAnswer>;

/** A peer request as it is, without a MAC (a cluster without a secret, or a forger without the key). */
export const plainPeerSend: PeerSend = (app, _from, _to, request) => send(app, request);

/** The fuzzers' cluster secret (tests only) and the peer key derived from it. */
export const FUZZ_SECRET = "fuzz-cluster-secret-of-at-least-32-characters";
export const FUZZ_PEER_KEY = await peerKey(FUZZ_SECRET);

/**
 * Peer authentication as a node with FUZZ_SECRET serves it (startPeerAuth's middleware, built
 * here without its await): member `self` of `members`, refusals counted in `security`.
 */
export function fuzzPeerAuth(self: string, members: readonly string[], security: SecurityLog, bodyBytesMax: number): MiddlewareHandler {
  const verifier = new PeerVerifier(FUZZ_PEER_KEY, self, (id) => members.includes(id));
  return peerAuthMiddleware(verifier, security, (c) => readBodyBytes(c, bodyBytesMax));
}

/**
 * Peer requests signed by a PeerSigner (cluster/peer_auth.ts) as the members send them: one
 * signer per app and sender, so a nonce taken after a challenge lasts. `key` may be another
 * secret's; `signedFor` names another receiver in the MAC than the one it goes to; `transit`
 * changes a request after it was signed (a tampering network). A member sends text: a body of
 * bytes goes as their UTF-8 decoding. `lastSent` is the last request as sent (to replay it).
 */
export class SigningSender {
  private readonly signers = new Map<FuzzApp, Map<string, PeerSigner>>();
  /** The last request sent and the answer as it came (before the signer checked its MAC). */
  lastSent?: { url: string; init: RequestInit; answer: FuzzAnswer };

  constructor(private readonly options: { key?: PeerKey; signedFor?: string; transit?: (init: RequestInit) => RequestInit } = {}) {}

  /**
   * Sends `request` signed. A signer throws on an answer without a valid MAC (a 401 to a forged
   * request is not signed): with `rawOnRefusal` that answer is returned as it came, else the
   * throw stands (a genuine request must get a signed answer).
   */
  send(app: FuzzApp, from: string, to: string, request: FuzzRequest, rawOnRefusal = false): Promise<FuzzAnswer> {
    const signer = this.signer(app, from);
    const body = typeof request.body === "string" || request.body === undefined ? request.body : new TextDecoder().decode(request.body);
    const url = typeof app === "string" ? `${app}${request.path}` : `http://${to}${request.path}`;
    const method = request.method === "GET" ? "GET" : "POST";
    const signed = signer.fetch(this.options.signedFor ?? to, url, { method, body, contentType: request.contentType, timeoutMs: 10_000 });
    if (!rawOnRefusal) return signed;
    return signed.catch((error: Error) => {
      if (!/without a valid MAC/.test(error.message)) throw error;
      return this.lastSent!.answer;
    });
  }

  private signer(app: FuzzApp, from: string): PeerSigner {
    let byFrom = this.signers.get(app);
    if (!byFrom) this.signers.set(app, byFrom = new Map());
    let signer = byFrom.get(from);
    if (!signer) {
      signer = new PeerSigner(this.options.key ?? FUZZ_PEER_KEY, from, async (url, init) => {
        const sent = this.options.transit?.(init) ?? init;
        const response = typeof app === "string" ? await fetch(url, sent) : await app.request(url, sent);
        this.lastSent = { url, init: sent, answer: { status: response.status, text: await response.clone().text() } };
        return response;
      });
      byFrom.set(from, signer);
    }
    return signer;
  }
}

/** A route with a valid body (before mutation). */
export interface Template {
  method: string;
  path: string;
  body?: Record<string, unknown>;
}

/**
 * A request built from `templates`: the valid body mutated, or replaced by non-object bytes or by
 * an oversized one; sometimes another method; sometimes a hostile path parameter in place of
 * `paramOf(template)`.
 */
export function requests(templates: Template[], bodyBytesMax: number, param?: (path: string) => string | undefined): fc.Arbitrary<FuzzRequest> {
  return fc.record({
    template: fc.constantFrom(...templates),
    body: fc.oneof(
      { weight: 6, arbitrary: fc.constant("mutate" as const) },
      { weight: 2, arbitrary: nonObjectText },
      { weight: 1, arbitrary: fc.constant("oversized" as const) },
      { weight: 1, arbitrary: fc.constant("none" as const) },
    ),
    mutation: fc.nat(),
    method: fc.option(fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH"), { freq: 8 }),
    pathParam: fc.option(hostileString, { freq: 5 }),
    contentType,
    seed: fc.integer(),
  }).chain(({ template, body, method, pathParam, contentType, seed }) => {
    const mutated = body === "mutate" && template.body ? mutatedObject(template.body).map((b) => JSON.stringify(b)) : fc.constant(undefined);
    return mutated.map((text): FuzzRequest => {
      let path = template.path;
      const old = param?.(path);
      if (pathParam !== null && old !== undefined) path = path.replace(old, percentEncoded(pathParam));
      let payload: string | Uint8Array | undefined = text;
      if (body === "oversized") payload = JSON.stringify({ ...template.body, pad: "x".repeat(bodyBytesMax + (seed & 0xff)) });
      else if (body !== "mutate" && body !== "none") payload = body;
      else if (body === "mutate" && !template.body) payload = undefined;
      const shape = body === "mutate" || body === "none" ? (payload === undefined ? "none" : "mutated") : body === "oversized" ? "oversized" : "raw";
      return { method: method ?? template.method, path, body: payload, contentType: contentType ?? undefined, shape };
    });
  });
}

/** `text` percent-encoded for a path; a lone surrogate becomes the bytes of one (not UTF-8: a hostile path too). */
function percentEncoded(text: string): string {
  try {
    return encodeURIComponent(text) || "%20";
  } catch {
    return "%ED%A0%80";
  }
}

/** Describes a request in an assertion message (bodies cut short). */
export function describe(request: FuzzRequest): string {
  const body = typeof request.body === "string" ? request.body.slice(0, 200) : request.body ? `${request.body.length} bytes` : "no body";
  return `${request.method} ${request.path.slice(0, 120)} (${request.contentType ?? "no content type"}) ${body}`;
}

/** The sessions `lockNode` opens: `holder` holds L (token 1), `waiter` waits for it, `free` has nothing. */
export interface LockSessions {
  holder: string;
  waiter: string;
  free: string;
  /**
   * Per session id, the fields that present its secret on every call that acts on it: the
   * `sessionSecret` its open answered, or none where the server gives none (before session secrets).
   */
  secrets: Record<string, Record<string, string>>;
}

/**
 * Opens `holder`, `waiter` and `free` with `ttlMs` through `post` (a setup call that must
 * succeed): holder enters L, waiter asks for L with `waitMs` (it waits unless 0), each call
 * presenting the session's secret when the server gave one.
 */
export async function openLockSessions(post: (path: string, body: Record<string, unknown>) => Promise<Record<string, unknown>>, ttlMs: number, waitMs: number): Promise<LockSessions> {
  const secrets: Record<string, Record<string, string>> = {};
  const open = async () => {
    const answer = await post("/v1/sessions", { ttlMs });
    const id = String(answer.session);
    secrets[id] = typeof answer.sessionSecret === "string" ? { sessionSecret: answer.sessionSecret } : {};
    return id;
  };
  const [holder, waiter, free] = [await open(), await open(), await open()];
  await post("/v1/enter", { name: "L", session: holder, ...secrets[holder] });
  await post("/v1/enter", { name: "L", session: waiter, waitMs, ...secrets[waiter] });
  return { holder, waiter, free, secrets };
}

/**
 * Every route of the lock server's client API with a valid request for `sessions` (the GET
 * routes too); `waitMs` is the waiting enter's (a real server holds it for up to longPollMaxMs).
 */
export function lockTemplates({ holder, waiter, free, secrets }: LockSessions, waitMs = 10_000): Template[] {
  return [
    { method: "POST", path: "/v1/sessions", body: { ttlMs: 5_000, requestId: "open-1" } },
    { method: "POST", path: `/v1/sessions/${holder}/keepalive`, body: { ...secrets[holder] } },
    { method: "DELETE", path: `/v1/sessions/${free}`, body: { requestId: "close-1", ...secrets[free] } },
    { method: "POST", path: "/v1/enter", body: { name: "L", session: free, mode: "exclusive", waitMs: 0, lockDelayMs: 0, callId: "call-1", ...secrets[free] } },
    { method: "POST", path: "/v1/enter", body: { name: "M", session: free, mode: "shared", waitMs, lockDelayMs: 100, ...secrets[free] } },
    { method: "POST", path: "/v1/leave", body: { name: "L", session: holder, token: 1, requestId: "leave-1", ...secrets[holder] } },
    { method: "POST", path: "/v1/leave", body: { name: "L", session: waiter, ...secrets[waiter] } },
    { method: "GET", path: "/v1/status" },
    { method: "GET", path: "/v1/sessions" },
    { method: "GET", path: "/v1/locks" },
    { method: "GET", path: "/v1/locks/L" },
    { method: "GET", path: "/v1/health" },
  ];
}

/** The path parameter of a `lockTemplates` path (a session id or the lock name), for `requests`. */
export function lockPathParam({ holder, free }: LockSessions): (path: string) => string | undefined {
  return (path) => [holder, free].find((s) => path.includes(s)) ?? (path === "/v1/locks/L" ? "L" : undefined);
}

/**
 * The answer is never a server error and, when it refuses, is `{ error: { code, message } }`
 * with the code's own status (lib/wire/errors.ts) and no stack trace. Returns whether it refused.
 */
export function checkAnswer(answer: FuzzAnswer, what: string): boolean {
  assert.ok(answer.status < 500 || answer.status === ERROR_STATUS.ring_unavailable, `${what}: status ${answer.status}: ${answer.text.slice(0, 300)}`);
  if (answer.status < 400) return false;
  let body: { error?: { code?: unknown; message?: unknown } };
  try {
    body = JSON.parse(answer.text);
  } catch {
    assert.fail(`${what}: a ${answer.status} whose body is not JSON: ${answer.text.slice(0, 200)}`);
  }
  const code = body.error?.code;
  assert.ok(typeof code === "string" && code in ERROR_STATUS, `${what}: error code ${JSON.stringify(code)}`);
  assert.equal(answer.status, ERROR_STATUS[code as keyof typeof ERROR_STATUS], `${what}: status of ${code}`);
  assert.ok(typeof body.error?.message === "string" && body.error.message.length > 0, `${what}: a message`);
  assert.ok(!/\bat .*\.ts:\d+/.test(body.error.message as string), `${what}: no stack trace`);
  return true;
}

/** A setup call: POSTs `body` as JSON to `app` (or a server's base URL), which must succeed; its answer. */
export async function setupPost(app: FuzzApp, path: string, body: Record<string, unknown>): Promise<Record<string, unknown>> {
  const answer = await send(app, { method: "POST", path, body: JSON.stringify(body), contentType: "application/json" });
  assert.ok(answer.status < 300, `setup ${path}: ${answer.text}`);
  return JSON.parse(answer.text);
}

/**
 * A standalone primary p1 (no peer, no arbiter: it serves at once) with three sessions: `holder`
 * holds L (token 1), `waiter` waits for L, `free` has nothing. `state()` is everything status
 * shows plus the table's own snapshot; `tableState()` leaves out the replica's log indices.
 */
export async function lockNode(settings: Settings = FUZZ_LOCK_SETTINGS) {
  const clock = manualClock(1_000);
  const service = soloLockService(settings, realTimers, clock);
  // `newSessionSecret` is read by servers with session secrets (ignored before them): a counter,
  // so every fresh node gives its sessions the same secrets, and a request drawn for one node
  // (with the secrets of its sessions) fits another. The routes below Hono take the same options.
  let secrets = 0;
  const appOptions: LockApiOptions & { newSessionSecret: () => string } = {
    nodeId: "p1",
    role: "primary",
    settings,
    newSessionSecret: () => `fuzz-session-secret-${++secrets}`.padEnd(43, "x"),
  };
  const app = createLockApp(service, appOptions);
  const sessions = await openLockSessions((path, body) => setupPost(app, path, body), 5_000, 60_000);
  const state = () => JSON.stringify({ view: service.view(), table: service.table!.snapshot() });
  /** The sessions, locks and tokens only: `state` without the replica's log indices. */
  const tableState = () => {
    const { server: _server, ...view } = service.view();
    return JSON.stringify({ view, table: service.table!.snapshot() });
  };
  const holders = service.view().locks.find((l) => l.name === "L");
  assert.deepEqual([holders?.holders[0].token, holders?.waiters[0].session], [1, sessions.waiter], "holder holds L with token 1, waiter waits");
  return { service, app, appOptions, clock, state, tableState, sessions };
}

/** One message a lock server sent, as recorded by the in-process pair's transport. */
export interface Recorded {
  from: string;
  to: "p1" | "b1" | "a1";
  message: Record<string, unknown>;
}

/**
 * Primary p1, backup b1 and arbiter a1 in process: the services' transport hands each message to
 * the receiver's own handler (`answerPeer`, `answerArbiter`) as JSON text, as the wire does.
 * The manual clock moves by ticks until p1 serves with b1 in sync and holds the three sessions of
 * `lockNode`; from then on nothing ticks, so the states only change by what a test sends.
 * `recorded` has every message sent (real appends, sync requests, claims and renewals).
 */
/** One lock server of an in-process pair (`id` and `peer`: p1 and b1, arbiter a1) on `clock`, sending through `send`. */
export function pairLockService(id: string, peer: string, settings: Settings, clock: Clock, timers: Timers, send: PeerSender["send"]): LockService {
  return new LockService({
    settings,
    clock,
    log: memoryLogger(),
    nodeId: id,
    peer: { id: peer, url: `http://${peer}` },
    arbiter: { id: "a1", url: "http://a1" },
    transport: { send },
    timers,
    sessionIdPrefix: `${id}-`,
    tokenFloor: 0,
  });
}

export async function lockPair(settings: Settings = FUZZ_LOCK_SETTINGS, options: { peerAuth?: boolean; timers?: Timers } = {}) {
  const clock = manualClock(0);
  const arbiterLog = memoryLogger();
  const core = new ArbiterCore({ primaryId: "p1", backupId: "b1", leaseMs: settings.primaryLeaseMs, bootstrapWaitMs: settings.bootstrapWaitMs }, null, 0);
  let saved: ArbiterState | null = null;
  const ports: ArbiterPorts = {
    store: { load: () => saved, save: (state) => void (saved = structuredClone(state)) },
    clock,
    log: arbiterLog,
    failStop: (reason) => {
      throw new Error(`arbiter fail-stop: ${reason}`);
    },
  };
  const recorded: Recorded[] = [];
  const services = new Map<string, LockService>();
  const serviceOf = (id: string, peer: string) =>
    pairLockService(id, peer, settings, clock, options.timers ?? realTimers, (url, body) => {
      const to = new URL(url).host as Recorded["to"];
      recorded.push({ from: id, to, message: structuredClone(body) as Record<string, unknown> });
      const text = encodePeerBody(body);
      if (to === "a1") return Promise.resolve(decodePeerBody(answerArbiter(core, text, ports, settings.bodyBytesMax).body));
      return new Promise((done) => answerPeer(services.get(to)!, settings, text, (answer) => done(decodePeerBody(answer))));
    });
  const [p, b] = [serviceOf("p1", "b1"), serviceOf("b1", "p1")];
  services.set("p1", p).set("b1", b);
  /** Ticks both servers (a bounded number of times) until `done`. */
  const tickUntil = async (what: string, done: () => boolean) => {
    for (let i = 0; i < 2_000 && !done(); i++) {
      clock.advance(settings.tickMs);
      p.tick();
      b.tick();
      // The transport's answers are promises: let them arrive before the next tick.
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    assert.ok(done(), `the pair did not reach: ${what}`);
  };
  const inSync = () => p.replica.status().serving && p.replica.status().backup?.arbiterRecordedInSync === true && b.replica.status().lastIndex === p.replica.status().commitIndex;
  await tickUntil("p1 serves with b1 in sync", inSync);
  // With `peerAuth`, both apps verify peer requests as nodes with FUZZ_SECRET do (the pair's own
  // messages go straight to answerPeer, as the simulator's do).
  const peerAuthOf = (id: string, service: LockService) => options.peerAuth ? fuzzPeerAuth(id, ["p1", "b1", "a1"], service.security, settings.peerBodyBytesMax) : undefined;
  const pApp = createLockApp(p, { nodeId: "p1", role: "primary", settings, peerAuth: peerAuthOf("p1", p) });
  const bApp = createLockApp(b, { nodeId: "b1", role: "backup", settings, peerAuth: peerAuthOf("b1", b) });
  // A TTL the arbiter's record covers: a longer one would wait for a renewal, and nothing ticks here.
  await openLockSessions((path, body) => setupPost(pApp, path, body), 5_000, 60_000);
  await tickUntil("b1 applied every entry", inSync);
  /** Everything the three show: b1's and p1's status and tables, the arbiter's record (memory and store). */
  const state = () => JSON.stringify({ p: p.view(), b: b.view(), arbiter: core.current, saved });
  return { clock, p, b, core, ports, pApp, bApp, recorded, state, settings, tickUntil, stop: () => (p.stop(), b.stop()) };
}
