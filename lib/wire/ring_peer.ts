/**
 * Schemas of the ring's peer messages (`/v1/ring/peer/{token,writes,wake}`, the catch-up answer
 * of `GET /v1/ring/peer/log`) and of a repair datagram's shape (cluster/ring/udp.ts). Checked
 * against the core's types at compile time. The view change's messages (`/v1/ring/peer/view`)
 * get their shape checked here; the core then checks them against the cluster's ids, the quorum
 * and the fence layout (lib/core/ring/view_wire.ts checkViewMessage).
 *
 * Bounds: node ids as the cluster file allows them, epochs of at most EPOCH_MAX, safe
 * non-negative integers for hops, sequence numbers and fences, a batch of at most ringBatchWritesMax writes, keys of at most
 * ringKeyLengthMax characters and values of at most ringValueBytesMax (characters: a value the
 * core accepted in bytes is never longer in characters), no unknown keys.
 */
import * as v from "valibot";
import type { CatchUpReply, RingEntry, RingToken } from "../core/ring/ring_types.ts";
import type { RingResult } from "../core/ring/ring_io.ts";
import { ERROR_STATUS } from "./errors.ts";
import type { RepairMessage } from "../core/ring/repair.ts";
import { EPOCH_MAX, type ViewMessage } from "../core/ring/view_wire.ts";
import type { Settings } from "../settings.ts";
import { check, count, type Flat, nodeId, perSettings, REASON_LENGTH_MAX, sameType, type Same } from "./schema.ts";
import { type FormatVersion, formatReads, SECTION_ANNOUNCE_FORMAT, SECTION_BOUND_FORMAT } from "./version.ts";

export type RingPeerLimits = Pick<Settings, "ringBatchWritesMax" | "ringKeyLengthMax" | "ringValueBytesMax" | "ringKeysMax">;

/**
 * A ring epoch: at most EPOCH_MAX (2^21 − 1), above which its fences would pass 2^53. A token or
 * view of epoch 2^53 − 1 would be stored and outrank every real one forever (issue 12).
 */
const epoch = () => v.pipe(count(), v.maxValue(EPOCH_MAX));

const token = v.pipe(
  v.strictObject({ epoch: epoch(), hop: count(), wseq: count(), commit: count(), fence: count(), idleHops: count() }),
  v.check((t) => t.commit <= t.wseq, "token commit must not exceed wseq"),
);

function build(limits: RingPeerLimits) {
  const key = v.pipe(v.string(), v.minLength(1), v.maxLength(limits.ringKeyLengthMax));
  const op = v.variant("type", [
    v.strictObject({ type: v.literal("put"), key, value: v.pipe(v.string(), v.maxLength(limits.ringValueBytesMax)) }),
    v.strictObject({ type: v.literal("delete"), key }),
    // The regenerator's marker (RingOp "noop"): no key, no value.
    v.strictObject({ type: v.literal("noop"), key: v.literal("") }),
  ]);
  const entry = v.strictObject({ epoch: epoch(), wseq: v.pipe(count(), v.minValue(1)), author: nodeId(), origin: nodeId(), op });
  const entries = v.pipe(
    v.array(entry),
    v.maxLength(limits.ringBatchWritesMax),
    v.check((list) => list.every((e, i) => i === 0 || e.wseq === list[i - 1].wseq + 1), "entries must be consecutive"),
  );
  return {
    entry,
    token: v.strictObject({ from: nodeId(), token }),
    writes: v.pipe(
      v.strictObject({ from: nodeId(), epoch: epoch(), entries }),
      v.check((m) => m.entries.every((e) => e.epoch <= m.epoch), "an entry's epoch is above the message's epoch"),
    ),
    wake: v.strictObject({ from: nodeId() }),
    catchUp: v.strictObject({
      commit: count(),
      snapshot: v.optional(v.strictObject({
        wseq: count(),
        epoch: v.optional(epoch()),
        kv: v.pipe(v.array(v.strictTuple([key, v.pipe(v.string(), v.maxLength(limits.ringValueBytesMax))])), v.maxLength(limits.ringKeysMax)),
      })),
      entries,
    }),
  };
}

type Schemas = ReturnType<typeof build>;

/**
 * A neighbour's answer to a token or writes hand-off (RingResult). Over HTTP an error answer
 * comes with a 4xx status and the transport rejects it first; a ring of one hands itself its own.
 */
