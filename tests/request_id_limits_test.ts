/**
 * requestId limits (issue 11): an idempotency key longer than REQUEST_ID_LENGTH_MAX is refused
 * with 400 bad_request at the HTTP layer and again in the core (the primary before it logs it,
 * the machine for an entry that carries one anyway), and the answers remembered for retries are
 * bounded in estimated bytes (answeredBytesMax) as well as in count, oldest forgotten first, the
 * same on a backup that applies the same entries or restores the primary's snapshot. An answer's
 * size is its JSON text's length, counted without the text for a leave's answer: exactly
 * JSON.stringify's, on the table's own answers and on names that need every kind of escape.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createLockApp } from "../cluster/lock/api.ts";
import { AnsweredRequests, answerBytes, answerJsonLength, jsonStringLength, REQUEST_ID_LENGTH_MAX } from "../lib/core/lock/answered.ts";
import { Prng } from "../lib/core/prng.ts";
import { LockMachine, type LogEntry } from "../lib/core/lock/lock_machine.ts";
import { LockTable } from "../lib/core/lock/lock_table.ts";
import { soloLockService } from "./_lock_service.ts";
import { DEFAULT_SETTINGS, mergeSettings } from "../lib/settings.ts";
import { SECRET_HASH } from "./_session.ts";

const SETTINGS = { ...DEFAULT_SETTINGS };

function setup() {
  const service = soloLockService(SETTINGS);
  const app = createLockApp(service, { nodeId: "p1", role: "primary", settings: SETTINGS });
  const call = async (method: string, path: string, body?: unknown) => {
    const response = await app.request(path, { method, headers: { "content-type": "application/json" }, body: JSON.stringify(body ?? {}) });
    return { status: response.status, body: await response.json() };
  };
  return { service, call, state: () => JSON.stringify(service.table!.snapshot()) };
}

const LONGEST = "k".repeat(REQUEST_ID_LENGTH_MAX);
const TOO_LONG = "k".repeat(REQUEST_ID_LENGTH_MAX + 1);

test("requestId: longer than REQUEST_ID_LENGTH_MAX is 400 bad_request on every route that takes one, and changes nothing; the longest allowed works", async () => {
  const { call, state, service } = setup();
  const opened = await call("POST", "/v1/sessions", { requestId: LONGEST });
  assert.equal(opened.status, 201, JSON.stringify(opened.body));
  const session = opened.body.session;
  const before = state();
  const lastIndex = service.replica.status().lastIndex;
  for (const [method, path, body] of [
    ["POST", "/v1/sessions", { requestId: TOO_LONG }],
    ["POST", "/v1/leave", { name: "a", session, requestId: TOO_LONG }],
    ["DELETE", `/v1/sessions/${session}`, { requestId: TOO_LONG }],
    ["POST", "/v1/sessions", { requestId: "" }],
  ] as const) {
    const refused = await call(method, path, body);
    assert.equal(refused.status, 400, `${method} ${path}`);
    assert.equal(refused.body.error.code, "bad_request");
    assert.match(refused.body.error.message, new RegExp(`requestId must be a string of 1\\.\\.${REQUEST_ID_LENGTH_MAX} characters`));
  }
  assert.equal(state(), before, "the table is unchanged");
  assert.equal(service.replica.status().lastIndex, lastIndex, "nothing was logged");
});

test("requestId: the core refuses a too-long id too: the primary before it logs it (a driver that skips the HTTP check)", async () => {
  const { service, state } = setup();
  const before = state();
  const lastIndex = service.replica.status().lastIndex;
  const answer = await service.submit({ type: "openSession", secretHash: SECRET_HASH, ttlMs: SETTINGS.sessionTtlMs }, TOO_LONG);
  assert.equal(answer.ok, false);
  assert.equal(!answer.ok && answer.code, "bad_request");
  assert.equal(state(), before);
  assert.equal(service.replica.status().lastIndex, lastIndex, "not logged, so never replicated nor remembered");
  // Not vacuous: the same command with an id of the longest length is applied.
  assert.equal((await service.submit({ type: "openSession", secretHash: SECRET_HASH, ttlMs: SETTINGS.sessionTtlMs }, LONGEST)).ok, true);
});

function machine(limits: { answeredMax: number; answeredBytesMax: number }): LockMachine {
  return new LockMachine(new LockTable({ limits: SETTINGS, sessionIdPrefix: "s-", tokenFloor: 0 }), limits);
}

/** openSession entries with ids `id-<i>` padded to `idLength` characters. */
function opens(count: number, idLength: number): LogEntry[] {
  return Array.from({ length: count }, (_, i) => ({
    index: i + 1,
    epoch: 1,
    atMs: 1_000 + i,
    requestId: `id-${i}-`.padEnd(idLength, "x"),
    command: { type: "openSession", secretHash: SECRET_HASH, ttlMs: SETTINGS.sessionTtlMs },
  }));
}

