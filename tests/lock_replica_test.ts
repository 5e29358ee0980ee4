/**
 * The lock server's replication core (primary, backup, arbiter) as pure state machines wired by
 * a tiny in-memory network the test controls: what is delivered, dropped or held, and when the
 * virtual clock moves. Each test states the safety or liveness rule it pins down.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { recoverRecord } from "../lib/core/arbiter/recover.ts";
import { type Command, LockTable } from "../lib/core/lock/lock_table.ts";
import { LockReplica } from "../lib/core/lock/lock_replica.ts";
import type { RestoredCopy } from "../lib/core/lock/durable_copy.ts";
import { DEFAULT_SETTINGS, type Settings } from "../lib/settings.ts";
import { enter, healthy, openSession, type Packet, World } from "./_lock_world.ts";
import { SECRET_HASH } from "./_session.ts";

const S = DEFAULT_SETTINGS;

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
  ref.clientRequest(clientRef, { type: "enter", secretHash: SECRET_HASH, name: "L", session, mode: "exclusive", waitMs: 0, lockDelayMs: 0 }, undefined, w.nowMs);
  const ready = ref.ready();
  assert.equal(ready.answers.length, 0, "no answer before the backup acked");
  for (const outbound of ready.send) w.queue.push({ from: "p", outbound });
  w.deliver();
  assert.ok(w.answers.get(clientRef)?.ok, "answered once the backup acked");
  const backupTable = w.server("b").machine!.table;
  assert.equal(backupTable.locks.get("L")?.holders[0].session, session, "the backup has the grant");
});

test("replica: group commit: changes made while the pipeline is full go out together as soon as an ack frees it, not at the next tick", () => {
  const w = healthy({ ...S, replicationPipelineMax: 1 });
  const session = openSession(w);
  const [p, b] = [w.server("p"), w.server("b")];
  const appends = (send: ReturnType<typeof p.ready>["send"]) =>
    send.flatMap((o) => (o.kind === "peer" && o.message.type === "append" && o.message.entries.length > 0 ? [o] : []));
  for (const [clientRef, name] of [[901, "A"], [902, "B"], [903, "C"]] as const) {
    p.clientRequest(clientRef, { type: "enter", secretHash: SECRET_HASH, name, session, mode: "exclusive", waitMs: 0, lockDelayMs: 0 }, undefined, w.nowMs);
  }
  const first = appends(p.ready().send);
  assert.deepEqual(first.map((o) => o.kind === "peer" && o.message.type === "append" ? o.message.entries.length : 0), [1], "one append in flight (pipeline of 1)");
  const sent = first[0];
  assert.ok(sent.kind === "peer");
  // The ack comes back; the clock has not moved, no tick ran.
  p.reply(sent.ref, b.peerMessage(sent.message, w.nowMs), w.nowMs);
  const ready = p.ready();
  assert.deepEqual(ready.answers.map((a) => a.clientRef), [901], "the acked change is answered");
  const next = appends(ready.send);
  assert.deepEqual(next.map((o) => o.kind === "peer" && o.message.type === "append" ? o.message.entries.map((e) => e.command.type === "enter" && e.command.name) : []), [["B", "C"]], "the two queued changes in one append, at once");
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
  assert.ok(w.ok(w.request("b", { type: "leave", secretHash: SECRET_HASH, name: "L", session, token: first.grant.token })).type === "left");
  const second = w.ok(enter(w, other, "L", "b"));
  assert.ok(second.type === "granted" && second.grant.token > first.grant.token);
});

test("replica: takeover restarts every session lease (none ends earlier than the old primary allowed)", () => {
  const w = healthy();
  const session = openSession(w);
  w.run(4_000); // 1 s of its 5 s TTL left on the primary's clock
  w.ok(w.request("p", { type: "keepAlive", secretHash: SECRET_HASH, session }));
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
  const refused = w.request("p", { type: "enter", secretHash: SECRET_HASH, name: "L", session, mode: "exclusive", waitMs: 0, lockDelayMs: 0 });
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
  const leave: Command = { type: "leave", secretHash: SECRET_HASH, name: "L", session, token: granted.grant.token };
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
  const leave: Command = { type: "leave", secretHash: SECRET_HASH, name: "L", session, token: granted.grant.token };
  const first = w.ok(w.request("p", leave, "req-1"));
  w.crash("p");
  w.run(S.primaryLeaseMs + S.primarySilenceMs + 200);
  assert.deepEqual(w.ok(w.request("b", leave, "req-1")), first);
});

test("replica: a force-release reaches the backup; after a takeover its retry answers as the first, the holder stays released and the next token is above the counter it moved", () => {
  const w = healthy();
  const holder = openSession(w);
  const granted = w.ok(enter(w, holder));
  assert.ok(granted.type === "granted");
  const force: Command = { type: "forceRelease", name: "L" };
  const first = w.ok(w.request("p", force, "force-1"));
  assert.deepEqual(first, { ok: true, type: "forceReleased", name: "L", tokens: [granted.grant.token] });
  const backupTable = w.server("b").machine!.table;
  assert.equal(backupTable.locks.get("L"), undefined, "the backup has the release");
  assert.equal(backupTable.highestToken, granted.grant.token + 1, "and the counter it moved");
  w.crash("p");
  w.run(S.primaryLeaseMs + S.primarySilenceMs + 200);
  assert.equal(w.server("b").role, "primary");
  assert.deepEqual(w.ok(w.request("b", force, "force-1")), first, "a retry at the new primary answers as the first");
  const late = w.answers.get(w.request("b", { type: "leave", secretHash: SECRET_HASH, name: "L", session: holder, token: granted.grant.token }));
  assert.ok(late && !late.ok && late.code === "lock_not_found", "the old holder's late leave changes nothing");
  const other = openSession(w, "b");
  const next = w.ok(enter(w, other, "L", "b"));
  assert.ok(next.type === "granted" && next.grant.token > granted.grant.token + 1, "the next grant is above the counter the force-release moved");
});

/**
 * A client command on a session as the next test sends it: with the fields every such command
 * carries besides its own (`ON_SESSION`: the session secret's hash).
 */
const ON_SESSION: Record<string, unknown> = { secretHash: SECRET_HASH };
const onSession = (command: Record<string, unknown>) => ({ ...ON_SESSION, ...command }) as Command;

