/**
 * HTTP on the simulated network: a request carries its method, path and JSON body as TEXT (what
 * fetch would send), the answer its status and body text, so the real client serializes, the
 * real API (cluster/lock/api_routes.ts answerRequest) parses and validates, and the real client decodes.
 * Each request carries the sender's reference and incarnation, which the answer repeats (an HTTP
 * response belongs to its request and to the process that sent it).
 */
import type { HttpInit, HttpResponse } from "../../../lib/client/http.ts";
import { RequestError } from "../../../cluster/http_util.ts";
import { apiError, ERROR_STATUS } from "../../../lib/wire/errors.ts";
import type { Actor } from "../actor.ts";
import { type Microtasks, SimFuture } from "../ring/ports.ts";

export interface HttpRequestMessage {
  http: "request";
  ref: number;
  incarnation: number;
  method: string;
  path: string;
  body: string | undefined;
}

export interface HttpReplyMessage {
  http: "reply";
  ref: number;
  incarnation: number;
  status: number;
  body: string;
}

export function isHttp(payload: unknown): payload is HttpRequestMessage | HttpReplyMessage {
  return typeof payload === "object" && payload !== null && "http" in payload;
}

/** URLs of simulated servers: `sim://<actor id>`. */
export const SIM_URL_PREFIX = "sim://";

export function simUrl(actorId: string): string {
  return `${SIM_URL_PREFIX}${actorId}`;
}

/**
 * The fetch port of one incarnation of `actor`: a request goes out over the simulated network;
 * the answer (a SimFuture, continued in `microtasks`) resolves when its reply arrives (`receive`),
 * or rejects when the request's signal aborts (the caller's timeout). A late or duplicated reply
 * finds nothing waiting and is dropped, as an aborted fetch never sees its answer.
 */
export class SimFetch {
  private readonly pending = new Map<number, SimFuture<HttpResponse>>();
  private refNext = 1;

  constructor(private readonly actor: Actor, private readonly microtasks: Microtasks) {}

  readonly fetch = (url: string, init: HttpInit): PromiseLike<HttpResponse> => this.request(url, init);

  /** `fetch`, with the trace's label for the message (verbose traces). */
  request(url: string, init: HttpInit, label?: string): PromiseLike<HttpResponse> {
    const rest = url.slice(SIM_URL_PREFIX.length);
    const slash = rest.indexOf("/");
    const to = rest.slice(0, slash);
    const path = rest.slice(slash);
    const ref = this.refNext++;
    const answer = new SimFuture<HttpResponse>(this.microtasks);
    this.pending.set(ref, answer);
    const request: HttpRequestMessage = { http: "request", ref, incarnation: this.actor.incarnation, method: init.method, path, body: init.body };
    this.actor.sim.network.send(this.actor, to, request, `${label ?? `${init.method} ${path}`} #${ref}`);
    init.signal.addEventListener("abort", () => {
      if (this.pending.delete(ref)) answer.reject(init.signal.reason);
    }, { once: true });
    return answer;
  }

  /** A reply arrived: settles its request's answer (call inside the actor's turn); false if nobody waits. */
  receive(reply: HttpReplyMessage): boolean {
    const answer = this.pending.get(reply.ref);
    if (reply.incarnation !== this.actor.incarnation || !answer) return false;
    this.pending.delete(reply.ref);
    const text = SimFuture.resolved(this.microtasks, reply.body);
    answer.resolve({ ok: reply.status >= 200 && reply.status < 300, status: reply.status, text: () => text });
    return true;
  }
}

/**
 * Answers `request` with what `answer` returns, or the error answer of the RequestError it
 * throws; `send` may hold the reply back (the arbiter's fsync).
 */
export function replyTo(
  actor: Actor,
  from: string,
  request: HttpRequestMessage,
  answer: () => { status: number; body: string },
  label: string,
  send: (now: () => void) => void = (now) => now(),
): void {
  let status: number;
  let body: string;
  try {
    ({ status, body } = answer());
  } catch (error) {
    // Anything but a refusal of the request is a bug of the driver: the run ends with it.
    if (!(error instanceof RequestError)) throw error;
    status = ERROR_STATUS[error.code];
    body = JSON.stringify(apiError(error.code, error.message));
  }
  const reply: HttpReplyMessage = { http: "reply", ref: request.ref, incarnation: request.incarnation, status, body };
  send(() => actor.sim.network.send(actor, from, reply, `${status} ${label} #${request.ref}`));
}
