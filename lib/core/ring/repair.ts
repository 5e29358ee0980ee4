/**
 * Ring repair, the suspicion part: a pure state machine (no clock, timers, randomness or I/O;
 * `nowMs` comes in with each step). Its driver is cluster/ring/repair_driver.ts (a part of the
 * ring driver, cluster/ring/service.ts); its datagrams travel the repair channel
 * (cluster/ring/udp.ts, UDP broadcast + unicast). See docs/ring.md, "Repair".
 *
 * - A node whose hand-offs to its successor S failed `ringRepairRetries` times in a row (or once,
 *   refused at connect: `suspectsSuccessor`) suspects
 *   S and asks every ring node WHO_LOST_PRED {epoch, suspect: S}; it asks again every `askEveryMs`
 *   while the suspicion stands, never more often.
 * - A node answers I_LOST_PRED only if its predecessor (in the ring order it knows) is the
 *   suspect AND it has not heard from the suspect for `suspectMs` itself; at most once per
 *   `askEveryMs` per suspect. Its answer goes to every ring node too.
 * - Answers are hints, never membership: an answer from an older epoch than the suspicion's, or
 *   from a node that is not the suspect's successor, is ignored. The node a repaired ring would
 *   hand to is `nextLive` (the next node after the suspect in ring order that is not suspected),
 *   never whoever answered first. A view change (a later core) acts on a confirmed suspicion.
 * - Hearing from a node (any message: token, writes, an answer, a datagram) clears a suspicion
 *   of it. A suspicion learnt from another node's ask is forgotten when that node stops asking
 *   (`forgetMs`), so nodes that never hear from the suspect do not keep it for ever.
 */
import type { Settings } from "../../settings.ts";

/** A repair datagram's content (the channel adds the sender's sequence number). */
export type RepairMessage =
  | { type: "whoLostPred"; epoch: number; suspect: string; from: string }
  | { type: "iLostPred"; epoch: number; suspect: string; from: string };

export type RepairInput =
  /** Hand-offs to `to` failed: ringRepairRetries times in a row, or refused at connect (suspectsSuccessor; the driver counts them). */
  | { type: "handoffFailed"; to: string; epoch: number }
  /** Any message from `node` arrived (or `node` answered one of ours). */
  | { type: "heardFrom"; node: string }
  /** Received datagrams (validated by the channel). */
  | { type: "whoLostPred"; epoch: number; suspect: string; from: string; seq: number }
  | { type: "iLostPred"; epoch: number; suspect: string; from: string }
  /** The clock, with the ring epoch the node is in (its answers carry it). */
  | { type: "tick"; epoch: number };

export type RepairEvent =
  | { type: "suspected"; node: string; by: string }
  | { type: "confirmed"; node: string; confirmedBy: string }
  | { type: "cleared"; node: string; why: "heard" | "forgotten" };

export interface RepairOutput {
  send: RepairMessage[];
  events: RepairEvent[];
}

/** One suspicion, for status. */
export interface SuspicionStatus {
  node: string;
  /** Who asked about it (this node itself when its hand-offs failed). */
  suspectedBy: string[];
  suspectedForMs: number;
  epoch: number;
  confirmedBy: string[];
  /** The node a repaired ring would hand to instead of `node` (nextLive), when this node is its predecessor. */
  newSuccessor?: string;
}

export interface RingRepairOptions {
  self: string;
  /** The ring in file order. */
  ring: readonly string[];
  /** A node answers about its predecessor only after this long without hearing from it. */
  suspectMs: number;
  /** Asks about one suspect, and answers about it, at most this often. */
  askEveryMs: number;
  /** The time of the start: a node counts it as the last time it heard from everyone. */
  nowMs: number;
}

/**
 * Whether a failed hand-off (token or writes) to the successor makes this node suspect it now:
 * after `retries` (ringRepairRetries) failures in a row, or at the first one whose connection
 * was refused. A refusal is an answer from the successor's host: nothing listens on its port, so
 * the process is gone (or not up yet) and no retry will reach it before it restarts, and a
 * restarted node comes back through a view change anyway. A timeout or a cut connection is no
 * such proof (loss, a slow or stopped process), so those keep the count: a lost packet must not
 * start a view change. Suspecting only starts a view change, which is always safe; only the
 * spurious ones cost (issue 14: the count's 300 ms were a third of a non-holder kill's repair).
 */