test("replica: a command the table refuses whatever comes before it is not logged; its answer waits for the entries it read; a remembered request id keeps its first answer", () => {
  const w = healthy();
  const session = openSession(w);
  const lastIndex = (id: string) => w.server(id).status().lastIndex;
  const logged = lastIndex("p");
  // Unknown session, fields out of the limits: refused at once, nothing logged or replicated (finding 1).
  const unknown = w.answers.get(w.request("p", onSession({ type: "keepAlive", session: "nope" })));
  assert.ok(unknown && !unknown.ok && unknown.code === "session_not_found", JSON.stringify(unknown));
  const tooLong = w.answers.get(w.request("p", onSession({ type: "enter", name: "L", session, mode: "exclusive", waitMs: S.waitMaxMs + 1, lockDelayMs: 0 })));
  assert.ok(tooLong && !tooLong.ok && tooLong.code === "bad_request", JSON.stringify(tooLong));
  // A session the table has, acted on without its secret: refused as forbidden, not logged (1c).
  const guessed = w.answers.get(w.request("p", { type: "keepAlive", session, secretHash: "a-guess" } as Command));
  assert.ok(guessed && !guessed.ok && guessed.code === "forbidden", JSON.stringify(guessed));
  w.deliver();
  assert.deepEqual([lastIndex("p"), lastIndex("b")], [logged, logged]);
  // A close not yet committed (the backup is cut off): a keepalive of that session reads it, so
  // its refusal waits until the close commits (a failover could still lose the close).
  w.cut.add("p>b");
  const close = w.request("p", onSession({ type: "closeSession", session }));
  const keepAlive = w.request("p", onSession({ type: "keepAlive", session }));
  assert.equal(w.answers.get(keepAlive), undefined, "not answered before the close it read commits");
  assert.equal(lastIndex("p"), logged + 1, "the refusal took no index");
  w.run(S.replicationTimeoutMs + 200);
  assert.ok(w.ok(close).type === "closed");
  const refused = w.answers.get(keepAlive);
  assert.ok(refused && !refused.ok && refused.code === "session_not_found", JSON.stringify(refused));
  // A retry of a remembered close is logged as before and answered as the first time, not
  // refused for the session it closed.
  w.cut.delete("p>b");
  const other = openSession(w);
  const first = w.ok(w.request("p", onSession({ type: "closeSession", session: other }), "close-1"));
  const before = lastIndex("p");
  assert.deepEqual(w.ok(w.request("p", onSession({ type: "closeSession", session: other }), "close-1")), first);
  assert.equal(lastIndex("p"), before + 1);
});

// ---- no single point of failure: the primary serves on a lease from the arbiter OR the backup ----

test("majority lease: the arbiter dies and the primary goes on serving on the backup's promises; no takeover", () => {
  const w = healthy();
  w.arbiterDown = true;
  w.runChecked(5_000);
  const session = openSession(w);
  const p = w.server("p");
  assert.equal(p.serving(), true, "still serving 10 arbiter leases later");
  const support = p.status().leaseSupport!;
  assert.equal(support.arbiterRemainingMs, 0, "the arbiter's lease lapsed long ago");
  assert.ok(support.backupRemainingMs > 0, "the backup's promise carries the lease");
  assert.equal(w.server("b").role, "backup");
  assert.ok(w.ok(enter(w, session)).type === "granted", "and grants, replicated to the backup");
  assert.ok(w.server("b").machine!.table.locks.get("L"));
});

test("majority lease: the backup dies and the arbiter's lease carries the primary, as before", () => {
  const w = healthy();
  const session = openSession(w);
  w.crash("b");
  w.runChecked(3_000);
  const p = w.server("p");
  assert.equal(p.serving(), true);
  assert.ok(p.status().leaseSupport!.arbiterRemainingMs > 0);
  assert.equal(p.status().leaseSupport!.backupRemainingMs, 0);
  assert.ok(w.ok(enter(w, session)).type === "granted");
});

test("majority lease: with neither the arbiter nor the backup the primary stops serving once both leases ran out", () => {
  const w = healthy();
  const session = openSession(w);
  w.arbiterDown = true;
  w.crash("b");
  const lastSupportMs = w.nowMs;
  w.run(Math.max(S.primaryLeaseMs, S.backupLeaseMs));
  assert.equal(w.server("p").serving(), false, "no lease from anyone: not serving");
  assert.ok(w.nowMs - lastSupportMs <= Math.max(S.primaryLeaseMs, S.backupLeaseMs));
  const answer = w.answers.get(enter(w, session));
  assert.ok(answer && !answer.ok && answer.code === "not_primary", JSON.stringify(answer));
});

test("majority lease: the primary cut from the arbiter only keeps serving and the backup never takes over", () => {
  const w = healthy();
  w.cut.add("p>a");
  w.runChecked(5_000);
  assert.equal(w.server("p").serving(), true);
  assert.equal(w.server("b").role, "backup");
  assert.equal(w.arbiter.current.epoch, 1, "no new epoch");
});

test("majority lease: the primary cut from the backup only keeps serving on the arbiter's lease; no takeover", () => {
  const w = healthy();
  w.cut.add("p>b");
  w.runChecked(5_000);
  const session = openSession(w);
  assert.equal(w.server("p").serving(), true);
  assert.equal(w.server("b").role, "backup");
  assert.equal(w.arbiter.current.epoch, 1);
  assert.ok(w.ok(enter(w, session)).type === "granted", "alone, once the arbiter recorded the backup out of sync");
});

test("takeover waits out the backup's own promise, not only the arbiter's lease", () => {
  const w = healthy();
  w.cut.add("p>a"); // the arbiter's lease lapses; the primary serves on the backup's promises
  w.runChecked(2_000);
  assert.equal(w.server("p").serving(), true);
  // The primary freezes: the arbiter's lease lapsed long ago, so only the backup's promise,
  // given with its last ack, holds the takeover back.
  w.paused.add("p");
  const promiseEndsAtMs = w.nowMs + w.server("b").status().promisedRemainingMs;
  const primaryLeaseEndsAtMs = w.nowMs + w.server("p").status().leaseSupport!.backupRemainingMs;
  assert.ok(primaryLeaseEndsAtMs <= promiseEndsAtMs - S.leaseSafetyMs, "the primary counts the promise from its send, less the margin");
  while (w.nowMs + S.tickMs < promiseEndsAtMs) {
    w.run(S.tickMs);
    assert.equal(w.server("b").role, "backup", `no takeover at ${w.nowMs} while the promise runs to ${promiseEndsAtMs}`);
  }
  w.run(S.claimRetryMs + 4 * S.tickMs);
  assert.equal(w.server("b").role, "primary", "takeover right after it lapsed");
  // The old primary, resumed, finds both leases lapsed: it does not serve, and steps down.
  w.paused.delete("p");
  w.runChecked(500);
  assert.equal(w.server("p").role, "backup");
});

