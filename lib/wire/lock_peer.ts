/**
 * Schemas of the messages between the two lock servers (`POST /v1/peer`: append with its log
 * entries and their commands, syncRequest, syncNext, and the answers appendAck, syncStart,
 * syncChunk with its items, nack) and between a lock server and the arbiter (`POST /v1/arbiter`
 * and its reply). Each is checked against the core's type at compile time (`sameType`).
 *
 * The bounds: ids as the cluster file allows them, a batch of at most replicationBatchMax
 * entries, lock names of at most lockNameLengthMax characters, safe non-negative integers for
 * epochs, indexes and tokens, finite times, no unknown keys. Values a core judges itself (a
 * ttlMs out of range, a bad lock name's characters) pass here: both servers refuse them the same
 * way when they apply the entry, and the client gets the core's message.
 */
import * as v from "valibot";
import type { ArbiterReply, ArbiterRequest } from "../core/arbiter/arbiter.ts";
import type { PeerMessage } from "../core/lock/replica_io.ts";
import type { LogEntry } from "../core/lock/lock_machine.ts";
import type { Command, LockCopy, Result, SessionCopy } from "../core/lock/lock_table.ts";
import { CALL_ID_LENGTH_MAX } from "../core/lock/lock_table.ts";
import { OWNER_LENGTH_MAX, SECRET_HASH_LENGTH_MAX } from "../core/lock/session_owners.ts";
import { EXPIRE_BATCH_MAX } from "../core/lock/session_leases.ts";
import type { CopyChunk, CopyStart } from "../core/lock/table_copy.ts";
import { REQUEST_ID_LENGTH_MAX } from "../core/lock/answered.ts";
import { ERROR_STATUS } from "./errors.ts";
import type { Settings } from "../settings.ts";
import { quickCheck } from "./quick_check.ts";
import { check, count, type Flat, integer, nodeId, perSettings, REASON_LENGTH_MAX, sameType, type Same, SESSION_ID_LENGTH_MAX, text, time } from "./schema.ts";

/** The settings the lock peer schemas are bounded by. */
export type LockPeerLimits = Pick<Settings, "replicationBatchMax" | "lockNameLengthMax" | "syncChunkBytesMax" | "syncChunkItemsMax">;

const mode = () => v.picklist(["exclusive", "shared"]);
const sessionId = () => text(SESSION_ID_LENGTH_MAX);
const callId = () => v.optional(text(CALL_ID_LENGTH_MAX));
const errorCode = v.picklist(Object.keys(ERROR_STATUS) as Array<keyof typeof ERROR_STATUS>);
/** The hash of the secret an action presents ("" when it presented none: the core refuses it). */
const secretHash = () => v.pipe(v.string(), v.maxLength(SECRET_HASH_LENGTH_MAX));
/** The token name a session belongs to, and the caller's limits that travel with its commands. */
const owner = () => v.optional(text(OWNER_LENGTH_MAX));
const ownerLimit = () => v.optional(count());
const grant = (lockName: v.GenericSchema<string>) => v.strictObject({ name: lockName, session: sessionId(), token: count(), mode: mode() });