export function suspectsSuccessor(failuresInRow: number, refusedAtConnect: boolean, retries: number): boolean {
  return refusedAtConnect || failuresInRow >= retries;
}

/** The timings the settings give (docs/ring.md, "Repair"). */
export function repairTimings(settings: Settings): { suspectMs: number; askEveryMs: number } {
  return { suspectMs: settings.tokenHopTimeoutMs * settings.ringRepairRetries, askEveryMs: settings.tokenHopTimeoutMs };
}

/**
 * The node after `suspect` in ring order that is not suspected (the successor a repaired ring
 * gives the suspect's predecessor), or undefined when every other node is suspected. A pure
 * function of the ring and the suspicions: two answers, or who answered first, change nothing.
 */
export function nextLive(ring: readonly string[], suspect: string, suspected: ReadonlySet<string>): string | undefined {
  const at = ring.indexOf(suspect);
  if (at < 0) return undefined;
  for (let step = 1; step < ring.length; step++) {
    const candidate = ring[(at + step) % ring.length];
    if (!suspected.has(candidate)) return candidate;
  }
  return undefined;
}

interface Suspicion {
  sinceMs: number;
  epoch: number;
  by: Set<string>;
  confirmedBy: Set<string>;
  /** When this node last asked about it (own suspicions) or last answered. */
  askedAtMs?: number;
  answeredAtMs?: number;
  /** When another node last asked about it: a suspicion nobody refreshes is forgotten. */
  refreshedAtMs: number;
}

export class RingRepair {
  private readonly heardAtMs = new Map<string, number>();
  private readonly suspicions = new Map<string, Suspicion>();
  private epoch = 0;
  private readonly predecessor: string;
  private readonly successorOf = new Map<string, string>();

  constructor(private readonly options: RingRepairOptions) {
    const { ring, self, nowMs } = options;
    if (!ring.includes(self)) throw new Error(`${self} is not in the ring`);
    for (const id of ring) this.heardAtMs.set(id, nowMs);
    ring.forEach((id, i) => this.successorOf.set(id, ring[(i + 1) % ring.length]));
    this.predecessor = ring[(ring.indexOf(self) - 1 + ring.length) % ring.length];
  }

  /** How long a suspicion learnt from another node's ask lasts without a new ask. */
  get forgetMs(): number {
    return this.options.suspectMs + 2 * this.options.askEveryMs;
  }

  step(input: RepairInput, nowMs: number): RepairOutput {
    const out: RepairOutput = { send: [], events: [] };
    const { self } = this.options;
    // Only ring nodes count; a name from the wire that is not one changes nothing.
    const known = (id: string) => this.heardAtMs.has(id);
    switch (input.type) {
      case "handoffFailed": {
        if (!known(input.to) || input.to === self) return out;
        this.epoch = Math.max(this.epoch, input.epoch);
        const suspicion = this.suspect(input.to, self, this.epoch, nowMs, out);
        this.ask(input.to, suspicion, nowMs, out);
        return out;
      }
      case "heardFrom":
        if (known(input.node)) this.heard(input.node, nowMs, out);
        return out;
      case "whoLostPred": {
        if (!known(input.from) || !known(input.suspect) || input.from === self) return out;
        this.heard(input.from, nowMs, out);
        // It knows it is alive (a restarted node hears the asks that were about it).
        if (input.suspect === self) return out;
        const suspicion = this.suspect(input.suspect, input.from, input.epoch, nowMs, out);
        suspicion.refreshedAtMs = nowMs;
        this.maybeAnswer(input.suspect, suspicion, nowMs, out);
        return out;
      }
      case "iLostPred": {
        if (!known(input.from) || !known(input.suspect) || input.from === self) return out;
        this.heard(input.from, nowMs, out);
        // An answer about itself: it is alive (as for an ask), so it neither records nor
        // confirms a suspicion of itself, nor starts a view change for it.
        if (input.suspect === self) return out;
        // Only the suspect's successor may confirm; an answer of an older epoch is stale.
        if (this.successorOf.get(input.suspect) !== input.from) return out;
        const existing = this.suspicions.get(input.suspect);
        if (existing && input.epoch < existing.epoch) return out;
        if (input.epoch < this.epoch) return out;
        const suspicion = existing ?? this.newSuspicion(input.suspect, input.epoch, nowMs);
        suspicion.refreshedAtMs = nowMs;
        this.confirm(input.suspect, suspicion, input.from, out);
        return out;
      }
      case "tick":
        this.epoch = Math.max(this.epoch, input.epoch);
        for (const [node, suspicion] of [...this.suspicions]) {
          if (suspicion.by.has(self)) this.ask(node, suspicion, nowMs, out);
          else if (nowMs - suspicion.refreshedAtMs >= this.forgetMs) {
            this.suspicions.delete(node);
            out.events.push({ type: "cleared", node, why: "forgotten" });
          }
        }
        return out;
    }
  }

