/**
 * The dashboard's timeline (docs/dashboard.md): a node keeps its recent notable log events
 * (takeovers, steps down, view changes, token regenerations, session expiries, fail-stops…) in a
 * bounded ring buffer, so a page that connects late still sees what just happened. The events
 * come from the node's own log: `recordingLogger` passes every line on and keeps a copy of those
 * named in TIMELINE_EVENTS.
 */
import type { LogFields, Logger } from "../log.ts";

/** The log events the timeline shows: role and view changes, token and session losses. */
export const TIMELINE_EVENTS: ReadonlySet<string> = new Set([
  // lock service (lib/core/lock/lock_replica.ts): a takeover is `primary` with how "takeover"
  "primary", "steppedDown", "backup", "namedPrimary", "backupInSync", "backupOutOfSync", "sessionExpired",
  // arbiter
  "epoch", "restored",
  // ring (lib/core/ring, cluster/ring/service.ts)
  "viewInstalled", "viewChangeWanted", "viewChangeAbandoned", "tokenRegenerated", "tokenLost", "successorUnreachable", "membershipChanged",
  // any role
  "loopStall", "failStop", "listening",
]);

/** One event of the timeline; `atMs` is the node's wall clock (display only: it may step). */
export interface TimelineEvent {
  seq: number;
  atMs: number;
  node: string;
  event: string;
  fields: LogFields;
}

/** A field's value is cut to this many characters of JSON: a log line may carry a long list. */
const FIELD_CHARS_MAX = 200;

export class RecentEvents {
  private readonly buffer: TimelineEvent[] = [];
  private seq = 0;

  constructor(readonly node: string, readonly capacity: number, private readonly wallMs: () => number = Date.now) {
    if (!(capacity > 0)) throw new Error(`RecentEvents capacity must be positive, got ${capacity}`);
  }

  record(event: string, fields: LogFields): void {
    const kept: LogFields = {};
    for (const [key, value] of Object.entries(fields)) {
      const json = JSON.stringify(value) ?? "null";
      kept[key] = json.length > FIELD_CHARS_MAX ? `${json.slice(0, FIELD_CHARS_MAX)}…` : value;
    }
    this.buffer.push({ seq: ++this.seq, atMs: this.wallMs(), node: this.node, event, fields: kept });
    // Bounded: the oldest goes once the buffer is full.
    if (this.buffer.length > this.capacity) this.buffer.shift();
  }

  /** The kept events, oldest first (a copy). */
  list(): TimelineEvent[] {
    return [...this.buffer];
  }
}

/** `log`, which also records the TIMELINE_EVENTS lines in `events`. */
export function recordingLogger(log: Logger, events: RecentEvents): Logger {
  return {
    event(event, fields = {}, level) {
      log.event(event, fields, level);
      if (TIMELINE_EVENTS.has(event)) events.record(event, withoutLockNames(fields));
    },
    // Passed on: per-operation callers ask before building a line's fields (Logger.wants).
    wants: (level) => log.wants?.(level) ?? true,
    flush: () => log.flush(),
  };
}

/**
 * The timeline is shown to any token with `read` on some name, so it carries no lock name: a
 * session expiry's `released` list becomes its length.
 */
function withoutLockNames(fields: LogFields): LogFields {
  const { released, ...rest } = fields;
  return released === undefined ? rest : { ...rest, released: Array.isArray(released) ? released.length : "?" };
}
