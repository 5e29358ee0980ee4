/**
 * Helpers for the pure ring node's tests (tests/ring_node_test.ts, tests/ring_node_view_test.ts):
 * a node driven by hand (explicit inputs and times, no timers, no I/O) with the view change's two
 * inputs played by the test, and readers of its output. Not a test file.
 */
import assert from "node:assert/strict";
import {
  type ClientReply,
  type PersistOp,
  type RingEffect,
  type RingInput,
  type RingLimits,
  RingNode,
  type RingOutput,
  type RingStored,
} from "../lib/core/ring/ring_node.ts";
import type { RingEntry, RingLogRecord, RingToken } from "../lib/core/ring/ring_types.ts";
import { fenceFloor, type View } from "../lib/core/ring/view_wire.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";

export const LIMITS: RingLimits = { ...DEFAULT_SETTINGS, ringLeaseMs: 1_000, tokenIdlePaceMs: 100, tokenLossMs: 5_000, ringSnapshotEveryWrites: 1_000 };

/** Fences carry the epoch in their high part: fence n of epoch 1 is F1 + n. */
export const F1 = fenceFloor(1);

/**
 * The view of `epoch` with `members` (default: a whole ring a, b, c), coordinated and regenerated
 * by its first member from wseq 0, without a grant wait; `fields` overrides any of it.
 */
export function viewOf(epoch: number, members: string[] = ["a", "b", "c"], fields: Partial<View> = {}): View {
  return { epoch, coordinator: members[0], members, regenerator: members[0], startWseq: 0, resendFromWseq: 1, grantWaitMs: 0, ...fields };
}

export interface HarnessOptions {
  id?: string;
  ring?: string[];
  limits?: RingLimits;
  stored?: RingStored;
  /** The view change's stored state, as the daemon hands it to a restarted node. */
  storedView?: View | null;
  promisedEpoch?: number;
  /**
   * The view installed at t = 0 before anything else: by default epoch 1 with members = the
   * ring (a fresh node of a started ring); null: none (a restarted node takes nothing of its
   * old epoch, so a harness built from `stored` installs none unless told).
   */
  view?: View | null;
  /** "auto": a majority backs every lease the node asks for (wantLease), in the same output. */
  leases?: "auto" | "none";
}

export type Harness = ReturnType<typeof harness>;

/** A node "b" of the ring a → b → c (by default), plus helpers to feed it and read its output. */
export function harness(options: HarnessOptions = {}) {
  const ring = options.ring ?? ["a", "b", "c"];
  const node = new RingNode({
    id: options.id ?? "b",
    ring,
    storedView: options.storedView,
    promisedEpoch: options.promisedEpoch,
    limits: options.limits ?? LIMITS,
    ticketPrefix: "t",
    stored: options.stored,
  });
  let now = 0;
  let reqSeq = 0;
  /** Everything the node asked to store, in order: the disk of a restart. */
  const persisted: PersistOp[] = [];
  const step = (input: RingInput, atMs = now): RingOutput => {
    now = atMs;
    let out = node.step(input, now);
    const wanted = only(out, "wantLease")[0];
    if (wanted && options.leases !== "none") {
      // A majority that backs every lease at once, merged into one output (the token lease's
      // own tests answer wantLease themselves, with leases: "none").
      const leased = node.step({ type: "lease", epoch: wanted.epoch, validUntilMs: now + 60_000, sectionMaxMs: wanted.sectionMaxMs }, now);
      out = {
        result: out.result,
        persist: [...out.persist, ...leased.persist],
        effects: [...out.effects.filter((e) => e.type !== "wantLease"), ...leased.effects],
      };
    }
    persisted.push(...out.persist);
    return out;
  };
  /**
   * The view change as the driver applies it: `promised` (unless already promised), then
   * `install`. Returns the install's output.
   */
  const install = (view: View, fields: { regenerate?: boolean; grantNotBeforeMs?: number; promise?: boolean } = {}): RingOutput => {
    if (fields.promise !== false) step({ type: "promised", epoch: view.epoch });
    return step({ type: "install", view, regenerate: fields.regenerate ?? false, grantNotBeforeMs: fields.grantNotBeforeMs ?? now });
  };
  const initial = options.view === undefined ? (options.stored ? null : viewOf(1, ring)) : options.view;
  if (initial) install(initial);
  return {
    node,
    persisted,
    step,
    install,
    at: (ms: number) => void (now = ms),
    now: () => now,
    nextReq: () => ++reqSeq,
    enter(waitMs = 10_000, leaseMs = LIMITS.ringLeaseMs): { reqId: number; out: RingOutput } {
      const reqId = ++reqSeq;
      return { reqId, out: step({ type: "enter", reqId, waitMs, leaseMs }) };
    },
    /** A write in the running section `fence`; its reqId and output. */
    write(fence: number, key: string, value: string): { reqId: number; out: RingOutput } {
      const reqId = ++reqSeq;
      return { reqId, out: step({ type: "write", reqId, fence, op: { type: "put", key, value } }) };
    },
  };
}

