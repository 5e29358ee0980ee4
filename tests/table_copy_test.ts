/**
 * The streamed copy of a returning backup (lib/core/lock/table_copy.ts, docs/failover.md
 * "Resync"): a consistent cut at one index, sent in bounded chunks while the primary goes on.
 *
 * The first tests drive the copy's two ends directly under a seeded random workload of every
 * command type (expiries, deadlines, lock-delays, restartLeases, holdGrants, idempotency keys) and prove the
 * cut: the backup's machine equals the primary's snapshot at the cut's index, and after the
 * entries that followed, the primary's present state. A missed mutation site in LockTable would
 * show there; the test after them proves the check bites (a source that ignores one kind of
 * change fails it). The rest run the replica cores on the controlled network of _lock_world.ts.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Prng } from "../lib/core/prng.ts";
import { LockMachine, type LogEntry } from "../lib/core/lock/lock_machine.ts";
import { type Command, LockTable, type LockTableLimits, type Mode } from "../lib/core/lock/lock_table.ts";
import { CopySink, CopySource } from "../lib/core/lock/table_copy.ts";
import { DEFAULT_SETTINGS, type Settings, validateSettings } from "../lib/settings.ts";
import { healthy, openSession, type Packet, type World } from "./_lock_world.ts";
import { SECRET_HASH } from "./_session.ts";

const LIMITS: LockTableLimits = {
  ...DEFAULT_SETTINGS,
  sessionsMax: 30,
  locksMax: 40,
  waitersPerLockMax: 4,
  leftCallsPerSessionMax: 3,
  sessionTtlMinMs: 1_500,
};
// Few remembered answers, so evictions happen within a copy.
const ANSWERED = { answeredMax: 15, answeredBytesMax: DEFAULT_SETTINGS.answeredBytesMax };
const NAMES = Array.from({ length: 30 }, (_, i) => `L${i}`);

/** A machine with a random workload: each `next()` is one log entry of a random command. */
class Workload {
  readonly machine = new LockMachine(new LockTable({ limits: LIMITS, sessionIdPrefix: "s", tokenFloor: 100 }), ANSWERED);
  private atMs = 0;
  private requestSeq = 0;

  constructor(private readonly rng: Prng) {}

  /**
   * Runs `count` random steps as a primary does; returns the entries they logged (the log that
   * follows a cut). Lapsed leases are expired by an entry first; a keepalive renews the table
   * without one (session_leases.ts), which a copy in progress must still see.
   */
  run(count: number): LogEntry[] {
    const entries: LogEntry[] = [];
    const append = (command: Command, requestId?: string) => {
      const entry: LogEntry = { index: this.machine.appliedIndex + 1, epoch: 1, atMs: this.atMs, command };
      if (requestId !== undefined) entry.requestId = requestId;
      this.machine.apply(entry);
      entries.push(entry);
    };
    for (let i = 0; i < count; i++) {
      this.atMs += this.rng.chance(0.1) ? this.rng.between(500, 2_500) : this.rng.below(120);
      const lapsed = this.machine.table.lapsedSessions(this.atMs);
      if (lapsed.length > 0) append({ type: "expire", sessions: lapsed });
      const command = this.command();
      if (command.type === "keepAlive") {
        this.machine.table.renew(command, this.atMs);
        continue;
      }
      append(command, this.rng.chance(0.4) ? `r${this.rng.chance(0.2) ? this.rng.below(this.requestSeq + 1) : ++this.requestSeq}` : undefined);
    }
    return entries;
  }

