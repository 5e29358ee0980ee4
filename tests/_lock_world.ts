/**
 * Two lock server cores and an arbiter core wired by a tiny in-memory network the test controls:
 * what is delivered, dropped or held, and when the virtual clock moves (lock_replica_test.ts,
 * table_copy_test.ts).
 */
import assert from "node:assert/strict";
import { ArbiterCore, type ArbiterState } from "../lib/core/arbiter/arbiter.ts";
import { type ClientAnswer, LockReplica, type Outbound } from "../lib/core/lock/lock_replica.ts";
import { LockTable } from "../lib/core/lock/lock_table.ts";
import { LockMachine } from "../lib/core/lock/lock_machine.ts";
import type { PersistRecord, RestoredCopy } from "../lib/core/lock/durable_copy.ts";
import { DEFAULT_SETTINGS, type Settings } from "../lib/settings.ts";
import type { Command } from "../lib/core/lock/lock_table.ts";
import { SECRET_HASH } from "./_session.ts";

export interface Packet {
  from: string;
  outbound: Outbound;
}

/** Two lock servers and an arbiter; packets wait in `queue` until delivered or dropped. */
export class World {
  nowMs = 0;
  arbiter: ArbiterCore;
  /** What the arbiter wrote to its disk (the only thing a restart keeps). */
  arbiterDisk: ArbiterState | null = null;
  arbiterDown = false;
  readonly servers = new Map<string, LockReplica>();
  readonly queue: Packet[] = [];
  readonly answers = new Map<number, ClientAnswer>();
  /** Links that drop everything: "p>b" drops p's packets to b (and b's answers to them). */
  readonly cut = new Set<string>();
  readonly paused = new Set<string>();
  /** Packets this returns true for are lost (a finer cut than `cut`). */
  drop: (packet: Packet) => boolean = () => false;
  /** Packets this returns true for wait in `held` (in flight, neither delivered nor lost). */
  hold: (packet: Packet) => boolean = () => false;
  readonly held: Packet[] = [];
  /**
   * Servers with a durable log: how far it was told to write, the id its copy is stored with,
   * and whether it syncs at once.
   */
  readonly logs = new Map<string, { copyGen: number; index: number; incarnation?: string; syncAtOnce: boolean }>();
  /** Every record a durable server asked its log to write, in order (since its start). */
  readonly persisted = new Map<string, PersistRecord[]>();
  /** Held packets let through once by `release`. */
  private readonly released = new Set<Packet>();
  private nextClientRef = 1;
  /** Processes started so far: each gets a new incarnation id, as a driver draws one. */
  private incarnations = 0;

  /** `settings`: the servers' (tests of the streamed copy pass small chunks). */
  constructor(readonly settings: Settings = DEFAULT_SETTINGS) {
    this.arbiter = new ArbiterCore(this.arbiterOptions(), null, 0);
    this.start("p");
    this.start("b");
  }

  /** `durable`: the server keeps a durable log (its disk syncs at once), restarted from `restored`. */
  start(id: string, durable?: { restored: RestoredCopy | null }): void {
    const floor = id === "p" ? 1_000 : 2_000;
    const replica = new LockReplica({
      nodeId: id,
      peerId: id === "p" ? "b" : "p",
      arbiterId: "a",
      settings: this.settings,
      newTable: ({ epoch, tokenFloor }) => new LockTable({ limits: this.settings, sessionIdPrefix: `${id}-${this.incarnations}-${epoch}-`, tokenFloor }),
      tokenFloor: floor,
      incarnation: `${id}-${++this.incarnations}`,
      durable,
    }, this.nowMs);
    this.servers.set(id, replica);
    if (durable) {
      const restored = durable.restored;
      this.logs.set(id, { copyGen: 0, index: restored?.machine.appliedIndex ?? 0, incarnation: restored?.incarnation, syncAtOnce: true });
      this.persisted.set(id, []);
    }
    this.collect(id);
  }

  /** The durable log of `id` reports everything it was given as on disk. */
  fsync(id: string): void {
    const log = this.logs.get(id)!;
    this.server(id).durable(log.copyGen, log.index, this.nowMs);
    this.collect(id);
  }

  /** What a durable server's disk holds once every write is synced: its copy, view and copy's id now. */
  diskCopy(id: string): RestoredCopy | null {
    const server = this.server(id);
    if (!server.machine) return null;
    const machine = LockMachine.fromSnapshot(server.machine.snapshot(), this.settings, this.settings);
    const copy: RestoredCopy = { machine, epoch: server.epoch, primary: server.primary };
    const incarnation = this.logs.get(id)?.incarnation;
    if (incarnation !== undefined) copy.incarnation = incarnation;
    return copy;
  }

  server(id: string): LockReplica {
    return this.servers.get(id)!;
  }

  private collect(id: string): void {
    const ready = this.server(id).ready();
    for (const outbound of ready.send) this.queue.push({ from: id, outbound });
    for (const { clientRef, answer } of ready.answers) this.answers.set(clientRef, answer);
    const log = this.logs.get(id);
    if (!log || ready.persist.length === 0) return;
    this.persisted.get(id)!.push(...ready.persist);
    for (const record of ready.persist) {
      if (record.type === "base") {
        [log.copyGen, log.index, log.incarnation] = [record.copyGen, record.machine?.appliedIndex ?? 0, record.incarnation];
      } else if (record.type === "entry") log.index = record.entry.index;
    }
    if (log.syncAtOnce) this.fsync(id);
  }

