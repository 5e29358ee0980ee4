/**
 * Fuzzing the peer routes (fast-check), without a MAC: replication (`POST /v1/peer`), the arbiter
 * (`POST /v1/arbiter`) and the ring's neighbour routes (`/v1/ring/peer/*`), through the Hono apps
 * (`app.request`) and through `answerPeer` / `answerArbiter` themselves. The messages start from
 * real ones (what an in-process primary, backup and arbiter sent each other; a ring token and
 * write batch as a neighbour sends them) and are mutated: fields dropped, added or given hostile
 * values, entries mutated, the epoch moved below, at or above the receiver's, the sender renamed;
 * or replaced by bytes that are no message. The properties: never a 5xx and never a thrown
 * error; a refused message changes nothing; an accepted message that is stale (an epoch older
 * than the receiver's) or from a sender that is not the receiver's peer changes nothing either.
 *
 * `PEER_SEND` is the hook for peer authentication: every peer request of these fuzzers goes
 * through it, with the id of the member it claims to come from and the one it goes to. Here it
 * sends the request as it is (the routes are fuzzed as today's code serves them). With the peer
 * MACs of issue 12 merged, a PeerSigner (cluster/peer_auth.ts) over the app's `request` as its
 * fetch signs it (and answers the receiver's challenge), and the same properties run with a
 * valid MAC; left plain against an app that verifies, every request must be refused 401 and
 * change nothing.
 */
import { afterEach, test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import superjson from "superjson";
import { answerArbiter, createArbiterApp } from "../cluster/arbiter/server.ts";
import { answerPeer } from "../cluster/lock/api.ts";
import { memoryLogger } from "../cluster/log.ts";
import { readIfExists } from "../cluster/durable_file.ts";
import { RequestError } from "../cluster/http_util.ts";
import { apiError, ERROR_STATUS } from "../lib/wire/errors.ts";
import { checkAnswer, type FuzzAnswer, type FuzzApp, type FuzzRequest, lockPair, type Recorded, send } from "./_fuzz_apps.ts";
import { ringNode, sendOrPending, withSection } from "./_ring_app.ts";
import { FUZZ_TEST_TIMEOUT_MS, fuzz, hostileValue, mutatedObject, nonObjectText, superjsonText } from "./_fuzz.ts";
import { removeDir, tempDir } from "./_harness.ts";
import { viewOf } from "./_ring_node.ts";
import { EPOCH_MAX } from "../lib/core/ring/view_wire.ts";

/** How a peer request from `from` reaches `to`'s app (the MAC hook; see the header comment). */
type PeerSend = (app: FuzzApp, from: string, to: string, request: FuzzRequest) => Promise<FuzzAnswer>;
const PEER_SEND: PeerSend = (app, _from, _to, request) => send(app, request);

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) removeDir(dir);
});

/**
 * Finding 2 (the todo test below): an append entry that is no object (null, a number) throws a
 * TypeError in the backup's core, a 500. While it is open, entries are replaced by mutated
 * objects only, and a message whose entries (replaced whole) hold any other value is not sent;
 * the validation part of issue 12 checks each entry against a schema, and then this is false.
 */
const FINDING_2_OPEN = true;

/** Whether `message` has entries that are not all objects (finding 2's input). */
const hasNonObjectEntry = (message: Record<string, unknown>) =>
  Array.isArray(message.entries) && message.entries.some((e) => typeof e !== "object" || e === null || Array.isArray(e));