/** Every schema of the lock peer protocol, bounded by `limits` (see `lockPeerSchemas`). */
function build(limits: LockPeerLimits) {
  const lockName = text(limits.lockNameLengthMax);
  const command = v.variant("type", [
    v.strictObject({ type: v.literal("openSession"), ttlMs: integer(), secretHash: secretHash(), owner: owner(), ownerSessionsMax: ownerLimit() }),
    v.strictObject({ type: v.literal("keepAlive"), session: sessionId(), secretHash: secretHash() }),
    v.strictObject({ type: v.literal("closeSession"), session: sessionId(), secretHash: secretHash() }),
    v.strictObject({
      type: v.literal("enter"),
      name: lockName,
      session: sessionId(),
      secretHash: secretHash(),
      mode: mode(),
      waitMs: integer(),
      lockDelayMs: integer(),
      callId: callId(),
      ownerWaitersMax: ownerLimit(),
    }),
    v.strictObject({ type: v.literal("leave"), name: lockName, session: sessionId(), secretHash: secretHash(), token: v.optional(integer()) }),
    v.strictObject({ type: v.literal("forceRelease"), name: lockName }),
    v.strictObject({ type: v.literal("tick") }),
    v.strictObject({ type: v.literal("expire"), sessions: v.pipe(v.array(sessionId()), v.maxLength(EXPIRE_BATCH_MAX)) }),
    v.strictObject({ type: v.literal("restartLeases") }),
    v.strictObject({ type: v.literal("holdGrants"), untilMs: time() }),
  ]);
  const entry = v.strictObject({
    index: v.pipe(count(), v.minValue(1)),
    epoch: count(),
    atMs: time(),
    requestId: v.optional(text(REQUEST_ID_LENGTH_MAX)),
    command,
  });
  const copyStart = v.strictObject({
    appliedIndex: count(),
    table: v.strictObject({
      nowMs: time(),
      lastToken: count(),
      sessionSeq: count(),
      sessionIdPrefix: v.pipe(v.string(), v.maxLength(SESSION_ID_LENGTH_MAX)),
      grantsFromMs: v.optional(time()),
    }),
    sessions: count(),
    locks: count(),
    answered: count(),
  });
  // A chunk's JSON, at most syncChunkBytesMax plus one item (the source may exceed it by one).
  const copyChunk = v.strictObject({
    position: count(),
    count: v.pipe(count(), v.minValue(1), v.maxValue(limits.syncChunkItemsMax)),
    payload: v.pipe(v.string(), v.maxLength(4 * limits.syncChunkBytesMax)),
  });
  const from = nodeId();
  const message = {
    append: v.strictObject({
      type: v.literal("append"),
      from,
      epoch: count(),
      syncGen: count(),
      entries: v.pipe(v.array(entry), v.maxLength(limits.replicationBatchMax)),
    }),
    appendAck: v.strictObject({
      type: v.literal("appendAck"),
      from,
      epoch: count(),
      ok: v.boolean(),
      appliedIndex: count(),
      promiseMs: count(),
    }),
    syncRequest: v.strictObject({ type: v.literal("syncRequest"), from, epoch: count(), incarnation: v.optional(text(SESSION_ID_LENGTH_MAX)) }),
    syncStart: v.strictObject({ type: v.literal("syncStart"), from, epoch: count(), syncGen: count(), start: copyStart }),
    syncNext: v.strictObject({ type: v.literal("syncNext"), from, epoch: count(), syncGen: count(), position: count() }),
    syncChunk: v.strictObject({ type: v.literal("syncChunk"), from, epoch: count(), syncGen: count(), chunk: copyChunk }),
    nack: v.strictObject({ type: v.literal("nack"), from, epoch: count(), primary: v.nullable(from), reason: text(REASON_LENGTH_MAX) }),
  };
  const { append, syncRequest, syncNext, appendAck, syncStart, syncChunk, nack } = message;
  const holder = v.strictObject({
    session: sessionId(),
    token: count(),
    mode: mode(),
    sinceMs: time(),
    lockDelayMs: count(),
    callId: callId(),
  });
  const waiter = v.strictObject({
    session: sessionId(),
    mode: mode(),
    queuedAtMs: time(),
    deadlineMs: time(),
    lockDelayMs: count(),
    callId: callId(),
  });
  const result = v.variant("ok", [
    v.variant("type", [
      v.strictObject({ ok: v.literal(true), type: v.literal("session"), session: sessionId(), ttlMs: count(), expiresAtMs: time(), secretHash: v.optional(secretHash()), held: v.optional(v.array(lockName)) }),
      v.strictObject({ ok: v.literal(true), type: v.literal("closed"), session: sessionId(), released: v.array(lockName) }),
      v.strictObject({ ok: v.literal(true), type: v.literal("granted"), grant: grant(lockName) }),
      v.strictObject({ ok: v.literal(true), type: v.literal("waiting"), name: lockName, position: count() }),
      v.strictObject({ ok: v.literal(true), type: v.literal("notGranted"), name: lockName, position: count(), callLeft: v.optional(v.literal(true)) }),
      v.strictObject({ ok: v.literal(true), type: v.literal("left"), name: lockName, wasHolder: v.boolean() }),
      v.strictObject({ ok: v.literal(true), type: v.literal("forceReleased"), name: lockName, tokens: v.array(count()) }),
      v.strictObject({ ok: v.literal(true), type: v.literal("ticked") }),
      v.strictObject({ ok: v.literal(true), type: v.literal("leasesRestarted"), sessions: count() }),
    ]),
    v.strictObject({ ok: v.literal(false), error: v.strictObject({ code: errorCode, message: v.pipe(v.string(), v.maxLength(REASON_LENGTH_MAX)) }) }),
  ]);
  /** The items of a copy: sessions, locks and remembered answers (which one, its position says). */
  const copyItems = {
    session: v.strictObject({
      id: sessionId(),
      ttlMs: count(),
      createdAtMs: time(),
      expiresAtMs: time(),
      leftCalls: v.optional(v.array(text(CALL_ID_LENGTH_MAX))),
      secretHash: v.optional(secretHash()),
      owner: owner(),
    }),
    lock: v.strictObject({ name: lockName, holders: v.array(holder), queue: v.array(waiter), delayUntilMs: time() }),
    answer: v.strictTuple([text(REQUEST_ID_LENGTH_MAX), result]),
  };
  const copyItem = v.union([copyItems.session, copyItems.lock, copyItems.answer]);
  return {
    entry,
    command,
    copyItem,
    copyItems,
    /** What `POST /v1/peer` accepts. */
    request: v.variant("type", [append, syncRequest, syncNext]),
    /** What a sender of a peer request accepts back. */
    answer: v.variant("type", [appendAck, syncStart, syncChunk, nack]),
    message: v.variant("type", [append, appendAck, syncRequest, syncStart, syncNext, syncChunk, nack]),
    result,
  };
}

