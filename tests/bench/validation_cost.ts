/**
 * What checking a peer message against its schema costs (lib/wire/lock_peer.ts): a typical
 * append (one entry) and a full sync chunk (1,000 items of a real copy: sessions, locks and
 * remembered answers), beside what decoding the same message costs (JSON.parse, as the wire is plain
 * JSON since issue 14; JSON.parse of the chunk's payload, which the backup does again when it loads the chunk).
 *
 *   deno run -A tests/bench/validation_cost.ts      bun tests/bench/validation_cost.ts
 *
 * Prints the median of 5 rounds, in µs per message. Loops are bounded by their counts.
 */
import { decodePeerBody, encodePeerBody } from "../../cluster/peer_transport.ts";
import { DEFAULT_SETTINGS } from "../../lib/settings.ts";
import { LockTable } from "../../lib/core/lock/lock_table.ts";
import { LockMachine } from "../../lib/core/lock/lock_machine.ts";
import { CopySource } from "../../lib/core/lock/table_copy.ts";
import { checkPeerAnswer, checkPeerRequest } from "../../lib/wire/lock_peer.ts";
import { microsecondsPerCall } from "./lib/stats.ts";

const settings = DEFAULT_SETTINGS;
const ROUNDS = 5;

/** µs per call of `fn`, the median of ROUNDS rounds of `count` calls (after one warm-up round). */
const microseconds = (count: number, fn: () => void) => microsecondsPerCall(count, fn, ROUNDS);

const append = {
  type: "append",
  from: "p1",
  epoch: 3,
  syncGen: 2,
  entries: [{ index: 1_234, epoch: 3, atMs: 987_654, requestId: "0b7c6a1e-2f4d-4c1b-9a57-3d2e1f0a9b8c", command: { type: "enter", name: "db/orders/42", session: "p1-0badcafe-3-17", secretHash: "5".repeat(64), mode: "exclusive", waitMs: 5_000, lockDelayMs: 0, callId: "5f0e4a2b-8c1d-4e3f-a9b7-6d5c4b3a2918" } }],
};
const appendText = encodePeerBody(append);

// A table of 400 sessions, each holding a lock, each opened with a request id: a first chunk of
// 400 sessions, 400 locks and 200 answers.
/** A session secret's hash as the lock routes make it (the same for every session here). */
const SECRET_HASH = "5".repeat(64);
const table = new LockTable({ limits: settings, sessionIdPrefix: "p1-0badcafe-3-", tokenFloor: 0 });
const machine = new LockMachine(table, settings);
let index = 0;
for (let i = 0; i < 400; i++) {
  const opened = machine.apply({ index: ++index, epoch: 3, atMs: 1_000 + i, requestId: `open-${i}`, command: { type: "openSession", ttlMs: 60_000, secretHash: SECRET_HASH } });
  if (!opened.result.ok || opened.result.type !== "session") throw new Error("open failed");
  machine.apply({ index: ++index, epoch: 3, atMs: 1_000 + i, command: { type: "enter", name: `db/orders/${i}`, session: opened.result.session, secretHash: SECRET_HASH, mode: "exclusive", waitMs: 0, lockDelayMs: 0, callId: `call-${i}` } });
}
const source = new CopySource(machine, { ...settings, syncChunkItemsMax: 1_000 });
const chunk = source.chunk(0)!;
if (chunk.count !== 1_000) throw new Error(`chunk of ${chunk.count} items`);
const chunkMessage = { type: "syncChunk", from: "p1", epoch: 3, syncGen: 2, chunk };
const chunkText = encodePeerBody(chunkMessage);
if (!checkPeerRequest(append, settings).ok || !checkPeerAnswer(chunkMessage, settings).ok) throw new Error("the samples must pass");

const rows = [
  ["append (1 entry): decode (JSON)", microseconds(20_000, () => decodePeerBody(appendText))],
  ["append (1 entry): schema check", microseconds(20_000, () => checkPeerRequest(append, settings))],
  ["sync chunk (1,000 items): decode (JSON)", microseconds(200, () => decodePeerBody(chunkText))],
  ["sync chunk (1,000 items): JSON.parse of the payload (the backup's load does it too)", microseconds(200, () => JSON.parse(chunk.payload))],
  ["sync chunk (1,000 items): schema check (payload parsed and every item checked)", microseconds(200, () => checkPeerAnswer(chunkMessage, settings))],
] as const;
// deno-lint-ignore no-explicit-any
const runtime = (globalThis as any).Deno ? "deno" : "bun";
console.log(`validation cost (${runtime}), median of ${ROUNDS} rounds, µs per message:`);
for (const [what, us] of rows) console.log(`  ${us.toFixed(1).padStart(9)} µs  ${what}`);
source.close();