test("takeover: a claim refused while the arbiter's lease outlives the backup's promise is repeated at the next tick, not claimRetryMs later (issue 14)", () => {
  const w = healthy();
  w.runChecked(1_000);
  // A moment when the arbiter's lease (renewed every leaseRenewMs) ends 10-40 ms after the
  // backup's promise (renewed every heartbeatMs): the claim at the promise's end is refused, and
  // a retry claimRetryMs (50 ms) later would come 10-40 ms after the lease ended.
  const ends = () => ({
    arbiter: w.nowMs + w.arbiter.leaseRemainingMs(w.nowMs),
    promise: w.nowMs + w.server("b").status().promisedRemainingMs,
  });
  for (let i = 0; i < 500; i++) {
    const { arbiter, promise } = ends();
    if (arbiter - promise >= 10 && arbiter - promise <= 40) break;
    w.run(S.tickMs);
  }
  const { arbiter: leaseEndsAtMs, promise: promiseEndsAtMs } = ends();
  assert.ok(leaseEndsAtMs - promiseEndsAtMs >= 10 && leaseEndsAtMs - promiseEndsAtMs <= 40, "such a moment came");
  w.paused.add("p");
  while (w.server("b").role !== "primary" && w.nowMs < leaseEndsAtMs + 1_000) w.run(S.tickMs);
  assert.equal(w.server("b").role, "primary");
  assert.ok(w.nowMs - leaseEndsAtMs < S.tickMs, `took over ${w.nowMs - leaseEndsAtMs} ms after the arbiter's lease ended (${leaseEndsAtMs - promiseEndsAtMs} ms after the promise)`);
});

test("takeover: a restarted backup first waits out the promises it may have given before its crash", () => {
  const w = healthy();
  w.cut.add("p>a"); // only the backup's promises carry the primary
  w.run(2_000);
  w.crash("b");
  // Back at once: its old promises (in memory, lost) may still let the primary serve. It learns
  // the primary from the arbiter and syncs, but the primary's appends (which it would ack with a
  // new promise) are lost, so only the restart rule holds the takeover back.
  w.drop = ({ outbound }) => outbound.kind === "peer" && outbound.message.type === "append";
  w.start("b");
  const restartedAtMs = w.nowMs;
  for (let i = 0; i < 100 && !w.server("b").status().hasState; i++) w.run(S.tickMs);
  assert.ok(w.server("b").status().hasState, "synced from the primary");
  w.crash("p"); // before the new copy acked any append: no new promise was given
  w.run(restartedAtMs + S.backupLeaseMs - S.tickMs - w.nowMs);
  assert.equal(w.server("b").role, "backup", "no takeover before every old promise ran out");
  w.run(S.claimRetryMs + 4 * S.tickMs);
  assert.equal(w.server("b").role, "primary");
  assert.equal(w.arbiter.current.epoch, 2);
});

test("arbiter restart: the epoch record comes back from disk and no takeover is approved until its old lease lapsed", () => {
  const w = healthy();
  openSession(w);
  w.arbiterDown = true;
  w.run(1_000); // the primary serves on the backup's lease meanwhile
  w.crash("p");
  w.run(S.backupLeaseMs + S.primarySilenceMs); // the backup's promise lapsed: it asks to take over
  assert.equal(w.server("b").role, "backup", "no takeover without the arbiter");
  w.restartArbiter();
  const restartedAtMs = w.nowMs;
  assert.equal(w.arbiter.current.epoch, 1, "epoch from disk");
  assert.equal(w.arbiter.current.backupInSync, true, "sync record from disk");
  w.run(S.primaryLeaseMs - S.tickMs);
  assert.equal(w.server("b").role, "backup", "a restarted arbiter assumes it just granted a lease");
  w.run(S.claimRetryMs + 4 * S.tickMs);
  assert.equal(w.server("b").role, "primary");
  assert.ok(w.nowMs - restartedAtMs >= S.primaryLeaseMs);
  assert.equal(w.arbiter.current.epoch, 2);
});

test("arbiter restart while the primary serves: renewals resume, nothing changes for clients", () => {
  const w = healthy();
  const session = openSession(w);
  w.arbiterDown = true;
  w.runChecked(2_000);
  w.restartArbiter();
  w.runChecked(1_000);
  const p = w.server("p");
  assert.equal(p.serving(), true);
  assert.ok(p.status().leaseSupport!.arbiterRemainingMs > 0, "the arbiter's lease is back");
  assert.equal(w.arbiter.current.epoch, 1);
  assert.ok(w.ok(enter(w, session)).type === "granted");
});

test("takeover: a new primary does not serve while a promise it gave during its claim still runs", () => {
  const w = healthy();
  w.cut.add("p>a");
  w.run(1_000);
  w.paused.add("p");
  // The backup's claim is in flight (held) when a late append of the old primary reaches it.
  w.hold = ({ outbound }) => outbound.kind === "arbiter" && outbound.request.type === "claim";
  for (let i = 0; i < 100 && w.held.length === 0; i++) w.run(S.tickMs);
  assert.equal(w.held.length, 1, "the backup asked to take over");
  const b = w.server("b");
  const ack = b.peerMessage({ type: "append", from: "p", epoch: 1, syncGen: Number.MAX_SAFE_INTEGER, entries: [] }, w.nowMs);
  assert.ok(ack.type === "appendAck" && ack.promiseMs === S.backupLeaseMs, "a fresh promise went out with the ack");
  const promiseEndsAtMs = w.nowMs + S.backupLeaseMs;
  w.hold = () => false;
  w.queue.push(...w.held.splice(0));
  w.deliver();
  assert.equal(b.role, "primary", "the arbiter granted the claim");
  while (w.nowMs + S.tickMs < promiseEndsAtMs) {
    assert.equal(b.serving(), false, `serving at ${w.nowMs} while the old primary may hold our promise to ${promiseEndsAtMs}`);
    w.run(S.tickMs);
  }
  w.run(2 * S.tickMs);
  assert.equal(b.serving(), true, "serving once the promise ran out");
});

test("renewals overlap: one lost renewal does not cost the arbiter's lease (the next goes out one renewal period later)", () => {
  const w = healthy();
  w.crash("b"); // only the arbiter backs the primary
  w.run(S.replicationTimeoutMs + 3 * S.leaseRenewMs);
  // Lose every renewal sent in the next 150 ms; they stay in flight, unanswered.
  let lost = 0;
  w.hold = ({ outbound }) => outbound.kind === "arbiter" && outbound.request.type === "renew" && lost++ < 2;
  w.run(S.leaseRenewMs + S.leaseRenewMs / 2);
  w.hold = () => false;
  assert.ok(lost >= 1, "a renewal was lost");
  w.runChecked(S.primaryLeaseMs);
  assert.equal(w.server("p").serving(), true, "later renewals carried the lease");
});