export function token(fields: Partial<RingToken> = {}): RingToken {
  return { epoch: 1, hop: 1, wseq: 0, commit: 0, fence: 0, idleHops: 0, ...fields };
}

/** A put at `wseq` written by `author` (its origin too), stamped `epoch`. */
export function put(wseq: number, author: string, key: string, value: string, epoch = 1): RingEntry {
  return { epoch, wseq, author, origin: author, op: { type: "put", key, value } };
}

export function replies(out: RingOutput): Map<number, ClientReply> {
  return new Map(out.effects.flatMap((e) => (e.type === "reply" ? [[e.reqId, e.reply] as const] : [])));
}

export function only<T extends RingEffect["type"]>(out: RingOutput, type: T): Extract<RingEffect, { type: T }>[] {
  return out.effects.filter((e): e is Extract<RingEffect, { type: T }> => e.type === type);
}

export function sentToken(out: RingOutput): RingToken | undefined {
  return only(out, "sendToken")[0]?.token;
}

/** The writes an output sends to the successor, in order. */
export function sentWrites(out: RingOutput): RingEntry[] {
  return only(out, "sendWrites").flatMap((s) => s.entries);
}

/** The log records an output stores, in order. */
export function logRecords(out: RingOutput): RingLogRecord[] {
  return out.persist.flatMap((p) => (p.type === "log" ? [p.record] : []));
}

export function fenceOf(reply: ClientReply | undefined): number {
  assert.ok(reply?.ok && reply.type === "granted", `expected a grant, got ${JSON.stringify(reply)}`);
  return reply.fence;
}

/**
 * What `h`'s node stored, as a restarted node reads it: the last hard state, the last snapshot
 * with its tail, and the log records stored after it (the disk keeps every persisted op).
 */
export function storedOf(h: Harness): RingStored {
  const hardState = h.persisted.filter((p) => p.type === "hardState").at(-1);
  assert.ok(hardState?.type === "hardState", "something was stored");
  const lastSnapshot = h.persisted.findLastIndex((p) => p.type === "snapshot");
  const snapshotOp = h.persisted[lastSnapshot];
  const records: RingLogRecord[] = snapshotOp?.type === "snapshot" ? snapshotOp.tail.map((entry) => ({ type: "entry", entry })) : [];
  for (const p of h.persisted.slice(lastSnapshot + 1)) if (p.type === "log") records.push(p.record);
  return { hardState: hardState.state, snapshot: snapshotOp?.type === "snapshot" ? snapshotOp.snapshot : undefined, records };
}

/**
 * `h`'s node crashes and restarts at `atMs` from what it stored, with the view change's stored
 * view `storedView` (the daemon passes it and its promised epoch); it installs no view.
 */
export function restart(h: Harness, atMs: number, storedView: View | null, options: HarnessOptions = {}): Harness {
  const copy = harness({ ...options, stored: storedOf(h), storedView, promisedEpoch: storedView?.epoch ?? 0, view: null });
  copy.persisted.push(...h.persisted);
  copy.at(atMs);
  copy.node.start(atMs);
  return copy;
}