  private command(): Command {
    const rng = this.rng;
    const table = this.machine.table;
    const sessions = [...table.sessions.keys()];
    const session = sessions.length > 0 && rng.chance(0.95) ? rng.pick(sessions) : "s-gone";
    const roll = rng.below(100);
    if (roll < 12 || sessions.length < 3) return { type: "openSession", secretHash: SECRET_HASH, ttlMs: rng.between(1_500, 4_000) };
    if (roll < 30) return { type: "keepAlive", secretHash: SECRET_HASH, session };
    if (roll < 34) return { type: "closeSession", secretHash: SECRET_HASH, session };
    if (roll < 62) {
      const mode: Mode = rng.chance(0.3) ? "shared" : "exclusive";
      const command: Command = {
        type: "enter",
        secretHash: SECRET_HASH,
        name: rng.pick(NAMES),
        session,
        mode,
        waitMs: rng.chance(0.3) ? 0 : rng.between(100, 3_000),
        lockDelayMs: rng.chance(0.5) ? 0 : rng.between(100, 2_000),
      };
      if (rng.chance(0.6)) command.callId = `c${rng.below(40)}`;
      return command;
    }
    if (roll < 85) {
      const locks = [...table.locks.values()];
      if (locks.length === 0) return { type: "tick" };
      const lock = rng.pick(locks);
      const entries = [...lock.holders, ...lock.queue];
      if (entries.length === 0) return { type: "leave", secretHash: SECRET_HASH, name: lock.name, session };
      const entry = rng.pick(entries);
      const token = "token" in entry && rng.chance(0.9) ? entry.token : rng.chance(0.5) ? undefined : 7;
      return { type: "leave", secretHash: SECRET_HASH, name: lock.name, session: entry.session, token };
    }
    if (roll < 95) return { type: "tick" };
    if (roll < 97) return { type: "restartLeases" };
    // A fresh table's grace (the driver's, after a restart): it delays every lock there is, so a
    // copy in progress must save each one's pre-image first.
    return { type: "holdGrants", untilMs: this.atMs + rng.between(0, 2_000) };
  }
}

interface CopyRun {
  /** The primary's snapshot at the cut, the backup's machine, and the log after the cut. */
  atCut: ReturnType<LockMachine["snapshot"]>;
  copied: LockMachine;
  after: LogEntry[];
  primary: LockMachine;
  chunks: number;
}

/**
 * Streams a copy of a random table while the workload goes on between chunks; `lose` drops
 * chunks on the way (the backup asks for the same position again). `itemsMax`/`bytesMax`: the
 * chunk bounds.
 */
function copyUnderLoad(seed: number, options: { itemsMax: number; bytesMax: number; lose?: number; corrupt?: (source: CopySource) => void }): CopyRun {
  const rng = new Prng(seed);
  const work = new Workload(rng);
  work.run(rng.between(50, 400));
  const atCut = work.machine.snapshot();
  const source = new CopySource(work.machine, { syncChunkItemsMax: options.itemsMax, syncChunkBytesMax: options.bytesMax });
  options.corrupt?.(source);
  const sink = new CopySink(1, structuredClone(source.start), LIMITS, ANSWERED);
  const after: LogEntry[] = [];
  let chunks = 0;
  // Bounded: each round without a loss loads at least one item.
  for (let round = 0; round < 10_000 && !sink.done; round++) {
    after.push(...work.run(rng.below(6)));
    const chunk = source.chunk(sink.position);
    assert.ok(chunk, `chunk at ${sink.position}`);
    if (rng.chance(options.lose ?? 0)) continue;
    chunks += 1;
    assert.ok(sink.accept(structuredClone(chunk)));
    assert.equal(sink.accept(structuredClone(chunk)), false, "a repeated chunk is not loaded twice");
  }
  assert.ok(sink.done, "the copy completed");
  after.push(...work.run(5));
  source.close();
  return { atCut, copied: sink.finish(), after, primary: work.machine, chunks };
}

test("copy: under a random workload of every command the backup ends with the primary's state at the cut, then with its present state after the log (300 seeds)", { timeout: 60_000 }, () => {
  let chunksTotal = 0;
  for (let seed = 1; seed <= 300; seed++) {
    const run = copyUnderLoad(seed, { itemsMax: 1 + (seed % 7), bytesMax: 4_096, lose: seed % 3 === 0 ? 0.2 : 0 });
    assert.deepEqual(run.copied.snapshot(), run.atCut, `seed ${seed}: the copy is the cut`);
    for (const entry of run.after) run.copied.apply(entry);
    assert.deepEqual(withoutLeaseEnds(run.copied.snapshot()), withoutLeaseEnds(run.primary.snapshot()), `seed ${seed}: the copy plus the log is the primary`);
    chunksTotal += run.chunks;
  }
  assert.ok(chunksTotal > 2_000, `the copies had many chunks (${chunksTotal})`);
});