/** A message changed as a forger would: a new epoch, another sender, mutated fields and entries. */
function mutatedMessage(original: Record<string, unknown>, epoch: number, senders: string[]): fc.Arbitrary<Record<string, unknown>> {
  const entries = Array.isArray(original.entries) ? original.entries as Record<string, unknown>[] : [];
  return fc.record({
    epoch: fc.option(fc.constantFrom(epoch - 1, epoch, epoch + 1, 0, Number.MAX_SAFE_INTEGER), { freq: 2 }),
    from: fc.option(fc.constantFrom(...senders, "intruder", ""), { freq: 3 }),
    top: mutatedObject(original),
    entry: entries.length > 0 ? fc.option(fc.tuple(fc.nat(entries.length - 1), fc.nat()), { freq: 2 }) : fc.constant(null),
    entryValue: hostileValue,
  }).chain(({ epoch, from, top, entry, entryValue }) => {
    const message = { ...top };
    if (epoch !== null) message.epoch = epoch;
    if (from !== null) message.from = from;
    if (entry === null || !Array.isArray(message.entries)) return fc.constant(message);
    const [index] = entry;
    const target = entries[index];
    const replacement = FINDING_2_OPEN ? mutatedObject(target) : fc.oneof(mutatedObject(target), fc.constant(entryValue));
    return replacement.map((changed) => {
      const copy = [...(message.entries as unknown[])];
      if (index < copy.length) copy[index] = changed;
      return { ...message, entries: copy };
    });
  }).filter((message) => !FINDING_2_OPEN || !hasNonObjectEntry(message));
}

/** The message as the wire carries it (superjson), or raw bytes that are no message. */
function wireBody(messages: fc.Arbitrary<Record<string, unknown>>): fc.Arbitrary<{ message?: Record<string, unknown>; body: string | Uint8Array }> {
  return fc.oneof(
    { weight: 8, arbitrary: messages.map((message) => ({ message, body: superjsonText(message) })) },
    { weight: 1, arbitrary: nonObjectText.map((body) => ({ body })) },
    { weight: 1, arbitrary: messages.map((message) => ({ message, body: JSON.stringify(message) ?? "null" })) },
  );
}

/**
 * Whether a message must change nothing: it was refused, it is from no peer of the receiver, or
 * it is stale (an epoch below the receiver's) and of a type whose epoch is the sender's claim to
 * authority (`staleTypes`). A backup's syncRequest and syncNext are not: a restarted backup knows
 * no epoch yet (it asks with 0), and the primary serves it a copy by design.
 */
function mustNotChange(answer: FuzzAnswer, message: Record<string, unknown> | undefined, receiverEpoch: number, peers: string[], staleTypes: string[], what: string): boolean {
  if (checkAnswer(answer, what)) return true;
  if (!message) return true;
  if (typeof message.from !== "string" || !peers.includes(message.from)) return true;
  return staleTypes.includes(message.type as string) && typeof message.epoch === "number" && message.epoch < receiverEpoch;
}

/**
 * What `answerPeer` and `answerArbiter` throw for a message they refuse must be a RequestError
 * of a client code (the app answers it 400 or 413); anything else is a bug. As the app's answer.
 */
function refusalOf(error: Error, what: string): FuzzAnswer {
  assert.ok(error instanceof RequestError && (error.code === "bad_request" || error.code === "body_too_large"), `${what}: threw ${error.stack}`);
  return { status: ERROR_STATUS[error.code], text: JSON.stringify(apiError(error.code, error.message)) };
}

// ---- Replication between the lock servers ----------------------------------------------------

