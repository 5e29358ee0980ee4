/**
 * The simulated network: every message between actors goes through here. The transport contract
 * is deliberately weak (TigerBeetle's): a message may be dropped, duplicated, delayed and so
 * reordered, or blocked by a partition, symmetric or one-way. In the heal phase only delay
 * remains. Delays are at least `delayMinMs` (≥ 2 ms; see docs/simulator.md, "Assumptions").
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

export class Network {
  /** Blocked directed links, `from>to`, with how many partitions block each (they overlap). */
  private readonly blocked = new Map<string, number>();
  /** Slowed directed links, `from>to`: extra delay of every message sent on them (a stuck connection). */
  private readonly slowed = new Map<string, number>();
  private idNext = 1;
  faultsOn = true;
  sent = 0;
  dropped = 0;

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
  }

  get partitioned(): boolean {
    return this.blocked.size > 0;
  }
}
