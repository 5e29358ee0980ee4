/**
 * The ring kind's invariants (research/ring-anchors.md §4.9, docs/ring-view.md). Per event: at
 * most one client in the critical section by its own lease, at most one node running a section,
 * at most one node holding the token of an epoch and at most one holding a usable token (with a
 * valid token lease). Per core step (hooks): fencing tokens strictly increase over the whole run
 * (across regenerations), a node's epoch never goes back (across restarts too), one token is
 * made per epoch, every installed view is the one view of its epoch and has a majority that
 * promised its ballot, nodes agree on every committed write (same write at the same wseq), every
 * write acked to a client is the committed write at its wseq, and no node commits a write before
 * it came back around the ring to its origin. At the end (after the heal): the members of the
 * final view hold equal replicas.
 */
import type { RingInput, RingOutput, RingResult } from "../../../lib/core/ring/ring_node.ts";
import type { RingEntry, RingOp } from "../../../lib/core/ring/ring_types.ts";
import type { View } from "../../../lib/core/ring/view_wire.ts";
import type { Checker } from "../checkers.ts";
import type { Sim } from "../simulator.ts";
import type { AckedWrite, RingClientActor, RingSection } from "./client.ts";
import type { RingNodeActor, RingObserver } from "./node.ts";

export const RING_CHECKERS = {
  sectionMutex: "ring.section-mutex",
  nodeSectionMutex: "ring.node-section-mutex",
  tokenUnique: "ring.token-unique",
  fencing: "ring.fencing",
  epochMonotone: "ring.epoch-monotone",
  prefixAgreement: "ring.prefix-agreement",
  ackedWriteSurvives: "ring.acked-write-survives",
  commitAfterReturn: "ring.commit-after-return",
  oneTokenPerEpoch: "ring.one-token-per-epoch",
  viewMajority: "ring.view-majority",
  replicasEqual: "ring.replicas-equal",
} as const;

export function writeSignature(author: string, op: RingOp): string {
  return `${author}|${op.type}|${op.key}|${op.type === "put" ? op.value : ""}`;
}

/**
 * One version of a write: its epoch stamp and place (one token per epoch assigns each place
 * once). A regeneration re-sends it with its stamp and a new origin (the regenerator), which
 * only says where its return counts.
 */
function versionKey(entry: RingEntry): string {
  return `${entry.epoch}/${entry.wseq}`;
}

export function sectionMutexChecker(clients: () => readonly RingClientActor[]): Checker {
  return {
    name: RING_CHECKERS.sectionMutex,
    doc: "never two clients that believe (by their lease) they are in the ring's critical section",
    check() {
      let inside: RingSection | undefined;
      for (const client of clients()) {
        const section = client.belief();
        if (!section) continue;
        if (inside) return `${inside.client} (fence ${inside.fence} at ${inside.node}) and ${section.client} (fence ${section.fence} at ${section.node}) both in the section`;
        inside = section;
      }
      return undefined;
    },
  };
}

/**
 * Node-state checks. Sections and tokens change only in core steps (time alone only ends
 * leases), so these run after events that stepped a ring core, which `changed` reports.
 */
export function nodeStateChecker(nodes: () => readonly RingNodeActor[], changed: () => boolean): Checker[] {
  return [{
    name: RING_CHECKERS.nodeSectionMutex,
    doc: "at most one ring node runs a critical section whose lease has not ended",
    check() {
      if (!changed()) return undefined;
      const running = nodes().filter((n) => {
        const section = n.core?.status(n.clock.nowMs()).section;
        return n.up && section && section.leaseRemainingMs > 0;
      });
      return running.length > 1 ? `sections at ${running.map((n) => n.id).join(" and ")}` : undefined;
    },
  }, {
    name: RING_CHECKERS.tokenUnique,
    doc: "at most one ring node holds the token of any one epoch, and at most one holds a usable token (a token with a valid token lease, by its own clock)",
    check() {
      if (!changed()) return undefined;
      const holders = new Map<number, string>();
      let usable: string | undefined;
      for (const node of nodes()) {
        const status = node.core?.status(node.clock.nowMs());
        const token = status?.heldToken;
        if (!token || !node.up) continue;
        const other = holders.get(token.epoch);
        if (other) return `${other} and ${node.id} both hold the token of epoch ${token.epoch}`;
        holders.set(token.epoch, node.id);
        if (status!.leaseValidUntilMs === null) continue;
        const here = `${node.id} (epoch ${token.epoch}, lease to ${status!.leaseValidUntilMs}ms its clock)`;
        if (usable) return `two usable tokens: ${usable} and ${here}`;
        usable = here;
      }
      return undefined;
    },
  }];
}