test("fuzz peer: replication messages to the backup and the primary (Hono app and answerPeer) never fail the node and stale or refused ones change nothing", { timeout: FUZZ_TEST_TIMEOUT_MS }, async () => {
  let pair = await lockPair();
  const epoch = pair.b.replica.status().epoch;
  // The copy fits one chunk, so b1 never pulled a next one: a syncNext as b1 would send it.
  const syncNext: Recorded = { from: "b1", to: "p1", message: { type: "syncNext", from: "b1", epoch, syncGen: 1, position: 1 } };
  const originals = [...pair.recorded.filter((r) => r.to !== "a1"), syncNext];
  const types = new Set(originals.map((r) => r.message.type));
  assert.ok(["append", "syncRequest"].every((t) => types.has(t)), `recorded ${[...types]}`);
  const withEntries = originals.filter((r) => r.message.type === "append" && (r.message.entries as unknown[]).length > 0);
  assert.ok(withEntries.length > 0, "appends with entries were recorded");
  const cases = fc.record({
    original: fc.constantFrom(...originals, ...withEntries),
    to: fc.constantFrom("b1" as const, "p1" as const),
    via: fc.constantFrom("app" as const, "answerPeer" as const),
  }).chain(({ original, to, via }) => wireBody(mutatedMessage(original.message, epoch, ["p1", "b1", "a1"])).map((wire) => ({ original, to, via, ...wire })));
  let [unchanged, changed, resets] = [0, 0, 0];
  await fuzz("peer lock replication", cases, async ({ to, via, message, body }) => {
    const receiver = to === "b1" ? pair.b : pair.p;
    const receiverEpoch = receiver.replica.status().epoch;
    const before = pair.state();
    const request: FuzzRequest = { method: "POST", path: "/v1/peer", body, contentType: "application/x-superjson" };
    const what = `${via} to ${to}: ${typeof body === "string" ? body.slice(0, 300) : `${body.length} bytes`}`;
    let answer: FuzzAnswer;
    if (via === "app") {
      answer = await PEER_SEND(to === "b1" ? pair.bApp : pair.pApp, to === "b1" ? "p1" : "b1", to, request);
    } else {
      answer = await new Promise<FuzzAnswer>((done) => {
        try {
          answerPeer(receiver, pair.settings, typeof body === "string" ? body : new TextDecoder().decode(body), (text) => done({ status: 200, text }));
        } catch (error) {
          done(refusalOf(error as Error, what));
        }
      });
    }
    const peer = to === "b1" ? "p1" : "b1";
    if (mustNotChange(answer, message, receiverEpoch, [peer], ["append"], what)) {
      unchanged += 1;
      assert.equal(pair.state(), before, `${what} -> ${answer.status} ${answer.text.slice(0, 200)} changed the state`);
    } else if (pair.state() !== before) {
      // A current message from the peer may change the pair (a MAC decides whether it is genuine):
      // the next cases start from a fresh pair, so their epochs and copies are known.
      changed += 1;
      pair.stop();
      pair = await lockPair();
      resets += 1;
    }
  }, 400);
  pair.stop();
  console.log(`fuzz peer lock replication: ${unchanged} must-not-change cases, ${changed} accepted that changed the pair (${resets} resets)`);
  assert.ok(unchanged > 0, "refused and stale messages were exercised");
});

test("fuzz finding 2: an append whose entry is not an object is refused with 400 and changes nothing", { todo: "isPeerRequest (cluster/lock/api.ts) checks that entries is an array, not what is in it; the valibot schemas of issue 12's validation part check each entry" }, async () => {
  // On 2c9c5fa: the backup's core reads .index of null, a TypeError; the app answers 500
  // internal. Shrunk from the fuzzer (seeds 1 and 4 with FUZZ_RUNS=3000; seed 42 found the second).
  const pair = await lockPair();
  try {
    // The next entry the backup would apply, then null: on 2c9c5fa the first is applied (the
    // backup's index and clock move) before the TypeError, the issue's half-applied state.
    const appends = pair.recorded.filter((r) => r.to === "b1" && r.message.type === "append" && (r.message.entries as unknown[]).length > 0);
    const last = appends.at(-1)!.message;
    const next = { ...(last.entries as Record<string, unknown>[])[0], index: pair.b.replica.status().lastIndex + 1 };
    for (const entries of [[null], [next, null]]) {
      const before = pair.state();
      const body = superjson.stringify({ ...last, entries });
      const answer = await send(pair.bApp, { method: "POST", path: "/v1/peer", body, contentType: "application/x-superjson" });
      assert.equal(answer.status, 400, answer.text);
      assert.equal(pair.state(), before);
    }
  } finally {
    pair.stop();
  }
});

// ---- The arbiter ----------------------------------------------------------------------------