  /** The latest time the driver may tick next (a pure read): `nowMs` while a suspicion is held (asked, forgotten on ticks), else +∞. */
  nextDeadlineMs(nowMs: number): number {
    return this.suspicions.size > 0 ? nowMs : Number.POSITIVE_INFINITY;
  }

  /** The suspicions, oldest first (for status). */
  status(nowMs: number): SuspicionStatus[] {
    const suspected = new Set(this.suspicions.keys());
    return [...this.suspicions].map(([node, s]) => ({
      node,
      suspectedBy: [...s.by],
      suspectedForMs: nowMs - s.sinceMs,
      epoch: s.epoch,
      confirmedBy: [...s.confirmedBy],
      ...(s.by.has(this.options.self) ? { newSuccessor: nextLive(this.options.ring, node, suspected) } : {}),
    }));
  }

  private newSuspicion(node: string, epoch: number, nowMs: number): Suspicion {
    const suspicion: Suspicion = { sinceMs: nowMs, epoch, by: new Set(), confirmedBy: new Set(), refreshedAtMs: nowMs };
    this.suspicions.set(node, suspicion);
    return suspicion;
  }

  private suspect(node: string, by: string, epoch: number, nowMs: number, out: RepairOutput): Suspicion {
    const suspicion = this.suspicions.get(node) ?? this.newSuspicion(node, epoch, nowMs);
    suspicion.epoch = Math.max(suspicion.epoch, epoch);
    if (!suspicion.by.has(by)) {
      suspicion.by.add(by);
      out.events.push({ type: "suspected", node, by });
    }
    return suspicion;
  }

  private confirm(node: string, suspicion: Suspicion, by: string, out: RepairOutput): void {
    if (suspicion.confirmedBy.has(by)) return;
    suspicion.confirmedBy.add(by);
    out.events.push({ type: "confirmed", node, confirmedBy: by });
  }

  /** Asks about an own suspicion, unless it asked less than askEveryMs ago. */
  private ask(node: string, suspicion: Suspicion, nowMs: number, out: RepairOutput): void {
    if (suspicion.askedAtMs !== undefined && nowMs - suspicion.askedAtMs < this.options.askEveryMs) return;
    suspicion.askedAtMs = nowMs;
    out.send.push({ type: "whoLostPred", epoch: suspicion.epoch, suspect: node, from: this.options.self });
  }

  /** The answer rule: the suspect is my predecessor and I have not heard from it for suspectMs. */
  private maybeAnswer(node: string, suspicion: Suspicion, nowMs: number, out: RepairOutput): void {
    const { self, suspectMs, askEveryMs } = this.options;
    if (node !== this.predecessor || node === self) return;
    if (nowMs - this.heardAtMs.get(node)! < suspectMs) return;
    if (suspicion.answeredAtMs !== undefined && nowMs - suspicion.answeredAtMs < askEveryMs) return;
    suspicion.answeredAtMs = nowMs;
    out.send.push({ type: "iLostPred", epoch: Math.max(suspicion.epoch, this.epoch), suspect: node, from: self });
    this.confirm(node, suspicion, self, out);
  }

  private heard(node: string, nowMs: number, out: RepairOutput): void {
    this.heardAtMs.set(node, nowMs);
    if (this.suspicions.delete(node)) out.events.push({ type: "cleared", node, why: "heard" });
  }
}