test("renewals overlap: an 'alone' answer does not count while a newer 'in sync' report may be what the arbiter recorded", () => {
  const w = healthy();
  // The first "alone" report waits in flight, later ones are lost; once the backup is back in
  // sync its "in sync" reports wait in flight too.
  let alone: Packet | undefined;
  const report = (packet: Packet) => (packet.outbound.kind === "arbiter" && packet.outbound.request.type === "renew" ? packet.outbound.request : undefined);
  w.hold = (packet) => {
    const r = report(packet);
    if (!r) return false;
    if (!r.backupInSync && !alone) return (alone = packet), true;
    return alone !== undefined && r.backupInSync;
  };
  w.drop = (packet) => alone !== undefined && report(packet)?.backupInSync === false && packet !== alone;
  w.cut.add("p>b");
  w.run(S.replicationTimeoutMs + 2 * S.leaseRenewMs);
  w.cut.delete("p>b");
  w.run(600);
  assert.ok(alone, "an 'alone' report is in flight");
  assert.ok(w.held.some((packet) => report(packet)?.backupInSync === true), "and a newer 'in sync' one");
  w.hold = () => false;
  // Only the "alone" report reaches the arbiter and is answered; the newer one is still on its way.
  w.held.splice(w.held.indexOf(alone), 1);
  w.queue.push(alone);
  w.deliver();
  assert.equal(w.arbiter.current.backupInSync, false, "the arbiter recorded 'alone'");
  assert.equal(w.server("p").status().backup?.arbiterRecordedInSync, true,
    "the primary does not take 'alone' as the record: the newer 'in sync' report may replace it any moment");
});

test("a restarted backup promises nothing until the arbiter told it the current epoch: a replaced primary never serves again on its promise", () => {
  // Found by review: p is replaced by b (epoch 2), b restarts with no memory of epoch 2, p resumes
  // cut off from the arbiter; p's heartbeat reached the fresh b, whose promise let p serve epoch 1
  // again and reuse tokens b had handed out.
  const w = healthy();
  const s1 = openSession(w);
  const first = w.ok(enter(w, s1, "M"));
  assert.ok(first.type === "granted");
  w.ok(w.request("p", { type: "leave", secretHash: SECRET_HASH, name: "M", session: s1, token: first.grant.token }));
  w.paused.add("p");
  w.run(3_000);
  assert.equal(w.server("b").role, "primary");
  assert.equal(w.arbiter.current.epoch, 2);
  w.crash("b");
  w.start("b");
  w.cut.add("p>a");
  w.paused.delete("p");
  for (let i = 0; i < 100; i++) {
    w.run(S.tickMs);
    const p = w.server("p");
    assert.ok(!(p.serving() && p.epoch < w.arbiter.current.epoch), `p serves epoch ${p.epoch} at ${w.nowMs} while the arbiter is at ${w.arbiter.current.epoch}`);
    const promise = w.server("b").status().promisedRemainingMs;
    assert.ok(promise === 0 || w.server("b").epoch >= w.arbiter.current.epoch, `b promised ${promise} ms in epoch ${w.server("b").epoch}`);
  }
  assert.notEqual(w.server("p").role, "primary", "the replaced primary stepped down once b knew the epoch");
});

test("a restarted backup asks the arbiter (whois) and, told the epoch it follows is current, backs the primary again", () => {
  const w = healthy();
  w.crash("b");
  w.run(S.replicationTimeoutMs + 2 * S.leaseRenewMs);
  w.start("b");
  w.run(1_000);
  assert.equal(w.server("b").role, "backup");
  assert.ok(w.server("b").status().promisedRemainingMs > 0, "promising again");
  w.arbiterDown = true;
  w.runChecked(2_000);
  assert.equal(w.server("p").serving(), true, "the backup's promise carries the primary with the arbiter down");
});

test("both servers restarted: the backup's new process proves the recorded copy gone, the primary starts a fresh table that grants nothing for the grace and continues above every old token", () => {
  const w = healthy();
  const old = openSession(w);
  const oldToken = w.ok(enter(w, old));
  assert.ok(oldToken.type === "granted");
  w.run(500); // renewals carry the record's raises
  const recorded = { ...w.arbiter.current };
  assert.ok(recorded.tokenCeiling! >= oldToken.grant.token, `the record covers the token handed out (${JSON.stringify(recorded)})`);
  assert.equal(recorded.ttlMaxMs, S.sessionTtlMs, "the default TTL is asked for up front");
  w.crash("p");
  w.crash("b");
  w.start("p");
  w.start("b");
  w.runChecked(2_000);
  const p = w.server("p");
  assert.equal(p.role, "primary", "the service comes back by itself");
  assert.equal(p.epoch, 2);
  assert.equal(w.arbiter.current.backupCopyLost, false, "a fresh epoch starts a clean record");
  const graceMs = Math.ceil(S.sessionTtlMs * S.primaryLeaseMs / (S.primaryLeaseMs - S.leaseSafetyMs));
  const grantsFrom = p.machine!.table.grantsFrom;
  assert.ok(grantsFrom > 0, "the fresh table holds its grants");
  // The grace runs from the claim's send, on the log's time base (which starts at the takeover).
  assert.ok(grantsFrom <= graceMs && grantsFrom > graceMs - 2_000, `grace ends at ${grantsFrom} (≈ ${graceMs} after the claim)`);
  // The service serves in the grace: sessions open, enters queue, nothing is granted.
  const fresh = openSession(w);
  const tryLock = w.ok(w.request("p", { type: "enter", secretHash: SECRET_HASH, name: "L", session: fresh, mode: "exclusive", waitMs: 0, lockDelayMs: 0 }));
  assert.equal(tryLock.type, "notGranted", "a try-lock in the grace is refused");
  const waiting = w.request("p", { type: "enter", secretHash: SECRET_HASH, name: "L", session: fresh, mode: "exclusive", waitMs: 60_000, lockDelayMs: 0 });
  assert.equal(w.ok(waiting).type, "waiting");
  const keepAlive = () => w.request("p", { type: "keepAlive", secretHash: SECRET_HASH, session: fresh });
  // The log's clock (a keepalive is no entry: the table's clock moves only with ticks).
  const logNowMs = () => w.nowMs + p.timeOffset;
  // Bounded: the grace is a few seconds of virtual time.
  for (let i = 0; i < 20 && logNowMs() + 1_000 < grantsFrom; i++) {
    w.runChecked(1_000);
    keepAlive();
    assert.equal(p.machine!.table.locks.get("L")?.holders.length ?? 0, 0, `nothing granted at ${logNowMs()} (grants from ${grantsFrom} on the log's clock)`);
  }
  w.runChecked(1_000);
  keepAlive();
  const holder = p.machine!.table.locks.get("L")?.holders[0];
  assert.equal(holder?.session, fresh, "granted once the grace is over");
  assert.ok(holder.token > recorded.tokenCeiling!, `the new token ${holder.token} is above every old one (ceiling ${recorded.tokenCeiling})`);
  assert.equal(w.server("b").machine?.table.grantsFrom, grantsFrom, "the backup's copy has the grace too");
});

test("a restarted backup alone (the primary lives) syncs again and is in sync; the mark of its lost copy is cleared and nothing is fresh", () => {
  const w = healthy();
  const session = openSession(w);
  w.crash("b");
  w.start("b");
  w.runChecked(2_000);
  assert.equal(w.server("p").epoch, 1, "no new epoch");
  assert.equal(w.arbiter.current.backupInSync, true);
  assert.equal(w.arbiter.current.backupCopyLost, false, "the in-sync report names the new process");
  assert.equal(w.arbiter.current.backupIncarnation, "b-3");
  w.ok(w.request("p", { type: "keepAlive", secretHash: SECRET_HASH, session }));
});