/** The same view: every field the coordinator decided. */
function viewText(view: View): string {
  return `${view.epoch}/${view.coordinator} members ${view.members.join(",")} regenerator ${view.regenerator} from ${view.resendFromWseq}..${view.startWseq}`;
}

export class RingStepObserver implements RingObserver {
  private fenceMax = 0;
  private readonly epochs = new Map<string, number>();
  /** The committed write at each wseq, as first seen committed on any node. */
  private readonly committed = new Map<number, string>();
  private readonly checkedTo = new Map<string, number>();
  private readonly acked = new Map<number, string>();
  /** Set by every core step, cleared by `takeChanged` (the node-state checkers' trigger). */
  private stepped = true;
  /** When each acknowledged write was acknowledged (global ms), for convergence at the end. */
  readonly ackedAtMs = new Map<number, number>();
  /**
   * Each version of a write (`versionKey`: its epoch stamp, wseq and origin) as it travels: the
   * nodes seen holding it, and whether it came back to its origin having passed all of them.
   * One entry per write of the run (runs are bounded).
   */
  private readonly travels = new Map<string, { visited: Set<string>; returned: boolean }>();
  private readonly commitCheckedTo = new Map<string, number>();
  /** The committed op at each wseq (the history every replica must fold to). */
  private readonly committedOps = new Map<number, RingOp>();
  /** When each wseq was first committed on some node (global ms). */
  private readonly commitReachedAtMs = new Map<number, number>();
  /** Epoch → the node that made its token (tokenRegenerated). */
  private readonly regenerated = new Map<number, string>();
  /** Epoch → the view installed in it (as text), first seen. */
  private readonly views = new Map<number, string>();
  /** Coordinator → how many of the installed views it decided (one per epoch). */
  private readonly coordinated = new Map<string, number>();

  constructor(
    private readonly sim: Sim,
    private readonly ring: readonly string[],
    private readonly nodeById: (id: string) => RingNodeActor | undefined,
  ) {
    const hooks = [
      RING_CHECKERS.oneTokenPerEpoch,
      RING_CHECKERS.viewMajority,
      RING_CHECKERS.replicasEqual,
      RING_CHECKERS.fencing,
      RING_CHECKERS.epochMonotone,
      RING_CHECKERS.prefixAgreement,
      RING_CHECKERS.ackedWriteSurvives,
      RING_CHECKERS.commitAfterReturn,
    ];
    for (const name of hooks) sim.checkers.declareHook(name);
  }

  /** Coordinator (a ring node or the arbiter) → how many installed views it decided. */
  viewsByCoordinator(): ReadonlyMap<string, number> {
    return this.coordinated;
  }

  restarted(node: RingNodeActor): void {
    this.checkedTo.set(node.id, 0); // re-check what it replayed from its disk
    this.commitCheckedTo.set(node.id, 0);
  }

  /** Whether a ring core stepped since the last call (read by the last node-state checker). */
  peekChanged(): boolean {
    return this.stepped;
  }

  clearChanged(): void {
    this.stepped = false;
  }

