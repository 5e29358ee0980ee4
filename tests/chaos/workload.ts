/**
 * The chaos workload: real clients of the lock service and of the ring, in the runner's process,
 * each one a loop that records every step in the history.
 *
 * Lock clients (lib/client/lock_client.ts): lock(name, {ttlMs, waitMs}) → read the lock's
 * guarded counter with the fencing token → hold a while → write counter + 1 with the token →
 * release(). The counter is a file behind a small "storage server" that, like Kleppmann's,
 * refuses any read or write whose token is below the highest it has seen; so the counter stays
 * exact even if two clients overlap, and the overlap itself is caught from the history.
 *
 * Ring clients (lib/client/ring_client.ts), one per ring node: enter a section → read the ring's
 * "counter" at the holder → put counter + 1 (answered once it went around the ring) → leave.
 *
 * Every loop is bounded by a deadline and an operation count.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect, type LockHandle } from "../../lib/client/lock_client.ts";
import { connectRing, type RingLock } from "../../lib/client/ring_client.ts";
import { MutexdError } from "../../lib/wire/errors.ts";
import type { Prng } from "../../lib/core/prng.ts";
import { sleep } from "../_harness.ts";
import { type HistoryWriter, type RecordType, wallMs } from "./history.ts";

/** Operations per client at most, whatever the duration (a bound, not a target). */
export const OPS_PER_CLIENT_MAX = 100_000;

export class StaleTokenError extends Error {
  override name = "StaleTokenError";
}

/**
 * The guarded resource: one counter file per lock, with the highest token seen. Reads and writes
 * are synchronous, so each is atomic among the clients of this process.
 */
export class GuardedCounters {
  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true });
  }

  private file(lock: string): string {
    return join(this.dir, `${lock}.json`);
  }

  private load(lock: string): { value: number; fence: number } {
    try {
      return JSON.parse(readFileSync(this.file(lock), "utf8"));
    } catch {
      return { value: 0, fence: 0 };
    }
  }

  private admit(lock: string, token: number): { value: number; fence: number } {
    const state = this.load(lock);
    if (token < state.fence) throw new StaleTokenError(`token ${token} below ${state.fence}`);
    return state;
  }

  read(lock: string, token: number): number {
    const state = this.admit(lock, token);
    writeFileSync(this.file(lock), JSON.stringify({ value: state.value, fence: token }));
    return state.value;
  }

  write(lock: string, token: number, value: number): void {
    this.admit(lock, token);
    writeFileSync(this.file(lock), JSON.stringify({ value, fence: token }));
  }

  /** The final value, read without a token (after the run). */
  value(lock: string): number {
    return this.load(lock).value;
  }
}

export interface WorkloadContext {
  history: HistoryWriter;
  prng: Prng;
  /** Workers stop starting operations once this returns true. */
  stopped: () => boolean;
}

function errorText(error: unknown): string {
  return error instanceof MutexdError ? `${error.code}: ${error.message}` : String((error as Error)?.message ?? error);
}

/** A lock acquire failed for sure only when the lock was taken all along; else it is unknown. */
function acquireOutcome(error: unknown): Exclude<RecordType, "invoke" | "ok"> {
  return error instanceof MutexdError && (error.code === "not_acquired" || error.code === "bad_request") ? "fail" : "info";
}

export interface LockWorkerOptions {
  client: string;
  servers: string[];
  locks: string[];
  counters: GuardedCounters;
}

