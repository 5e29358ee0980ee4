/**
 * Node kind "failover" (issue 5): two lock servers running the real driver and LockReplica core
 * (fp, the configured primary, and fb, the configured backup), the arbiter running the real
 * driver of cluster/arbiter/server.ts and ArbiterCore with a simulated durable disk (fa), and
 * 2..6 clients running the real lib/client/lock_client.ts with both servers (keepalive every
 * TTL/3, lease from the send time of the last acknowledged keepalive, move to the other server
 * on a timeout or "not primary" and retry with the same idempotency key), driven by the lock
 * kind's workload.
 *
 * Settings are the shipped defaults, with every replication timeout scaled up for slow networks
 * (`scale`: primaryLeaseMs ≥ 8 × delayMax, as the client TTL), and the batch and pipeline sizes
 * drawn small or large so pipelining and resends are exercised.
 *
 * Faults of its own: crashes of either server (restart with empty memory; never the one holding
 * the only copy of the state, see `fo-lone-crash`) and of the arbiter (restart from its disk);
 * both servers crashing together, with or without the arbiter (issue 11: a fresh table after
 * a grace, tokens above the record's ceiling);
 * cuts between any two of fp/fb/fa, symmetric or one-way; pauses of any of them up to three
 * leases; a slow link among them (messages sent in a window arrive up to 3 × peerTimeoutMs
 * late, after the sender gave up on them); client crashes. Lost, duplicated and reordered
 * messages come from the network profile, clock drift and offsets from the clock profile.
 */
import { freshGraceMs } from "../../../lib/core/lock/arbiter_record.ts";
import type { Prng } from "../../../lib/core/prng.ts";
import { DEFAULT_SETTINGS, type Settings } from "../../../lib/settings.ts";
import { crashFault, type FaultType } from "../faults.ts";
import type { NetworkProfile } from "../network.ts";
import type { KindParams, KindRun, NodeKind } from "../node_kind.ts";
import type { Sim } from "../simulator.ts";
import { type Attempt, LockClientActor } from "../lock/client.ts";
import { clientMutexChecker, grantSurvivesChecker } from "../lock/checkers.ts";
import { lateAttempts, LOCK_KIND, livenessBounds, lockWorkload } from "../lock/kind.ts";
import { watchLockTables } from "../lock/table_checkers.ts";
import { ArbiterActor } from "./arbiter.ts";
import { FAILOVER_CHECKERS, FailoverChecks } from "./checkers.ts";
import { FailoverServerActor } from "./server.ts";
import { servesThroughOneFault } from "./availability.ts";
import { fillTable } from "./filler.ts";
import { CopyCutChecker } from "./copy_checker.ts";
import { keepaliveReachesPrimary } from "./keepalive_checker.ts";
import type { FailoverServerObserver } from "./server.ts";
import { scheduleDurableFaults, SimLogDisk } from "./disk.ts";

export const PRIMARY_ID = "fp";
export const BACKUP_ID = "fb";
export const ARBITER_ID = "fa";
const CORE_IDS = [PRIMARY_ID, BACKUP_ID, ARBITER_ID];
/** The client's failoverTimeoutMs (ConnectOptions default). */
const CLIENT_FAILOVER_MS = DEFAULT_SETTINGS.failoverTimeoutMs;

/** Time settings of the replication core, scaled together for slow networks. */
const SCALED: ReadonlyArray<keyof Settings> = [
  "primaryLeaseMs", "backupLeaseMs", "leaseRenewMs", "leaseSafetyMs", "primarySilenceMs", "claimRetryMs", "heartbeatMs",
  "replicationTimeoutMs", "peerTimeoutMs", "bootstrapWaitMs", "syncProgressTimeoutMs",
];

