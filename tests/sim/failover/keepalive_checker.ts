/**
 * failover.keepalive-reaches-primary: a primary whose lease lapsed for a moment answers "not
 * primary" naming itself, and serves again once its next renewal is answered. A client's
 * keepalive refused so must reach that server again while it serves, within the client's retry
 * delay for such an answer (lib/client/failover.ts `selfRetryMs`) plus one delivery: it must not
 * leave for the other server, which may be paused, and lose a whole keepalive period there
 * (the defect of the closing note of stop 25; `sim_bugs_test.ts` injects it back).
 *
 * Judged only where the bound is exact: the refused try was the first of its kind (not itself
 * the retry, after which the client moves on by design: a cut-off primary keeps naming itself),
 * the refusing server is up throughout and serves from the retry's moment to the bound, the
 * client is up (same incarnation), and the network loses nothing and holds nothing back
 * meanwhile (no drop, cut or late delivery anywhere, no slow or cut link client–server).
 * Keepalives are observed on the wire: the client's sends and the replies it receives, the
 * server's deliveries.
 */
import { selfRetryMs } from "../../../lib/client/failover.ts";
import type { Actor } from "../actor.ts";
import type { Checker } from "../checkers.ts";
import type { Envelope } from "../network.ts";
import type { Sim } from "../simulator.ts";
import { type HttpReplyMessage, type HttpRequestMessage, isHttp, simUrl } from "../lock/messages.ts";

export const KEEPALIVE_REACHES_PRIMARY = "failover.keepalive-reaches-primary";

const KEEPALIVE_PATH = /^\/v1\/sessions\/[^/]+\/keepalive$/;
/** Requests remembered per client until answered (bounded: the oldest go first). */
const SENT_MAX = 1_000;
/** Retries due per client, path and server (a few rounds of one session overlap at most). */
const RETRIES_DUE_MAX = 8;
/** Refusals awaiting their verdict, at most (each lives one retry delay plus a delivery). */
const PENDING_MAX = 1_000;

interface Sent {
  to: string;
  path: string;
  /** The client's own clock at the send (its retry delay is measured on it, not on sim time). */
  localAtMs: number;
  /** Sent as the retry of a refusal naming `to` itself. */
  retry: boolean;
}

interface Pending {
  client: string;
  incarnation: number;
  path: string;
  server: string;
  refusedAtMs: number;
  retryAtMs: number;
  deadlineMs: number;
  dropped: number;
  heldBack: number;
  /** Where the client's tries went meanwhile (for the message). */
  elsewhere: string[];
}

export interface KeepaliveSubject {
  clients: () => Actor[];
  servers: ReadonlyArray<Actor & { servingNow(): boolean }>;
}

/** Wraps an actor's (protected) `receive` to see each message it takes, before it takes it. */
function observeReceive(actor: Actor, see: (envelope: Envelope) => void): void {
  const target = actor as unknown as { receive(envelope: Envelope): void };
  const original = target.receive;
  target.receive = (envelope) => {
    see(envelope);
    original.call(actor, envelope);
  };
}