test("fuzz peer: arbiter requests (Hono app and answerArbiter) never fail the arbiter and stale, foreign or refused ones change nothing", { timeout: FUZZ_TEST_TIMEOUT_MS }, async () => {
  let pair = await lockPair();
  const originals = pair.recorded.filter((r) => r.to === "a1");
  const whois: Recorded = { from: "b1", to: "a1", message: { type: "whois", from: "b1" } };
  const types = new Set(originals.map((r) => r.message.type));
  assert.ok(["claim", "renew"].every((t) => types.has(t)), `recorded ${[...types]}`);
  const dir = tempDir("mutexd-fuzz-arbiter-");
  dirs.push(dir);
  const statePath = `${dir}/arbiter.json`;
  const appOf = (p: typeof pair) => createArbiterApp(p.core, { nodeId: "a1", statePath, log: memoryLogger(), nowMs: () => p.clock.nowMs(), failStop: p.ports.failStop });
  let app = appOf(pair);
  const epoch = pair.core.current.epoch;
  const cases = fc.record({ original: fc.constantFrom(...originals, whois), via: fc.constantFrom("app" as const, "answerArbiter" as const) })
    .chain(({ original, via }) => wireBody(mutatedMessage(original.message, epoch, ["p1", "b1", "a1"])).map((wire) => ({ via, ...wire })));
  let [unchanged, changed] = [0, 0];
  await fuzz("peer arbiter", cases, async ({ via, message, body }) => {
    const arbiterEpoch = pair.core.current.epoch;
    const state = () => pair.state() + (readIfExists(statePath) ?? "");
    const before = state();
    const request: FuzzRequest = { method: "POST", path: "/v1/arbiter", body, contentType: "application/x-superjson" };
    const what = `${via}: ${typeof body === "string" ? body.slice(0, 300) : `${body.length} bytes`}`;
    let answer: FuzzAnswer;
    if (via === "app") {
      answer = await PEER_SEND(app, typeof message?.from === "string" ? message.from : "p1", "a1", request);
    } else {
      try {
        answer = { status: 200, text: answerArbiter(pair.core, typeof body === "string" ? body : new TextDecoder().decode(body), pair.ports, pair.settings.bodyBytesMax).body };
      } catch (error) {
        answer = refusalOf(error as Error, what);
      }
    }
    // whois only asks; a renewal carries the primary's epoch as its claim. A claim does not: a
    // restarted server claims with epoch 0, and the arbiter records what it says of its copy.
    const query = message?.type === "whois" && !checkAnswer(answer, what);
    if (query || mustNotChange(answer, message, arbiterEpoch, ["p1", "b1"], ["renew"], what)) {
      unchanged += 1;
      assert.equal(state(), before, `${what} -> ${answer.status} ${answer.text.slice(0, 200)} changed the arbiter`);
    } else if (state() !== before) {
      changed += 1;
      pair.stop();
      pair = await lockPair();
      app = appOf(pair);
    }
  }, 400);
  pair.stop();
  console.log(`fuzz peer arbiter: ${unchanged} must-not-change cases, ${changed} accepted that changed the arbiter`);
  assert.ok(unchanged > 0, "refused and stale requests were exercised");
});

// ---- The ring's neighbour routes ------------------------------------------------------------