  afterStep(node: RingNodeActor, input: RingInput | { type: "start" }, output: RingOutput): void {
    this.stepped = true;
    if (input.type === "install") this.checkView(node, input.view);
    for (const effect of output.effects) {
      if (effect.type === "event" && effect.event === "tokenRegenerated") this.checkRegenerated(node, Number(effect.fields.epoch));
      if (effect.type !== "event" || effect.event !== "granted") continue;
      const fence = Number(effect.fields.fence);
      if (fence <= this.fenceMax) {
        return this.sim.violate(RING_CHECKERS.fencing, `${node.id} granted fence ${fence} ≤ earlier ${this.fenceMax} (epoch ${effect.fields.epoch})`);
      }
      this.fenceMax = fence;
    }
    const core = node.core!;
    // The installed view's epoch, or the one it promised (a restarted node has none installed
    // yet, and refuses everything up to the epoch it ran in).
    const status = core.status(0);
    const epoch = Math.max(status.epoch, status.refuseBelowEpoch);
    const before = this.epochs.get(node.id) ?? 0;
    if (epoch < before) return this.sim.violate(RING_CHECKERS.epochMonotone, `${node.id} went from epoch ${before} back to ${epoch}`);
    this.epochs.set(node.id, epoch);
    this.trackTravels(node, input, output.result);
    this.checkCommitAfterReturn(node);
    this.checkCommitted(node);
  }

  /** At most one token per epoch: one tokenRegenerated (a view's regenerator, once). */
  private checkRegenerated(node: RingNodeActor, epoch: number): void {
    const other = this.regenerated.get(epoch);
    if (other !== undefined) {
      return this.sim.violate(RING_CHECKERS.oneTokenPerEpoch, `${other} and ${node.id} both made a token of epoch ${epoch}`);
    }
    this.regenerated.set(epoch, node.id);
  }

  /**
   * No view without a majority: an installed view has a strict majority of the ring's nodes as
   * members; each member stored a promise of its ballot (or, in the same store, of a newer epoch:
   * the driver stores once per step, so a coordinator that installs and at once prepares the
   * next epoch stores only the newer promise) and never a promise of that epoch to another
   * coordinator (one promise per epoch); and it is the same view at every node that installs
   * its epoch.
   */
  private checkView(node: RingNodeActor, view: View): void {
    const quorum = Math.floor(this.ring.length / 2) + 1;
    const text = viewText(view);
    if (new Set(view.members).size < quorum || !view.members.every((id) => this.ring.includes(id))) {
      return this.sim.violate(RING_CHECKERS.viewMajority, `${node.id} installed view ${text}: not a majority of ${this.ring.length}`);
    }
    for (const id of view.members) {
      const disk = this.nodeById(id)?.disk;
      const coordinators = disk?.promisedIn(view.epoch) ?? [];
      const others = coordinators.filter((c) => c !== view.coordinator);
      if (others.length > 0) {
        return this.sim.violate(RING_CHECKERS.viewMajority, `${id}, a member of view ${text} installed at ${node.id}, promised epoch ${view.epoch} to ${coordinators.join(" and ")}`);
      }
      if (coordinators.length === 0 && !(disk && disk.promisedEpochMax() > view.epoch)) {
        return this.sim.violate(RING_CHECKERS.viewMajority, `${node.id} installed view ${text}, but ${id} never stored a promise of ballot ${view.epoch}/${view.coordinator}`);
      }
    }
    const known = this.views.get(view.epoch);
    if (known === undefined) {
      this.views.set(view.epoch, text);
      this.coordinated.set(view.coordinator, (this.coordinated.get(view.coordinator) ?? 0) + 1);
    } else if (known !== text) return this.sim.violate(RING_CHECKERS.viewMajority, `two views of epoch ${view.epoch}: ${known}, and ${text} at ${node.id}`);
  }