test("both servers restarted, the backup's first claim lost (it followed the primary's append instead): its claim on the primary's silence still proves its copy gone (simulator seed 86)", () => {
  const w = healthy();
  w.crash("b");
  // b never reaches the arbiter, and its requests for a copy are lost.
  w.drop = ({ from, outbound }) => from === "b" && (outbound.kind === "arbiter" || outbound.message.type === "syncRequest");
  w.start("b");
  w.run(200);
  assert.equal(w.server("b").role, "backup", "b follows p from its appends");
  assert.equal(w.server("b").machine, null, "without a copy");
  w.crash("p");
  w.start("p");
  w.run(1_000);
  assert.equal(w.server("p").role, "joining", "refused: the arbiter still counts on the in-sync backup");
  w.drop = () => false;
  w.runChecked(3_000);
  assert.equal(w.server("p").role, "primary", "b's claim without state (p silent) marked its copy lost; p starts afresh");
  assert.equal(w.server("p").epoch, 2);
  assert.equal(w.server("b").role, "backup");
});

test("arbiter recover during a backup's resync: the backup is recorded out of sync until it holds every committed change, so a takeover never hands a token out twice", () => {
  // One entry per append, so b can hold X without Y.
  const w = healthy({ ...S, replicationBatchMax: 1 });
  const session = openSession(w);
  const p = w.server("p");
  // p goes alone (b cut, recorded out of sync), then the arbiter's disk is lost: it is stopped.
  w.cut.add("p>b");
  w.run(1_500);
  assert.equal(w.arbiter.current.backupInSync, false, "recorded alone");
  w.arbiterDown = true;
  w.arbiterDisk = null;
  // b syncs again over a slow link: appends carrying entries wait in flight; heartbeats pass;
  // b's requests for the copy's chunks wait too, so its copy is still loading.
  const heldAppend = (pk: Packet) => pk.from === "p" && pk.outbound.kind === "peer" && pk.outbound.message.type === "append" && pk.outbound.message.entries.length > 0;
  const heldChunkRequest = (pk: Packet) => pk.from === "b" && pk.outbound.kind === "peer" && pk.outbound.message.type === "syncNext";
  w.hold = (pk) => heldAppend(pk) || heldChunkRequest(pk);
  w.cut.clear();
  for (let i = 0; i < 100 && p.status().backup?.mode !== "syncing"; i++) w.run(S.tickMs);
  assert.equal(p.status().backup?.mode, "syncing");
  // Two grants committed without b (its copy is still being loaded); they go out to b held.
  const tokens: number[] = [];
  for (const name of ["X", "Y"]) {
    const result = w.ok(enter(w, session, name));
    assert.ok(result.type === "granted");
    tokens.push(result.grant.token);
  }
  // b's copy completes (its chunk requests go through); the appends carrying X and Y stay held.
  w.hold = heldAppend;
  w.queue.push(...w.held.filter(heldChunkRequest));
  w.held.splice(0, w.held.length, ...w.held.filter((pk) => !heldChunkRequest(pk)));
  for (let i = 0; i < 100 && w.server("b").machine === null; i++) w.run(S.tickMs);
  w.run(2 * S.heartbeatMs); // a heartbeat's ack: from here commits wait for b (a short backlog)
  // b acks the first of them: commits now wait for its acks, but Y is not on b yet.
  const first = w.held.shift()!;
  const holdAppends = w.hold;
  w.hold = (pk) => pk !== first && holdAppends(pk);
  w.queue.push(first);
  w.deliver();
  assert.equal(w.server("b").machine?.table.locks.has("Y"), false, "b lacks the committed grant of Y");
  const decided = recoverRecord([{ id: "p", status: p.status() }, { id: "b", status: w.server("b").status() }], null);
  assert.ok(decided.ok);
  // Before the fix: in sync, since p already required b's acks.
  assert.equal(decided.record.backupInSync, false, "a copy that lacks committed changes is not in sync");
  // p dies before the recovered arbiter hears from it: b must not take over without Y.
  w.crash("p");
  w.held.splice(0);
  w.hold = () => false;
  w.arbiterDisk = decided.record;
  w.restartArbiter();
  w.runChecked(2_000);
  assert.notEqual(w.server("b").role, "primary", "the backup out of sync is never promoted");
  assert.equal(w.arbiter.current.epoch, decided.record.epoch, "no new epoch");
});

test("arbiter recover after the backup caught up: recorded in sync under its process id, and a takeover holds every grant", () => {
  const w = healthy();
  const session = openSession(w);
  const granted = w.ok(enter(w, session, "X"));
  assert.ok(granted.type === "granted");
  w.arbiterDown = true;
  w.arbiterDisk = null;
  const p = w.server("p");
  const decided = recoverRecord([{ id: "p", status: p.status() }, { id: "b", status: w.server("b").status() }], null);
  assert.ok(decided.ok);
  assert.equal(decided.record.backupInSync, true);
  assert.equal(decided.record.backupIncarnation, "b-2", "the backup process that holds the copy");
  w.crash("p");
  w.arbiterDisk = decided.record;
  w.restartArbiter();
  w.runChecked(2_000);
  const b = w.server("b");
  assert.equal(b.role, "primary", "the in-sync backup takes over");
  assert.equal(b.machine!.table.locks.get("X")?.holders[0]?.token, granted.grant.token, "with the grant of X");
});

test("arbiter down: a session with a longer TTL waits alone (refused, retryable, after peerTimeoutMs); other clients' keepalives and enters still commit", () => {
  const w = healthy();
  const session = openSession(w);
  w.arbiterDown = true;
  w.run(1_000);
  assert.deepEqual(w.serving(), ["p"], "serving on the backup's promises");
  const long = w.request("p", { type: "openSession", secretHash: SECRET_HASH, ttlMs: S.sessionTtlMs * 3 });
  assert.equal(w.answers.get(long), undefined, "it waits for the arbiter to raise ttlMaxMs");
  // Before the fix every entry after it waited too: with the arbiter down, every session was lost.
  const keepAlive = w.request("p", { type: "keepAlive", secretHash: SECRET_HASH, session });
  assert.equal(w.ok(keepAlive).type, "session", "another client's keepalive commits");
  assert.equal(w.ok(enter(w, session, "M")).type, "granted", "and its enter");
  w.run(S.peerTimeoutMs);
  const refused = w.answers.get(long);
  assert.ok(refused && !refused.ok && refused.code === "not_primary" && refused.primary === "p", `retryable, here: ${JSON.stringify(refused)}`);
  // With the arbiter back, the same request is covered once the renewal raised the record.
  w.restartArbiter();
  const retried = w.request("p", { type: "openSession", secretHash: SECRET_HASH, ttlMs: S.sessionTtlMs * 3 });
  w.run(500);
  assert.equal(w.ok(retried).type, "session");
  assert.equal(w.arbiter.current.ttlMaxMs, S.sessionTtlMs * 3, "raised durably before the answer");
});

