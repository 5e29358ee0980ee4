/**
 * The client side of `GET /v1/locks/:name/watch` (docs/http-api.md): an async iterator of one
 * lock's holders and queue that survives a failover. It reads the server's Server-Sent Events;
 * when the stream ends with `end` (the server stepped down or stops), breaks, or stays silent
 * for WATCH_SILENCE_MS (a paused or cut-off server: it pings every 10 s), it opens the watch at
 * the hinted or the next server, which starts again with a `snapshot`. It gives up (throws
 * "unreachable") when no server accepted a watch for failoverTimeoutMs; a refusal such as 401,
 * 403 or 429 throws at once. `signal` ends the iteration, as does leaving a `for await` loop.
 */
import { MutexdError } from "../wire/errors.ts";
import { answerFormatError, decodeAnswer, failureText, type HttpPorts, type HttpResponse, requestHeaders } from "./http.ts";
import type { ClockPort } from "./http.ts";
import type { StatusAnswer } from "./lock_types.ts";
import { selfRetryMs } from "./failover.ts";

/** A lock as a watch shows it (as `GET /v1/locks/:name`; a free lock has no holders and no waiters). */
export type WatchedLock = StatusAnswer["locks"][number];

export type WatchEvent =
  /** The lock when the stream (re)opened at `server`: the first event, and the first after every move. */
  | { type: "snapshot"; server: string; lock: WatchedLock }
  /** Its holders or queue changed. */
  | { type: "change"; server: string; lock: WatchedLock }
  /** `server` ended the stream (reason "notPrimary" at a step-down or takeover, "stopping"); the watch moves on. */
  | { type: "end"; server: string; reason: string; primary: string | null };

/** No byte (event or ping) for this long: the connection is taken for dead (3 missed pings). */
export const WATCH_SILENCE_MS = 30_000;
/** Longest event the client accepts; a server's is far smaller (a lock's waiters are bounded). */
const EVENT_BYTES_MAX = 4 * 1024 * 1024;
const BACKOFF_FIRST_MS = 25;
const BACKOFF_MAX_MS = 500;

/** What the watch needs of its LockClient. */
export interface WatchHost {
  readonly ports: HttpPorts;
  readonly clock: ClockPort;
  readonly token: string | undefined;
  readonly requestTimeoutMs: number;
  readonly failoverTimeoutMs: number;
  readonly serverCount: number;
  /** The index and URL of the server to try now. */
  currentServer(): { index: number; base: string };
  /** Moves on from server `tried`: to the hinted primary when it is one of the servers, else to the next. */
  moveOn(tried: number, primaryUrl: unknown): void;
  /** Whether a failure at server `tried` was a "not primary" naming that server itself (asked once more first). */
  namesItself(tried: number, outcome: { error: MutexdError; detail?: Record<string, unknown> }): boolean;
}