test("requestId: an entry that carries a too-long id (from the wire) is refused by the machine, the same on both servers, and not remembered", () => {
  const entry: LogEntry = { index: 1, epoch: 1, atMs: 1_000, requestId: TOO_LONG, command: { type: "openSession", secretHash: SECRET_HASH, ttlMs: SETTINGS.sessionTtlMs } };
  const m = machine(SETTINGS);
  const output = m.apply(entry);
  assert.deepEqual(output.result, { ok: false, error: { code: "bad_request", message: `requestId must be a string of 1..${REQUEST_ID_LENGTH_MAX} characters` } });
  assert.equal(m.appliedIndex, 1, "the entry's index is used up (the log has no gaps)");
  assert.equal(m.table.sessions.size, 0, "no session opened");
  assert.equal(m.answerFor(TOO_LONG), undefined);
  assert.deepEqual(m.snapshot().answered, []);
});

test("answered ids: bounded in bytes, oldest forgotten first; a backup applying the same entries, or restoring the snapshot, keeps exactly the same", () => {
  const entries = opens(200, REQUEST_ID_LENGTH_MAX);
  const first = machine(SETTINGS);
  first.apply(entries[0]);
  const oneAnswerBytes = answerBytes(entries[0].requestId!, first.answerFor(entries[0].requestId!)!);
  // Room for about 20 answers, while the count bound (200) would keep them all.
  const limits = { answeredMax: 200, answeredBytesMax: 20 * oneAnswerBytes + oneAnswerBytes / 2 };
  const primary = machine(limits);
  const backup = machine(limits);
  for (const entry of entries) {
    primary.apply(entry);
    backup.apply(entry);
  }
  const answered = primary.snapshot().answered;
  const bytes = answered.reduce((sum, [id, answer]) => sum + answerBytes(id, answer), 0);
  assert.ok(bytes <= limits.answeredBytesMax, `${bytes} bytes kept, bound ${limits.answeredBytesMax}`);
  assert.equal(answered.length, 20, "as many as fit");
  assert.deepEqual(answered.map(([id]) => id), entries.slice(-20).map((e) => e.requestId), "the newest kept, the oldest forgotten");
  assert.equal(primary.answerFor(entries[0].requestId!), undefined);
  assert.deepEqual(backup.snapshot().answered, answered, "the backup remembers exactly the same answers");

  // A retry of a remembered id is answered as the first time; a forgotten one is applied anew.
  const last = entries[entries.length - 1];
  const retried = primary.apply({ ...last, index: entries.length + 1 });
  assert.deepEqual(retried.result, primary.answerFor(last.requestId!));

  // A backup restoring a snapshot of a primary with larger bounds holds its own bounds.
  const roomy = machine({ answeredMax: 10_000, answeredBytesMax: 1_000_000 });
  for (const entry of entries) roomy.apply(entry);
  assert.equal(roomy.snapshot().answered.length, 200);
  const restored = LockMachine.fromSnapshot(roomy.snapshot(), SETTINGS, limits);
  assert.deepEqual(restored.snapshot().answered, answered, "restored under the same limits: the same answers as the primary keeps");
});