export function failoverSettings(params: KindParams): Settings {
  const settings: Settings = {
    ...DEFAULT_SETTINGS,
    longPollMaxMs: Number(params.longPollMaxMs),
    replicationBatchMax: Number(params.batchMax),
    replicationPipelineMax: Number(params.pipelineMax),
    // The TTL a primary has the arbiter's record cover up front: the clients' (so a fresh
    // table's grace is short, as the liveness bounds below assume).
    sessionTtlMs: Number(params.ttlMs),
    syncChunkItemsMax: Number(params.chunkItemsMax ?? DEFAULT_SETTINGS.syncChunkItemsMax),
    syncChunkBytesMax: Number(params.chunkBytesMax ?? DEFAULT_SETTINGS.syncChunkBytesMax),
    durableCompactEntries: Number(params.compactEntries),
  };
  // A table near locksMax (filler.ts): the workload's few names fit beside the filler's.
  if (Number(params.fillLocks ?? 0) > 0) settings.locksMax = Number(params.fillLocks) + 10;
  const scale = Number(params.scale);
  for (const key of SCALED) settings[key] = DEFAULT_SETTINGS[key] * scale;
  return settings;
}

type Servers = () => FailoverServerActor[];
type Arbiter = () => ArbiterActor;

/**
 * Whether crashing `victim` loses the only copy of the state: it has a copy, and the other
 * server could not carry on with one (it is down, has none, or the arbiter would not promote it).
 */
function holdsLoneCopy(victim: FailoverServerActor, other: FailoverServerActor, arbiter: ArbiterActor): boolean {
  if (!victim.replica?.machine) return false;
  if (other.state === "crashed" || !other.replica?.machine) return true;
  const recorded = arbiter.core.current;
  if (recorded.primary === other.id) return false;
  return !(recorded.backupInSync && recorded.backup === other.id);
}

function serverCrash(name: string, servers: Servers, arbiter: Arbiter, loneCopyToo: boolean): FaultType {
  return {
    name,
    doc: loneCopyToo
      ? "crash a lock server even when it holds the only copy of the state (the other is out of sync or down)"
      : "crash fp or fb (memory lost), restart 0..3000 ms later; never the holder of the only copy",
    ratePerSecond: [0.05, 0.3],
    optInReason: loneCopyToo
      ? "losing the only copy loses acknowledged grants by design (arbiter.ts: 'start afresh, loudly'); " +
        "since issue 11 the fresh table's grace keeps it safe, but no server serves a takeover's gap after it (the single-fault liveness)"
      : undefined,
    voidsLivenessOf: loneCopyToo ? ["failover"] : undefined,
    inject(sim, prng) {
      const all = servers();
      if (all.some((s) => s.state === "crashed")) return;
      const victim = prng.pick(all);
      const other = all.find((s) => s !== victim)!;
      if (!loneCopyToo && holdsLoneCopy(victim, other, arbiter())) return;
      victim.crash();
      sim.afterFault(prng.between(0, 3_000), () => victim.restart());
    },
  };
}

/**
 * Crashes every actor `victims()` names at once (none if one is down already); each restarts
 * 0..3000 ms later. For both lock servers together (a power cut, a deploy), with or without the
 * arbiter (which restarts from its disk): the table is lost by design, and the service must come
 * back by itself with a fresh table that grants only after the grace, with tokens above every
 * earlier one (issue 11).
 */
function wholeCrash(name: string, doc: string, victims: () => Array<FailoverServerActor | ArbiterActor>): FaultType {
  return {
    name,
    doc,
    ratePerSecond: [0.02, 0.1],
    inject(sim, prng) {
      const all = victims();
      if (all.some((v) => v.state === "crashed")) return;
      for (const victim of all) {
        victim.crash();
        sim.afterFault(prng.between(0, 3_000), () => victim.restart());
      }
    },
  };
}