  /** Delivers queued packets (and the answers they cause) until none is left; bounded. */
  deliver(): void {
    for (let round = 0; round < 10_000 && this.queue.length > 0; round++) {
      const packet = this.queue.shift()!;
      const { from, outbound } = packet;
      const sender = this.servers.get(from);
      if (!sender || this.paused.has(from)) continue;
      if (!this.released.delete(packet) && this.hold(packet)) {
        this.held.push(packet);
        continue;
      }
      const to = outbound.to;
      const lost = this.cut.has(`${from}>${to}`) || this.cut.has(`${to}>${from}`) || this.drop(packet);
      if (lost || this.paused.has(to)) {
        sender.failed(outbound.ref, this.nowMs);
      } else if (outbound.kind === "arbiter") {
        if (this.arbiterDown) {
          sender.failed(outbound.ref, this.nowMs);
        } else {
          const step = this.arbiter.step(outbound.request, this.nowMs);
          if (step.persist) this.arbiterDisk = structuredClone(step.persist); // durable before the answer
          sender.reply(outbound.ref, step.reply, this.nowMs);
        }
      } else {
        const target = this.servers.get(to);
        if (!target) sender.failed(outbound.ref, this.nowMs);
        else {
          const answer = target.peerMessage(outbound.message, this.nowMs);
          this.collect(to);
          sender.reply(outbound.ref, answer, this.nowMs);
        }
      }
      this.collect(from);
    }
  }

  /** Delivers the held packets (`hold` does not stop them again), and what they cause. */
  release(): void {
    for (const packet of this.held.splice(0)) {
      this.released.add(packet);
      this.queue.push(packet);
    }
    this.deliver();
  }

  /** Moves virtual time in tick steps, delivering everything after each tick. */
  run(ms: number): void {
    const end = this.nowMs + ms;
    while (this.nowMs < end) {
      this.nowMs = Math.min(end, this.nowMs + this.settings.tickMs);
      for (const [id, server] of this.servers) {
        if (this.paused.has(id)) continue;
        server.tick(this.nowMs);
        this.collect(id);
      }
      this.deliver();
    }
  }

  request(id: string, command: Command, requestId?: string): number {
    const ref = this.nextClientRef++;
    this.server(id).clientRequest(ref, command, requestId, this.nowMs);
    this.collect(id);
    this.deliver();
    return ref;
  }

  /** A committed, successful answer's result. */
  ok(ref: number) {
    const answer = this.answers.get(ref);
    assert.ok(answer?.ok, `expected a committed answer, got ${JSON.stringify(answer)}`);
    return answer.result;
  }

  /** The arbiter comes back from what it wrote to disk, on a clock that knows nothing of before. */
  restartArbiter(): void {
    this.arbiter = new ArbiterCore(this.arbiterOptions(), structuredClone(this.arbiterDisk), this.nowMs);
    this.arbiterDown = false;
  }

  /** Ids of the servers that would accept a command now. */
  serving(): string[] {
    return [...this.servers].filter(([id, server]) => !this.paused.has(id) && server.serving()).map(([id]) => id);
  }

  /** Runs `ms` in ticks and asserts at every tick that at most one server serves. */
  runChecked(ms: number): void {
    const end = this.nowMs + ms;
    while (this.nowMs < end) {
      this.run(Math.min(this.settings.tickMs, end - this.nowMs));
      assert.ok(this.serving().length <= 1, `two serving at ${this.nowMs}: ${this.serving()}`);
    }
  }

  private arbiterOptions() {
    const s = this.settings;
    return { primaryId: "p", backupId: "b", leaseMs: s.primaryLeaseMs, bootstrapWaitMs: s.bootstrapWaitMs };
  }

  crash(id: string): void {
    this.servers.delete(id);
    this.queue.splice(0, this.queue.length, ...this.queue.filter((p) => p.from !== id));
  }

  /** A power cut of every process of a durable cluster: each server restarts from its disk, the arbiter from its own. */
  restartAllFromDisk(): void {
    const disks = { p: this.diskCopy("p"), b: this.diskCopy("b") };
    this.crash("p");
    this.crash("b");
    this.restartArbiter();
    this.start("p", { restored: disks.p });
    this.start("b", { restored: disks.b });
  }
}

/** Brings the cluster up: p primary, b synced and in sync at the arbiter. */
export function healthy(settings: Settings = DEFAULT_SETTINGS): World {
  const w = new World(settings);
  w.run(500);
  assert.equal(w.server("p").role, "primary");
  assert.equal(w.server("b").role, "backup");
  assert.equal(w.arbiter.current.backupInSync, true);
  return w;
}

export function openSession(w: World, at = "p"): string {
  const result = w.ok(w.request(at, { type: "openSession", secretHash: SECRET_HASH, ttlMs: 5_000 }));
  assert.ok(result.type === "session");
  return result.session;
}

export function enter(w: World, session: string, name = "L", at = "p") {
  return w.request(at, { type: "enter", secretHash: SECRET_HASH, name, session, mode: "exclusive", waitMs: 10_000, lockDelayMs: 0 });
}

