/**
 * The simulated network: every message between actors goes through here. The transport contract
 * is deliberately weak (TigerBeetle's): a message may be dropped, duplicated, delayed and so
 * reordered, or blocked by a partition, symmetric or one-way, or held back and delivered late
 * (seconds after the normal delays: the `late-delivery` fault). In the heal phase only delay
 * remains: what is still held back is delivered at the heal. Delays are at least `delayMinMs`
 * (≥ 2 ms; see docs/simulator.md, "Assumptions").
 */
import type { Prng } from "../../lib/core/prng.ts";
import type { Actor } from "./actor.ts";
import type { Sim } from "./simulator.ts";

export interface NetworkProfile {
  dropRate: number;
  duplicateRate: number;
  /** Share of messages that get an extra delay (so overtake later ones). */
  reorderRate: number;
  delayMinMs: number;
  delayMaxMs: number;
  reorderDelayMaxMs: number;
}

export interface Envelope {
  id: number;
  from: string;
  to: string;
  payload: unknown;
}

/** One-way links blocked at once beyond this are not added (bounded state). */
const BLOCKED_LINKS_MAX = 10_000;
/** Messages held back at once, and holds waiting for a message, at most (bounded state). */
const HELD_MAX = 1_000;

export class Network {
  /** Blocked directed links, `from>to`, with how many partitions block each (they overlap). */
  private readonly blocked = new Map<string, number>();
  /** Slowed directed links, `from>to`: extra delay of every message sent on them (a stuck connection). */
  private readonly slowed = new Map<string, number>();
  /** How late each of the next messages sent is to arrive (`holdNext`), oldest hold first. */
  private readonly holdsMs: number[] = [];
  /** Messages held back, by envelope id, until their late delivery (or the heal). */
  private readonly held = new Map<number, Envelope>();
  private idNext = 1;
  faultsOn = true;
  sent = 0;
  dropped = 0;
  /** Messages held back so far (the late-delivery fault): a checker that bounds a delay skips their windows. */
  heldBack = 0;

  constructor(private readonly sim: Sim, private readonly prng: Prng, readonly profile: NetworkProfile) {}

  send(from: Actor, to: string, payload: unknown, label: string): void {
    const envelope: Envelope = { id: this.idNext++, from: from.id, to, payload };
    this.sent += 1;
    const verbose = this.sim.trace.verbose;
    if (this.blocked.has(`${from.id}>${to}`)) {
      this.dropped += 1;
      if (verbose) this.sim.log(from.id, ">", `${label} -> ${to} #${envelope.id} cut by partition`);
      return;
    }
    if (this.faultsOn && this.holdsMs.length > 0 && this.held.size < HELD_MAX) {
      // Held back whole: no drop, copy or delay draw, so runs without holds draw as before.
      return this.holdBack(envelope, label, this.holdsMs.shift()!);
    }
    const p = this.profile;
    if (this.faultsOn && p.dropRate > 0 && this.prng.chance(p.dropRate)) {
      this.dropped += 1;
      if (verbose) this.sim.log(from.id, ">", `${label} -> ${to} #${envelope.id} dropped`);
      return;
    }
    const copies = this.faultsOn && p.duplicateRate > 0 && this.prng.chance(p.duplicateRate) ? 2 : 1;
    for (let copy = 0; copy < copies; copy++) {
      let delayMs = this.prng.between(p.delayMinMs, p.delayMaxMs);
      if (this.faultsOn && p.reorderRate > 0 && this.prng.chance(p.reorderRate)) {
        delayMs += this.prng.between(0, p.reorderDelayMaxMs);
      }
      delayMs += this.slowed.get(`${from.id}>${to}`) ?? 0;
      if (verbose) this.sim.log(from.id, ">", `${label} -> ${to} #${envelope.id} in ${delayMs}ms${copy ? " (dup)" : ""}`);
      this.sim.at(this.sim.nowMs + delayMs, () => this.sim.actor(to).deliver(envelope));
    }
  }

  /**
   * The host's answer for a crashed process (`Actor.refuseWhileCrashed`): a request that arrives
   * where nothing listens is refused, as TCP refuses a connect to a closed port. It travels the
   * reverse link (a partition cuts it) after `delayMinMs`, with no draw from the PRNG, so runs
   * without crashes draw as before.
   */
  refuse(at: Actor, to: string, payload: unknown): void {
    if (this.blocked.has(`${at.id}>${to}`)) return;
    const envelope: Envelope = { id: this.idNext++, from: at.id, to, payload };
    this.sent += 1;
    if (this.sim.trace.verbose) this.sim.log(at.id, ">", `refused -> ${to} #${envelope.id}`);
    this.sim.at(this.sim.nowMs + this.profile.delayMinMs, () => this.sim.actor(to).deliver(envelope));
  }

  /** The next message sent (by anyone, on any link that is not cut) arrives `lateMs` late. */
  holdNext(lateMs: number): void {
    if (this.holdsMs.length < HELD_MAX) this.holdsMs.push(lateMs);
  }

  private holdBack(envelope: Envelope, label: string, lateMs: number): void {
    this.heldBack += 1;
    this.held.set(envelope.id, envelope);
    this.sim.log(envelope.from, ">", `${label} -> ${envelope.to} #${envelope.id} held back: arrives in ${lateMs}ms`);
    this.sim.at(this.sim.nowMs + lateMs, () => this.release(envelope.id));
  }

  /** Delivers a held-back message (once: the heal may have released it already). */
  private release(id: number): void {
    const envelope = this.held.get(id);
    if (!envelope) return;
    this.held.delete(id);
    this.sim.log(envelope.to, ">", `late delivery of #${id} from ${envelope.from}`);
    this.sim.actor(envelope.to).deliver(envelope);
  }

  /** Blocks each directed link `[from, to]` until `uncut` of the same list (or `heal`). */
  cut(links: ReadonlyArray<readonly [string, string]>): void {
    for (const [from, to] of links) {
      const key = `${from}>${to}`;
      if (this.blocked.size < BLOCKED_LINKS_MAX || this.blocked.has(key)) {
        this.blocked.set(key, (this.blocked.get(key) ?? 0) + 1);
      }
    }
  }

  uncut(links: ReadonlyArray<readonly [string, string]>): void {
    for (const [from, to] of links) {
      const key = `${from}>${to}`;
      const count = this.blocked.get(key) ?? 0;
      if (count <= 1) this.blocked.delete(key);
      else this.blocked.set(key, count - 1);
    }
  }

  /** Adds `extraMs` to every message sent on each link until `unslow` (or `heal`). */
  slow(links: ReadonlyArray<readonly [string, string]>, extraMs: number): void {
    for (const [from, to] of links) this.slowed.set(`${from}>${to}`, extraMs);
  }

  unslow(links: ReadonlyArray<readonly [string, string]>): void {
    for (const [from, to] of links) this.slowed.delete(`${from}>${to}`);
  }

  heal(): void {
    this.blocked.clear();
    this.slowed.clear();
    // The heal's promise is "only delay remains": held messages arrive now (after the heal's
    // restarts, as events of their own), late as they are, and no new hold starts.
    this.holdsMs.length = 0;
    for (const id of this.held.keys()) this.sim.at(this.sim.nowMs, () => this.release(id));
  }

  /** Whether the link between `a` and `b` is cut or slowed, in either direction. */
  impaired(a: string, b: string): boolean {
    return [`${a}>${b}`, `${b}>${a}`].some((key) => this.blocked.has(key) || this.slowed.has(key));
  }

  get partitioned(): boolean {
    return this.blocked.size > 0;
  }
}
