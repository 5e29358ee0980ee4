/**
 * The ring's view-change core (lib/core/ring/view.ts, token_lease.ts) on a tiny in-memory
 * network the test controls: per-message delays, cut links, crashed nodes, restarts from what a
 * node persisted, and a virtual clock. A few lines stand in for the ring node: a promise drops
 * a held token, an install makes the regenerator hold the new one. Each test states the rule it
 * pins down; the last one runs seeded random interleavings with drops and crashes under the
 * checkers of `checkSafety` (one view per epoch, a majority of stored promises behind every view,
 * one new token per epoch, no two valid leases of different epochs at one time), which the
 * other network tests run at their end too.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  type Ballot,
  EPOCH_MAX,
  FENCE_EPOCH_FACTOR,
  fenceFloor,
  type LocalFacts,
  nextFence,
  restartVotersProblem,
  type View,
  ViewCore,
  type ViewDecision,
  type ViewHardState,
  type ViewMessage,
} from "../lib/core/ring/view.ts";
import { Prng } from "../lib/core/prng.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { decideView, type Promised } from "../lib/core/ring/decide.ts";
import { LeaseHold } from "../lib/core/ring/token_lease.ts";

const S = DEFAULT_SETTINGS;
/** The voter list of the three-node worlds, which hand-built prepares and renewals carry. */
const ABC = ["a", "b", "c"];
const TICK_MS = 10;
const ARBITER = "arb";

interface Packet {
  from: string;
  to: string;
  message: ViewMessage;
  atMs: number;
}

function noFacts(): LocalFacts {
  return { lastApplied: 0, lastWriteEpoch: 0, commit: 0, tokenEpoch: 0, tokenHop: 0, token: "away", sectionRemainingMs: 0, lastTokenAgeMs: 0 };
}

/** Ring nodes (and optionally the arbiter) wired by a network with delays, cuts and crashes. */
class World {
  nowMs = 0;
  readonly nodes = new Map<string, ViewCore>();
  readonly facts = new Map<string, LocalFacts>();
  readonly disk = new Map<string, ViewHardState>();
  readonly queue: Packet[] = [];
  /** Cut links, both ways: "a|b". */
  readonly cut = new Set<string>();
  readonly decisions: Array<{ node: string; atMs: number; decision: ViewDecision }> = [];
  /** Every view installed anywhere, by epoch, as JSON (one view per epoch: one string). */
  readonly viewsByEpoch = new Map<number, Set<string>>();
  /** Every ballot each node ever persisted as promised. */
  readonly promisedLog = new Map<string, Ballot[]>();
  readonly leases: Array<{ node: string; epoch: number; fromMs: number; untilMs: number }> = [];
  /** Delay of each message; the random test replaces it. */
  delay: (from: string, to: string) => number = () => 1;
  /** Messages to drop (returns true); none by default. */
  drop: (packet: Packet) => boolean = () => false;
  /** Clock rate of a node against the world's clock (1 unless a test sets it). */
  readonly clockRate = new Map<string, number>();

  constructor(public ring: string[], withArbiter = false) {
    for (const id of ring) this.start(id);
    if (withArbiter) this.start(ARBITER);
  }

  /** Starts `id` with the cluster file's ring `ring` (the world's by default). */
  start(id: string, ring = this.ring): void {
    if (!this.facts.has(id)) this.facts.set(id, noFacts());
    const core = new ViewCore({
      id,
      ring,
      arbiter: ARBITER,
      settings: S,
      localFacts: () => ({ ...this.facts.get(id)! }),
    }, this.disk.get(id) ?? null, this.local(id));
    this.nodes.set(id, core);
  }

  /** `id`'s clock now: the world's clock at its rate (whole milliseconds, never going back). */
  local(id: string): number {
    return Math.floor(this.nowMs * (this.clockRate.get(id) ?? 1));
  }

  /** Kills `id` (its memory is gone; its disk stays) and drops what is in flight to it. */
  crash(id: string): void {
    this.nodes.delete(id);
    const f = this.facts.get(id)!;
    this.facts.set(id, { ...f, token: "away", sectionRemainingMs: 0 });
  }

  restart(id: string): void {
    assert.ok(!this.nodes.has(id));
    this.start(id);
  }

  node(id: string): ViewCore {
    const core = this.nodes.get(id);
    assert.ok(core, `${id} is not running`);
    return core;
  }

  isCut(a: string, b: string): boolean {
    return this.cut.has(`${a}|${b}`) || this.cut.has(`${b}|${a}`);
  }

  /** Cuts every link between the two groups. */
  split(left: string[], right: string[]): void {
    for (const a of left) for (const b of right) this.cut.add(`${a}|${b}`);
  }

  collect(id: string): void {
    const core = this.nodes.get(id);
    if (!core) return;
    const ready = core.ready();
    if (ready.persist) {
      const before = this.disk.get(id);
      if (before) assert.ok(ready.persist.promised.epoch >= before.promised.epoch, `${id}: a stored promise went back`);
      this.disk.set(id, structuredClone(ready.persist));
      const log = this.promisedLog.get(id) ?? [];
      log.push({ ...ready.persist.promised });
      this.promisedLog.set(id, log);
    }
    for (const { to, message } of ready.send) {
      // A dead or cut peer refuses the connection at once.
      if (!this.nodes.has(to) || this.isCut(id, to)) {
        core.sendFailed(to, message, this.local(id));
        continue;
      }
      this.queue.push({ from: id, to, message: structuredClone(message), atMs: this.nowMs + this.delay(id, to) });
    }
    for (const decision of ready.decisions) this.apply(id, decision);
    if (ready.send.length > 0 || ready.decisions.length > 0) this.collect(id);
  }

  /** What the ring node would do with a decision (the few facts the view core reads). */
  private apply(id: string, decision: ViewDecision): void {
    this.decisions.push({ node: id, atMs: this.nowMs, decision });
    const facts = this.facts.get(id)!;
    if (decision.type === "promised" && facts.token !== "away" && facts.tokenEpoch < decision.epoch) {
      this.facts.set(id, { ...facts, token: "away", sectionRemainingMs: 0 });
    }
    if (decision.type === "install") {
      const key = decision.view.epoch;
      const views = this.viewsByEpoch.get(key) ?? new Set<string>();
      views.add(JSON.stringify(decision.view));
      this.viewsByEpoch.set(key, views);
      if (decision.regenerate) {
        this.facts.set(id, { ...facts, token: "held", tokenEpoch: decision.view.epoch, tokenHop: 1, lastTokenAgeMs: 0 });
      }
    }
    if (decision.type === "lease") {
      // Kept on the world's clock, like every time the checkers compare.
      const untilMs = decision.validUntilMs / (this.clockRate.get(id) ?? 1);
      this.leases.push({ node: id, epoch: decision.epoch, fromMs: this.nowMs, untilMs });
    }
  }

  /** Delivers every packet due by now (in due order), and what they cause; bounded. */
  deliver(): void {
    for (let round = 0; round < 100_000; round++) {
      let next = -1;
      for (let i = 0; i < this.queue.length; i++) {
        if (this.queue[i].atMs <= this.nowMs && (next < 0 || this.queue[i].atMs < this.queue[next].atMs)) next = i;
      }
      if (next < 0) return;
      const [packet] = this.queue.splice(next, 1);
      const target = this.nodes.get(packet.to);
      if (!target || this.isCut(packet.from, packet.to) || this.drop(packet)) continue;
      target.receive(packet.message, this.local(packet.to));
      this.collect(packet.to);
    }
    assert.fail("delivery did not settle");
  }

  step(): void {
    this.nowMs += TICK_MS;
    for (const [id, core] of this.nodes) {
      core.tick(this.local(id));
      this.collect(id);
    }
    this.deliver();
  }

  run(ms: number): void {
    const end = this.nowMs + ms;
    while (this.nowMs < end) this.step();
  }

  /** Runs until `condition` holds, at most `maxMs`; returns whether it did. */
  runUntil(condition: () => boolean, maxMs: number): boolean {
    const end = this.nowMs + maxMs;
    while (!condition() && this.nowMs < end) this.step();
    return condition();
  }

  want(id: string, reason: "tokenLoss" | "suspect" | "rejoin" | "membership" | "bootstrap" = "suspect"): void {
    this.node(id).startViewChange(reason, this.local(id));
    this.collect(id);
  }

  /** The view `id` has installed (null: none). */
  view(id: string): View | null {
    return this.node(id).status(this.local(id)).view;
  }

  /** All running voters installed the same view, of an epoch at least `minEpoch`. */
  settled(ids: string[], minEpoch = 1): boolean {
    const views = ids.map((id) => this.view(id));
    const first = views[0];
    return first !== null && first.epoch >= minEpoch && views.every((v) => JSON.stringify(v) === JSON.stringify(first));
  }

  installs(): Array<{ node: string; atMs: number; decision: Extract<ViewDecision, { type: "install" }> }> {
    return this.decisions.flatMap((d) => d.decision.type === "install" ? [{ ...d, decision: d.decision }] : []);
  }

  /** The checkers of the random test; cheap enough to run after every test. */
  checkSafety(): void {
    for (const [epoch, views] of this.viewsByEpoch) {
      assert.equal(views.size, 1, `epoch ${epoch} has ${views.size} different views: ${[...views].join(" / ")}`);
      const view = JSON.parse([...views][0]) as View;
      // A majority of the list it was decided under (the world's when a test changes none).
      const quorum = Math.floor((view.voters ?? this.ring).length / 2) + 1;
      assert.ok(view.members.length >= quorum, `view ${epoch} has ${view.members.length} members, ${quorum} needed`);
      for (const member of view.members) {
        const promised = (this.promisedLog.get(member) ?? []).some((b) => b.epoch === epoch && b.coordinator === view.coordinator);
        assert.ok(promised, `${member} is in view ${epoch} without a stored promise of ${epoch}/${view.coordinator}`);
      }
    }
    const regenerators = new Map<number, Set<string>>();
    for (const { node, decision } of this.installs()) {
      if (!decision.regenerate) continue;
      const nodes = regenerators.get(decision.view.epoch) ?? new Set<string>();
      nodes.add(node);
      regenerators.set(decision.view.epoch, nodes);
      assert.equal(this.installs().filter((i) => i.node === node && i.decision.view.epoch === decision.view.epoch).length, 1, `${node} installed view ${decision.view.epoch} twice`);
    }
    for (const [epoch, nodes] of regenerators) assert.equal(nodes.size, 1, `epoch ${epoch} has ${nodes.size} regenerators`);
    for (const a of this.leases) {
      for (const b of this.leases) {
        if (a.epoch >= b.epoch) continue;
        const overlap = a.fromMs < b.untilMs && b.fromMs < a.untilMs;
        assert.ok(!overlap, `lease of epoch ${a.epoch} at ${a.node} [${a.fromMs}, ${a.untilMs}) overlaps epoch ${b.epoch} at ${b.node} [${b.fromMs}, ${b.untilMs})`);
      }
    }
  }
}

/** A 5-node ring (or `ids`) with a first view in which `a` regenerated and holds the token. */
function settledWorld(ids = ["a", "b", "c", "d", "e"], withArbiter = false): World {
  const w = new World(ids, withArbiter);
  w.run(S.tokenLeaseMs); // a fresh node promises nothing before a whole lease
  w.want(ids[0], "bootstrap");
  assert.ok(w.runUntil(() => w.settled(ids), 1_000), "the first view forms");
  return w;
}

/**
 * A settled 5-node ring some time later: a, which regenerated the token, sent it on as hop 2
 * (to whom is up to each test). Returns the world and the view's epoch.
 */
function tokenSentByA(): { w: World; epoch: number } {
  const w = settledWorld();
  w.run(S.tokenLeaseMs);
  w.facts.set("a", { ...w.facts.get("a")!, token: "sending", tokenHop: 2 });
  return { w, epoch: w.view("a")!.epoch };
}

