/**
 * The lock server's replication core (primary, backup, arbiter) as pure state machines wired by
 * a tiny in-memory network the test controls: what is delivered, dropped or held, and when the
 * virtual clock moves. Each test states the safety or liveness rule it pins down.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { ArbiterCore } from "../lib/core/arbiter/arbiter.ts";
import { type ClientAnswer, LockReplica, type Outbound } from "../lib/core/lock/lock_replica.ts";
import { type Command, LockTable } from "../lib/core/lock/lock_table.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";

const S = DEFAULT_SETTINGS;

interface Packet {
  from: string;
  outbound: Outbound;
}

/** Two lock servers and an arbiter; packets wait in `queue` until delivered or dropped. */
class World {
  nowMs = 0;
  readonly arbiter = new ArbiterCore({ primaryId: "p", backupId: "b", leaseMs: S.primaryLeaseMs, bootstrapWaitMs: S.bootstrapWaitMs }, null, 0);
  readonly servers = new Map<string, LockReplica>();
  readonly queue: Packet[] = [];
  readonly answers = new Map<number, ClientAnswer>();
  /** Links that drop everything: "p>b" drops p's packets to b (and b's answers to them). */
  readonly cut = new Set<string>();
  readonly paused = new Set<string>();
  private nextClientRef = 1;

  constructor() {
    this.start("p");
    this.start("b");
  }

  start(id: string): void {
    const floor = id === "p" ? 1_000 : 2_000;
    const replica = new LockReplica({
      nodeId: id,
      peerId: id === "p" ? "b" : "p",
      arbiterId: "a",
      settings: S,
      newTable: () => new LockTable({ limits: S, sessionIdPrefix: `${id}-`, tokenFloor: floor }),
    }, this.nowMs);
    this.servers.set(id, replica);
    this.collect(id);
  }

  server(id: string): LockReplica {
    return this.servers.get(id)!;
  }

  private collect(id: string): void {
    const ready = this.server(id).ready();
    for (const outbound of ready.send) this.queue.push({ from: id, outbound });
    for (const { clientRef, answer } of ready.answers) this.answers.set(clientRef, answer);
  }