export const ringResultSchema = v.variant("type", [
  v.strictObject({ ok: v.literal(true), type: v.literal("done") }),
  v.strictObject({ ok: v.literal(true), type: v.literal("token"), duplicate: v.boolean() }),
  v.strictObject({ ok: v.literal(true), type: v.literal("writes"), ackedTo: count() }),
  v.strictObject({ ok: v.literal(false), type: v.literal("gap"), ackedTo: count(), lastApplied: count() }),
  v.strictObject({ ok: v.literal(false), type: v.literal("stale"), epoch: epoch() }),
  v.strictObject({ ok: v.literal(false), type: v.literal("notYet"), epoch: epoch() }),
  v.strictObject({
    ok: v.literal(false),
    type: v.literal("error"),
    error: v.strictObject({ code: v.picklist(Object.keys(ERROR_STATUS) as Array<keyof typeof ERROR_STATUS>), message: v.pipe(v.string(), v.maxLength(REASON_LENGTH_MAX)) }),
  }),
]);

sameType<Same<v.InferOutput<typeof ringResultSchema>, RingResult>>();

sameType<Same<v.InferOutput<Schemas["entry"]>, RingEntry>>();
sameType<Same<v.InferOutput<typeof token>, RingToken>>();
sameType<Same<v.InferOutput<Schemas["catchUp"]>, CatchUpReply>>();

/** The ring's peer schemas for `limits` (built once per settings object). */
export const ringPeerSchemas = perSettings(build);

/** A neighbour's hand-off answer, or why it is refused (then the hand-off counts as failed, maybe taken). */
export function checkRingResult(value: unknown) {
  return check(ringResultSchema, value, "hand-off answer");
}

/** A neighbour's catch-up answer, or why it is refused (then the fetch counts as failed). */
export function checkCatchUp(value: unknown, limits: RingPeerLimits) {
  return check(ringPeerSchemas(limits).catchUp, value, "catch-up answer");
}

/**
 * A repair datagram's shape (cluster/ring/udp.ts RepairDatagram): the core's message plus the
 * sender's incarnation (its ordered boot count, udp.ts) and sequence number. Whether `suspect` and `from` are ring nodes is
 * checked against the cluster's ids after it (decodeDatagram).
 */
export const repairDatagramSchema = v.strictObject({
  type: v.picklist(["whoLostPred", "iLostPred"]),
  epoch: epoch(),
  suspect: nodeId(),
  from: nodeId(),
  inc: count(),
  seq: count(),
  /** The sender's wire format (lib/wire/version.ts), absent for 1.0 (a build before versions knows no such field). */
  format: v.optional(v.pipe(v.string(), v.maxLength(16))),
});

sameType<Same<Omit<v.InferOutput<typeof repairDatagramSchema>, "inc" | "seq" | "format">, Flat<Omit<RepairMessage, never>>>>();

// ---- The view change (lib/core/ring/view_wire.ts ViewMessage) ----

/** Voter lists are the cluster's ring nodes (a few; the core checks them against its own list). */
const VOTERS_MAX = 1_024;
const voters = () => v.pipe(v.array(nodeId()), v.minLength(1), v.maxLength(VOTERS_MAX));
const ballot = () => v.strictObject({ epoch: epoch(), coordinator: v.pipe(v.string(), v.maxLength(64)) });
const ms = () => count();
/** An object, not an array (a record alone accepts both): node id → ms. */
const msByNode = () =>
  v.pipe(
    v.custom<Record<string, number>>((x) => typeof x === "object" && x !== null && !Array.isArray(x), "must be an object"),
    v.record(nodeId(), ms()),
    v.check((r) => Object.keys(r).length <= VOTERS_MAX, "too many nodes"),
  );