test("copy: the consistency check bites: a source that ignores session changes, or lock changes, gives a copy that is not the cut", () => {
  for (const kind of ["beforeSessionChange", "beforeLockChange"] as const) {
    let caught = 0;
    for (let seed = 1; seed <= 40; seed++) {
      const run = copyUnderLoad(seed, { itemsMax: 3, bytesMax: 4_096, corrupt: (source) => (source[kind] = () => {}) });
      try {
        assert.deepEqual(run.copied.snapshot(), run.atCut);
      } catch {
        caught += 1;
      }
    }
    assert.ok(caught >= 10, `${kind} ignored: ${caught} of 40 seeds show a wrong copy`);
  }
});

test("copy: chunks keep their bounds (items, and bytes unless one item alone is larger), and the pre-images are dropped as the backup acknowledges", () => {
  const rng = new Prng(7);
  const work = new Workload(rng);
  work.run(600);
  const source = new CopySource(work.machine, { syncChunkItemsMax: 4, syncChunkBytesMax: 300 });
  let position = 0;
  let chunks = 0;
  while (position < source.total && chunks < 10_000) {
    const chunk = source.chunk(position)!;
    const bytes = new TextEncoder().encode(chunk.payload).byteLength;
    assert.ok(chunk.count >= 1 && chunk.count <= 4, `count ${chunk.count}`);
    assert.ok(bytes <= 300 || chunk.count === 1, `${bytes} bytes in ${chunk.count} items`);
    work.run(3); // changes before the cursor need no pre-image; after it they get one
    position += chunk.count;
    chunks += 1;
  }
  assert.equal(source.chunk(position)!.count, 0, "at the end: an empty chunk");
  assert.equal(source.chunk(0), null, "a position already acknowledged is refused");
  assert.equal(source.chunk(source.total + 1), null, "a position past the end is refused");
  assert.equal(source.savedCount, 0, "every pre-image was dropped once acknowledged");
  source.close();
  assert.doesNotThrow(() => new CopySource(work.machine, { syncChunkItemsMax: 4, syncChunkBytesMax: 300 }).close(), "a closed copy lets the next one watch");
});

test("copy: a second copy of one table while the first runs is a broken invariant (one stream at a time)", () => {
  const work = new Workload(new Prng(3));
  work.run(50);
  const first = new CopySource(work.machine, { syncChunkItemsMax: 4, syncChunkBytesMax: 300 });
  assert.throws(() => new CopySource(work.machine, { syncChunkItemsMax: 4, syncChunkBytesMax: 300 }), /one copy/);
  first.close();
});

test("copy: a malformed chunk stops the backup (fail-stop) instead of loading it", () => {
  const work = new Workload(new Prng(5));
  work.run(100);
  const source = new CopySource(work.machine, { syncChunkItemsMax: 4, syncChunkBytesMax: 4_096 });
  const sink = new CopySink(1, source.start, LIMITS, ANSWERED);
  const chunk = source.chunk(0)!;
  assert.throws(() => sink.accept({ ...chunk, payload: "[{" }), /does not parse/);
  assert.throws(() => sink.accept({ ...chunk, payload: JSON.stringify([{ id: 5 }]), count: 1 }), /not a session/);
  source.close();
});

test("settings: copy chunks must fit a peer message and the progress timeout must outlast a lost chunk", () => {
  const keys = (s: Settings) => validateSettings(s).map((p) => p.key);
  assert.deepEqual(keys(DEFAULT_SETTINGS), []);
  assert.deepEqual(keys({ ...DEFAULT_SETTINGS, syncChunkBytesMax: DEFAULT_SETTINGS.peerBodyBytesMax }), ["syncChunkBytesMax"]);
  assert.deepEqual(keys({ ...DEFAULT_SETTINGS, syncProgressTimeoutMs: DEFAULT_SETTINGS.peerTimeoutMs }), ["syncProgressTimeoutMs"]);
});