function quorumDecisions(w: World, id: string): boolean[] {
  return w.decisions.filter((d) => d.node === id && d.decision.type === "quorum").map((d) => (d.decision as { ok: boolean }).ok);
}

// ---- majority --------------------------------------------------------------------------------

test("view: 2 of 5 cannot form a view (and say so), 3 of 5 can", () => {
  const w = new World(["a", "b", "c", "d", "e"]);
  w.run(S.tokenLeaseMs);
  for (const id of ["c", "d", "e"]) w.crash(id);
  w.want("a", "bootstrap");
  w.run(3 * S.viewChangeTimeoutMs);
  assert.equal(w.view("a"), null, "no view with 2 of 5");
  assert.equal(w.view("b"), null);
  assert.equal(w.node("a").status(w.nowMs).quorum, "lost", "the coordinator reports the lost majority");
  assert.deepEqual(quorumDecisions(w, "a").slice(0, 1), [false]);
  w.restart("c");
  assert.ok(w.runUntil(() => w.settled(["a", "b", "c"]), 3 * S.viewChangeTimeoutMs + S.tokenLeaseMs), "3 of 5 form a view");
  assert.deepEqual(w.view("a")!.members, ["a", "b", "c"]);
  assert.equal(w.node("a").status(w.nowMs).quorum, "ok");
  w.checkSafety();
});

test("view: a 4-node ring split 2|2 forms no view on either side", () => {
  const w = settledWorld(["a", "b", "c", "d"]);
  const before = w.view("a")!.epoch;
  w.split(["a", "b"], ["c", "d"]);
  w.want("a");
  w.want("c");
  w.run(4 * S.viewChangeTimeoutMs);
  for (const id of ["a", "b", "c", "d"]) assert.equal(w.view(id)!.epoch, before, `${id} kept the old view`);
  assert.equal(w.node("a").status(w.nowMs).quorum, "lost");
  assert.equal(w.node("c").status(w.nowMs).quorum, "lost");
  w.checkSafety();
});

// ---- promises --------------------------------------------------------------------------------

test("view: a node promises each epoch to one coordinator only, and stores the promise before answering", () => {
  const w = new World(["a", "b", "c"]);
  w.run(S.tokenLeaseMs);
  const b = w.node("b");
  const answers = (): ViewMessage[] => b.ready().send.map((s) => s.message);
  b.receive({ type: "prepare", from: "a", ballot: { epoch: 5, coordinator: "a" }, voters: ABC }, w.nowMs);
  const first = b.ready();
  assert.deepEqual(first.persist?.promised, { epoch: 5, coordinator: "a" }, "stored with the answer");
  assert.equal(first.send[0].message.type, "promise");
  b.receive({ type: "prepare", from: "c", ballot: { epoch: 5, coordinator: "c" }, voters: ABC }, w.nowMs);
  assert.equal(answers()[0].type, "reject", "a higher ballot of the same epoch is refused");
  b.receive({ type: "prepare", from: "a", ballot: { epoch: 4, coordinator: "a" }, voters: ABC }, w.nowMs);
  assert.equal(answers()[0].type, "reject", "an older epoch is refused");
  b.receive({ type: "prepare", from: "c", ballot: { epoch: 6, coordinator: "c" }, voters: ABC }, w.nowMs);
  assert.equal(answers()[0].type, "promise", "a newer epoch is promised");
  // The view of the ballot it promised before comes late: not installed (it promised 6/c since).
  const late: View = { epoch: 5, coordinator: "a", members: ["a", "b"], regenerator: "a", startWseq: 0, resendFromWseq: 1, grantWaitMs: 0 };
  b.receive({ type: "newView", from: "a", view: late }, w.nowMs);
  const ready = b.ready();
  assert.deepEqual([ready.persist, ready.decisions], [null, []]);
  assert.equal(b.status(w.nowMs).view, null);
});

test("view: wire input is checked: an unknown sender, a bad ballot, a prepare for another coordinator or a view that is no majority is ignored", () => {
  const w = new World(["a", "b", "c"]);
  w.run(S.tokenLeaseMs);
  const b = w.node("b");
  b.receive({ type: "prepare", from: "zz", ballot: { epoch: 5, coordinator: "zz" }, voters: ABC }, w.nowMs);
  b.receive({ type: "prepare", from: "a", ballot: { epoch: -1, coordinator: "a" }, voters: ABC }, w.nowMs);
  b.receive({ type: "prepare", from: "a", ballot: { epoch: EPOCH_MAX + 1, coordinator: "a" }, voters: ABC }, w.nowMs);
  b.receive({ type: "prepare", from: "a", ballot: { epoch: 5, coordinator: "c" }, voters: ABC }, w.nowMs);
  const view: View = { epoch: 1, coordinator: "a", members: ["a"], regenerator: "a", startWseq: 0, resendFromWseq: 1, grantWaitMs: 0 };
  b.receive({ type: "newView", from: "a", view }, w.nowMs);
  const ready = b.ready();
  assert.equal(ready.send.length, 0);
  assert.equal(ready.persist, null);
  assert.equal(ready.events.filter((e) => e.event === "badViewMessage").length, 5);
});

// ---- concurrent coordinators -----------------------------------------------------------------

test("view: two coordinators starting at once end with one view, under many delay patterns", () => {
  // Each pattern gives every link its own fixed delay, so prepares cross in different orders.
  for (let pattern = 0; pattern < 40; pattern++) {
    const w = settledWorld();
    const rng = new Prng(1_000 + pattern);
    const delays = new Map<string, number>();
    w.delay = (from, to) => {
      const key = `${from}>${to}`;
      if (!delays.has(key)) delays.set(key, rng.between(1, 40));
      return delays.get(key)!;
    };
    const [x, y] = [rng.pick(["a", "b", "c", "d", "e"]), rng.pick(["a", "b", "c", "d", "e"])];
    const start = w.view("a")!.epoch;
    w.want(x);
    if (y !== x) w.want(y);
    const ids = ["a", "b", "c", "d", "e"];
    assert.ok(w.runUntil(() => w.settled(ids, start + 1) && ids.every((id) => w.node(id).status(w.nowMs).wanted === null), 20_000), `pattern ${pattern}: settles`);
    w.checkSafety();
  }
});

// ---- the decision --------------------------------------------------------------------------

test("view: the regenerator is the promiser with the highest (epoch of its last write, lastApplied); ties go to file order", () => {
  const w = settledWorld();
  const set = (id: string, lastWriteEpoch: number, lastApplied: number, commit = 0) =>
    w.facts.set(id, { ...w.facts.get(id)!, lastWriteEpoch, lastApplied, commit });
  set("a", 1, 10, 8);
  set("b", 1, 40, 9); // most writes, but of an older epoch: uncommitted leftovers
  set("c", 2, 12, 12);
  set("d", 2, 12, 7);
  set("e", 2, 11, 11);
  const start = w.view("a")!.epoch;
  w.want("e");
  assert.ok(w.runUntil(() => w.settled(["a", "b", "c", "d", "e"], start + 1), 5_000));
  const view = w.view("a")!;
  assert.equal(view.regenerator, "c", "epoch 2 beats epoch 1, wseq 12 beats 11, c precedes d");
  assert.equal(view.startWseq, 12);
  assert.equal(view.resendFromWseq, 8, "from just above the lowest commit watermark");
  const install = w.installs().find((i) => i.node === "c" && i.decision.view.epoch === view.epoch)!;
  assert.equal(install.decision.regenerate, true);
  w.checkSafety();
});

test("view: members are the promisers; two dead nodes in a row are left out and the ring closes over them", () => {
  const w = settledWorld();
  w.crash("b");
  w.crash("c");
  w.want("a");
  assert.ok(w.runUntil(() => w.settled(["a", "d", "e"], 2), 5_000));
  assert.deepEqual(w.view("a")!.members, ["a", "d", "e"]);
  const successors = new Map(w.installs().filter((i) => i.decision.view.epoch === w.view("a")!.epoch).map((i) => [i.node, i.decision.successor]));
  assert.deepEqual(Object.fromEntries(successors), { a: "d", d: "e", e: "a" });
  w.checkSafety();
});

// ---- token lease -----------------------------------------------------------------------------

test("view: a holder cut off from the majority loses its token lease before the majority's view can form", () => {
  const w = settledWorld();
  const epoch = w.view("a")!.epoch;
  w.delay = () => 30; // slow links: renewals and prepares cross in flight
  w.run(S.tokenLeaseMs); // past the first view's grant wait (none: no older token)
  // a holds the token and keeps its lease renewed while it grants.
  assert.equal(w.facts.get("a")!.token, "held");
  const renewLoop = () => {
    const core = w.nodes.get("a");
    if (core && w.facts.get("a")!.token === "held") core.wantLease(epoch, w.nowMs);
    w.collect("a");
  };
  for (let i = 0; i < 20; i++) {
    renewLoop();
    w.step();
  }
  const lastLease = w.leases.filter((l) => l.node === "a").at(-1)!;
  assert.ok(lastLease.untilMs > w.nowMs, "a holds a valid lease");
  // Cut a off; the others change the view at once.
  w.split(["a"], ["b", "c", "d", "e"]);
  w.want("b");
  let decidedAtMs = -1;
  const end = w.nowMs + 5_000;
  while (w.nowMs < end && decidedAtMs < 0) {
    renewLoop();
    w.step();
    const install = w.installs().find((i) => i.decision.view.epoch > epoch);
    if (install) decidedAtMs = install.atMs;
  }
  assert.ok(decidedAtMs > 0, "the majority formed a view");
  const aLeaseEnd = Math.max(...w.leases.filter((l) => l.node === "a").map((l) => l.untilMs));
  assert.ok(aLeaseEnd <= decidedAtMs, `a's lease (to ${aLeaseEnd}) ended before the new view (${decidedAtMs})`);
  assert.equal(w.node("a").status(w.nowMs).leaseValidUntilMs, null, "a cannot grant any more");
  w.run(S.viewChangeTimeoutMs + 100);
  renewLoop();
  w.run(S.viewChangeTimeoutMs + 100);
  assert.equal(w.node("a").status(w.nowMs).quorum, "lost", "a says it is in a minority");
  w.checkSafety();
});

test("view: a restarted node promises nothing for tokenLeaseMs (it may have renewed a lease just before it stopped)", () => {
  const w = settledWorld();
  w.crash("b");
  w.restart("b");
  const restartedAtMs = w.nowMs;
  w.crash("c");
  w.crash("d"); // a needs b's promise for a majority
  w.want("a");
  assert.ok(w.runUntil(() => w.settled(["a", "b", "e"], 2), 5_000));
  const promisedAtMs = w.decisions.find((d) => d.node === "b" && d.decision.type === "promised" && d.atMs >= restartedAtMs)!.atMs;
  assert.ok(promisedAtMs >= restartedAtMs + S.tokenLeaseMs, `b promised at ${promisedAtMs}, restarted at ${restartedAtMs}`);
  w.checkSafety();
});

test("view: a renewer holds its promise for tokenLeaseMs after an OK, and refuses renewals once it promised newer", () => {
  const w = settledWorld(["a", "b", "c"]);
  w.run(S.tokenLeaseMs);
  const epoch = w.view("a")!.epoch;
  const b = w.node("b");
  b.receive({ type: "renew", from: "a", epoch, seq: 1, voters: ABC }, w.nowMs);
  const okAtMs = w.nowMs;
  assert.deepEqual(b.ready().send.map((s) => s.message), [{ type: "renewAnswer", from: "b", epoch, seq: 1, ok: true }]);
  b.receive({ type: "prepare", from: "c", ballot: { epoch: epoch + 1, coordinator: "c" }, voters: ABC }, w.nowMs);
  assert.deepEqual(b.ready().send.map((x) => x.message), [
    { type: "deferred", from: "b", ballot: { epoch: epoch + 1, coordinator: "c" }, waitMs: S.tokenLeaseMs },
  ], "the promise waits for the hold to end; the coordinator is told how long");
  b.receive({ type: "renew", from: "a", epoch, seq: 2, voters: ABC }, w.nowMs);
  assert.equal((b.ready().send[0].message as { ok: boolean }).ok, false, "no renewal while a newer prepare waits");
  b.tick(okAtMs + S.tokenLeaseMs - 1);
  assert.equal(b.ready().send.length, 0);
  b.tick(okAtMs + S.tokenLeaseMs);
  assert.equal(b.ready().send[0].message.type, "promise", "promised once the hold ended");
});