test("an arbiter restarted from an older state file (the same epoch, a lower TTL record) is raised again by the next renewals", () => {
  const w = healthy();
  const older = structuredClone(w.arbiterDisk!);
  assert.equal(older.ttlMaxMs, S.sessionTtlMs);
  w.ok(w.request("p", { type: "openSession", secretHash: SECRET_HASH, ttlMs: S.sessionTtlMs * 2 }));
  assert.equal(w.arbiterDisk!.ttlMaxMs, S.sessionTtlMs * 2);
  // Before the fix renewals asked only for raises above the cover the primary remembered.
  w.arbiterDisk = older;
  w.restartArbiter();
  w.run(500);
  assert.equal(w.arbiter.current.epoch, older.epoch, "the same epoch goes on");
  assert.equal(w.arbiterDisk!.ttlMaxMs, S.sessionTtlMs * 2, "the record covers the session's TTL again");
});

test("a fresh table in the same process (a duplicated old claim made it start afresh) never reuses the lost table's session ids: the old client's keepalive finds no session", () => {
  const w = healthy();
  const old = openSession(w);
  w.ok(enter(w, old, "L"));
  w.cut.add("p>b");
  w.run(1_500); // alone: b recorded out of sync
  w.cut.clear();
  w.cut.add("p>a");
  w.run(1_000); // p serves on b's promises; its arbiter lease lapsed
  // A duplicate of p's first claim reaches the arbiter now: it starts epoch 2 for p, fresh.
  const step = w.arbiter.step({ type: "claim", from: "p", epoch: 0, hasState: false, incarnation: "p-1" }, w.nowMs);
  assert.equal(step.reply.type, "lease");
  if (step.persist) w.arbiterDisk = structuredClone(step.persist);
  w.server("p").reply(999_999, step.reply, w.nowMs); // p steps down; its table is gone
  w.cut.clear();
  w.run(3_000);
  const p = w.server("p");
  assert.equal(p.role, "primary");
  assert.ok(p.epoch > 2, `a fresh table of a later epoch (${p.epoch})`);
  assert.ok(p.machine!.table.grantsFrom > 0, "the fresh table holds its grants for the grace");
  const fresh = openSession(w);
  assert.notEqual(fresh, old, "a new session gets a new id");
  // Before the fix the sequence restarted under the same prefix: the old id was known again.
  const keepAlive = w.answers.get(w.request("p", { type: "keepAlive", secretHash: SECRET_HASH, session: old }));
  assert.ok(keepAlive && !keepAlive.ok && keepAlive.code === "session_not_found", `the old session is gone: ${JSON.stringify(keepAlive)}`);
});

/** Both servers with a durable log, p primary and b in sync, one lock held by a session of p's. */
function healthyDurable(settings: Settings = S): { w: World; session: string; token: number } {
  const w = new World(settings);
  w.crash("p");
  w.crash("b");
  w.start("p", { restored: null });
  w.start("b", { restored: null });
  w.run(500);
  assert.equal(w.arbiter.current.backupInSync, true);
  const session = openSession(w);
  const grant = w.ok(enter(w, session));
  assert.ok(grant.type === "granted");
  return { w, session, token: grant.grant.token };
}

/** Crashes every process and restarts it (the servers from `disks`); returns the claims the arbiter gets from then on. */
function restartEveryProcess(w: World, disks: { p: RestoredCopy | null; b: RestoredCopy | null }) {
  const claims: Array<{ from: string; hasState: boolean; incarnation?: string }> = [];
  w.drop = ({ outbound }) => {
    if (outbound.kind === "arbiter" && outbound.request.type === "claim") claims.push(outbound.request);
    return false;
  };
  w.crash("p");
  w.crash("b");
  w.restartArbiter();
  w.start("p", { restored: disks.p });
  w.start("b", { restored: disks.b });
  return claims;
}

test("durable: the primary answers only once its own log has the change on disk (and the backup acked)", () => {
  const { w, session } = healthyDurable();
  w.logs.get("p")!.syncAtOnce = false;
  const ref = w.request("p", { type: "enter", secretHash: SECRET_HASH, name: "M", session, mode: "exclusive", waitMs: 0, lockDelayMs: 0 });
  w.run(50);
  assert.equal(w.server("b").machine!.table.locks.get("M")?.holders.length, 1, "the backup has it");
  assert.equal(w.answers.get(ref), undefined, "no answer before the primary's fsync");
  w.fsync("p");
  assert.ok(w.answers.get(ref)?.ok, "answered once on disk");
});

test("durable: every process restarted: the in-sync backup takes over with its restored copy (same holder, same token)", () => {
  const { w, session, token } = healthyDurable();
  w.restartAllFromDisk();
  w.runChecked(3_000);
  assert.deepEqual(w.serving(), ["b"], "the recorded in-sync backup serves");
  assert.equal(w.server("b").epoch, 2);
  const holder = w.server("b").machine!.table.locks.get("L")?.holders[0];
  assert.deepEqual([holder?.session, holder?.token], [session, token], "the lock kept its holder and token");
  assert.ok(w.ok(w.request("b", { type: "keepAlive", secretHash: SECRET_HASH, session })), "the session lives on");
});

test("durable: every process restarted after the primary ran alone: it serves its own restored table in a new epoch", () => {
  const { w, session, token } = healthyDurable();
  w.crash("b");
  w.run(S.replicationTimeoutMs + 2 * S.leaseRenewMs + 100);
  assert.equal(w.arbiter.current.backupInSync, false, "the arbiter recorded the backup out of sync");
  const second = openSession(w); // committed alone: only p's disk has it
  const disks = { p: w.diskCopy("p") };
  w.crash("p");
  w.restartArbiter();
  w.start("p", { restored: disks.p });
  w.start("b", { restored: null });
  w.runChecked(3_000);
  assert.deepEqual(w.serving(), ["p"]);
  assert.equal(w.server("p").epoch, 2, "a new epoch: the backup syncs afresh");
  const table = w.server("p").machine!.table;
  assert.equal(table.locks.get("L")?.holders[0].token, token);
  assert.ok(table.sessions.has(session) && table.sessions.has(second), "both sessions, the one committed alone too");
});

test("durable: a restored primary copy of an epoch the backup has since taken over is never served", () => {
  const { w } = healthyDurable();
  const stale = w.diskCopy("p");
  w.crash("p");
  w.runChecked(2_000);
  assert.deepEqual(w.serving(), ["b"], "b took over epoch 2");
  const session = openSession(w, "b"); // only in epoch 2's table
  w.start("p", { restored: stale });
  w.runChecked(2_000);
  assert.deepEqual(w.serving(), ["b"]);
  assert.equal(w.server("p").role, "backup");
  assert.ok(w.server("p").machine?.table.sessions.has(session), "p synced epoch 2's table instead of keeping its own");
});