  /**
   * Replicas equal after healing (at the end of a run whose liveness held): every ring node is a
   * member of the final view (the newest installed one) and in its epoch, the members committed
   * the same prefix (each at least what any node had committed by `sinceMs`: the watermark
   * travels with the token, so a node learns the last commits at the token's next visit) and
   * each one's committed map is the fold of the one committed history up to its own commit: the
   * same keys and values.
   */
  checkReplicasEqual(nodes: readonly RingNodeActor[], sinceMs: number): void {
    const up = nodes.filter((n) => n.core && n.service);
    const final = up.map((n) => n.service!.viewStatus().view).reduce<View | null>((a, v) => (v && (!a || v.epoch > a.epoch) ? v : a), null);
    if (!final) return this.sim.violate(RING_CHECKERS.replicasEqual, "no view installed anywhere at the end");
    const missing = this.ring.filter((id) => !final.members.includes(id));
    if (missing.length > 0) return this.sim.violate(RING_CHECKERS.replicasEqual, `${missing.join(",")} not in the final view ${viewText(final)}`);
    const commitFloor = this.commitMaxBy(sinceMs);
    for (const id of final.members) {
      const node = up.find((n) => n.id === id);
      if (!node) return this.sim.violate(RING_CHECKERS.replicasEqual, `${id}, a member of the final view, is down at the end`);
      const replica = node.core!.replica;
      const epoch = node.core!.status(node.clock.nowMs()).epoch;
      if (epoch !== final.epoch) return this.sim.violate(RING_CHECKERS.replicasEqual, `${id} is in epoch ${epoch} at the end, the final view is ${final.epoch}`);
      if (replica.commit < commitFloor) {
        return this.sim.violate(RING_CHECKERS.replicasEqual, `${id} committed up to ${replica.commit} at the end, below ${commitFloor} committed elsewhere by ${sinceMs}ms`);
      }
      const expected = this.foldCommitted(replica.commit);
      if (!expected) continue; // a write this run never saw committed in a log (compacted, or a snapshot): cannot judge
      const keys = replica.keys(false);
      const wrong = [...new Set([...keys, ...expected.keys()])].find((key) => replica.read(key, false) !== expected.get(key));
      if (wrong !== undefined) {
        return this.sim.violate(
          RING_CHECKERS.replicasEqual,
          `${id} holds ${wrong}=${replica.read(wrong, false)} at commit ${replica.commit}, the committed writes give ${expected.get(wrong)}`,
        );
      }
    }
  }

  /** The map the committed writes 1..`commit` give; undefined when one of them was never seen. */
  private foldCommitted(commit: number): Map<string, string> | undefined {
    const map = new Map<string, string>();
    for (let wseq = 1; wseq <= commit; wseq++) {
      const op = this.committedOps.get(wseq);
      if (!op) return undefined;
      if (op.type === "put") map.set(op.key, op.value);
      else if (op.type === "delete") map.delete(op.key);
      // A regenerator's marker ("noop") changes no key.
    }
    return map;
  }

  /** The highest commit any node reached by `atMs` (global time). */
  private commitMaxBy(atMs: number): number {
    let max = 0;
    for (const [commit, reachedAtMs] of this.commitReachedAtMs) if (reachedAtMs <= atMs) max = Math.max(max, commit);
    return max;
  }

  /**
   * Notes which node had which version of each uncommitted write (its pending entries after the
   * step, and what it took in a write batch, up to the batch's ackedTo), and a version's return:
   * its origin took it from its predecessor in a write batch. It counts as back only if every
   * other member of the origin's view had it first.
   */
  private trackTravels(node: RingNodeActor, input: RingInput | { type: "start" }, result: RingResult | undefined): void {
    const replica = node.core!.replica;
    for (let wseq = replica.commit + 1; wseq <= replica.lastApplied; wseq++) {
      const entry = replica.entryAt(wseq);
      if (entry) this.travelOf(entry).visited.add(node.id);
    }
    if (input.type !== "writes" || !result || (result.type !== "writes" && result.type !== "gap")) return;
    for (const entry of input.entries) {
      if (entry.wseq > result.ackedTo) continue;
      const travel = this.travelOf(entry);
      // A node that took the write in a batch passed it on, also one that keeps an older version
      // it committed already (a regeneration re-sends writes that may have committed).
      if (entry.origin !== node.id) travel.visited.add(node.id);
      // Around the ring of its epoch: every member of the origin's view.
      else travel.returned ||= node.core!.status(0).members.every((id) => travel.visited.has(id));
    }
  }