// ---- the grant wait --------------------------------------------------------------------------

test("view: the new token waits for the old section: its remaining lease when the token is at a promiser; when unknown, a maximum section after the dead holder's last lease could end", () => {
  // Token at a promiser (c) with 300 ms of section left: the new view waits about that.
  const { w, epoch } = tokenSentByA();
  w.facts.set("c", { ...w.facts.get("c")!, token: "held", tokenEpoch: epoch, tokenHop: 2, sectionRemainingMs: 300 });
  w.crash("e"); // a non-holder died
  w.want("d");
  assert.ok(w.runUntil(() => w.settled(["a", "b", "c", "d"], epoch + 1), 5_000));
  const known = w.view("a")!.grantWaitMs;
  assert.ok(known > 250 && known <= 300 + S.tokenLeaseSafetyMs, `waits the holder's remaining lease (plus the clock margin), got ${known}`);

  // The new token went from a to c; c renewed its lease, then c, its holder, dies: nobody knows
  // where the token is. c may have granted until its lease ended, which is before every
  // backer's hold for c ended: the first grant waits until the latest such hold + a maximum section.
  w.facts.set("a", { ...w.facts.get("a")!, token: "sending", tokenEpoch: epoch + 1, tokenHop: 2 });
  w.facts.set("c", { ...w.facts.get("c")!, token: "held", tokenEpoch: epoch + 1, tokenHop: 2, sectionRemainingMs: 300 });
  w.run(2 * S.tokenLeaseMs); // the view's own grant wait and holds from the view change are over
  const renewedAtMs = w.nowMs;
  w.node("c").wantLease(epoch + 1, renewedAtMs);
  assert.ok(w.runUntil(() => w.node("c").status(w.nowMs).leaseValidUntilMs !== null, 1_000), "c's lease is renewed");
  w.crash("c");
  w.run(2 * S.tokenLeaseMs); // the view change starts a while after c's last lease
  w.want("d");
  assert.ok(w.runUntil(() => w.settled(["a", "b", "d"], epoch + 2), 5_000));
  const regen = w.installs().find((i) => i.decision.view.epoch === epoch + 2 && i.decision.regenerate)!;
  const earliestMs = renewedAtMs + S.tokenLeaseMs + S.ringLeaseMaxMs + S.tokenLeaseSafetyMs;
  assert.ok(regen.decision.grantNotBeforeMs >= earliestMs, `first grant at ${regen.decision.grantNotBeforeMs}, not before ${earliestMs}`);
  assert.ok(regen.decision.grantNotBeforeMs <= earliestMs + 50, "and not much later (holds end within a message delay of that)");
  assert.ok(w.view("a")!.grantWaitMs < S.ringLeaseMaxMs, "counted from the hold's end, not from the decision");
  w.checkSafety();
});

test("view: a dead holder whose lease stated a 1,000 ms section bound: the first grant waits that bound after its last hold, not ringLeaseMaxMs", () => {
  const { w, epoch } = tokenSentByA();
  // a handed the token to c (c holds it); c renews a lease stating 1,000 ms, then dies.
  w.facts.set("a", { ...w.facts.get("a")!, token: "sending", tokenEpoch: epoch, tokenHop: 2 });
  w.facts.set("c", { ...w.facts.get("c")!, token: "held", tokenEpoch: epoch, tokenHop: 2, sectionRemainingMs: 300 });
  const renewedAtMs = w.nowMs;
  const boundMs = 1_000;
  assert.ok(boundMs + 100 < S.ringLeaseMaxMs, "the bound is well below the maximum, so the two waits differ");
  w.node("c").wantLease(epoch, renewedAtMs, boundMs);
  assert.ok(w.runUntil(() => w.node("c").status(w.nowMs).leaseValidUntilMs !== null, 1_000), "c's lease is renewed");
  w.crash("c");
  w.run(2 * S.tokenLeaseMs);
  w.want("d");
  assert.ok(w.runUntil(() => w.settled(["a", "b", "d", "e"], epoch + 1), 5_000));
  const regen = w.installs().find((i) => i.decision.view.epoch === epoch + 1 && i.decision.regenerate)!;
  const earliestMs = renewedAtMs + S.tokenLeaseMs + boundMs + S.tokenLeaseSafetyMs;
  assert.ok(regen.decision.grantNotBeforeMs >= earliestMs, `first grant at ${regen.decision.grantNotBeforeMs}, not before ${earliestMs}`);
  assert.ok(regen.decision.grantNotBeforeMs <= earliestMs + 50, `and not ringLeaseMaxMs later: ${regen.decision.grantNotBeforeMs - earliestMs} ms past the bound`);
  w.checkSafety();
});

test("view: a holder's report is not trusted when a promiser promised a newer view: that view's token may be granting unseen", () => {
  const { w, epoch } = tokenSentByA();
  // c holds epoch 1's token. A view 2 forms among a, b, d; only a installs it (the newView to
  // b and d is lost), so a holds a token of view 2 nobody else saw.
  w.facts.set("c", { ...w.facts.get("c")!, token: "held", tokenEpoch: epoch, tokenHop: 2 });
  w.split(["c", "e"], ["a", "b", "d"]);
  w.drop = (p) => p.message.type === "newView";
  w.want("a");
  assert.ok(w.runUntil(() => w.view("a")!.epoch === epoch + 1, 5_000));
  w.drop = () => false;
  assert.equal(w.facts.get("a")!.token, "held");
  // a renews a lease for view 2's token (b and d promised epoch 2, so they back it).
  w.run(S.tokenLeaseMs);
  const renewedAtMs = w.nowMs;
  w.node("a").wantLease(epoch + 1, renewedAtMs);
  assert.ok(w.runUntil(() => w.node("a").status(w.nowMs).leaseValidUntilMs !== null, 1_000), "a's lease is renewed");
  // Now a is cut off; b, c, d, e form view 3. c reports holding epoch 1's token, idle.
  w.cut.clear();
  w.split(["a"], ["b", "c", "d", "e"]);
  w.want("b"); // b promised view 2: its ballot is 3/b, c's first promise since view 1
  const view3 = () => w.installs().find((i) => i.node === "c" && i.decision.view.epoch === epoch + 2);
  assert.ok(w.runUntil(() => view3() !== undefined, 5_000));
  const cPromises = w.decisions.flatMap((d) => d.node === "c" && d.decision.type === "promised" ? [d.decision.epoch] : []);
  assert.deepEqual(cPromises, [epoch, epoch + 2], "c held epoch 1's token until it promised view 3");
  const regen3 = w.installs().find((i) => i.decision.view.epoch === epoch + 2 && i.decision.regenerate)!;
  const earliestMs = renewedAtMs + S.tokenLeaseMs + S.ringLeaseMaxMs + S.tokenLeaseSafetyMs;
  assert.ok(regen3.decision.grantNotBeforeMs >= earliestMs, `a's token of view 2 may have granted until ${earliestMs}; first grant at ${regen3.decision.grantNotBeforeMs}`);
  w.checkSafety();
});

test("view: a token whose hand-off was refused at connect never left: no wait for an unknown holder", () => {
  const { w, epoch } = tokenSentByA();
  // a sent hop 2 to b, b is dead: the connection was refused.
  w.crash("b");
  w.node("a").handoffRefused(epoch, 2, w.nowMs);
  w.want("a");
  assert.ok(w.runUntil(() => w.settled(["a", "c", "d", "e"], epoch + 1), 5_000));
  assert.equal(w.view("a")!.grantWaitMs, 0);
  w.checkSafety();
});

test("view: a refusal withdrawn by a later uncertain attempt of the same hand-off no longer counts: b may have taken the token and granted", () => {
  const { w, epoch } = tokenSentByA();
  const renewedAtMs = w.nowMs;
  w.node("b").wantLease(epoch, renewedAtMs);
  assert.ok(w.runUntil(() => w.node("b").status(w.nowMs).leaseValidUntilMs !== null, 1_000), "b's lease is renewed");
  w.node("a").handoffRefused(epoch, 2, w.nowMs); // attempt 1: notYet
  w.node("a").handoffUncertain(epoch, 2, w.nowMs); // attempt 2: timed out (b took it, then died)
  w.crash("b");
  w.want("a");
  assert.ok(w.runUntil(() => w.settled(["a", "c", "d", "e"], epoch + 1), 5_000));
  const regen = w.installs().find((i) => i.decision.view.epoch === epoch + 1 && i.decision.regenerate)!;
  assert.ok(regen.decision.grantNotBeforeMs >= renewedAtMs + S.tokenLeaseMs + S.ringLeaseMaxMs + S.tokenLeaseSafetyMs, "b's last lease is waited out");
  w.checkSafety();
});

test("view: with no refusal fact the same hand-off counts as unknown (b may hold the token and grant under its last lease)", () => {
  const { w, epoch } = tokenSentByA();
  const renewedAtMs = w.nowMs;
  w.node("b").wantLease(epoch, renewedAtMs);
  assert.ok(w.runUntil(() => w.node("b").status(w.nowMs).leaseValidUntilMs !== null, 1_000), "b's lease is renewed");
  w.crash("b");
  w.want("a");
  assert.ok(w.runUntil(() => w.settled(["a", "c", "d", "e"], epoch + 1), 5_000));
  const regen = w.installs().find((i) => i.decision.view.epoch === epoch + 1 && i.decision.regenerate)!;
  assert.ok(regen.decision.grantNotBeforeMs >= renewedAtMs + S.tokenLeaseMs + S.ringLeaseMaxMs + S.tokenLeaseSafetyMs);
  w.checkSafety();
});

test("view: a promiser that restarted lately may have clients of sections from before its restart: a maximum section from its start", () => {
  const { w, epoch } = tokenSentByA();
  w.crash("b");
  w.restart("b");
  const restartedAtMs = w.nowMs;
  // Everybody promises; the token is unknown (a's hand-off to b is neither held nor refused).
  w.want("a");
  assert.ok(w.runUntil(() => w.settled(["a", "b", "c", "d", "e"], epoch + 1), 5_000));
  const regen = w.installs().find((i) => i.decision.view.epoch === epoch + 1 && i.decision.regenerate)!;
  assert.ok(regen.decision.grantNotBeforeMs >= restartedAtMs + S.ringLeaseMaxMs + S.tokenLeaseSafetyMs, "b's sections from before it stopped");
  w.checkSafety();
});

test("view: a dead node that backed no lease of its own since the promisers started cannot have granted: no wait", () => {
  const { w, epoch } = tokenSentByA();
  w.crash("b"); // b holds the token, maybe, but never had a lease: it could not grant
  w.want("a");
  assert.ok(w.runUntil(() => w.settled(["a", "c", "d", "e"], epoch + 1), 5_000));
  assert.equal(w.view("a")!.grantWaitMs, 0);
  w.checkSafety();
});

// ---- fences ----------------------------------------------------------------------------------