test("answered ids: the count bound still holds, and answeredBytesMax is a validated setting", () => {
  const m = machine({ answeredMax: 5, answeredBytesMax: 1_000_000 });
  for (const entry of opens(12, 36)) m.apply(entry);
  assert.deepEqual(m.snapshot().answered.map(([id]) => id), opens(12, 36).slice(-5).map((e) => e.requestId));
  assert.deepEqual(mergeSettings({ answeredBytesMax: 1_000 }).problems.map((p) => p.key), ["answeredBytesMax"]);
  assert.deepEqual(mergeSettings({ answeredBytesMax: 65_536 }).problems, []);
});

test("answered ids: an answer larger than answeredBytesMax by itself is not remembered, and the others stay (a review found it evicting every one first)", () => {
  const answered = new AnsweredRequests({ answeredMax: 100, answeredBytesMax: 10_000 });
  for (let i = 0; i < 20; i++) answered.remember(`small-${i}`, { ok: true, type: "ticked" });
  const bytesBefore = answered.bytes;
  // A closed session that released many locks: its answer alone is above the byte bound.
  const released = Array.from({ length: 500 }, (_, i) => `lock/${i}`.padEnd(40, "x"));
  const huge = { ok: true as const, type: "closed" as const, session: "s-1", released };
  assert.ok(answerBytes("huge", huge) > 10_000, "the test's answer is above the bound");
  answered.remember("huge", huge);
  assert.equal(answered.get("huge"), undefined, "not remembered");
  assert.equal(answered.size, 20, "every other answer stays");
  assert.equal(answered.bytes, bytesBefore);
  assert.deepEqual(answered.get("small-0"), { ok: true, type: "ticked" });
  // An earlier answer under the same id is not kept either: the id now names the larger one.
  answered.remember("small-3", huge);
  assert.equal(answered.get("small-3"), undefined);
  assert.equal(answered.size, 19);
});

test("answered ids: eviction keeps the order of a Map's insertion (the model it replaced), with re-remembered ids, large answers, both bounds and lookups in between, and its queue stays bounded", () => {
  const limits = { answeredMax: 50, answeredBytesMax: 3_000 };
  const answered = new AnsweredRequests(limits);
  // The model: a Map, oldest evicted through keys().next() (what AnsweredRequests did before).
  const model = new Map<string, number>();
  let modelBytes = 0;
  const rememberInModel = (id: string, answer: Parameters<typeof answerBytes>[1]) => {
    const old = model.get(id);
    if (old !== undefined) (model.delete(id), (modelBytes -= old));
    const bytes = answerBytes(id, answer);
    if (bytes > limits.answeredBytesMax) return;
    model.set(id, bytes);
    modelBytes += bytes;
    while (model.size > limits.answeredMax || modelBytes > limits.answeredBytesMax) {
      const oldest = model.keys().next().value!;
      modelBytes -= model.get(oldest)!;
      model.delete(oldest);
    }
  };
  // A fixed pseudo-random walk (deterministic: a linear congruential sequence, seed 1).
  let x = 1;
  const next = (n: number) => (x = (x * 48_271) % 2_147_483_647) % n;
  for (let step = 0; step < 20_000; step++) {
    // Lookups between the remembers, some repeated, as a primary asks (replica, then machine): a
    // missed id is known absent until the next remember, whichever id that remembers.
    const asked = `id-${next(120)}`;
    for (let ask = next(3); ask > 0; ask--) assert.equal(answered.get(asked) !== undefined, model.has(asked), `step ${step}: get ${asked}`);
    // ids repeat: re-remembered ones move to the newest place
    const id = next(2) === 0 ? asked : `id-${next(120)}`;
    const size = next(10) === 0 ? 400 : next(10) === 0 ? 4_000 : 1; // some large, some over the bound alone
    const answer = { ok: true as const, type: "closed" as const, session: "s", released: Array.from({ length: size > 1 ? 1 : 0 }, () => "x".repeat(size)) };
    answered.remember(id, answer);
    rememberInModel(id, answer);
  }
  assert.deepEqual(answered.entries().map(([id]) => id), [...model.keys()]);
  assert.equal(answered.bytes, modelBytes);
  const queueLength = (answered as unknown as { order: unknown[] }).order.length;
  assert.ok(queueLength <= 2 * answered.size + 16, `the eviction queue holds ${queueLength} places for ${answered.size} answers`);
});