  private travelOf(entry: RingEntry): { visited: Set<string>; returned: boolean } {
    const key = versionKey(entry);
    let travel = this.travels.get(key);
    if (!travel) this.travels.set(key, travel = { visited: new Set(), returned: false });
    return travel;
  }

  /** Every write this node newly committed must be a version that came back to its origin. */
  private checkCommitAfterReturn(node: RingNodeActor): void {
    const replica = node.core!.replica;
    const from = Math.max(this.commitCheckedTo.get(node.id) ?? 0, replica.logStart - 1);
    for (let wseq = from + 1; wseq <= replica.commit; wseq++) {
      const entry = replica.entryAt(wseq);
      if (!entry) continue;
      const travel = this.travels.get(versionKey(entry));
      if (!travel?.returned) {
        const where = travel ? `held by ${[...travel.visited].sort().join(",")}` : "never seen uncommitted";
        return this.sim.violate(
          RING_CHECKERS.commitAfterReturn,
          `${node.id} committed wseq ${wseq} (epoch ${entry.epoch}, origin ${entry.origin}) before it came back around the ring to ${entry.origin} (${where})`,
        );
      }
    }
    this.commitCheckedTo.set(node.id, Math.max(from, replica.commit));
  }

  /** Compares the writes this node committed since the last look with everyone's. */
  private checkCommitted(node: RingNodeActor): void {
    const replica = node.core!.replica;
    const from = Math.max(this.checkedTo.get(node.id) ?? 0, replica.logStart - 1);
    for (let wseq = from + 1; wseq <= replica.commit; wseq++) {
      const entry: RingEntry | undefined = replica.entryAt(wseq);
      if (!entry) continue;
      const signature = writeSignature(entry.author, entry.op);
      const known = this.committed.get(wseq);
      if (known === undefined) {
        this.committed.set(wseq, signature);
        this.committedOps.set(wseq, entry.op);
        this.commitReachedAtMs.set(wseq, this.sim.nowMs);
      }
      else if (known !== signature) {
        return this.sim.violate(RING_CHECKERS.prefixAgreement, `${node.id} committed ${signature} at wseq ${wseq}, others ${known}`);
      }
      const acked = this.acked.get(wseq);
      if (acked !== undefined && acked !== signature) {
        return this.sim.violate(RING_CHECKERS.ackedWriteSurvives, `write ${acked} acked at wseq ${wseq}, but ${node.id} committed ${signature} there`);
      }
    }
    this.checkedTo.set(node.id, Math.max(from, replica.commit));
  }

  /** A client got "written": it must be (or become) the committed write at that wseq. */
  ackedWrite(write: AckedWrite): void {
    const signature = writeSignature(write.author, write.op);
    const known = this.committed.get(write.wseq);
    if (known !== undefined && known !== signature) {
      return this.sim.violate(RING_CHECKERS.ackedWriteSurvives, `write ${signature} acked at wseq ${write.wseq}, but ${known} is committed there`);
    }
    this.acked.set(write.wseq, signature);
    this.ackedAtMs.set(write.wseq, this.sim.nowMs);
  }

  /** The highest wseq acknowledged no later than `atMs` (every node must commit up to it). */
  ackedMaxBy(atMs: number): number {
    let max = 0;
    for (const [wseq, ackedAtMs] of this.ackedAtMs) if (ackedAtMs <= atMs) max = Math.max(max, wseq);
    return max;
  }
}