test("fences: every fence of a new epoch is above every fence of older epochs; 2^21 - 1 epochs fit", () => {
  assert.equal(EPOCH_MAX, 2 ** 21 - 1);
  assert.ok(Number.isSafeInteger(fenceFloor(EPOCH_MAX) + FENCE_EPOCH_FACTOR - 1));
  const lastOfOld = fenceFloor(7) + FENCE_EPOCH_FACTOR - 1; // the highest fence epoch 7 can hand out
  assert.throws(() => nextFence(7, lastOfOld), /exhausted/);
  assert.ok(nextFence(8, lastOfOld) > lastOfOld);
  assert.equal(nextFence(8, 123), fenceFloor(8) + 1, "the first fence of an epoch");
  assert.equal(nextFence(8, fenceFloor(8) + 5), fenceFloor(8) + 6);
  assert.throws(() => fenceFloor(EPOCH_MAX + 1));
  const w = settledWorld(["a", "b", "c"]);
  const install = w.installs().at(-1)!;
  assert.equal(install.decision.fenceFloor, fenceFloor(install.decision.view.epoch));
  w.checkSafety();
});

// ---- rejoin and membership -------------------------------------------------------------------

test("view: a restarted node comes back through a view change with a new epoch; no epoch is reused", () => {
  const w = settledWorld();
  w.crash("c");
  w.want("a");
  assert.ok(w.runUntil(() => w.settled(["a", "b", "d", "e"], 2), 5_000));
  const without = w.view("a")!.epoch;
  assert.ok(!w.view("a")!.members.includes("c"));
  w.restart("c");
  assert.equal(w.node("c").status(w.nowMs).view?.epoch, 1, "c restarts with the view it stored");
  w.want("c", "rejoin");
  assert.ok(w.runUntil(() => w.settled(["a", "b", "c", "d", "e"], without + 1), 5_000));
  assert.ok(w.view("c")!.members.includes("c"));
  const epochs = w.installs().filter((i) => i.node === "c").map((i) => i.decision.view.epoch);
  assert.deepEqual(epochs, [...new Set(epochs)].sort((x, y) => x - y), "c's epochs only grow");
  w.checkSafety();
});

test("view: a lost newView is resent until the member confirms it (no extra epoch)", () => {
  const w = settledWorld();
  const epoch = w.view("a")!.epoch;
  let dropped = 0;
  w.drop = (p) => p.message.type === "newView" && p.to === "b" && dropped++ < 2;
  w.want("a");
  assert.ok(w.runUntil(() => w.settled(["a", "b", "c", "d", "e"], epoch + 1), 3 * S.viewChangeRetryMs + 100));
  assert.equal(dropped, 3, "two copies lost, the third delivered");
  assert.equal(w.view("b")!.epoch, epoch + 1, "b installed the same view, no newer epoch");
  w.checkSafety();
});

test("view: a node that promised but never got the view asks for one itself (coordinator died after its prepares)", () => {
  const w = settledWorld(["a", "b", "c"]);
  w.drop = (p) => p.message.type === "newView";
  w.want("a");
  w.run(50);
  w.crash("a");
  w.drop = () => false;
  assert.ok(w.runUntil(() => w.settled(["b", "c"], 3), 3 * S.viewChangeTimeoutMs + S.tokenLeaseMs));
  w.checkSafety();
});

test("view: a node cut off from everyone burns one epoch, not one per attempt (it canvasses first), and comes back when healed", () => {
  const w = settledWorld();
  const epoch = w.view("a")!.epoch;
  w.split(["c"], ["a", "b", "d", "e"]);
  w.want("c");
  w.run(60_000);
  assert.equal(w.node("c").status(w.local("c")).promised.epoch, epoch + 1, "one failed attempt, then only canvasses");
  assert.equal(w.node("c").status(w.local("c")).quorum, "lost");
  assert.equal(w.view("a")!.epoch, epoch, "the others saw nothing of it");
  w.cut.clear();
  assert.ok(w.runUntil(() => w.settled(["a", "b", "c", "d", "e"], epoch + 1), 5_000), "healed, its view change goes through");
  assert.equal(w.view("a")!.epoch, epoch + 2, "the next epoch after its own failed one");
  w.checkSafety();
});

test("view: a healed node learns from a probe that it is behind; it then rejoins through a view change", () => {
  const w = settledWorld();
  w.split(["c"], ["a", "b", "d", "e"]);
  w.want("a");
  assert.ok(w.runUntil(() => w.settled(["a", "b", "d", "e"], 2), 5_000));
  const newer = w.view("a")!.epoch;
  // Cut off, c misses the token; its probes reach nobody: it says it is in a minority.
  w.facts.set("c", { ...w.facts.get("c")!, token: "away", lastTokenAgeMs: S.tokenLossMs });
  assert.ok(w.runUntil(() => w.node("c").status(w.nowMs).quorum === "lost", 2 * S.viewChangeTimeoutMs));
  w.cut.clear();
  const behind = () => w.decisions.find((d) => d.node === "c" && d.decision.type === "behind");
  assert.ok(w.runUntil(() => behind() !== undefined, S.tokenLossMs + S.viewChangeTimeoutMs), "c learns of the newer view");
  assert.deepEqual(behind()!.decision, { type: "behind", viewEpoch: newer });
  assert.equal(w.view("a")!.epoch, newer, "c's probe itself changed no view");
  w.want("c", "rejoin"); // the driver does this once c caught its replica up
  assert.ok(w.runUntil(() => w.settled(["a", "b", "c", "d", "e"], newer + 1), 5_000));
  w.checkSafety();
});

test("view: membership changes one node at a time, each a view change; two at once are refused", () => {
  const w = settledWorld(["a", "b", "c", "d"]);
  assert.match(w.node("a").changeMembership(["a", "b", "c", "d", "e", "f"], w.nowMs) ?? "", /one ring node at a time/);
  const epoch = w.view("a")!.epoch;
  w.ring = ["a", "b", "c", "d", "e"];
  w.start("e");
  for (const id of ["a", "b", "c", "d", "e"]) {
    assert.equal(w.node(id).changeMembership(w.ring, w.nowMs), null);
    w.collect(id);
  }
  assert.ok(w.runUntil(() => w.settled(w.ring, epoch + 1), 10_000), "e is added by a view change");
  assert.deepEqual(w.view("a")!.members, ["a", "b", "c", "d", "e"]);
  const added = w.view("a")!.epoch;
  w.crash("b");
  w.ring = ["a", "c", "d", "e"];
  for (const id of w.ring) {
    assert.equal(w.node(id).changeMembership(w.ring, w.nowMs), null);
    w.collect(id);
  }
  assert.ok(w.runUntil(() => w.settled(w.ring, added + 1), 10_000), "b is removed by a view change");
  assert.deepEqual(w.view("a")!.members, ["a", "c", "d", "e"]);
  w.checkSafety();
});

test("view: two membership changes pending at once form no two disjoint views (review finding 7): a reload waits for a view under the current list, and votes count within one list only", () => {
  // v1 [a,b,c] → v2 [a,b,c,x] → v3 [a,b,c,x,y]; b and c never got v2 (the operator's SIGHUP missed them).
  const v1 = ["a", "b", "c"], v2 = ["a", "b", "c", "x"], v3 = ["a", "b", "c", "x", "y"];
  const w = settledWorld(v1);
  const epoch = w.view("a")!.epoch;
  assert.deepEqual(w.view("a")!.voters, v1, "a view records the list it was decided under");
  w.start("x", v2);
  assert.equal(w.node("a").changeMembership(v2, w.local("a")), null, "one node added, after a view under v1: taken");
  w.collect("a");
  // Without b or c, no view under v2 forms (3 of 4 needed; b and c refuse a's and x's prepares of v2).
  w.run(3 * S.viewChangeTimeoutMs);
  assert.equal(w.view("a")!.epoch, epoch, "no view under v2 formed");
  assert.deepEqual(w.view("b")!.voters, v1);
  // The operator reloads v3 at a and x: refused, so both keep voting under v2. Checked after the
  // cut below, so that reloads taken show as the two disjoint views they allow.
  const refusals = ["a", "x"].map((id) => w.node(id).changeMembership(v3, w.local(id)));
  for (const id of ["a", "x"]) w.collect(id);
  // The reviewer's cut: {a, x, y} against {b, c}, y started with v3, everyone wanting a view.
  w.start("y", v3);
  w.split(["a", "x", "y"], ["b", "c"]);
  for (const id of ["a", "x", "y", "b", "c"]) w.want(id);
  w.run(6 * S.viewChangeTimeoutMs);
  const after = w.installs().filter((i) => i.decision.view.epoch > epoch).map((i) => i.decision.view);
  assert.ok(after.some((v) => v.members.join() === "b,c"), "b and c, a majority of v1, form a view");
  assert.ok(after.every((v) => v.members.every((m) => m === "b" || m === "c")), `only b and c form views: ${JSON.stringify(after)}`);
  w.checkSafety();
  for (const refusal of refusals) assert.match(refusal ?? "", /previous membership change has not formed a view yet/);
  // Once b and c take v2 and the cut heals, a view under v2 forms, and then v3 is taken.
  w.cut.clear();
  for (const id of ["b", "c"]) {
    assert.equal(w.node(id).changeMembership(v2, w.local(id)), null);
    w.collect(id);
  }
  const underV2 = () => ["a", "b", "c", "x"].every((id) => w.view(id)?.voters?.join() === v2.join());
  assert.ok(w.runUntil(underV2, 10_000), "a view under v2 forms");
  assert.equal(w.node("a").changeMembership(v3, w.local("a")), null, "the next change is taken once the previous one formed a view");
  w.checkSafety();
});

test("view: the arbiter, which votes in no list, takes a reload without a view under its list (still one node at a time); a ring node does not", () => {
  const w = settledWorld(["a", "b", "c"], true);
  const v2 = ["a", "b", "c", "x"], v3 = ["a", "b", "c", "x", "y"];
  for (const id of [ARBITER, "a"]) assert.equal(w.node(id).changeMembership(v2, w.local(id)), null, `${id} takes v2`);
  assert.equal(w.node(ARBITER).changeMembership(v3, w.local(ARBITER)), null, "the arbiter takes v3 at once");
  assert.match(w.node("a").changeMembership(v3, w.local("a")) ?? "", /previous membership change has not formed a view yet \(view \d+ was decided under a,b,c, not a,b,c,x\)/);
  assert.match(w.node(ARBITER).changeMembership(["a"], w.local(ARBITER)) ?? "", /one ring node at a time/);
});

test("view: a prepare or a renewal from a node of another voter list is refused (reject, ok: false), with an event", () => {
  const w = settledWorld(["a", "b", "c"]);
  w.run(S.tokenLeaseMs);
  const epoch = w.view("a")!.epoch;
  const b = w.node("b");
  b.ready();
  const other = ["a", "b", "c", "x"];
  b.receive({ type: "prepare", from: "a", ballot: { epoch: epoch + 3, coordinator: "a" }, voters: other }, w.nowMs);
  const refused = b.ready();
  assert.equal(refused.persist, null, "nothing promised");
  assert.deepEqual(refused.send.map((x) => x.message.type), ["reject"]);
  assert.ok(refused.events.some((e) => e.event === "prepareOfOtherVoters"));
  b.receive({ type: "renew", from: "a", epoch, seq: 1, voters: other }, w.nowMs);
  const renewal = b.ready();
  assert.deepEqual(renewal.send.map((x) => x.message), [{ type: "renewAnswer", from: "b", epoch, seq: 1, ok: false }]);
  assert.ok(renewal.events.some((e) => e.event === "renewOfOtherVoters"));
  // The same voters in another order are the same list (the order only breaks ties).
  b.receive({ type: "prepare", from: "a", ballot: { epoch: epoch + 3, coordinator: "a" }, voters: ["c", "b", "a"] }, w.nowMs);
  assert.deepEqual(b.ready().send.map((x) => x.message.type), ["promise"]);
  // A list longer than the ring plus one is malformed: dropped.
  b.receive({ type: "renew", from: "a", epoch, seq: 2, voters: ["a", "b", "c", "x", "y"] }, w.nowMs);
  const bad = b.ready();
  assert.equal(bad.send.length, 0);
  assert.ok(bad.events.some((e) => e.event === "badViewMessage" && e.fields.problem === "bad voters"));
});