function coreCut(): FaultType {
  return {
    name: "fo-cut",
    doc: "cut the link between two of fp/fb/fa, both ways or one way, for 50..4000 ms",
    ratePerSecond: [0.1, 0.6],
    inject(sim, prng) {
      const from = prng.pick(CORE_IDS);
      const to = prng.pick(CORE_IDS.filter((id) => id !== from));
      const oneWay = prng.chance(0.5);
      const links: Array<[string, string]> = oneWay ? [[from, to]] : [[from, to], [to, from]];
      const durationMs = prng.between(50, 4_000);
      const what = `${from} ${oneWay ? "->" : "<->"} ${to}`;
      sim.network.cut(links);
      sim.log("net", "x", `cut ${what} for ${durationMs}ms`);
      sim.afterFault(durationMs, () => {
        sim.network.uncut(links);
        sim.log("net", "=", `heal ${what}`);
      });
    },
  };
}

function corePause(leaseMs: () => number): FaultType {
  return {
    name: "fo-pause",
    doc: "pause fp, fb or fa (SIGSTOP; its clock runs on) for 50 ms .. 3 leases",
    ratePerSecond: [0.05, 0.4],
    inject(sim, prng) {
      const victim = sim.actor(prng.pick(CORE_IDS));
      if (!victim.up) return;
      victim.pause();
      sim.afterFault(prng.between(50, 3 * leaseMs()), () => victim.resume());
    },
  };
}

function coreSlow(peerTimeoutMs: () => number): FaultType {
  return {
    name: "fo-slow",
    doc: "messages on one link among fp/fb/fa sent in a 50..1000 ms window arrive up to 3 × peerTimeoutMs late",
    ratePerSecond: [0.05, 0.3],
    inject(sim, prng) {
      const from = prng.pick(CORE_IDS);
      const to = prng.pick(CORE_IDS.filter((id) => id !== from));
      const extraMs = prng.between(1, 3 * peerTimeoutMs());
      const windowMs = prng.between(50, 1_000);
      sim.network.slow([[from, to]], extraMs);
      sim.log("net", "~", `slow ${from} -> ${to} by ${extraMs}ms for ${windowMs}ms`);
      sim.afterFault(windowMs, () => sim.network.unslow([[from, to]]));
    },
  };
}

const clientCrash = crashFault({
  name: "fo-client-crash",
  group: "failover-client",
  doc: "a failover-kind lock client dies (no leave, no close) and a new one starts 0..5000 ms later",
  downMs: [0, 5_000],
  ratePerSecond: [0.05, 0.5],
  downMax: 100,
});

/** The kind's actors of the run being set up (faults are module-level, actors per run). */
let current: { servers: FailoverServerActor[]; arbiter: ArbiterActor; settings: Settings } | undefined;
const servers: Servers = () => current!.servers;
const arbiter: Arbiter = () => current!.arbiter;

export function failoverLivenessBounds(params: KindParams, delayMaxMs: number, settings: Settings) {
  const lock = livenessBounds(params, delayMaxMs, settings);
  const s = settings;
  // A takeover or a restart at the heal: the lease (also the one a restarted arbiter assumes)
  // lapses, the backup notices the silence and claims, a claim that was lost times out; then
  // a backup restarted at the heal syncs (a snapshot and a catch-up round trip).
  // The backup's own promise runs side by side with the arbiter's lease (the later one counts).
  const takeoverMs = Math.max(s.primaryLeaseMs, s.backupLeaseMs) + s.primarySilenceMs + 2 * s.claimRetryMs + s.peerTimeoutMs + 8 * delayMaxMs + 4 * s.tickMs;
  // A client's request in flight at the heal ends within its failover timeout.
  const settleMs = Math.max(lock.settleMs, CLIENT_FAILOVER_MS + s.requestTimeoutMs) + takeoverMs;
  // Each request of a lock() may first go to the server that does not serve (one "not primary"
  // round trip, then the other server).
  const boundMs = lock.boundMs + Number(params.clients) * 6 * delayMaxMs;
  const syncedMs = takeoverMs + 2 * s.replicationTimeoutMs + 2 * s.peerTimeoutMs;
  // A lock server down or paused stops serving at most for a takeover, plus a claim whose answer
  // was lost meanwhile; any other single fault at most for a few lost renewals and acks in a row
  // (the lease outlives three of each).
  const takeoverGapMs = 2 * takeoverMs;
  const blipGapMs = 2 * Math.max(s.primaryLeaseMs, s.backupLeaseMs) + 8 * delayMaxMs;
  // After both servers restarted, the fresh table grants nothing for the grace (the longest TTL
  // plus lock-delay the record may hold, stretched for drift), counted from the claim's send.
  const ttlMaxMs = Math.max(s.sessionTtlMs, Number(params.ttlMs)) + Number(params.lockDelayMs);
  const graceMs = freshGraceMs({ type: "lease", epoch: 2, primary: "", leaseMs: s.primaryLeaseMs, fresh: true, tablesBefore: true, ttlMaxMs }, s);
  // A server restarted at the heal claims at once; the other's new process proves its copy gone.
  const freshStartMs = takeoverMs + 2 * s.claimRetryMs + 2 * s.peerTimeoutMs;
  return { settleMs: settleMs + graceMs + freshStartMs, boundMs, syncedMs, takeoverGapMs, blipGapMs, graceMs, freshStartMs };
}