/** One lock client's loop; returns how many operations it completed with a write. */
export async function lockWorker(ctx: WorkloadContext, options: LockWorkerOptions): Promise<number> {
  const { history, prng } = ctx;
  const { client: name, counters } = options;
  const client = connect({ servers: options.servers, requestTimeoutMs: 1_000, failoverTimeoutMs: 4_000 });
  let writes = 0;
  for (let op = 0; op < OPS_PER_CLIENT_MAX && !ctx.stopped(); op++) {
    const lock = prng.pick(options.locks);
    const ttlMs = prng.pick([1_500, 2_000, 3_000, 5_000]);
    const done = history.invoke({ op: "acquire", client: name, lock, leaseMs: ttlMs });
    let handle: LockHandle;
    try {
      handle = await client.lock(lock, { ttlMs, waitMs: prng.between(200, 4_000), lockDelayMs: prng.chance(0.2) ? 200 : 0 });
    } catch (error) {
      done(acquireOutcome(error), { error: errorText(error) });
      await sleep(prng.between(10, 200));
      continue;
    }
    done("ok", { token: handle.token });
    const token = handle.token;
    // The lease's end by the client's own clock, as a history time: a hold ends there at the latest,
    // even when this process is stalled and hears of the loss late (checker, `mutex`).
    const onLost = () =>
      history.event({
        op: "lost",
        client: name,
        lock,
        token,
        error: errorText(handle.signal.reason),
        leaseEnd: wallMs() - (performance.now() - handle.session.leaseEndsAtMs),
      });
    if (handle.signal.aborted) onLost();
    else handle.signal.addEventListener("abort", onLost, { once: true });
    try {
      if (await guardedIncrement(ctx, { name, lock, token, handle, counters, ttlMs })) writes += 1;
    } finally {
      const release = history.invoke({ op: "release", client: name, lock, token });
      try {
        await handle.release();
        release("ok");
      } catch (error) {
        release("info", { error: errorText(error) });
      }
    }
    await sleep(prng.between(0, 50));
  }
  return writes;
}

/**
 * The availability probe: a try-lock of its own lock (nobody else takes it), released at once,
 * every PROBE_PAUSE_MS. Its grants measure how long the service could not grant under each fault,
 * whatever the contention on the workload's locks (the checker's grant-gap rule reads them).
 */
export async function probeWorker(ctx: WorkloadContext, options: { servers: string[] }): Promise<number> {
  const client = connect({ servers: options.servers, requestTimeoutMs: PROBE_REQUEST_TIMEOUT_MS, failoverTimeoutMs: 4_000 });
  let granted = 0;
  for (let op = 0; op < OPS_PER_CLIENT_MAX && !ctx.stopped(); op++) {
    const done = ctx.history.invoke({ op: "probe", client: "probe", lock: PROBE_LOCK });
    try {
      const handle = await client.lock(PROBE_LOCK, { ttlMs: 3_000, waitMs: 0 });
      done("ok", { token: handle.token });
      granted += 1;
      await handle.release().catch(() => {});
    } catch (error) {
      done(acquireOutcome(error), { error: errorText(error) });
    }
    await sleep(PROBE_PAUSE_MS);
  }
  return granted;
}

/** The probe's own lock, its pause between two probes, and how long it waits for one answer (check.ts's bounds count it). */
export const PROBE_LOCK = "probe";
const PROBE_PAUSE_MS = 50;
export const PROBE_REQUEST_TIMEOUT_MS = 1_000;

/** read → hold → write under the token; true when the write was acknowledged. */
async function guardedIncrement(
  ctx: WorkloadContext,
  o: { name: string; lock: string; token: number; handle: LockHandle; counters: GuardedCounters; ttlMs: number },
): Promise<boolean> {
  const { history, prng } = ctx;
  if (o.handle.signal.aborted) return false;
  const read = history.invoke({ op: "read", client: o.name, lock: o.lock, token: o.token });
  let value: number;
  try {
    value = o.counters.read(o.lock, o.token);
    read("ok", { value });
  } catch (error) {
    read("fail", { error: errorText(error) });
    return false;
  }
  // Mostly brief holds; one in ten outlives the session TTL (the keepalives must carry it).
  await sleep(prng.chance(0.1) ? prng.between(o.ttlMs / 2, o.ttlMs * 2) : prng.between(0, 30));
  // A client told it lost the lock usually stops; half of them write anyway (a "zombie", as
  // after a GC pause): the resource's token check must keep the counter exact.
  if (o.handle.signal.aborted && prng.chance(0.5)) return false;
  const zombie = o.handle.signal.aborted ? { fault: "zombie" } : {};
  const write = history.invoke({ op: "write", client: o.name, lock: o.lock, token: o.token, value: value + 1, ...zombie });
  try {
    o.counters.write(o.lock, o.token, value + 1);
    write("ok");
    return true;
  } catch (error) {
    write("fail", { error: errorText(error) });
    return false;
  }
}