test("view: a node restarted with a ring more than one node away from its stored view's voters is refused; one node away (a reload) or an older view without voters is not", () => {
  const view: View = { epoch: 4, coordinator: "a", members: ["a", "b"], regenerator: "a", startWseq: 0, resendFromWseq: 1, grantWaitMs: 0, voters: ["a", "b", "c"] };
  const problem = restartVotersProblem(view, ["a", "b", "c", "x", "y"]);
  assert.match(problem ?? "", /a,b,c,x,y.*differs by more than one node.*a,b,c\)/);
  assert.match(restartVotersProblem(view, ["a", "x", "y"]) ?? "", /more than one node/);
  assert.equal(restartVotersProblem(view, ["a", "b", "c", "x"]), null);
  assert.equal(restartVotersProblem(view, ["a", "b"]), null);
  assert.equal(restartVotersProblem(view, ["c", "b", "a"]), null);
  assert.equal(restartVotersProblem({ ...view, voters: undefined }, ["a", "b", "c", "x", "y"]), null);
  assert.equal(restartVotersProblem(null, ["a", "b", "c", "x", "y"]), null);
});

test("view: a busy holder renewing its lease all the time delays a view change by at most about tokenLeaseMs", () => {
  for (const coordinator of ["a", "c"]) {
    const w = settledWorld();
    const epoch = w.view("a")!.epoch;
    const renew = () => {
      const facts = w.facts.get("a")!;
      if (facts.token === "held") w.node("a").wantLease(facts.tokenEpoch, w.nowMs);
      w.collect("a");
    };
    for (let i = 0; i < 30; i++) {
      renew();
      w.step();
    }
    const startMs = w.nowMs;
    w.want(coordinator);
    let settledAtMs = -1;
    for (let i = 0; i < 500 && settledAtMs < 0; i++) {
      renew();
      w.step();
      if (w.settled(["a", "b", "c", "d", "e"], epoch + 1)) settledAtMs = w.nowMs;
    }
    assert.ok(settledAtMs > 0, `${coordinator}: the view change completes`);
    assert.ok(settledAtMs - startMs <= S.tokenLeaseMs + 100, `${coordinator}: took ${settledAtMs - startMs} ms`);
    w.checkSafety();
  }
});

test("view: the holder counts its lease from the send time of its request, so it ends before every renewer's hold", () => {
  const w = settledWorld(["a", "b", "c"]);
  const epoch = w.view("a")!.epoch;
  w.delay = () => 150; // answers come 300 ms after the request: more than the safety margin
  const sentAtMs = w.nowMs;
  assert.equal(w.node("a").wantLease(epoch, w.nowMs), false, "not valid before a majority answered");
  w.collect("a");
  assert.ok(w.runUntil(() => w.leases.some((l) => l.node === "a"), 1_000));
  const lease = w.leases.find((l) => l.node === "a")!;
  assert.equal(lease.untilMs, sentAtMs + S.tokenLeaseMs - S.tokenLeaseSafetyMs);
  for (const id of ["b", "c"]) {
    const heldUntilMs = w.node(id).status(w.nowMs).promiseHeldUntilMs;
    assert.ok(lease.untilMs <= heldUntilMs, `a's lease ends at ${lease.untilMs}, ${id} holds until ${heldUntilMs}`);
  }
  assert.equal(w.node("a").wantLease(epoch, w.nowMs), true, "valid now");
  w.checkSafety();
});

test("view: the lease margin covers renewers whose clocks run 20 % fast: the slow holder's lease still ends before the new view", () => {
  const w = settledWorld();
  for (const id of ["b", "c", "d", "e"]) w.clockRate.set(id, 1.2);
  w.delay = () => 5;
  const epoch = w.view("a")!.epoch;
  const renew = () => {
    if (w.nodes.has("a")) w.node("a").wantLease(epoch, w.local("a"));
    w.collect("a");
  };
  for (let i = 0; i < 20; i++) {
    renew();
    w.step();
  }
  assert.ok(w.leases.some((l) => l.node === "a" && l.untilMs > w.nowMs), "a holds a valid lease");
  w.split(["a"], ["b", "c", "d", "e"]);
  w.want("b");
  const newView = () => w.installs().find((i) => i.decision.view.epoch > epoch);
  const end = w.nowMs + 5_000;
  while (!newView() && w.nowMs < end) {
    renew();
    w.step();
  }
  assert.ok(newView(), "the majority formed a view");
  const aLeaseEnd = Math.max(...w.leases.filter((l) => l.node === "a").map((l) => l.untilMs));
  assert.ok(aLeaseEnd <= newView()!.atMs, `a's lease (to ${aLeaseEnd}) ended before the new view (${newView()!.atMs})`);
  w.checkSafety();
});

// ---- the arbiter -----------------------------------------------------------------------------

test("view: the arbiter may coordinate but casts no vote; without it any ring node coordinates", () => {
  const w = settledWorld(["a", "b", "c", "d"], true);
  const epoch = w.view("a")!.epoch;
  // As in the binary: a ring node asks it (coordinate, with the epoch it is in).
  const ask = (at: number) => {
    w.node(ARBITER).receive({ type: "coordinate", from: "a", reason: "suspect", epoch: at }, w.local(ARBITER));
    w.collect(ARBITER);
  };
  ask(epoch);
  assert.ok(w.runUntil(() => w.settled(["a", "b", "c", "d"], epoch + 1), 5_000));
  const view = w.view("a")!;
  assert.equal(view.coordinator, ARBITER);
  assert.ok(!view.members.includes(ARBITER));
  // 2 of 4 plus the arbiter is no majority.
  w.crash("c");
  w.crash("d");
  ask(epoch + 1);
  w.run(3 * S.viewChangeTimeoutMs);
  assert.equal(w.view("a")!.epoch, epoch + 1, "no view from 2 of 4 ring nodes and the arbiter");
  // The arbiter dies; the ring nodes come back and the last one in the file coordinates.
  w.crash(ARBITER);
  w.restart("c");
  w.restart("d");
  w.run(S.tokenLeaseMs);
  w.want("d");
  assert.ok(w.runUntil(() => w.settled(["a", "b", "c", "d"], epoch + 2), 10_000));
  w.checkSafety();
});

test("decideView: a promise stating a section bound for a dead node waits that bound after its hold; one stating none (an older build) waits ringLeaseMaxMs; a bound above ringLeaseMaxMs counts as ringLeaseMaxMs", () => {
  const ring = ["a", "b", "c"];
  const base = { lastApplied: 0, lastWriteEpoch: 0, commit: 0, tokenEpoch: 1, tokenHop: 5, tokenHere: "no" as const, sectionRemainingMs: 0, restartedAgoMs: null };
  const nowMs = 100_000;
  const waitWith = (b: Partial<Promised["facts"]>): number => {
    const promise = (facts: Partial<Promised["facts"]>): Promised => ({ prior: { epoch: 1, coordinator: "a" }, viewEpoch: 1, receivedAtMs: nowMs, facts: { ...base, holdEndedAgoMs: {}, ...facts } });
    // a backed c's leases and says nothing about their bound; b is the variant under test.
    const promises = new Map([["a", promise({ holdEndedAgoMs: { c: 200 }, holdSectionMaxMs: { c: 0 } })], ["b", promise(b)]]);
    return decideView({ epoch: 2, coordinator: "a" }, promises, ring, S, nowMs).grantWaitMs;
  };
  assert.equal(waitWith({ holdEndedAgoMs: { c: 100 }, holdSectionMaxMs: { c: 1_000 } }), 1_000 - 100 + S.tokenLeaseSafetyMs);
  assert.equal(waitWith({ holdEndedAgoMs: { c: 100 } }), S.ringLeaseMaxMs - 100 + S.tokenLeaseSafetyMs, "no holdSectionMaxMs: ringLeaseMaxMs");
  assert.equal(waitWith({ holdEndedAgoMs: { c: 100 }, holdSectionMaxMs: {} }), S.ringLeaseMaxMs - 100 + S.tokenLeaseSafetyMs, "no bound for c: ringLeaseMaxMs");
  assert.equal(waitWith({ holdEndedAgoMs: { c: 100 }, holdSectionMaxMs: { c: 10 * S.ringLeaseMaxMs } }), S.ringLeaseMaxMs - 100 + S.tokenLeaseSafetyMs, "capped");
});

test("view: a renewal's stated bound is what its backer reports (the backer's own hold counts the largest of the renewals it backed); a renewal stating none counts ringLeaseMaxMs", () => {
  const w = settledWorld(["a", "b", "c"]);
  const epoch = w.view("a")!.epoch;
  const a = w.node("a");
  a.receive({ type: "renew", from: "b", epoch, seq: 1, voters: ABC, sectionMaxMs: 700 }, w.local("a"));
  a.receive({ type: "renew", from: "b", epoch, seq: 2, voters: ABC, sectionMaxMs: 300 }, w.local("a"));
  a.receive({ type: "renew", from: "c", epoch, seq: 1, voters: ABC }, w.local("a"));
  a.ready();
  w.run(2 * S.tokenLeaseMs); // the holds end, so a promises at once
  a.receive({ type: "prepare", from: "b", ballot: { epoch: epoch + 1, coordinator: "b" }, voters: ABC }, w.local("a"));
  const promise = a.ready().send.map((x) => x.message).find((m) => m.type === "promise");
  assert.ok(promise?.type === "promise", "a promises");
  assert.deepEqual(promise.facts.holdSectionMaxMs, { b: 700, c: S.ringLeaseMaxMs });
});

test("LeaseHold: the section bound per requester is the latest (hold end + stated bound) beyond the hold end; a restart hold counts the unknown bound until later holds reach past it", () => {
  const tokenLeaseMs = 1_000;
  const fresh = new LeaseHold(tokenLeaseMs, 0);
  assert.equal(fresh.sectionBoundFor("b", false, 10_000), null, "never backed b");
  fresh.renewed(100, "b", 700);
  fresh.renewed(200, "b", 300); // hold to 1,200, sections to max(1,800, 1,500)
  assert.equal(fresh.heldUntilFor("b", false), 1_200);
  assert.equal(fresh.sectionBoundFor("b", false, 10_000), 600);
  const restarted = new LeaseHold(tokenLeaseMs, 0); // restart hold to 1,000: sections to 11,000
  assert.equal(restarted.sectionBoundFor("b", true, 10_000), 10_000, "only the restart hold: the unknown bound");
  restarted.renewed(100, "b", 500);
  assert.equal(restarted.sectionBoundFor("b", true, 10_000), 11_000 - 1_100);
  restarted.renewed(20_000, "b", 500);
  assert.equal(restarted.sectionBoundFor("b", true, 10_000), 500, "its own later hold reaches past the restart's");
});

test("view: the arbiter only coordinates: a promise, renewal or answer claiming to come from it is dropped (it would count towards a majority it is not in)", () => {
  const w = new World(["a", "b", "c", "d", "e"], true);
  w.run(S.tokenLeaseMs);
  for (const id of ["c", "d", "e"]) w.crash(id);
  w.want("a", "bootstrap");
  w.run(50);
  const a = w.node("a");
  const ballot = a.status(w.local("a")).coordinating!;
  const facts = { lastApplied: 0, lastWriteEpoch: 0, commit: 0, tokenEpoch: 0, tokenHop: 0, tokenHere: "no" as const, sectionRemainingMs: 0, holdEndedAgoMs: {}, restartedAgoMs: null };
  a.receive({ type: "promise", from: ARBITER, ballot, prior: { epoch: 0, coordinator: "" }, viewEpoch: 0, facts }, w.local("a"));
  const ready = a.ready();
  assert.ok(ready.events.some((e) => e.event === "badViewMessage" && String(e.fields.problem).includes("only from a ring node")));
  w.run(S.viewChangeTimeoutMs);
  assert.equal(w.view("a"), null, "a and b plus a forged promise are no majority of five");
  w.checkSafety();
});

