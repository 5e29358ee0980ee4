/**
 * A ring node's state and its output sinks: the layer every part of the RingNode (ring_node.ts)
 * builds on.
 *
 * The node is one state machine whose concepts share its state (the token held here, its section,
 * the installed epoch) and run together in each step, so its parts are layers of one class rather
 * than objects wired through hosts: this file holds the fields, the construction from what was
 * stored, and the sinks of the output being built (persist, replies, events); ring_sections.ts the
 * local clients' critical sections, token_visit.ts the token's visit and hand-off, ring_views.ts
 * the node's side of the view change (promise, install, regeneration), and ring_node.ts the inputs,
 * the holder's writes, time and status. The fields are protected for those layers only.
 *
 * No clock, timer, randomness or I/O in here: time comes in as `nowMs`.
 */
import { assert } from "../assert.ts";
import { RingReplica } from "./ring_replica.ts";
import { RingWrites } from "./ring_writes.ts";
import { RingWaiters } from "./ring_waiters.ts";
import type { ClientReply, PersistOp, RingEffect, RingNodeOptions, RingResult } from "./ring_io.ts";
import type { RingEntry, RingHardState, RingToken } from "./ring_types.ts";
import type { ErrorCode } from "../../wire/errors.ts";

export interface Holding {
  /** The token as this node will pass it on (updated by grants and writes). */
  token: RingToken;
  arrivedAtMs: number;
  /** Waiters still to be served in this visit (those queued when the token came). */
  grantsLeft: number;
  /** Whether this visit granted a section (the token then rests here while nobody else asks). */
  granted: boolean;
  passAtMs: number | null;
  /** Writes of this node travelling the ring: wseq → client request waiting (null: none). */
  outstanding: Map<number, number | null>;
}

export interface Section {
  fence: number;
  ticket: string;
  leaseMs: number;
  grantedAtMs: number;
  leaseEndMs: number;
  /** Granted while no long-poll was attached: the client must pick it up before this. */
  pickupDeadlineMs: number;
}

export function inputError(code: ErrorCode, message: string): RingResult {
  return { ok: false, type: "error", error: { code, message } };
}

export abstract class RingNodeState {
  readonly id: string;
  /** The ring nodes of the cluster file, in file order (changed by a reload: `setRing`). */
  ring: readonly string[];
  successor: string;
  predecessor: string;
  /** The installed view's members in ring order. */
  protected members: string[];
  readonly replica = new RingReplica();
  /** The epoch of the view installed in this incarnation (0: none yet). */
  protected epoch = 0;
  /** Tokens and writes of epochs below this are refused: promised to the view change. */
  protected refuseBelowEpoch = 0;
  /** No grant before this (the view's wait for older sections to end). */
  protected grantNotBeforeMs = Number.NEGATIVE_INFINITY;
  /**
   * A section ended here because the token was dropped (a promise, a new view) may still be
   * believed in by its client until its lease ends: the view change's facts report it till then.
   */
  protected droppedSectionUntilMs = Number.NEGATIVE_INFINITY;
  /** The regenerator's re-sent range of this epoch: their return is recognised by origin and place. */
  protected resent: { from: number; to: number } | null = null;
  protected fenceMax = 0;
  /** Highest hop accepted in this epoch (in memory: a restarted node never takes its old epoch again). */
  protected lastHop = 0;
  protected holding: Holding | null = null;
  protected sending: { epoch: number; hop: number } | null = null;
  /** The last token this node held or sent (the view change's facts; in memory only). */
  protected lastToken = { epoch: 0, hop: 0 };
  protected lastTokenAtMs: number | null = null;
  protected lastArrivalMs: number | null = null;
  protected lastRotationMs: number | null = null;
  protected section: Section | null = null;
  protected readonly waiters: RingWaiters;
  /** The replicated log's travel around the ring. */
  protected readonly writes: RingWrites;
  protected wakeUntilMs = Number.NEGATIVE_INFINITY;
  /** When this node last sent `wake` (it sends at most one per tokenIdlePaceMs). */
  protected wokeAtMs = Number.NEGATIVE_INFINITY;
  /** The token lease (in memory only: a restarted node renews before its first grant). */
  protected lease: { epoch: number; validUntilMs: number; sectionMaxMs: number } | null = null;
  protected nowMs = Number.NEGATIVE_INFINITY;
  // The output being built by the current step.
  protected persistOps: PersistOp[] = [];
  protected effects: RingEffect[] = [];

  constructor(protected readonly options: RingNodeOptions) {
    const { id, ring } = options;
    const index = ring.indexOf(id);
    assert(index >= 0, `node ${id} is not in the ring ${ring.join(",")}`);
    assert(new Set(ring).size === ring.length, "ring ids must be unique");
    this.id = id;
    this.ring = [...ring];
    const view = options.storedView ?? null;
    this.members = view && view.members.includes(id) ? [...view.members] : [...ring];
    this.successor = this.neighbour(1);
    this.predecessor = this.neighbour(-1);
    const stored = options.stored;
    // Nothing of the epoch this node ran in before it stopped: it comes back in a newer one.
    this.refuseBelowEpoch = Math.max(options.promisedEpoch ?? 0, (view?.epoch ?? 0) + 1, (stored?.hardState.epoch ?? 0) + 1);
    if (stored) {
      this.fenceMax = stored.hardState.fenceMax;
      if (stored.snapshot) this.replica.install(stored.snapshot);
      this.replica.replay(stored.records);
    }
    this.waiters = new RingWaiters(options.ticketPrefix, options.limits, (reqId, reply) => this.reply(reqId, reply));
    this.writes = new RingWrites({
      id,
      limits: options.limits,
      epoch: () => this.epoch,
      promisedAhead: () => this.refuseBelowEpoch > this.epoch,
      successor: () => this.successor,
      predecessor: () => this.predecessor,
      nowMs: () => this.nowMs,
      persist: (op) => this.persistOps.push(op),
      effect: (effect) => this.effects.push(effect),
      event: (event, fields) => this.event(event, fields),
      ownWriteBack: (entry) => this.ownWriteBack(entry),
    }, this.replica, stored?.snapshot?.wseq ?? 0);
  }

  /**
   * The cluster file was reloaded with these ring nodes (one added or removed: the view change
   * takes it in or out by a new view; until then the installed view's ring stays as it is).
   */
  setRing(ring: readonly string[]): void {
    assert(ring.includes(this.id) && new Set(ring).size === ring.length, `a reloaded ring must list ${this.id} once`);
    this.ring = [...ring];
  }

  /** The member `step` places after this one in the view (-1: before). */
  protected neighbour(step: 1 | -1): string {
    const members = this.members;
    const index = members.indexOf(this.id);
    return members[(index + step + members.length) % members.length];
  }

  // ---- Output sinks ------------------------------------------------------------------------

  /** Stores the hard state; one record per output (a later change in the same step updates it). */
  protected persistHardState(): void {
    const state: RingHardState = { epoch: this.epoch, fenceMax: this.fenceMax, lastHop: this.lastHop };
    const earlier = this.persistOps.find((op) => op.type === "hardState");
    if (earlier) earlier.state = state;
    else this.persistOps.push({ type: "hardState", state });
  }

  protected reply(reqId: number, reply: ClientReply): void {
    this.effects.push({ type: "reply", reqId, reply });
  }

  protected event(event: string, fields: Record<string, unknown>): void {
    this.effects.push({ type: "event", event, fields });
  }

  /** A write of this node's came back around (the holder's writes, ring_node.ts). */
  protected abstract ownWriteBack(entry: RingEntry): void;
}