  /** Delivers queued packets (and the answers they cause) until none is left; bounded. */
  deliver(): void {
    for (let round = 0; round < 10_000 && this.queue.length > 0; round++) {
      const { from, outbound } = this.queue.shift()!;
      const sender = this.servers.get(from);
      if (!sender || this.paused.has(from)) continue;
      const to = outbound.to;
      if (this.cut.has(`${from}>${to}`) || this.cut.has(`${to}>${from}`) || this.paused.has(to)) {
        sender.failed(outbound.ref, this.nowMs);
      } else if (outbound.kind === "arbiter") {
        sender.reply(outbound.ref, this.arbiter.step(outbound.request, this.nowMs).reply, this.nowMs);
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

  /** Moves virtual time in tick steps, delivering everything after each tick. */
  run(ms: number): void {
    const end = this.nowMs + ms;
    while (this.nowMs < end) {
      this.nowMs = Math.min(end, this.nowMs + S.tickMs);
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

  crash(id: string): void {
    this.servers.delete(id);
    this.queue.splice(0, this.queue.length, ...this.queue.filter((p) => p.from !== id));
  }
}

/** Brings the cluster up: p primary, b synced and in sync at the arbiter. */
function healthy(): World {
  const w = new World();
  w.run(500);
  assert.equal(w.server("p").role, "primary");
  assert.equal(w.server("b").role, "backup");
  assert.equal(w.arbiter.current.backupInSync, true);
  return w;
}

function openSession(w: World, at = "p"): string {
  const result = w.ok(w.request(at, { type: "openSession", ttlMs: 5_000 }));
  assert.ok(result.type === "session");
  return result.session;
}

function enter(w: World, session: string, name = "L", at = "p") {
  return w.request(at, { type: "enter", name, session, mode: "exclusive", waitMs: 10_000, lockDelayMs: 0 });
}

test("replica: start-up makes the configured primary serve epoch 1 and the backup sync and count as in sync", () => {
  const w = healthy();
  assert.equal(w.server("p").epoch, 1);
  assert.equal(w.server("p").status().backup?.mode, "inSync");
  assert.equal(w.server("b").status().hasState, true);
});

test("replica: an answer waits until the backup has the change (replicate before acknowledging)", () => {
  const w = healthy();
  const session = openSession(w);
  const ref = w.server("p");
  const clientRef = 999;
  ref.clientRequest(clientRef, { type: "enter", name: "L", session, mode: "exclusive", waitMs: 0, lockDelayMs: 0 }, undefined, w.nowMs);
  const ready = ref.ready();
  assert.equal(ready.answers.length, 0, "no answer before the backup acked");
  for (const outbound of ready.send) w.queue.push({ from: "p", outbound });
  w.deliver();
  assert.ok(w.answers.get(clientRef)?.ok, "answered once the backup acked");
  const backupTable = w.server("b").machine!.table;
  assert.equal(backupTable.locks.get("L")?.holders[0].session, session, "the backup has the grant");
});

test("replica: a lost backup holds answers until the arbiter records it out of sync, then the primary goes on alone", () => {
  const w = healthy();
  const session = openSession(w);
  w.cut.add("p>b");
  const ref = enter(w, session);
  assert.equal(w.answers.get(ref), undefined, "not answered while the backup may still be promoted");
  w.run(S.replicationTimeoutMs + 200);
  assert.equal(w.arbiter.current.backupInSync, false, "the arbiter recorded the backup out of sync first");
  assert.ok(w.ok(ref).type === "granted", "then the grant is answered");
});

test("replica: takeover after the primary dies: refused while its lease runs, then a new epoch with the same grants and rising tokens", () => {
  const w = healthy();
  const session = openSession(w);
  const first = w.ok(enter(w, session));
  assert.ok(first.type === "granted");
  const other = openSession(w);
  const waiting = enter(w, other);
  assert.ok(w.ok(waiting).type === "waiting");
  w.crash("p");
  w.run(S.primarySilenceMs + 50);
  assert.equal(w.server("b").role, "backup", "not before the primary's lease lapsed");
  w.run(S.primaryLeaseMs);
  const b = w.server("b");
  assert.equal(b.role, "primary");
  assert.equal(b.epoch, 2);
  const table = b.machine!.table;
  assert.equal(table.locks.get("L")?.holders[0].token, first.grant.token, "the held lock survived");
  // The holder leaves at the new primary; the waiter gets a higher token.
  assert.ok(w.ok(w.request("b", { type: "leave", name: "L", session, token: first.grant.token })).type === "left");
  const second = w.ok(enter(w, other, "L", "b"));
  assert.ok(second.type === "granted" && second.grant.token > first.grant.token);
});

test("replica: takeover restarts every session lease (none ends earlier than the old primary allowed)", () => {
  const w = healthy();
  const session = openSession(w);
  w.run(4_000); // 1 s of its 5 s TTL left on the primary's clock
  w.ok(w.request("p", { type: "keepAlive", session }));
  w.run(4_000);
  w.crash("p");
  w.run(S.primaryLeaseMs + S.primarySilenceMs + 100);
  assert.equal(w.server("b").role, "primary");
  w.run(4_000); // past the old expiry, within a fresh TTL from takeover
  assert.ok(w.server("b").machine!.table.sessions.has(session));
});

test("replica: an old primary that sees the new epoch steps down, drops its copy, and syncs as backup", () => {
  const w = healthy();
  const session = openSession(w);
  w.paused.add("p");
  w.run(S.primaryLeaseMs + S.primarySilenceMs + 200);
  assert.equal(w.server("b").role, "primary");
  w.paused.delete("p");
  // Resumed with its lease lapsed: it refuses new commands at once.
  const refused = w.request("p", { type: "enter", name: "L", session, mode: "exclusive", waitMs: 0, lockDelayMs: 0 });
  const answer = w.answers.get(refused);
  assert.ok(answer && !answer.ok && answer.code === "not_primary", JSON.stringify(answer));
  w.run(300);
  assert.equal(w.server("p").role, "backup");
  assert.equal(w.server("p").epoch, 2);
  w.run(300);
  assert.equal(w.server("b").status().backup?.mode, "inSync", "the old primary caught up");
});

test("replica: a partition between primary and backup never gives two serving servers at one moment", () => {
  const w = healthy();
  openSession(w);
  w.cut.add("p>b");
  for (let step = 0; step < 200; step++) {
    w.run(S.tickMs);
    const serving = [...w.servers.values()].filter((s) => s.serving());
    assert.ok(serving.length <= 1, `two serving at ${w.nowMs}`);
  }
  // The primary still reaches the arbiter: it keeps serving, alone; the backup was not promoted.
  assert.equal(w.server("p").serving(), true);
  assert.equal(w.server("b").role, "backup");
});

test("replica: a backup cut off from everything is never promoted while the primary renews", () => {
  const w = healthy();
  w.cut.add("b>a");
  w.cut.add("p>b");
  w.run(2_000);
  assert.equal(w.server("p").serving(), true);
  assert.notEqual(w.server("b").role, "primary");
});

test("replica: a restarted backup gets a snapshot plus what followed, then counts as in sync again", () => {
  const w = healthy();
  const a = openSession(w);
  w.ok(enter(w, a));
  w.crash("b");
  w.run(S.replicationTimeoutMs + 200);
  assert.equal(w.arbiter.current.backupInSync, false);
  const c = openSession(w); // committed while the backup is away
  w.start("b");
  w.run(600);
  assert.equal(w.server("p").status().backup?.mode, "inSync");
  assert.equal(w.arbiter.current.backupInSync, true);
  const table = w.server("b").machine!.table;
  assert.ok(table.sessions.has(a) && table.sessions.has(c));
  // And it can take over afterwards.
  w.crash("p");
  w.run(S.primaryLeaseMs + S.primarySilenceMs + 200);
  assert.equal(w.server("b").role, "primary");
  assert.ok(w.server("b").machine!.table.sessions.has(c));
});

test("replica: a retried leave with the same idempotency key applies once and answers as the first time", () => {
  const w = healthy();
  const session = openSession(w);
  const granted = w.ok(enter(w, session));
  assert.ok(granted.type === "granted");
  const leave: Command = { type: "leave", name: "L", session, token: granted.grant.token };
  const first = w.ok(w.request("p", leave, "req-1"));
  const retry = w.ok(w.request("p", leave, "req-1"));
  assert.deepEqual(retry, first);
  const fresh = w.answers.get(w.request("p", leave, "req-2"));
  assert.ok(fresh && !fresh.ok, "a new request id is a new leave: refused");
});

test("replica: the idempotency memory survives a takeover", () => {
  const w = healthy();
  const session = openSession(w);
  const granted = w.ok(enter(w, session));
  assert.ok(granted.type === "granted");
  const leave: Command = { type: "leave", name: "L", session, token: granted.grant.token };
  const first = w.ok(w.request("p", leave, "req-1"));
  w.crash("p");
  w.run(S.primaryLeaseMs + S.primarySilenceMs + 200);
  assert.deepEqual(w.ok(w.request("b", leave, "req-1")), first);
});