test("view: a renewal of an epoch newer than any this node promised or installed tells it it was left out (behind): a regenerator waiting for its re-sent writes hears of the new view no other way", () => {
  const w = settledWorld(["a", "b", "c"]);
  const epoch = w.view("a")!.epoch;
  const a = w.node("a");
  a.ready();
  a.receive({ type: "renew", from: "b", epoch: epoch + 2, seq: 1, voters: ABC }, w.local("a"));
  const out = a.ready();
  assert.deepEqual(out.decisions.filter((d) => d.type === "behind"), [{ type: "behind", viewEpoch: epoch + 2 }]);
  assert.deepEqual(out.send.map((x) => x.message.type), ["renewAnswer"], "it still answers the renewal");
});

test("view: the arbiter's wish is served by any view above the asker's epoch, its own or a ring node's (no extra view change later)", () => {
  const w = settledWorld(["a", "b", "c"], true);
  const epoch = w.view("a")!.epoch;
  const arbiter = w.node(ARBITER);
  w.crash("b"); // the arbiter's attempt cannot finish quickly without b
  arbiter.receive({ type: "coordinate", from: "a", reason: "suspect", epoch }, w.local(ARBITER));
  assert.equal(arbiter.status(w.local(ARBITER)).wanted, "suspect");
  // A ring node's view above the asker's epoch shows up in a reject: the wish is served.
  arbiter.receive({ type: "reject", from: "c", ballot: { epoch: epoch + 1, coordinator: ARBITER }, promised: { epoch: epoch + 1, coordinator: "c" }, viewEpoch: epoch + 1 }, w.local(ARBITER));
  assert.equal(arbiter.status(w.local(ARBITER)).wanted, null);
});

test("view: a node that removed a voter by a reload reports that voter's possible section for one maximum lease (the new list has no holds for it)", () => {
  const w = settledWorld(["a", "b", "c", "d"]);
  const epoch = w.view("a")!.epoch;
  const a = w.node("a");
  assert.equal(a.changeMembership(["a", "b", "c"], w.local("a")), null);
  a.ready();
  a.receive({ type: "prepare", from: "b", ballot: { epoch: epoch + 5, coordinator: "b" }, voters: ABC }, w.local("a") + S.tokenLeaseMs);
  const promise = a.ready().send.find((x) => x.message.type === "promise")?.message as { facts: { sectionRemainingMs: number } } | undefined;
  assert.ok(promise, "a promises");
  assert.ok(promise.facts.sectionRemainingMs >= S.ringLeaseMaxMs + S.tokenLeaseSafetyMs - S.tokenLeaseMs, `d's section may still run: ${promise.facts.sectionRemainingMs}`);
});

test("view: a node's first backing of a lease stores its hard state, so its restart counts as one (it reports the restart hold for every node)", () => {
  const w = new World(["a", "b", "c"]);
  const c = w.node("c");
  c.ready();
  c.receive({ type: "renew", from: "a", epoch: 0, seq: 1, voters: ABC }, w.local("c"));
  const out = c.ready();
  assert.deepEqual(out.persist, { promised: { epoch: 0, coordinator: "" }, view: null }, "stored before the OK goes out");
  assert.equal((out.send[0].message as { ok: boolean }).ok, true);
  c.receive({ type: "renew", from: "a", epoch: 0, seq: 2, voters: ABC }, w.local("c"));
  assert.equal(c.ready().persist, null, "only the first time");
});

test("view: a ring node asks the arbiter to coordinate (coordinate {reason, epoch}) and waits its grace before coordinating itself; ring nodes ignore such requests", () => {
  const w = settledWorld(["a", "b", "c", "d"], true);
  const epoch = w.view("a")!.epoch;
  // b asks; the arbiter's ballot goes above the epoch b reports, and b does not compete meanwhile.
  w.node("b").startViewChange("suspect", w.local("b"), S.viewChangeRetryMs);
  w.collect("b");
  w.node(ARBITER).receive({ type: "coordinate", from: "b", reason: "suspect", epoch }, w.local(ARBITER));
  w.collect(ARBITER);
  assert.ok(w.runUntil(() => w.settled(["a", "b", "c", "d"], epoch + 1), 5_000));
  assert.equal(w.view("a")!.coordinator, ARBITER, "the arbiter coordinated b's view change");
  assert.equal(w.view("a")!.epoch, epoch + 1, "one epoch, no duel with b");
  // A ring node ignores a coordinate request; only the arbiter takes them (and only from ring nodes).
  w.node("c").receive({ type: "coordinate", from: "a", reason: "suspect", epoch: epoch + 1 }, w.local("c"));
  assert.equal(w.node("c").status(w.local("c")).coordinating, null);
  w.node(ARBITER).receive({ type: "coordinate", from: ARBITER, reason: "suspect", epoch: epoch + 1 } as never, w.local(ARBITER));
  assert.equal(w.node(ARBITER).status(w.local(ARBITER)).coordinating, null, "not from the arbiter itself");
  // With the arbiter down, b's request to it fails, which ends the grace: b coordinates itself.
  w.crash(ARBITER);
  w.run(S.tokenLeaseMs);
  w.node("b").startViewChange("suspect", w.local("b"));
  assert.deepEqual(w.node("b").ready().send.map((x) => [x.to, x.message.type]), [[ARBITER, "coordinate"]], "every wish asks the arbiter first");
  assert.equal(w.node("b").status(w.local("b")).coordinating, null, "b leaves the arbiter its grace");
  w.node("b").sendFailed(ARBITER, { type: "coordinate", from: "b", reason: "suspect", epoch: epoch + 1 }, w.local("b"));
  assert.notEqual(w.node("b").status(w.local("b")).coordinating, null, "the failed request ends the grace at once");
  w.collect("b");
  assert.ok(w.runUntil(() => w.settled(["a", "b", "c", "d"], epoch + 2), 5_000));
  assert.equal(w.view("a")!.coordinator, "b");
  w.checkSafety();
});

// ---- token loss ------------------------------------------------------------------------------

test("view: a token unseen for tokenLossMs everywhere is regenerated through a view change; a live one is not", () => {
  const w = settledWorld(["a", "b", "c"]);
  const epoch = w.view("a")!.epoch;
  for (const id of ["a", "b", "c"]) w.facts.set(id, { ...w.facts.get(id)!, token: "away", lastTokenAgeMs: S.tokenLossMs });
  w.facts.set("c", { ...w.facts.get("c")!, token: "held", lastTokenAgeMs: 0 });
  w.run(2 * S.viewChangeTimeoutMs);
  assert.equal(w.view("a")!.epoch, epoch, "c holds the token: no view change");
  assert.ok(w.decisions.length > 0);
  w.facts.set("c", { ...w.facts.get("c")!, token: "away", lastTokenAgeMs: S.tokenLossMs });
  assert.ok(w.runUntil(() => w.settled(["a", "b", "c"], epoch + 1), S.tokenLossMs + 5_000), "lost everywhere: regenerated");
  // Two members may find the loss at once (a collision costs an epoch); each new epoch has one token.
  const newEpochs = new Set(w.installs().filter((i) => i.decision.view.epoch > epoch).map((i) => i.decision.view.epoch));
  assert.ok(newEpochs.size >= 1);
  for (const e of newEpochs) assert.equal(w.installs().filter((i) => i.decision.view.epoch === e && i.decision.regenerate).length, 1, `exactly one new token in epoch ${e}`);
  w.checkSafety();
});

// ---- random interleavings --------------------------------------------------------------------

test("view: seeded random runs with delays, drops, cuts, crashes and clock rates ±10 % keep one view per epoch, a majority behind each, and no overlapping leases", () => {
  const ids = ["a", "b", "c", "d", "e"];
  let views = 0;
  let leaseEpochs = 0;
  for (let seed = 1; seed <= 30; seed++) {
    const rng = new Prng(seed);
    const w = new World(ids, true);
    // Clock rates within ±10 %: at most 1.1 / 0.9 ≈ 1.22 apart, inside the lease margin's 1.25.
    for (const id of [...ids, ARBITER]) w.clockRate.set(id, 0.9 + 0.2 * rng.float());
    w.delay = () => rng.between(1, 60);
    w.drop = () => rng.chance(0.05);
    for (let round = 0; round < 2_000; round++) {
      const roll = rng.below(1_000);
      const id = rng.pick([...ids, ARBITER]);
      if (roll < 15 && w.nodes.has(id)) w.want(id, rng.pick(["suspect", "rejoin", "tokenLoss"] as const));
      else if (roll < 25 && w.nodes.size > 3) w.crash(id === ARBITER ? "a" : id);
      else if (roll < 45 && !w.nodes.has(id)) w.restart(id);
      else if (roll < 60) w.cut.add(`${rng.pick(ids)}|${rng.pick(ids)}`);
      else if (roll < 70) w.cut.clear();
      // Every holder wants to grant: its lease is renewed whenever it is not valid.
      for (const node of ids) {
        const facts = w.facts.get(node)!;
        const core = w.nodes.get(node);
        if (core && facts.token === "held") {
          core.wantLease(facts.tokenEpoch, w.local(node));
          w.collect(node);
        }
      }
      w.step();
    }
    w.checkSafety();
    views += w.viewsByEpoch.size;
    leaseEpochs += new Set(w.leases.map((l) => l.epoch)).size;
  }
  // The checks had something to check: many views, and leases in many epochs.
  assert.ok(views > 100, `views formed: ${views}`);
  assert.ok(leaseEpochs > 60, `epochs with a lease: ${leaseEpochs}`);
});


test("view: a restarted node that coordinates its own rejoin while a holder renews all the time gets into the view (found by the simulator, seed 55)", () => {
  // The restarted node starts held (its own promise waits for tokenLeaseMs), and the holder's
  // renewals reach it too. Before the fix, its attempt decided at once without its own deferred
  // promise (a view without the coordinator), and the renewals of that view's epoch then kept it
  // held forever: its deferred prepare of the decided epoch never ran, so it never tried again.
  const w = settledWorld();
  w.crash("e");
  w.want("a");
  assert.ok(w.runUntil(() => w.settled(["a", "b", "c", "d"], 2), 5_000));
  const renew = () => {
    for (const [id, facts] of w.facts) {
      if (facts.token === "held" && w.nodes.has(id)) w.node(id).wantLease(facts.tokenEpoch, w.nowMs);
      w.collect(id);
    }
  };
  w.restart("e");
  w.want("e", "rejoin");
  let joined = false;
  for (let i = 0; i < (3 * S.viewChangeTimeoutMs) / TICK_MS && !joined; i++) {
    renew();
    w.step();
    joined = w.settled(["a", "b", "c", "d", "e"], 3) && w.view("e")!.members.includes("e");
  }
  assert.ok(joined, `e is in the view within ${3 * S.viewChangeTimeoutMs} ms (views: ${["a", "e"].map((id) => JSON.stringify(w.view(id)?.members)).join(" ")})`);
  w.checkSafety();
});

test("view: a holder left out of a newer view learns it from the refused renewals and rejoins (found by the simulator, seed 398)", () => {
  // a holds the token and renews for a waiter, so it never probes for a lost token; its
  // successor acknowledged its last hand-off before moving on. Before the fix nothing told it
  // that a majority had moved to a newer view: it renewed in vain, stuck with its old token.
  const w = settledWorld(["a", "b", "c"]);
  const epoch = w.view("a")!.epoch;
  w.split(["a"], ["b", "c"]);
  w.want("b");
  assert.ok(w.runUntil(() => w.settled(["b", "c"], epoch + 1), 5_000), "b and c form a view without a");
  w.cut.clear();
  let joined = false;
  for (let i = 0; i < (3 * S.viewChangeTimeoutMs) / TICK_MS && !joined; i++) {
    w.node("a").wantLease(epoch, w.local("a"));
    w.collect("a");
    w.step();
    joined = w.settled(["a", "b", "c"], epoch + 2);
  }
  assert.ok(joined, `a rejoins within ${3 * S.viewChangeTimeoutMs} ms (a: ${JSON.stringify(w.view("a")?.members)} epoch ${w.view("a")?.epoch})`);
  w.checkSafety();
});