export const viewMessageSchema = v.variant("type", [
  v.strictObject({ type: v.literal("probe"), from: nodeId(), epoch: epoch() }),
  v.strictObject({
    type: v.literal("probeReply"),
    from: nodeId(),
    viewEpoch: epoch(),
    tokenEpoch: epoch(),
    tokenHop: count(),
    live: v.boolean(),
    lastTokenAgeMs: v.nullable(ms()),
  }),
  v.strictObject({ type: v.literal("section"), from: nodeId(), epoch: epoch(), leaseMs: ms(), n: count() }),
  v.strictObject({ type: v.literal("sectionEnd"), from: nodeId(), epoch: epoch(), n: count() }),
  v.strictObject({ type: v.literal("prepare"), from: nodeId(), ballot: ballot(), voters: voters() }),
  v.strictObject({
    type: v.literal("promise"),
    from: nodeId(),
    ballot: ballot(),
    prior: ballot(),
    viewEpoch: epoch(),
    facts: v.strictObject({
      lastApplied: count(),
      lastWriteEpoch: epoch(),
      commit: count(),
      tokenEpoch: epoch(),
      tokenHop: count(),
      tokenHere: v.picklist(["held", "neverLeft", "no"]),
      sectionRemainingMs: ms(),
      holdEndedAgoMs: msByNode(),
      holdSectionMaxMs: v.optional(msByNode()),
      restartedAgoMs: v.nullable(ms()),
    }),
  }),
  v.strictObject({ type: v.literal("reject"), from: nodeId(), ballot: ballot(), promised: ballot(), viewEpoch: epoch() }),
  v.strictObject({ type: v.literal("deferred"), from: nodeId(), ballot: ballot(), waitMs: ms() }),
  v.strictObject({
    type: v.literal("newView"),
    from: nodeId(),
    view: v.strictObject({
      epoch: epoch(),
      coordinator: nodeId(),
      members: voters(),
      regenerator: nodeId(),
      startWseq: count(),
      resendFromWseq: count(),
      grantWaitMs: ms(),
      voters: v.optional(voters()),
    }),
  }),
  v.strictObject({ type: v.literal("installed"), from: nodeId(), epoch: epoch() }),
  v.strictObject({ type: v.literal("renew"), from: nodeId(), epoch: epoch(), seq: count(), voters: voters(), sectionMaxMs: v.optional(ms()) }),
  v.strictObject({ type: v.literal("coordinate"), from: nodeId(), reason: v.pipe(v.string(), v.maxLength(64)), epoch: epoch() }),
  v.strictObject({ type: v.literal("renewAnswer"), from: nodeId(), epoch: epoch(), seq: count(), ok: v.boolean() }),
]);

sameType<Same<v.InferOutput<typeof viewMessageSchema>, ViewMessage>>();

/**
 * `message` as a peer of wire format `theirs` (null: not heard from yet) reads it: without the
 * section bound's fields (`renew.sectionMaxMs`, a promise's `facts.holdSectionMaxMs`) unless it
 * names SECTION_BOUND_FORMAT or newer, since a build before them refuses them (strict schemas).
 * Leaving them out is always safe: the receiver counts ringLeaseMaxMs (docs/ring.md "The token
 * lease"). A `section` announcement and its `sectionEnd` go only to a peer that names
 * SECTION_ANNOUNCE_FORMAT or newer (null: not sent; the peer's probe then asks the others, who
 * heard it, and a peer that never got the announcement needs no end of it). Any other message
 * goes as it is.
 */
export function viewMessageFor(message: ViewMessage, theirs: FormatVersion | null): ViewMessage | null {
  // A section announcement is a message of its own: an older peer does not get it at all.
  if (isSectionMessage(message)) return formatReads(theirs, SECTION_ANNOUNCE_FORMAT) ? message : null;
  if (!carriesSectionBound(message) || formatReads(theirs, SECTION_BOUND_FORMAT)) return message;
  if (message.type === "renew") {
    const { sectionMaxMs: _left, ...older } = message;
    return older;
  }
  if (message.type === "promise") {
    const { holdSectionMaxMs: _left, ...facts } = message.facts;
    return { ...message, facts };
  }
  return message;
}

/** Whether what goes to a peer of `message` depends on the peer's wire format (viewMessageFor). */
export function dependsOnFormat(message: ViewMessage): boolean {
  return isSectionMessage(message) || carriesSectionBound(message);
}

/** A section's announcement or its end: messages of wire format 1.2 (SECTION_ANNOUNCE_FORMAT), sent only to peers naming it. */
function isSectionMessage(message: ViewMessage): boolean {
  return message.type === "section" || message.type === "sectionEnd";
}

/** Whether `message` carries a field of the section bound (what viewMessageFor may leave out). */
export function carriesSectionBound(message: ViewMessage): boolean {
  return (message.type === "renew" && message.sectionMaxMs !== undefined) ||
    (message.type === "promise" && message.facts.holdSectionMaxMs !== undefined);
}