/** A ring client's longest pause after a failed enter before it asks again (check.ts's ring bound counts it). */
export const RING_CLIENT_RETRY_MS_MAX = 300;

export interface RingWorkerOptions {
  client: string;
  node: string;
  server: string;
}

/** Outcome of a ring write that failed: refused for sure, or unknown (it may still commit). */
function putOutcome(error: unknown): "fail" | "info" {
  return error instanceof MutexdError && (error.code === "not_in_section" || error.code === "lock_lost" || error.code === "bad_request")
    ? "fail"
    : "info";
}

/** One ring client's loop on one node; returns how many increments were acknowledged. */
export async function ringWorker(ctx: WorkloadContext, options: RingWorkerOptions): Promise<number> {
  const { history, prng } = ctx;
  const { client: name, node } = options;
  const ring = connectRing({ server: options.server, requestTimeoutMs: 2_000 });
  let acked = 0;
  for (let op = 0; op < OPS_PER_CLIENT_MAX && !ctx.stopped(); op++) {
    const leaseMs = prng.pick([1_000, 2_000, 3_000]);
    const done = history.invoke({ op: "ring-enter", client: name, lock: "ring", node, leaseMs });
    let section: RingLock;
    try {
      section = await ring.lock({ waitMs: prng.between(500, 5_000), leaseMs });
    } catch (error) {
      done(acquireOutcome(error), { error: errorText(error) });
      // The client's seeded backoff before it asks again: workload, not a wait for a condition.
      await sleep(prng.between(50, RING_CLIENT_RETRY_MS_MAX));
      continue;
    }
    done("ok", { token: section.token, leaseEnd: wallMs() + section.remainingMs });
    const token = section.token;
    const onLost = () => history.event({ op: "ring-lost", client: name, lock: "ring", node, token, error: errorText(section.signal.reason) });
    if (section.signal.aborted) onLost();
    else section.signal.addEventListener("abort", onLost, { once: true });
    try {
      if (await ringIncrement(ctx, { name, node, token, section, leaseMs })) acked += 1;
    } finally {
      const release = history.invoke({ op: "ring-release", client: name, lock: "ring", node, token });
      try {
        await section.release();
        release("ok");
      } catch (error) {
        release("info", { error: errorText(error) });
      }
    }
    await sleep(prng.between(0, 50));
  }
  return acked;
}

async function ringIncrement(
  ctx: WorkloadContext,
  o: { name: string; node: string; token: number; section: RingLock; leaseMs: number },
): Promise<boolean> {
  const { history, prng } = ctx;
  if (o.section.signal.aborted) return false;
  const read = history.invoke({ op: "ring-read", client: o.name, lock: "ring", node: o.node, token: o.token });
  let value: number;
  try {
    value = Number((await o.section.get("counter")) ?? "0");
    read("ok", { value });
  } catch (error) {
    read(error instanceof MutexdError && error.code === "lock_lost" ? "fail" : "info", { error: errorText(error) });
    return false;
  }
  // One in ten holds past the lease: the node must revoke it and refuse the write.
  await sleep(prng.chance(0.1) ? prng.between(o.leaseMs / 2, o.leaseMs * 1.5) : prng.between(0, 20));
  // After the section was lost, half the time write anyway, past the client's guard (a zombie):
  // the node must refuse a fence that is no longer its running section.
  const zombie = o.section.signal.aborted && prng.chance(0.5);
  const put = history.invoke({ op: "ring-put", client: o.name, lock: "ring", node: o.node, token: o.token, value: value + 1, ...(zombie ? { fault: "zombie" } : {}) });
  try {
    if (zombie) await o.section.client.put(o.token, "counter", String(value + 1));
    else await o.section.put("counter", String(value + 1));
    put("ok");
    return true;
  } catch (error) {
    put(putOutcome(error), { error: errorText(error) });
    return false;
  }
}