test("durable: a backup that took over and crashed before its new epoch reached its disk serves that epoch with its restored copy", () => {
  const { w, session, token } = healthyDurable();
  w.crash("p");
  // b's disk as of before its takeover: the copy of epoch 1 under p, every committed change in it.
  const beforeTakeover = w.diskCopy("b");
  w.runChecked(2_000);
  assert.deepEqual(w.serving(), ["b"]);
  assert.equal(w.server("b").epoch, 2);
  w.crash("b");
  w.restartArbiter();
  w.start("b", { restored: beforeTakeover });
  w.runChecked(2_000);
  assert.deepEqual(w.serving(), ["b"], "b serves again, without a fresh epoch");
  assert.equal(w.server("b").epoch, 2);
  const holder = w.server("b").machine!.table.locks.get("L")?.holders[0];
  assert.deepEqual([holder?.session, holder?.token], [session, token]);
});

test("durable: a returning backup's streamed copy is written whole, once its last chunk is loaded, before any entry of it; the copy being loaded is never written", () => {
  // Small chunks: the copy of 30 sessions and locks takes many round trips.
  const { w } = healthyDurable({ ...S, syncChunkItemsMax: 2, syncChunkBytesMax: 1_024 });
  for (let i = 0; i < 30; i++) w.ok(enter(w, openSession(w), `L${i}`));
  w.crash("b");
  w.run(S.replicationTimeoutMs + 2 * S.leaseRenewMs + 100); // p recorded b out of sync and commits alone
  w.start("b", { restored: null });
  const records = () => w.persisted.get("b")!;
  // Each time b asks for the next chunk it holds part of the copy: nothing of it may be written.
  let chunkRequests = 0;
  let asked: string | undefined;
  w.drop = ({ from, outbound }) => {
    if (from === "b" && outbound.kind === "peer" && outbound.message.type === "syncRequest") asked = outbound.message.incarnation;
    if (from === "b" && outbound.kind === "peer" && outbound.message.type === "syncNext") {
      chunkRequests += 1;
      assert.equal(records().length, 0, "nothing of a copy being loaded is written");
    }
    return false;
  };
  w.run(200);
  assert.ok(chunkRequests > 10, `the copy came in many chunks (${chunkRequests})`);
  const b = w.server("b");
  assert.ok(b.machine, "b has the copy");
  const [base, ...rest] = records();
  assert.equal(base?.type, "base", "the first record is the copy itself");
  assert.ok(base.type === "base" && base.machine === b.machine, "the whole copy, as installed");
  assert.ok(asked !== undefined && base.type === "base" && base.incarnation === asked, "stored with the id of the process that asked for it");
  assert.ok(rest.every((r) => r.type !== "base" && r.copyGen === base.copyGen), "what follows are entries and views of that copy");
  // The copy written has every session and lock of the primary's table (the cut plus the entries since).
  w.run(500);
  assert.equal(w.arbiter.current.backupInSync, true, "b is back in sync");
  assert.equal(w.arbiter.current.backupIncarnation, asked, "the arbiter records the id the copy is stored with");
  const disk = w.diskCopy("b")!;
  const table = w.server("p").machine!.table;
  assert.deepEqual([...disk.machine.table.locks.keys()].sort(), [...table.locks.keys()].sort());
  assert.equal(disk.machine.table.sessions.size, table.sessions.size);
});

test("durable: every process restarted, the backup with no copy on disk: its claim under a new id marks the recorded copy lost, and the primary serves its own restored table (no grace, same tokens, session ids continue)", () => {
  const { w, session, token } = healthyDurable();
  const before = new Set([session, openSession(w), openSession(w)]);
  const recorded = w.arbiter.current.backupIncarnation;
  assert.ok(recorded !== null, "the record names the in-sync backup process");
  const claims = restartEveryProcess(w, { p: w.diskCopy("p"), b: null });
  w.runChecked(3_000);
  const bClaim = claims.find((c) => c.from === "b" && !c.hasState);
  assert.ok(bClaim && bClaim.incarnation !== recorded, `b's claim names its new process, not ${recorded}`);
  assert.deepEqual(w.serving(), ["p"]);
  const p = w.server("p");
  assert.equal(p.epoch, 2, "a new epoch after the copy-lost mark");
  const table = p.machine!.table;
  assert.equal(table.grantsFrom, 0, "a restored table holds no grants: no grace");
  assert.equal(table.locks.get("L")?.holders[0].token, token, "the lock kept its token");
  const next = w.ok(enter(w, openSession(w), "M"));
  assert.ok(next.type === "granted" && next.grant.token === token + 1, `granted at once, the next token (${JSON.stringify(next)})`);
  const fresh = openSession(w);
  assert.ok(!before.has(fresh), `a new session id (${fresh}) never repeats one of before`);
});

test("durable: every process restarted, the backup keeps its restored copy and names the id stored with it in its claim (the process the arbiter recorded in sync), and takes over", () => {
  const { w, session } = healthyDurable();
  const recorded = w.arbiter.current.backupIncarnation;
  const disks = { p: w.diskCopy("p"), b: w.diskCopy("b") };
  assert.equal(disks.b?.incarnation, recorded, "b's copy is stored with the id the arbiter recorded");
  const claims = restartEveryProcess(w, disks);
  w.runChecked(3_000);
  assert.deepEqual(w.serving(), ["b"]);
  const bClaims = claims.filter((c) => c.from === "b");
  // Its first claim has no state yet (the copy is taken at its first role decision): the stored
  // id tells the arbiter it is the recorded process, so the copy is not marked lost.
  assert.ok(bClaims.some((c) => c.hasState), "b takes over with its copy");
  assert.ok(bClaims.every((c) => c.incarnation === recorded), `b's claims name ${recorded}: ${JSON.stringify(bClaims)}`);
  assert.equal(w.arbiter.current.backupCopyLost, false);
  assert.equal(w.server("b").machine!.table.grantsFrom, 0, "a takeover, no grace");
  assert.ok(w.ok(w.request("b", { type: "keepAlive", secretHash: SECRET_HASH, session })));
});

test("ready: a step with no outputs hands out one shared, frozen empty Ready (no allocation, and a driver cannot write into the core's outputs); the next step's outputs still come out", () => {
  const replica = new LockReplica({
    nodeId: "s",
    peerId: null,
    arbiterId: null,
    settings: DEFAULT_SETTINGS,
    newTable: ({ epoch, tokenFloor }) => new LockTable({ limits: DEFAULT_SETTINGS, sessionIdPrefix: `s-${epoch}-`, tokenFloor }),
    tokenFloor: 0,
  }, 0);
  assert.ok(replica.ready().events.length > 0, "the standalone start's role change is an output");
  const empty = replica.ready();
  assert.deepEqual([empty.send, empty.answers, empty.effects, empty.events, empty.persist].map((list) => list.length), [0, 0, 0, 0, 0]);
  assert.equal(replica.ready(), empty, "the same object for every empty step");
  assert.ok(Object.isFrozen(empty) && [empty.send, empty.answers, empty.effects, empty.events, empty.persist].every(Object.isFrozen));
  assert.throws(() => (empty.answers as unknown[]).push({ clientRef: 9, answer: { ok: true, result: { ok: true, type: "ticked" } } }), TypeError);
  replica.clientRequest(1, { type: "openSession", secretHash: SECRET_HASH, ttlMs: 5_000 }, undefined, 1);
  const answered = replica.ready();
  assert.notEqual(answered, empty);
  assert.deepEqual(answered.answers.map((a) => [a.clientRef, a.answer.ok]), [[1, true]]);
  assert.equal(replica.ready(), empty, "taken once");
});