test("view: a coordinate request that arrives as the arbiter's running attempt is decided does not crash the arbiter (the decision ends its wish first)", () => {
  const w = settledWorld(["a", "b", "c"], true);
  const epoch = w.view("a")!.epoch;
  // c answers slowly: the arbiter, with a's and b's promises, waits viewPromiseWaitMs for c's.
  w.delay = (from, to) => (from === "c" || to === "c" ? 60_000 : 1);
  const promisedTo = new Set<string>();
  w.drop = (packet) => {
    if (packet.to === ARBITER && packet.message.type === "promise") promisedTo.add(packet.message.from);
    return false;
  };
  const arbiter = w.node(ARBITER);
  arbiter.receive({ type: "coordinate", from: "a", reason: "suspect", epoch }, w.local(ARBITER));
  w.collect(ARBITER);
  assert.ok(w.runUntil(() => promisedTo.has("a") && promisedTo.has("b"), S.tokenLeaseMs + 1_000), "a and b promise");
  assert.notEqual(arbiter.status(w.local(ARBITER)).coordinating, null, "still waiting for c");
  // The wait is over; before the arbiter's next tick, b asks too: its tick decides the view.
  w.nowMs += S.viewPromiseWaitMs + TICK_MS;
  arbiter.receive({ type: "coordinate", from: "b", reason: "suspect", epoch }, w.local(ARBITER));
  const out = arbiter.ready();
  assert.ok(out.events.some((e) => e.event === "viewDecided" && e.fields.epoch === epoch + 1), "the view of a's wish is decided");
  assert.ok(!out.events.some((e) => e.event === "badViewMessage"));
});

// ---- a long section is not a lost token ------------------------------------------------------

/**
 * A settled ring of a, b, c in which a took the token at `w.nowMs` and grants a section of
 * `leaseMs` under a lease renewed for it; b and c last saw the token then. `advance` runs the world
 * while b's and c's sightings age (the World's facts are static otherwise).
 */
function sectionAtA(leaseMs: number): { w: World; epoch: number; grantedAtMs: number; advance: (ms: number) => void } {
  const w = settledWorld(["a", "b", "c"]);
  const epoch = w.view("a")!.epoch;
  const grantedAtMs = w.nowMs;
  w.facts.set("a", { ...w.facts.get("a")!, token: "held", tokenEpoch: epoch, lastTokenAgeMs: 0, sectionRemainingMs: leaseMs });
  w.node("a").wantLease(epoch, w.local("a"), leaseMs);
  w.collect("a");
  assert.ok(w.runUntil(() => w.leases.some((l) => l.node === "a" && l.epoch === epoch && l.fromMs >= grantedAtMs), 200), "a's lease for the section");
  w.node("a").sectionGranted(epoch, leaseMs, w.local("a"));
  w.collect("a");
  const advance = (ms: number) => {
    const end = w.nowMs + ms;
    while (w.nowMs < end) {
      for (const id of ["b", "c"]) w.facts.set(id, { ...w.facts.get(id)!, token: "away", lastTokenAgeMs: w.nowMs - grantedAtMs });
      w.step();
    }
  };
  return { w, epoch, grantedAtMs, advance };
}

test("view: a 3 s section at a loaded holder (its answers take 300 ms, 3 × viewPromiseWaitMs) ends without a token-loss view change, though b and c see no token for 3 s", () => {
  const leaseMs = 3_000;
  assert.ok(leaseMs > S.tokenLossMs && 300 > S.viewPromiseWaitMs, "the section outlasts tokenLossMs; a's answers come after the probe's wait");
  const { w, epoch, advance } = sectionAtA(leaseMs);
  w.delay = (from) => from === "a" ? 300 : 1;
  advance(leaseMs);
  for (const id of ["a", "b", "c"]) assert.equal(w.view(id)!.epoch, epoch, `${id}: still the section's view`);
  assert.equal(w.installs().filter((i) => i.decision.view.epoch > epoch).length, 0, "no view change during the section");
  w.checkSafety();
});

test("view: a holder killed in a 3 s section: its token is regenerated after the section's lease and tokenLossMs, not before the lease ends", () => {
  const leaseMs = 3_000;
  const { w, epoch, grantedAtMs, advance } = sectionAtA(leaseMs);
  w.crash("a");
  advance(leaseMs);
  assert.equal(w.view("b")!.epoch, epoch, "no view change while a's section may run");
  let regeneratedAtMs = -1;
  for (let i = 0; i < 1_000 && regeneratedAtMs < 0; i++) {
    advance(TICK_MS);
    if (w.settled(["b", "c"], epoch + 1)) regeneratedAtMs = w.nowMs;
  }
  assert.ok(regeneratedAtMs > 0, "b and c regenerate the token");
  // The probe starts tokenLossMs after the section's end; a view change then takes a few round
  // trips and waits out the holds of a's last lease (tokenLeaseMs, long over by then).
  const boundMs = grantedAtMs + leaseMs + S.tokenLossMs + S.viewChangeRetryMs * 3 + 200;
  assert.ok(regeneratedAtMs <= boundMs, `regenerated ${regeneratedAtMs - grantedAtMs} ms after the grant, bound ${boundMs - grantedAtMs}`);
  w.checkSafety();
});

test("view: a member that missed the section's announcement probes, and the members that heard it answer 'seen' (age 0): the token is alive, no view change", () => {
  const w = settledWorld();
  const epoch = w.view("a")!.epoch;
  const others = ["b", "c", "d", "e"];
  const startMs = w.nowMs;
  w.facts.set("a", { ...w.facts.get("a")!, token: "held", tokenEpoch: epoch, lastTokenAgeMs: 0, sectionRemainingMs: 3_000 });
  w.drop = (p) => p.message.type === "section" && p.to === "e";
  w.node("a").sectionGranted(epoch, 3_000, w.local("a"));
  w.collect("a");
  w.delay = (from) => from === "a" ? 300 : 1; // a answers late: only the others' answers count
  let probedAtMs = -1;
  const end = startMs + 3_000;
  while (w.nowMs < end) {
    for (const id of others) w.facts.set(id, { ...w.facts.get(id)!, token: "away", lastTokenAgeMs: w.nowMs - startMs });
    w.step();
    if (probedAtMs < 0 && w.queue.some((p) => p.from === "e" && p.message.type === "probe")) probedAtMs = w.nowMs;
  }
  assert.ok(probedAtMs >= startMs + S.tokenLossMs, "e, which missed the announcement, probed once the token was away tokenLossMs");
  assert.equal(w.installs().filter((i) => i.decision.view.epoch > epoch).length, 0, "no view change");
  for (const id of ["b", "c", "d"]) assert.ok(w.node(id).status(w.local(id)).sectionSeenUntilMs !== null, `${id} heard of the section`);
  assert.equal(w.node("e").status(w.local("e")).sectionSeenUntilMs, null, "e did not");
  w.checkSafety();
});

test("view: a section's announcement is checked and bounded: from a non-ring node it is dropped; of another epoch it is ignored; a lease above ringLeaseMaxMs counts as ringLeaseMaxMs", () => {
  const w = settledWorld(["a", "b", "c"]);
  const epoch = w.view("a")!.epoch;
  const b = w.node("b");
  b.receive({ type: "section", from: "zz", epoch, leaseMs: 1_000, n: 1 }, w.local("b"));
  b.receive({ type: "section", from: "a", epoch: EPOCH_MAX + 1, leaseMs: 1_000, n: 1 }, w.local("b"));
  b.receive({ type: "section", from: "a", epoch, leaseMs: -1, n: 1 }, w.local("b"));
  assert.equal(b.ready().events.filter((e) => e.event === "badViewMessage").length, 3);
  b.receive({ type: "section", from: "a", epoch: epoch - 1, leaseMs: 1_000, n: 1 }, w.local("b"));
  b.receive({ type: "section", from: "a", epoch: epoch + 1, leaseMs: 1_000, n: 1 }, w.local("b"));
  assert.equal(b.status(w.local("b")).sectionSeenUntilMs, null, "another epoch's section is not this view's token");
  b.receive({ type: "section", from: "a", epoch, leaseMs: Number.MAX_SAFE_INTEGER, n: 1 }, w.local("b"));
  assert.equal(b.status(w.local("b")).sectionSeenUntilMs, w.local("b") + S.ringLeaseMaxMs);
  b.receive({ type: "section", from: "a", epoch, leaseMs: 10, n: 1 }, w.local("b"));
  assert.equal(b.status(w.local("b")).sectionSeenUntilMs, w.local("b") + S.ringLeaseMaxMs, "a shorter, later section does not shorten the wait");
});

test("view: a holder announces a section unless its last announcement already has the others wait until tokenLossMs / 2 after its end (a client leaving and entering again costs no messages per section)", () => {
  const w = settledWorld(["a", "b", "c"]);
  const epoch = w.view("a")!.epoch;
  const a = w.node("a");
  const announced = (leaseMs: number) => {
    a.sectionGranted(epoch, leaseMs, w.local("a"));
    return a.ready().send.filter((s) => s.message.type === "section").map((s) => s.to);
  };
  assert.deepEqual(announced(3_000), ["b", "c"], "the first section goes to the other voters");
  w.run(S.tokenLossMs / 2);
  assert.deepEqual(announced(3_000), [], "ends tokenLossMs / 2 after the announced end: the others wait past it anyway");
  w.run(TICK_MS);
  assert.deepEqual(announced(3_000), ["b", "c"], "ends later: announced");
  assert.deepEqual(announced(100), [], "a short one inside the announced one");
  assert.deepEqual(announced(3_000 + S.tokenLossMs), ["b", "c"], "a longer one");
  a.sectionGranted(epoch - 1, 3_000 + 2 * S.tokenLossMs, w.local("a"));
  assert.deepEqual(a.ready().send, [], "no announcement for another epoch");
});

// ---- an announced section does not hide a token lost elsewhere ---------------------------------

/**
 * A ring of a, b, c in which a announces a section of `leaseMs` (sectionAtA); its client leaves
 * after 10 ms, a hands the token to b (which acked it: the suspect path never fires) and b dies
 * holding it. Only the token-loss probe can find it. Runs until a and c installed a newer view
 * (at most `maxMs`); returns when, counted from the hand-off (the loss), or -1.
 */
function lostAfterAnnouncedSection(leaseMs: number, maxMs: number, drop: (p: Packet) => boolean = () => false): number {
  const { w, epoch, grantedAtMs } = sectionAtA(leaseMs);
  w.run(TICK_MS);
  const handedAtMs = w.nowMs;
  w.facts.set("a", { ...w.facts.get("a")!, token: "away", tokenHop: 2, lastTokenAgeMs: 0, sectionRemainingMs: 0 });
  w.facts.set("b", { ...w.facts.get("b")!, token: "held", tokenEpoch: epoch, tokenHop: 2, lastTokenAgeMs: 0 });
  w.crash("b");
  w.drop = drop;
  while (w.nowMs < handedAtMs + maxMs) {
    w.facts.set("a", { ...w.facts.get("a")!, lastTokenAgeMs: w.nowMs - handedAtMs });
    w.facts.set("c", { ...w.facts.get("c")!, token: "away", lastTokenAgeMs: w.nowMs - grantedAtMs });
    w.step();
    if (w.settled(["a", "c"], epoch + 1)) {
      w.checkSafety();
      return w.nowMs - handedAtMs;
    }
  }
  return -1;
}