test("fuzz peer: ring neighbour routes (token, writes, view, wake) never fail the node and stale, foreign or refused messages change nothing", { timeout: FUZZ_TEST_TIMEOUT_MS }, async () => {
  const probe = ringNode(dirs);
  const fence = await withSection(probe);
  const epoch = probe.node.status(probe.clock.nowMs()).epoch;
  probe.close();
  const put = { epoch, wseq: 1, author: "b", origin: "b", op: { type: "put", key: "k", value: "v" } };
  // Real shapes: the token as a passes it on, b's own write back around the ring, view messages.
  // The token goes to a node that does not hold it: to one that holds it, a second token of the
  // epoch from its predecessor is a broken invariant, which the core asserts (finding 4).
  const templates: Array<{ path: string; message: Record<string, unknown>; nested?: string; idle?: true }> = [
    { path: "/v1/ring/peer/token", message: { from: "a", token: { epoch, hop: 4, wseq: 0, commit: 0, fence, idleHops: 0 } }, nested: "token", idle: true },
    { path: "/v1/ring/peer/writes", message: { from: "a", epoch, entries: [put, { ...put, wseq: 2, op: { type: "delete", key: "k" } }] } },
    { path: "/v1/ring/peer/wake", message: { from: "a" } },
    { path: "/v1/ring/peer/view", message: { type: "prepare", from: "c", ballot: { epoch: epoch + 1, coordinator: "c" }, voters: ["a", "b", "c"] }, nested: "ballot" },
    { path: "/v1/ring/peer/view", message: { type: "newView", from: "a", view: viewOf(epoch + 1) }, nested: "view" },
    { path: "/v1/ring/peer/view", message: { type: "renew", from: "a", epoch, seq: 1, voters: ["a", "b", "c"] } },
    { path: "/v1/ring/peer/view", message: { type: "probe", from: "c", epoch } },
  ];
  const cases = fc.record({ template: fc.constantFrom(...templates), nestedChange: fc.boolean() }).chain(({ template, nestedChange }) => {
    const nested = template.nested;
    const messages = mutatedMessage(template.message, epoch, ["a", "b", "c"]).chain((message) =>
      nested && nestedChange && typeof template.message[nested] === "object"
        ? mutatedObject(template.message[nested] as Record<string, unknown>).map((inner) => ({ ...message, [nested]: inner }))
        : fc.constant(message)
    );
    const bodies = fc.oneof(
      { weight: 8, arbitrary: messages.map((message) => ({ message, body: JSON.stringify(message) as string | Uint8Array })) },
      { weight: 1, arbitrary: nonObjectText.map((body) => ({ message: undefined, body })) },
    );
    return bodies.map((wire) => ({ path: template.path, idle: template.idle === true, ...wire }));
  });
  let [unchanged, accepted] = [0, 0];
  await fuzz("peer ring routes", cases, async ({ path, idle, message, body }) => {
    const node = ringNode(dirs);
    try {
      if (!idle) assert.equal(await withSection(node), fence);
      const before = node.stateWithSends();
      const request: FuzzRequest = { method: "POST", path, body, contentType: "application/json" };
      const what = `${path}: ${typeof body === "string" ? body.slice(0, 300) : `${body.length} bytes`}`;
      const answer = await sendOrPending(node, request, before, (app, r) => PEER_SEND(app, "a", "b", r));
      if (answer === "pending") return void (accepted += 1);
      // The token and writes carry the sender's epoch as their claim; only a as b's predecessor may
      // send them. A view message may come from any member, itself included (the view core checks
      // its ballot; a renewal of a newer epoch rightly sends b to rejoin): only a MAC tells a
      // forged member from a genuine one.
      const token = path.endsWith("/token") ? (message?.token as Record<string, unknown> | undefined) : undefined;
      const claimed = token && typeof token === "object" ? { ...message, epoch: token.epoch } : message;
      const isView = path.endsWith("/view");
      const peers = isView ? ["a", "b", "c"] : ["a"];
      if (mustNotChange(answer, claimed, epoch, peers, isView ? [] : [claimed?.type as string], what)) {
        unchanged += 1;
        assert.equal(node.stateWithSends(), before, `${what} -> ${answer.status} ${answer.text.slice(0, 200)} changed the node`);
      } else {
        accepted += 1;
      }
    } finally {
      node.close();
    }
  }, 300);
  console.log(`fuzz peer ring routes: ${unchanged} must-not-change cases, ${accepted} accepted`);
  assert.ok(unchanged > 0 && accepted > 0, "both were exercised");
});

test("fuzz finding 4: a second token of the epoch, from the predecessor's id, to the node that holds the token is refused and changes nothing", { todo: "without peer authentication the receiver cannot tell a forged token from a genuine one; its core asserts the invariant (one token per epoch), a 500 today and a process exit once assertions fail-stop. Needs the peer MACs of issue 12: a request without a valid MAC is 401 before the core sees it" }, async () => {
  // On 2c9c5fa: 500 internal, "second token in epoch 1: hop 4 while holding". Shrunk from the
  // fuzzer: the valid token template itself, sent to a node that holds the token.
  const node = ringNode(dirs);
  try {
    const fence = await withSection(node);
    const before = node.stateWithSends();
    const token = { epoch: 1, hop: 4, wseq: 0, commit: 0, fence, idleHops: 0 };
    const request: FuzzRequest = { method: "POST", path: "/v1/ring/peer/token", body: JSON.stringify({ from: "a", token }), contentType: "application/json" };
    const answer = await PEER_SEND(node.app, "a", "b", request);
    assert.ok(answer.status < 500, answer.text);
    assert.equal(node.stateWithSends(), before);
  } finally {
    node.close();
  }
});