test("answered ids: with the memory full, a remember costs one lookup, one set and one delete of the Map (its eviction asks the Map nothing), and forgets the oldest", () => {
  const answered = new AnsweredRequests({ answeredMax: 100, answeredBytesMax: 1_000_000 });
  const left = (i: number) => ({ ok: true as const, type: "left" as const, name: `w1-${i}`, wasHolder: true });
  for (let i = 0; i < 100; i++) answered.remember(`id-${i}`, left(i));
  // Counts the calls on this instance's own Map (the class's private field, read as the test's).
  const map = (answered as unknown as { answers: Map<string, unknown> }).answers;
  const calls: string[] = [];
  for (const method of ["get", "set", "delete", "has"] as const) {
    const original = map[method].bind(map) as (...args: unknown[]) => unknown;
    (map as unknown as Record<string, unknown>)[method] = (...args: unknown[]) => (calls.push(method), original(...args));
  }
  for (let i = 100; i < 400; i++) {
    calls.length = 0;
    answered.remember(`id-${i}`, left(i));
    // Across a compaction of the eviction queue too (every 100-odd remembers here): no Map call.
    assert.deepEqual(calls, ["get", "set", "delete"], `remember ${i}`);
    assert.equal(answered.size, 100);
  }
  // A primary's leave: its id asked by the replica, then by the machine, then remembered. The
  // Map is asked once: the id missed is known absent until the next remember.
  for (let i = 400; i < 700; i++) {
    calls.length = 0;
    assert.equal(answered.get(`id-${i}`), undefined);
    assert.equal(answered.get(`id-${i}`), undefined);
    answered.remember(`id-${i}`, left(i));
    assert.deepEqual(calls, ["get", "set", "delete"], `asked twice, then remembered ${i}`);
    // Once remembered, it is found (the next remember cleared what the miss knew).
    assert.deepEqual(answered.get(`id-${i}`), left(i));
  }
  (map as unknown as Record<string, unknown>).get = Map.prototype.get;
  assert.equal(answered.get("id-599"), undefined, "the oldest forgotten");
  assert.deepEqual(answered.get("id-600"), left(600));
  assert.deepEqual(answered.entries().map(([id]) => id), Array.from({ length: 100 }, (_, i) => `id-${600 + i}`));
});

test("answered ids: a lookup that missed knows nothing after a remember of another id; a restored memory asks its Map", () => {
  const answered = new AnsweredRequests({ answeredMax: 10, answeredBytesMax: 1_000_000 });
  const left = (name: string) => ({ ok: true as const, type: "left" as const, name, wasHolder: true });
  assert.equal(answered.get("a"), undefined);
  answered.remember("b", left("b"));
  answered.remember("a", left("a"));
  assert.deepEqual(answered.entries().map(([id]) => id), ["b", "a"]);
  assert.deepEqual(answered.get("a"), left("a"));
  // Re-remembered after a miss of another id: the old place is forgotten, not kept twice.
  assert.equal(answered.get("c"), undefined);
  answered.remember("b", left("b2"));
  assert.deepEqual(answered.entries(), [["a", left("a")], ["b", left("b2")]]);
  assert.equal(answered.size, 2);
  const restored = AnsweredRequests.from(answered.entries(), { answeredMax: 10, answeredBytesMax: 1_000_000 });
  assert.deepEqual(restored.get("b"), left("b2"));
});