// ---- the replica cores: the copy in the protocol ---------------------------------------------

/** Small chunks, so a table of a few dozen entries streams in many. */
const SMALL_CHUNKS: Settings = { ...DEFAULT_SETTINGS, syncChunkItemsMax: 3, syncChunkBytesMax: 1_024 };

const isPeer = (type: string) => (packet: Packet) => packet.outbound.kind === "peer" && packet.outbound.message.type === type;

/** Fills the table: `count` sessions, each holding one lock. */
function fill(w: World, count: number): string[] {
  const sessions: string[] = [];
  for (let i = 0; i < count; i++) {
    const session = openSession(w);
    w.ok(w.request("p", { type: "enter", secretHash: SECRET_HASH, name: `held${i}`, session, mode: "exclusive", waitMs: 0, lockDelayMs: 0 }));
    sessions.push(session);
  }
  return sessions;
}

/** Restarts the backup after the primary recorded it out of sync; its chunk requests are held. */
function restartBackupHeld(w: World): void {
  w.crash("b");
  w.run(w.settings.replicationTimeoutMs + 200);
  assert.equal(w.arbiter.current.backupInSync, false);
  w.hold = isPeer("syncNext");
  w.start("b");
  w.run(200); // whois, syncRequest, the first chunk request (held)
  assert.equal(w.server("p").status().backup?.mode, "syncing");
}

/** Lets `n` held chunk requests through, one per tick, with a client command committed in between. */
function streamSteps(w: World, n: number, session: string): number {
  let committed = 0;
  for (let i = 0; i < n && w.held.length > 0; i++) {
    w.release();
    const ref = w.request("p", { type: "keepAlive", secretHash: SECRET_HASH, session });
    if (w.answers.get(ref)?.ok) committed += 1;
    w.run(w.settings.tickMs);
  }
  return committed;
}

/** A healthy cluster whose restarted backup is `chunks` chunks into its copy (its next request held). */
function midCopy(chunks: number): World {
  const w = healthy(SMALL_CHUNKS);
  const [session] = fill(w, 20);
  restartBackupHeld(w);
  streamSteps(w, chunks, session);
  return w;
}

function assertSameTables(w: World): void {
  const p = w.server("p").machine!;
  const b = w.server("b").machine!;
  assert.equal(b.appliedIndex, p.appliedIndex);
  assert.deepEqual(withoutLeaseEnds(b.snapshot()), withoutLeaseEnds(p.snapshot()), "the backup's machine is the primary's");
}

/**
 * A snapshot without its sessions' lease ends: renewals after a copy's cut reach only the
 * primary's table (no log entry, session_leases.ts), so a backup's `expiresAtMs` is older.
 */
function withoutLeaseEnds(snapshot: ReturnType<LockMachine["snapshot"]>): ReturnType<LockMachine["snapshot"]> {
  return { ...snapshot, table: { ...snapshot.table, sessions: snapshot.table.sessions.map((s) => ({ ...s, expiresAtMs: 0 })) } };
}

test("replica: a returning backup streams a table of many chunks while the primary commits every command at once, then counts as in sync", () => {
  const w = healthy(SMALL_CHUNKS);
  const sessions = fill(w, 40);
  restartBackupHeld(w);
  let steps = 0;
  let committed = 0;
  while (w.held.length > 0 && steps < 500) {
    committed += streamSteps(w, 1, sessions[steps % sessions.length]);
    steps += 1;
    if (w.held.length > 0) assert.equal(w.server("b").machine, null, "no table before the copy is complete");
  }
  assert.ok(steps >= 20, `the copy took ${steps} chunks`);
  assert.equal(committed, steps, "every command during the copy committed at once (no wait for a copying backup)");
  w.hold = () => false;
  w.run(300);
  assert.equal(w.server("p").status().backup?.mode, "inSync");
  assert.equal(w.arbiter.current.backupInSync, true);
  assertSameTables(w);
});