type Schemas = ReturnType<typeof build>;

// The schemas and the cores' types are the same (a change to either fails type-checking here).
sameType<Same<v.InferOutput<Schemas["message"]>, PeerMessage>>();
sameType<Same<v.InferOutput<Schemas["entry"]>, LogEntry>>();
sameType<Same<v.InferOutput<Schemas["command"]>, Command>>();
sameType<Same<v.InferOutput<Schemas["result"]>, Result>>();
sameType<Same<Extract<PeerMessage, { type: "syncStart" }>["start"], CopyStart>>();
sameType<Same<Extract<PeerMessage, { type: "syncChunk" }>["chunk"], CopyChunk>>();
sameType<Same<v.InferOutput<Schemas["copyItem"]>, Flat<SessionCopy> | LockCopy | [string, Result]>>();

/** The schemas for `limits` (built once per settings object). */
export const lockPeerSchemas = perSettings(build);

type AppendRequest = Extract<PeerMessage, { type: "append" | "syncRequest" | "syncNext" }>;
type PeerAnswer = Extract<PeerMessage, { type: "appendAck" | "syncStart" | "syncChunk" | "nack" }>;

/**
 * `check`, with the schema's quick check first (lib/wire/quick_check.ts): a value it accepts is
 * its own output, with no valibot run (valibot's check of an append was 36% of a backup's samples
 * on the replication stream: docs/bench.md). `value` must be JSON.parse's, owned by the caller.
 */