test("ready: a step hands out the lists it filled and the shared frozen empties for the others; the core never writes a list it handed out; a commit of some of the pending changes answers those only, in order, and the rest later; a lost append after a partial ack resends only what is unacked (the pending list and the feed's log shortened in place: fails when either drops too much)", () => {
  const w = healthy({ ...S, replicationPipelineMax: 4 });
  const session = openSession(w);
  const [p, b] = [w.server("p"), w.server("b")];
  const empty = p.ready();
  const enterNamed = (clientRef: number, name: string) =>
    p.clientRequest(clientRef, { type: "enter", secretHash: SECRET_HASH, name, session, mode: "exclusive", waitMs: 0, lockDelayMs: 0 }, undefined, w.nowMs);
  // Three changes, three appends in flight (a pipeline of 4): each step fills `send` only.
  const steps = ["A", "B", "C"].map((name, i) => {
    enterNamed(901 + i, name);
    return p.ready();
  });
  for (const ready of steps) {
    assert.equal(ready.send.length, 1);
    assert.ok([ready.answers, ready.effects, ready.events, ready.persist].every((list) => list.length === 0 && Object.isFrozen(list)), "the unfilled lists are the frozen empties");
    assert.equal(ready.answers, empty.answers, "shared, not allocated");
    assert.throws(() => (ready.effects as unknown[]).push({ type: "waitEnded", name: "x", session: "y", reason: "deadline" }), TypeError);
  }
  assert.ok(steps[0].send !== steps[1].send && steps[1].send !== steps[2].send, "a new send list per step");
  const sent = steps.map((ready) => ready.send[0]);
  // The backup acks the second append first (it holds A and B): A and B commit, C stays pending.
  const [a, bAppend, c] = sent.map((o) => (assert.ok(o.kind === "peer"), o));
  b.peerMessage(a.message, w.nowMs);
  p.reply(bAppend.ref, b.peerMessage(bAppend.message, w.nowMs), w.nowMs);
  const partly = p.ready();
  assert.deepEqual(partly.answers.map((x) => x.clientRef), [901, 902], "A and B answered, in order; C waits for its ack");
  assert.deepEqual(partly.effects.map((e) => e.type === "granted" && e.grant.name), ["A", "B"]);
  assert.deepEqual(steps.map((ready) => ready.send.length), [1, 1, 1], "lists handed out earlier are not written");
  // The feed keeps only what is unacked: C (fails when acked entries are not dropped, or one too few).
  const feedLog = () => (w.server("p") as unknown as { feed: { log: Array<{ command: { type: string; name?: string } }> } }).feed.log;
  assert.deepEqual(feedLog().map((e) => e.command.name), ["C"], "the acked head dropped, the rest kept");
  // A's late ack changes nothing.
  p.reply(a.ref, b.peerMessage(a.message, w.nowMs), w.nowMs);
  assert.equal(p.ready().answers.length, 0, "a late ack of an older append answers nothing");
  // C's append is lost: the log, shortened in place by B's ack, still has C to resend (next tick).
  p.failed(c.ref, w.nowMs);
  p.tick(w.nowMs);
  const resent = p.ready().send.filter((o) => o.kind === "peer" && o.message.type === "append" && o.message.entries.length > 0);
  assert.equal(resent.length, 1, "resent after the loss");
  const again = resent[0];
  assert.ok(again.kind === "peer" && again.message.type === "append");
  assert.deepEqual(again.message.entries.map((e) => e.command.type === "enter" && e.command.name), ["C"], "only the unacked entry");
  p.reply(again.ref, b.peerMessage(again.message, w.nowMs), w.nowMs);
  const rest = p.ready();
  assert.deepEqual(rest.answers.map((x) => x.clientRef), [903]);
  assert.equal(feedLog().length, 0, "everything acked: the feed keeps nothing");
  assert.deepEqual(partly.answers.map((x) => x.clientRef), [901, 902], "the earlier answers list is not written");
  assert.equal(p.status().backup?.lagEntries, 0);
  assert.equal(p.status().commitIndex, p.status().lastIndex);
});

test("a request never reported back is counted failed after its limit on a later step, while another stays in flight: a held append is resent after replicationTimeoutMs / 3 and its change commits; a held renewal outlives it", () => {
  const w = healthy();
  const inFlight = () => (w.server("p") as unknown as { inFlight: Map<number, { kind: string }> }).inFlight;
  // The next renewal and the next append wait in flight, never answered nor failed.
  let heldRenew = false;
  let heldAppend = false;
  w.hold = ({ outbound }) => {
    if (outbound.kind === "arbiter" && outbound.request.type === "renew" && !heldRenew) return heldRenew = true;
    if (outbound.kind === "peer" && outbound.message.type === "append" && outbound.message.entries.length > 0 && !heldAppend) return heldAppend = true;
    return false;
  };
  w.run(w.settings.leaseRenewMs);
  assert.ok(heldRenew, "a renewal is held");
  const sentAtMs = w.nowMs;
  const ref = w.request("p", { type: "openSession", secretHash: SECRET_HASH, ttlMs: 5_000 });
  assert.ok(heldAppend && !w.answers.has(ref), "the append is held, nothing answered");
  const renewRef = w.held[0].outbound.ref;
  assert.equal(inFlight().get(renewRef)?.kind, "renew");
  const limitMs = w.settings.replicationTimeoutMs / 3;
  for (let i = 0; i < 100 && !w.answers.has(ref); i++) w.run(w.settings.tickMs);
  const answeredAfterMs = w.nowMs - sentAtMs;
  assert.ok(answeredAfterMs > limitMs && answeredAfterMs <= limitMs + 2 * w.settings.tickMs, `answered ${answeredAfterMs} ms after the request (limit ${limitMs})`);
  assert.equal(w.ok(ref).type, "session");
  assert.equal(w.held.length, 2, "the held append and renewal were never reported back");
  assert.ok(inFlight().has(renewRef), "the held renewal is still in flight (its limit is 2 × peerTimeoutMs)");
  w.run(2 * w.settings.peerTimeoutMs);
  assert.ok(!inFlight().has(renewRef), "the held renewal counted failed in the end");
  assert.deepEqual(w.serving(), ["p"]);
});