/** Sends each view message to a fresh node b holding a section; each must be answered 200 and change nothing. */
async function viewMessagesChangeNothing(messages: unknown[]): Promise<void> {
  for (const message of messages) {
    const node = ringNode(dirs);
    try {
      await withSection(node);
      const before = node.stateWithSends();
      const answer = await send(node.app, { method: "POST", path: "/v1/ring/peer/view", body: JSON.stringify(message), contentType: "application/json" });
      assert.equal(answer.status, 200, answer.text);
      assert.equal(node.stateWithSends(), before, JSON.stringify(message).slice(0, 200));
    } finally {
      node.close();
    }
  }
}

test("fuzz finding 3: a view message with an epoch above EPOCH_MAX is refused by the view core's check and changes nothing", async () => {
  // On 2c9c5fa: a renew of epoch 2^53 − 1 from a member passed checkViewMessage (epochs were only
  // counts there); the node took it as the highest epoch seen and coordinated the next one, and
  // the core asserted "fences would overflow": a 500 (an exit, once assertions fail-stop).
  await viewMessagesChangeNothing([
    { type: "renew", from: "a", epoch: Number.MAX_SAFE_INTEGER, seq: 1, voters: ["a", "b", "c"] },
    { type: "renew", from: "a", epoch: EPOCH_MAX + 1, seq: 1, voters: ["a", "b", "c"] },
    { type: "probe", from: "c", epoch: EPOCH_MAX + 1 },
    { type: "renewAnswer", from: "c", epoch: EPOCH_MAX + 1, seq: 1, ok: true },
  ]);
  // Not vacuous: a newer epoch in range is taken (a renew of it from a member moves b to rejoin).
  const node = ringNode(dirs);
  try {
    await withSection(node);
    const before = node.stateWithSends();
    await send(node.app, { method: "POST", path: "/v1/ring/peer/view", body: JSON.stringify({ type: "renew", from: "a", epoch: EPOCH_MAX - 1, seq: 1, voters: ["a", "b", "c"] }), contentType: "application/json" });
    assert.notEqual(node.stateWithSends(), before);
  } finally {
    node.close();
  }
});

test("fuzz finding 3b: a renew of exactly EPOCH_MAX from a member's id does not make the node assert", { todo: "the epoch is in range, so the view core takes it and then finds no epoch after it to coordinate: it asserts 'fences would overflow' (a 500, an exit once assertions fail-stop). A genuine ring at the last epoch ends the same way; a forged one needs the peer MACs of issue 12" }, async () => {
  const node = ringNode(dirs);
  try {
    await withSection(node);
    const answer = await send(node.app, { method: "POST", path: "/v1/ring/peer/view", body: JSON.stringify({ type: "renew", from: "a", epoch: EPOCH_MAX, seq: 1, voters: ["a", "b", "c"] }), contentType: "application/json" });
    assert.ok(answer.status < 500, answer.text);
  } finally {
    node.close();
  }
});

test("fuzz finding 5: a view message whose from or type is a deeply nested array is refused and changes nothing", async () => {
  // On 2c9c5fa: checkViewMessage wrote `from` into its reason ("unknown sender …"); Array
  // toString recurses, so 3,000 nested arrays overflowed the stack: a 500.
  let nested: unknown = [];
  for (let i = 0; i < 5_000; i++) nested = [nested];
  await viewMessagesChangeNothing([{ type: "renew", from: nested, epoch: 1, seq: 1, voters: ["a"] }, { type: nested, from: "a", epoch: 1 }]);
});