test("view: a token lost at the next holder after an announced 10 s section is regenerated within about tokenLossMs + a view change of the loss, not the section's lease (the announcer ends its announcement when it probes)", () => {
  const leaseMs = S.ringLeaseMaxMs;
  // As for an unannounced section: the probe starts tokenLossMs after the loss; the view change
  // takes a few round trips (the arbiter's grace included, as in the holder-killed test above).
  // Measured: 2,280 ms with a 1 ms lease, 2,060 ms with the 10 s one (12,280 ms before a's probe
  // sent sectionEnd: c answered "seen" from a's announcement until its lease ended).
  const boundMs = S.tokenLossMs + S.viewChangeRetryMs * 3 + 200;
  assert.ok(boundMs < leaseMs, "the bound is below the announced lease: the test tells the two apart");
  const unannouncedMs = lostAfterAnnouncedSection(1, boundMs + 1_000);
  assert.ok(unannouncedMs > 0 && unannouncedMs <= boundMs, `a 1 ms section: regenerated ${unannouncedMs} ms after the loss, bound ${boundMs}`);
  const announcedMs = lostAfterAnnouncedSection(leaseMs, leaseMs + S.tokenLossMs + 2_000);
  assert.ok(announcedMs > 0, "regenerated at all");
  assert.ok(announcedMs <= boundMs, `a ${leaseMs} ms announced section: regenerated ${announcedMs} ms after the loss, bound ${boundMs}`);
});

test("view: a sectionEnd lost (or overtaken by the probe) costs one more probe round, not the lease: every probe of the announcer repeats it", () => {
  const leaseMs = S.ringLeaseMaxMs;
  let dropped = 0;
  const dropFirst = (p: Packet) => p.message.type === "sectionEnd" && dropped++ === 0;
  // The second probe round (tokenLossMs after the first) repeats the end: measured 4,060 ms.
  const boundMs = 2 * S.tokenLossMs + S.viewChangeRetryMs * 3 + 200;
  const regeneratedMs = lostAfterAnnouncedSection(leaseMs, leaseMs + S.tokenLossMs + 2_000, dropFirst);
  assert.equal(dropped >= 2, true, "the first sectionEnd was dropped, and another one was sent");
  assert.ok(regeneratedMs > 2 * S.tokenLossMs, `the first round found the token "seen", the second one lost (regenerated ${regeneratedMs} ms after the loss)`);
  assert.ok(regeneratedMs > 0 && regeneratedMs <= boundMs, `regenerated ${regeneratedMs} ms after the loss, bound ${boundMs}`);
});

test("view: a sectionEnd is checked and ends only its sender's announcement of its epoch: from another ring node or of another epoch it is ignored; from a non-ring node or the arbiter it is dropped", () => {
  const w = settledWorld(["a", "b", "c"]);
  const epoch = w.view("a")!.epoch;
  const b = w.node("b");
  b.receive({ type: "section", from: "a", epoch, leaseMs: 3_000, n: 1 }, w.local("b"));
  const untilMs = w.local("b") + 3_000;
  b.receive({ type: "sectionEnd", from: "zz", epoch, n: 1 }, w.local("b"));
  b.receive({ type: "sectionEnd", from: ARBITER, epoch, n: 1 }, w.local("b"));
  b.receive({ type: "sectionEnd", from: "a", epoch: EPOCH_MAX + 1, n: 1 }, w.local("b"));
  b.receive({ type: "sectionEnd", from: "a", epoch, n: 1, leaseMs: 0 } as unknown as ViewMessage, w.local("b"));
  assert.equal(b.ready().events.filter((e) => e.event === "badViewMessage").length, 3, "zz, the arbiter and an epoch above EPOCH_MAX (the core does not check unknown keys: the wire schema does)");
  assert.equal(b.status(w.local("b")).sectionSeenUntilMs, null, "a's own sectionEnd (the extra key aside) ended it");
  b.receive({ type: "section", from: "a", epoch, leaseMs: 3_000, n: 1 }, w.local("b"));
  b.receive({ type: "sectionEnd", from: "c", epoch, n: 1 }, w.local("b"));
  assert.equal(b.status(w.local("b")).sectionSeenUntilMs, untilMs, "c cannot end a's section");
  b.receive({ type: "sectionEnd", from: "a", epoch: epoch - 1, n: 1 }, w.local("b"));
  assert.equal(b.status(w.local("b")).sectionSeenUntilMs, untilMs, "an older epoch's end does not end this one's");
  b.receive({ type: "section", from: "c", epoch, leaseMs: 1_000, n: 1 }, w.local("b"));
  b.receive({ type: "sectionEnd", from: "a", epoch, n: 1 }, w.local("b"));
  assert.equal(b.status(w.local("b")).sectionSeenUntilMs, w.local("b") + 1_000, "a's end leaves c's section of the same view");
});

test("view: a section announced with a lease of 0 does not stop a running token-loss probe; one still running does", () => {
  const w = settledWorld(["a", "b", "c"]);
  const epoch = w.view("a")!.epoch;
  for (const id of ["a", "b", "c"]) w.facts.set(id, { ...w.facts.get(id)!, token: "away", lastTokenAgeMs: S.tokenLossMs });
  w.delay = () => 1_000; // the answers stay away: b's probe keeps running
  assert.ok(w.runUntil(() => w.queue.some((p) => p.from === "b" && p.message.type === "probe"), S.tokenLossMs), "b probes");
  const b = w.node("b");
  b.ready();
  b.receive({ type: "section", from: "a", epoch, leaseMs: 0, n: 1 }, w.local("b"));
  assert.ok(!b.ready().events.some((e) => e.event === "tokenAlive"), "a section over at its receipt says nothing of the token now");
  b.receive({ type: "section", from: "a", epoch, leaseMs: 500, n: 1 }, w.local("b"));
  assert.ok(b.ready().events.some((e) => e.event === "tokenAlive" && e.fields.section === true), "a running section: the token is there");
});

test("view: an announcer that ended its section (sectionEnd) announces its next section of the same view again", () => {
  const leaseMs = 3_000;
  const { w, epoch } = sectionAtA(leaseMs);
  w.run(TICK_MS);
  w.facts.set("a", { ...w.facts.get("a")!, token: "away", tokenHop: 2, lastTokenAgeMs: S.tokenLossMs, sectionRemainingMs: 0 });
  w.node("a").tick(w.local("a"));
  const sent = w.node("a").ready().send.map((s) => `${s.message.type}>${s.to}`);
  assert.deepEqual(sent, ["sectionEnd>b", "probe>b", "sectionEnd>c", "probe>c"], "the end goes ahead of the probe to each voter");
  w.facts.set("a", { ...w.facts.get("a")!, token: "held", lastTokenAgeMs: 0 });
  w.node("a").sectionGranted(epoch, 100, w.local("a"));
  assert.deepEqual(w.node("a").ready().send.filter((s) => s.message.type === "section").map((s) => s.to), ["b", "c"], "inside the ended announcement's lease, yet announced");
});

test("view: a late sectionEnd (sent by a's probe, delayed past the token's return to a and a's next announcement) does not end that newer announcement", () => {
  const leaseMs = 3_000;
  const { w, epoch } = sectionAtA(leaseMs);
  w.run(TICK_MS);
  const a = w.node("a");
  const b = w.node("b");
  // The token left a; a probes and ends its announcement: the sectionEnd to b is held back.
  w.facts.set("a", { ...w.facts.get("a")!, token: "away", tokenHop: 2, lastTokenAgeMs: S.tokenLossMs, sectionRemainingMs: 0 });
  a.tick(w.local("a"));
  const end = a.ready().send.find((s) => s.to === "b" && s.message.type === "sectionEnd")?.message;
  assert.ok(end, "a's probe ends its announcement");
  // The token comes back to a in the same view; a grants and announces a new long section.
  w.facts.set("a", { ...w.facts.get("a")!, token: "held", tokenHop: 5, lastTokenAgeMs: 0, sectionRemainingMs: leaseMs });
  a.sectionGranted(epoch, leaseMs, w.local("a"));
  const section = a.ready().send.find((s) => s.to === "b" && s.message.type === "section")?.message;
  assert.ok(section, "a announces the new section");
  b.receive(section, w.local("b"));
  const untilMs = b.status(w.local("b")).sectionSeenUntilMs;
  assert.equal(untilMs, w.local("b") + leaseMs, "b counts the new section");
  b.receive(end, w.local("b"));
  assert.equal(b.status(w.local("b")).sectionSeenUntilMs, untilMs, "the old end leaves the newer announcement");
  assert.ok(!b.ready().events.some((e) => e.event === "badViewMessage"));
  // a's next probe ends the new announcement as before.
  w.facts.set("a", { ...w.facts.get("a")!, token: "away", tokenHop: 6, lastTokenAgeMs: S.tokenLossMs, sectionRemainingMs: 0 });
  w.run(S.tokenLossMs);
  a.tick(w.local("a"));
  const nextEnd = a.ready().send.find((s) => s.to === "b" && s.message.type === "sectionEnd")?.message;
  assert.ok(nextEnd, "a's next probe ends its announcement again");
  b.receive(nextEnd, w.local("b"));
  assert.equal(b.status(w.local("b")).sectionSeenUntilMs, null, "the new end ends it");
});

/** How many announcers a node's token-loss probe keeps announcements of (its private map). */
function announcersKept(node: unknown): number {
  return (node as { probe: { announced: Map<string, unknown> } }).probe.announced.size;
}

test("view: announcements of a removed ring node and of older views are not kept: one entry per other voter of the current list at most", () => {
  const w = settledWorld(["a", "b", "c", "d"]);
  const epoch = w.view("b")!.epoch;
  const b = w.node("b");
  for (const from of ["a", "c", "d"]) b.receive({ type: "section", from, epoch, leaseMs: 3_000, n: 1 }, w.local("b"));
  assert.equal(announcersKept(b), 3);
  w.ring = ["a", "b", "c"];
  w.crash("d");
  for (const id of w.ring) {
    assert.equal(w.node(id).changeMembership(w.ring, w.local(id)), null, `${id} removes d`);
    w.collect(id);
  }
  assert.equal(announcersKept(b), 2, "d's announcement is dropped with d");
  // A section of a newer view drops the announcements of the older one.
  assert.ok(w.runUntil(() => w.settled(w.ring, epoch + 1), 10_000), "the view without d");
  const newer = w.view("b")!.epoch;
  b.receive({ type: "section", from: "a", epoch: newer, leaseMs: 3_000, n: 2 }, w.local("b"));
  assert.equal(announcersKept(b), 1, "only a's announcement of the installed view");
});

test("view: a receiver keeps at most 4 announcements per announcer, the latest-ending ones: the wait stays the latest end, and an end of them all ends it", () => {
  const w = settledWorld(["a", "b", "c"]);
  const epoch = w.view("b")!.epoch;
  const b = w.node("b");
  for (let n = 1; n <= 10; n++) b.receive({ type: "section", from: "a", epoch, leaseMs: 100 * n, n }, w.local("b"));
  const kept = (b as unknown as { probe: { announced: Map<string, Array<{ n: number }>> } }).probe.announced.get("a")!;
  assert.deepEqual(kept.map((s) => s.n).sort((x, y) => x - y), [7, 8, 9, 10], "the four ending last");
  assert.equal(b.status(w.local("b")).sectionSeenUntilMs, w.local("b") + 1_000);
  b.receive({ type: "sectionEnd", from: "a", epoch, n: 9 }, w.local("b"));
  assert.equal(b.status(w.local("b")).sectionSeenUntilMs, w.local("b") + 1_000, "n = 10 is not ended by an end of 9");
  b.receive({ type: "sectionEnd", from: "a", epoch, n: 10 }, w.local("b"));
  assert.equal(b.status(w.local("b")).sectionSeenUntilMs, null);
  assert.equal(announcersKept(b), 0);
});