function checkParsed<S extends v.GenericSchema>(schema: S, value: unknown, what: string): ReturnType<typeof check<S>> {
  if (quickCheck(schema)?.(value)) return { ok: true, value: value as v.InferOutput<S> };
  return check(schema, value, what);
}

/** A peer request (`POST /v1/peer`), or why it is refused. */
export function checkPeerRequest(value: unknown, limits: LockPeerLimits) {
  return checkParsed(lockPeerSchemas(limits).request, value, "peer request") as ReturnType<typeof check<v.GenericSchema<AppendRequest>>>;
}

/**
 * A peer's answer, or why it is refused. A syncChunk's items are checked too, all of them before
 * the backup loads any (a malformed copy changes nothing): a chunk of 1,000 items costs 0.7-0.8
 * ms, its JSON.parse included, against 1-2 µs for an append of one entry
 * (tests/bench/validation_cost.ts; docs/security.md).
 */
export function checkPeerAnswer(value: unknown, limits: LockPeerLimits) {
  const schemas = lockPeerSchemas(limits);
  const checked = checkParsed(schemas.answer, value, "peer answer") as ReturnType<typeof check<v.GenericSchema<PeerAnswer>>>;
  if (!checked.ok || checked.value.type !== "syncChunk") return checked;
  const { chunk } = checked.value;
  let items: unknown;
  try {
    items = JSON.parse(chunk.payload);
  } catch (error) {
    return { ok: false as const, message: `chunk.payload: not JSON: ${(error as Error).message}` };
  }
  if (!Array.isArray(items) || items.length !== chunk.count) return { ok: false as const, message: `chunk.payload: not an array of ${chunk.count} items` };
  for (let i = 0; i < items.length; i++) {
    // Each item against the one schema its shape names (a union would try them in turn: 3x the
    // cost for answers); the backup's load checks the kind against the item's position.
    const raw: unknown = items[i];
    const { session, lock, answer } = schemas.copyItems;
    const schema = Array.isArray(raw) ? answer : typeof raw === "object" && raw !== null && "holders" in raw ? lock : session;
    const item = checkParsed(schema, raw, `chunk item ${chunk.position + i}`);
    if (!item.ok) return { ok: false as const, message: `chunk item ${chunk.position + i}: ${item.message}` };
  }
  return checked;
}

// ---- The arbiter ----

const incarnation = () => v.optional(text(SESSION_ID_LENGTH_MAX));

export const arbiterRequestSchema = v.variant("type", [
  v.strictObject({
    type: v.literal("renew"),
    from: nodeId(),
    epoch: count(),
    backupInSync: v.boolean(),
    seq: count(),
    backupIncarnation: incarnation(),
    ttlMaxMs: v.optional(count()),
    tokenCeiling: v.optional(count()),
  }),
  v.strictObject({ type: v.literal("claim"), from: nodeId(), epoch: count(), hasState: v.boolean(), incarnation: incarnation() }),
  v.strictObject({ type: v.literal("whois"), from: nodeId() }),
]);

export const arbiterReplySchema = v.variant("type", [
  v.strictObject({
    type: v.literal("lease"),
    epoch: count(),
    primary: nodeId(),
    leaseMs: count(),
    fresh: v.boolean(),
    ttlMaxMs: v.optional(v.nullable(count())),
    tokenCeiling: v.optional(v.nullable(count())),
    tablesBefore: v.optional(v.boolean()),
  }),
  v.strictObject({ type: v.literal("refused"), epoch: count(), primary: v.nullable(nodeId()), reason: text(REASON_LENGTH_MAX), becomeBackup: v.boolean() }),
  v.strictObject({ type: v.literal("view"), epoch: count(), primary: v.nullable(nodeId()), backupInSync: v.boolean() }),
]);

sameType<Same<v.InferOutput<typeof arbiterRequestSchema>, ArbiterRequest>>();
sameType<Same<v.InferOutput<typeof arbiterReplySchema>, ArbiterReply>>();