export async function* watchLock(host: WatchHost, name: string, signal?: AbortSignal): AsyncGenerator<WatchEvent, void, undefined> {
  let deadlineMs = host.clock.nowMs() + host.failoverTimeoutMs;
  let backoffMs = BACKOFF_FIRST_MS;
  let failures = 0;
  let lastError: unknown;
  // As Failover.requestThen: a server that refused naming itself is asked once more before
  // moving on, itself even if another request moved the client meanwhile (its word is fresher).
  let retrying: { index: number; base: string } | undefined;
  // Bounded: every round either opened a stream (which ended) or counts a failure, and failures
  // stop at the deadline; every round over all the servers without a stream sleeps first.
  while (!signal?.aborted) {
    const { index, base } = retrying ?? host.currentServer();
    const attempt = new AbortController();
    const abort = () => attempt.abort();
    signal?.addEventListener("abort", abort, { once: true });
    let silence = host.ports.timers.setTimeout(abort, host.requestTimeoutMs);
    const heard = () => {
      host.ports.timers.clearTimeout(silence);
      silence = host.ports.timers.setTimeout(abort, WATCH_SILENCE_MS);
    };
    let hint: unknown;
    let opened = false;
    let namedItself = false;
    const sentAtMs = host.clock.nowMs();
    try {
      const response = await host.ports.fetch(`${base}/v1/locks/${encodeURIComponent(name)}/watch`, {
        method: "GET",
        headers: requestHeaders(false, host.token),
        signal: attempt.signal,
      });
      if (!response.ok) {
        const outcome = decodeAnswer(base, response, await response.text());
        if (outcome.ok || outcome.error.code !== "not_primary") throw outcome.ok ? new MutexdError("internal", `${base}: watch answered ${response.status}`) : outcome.error;
        hint = outcome.detail?.primaryUrl;
        lastError = outcome.error;
        namedItself = host.namesItself(index, outcome);
      } else {
        const mismatch = answerFormatError(base, response);
        if (mismatch !== null) throw mismatch;
        opened = true;
        for await (const message of serverSentEvents(response, heard)) {
          const data = JSON.parse(message.data) as Record<string, unknown>;
          if (message.event === "end") {
            hint = data.primaryUrl;
            yield { type: "end", server: base, reason: String(data.reason), primary: (data.primary as string | null) ?? null };
            break;
          }
          if (message.event === "snapshot" || message.event === "change") yield { type: message.event, server: base, lock: data as unknown as WatchedLock };
        }
      }
    } catch (error) {
      if (signal?.aborted) return;
      // A refusal is the call's (it would be the same at the other server); a broken connection moves on.
      if (error instanceof MutexdError) throw error;
      lastError = error;
    } finally {
      host.ports.timers.clearTimeout(silence);
      signal?.removeEventListener("abort", abort);
      attempt.abort(); // closes a stream left open (a `for await` that broke off, an end)
    }
    if (signal?.aborted) return;
    retrying = namedItself && !retrying ? { index, base } : undefined;
    if (retrying) {
      const retryMs = selfRetryMs(host.clock.nowMs() - sentAtMs);
      await new Promise((resolve) => host.ports.timers.setTimeout(() => resolve(undefined), retryMs));
      continue;
    }
    host.moveOn(index, hint);
    if (opened) {
      deadlineMs = host.clock.nowMs() + host.failoverTimeoutMs;
      backoffMs = BACKOFF_FIRST_MS;
      failures = 0;
      continue;
    }
    failures += 1;
    if (failures >= host.serverCount && host.clock.nowMs() >= deadlineMs) {
      throw new MutexdError("unreachable", `watch of ${name}: no server accepted it: ${failureText(lastError)}`);
    }
    if (failures % host.serverCount === 0) {
      await new Promise((resolve) => host.ports.timers.setTimeout(() => resolve(undefined), backoffMs));
      backoffMs = Math.min(backoffMs * 2, BACKOFF_MAX_MS);
    }
  }
}

/** The events of a text/event-stream body (`event:` and `data:` fields; comments only call `heard`). */
async function* serverSentEvents(response: HttpResponse, heard: () => void): AsyncGenerator<{ event: string; data: string }> {
  const body = response.body;
  if (!body) throw new MutexdError("internal", "the watch answer has no body to stream");
  const decoder = new TextDecoder();
  let buffered = "";
  const reader = body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      heard();
      buffered += decoder.decode(value, { stream: true });
      if (buffered.length > EVENT_BYTES_MAX) throw new MutexdError("internal", `a watch event is longer than ${EVENT_BYTES_MAX} bytes`);
      // Events end with a blank line; a partial one stays buffered for the next chunk.
      for (let end = buffered.indexOf("\n\n"); end >= 0; end = buffered.indexOf("\n\n")) {
        const block = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        let event = "message";
        const data: string[] = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) event = line.slice(7);
          else if (line.startsWith("data: ")) data.push(line.slice(6));
        }
        if (data.length > 0) yield { event, data: data.join("\n") };
      }
    }
  } finally {
    reader.releaseLock();
  }
}