export function keepaliveReachesPrimary(sim: Sim, subject: KeepaliveSubject): Checker {
  const network = sim.network;
  const profile = network.profile;
  // One delivery at most: the drawn delay and any reorder extra (whole sim ms; the retry's moment
  // is the client's timer's own, rounding included).
  const deliveryMaxMs = profile.delayMaxMs + (profile.reorderRate > 0 ? profile.reorderDelayMaxMs : 0);
  /** Clients by id, read on every keepalive sent: rebuilt only for an id not in it (a client added since). */
  let clients = new Map<string, Actor>();
  const clientById = (id: string): Actor | undefined => {
    if (!clients.has(id)) clients = new Map(subject.clients().map((c) => [c.id, c]));
    return clients.get(id);
  };
  const sent = new Map<string, Sent>();
  /**
   * When the client retries (sim ms), per client, path and server, after the last refusals naming
   * the server itself: a try sent then is a retry. A key goes once its retries are judged.
   */
  const retriesDue = new Map<string, number[]>();
  let pending: Pending[] = [];
  const serverIds = new Set(subject.servers.map((s) => s.id));

  const originalSend = network.send.bind(network);
  network.send = (from, to, payload, label) => {
    if (isHttp(payload) && payload.http === "request" && serverIds.has(to) && KEEPALIVE_PATH.test(payload.path)) {
      const client = clientById(from.id);
      if (client) {
        // The due times are the client's own timer's (see observeClient): a retry is sent exactly then.
        const retry = retriesDue.get(`${from.id} ${payload.path} ${to}`)?.includes(sim.nowMs) ?? false;
        if (sent.size >= SENT_MAX) sent.delete(sent.keys().next().value!);
        sent.set(`${from.id} ${payload.incarnation} ${payload.ref}`, { to, path: payload.path, localAtMs: client.clock.nowMs(), retry });
        for (const p of pending) if (p.client === from.id && p.path === payload.path && to !== p.server) p.elsewhere.push(`${to} (${sim.actor(to).state}) at ${sim.nowMs}ms`);
      }
    }
    originalSend(from, to, payload, label);
  };

  const observeClient = (client: Actor) => observeReceive(client, (envelope) => {
    const reply = envelope.payload;
    if (!isHttp(reply) || reply.http !== "reply") return;
    const key = `${client.id} ${reply.incarnation} ${reply.ref}`;
    const request = sent.get(key);
    if (!request || reply.incarnation !== client.incarnation) return;
    sent.delete(key);
    // A reply to a try the client gave up on (its timeout ran out) is dropped unseen (SimFetch).
    if (!awaited(client, reply.ref)) return;
    if (!namesItself(reply, envelope.from)) return;
    // The client's timer, as it sets it: the delay from its own clock's round trip (drift and
    // whole-ms reads make it differ from sim time's), run on its clock (rounded up to sim ms).
    const retryAtMs = sim.nowMs + client.clock.globalDelayMs(selfRetryMs(client.clock.nowMs() - request.localAtMs));
    const dueKey = `${client.id} ${request.path} ${envelope.from}`;
    const due = retriesDue.get(dueKey) ?? [];
    retriesDue.set(dueKey, [...due.filter((atMs) => atMs >= sim.nowMs), retryAtMs].slice(-RETRIES_DUE_MAX));
    if (request.retry || pending.length >= PENDING_MAX) return;
    pending.push({
      client: client.id, incarnation: client.incarnation, path: request.path, server: envelope.from,
      refusedAtMs: sim.nowMs, retryAtMs, deadlineMs: retryAtMs + deliveryMaxMs,
      dropped: network.dropped, heldBack: network.heldBack, elsewhere: [],
    });
  });
  const observed = new Set<Actor>();
  for (const server of subject.servers) {
    observeReceive(server, (envelope) => {
      const request = envelope.payload;
      if (!isHttp(request) || request.http !== "request" || !KEEPALIVE_PATH.test(request.path) || !server.servingNow()) return;
      pending = pending.filter((p) => !(p.server === server.id && p.client === envelope.from && p.path === (request as HttpRequestMessage).path));
    });
  }

  return {
    name: KEEPALIVE_REACHES_PRIMARY,
    doc: "a keepalive refused by a primary naming itself (a lapse of a moment) reaches it again once it serves, within the client's retry delay and one delivery",
    check() {
      // Clients start (and are added) after the checker: observe each once.
      for (const client of subject.clients()) {
        if (!observed.has(client)) {
          observed.add(client);
          observeClient(client);
        }
      }
      const now = sim.nowMs;
      // Due times past are judged (a send at that moment was seen at the send): a key whose
      // retries all passed goes, sent or not (a client crashed or gone leaves none behind).
      for (const [dueKey, due] of retriesDue) {
        if (due.every((atMs) => atMs < now)) retriesDue.delete(dueKey);
      }
      let violation: string | undefined;
      pending = pending.filter((p) => {
        const client = sim.actor(p.client);
        const server = subject.servers.find((s) => s.id === p.server)!;
        if (now > p.deadlineMs) {
          violation ??= `${p.client}'s keepalive (${p.path}) was refused by ${p.server} naming itself at ${p.refusedAtMs}ms; ` +
            `${p.server} served from ${p.retryAtMs}ms (the client's retry) to ${p.deadlineMs}ms, but no keepalive reached it by then` +
            (p.elsewhere.length > 0 ? `: the client went to ${p.elsewhere.join(", ")}` : "");
          return false;
        }
        // Outside the exact bound: the verdict is void.
        if (!client.up || client.incarnation !== p.incarnation || !server.up) return false;
        if (network.dropped !== p.dropped || network.heldBack !== p.heldBack || network.impaired(p.client, p.server)) return false;
        if (now >= p.retryAtMs && !server.servingNow()) return false;
        return true;
      });
      return violation;
    },
  };
}

/** Whether the client still waits for the answer to its request `ref` (SimFetch's pending map, read before the reply is taken). */
function awaited(client: Actor, ref: number): boolean {
  return (client as unknown as { http?: { pending?: Map<number, unknown> } }).http?.pending?.has(ref) ?? false;
}

/** Whether `reply` is a "not primary" whose hint names its sender. */
function namesItself(reply: HttpReplyMessage, from: string): boolean {
  if (reply.status !== 421) return false;
  try {
    const error = (JSON.parse(reply.body) as { error?: { code?: unknown; primaryUrl?: unknown } }).error;
    return error?.code === "not_primary" && error.primaryUrl === simUrl(from);
  } catch {
    return false;
  }
}
