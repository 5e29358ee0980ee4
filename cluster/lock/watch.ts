/**
 * `GET /v1/locks/:name/watch`: Server-Sent Events of one lock's holders and queue, served by the
 * primary. A stream starts with `snapshot` (the lock as `GET /v1/locks/:name` shows it; a free
 * lock has no holders and no waiters), then sends `change` whenever its holders or queue change
 * (ages alone are no change), and `: ping` comments while quiet. When this server stops being
 * the primary (a takeover, a step-down) or stops, each stream ends with `end` (the reason, and
 * the primary when known) and the client resumes at the new primary (lib/client/lock_client.ts
 * `watch`). See docs/http-api.md.
 *
 * Bounded: at most WATCH_STREAMS_MAX streams per server (429 beyond), and at most
 * WATCH_BUFFER_EVENTS events waiting per stream; a reader that falls that far behind is cut
 * (its stream fails), never buffered for without end.
 */
import type { Timers } from "../timers.ts";
import { repeatEvery } from "../timers.ts";
import type { Logger } from "../log.ts";
import type { LockService } from "./service.ts";
import type { LockView } from "./status_view.ts";

export const WATCH_STREAMS_MAX = 256;
export const WATCH_BUFFER_EVENTS = 64;
/** A quiet stream gets a comment this often, so a client can tell a dead connection (3 missed) from a quiet lock. */
export const WATCH_PING_MS = 10_000;

export type WatchEnd = { reason: "notPrimary" | "stopping"; epoch: number; primary: string | null; primaryUrl?: string };

interface Stream {
  controller: ReadableStreamDefaultController<Uint8Array>;
  closed: boolean;
}

interface Watched {
  /** What the last event showed of holders and queue (not ages). */
  signature: string;
  streams: Set<Stream>;
}

export class LockWatchHub {
  private readonly watched = new Map<string, Watched>();
  private count = 0;
  private readonly encoder = new TextEncoder();
  private stopPings: (() => void) | null = null;
  private readonly removeListener: () => void;

  constructor(
    private readonly service: LockService,
    private readonly options: { timers: Timers; log: Logger; urlOf?: (id: string) => string | undefined },
  ) {
    this.removeListener = service.onStep(() => this.afterStep());
  }

  /** Whether another stream may open now. */
  get full(): boolean {
    return this.count >= WATCH_STREAMS_MAX;
  }

  /** A new stream of `name` (the caller checked the role, the token and `full`). */
  open(name: string): ReadableStream<Uint8Array> {
    let stream: Stream;
    // The stream's callbacks are methods of their own object: they reach the hub by this name.
    // deno-lint-ignore no-this-alias
    const hub = this;
    return new ReadableStream<Uint8Array>({
      start(controller) {
        const view = hub.service.lockView(name) ?? freeLock(name);
        stream = { controller, closed: false };
        const watched = hub.watched.get(name) ?? { signature: signatureOf(view), streams: new Set() };
        hub.watched.set(name, watched);
        watched.streams.add(stream);
        hub.count += 1;
        hub.send(stream, "snapshot", view, name);
        if (!hub.stopPings) hub.stopPings = repeatEvery(hub.options.timers, WATCH_PING_MS, () => hub.ping());
      },
      cancel() {
        hub.remove(name, stream);
      },
    }, new CountQueuingStrategy({ highWaterMark: WATCH_BUFFER_EVENTS }));
  }

  /** Ends every stream with `end` (server stopping, or no longer primary). */
  endAll(end: WatchEnd): void {
    for (const [name, watched] of [...this.watched]) {
      for (const stream of [...watched.streams]) {
        this.enqueue(stream, `event: end\ndata: ${JSON.stringify(end)}\n\n`, name);
        this.close(name, stream);
      }
    }
  }

  /** Stops the hub: every stream ends with `end` "stopping", and no step is watched any more. */
  stop(): void {
    const { epoch } = this.service.summary().server;
    this.endAll({ reason: "stopping", epoch, primary: null });
    this.removeListener();
  }

  /** After a step: a role change ends the streams; a changed lock is sent to its streams. */
  private afterStep(): void {
    if (this.count === 0) return;
    const server = this.service.summary().server;
    if (server.role !== "primary") {
      const primaryUrl = server.primary ? this.options.urlOf?.(server.primary) : undefined;
      return this.endAll({ reason: "notPrimary", epoch: server.epoch, primary: server.primary, ...(primaryUrl ? { primaryUrl } : {}) });
    }
    for (const [name, watched] of this.watched) {
      const view = this.service.lockView(name) ?? freeLock(name);
      const signature = signatureOf(view);
      if (signature === watched.signature) continue;
      watched.signature = signature;
      for (const stream of [...watched.streams]) this.send(stream, "change", view, name);
    }
  }

  private send(stream: Stream, event: string, view: LockView, name: string): void {
    this.enqueue(stream, `event: ${event}\ndata: ${JSON.stringify(view)}\n\n`, name);
  }

  private ping(): void {
    for (const [name, watched] of this.watched) for (const stream of [...watched.streams]) this.enqueue(stream, ": ping\n\n", name);
  }

  /** Queues one event; a stream whose buffer is full is cut (its reader is too slow). */
  private enqueue(stream: Stream, text: string, name: string): void {
    if (stream.closed) return;
    if ((stream.controller.desiredSize ?? 1) <= 0) {
      this.options.log.event("watchCut", { name, bufferedEvents: WATCH_BUFFER_EVENTS });
      stream.controller.error(new Error(`watch of ${name}: the reader fell ${WATCH_BUFFER_EVENTS} events behind`));
      this.remove(name, stream);
      return;
    }
    stream.controller.enqueue(this.encoder.encode(text));
  }

  private close(name: string, stream: Stream): void {
    if (stream.closed) return;
    stream.controller.close();
    this.remove(name, stream);
  }

  private remove(name: string, stream: Stream): void {
    if (stream.closed) return;
    stream.closed = true;
    this.count -= 1;
    const watched = this.watched.get(name);
    watched?.streams.delete(stream);
    if (watched?.streams.size === 0) this.watched.delete(name);
    if (this.count === 0) {
      this.stopPings?.();
      this.stopPings = null;
    }
  }
}

function freeLock(name: string): LockView {
  return { name, holders: [], waiters: [], lockDelayRemainingMs: 0 };
}

/** Holders and queue, without ages: what a `change` is about. */
function signatureOf(view: LockView): string {
  return JSON.stringify([view.holders.map((h) => [h.session, h.token, h.mode]), view.waiters.map((w) => [w.session, w.mode])]);
}