test("answer sizes: a leave's answer counted without its text is JSON.stringify's length exactly, on the table's own leave answers and on names with every kind of escape; other answers are stringified", () => {
  const m = machine(SETTINGS);
  let index = 0;
  const apply = (command: LogEntry["command"], requestId?: string) => m.apply({ index: ++index, epoch: 1, atMs: 1_000 + index, ...(requestId ? { requestId } : {}), command });
  const open = () => {
    const opened = apply({ type: "openSession", secretHash: SECRET_HASH, ttlMs: SETTINGS.sessionTtlMs }).result;
    assert.ok(opened.ok && opened.type === "session");
    return opened.session;
  };
  const [holder, waiter] = [open(), open()];
  const enter = (name: string, session: string) => apply({ type: "enter", name, session, secretHash: SECRET_HASH, mode: "exclusive", waitMs: 10_000, lockDelayMs: 0 }).result;
  const leaves: Array<Parameters<typeof answerJsonLength>[0]> = [];
  for (const [i, name] of ["a", "w1-0", "a.b:c/d_e", "n".repeat(SETTINGS.lockNameLengthMax)].entries()) {
    const granted = enter(name, holder);
    assert.ok(granted.ok && granted.type === "granted", JSON.stringify(granted));
    assert.ok(enter(name, waiter).ok);
    // The waiter withdraws (wasHolder false), the holder leaves (true).
    leaves.push(apply({ type: "leave", name, session: waiter, secretHash: SECRET_HASH }, `waiter-${i}`).result);
    leaves.push(apply({ type: "leave", name, session: holder, secretHash: SECRET_HASH, token: granted.grant.token }, `holder-${i}`).result);
  }
  assert.deepEqual(leaves.map((l) => l.ok && l.type === "left" && l.wasHolder), [false, true, false, true, false, true, false, true], JSON.stringify(leaves));
  for (const leave of leaves) {
    assert.equal(answerJsonLength(leave), JSON.stringify(leave).length, JSON.stringify(leave));
  }
  assert.equal(m.snapshot().answered.length, leaves.length, "each remembered under its id");
  // Names with escapes (the count is the text's whatever a name holds): quotes, backslashes,
  // control characters, surrogate pairs, lone surrogates at either end, and seeded random units.
  const names = ['q"uote', "back\\slash", "\b\t\n\f\r\u0000\u001f\u007f", "pair \ud83d\ude00", "lone \ud83d", "\ude00 lone", "\ud83d\ud83d\ude00", "é ü ∑", ""];
  const random = new Prng(15);
  const special = [0x00, 0x08, 0x1f, 0x20, 0x22, 0x5c, 0x7f, 0xd7ff, 0xd800, 0xdbff, 0xdc00, 0xdfff, 0xe000, 0xffff];
  for (let i = 0; i < 2_000; i++) {
    const units = Array.from({ length: random.below(12) }, () => random.below(2) === 0 ? special[random.below(special.length)] : random.below(0x10000));
    names.push(String.fromCharCode(...units));
  }
  for (const name of names) {
    for (const wasHolder of [true, false]) {
      const leave = { ok: true as const, type: "left" as const, name, wasHolder };
      assert.equal(answerJsonLength(leave), JSON.stringify(leave).length, JSON.stringify(leave));
    }
    assert.equal(jsonStringLength(name), JSON.stringify(name).length, JSON.stringify(name));
  }
  // Any other answer: its text's length, as before.
  const closed = { ok: true as const, type: "closed" as const, session: "s-1", released: ["a", 'b"'] };
  assert.equal(answerJsonLength(closed), JSON.stringify(closed).length);
  assert.equal(answerBytes("id", closed), "id".length + JSON.stringify(closed).length + 64);
});

test("answer sizes: a restored answer is counted by its text, so a leave answer with a field this build does not know (a newer member's) is not undercounted", () => {
  const limits = { answeredMax: 10, answeredBytesMax: 1_000_000 };
  const known = { ok: true as const, type: "left" as const, name: "a", wasHolder: true };
  const newer = { ...known, extra: "x".repeat(100) } as unknown as typeof known;
  const restored = AnsweredRequests.from([["r1", known], ["r2", newer]], limits);
  // Each entry: its id, its text, the overhead; the newer one's extra field counts.
  assert.equal(restored.bytes, answerBytes("r1", known) + "r2".length + JSON.stringify(newer).length + (answerBytes("r1", known) - "r1".length - JSON.stringify(known).length));
  assert.ok(restored.bytes > 2 * answerBytes("r1", known) + 100);
});