test("replica: a lost chunk is asked for again; the copy goes on from there (no new stream)", () => {
  const w = healthy(SMALL_CHUNKS);
  fill(w, 20);
  let lost = 0;
  let starts = 0;
  w.drop = (packet) => {
    if (isPeer("syncRequest")(packet)) starts += 1;
    const message = packet.outbound.kind === "peer" ? packet.outbound.message : null;
    if (message?.type === "syncNext" && lost < 2 && message.position > 6) {
      lost += 1;
      return true;
    }
    return false;
  };
  w.crash("b");
  w.run(w.settings.replicationTimeoutMs + 200);
  w.start("b");
  w.run(1_000);
  assert.equal(lost, 2);
  assert.equal(starts, 1, "one stream");
  assert.equal(w.server("p").status().backup?.mode, "inSync");
  assertSameTables(w);
});

test("replica: a chunk request that is never answered is asked again after its timeout and the copy goes on", () => {
  const w = midCopy(3);
  assert.equal(w.held.splice(0).length, 1, "the backup's next chunk request vanishes (no answer, no failure)");
  w.hold = () => false;
  w.run(2 * w.settings.peerTimeoutMs + 500);
  assert.equal(w.server("p").status().backup?.mode, "inSync");
  assertSameTables(w);
});

test("replica: a copy whose backup stops asking is dropped after syncProgressTimeoutMs of no progress, not before", () => {
  const w = midCopy(3);
  w.crash("b");
  w.held.splice(0);
  w.run(w.settings.syncProgressTimeoutMs - 300);
  assert.equal(w.server("p").status().backup?.mode, "syncing", "still copying: a copy is timed by its progress");
  w.run(600);
  assert.equal(w.server("p").status().backup?.mode, "outOfSync");
});

test("replica: a backup that restarts mid-copy starts a new stream, which replaces the old one at the primary", () => {
  const w = midCopy(4);
  w.held.splice(0);
  w.crash("b");
  w.hold = () => false;
  w.start("b");
  w.run(1_000);
  assert.equal(w.server("p").status().backup?.mode, "inSync");
  assertSameTables(w);
});

test("replica: an epoch change mid-copy: the backup keeps its old copy through the stream and a takeover starts from it, never from the partial one", () => {
  // The backup must hear the primary's new copy generation before its last promise runs out (else
  // it takes over before the stream: the primary, cut from the arbiter too, has lost both its
  // backers). The hung appends count as lost only after replicationTimeoutMs, so this scenario
  // needs the 500 ms promise it was written with (400 ms since issue 14).
  const w = healthy({ ...SMALL_CHUNKS, primaryLeaseMs: 500, backupLeaseMs: 500 });
  const sessions = fill(w, 20);
  const committedIndex = w.server("p").machine!.appliedIndex;
  // The primary loses the arbiter, and its appends to the backup hang: it drops the backup (a
  // new copy generation) but cannot tell the arbiter, which still counts the backup in sync.
  w.cut.add("p>a");
  w.hold = isPeer("append");
  w.request("p", { type: "keepAlive", secretHash: SECRET_HASH, session: sessions[0] }); // waits for the backup's ack
  w.run(w.settings.replicationTimeoutMs + 60);
  assert.equal(w.server("p").status().backup?.mode, "outOfSync");
  w.held.splice(0);
  w.hold = isPeer("syncNext");
  w.run(250); // heartbeats of the new generation (once the hung appends count as lost): the backup asks for a copy and keeps its old one
  assert.ok(w.held.length > 0, "the backup is streaming a new copy");
  streamSteps(w, 2, sessions[0]);
  assert.equal(w.server("b").machine?.appliedIndex, committedIndex, "the old copy stays while the new one streams");
  w.crash("p");
  w.hold = () => false;
  w.held.splice(0);
  w.run(w.settings.primaryLeaseMs + w.settings.backupLeaseMs + w.settings.primarySilenceMs + 500);
  const b = w.server("b");
  assert.equal(b.role, "primary");
  assert.ok(b.epoch >= 2);
  for (const session of sessions) assert.ok(b.machine!.table.sessions.has(session), `takeover kept ${session}`);
  assert.ok(b.machine!.appliedIndex > committedIndex, "the new primary's restartLeases follows the old copy's index");
});