export const FAILOVER_KIND: NodeKind = {
  name: "failover",
  doc: "primary and backup (LockReplica) with the arbiter (ArbiterCore) and failover clients",
  faults: [
    serverCrash("fo-server-crash", servers, arbiter, false),
    serverCrash("fo-lone-crash", servers, arbiter, true),
    crashFault({
      name: "fo-arbiter-crash",
      group: "failover-arbiter",
      doc: "the arbiter crashes and restarts 0..3000 ms later from its disk",
      downMs: [0, 3_000],
      ratePerSecond: [0.05, 0.3],
      downMax: 1,
    }),
    coreCut(),
    corePause(() => current!.settings.primaryLeaseMs),
    coreSlow(() => current!.settings.peerTimeoutMs),
    clientCrash,
    // Last, so the seeds' draws for the faults above stay what they were before issue 11.
    wholeCrash("fo-both-crash", "crash fp and fb together (both copies of the table lost); each restarts 0..3000 ms later", servers),
    wholeCrash("fo-all-crash", "crash fp, fb and the arbiter together; each restarts 0..3000 ms later (the arbiter from its disk)",
      () => [...servers(), arbiter()]),
  ],

  drawParams(prng: Prng, network: NetworkProfile): KindParams {
    const params = LOCK_KIND.drawParams(prng, network);
    // Drawn from a fork, so the draws below (and older seeds' runs) stay as they were.
    const fill = prng.fork("fill-table");
    const scale = Math.max(1, Math.ceil((8 * network.delayMaxMs) / DEFAULT_SETTINGS.primaryLeaseMs));
    // Assumption: a session outlives a takeover twice over (TTL ≥ 2 × (lease + silence)), and a
    // commit stall while the backup is declared out of sync; shorter TTLs lose every session
    // at each takeover (safe, but no lock() completes).
    const ttlMinMs = Math.max(8 * network.delayMaxMs, 2 * scale * (DEFAULT_SETTINGS.primaryLeaseMs + DEFAULT_SETTINGS.primarySilenceMs));
    return {
      ...params,
      ttlMs: prng.pick([1_000, 2_000, 4_000, 8_000, 16_000].filter((ttlMs) => ttlMs >= ttlMinMs)),
      scale,
      batchMax: prng.pick([1, 3, 512]),
      pipelineMax: prng.pick([2, 4, 8]),
      // 1: also require the backup to be back in sync at the end. Opt-in: with the smallest
      // batches and long delays the backup legitimately cannot keep up with the clients
      // (docs/simulator.md, finding 10).
      syncCheck: 0,
      // Issue 11: one run in three has a table near locksMax (filler.ts), and every copy to a
      // returning backup streams in small chunks: one item, a few, or a few dozen on fast
      // networks; on slow ones (a round trip per chunk of up to 2 × delayMax) a few dozen or a
      // few hundred, so a copy of a few hundred items takes a few seconds, as the opt-in
      // syncCheck's bound assumes (smaller chunks there: the backup legitimately syncs later).
      fillLocks: fill.chance(1 / 3) ? fill.between(100, 300) : 0,
      chunkItemsMax: network.delayMaxMs <= 20 ? fill.pick([1, 5, 40]) : fill.pick([40, 200]),
      chunkBytesMax: fill.pick([512, 4_096]),
      // 1: the durable profile (disk.ts), with `--set failover.durable=1`. Drawn from a fork, so
      // the draws above stay those of every saved seed.
      durable: 0,
      compactEntries: prng.fork("durable").pick([5, 50, 1_000]),
    };
  },

  setup(sim: Sim, params: KindParams): KindRun {
    const settings = failoverSettings(params);
    const workload = lockWorkload(params, "F");
    const clients: LockClientActor[] = [];
    const attempts: Attempt[] = [];
    const checks = new FailoverChecks(sim);
    const clientIds = () => clients.map((c) => c.id);
    const prng = sim.prng.fork("failover");
    const copyCut = new CopyCutChecker(sim);
    const observer: FailoverServerObserver = {
      committedGrant: (server, grant) => checks.committedGrant(server, grant),
      event: (server, event, fields) => {
        checks.event(server, event, fields);
        copyCut.event(server, event, fields);
      },
      sawEpoch: (server, epoch) => checks.sawEpoch(server, epoch),
    };
    const durable = Number(params.durable) === 1;
    const durablePrng = prng.fork("durable");
    // Created before their actors' first start; each disk runs its writes in its actor's time.
    const disks: SimLogDisk[] = [];
    const durableOf = (id: string) => {
      if (!durable) return null;
      const disk = new SimLogDisk(durablePrng.fork(`disk:${id}`), [0, 5]);
      disks.push(disk);
      return { disk, prng: durablePrng.fork(`restart:${id}`) };
    };
    const fp = new FailoverServerActor(sim, PRIMARY_ID, sim.newClock(), settings, BACKUP_ID, ARBITER_ID, observer, clientIds, durableOf(PRIMARY_ID));
    const fb = new FailoverServerActor(sim, BACKUP_ID, sim.newClock(), settings, PRIMARY_ID, ARBITER_ID, observer, clientIds, durableOf(BACKUP_ID));
    const fa = new ArbiterActor(sim, ARBITER_ID, sim.newClock(), {
      primaryId: PRIMARY_ID,
      backupId: BACKUP_ID,
      leaseMs: settings.primaryLeaseMs,
      bootstrapWaitMs: settings.bootstrapWaitMs,
      fsyncMs: [0, 5],
    }, [PRIMARY_ID, BACKUP_ID], checks, prng.fork("arbiter"));
    for (const actor of [fp, fb, fa]) sim.addActor(actor);
    current = { servers: [fp, fb], arbiter: fa, settings };
    if (durable) scheduleDurableFaults(sim, durablePrng.fork("faults"), { servers: [fp, fb], arbiter: fa, disks });
    checks.attach([fp, fb], fa);
    watchLockTables(sim, "failover", [fp, fb]);
    if (Number(params.fillLocks) > 0) fillTable(sim, [fp, fb], Number(params.fillLocks), 1_000, Number(params.ttlMs));
    const workloadPrng = prng.fork("workload");
    for (let i = 1; i <= Number(params.clients); i++) {
      const id = `fc${i}`;
      const client = new LockClientActor(sim, id, sim.newClock(), [PRIMARY_ID, BACKUP_ID], settings, workload, workloadPrng.fork(id),
        (a) => attempts.push(a), { group: "failover-client", failoverTimeoutMs: CLIENT_FAILOVER_MS });
      clients.push(client);
      sim.addActor(client);
    }
    sim.checkers.register(clientMutexChecker(() => clients, FAILOVER_CHECKERS.clientMutex));
    sim.checkers.register(grantSurvivesChecker(() => clients, () => {
      // A fresh table in its grace has no grant to compare: the lost table's grants are
      // believed until their leases end, which the grace waits out. After it, it counts again.
      const serving = [fp, fb].find((s) => s.servingNow() && !s.inGrace());
      return serving ? { server: serving.id, table: serving.table } : null;
    }, FAILOVER_CHECKERS.grantSurvives, "every grant a client believes in is a holder in the serving server's table (a fresh table's grace excepted)"));

    sim.checkers.register(keepaliveReachesPrimary(sim, { clients: () => clients, servers: [fp, fb] }));

    const { settleMs, boundMs, syncedMs, takeoverGapMs, blipGapMs, graceMs, freshStartMs } = failoverLivenessBounds(params, sim.profile.network.delayMaxMs, settings);
    // Crashing the holder of the only copy (opt-in) is the one fault the service cannot survive.
    if (!("fo-lone-crash" in sim.profile.faults)) {
      sim.checkers.register(servesThroughOneFault(sim, {
        coreIds: CORE_IDS,
        serverIds: [PRIMARY_ID, BACKUP_ID],
        servingNow: () => [fp, fb].some((s) => s.servingNow()),
        recovered: (id) => {
          const replica = [fp, fb].find((s) => s.id === id)?.replica;
          return replica?.machine != null && replica.epochConfirmed();
        },
        takeoverGapMs,
        blipGapMs,
      }));
    }
    let healedAtMs = Number.POSITIVE_INFINITY;
    let settledAtMs = Number.POSITIVE_INFINITY;
    return {
      onHeal() {
        healedAtMs = sim.nowMs;
        settledAtMs = sim.nowMs + settleMs;
        sim.log("failover", "*", `liveness: a primary serves with an in-sync backup by ${healedAtMs + syncedMs}ms; ` +
          `every lock() from ${settledAtMs}ms on is granted within ${boundMs}ms`);
        // Whatever crashed, the service grants again within a fresh start plus its grace.
        const grantsByMs = healedAtMs + freshStartMs + graceMs;
        sim.at(grantsByMs, () => {
          const serving = [fp, fb].find((s) => s.servingNow());
          if (!serving || serving.inGrace()) {
            sim.violate(FAILOVER_CHECKERS.grantsAfterGrace, `${serving ? `${serving.id} is still in its grace` : "no server serves"} at ${grantsByMs}ms ` +
              `(heal ${healedAtMs}ms + fresh start ${freshStartMs}ms + grace ${graceMs}ms)`);
          }
        });
      },
      finish() {
        const problems: string[] = [];
        const serving = [fp, fb].filter((s) => s.servingNow());
        const recorded = fa.core.current;
        if (sim.nowMs >= healedAtMs + syncedMs) {
          if (serving.length !== 1) problems.push(`no server serves at the end (${[fp, fb].map((s) => `${s.id}: ${s.replica?.role} e${s.replica?.epoch}`).join(", ")})`);
          else if (Number(params.syncCheck) === 1 && !recorded.backupInSync) {
            const backup = [fp, fb].find((s) => s !== serving[0])!;
            problems.push(`the backup is not in sync at the end (arbiter: ${JSON.stringify(recorded)}; ${backup.id}: ${backup.replica?.role} e${backup.replica?.epoch} ` +
              `copy ${backup.replica?.machine ? backup.replica.machine.appliedIndex : "none"}; primary ${serving[0].id} backup mode ${serving[0].replica?.status().backup?.mode})`);
          }
        }
        problems.push(...lateAttempts({ attempts, clients, settledAtMs, boundMs, nowMs: sim.nowMs }));
        return problems;
      },
    };
  },
};
