/**
 * Fuzzing the peer routes (fast-check): replication (`POST /v1/peer`), the arbiter
 * (`POST /v1/arbiter`) and the ring's neighbour routes (`/v1/ring/peer/*`), through the Hono apps
 * (`app.request`) and through `answerPeer` / `answerArbiter` themselves. The messages start from
 * real ones (what an in-process primary, backup and arbiter sent each other; a ring token and
 * write batch as a neighbour sends them) and are mutated: fields dropped, added or given hostile
 * values, entries mutated, the epoch moved below, at or above the receiver's, the sender renamed;
 * or replaced by bytes that are no message.
 *
 * Each target runs in three modes (`PeerMode`):
 * - `plain`: apps without peer authentication (a cluster without a secret) and the handlers
 *   below Hono (what the simulator calls). Never a 5xx and never a thrown error; a refused
 *   message changes nothing; an accepted message that is stale (an epoch older than the
 *   receiver's) or from a sender that is not the receiver's peer changes nothing either.
 * - `signed`: apps that verify peer MACs (cluster/peer_auth.ts), every mutant signed with the
 *   right key by a PeerSigner as the member it claims to be (a member that sends garbage): the
 *   same properties; the schema and the core refuse the garbage (4xx, never a 5xx, never a
 *   fail-stop), and a body whose `from` is not the signer is refused 401.
 * - `forged`: the same apps, the mutants sent unsigned, signed with another secret's key, signed
 *   for another receiver, changed after signing, or a genuine request replayed: always 401
 *   (413 when over the body limit) before any route reads them, and nothing changes.
 */
import { afterEach, test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { answerArbiter, createArbiterApp } from "../cluster/arbiter/server.ts";
import { answerPeer } from "../cluster/lock/api_peer.ts";
import { memoryLogger } from "../cluster/log.ts";
import { readIfExists } from "../cluster/durable_file.ts";
import { RequestError } from "../cluster/http_util.ts";
import { apiError, ERROR_STATUS } from "../lib/wire/errors.ts";
import { checkAnswer, type FuzzAnswer, type FuzzRequest, fuzzPeerAuth, lockPair, type PeerSend, plainPeerSend, type Recorded, send, SigningSender } from "./_fuzz_apps.ts";
import { peerKey } from "../cluster/peer_mac.ts";
import { SecurityLog } from "../cluster/security_log.ts";
import { DEFAULT_SETTINGS } from "../lib/settings.ts";
import { ringNode, sendOrPending, withSection } from "./_ring_app.ts";
import { FUZZ_TEST_TIMEOUT_MS, fuzz, hostileValue, mutatedObject, nonObjectText, peerText } from "./_fuzz.ts";
import { encodePeerBody, PEER_CONTENT_TYPE } from "../cluster/peer_transport.ts";
import { removeDir, tempDir } from "./_harness.ts";
import { viewOf } from "./_ring_node.ts";
import { EPOCH_MAX } from "../lib/core/ring/view_wire.ts";

/** Without peer authentication; signed with the right key (a member's garbage); forged (see the header comment). */
type PeerMode = "plain" | "signed" | "forged";
const MODES: PeerMode[] = ["plain", "signed", "forged"];

/** The right key, as the members sign. */
const GENUINE = new SigningSender();

/**
 * A genuine request sent once (a body the schema refuses, so it changes nothing) and then sent
 * again exactly as it went: the receiver's window has its seq. To a receiver that restarted
 * since, it is challenged instead: 401 too.
 */
const replayed: PeerSend = async (app, from, to, request) => {
  const first = await GENUINE.send(app, from, to, { method: "POST", path: request.path, body: "{}", contentType: "application/json" });
  // 400 (the schema), or 401 when the signer is no member: refused either way.
  assert.ok(checkAnswer(first, "the genuine request to replay") && first.status < 500, `the genuine request to replay: ${first.text}`);
  const { url, init } = GENUINE.lastSent!;
  return send(app, { method: "POST", path: new URL(url).pathname, body: init.body as Uint8Array }, Object.fromEntries(new Headers(init.headers)));
};

/**
 * Signed with the right key. Every answer must carry a valid MAC, except a 413: a body over the
 * route's limit is refused while the middleware reads it, before its MAC can be checked, so the
 * answer cannot be bound to the request and the sender takes it as a failed request.
 */
const signed: PeerSend = async (app, from, to, request) => {
  try {
    return await GENUINE.send(app, from, to, request);
  } catch (error) {
    const answer = GENUINE.lastSent!.answer;
    assert.ok(answer.status === 413 && checkAnswer(answer, "unsigned answer"), `a signed request got an answer without a valid MAC: ${(error as Error).message}`);
    return answer;
  }
};

/** The forgeries of `forged` mode: how a sender without the right key (or a network) makes a peer request. */
const FORGERIES: Record<string, PeerSend> = {
  unsigned: plainPeerSend,
  otherKey: (app, from, to, r) => new SigningSender({ key: OTHER_KEY }).send(app, from, to, r, true),
  // A MAC made for another member (as captured on its link): here it does not fit.
  otherReceiver: (app, from, to, r) => new SigningSender({ signedFor: OTHER_RECEIVER[to] }).send(app, from, to, r, true),
  // One byte more after signing: a space, which the JSON reader would not even notice.
  tampered: (app, from, to, r) => new SigningSender({ transit: (init) => ({ ...init, body: new Uint8Array([...init.body as Uint8Array, 0x20]) }) }).send(app, from, to, r, true),
  replayed,
};
const OTHER_KEY = await peerKey("another-cluster-secret-of-at-least-32-chars");
const OTHER_RECEIVER: Record<string, string> = { p1: "b1", b1: "p1", a1: "b1", b: "c" };
const FORGERY_KINDS = Object.keys(FORGERIES);

/** How a peer request from `from` reaches `to`'s app in `mode` (`forgery`: the kind, in `forged` mode). */
function peerSendOf(mode: PeerMode, forgery: string): PeerSend {
  if (mode === "plain") return plainPeerSend;
  if (mode === "signed") return signed;
  return FORGERIES[forgery];
}

/** The ids a signer may claim in a header (a member, or one the cluster does not know); else `fallback`. */
const signerId = (from: unknown, fallback: string) => typeof from === "string" && ["p1", "b1", "a1", "a", "b", "c", "intruder"].includes(from) ? from : fallback;

/**
 * A forged request is refused before any route reads it: 401, or 413 when its body is over the
 * limit (the middleware reads the body within the limit before it can check the MAC over it);
 * and the receiver counted it under `security` (`counted`: how many refusals it counted while
 * the case ran; a replay's genuine first request is one more). Counts the answers' codes in `codes`.
 */
function refusedAsForged(answer: FuzzAnswer, what: string, codes: Record<string, number>, forgery: string, counted: number): void {
  assert.ok(checkAnswer(answer, what) && (answer.status === 401 || answer.status === 413), `${what}: a forgery answered ${answer.status} ${answer.text.slice(0, 200)}`);
  assert.equal(counted, forgery === "replayed" ? 2 : 1, `${what}: refusals counted under security`);
  countAnswer(answer, codes);
}

/** The refusals `logs` counted (status `security`), without the challenges a signer's first contact gets. */
function refusals(...logs: SecurityLog[]): number {
  return logs.flatMap((log) => Object.entries(log.view())).filter(([reason]) => reason !== "peerChallenged").reduce((sum, [, n]) => sum + n, 0);
}

/** Counts an answer in `codes` by its error code, or as `ok` (the log line of each fuzz run). */
function countAnswer(answer: FuzzAnswer, codes: Record<string, number>): void {
  // checkAnswer judges the body; here only what it says is counted.
  const code = answer.status < 400 ? "ok" : String(answer.text.match(/"code":"([a-z_]+)"/)?.[1] ?? answer.status);
  codes[code] = (codes[code] ?? 0) + 1;
}

/** Fuzz case counts per target and mode (the plain ones also go below Hono). */
const RUNS = {
  replication: { plain: 400, signed: 200, forged: 150 },
  arbiter: { plain: 400, signed: 200, forged: 150 },
  ring: { plain: 300, signed: 150, forged: 100 },
} satisfies Record<string, Record<PeerMode, number>>;

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) removeDir(dir);
});

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
    // Finding 2: an entry may be any value, null and numbers too (the schema checks each).
    const replacement = fc.oneof(mutatedObject(target), fc.constant(entryValue));
    return replacement.map((changed) => {
      const copy = [...(message.entries as unknown[])];
      if (index < copy.length) copy[index] = changed;
      return { ...message, entries: copy };
    });
  });
}

/** The message as the wire carries it (JSON), or raw bytes that are no message. */
function wireBody(messages: fc.Arbitrary<Record<string, unknown>>): fc.Arbitrary<{ message?: Record<string, unknown>; body: string | Uint8Array }> {
  return fc.oneof(
    { weight: 8, arbitrary: messages.map((message) => ({ message, body: peerText(message) })) },
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

for (const mode of MODES) {
  test(`fuzz peer (${mode}): replication messages to the backup and the primary (Hono app${mode === "plain" ? " and answerPeer" : ""}) never fail the node and stale or refused ones change nothing`, { timeout: FUZZ_TEST_TIMEOUT_MS }, async () => {
    const peerAuth = mode !== "plain";
    let pair = await lockPair(undefined, { peerAuth });
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
      // Below Hono there is no MAC: the handlers themselves are the plain mode's.
      via: peerAuth ? fc.constant("app" as const) : fc.constantFrom("app" as const, "answerPeer" as const),
      forgery: fc.constantFrom(...FORGERY_KINDS),
    }).chain(({ original, to, via, forgery }) => wireBody(mutatedMessage(original.message, epoch, ["p1", "b1", "a1"])).map((wire) => ({ original, to, via, forgery, ...wire })));
    let [unchanged, changed, resets] = [0, 0, 0];
    const codes: Record<string, number> = {};
    await fuzz(`peer lock replication ${mode}`, cases, async ({ to, via, forgery, message, body }) => {
      const receiver = to === "b1" ? pair.b : pair.p;
      const receiverEpoch = receiver.replica.status().epoch;
      const before = pair.state();
      const request: FuzzRequest = { method: "POST", path: "/v1/peer", body, contentType: PEER_CONTENT_TYPE };
      const what = `${mode} ${via} to ${to}: ${typeof body === "string" ? body.slice(0, 300) : `${body.length} bytes`}`;
      const peer = to === "b1" ? "p1" : "b1";
      const countedBefore = refusals(pair.p.security, pair.b.security);
      let answer: FuzzAnswer;
      if (via === "app") {
        answer = await peerSendOf(mode, forgery)(to === "b1" ? pair.bApp : pair.pApp, peer, to, request);
      } else {
        answer = await new Promise<FuzzAnswer>((done) => {
          try {
            answerPeer(receiver, pair.settings, typeof body === "string" ? body : new TextDecoder().decode(body), (text) => done({ status: 200, text }));
          } catch (error) {
            done(refusalOf(error as Error, what));
          }
        });
      }
      if (mode === "forged") refusedAsForged(answer, `${forgery} ${what}`, codes, forgery, refusals(pair.p.security, pair.b.security) - countedBefore);
      else countAnswer(answer, codes);
      if (mode === "forged" || mustNotChange(answer, message, receiverEpoch, [peer], ["append"], what)) {
        unchanged += 1;
        assert.equal(pair.state(), before, `${what} -> ${answer.status} ${answer.text.slice(0, 200)} changed the state`);
      } else if (pair.state() !== before) {
        // A current message from the peer may change the pair (genuine, or without a MAC one
        // nobody can tell from it): the next cases start from a fresh pair, so their epochs and
        // copies are known.
        changed += 1;
        pair.stop();
        pair = await lockPair(undefined, { peerAuth });
        resets += 1;
      }
    }, RUNS.replication[mode]);
    pair.stop();
    console.log(`fuzz peer lock replication ${mode}: ${unchanged} must-not-change cases, ${changed} accepted that changed the pair (${resets} resets), answers ${JSON.stringify(codes)}`);
    assert.ok(unchanged > 0, "refused and stale messages were exercised");
  });
}

test("fuzz finding 2: an append whose entry is not an object is refused with 400 and changes nothing", async () => {
  // On 2c9c5fa: the backup's core reads .index of null, a TypeError; the app answers 500
  // internal. Shrunk from the fuzzer (seeds 1 and 4 with FUZZ_RUNS=3000; seed 42 found the second).
  // Fixed: the peer message's schema (lib/wire/lock_peer.ts) checks each entry before the core.
  const pair = await lockPair();
  try {
    // The next entry the backup would apply, then null: on 2c9c5fa the first is applied (the
    // backup's index and clock move) before the TypeError, the issue's half-applied state.
    const appends = pair.recorded.filter((r) => r.to === "b1" && r.message.type === "append" && (r.message.entries as unknown[]).length > 0);
    const last = appends.at(-1)!.message;
    const next = { ...(last.entries as Record<string, unknown>[])[0], index: pair.b.replica.status().lastIndex + 1 };
    for (const entries of [[null], [next, null]]) {
      const before = pair.state();
      const body = encodePeerBody({ ...last, entries });
      const answer = await send(pair.bApp, { method: "POST", path: "/v1/peer", body, contentType: PEER_CONTENT_TYPE });
      assert.equal(answer.status, 400, answer.text);
      assert.equal(pair.state(), before);
    }
  } finally {
    pair.stop();
  }
});

// ---- The arbiter ----------------------------------------------------------------------------

for (const mode of MODES) {
  test(`fuzz peer (${mode}): arbiter requests (Hono app${mode === "plain" ? " and answerArbiter" : ""}) never fail the arbiter and stale, foreign or refused ones change nothing`, { timeout: FUZZ_TEST_TIMEOUT_MS }, async () => {
    const peerAuth = mode !== "plain";
    let pair = await lockPair();
    const originals = pair.recorded.filter((r) => r.to === "a1");
    const whois: Recorded = { from: "b1", to: "a1", message: { type: "whois", from: "b1" } };
    const types = new Set(originals.map((r) => r.message.type));
    assert.ok(["claim", "renew"].every((t) => types.has(t)), `recorded ${[...types]}`);
    const dir = tempDir("mutexd-fuzz-arbiter-");
    dirs.push(dir);
    const statePath = `${dir}/arbiter.json`;
    let security: SecurityLog;
    const appOf = (p: typeof pair) => {
      const log = memoryLogger();
      security = new SecurityLog({ nowMs: () => p.clock.nowMs() }, log, DEFAULT_SETTINGS.securityLogIntervalMs);
      const auth = peerAuth ? fuzzPeerAuth("a1", ["p1", "b1", "a1"], security, p.settings.bodyBytesMax) : undefined;
      return createArbiterApp(p.core, { nodeId: "a1", statePath, log, nowMs: () => p.clock.nowMs(), failStop: p.ports.failStop, security, peerAuth: auth });
    };
    let app = appOf(pair);
    const epoch = pair.core.current.epoch;
    const cases = fc.record({
      original: fc.constantFrom(...originals, whois),
      via: peerAuth ? fc.constant("app" as const) : fc.constantFrom("app" as const, "answerArbiter" as const),
      forgery: fc.constantFrom(...FORGERY_KINDS),
    }).chain(({ original, via, forgery }) => wireBody(mutatedMessage(original.message, epoch, ["p1", "b1", "a1"])).map((wire) => ({ via, forgery, ...wire })));
    let [unchanged, changed] = [0, 0];
    const codes: Record<string, number> = {};
    await fuzz(`peer arbiter ${mode}`, cases, async ({ via, forgery, message, body }) => {
      const arbiterEpoch = pair.core.current.epoch;
      const state = () => pair.state() + (readIfExists(statePath) ?? "");
      const before = state();
      const request: FuzzRequest = { method: "POST", path: "/v1/arbiter", body, contentType: PEER_CONTENT_TYPE };
      const what = `${mode} ${via}: ${typeof body === "string" ? body.slice(0, 300) : `${body.length} bytes`}`;
      const countedBefore = refusals(security);
      let answer: FuzzAnswer;
      if (via === "app") {
        answer = await peerSendOf(mode, forgery)(app, signerId(message?.from, "p1"), "a1", request);
      } else {
        try {
          answer = { status: 200, text: answerArbiter(pair.core, typeof body === "string" ? body : new TextDecoder().decode(body), pair.ports, pair.settings.bodyBytesMax).body };
        } catch (error) {
          answer = refusalOf(error as Error, what);
        }
      }
      if (mode === "forged") refusedAsForged(answer, `${forgery} ${what}`, codes, forgery, refusals(security) - countedBefore);
      else countAnswer(answer, codes);
      // whois only asks; a renewal carries the primary's epoch as its claim. A claim does not: a
      // restarted server claims with epoch 0, and the arbiter records what it says of its copy.
      const query = message?.type === "whois" && !checkAnswer(answer, what);
      if (mode === "forged" || query || mustNotChange(answer, message, arbiterEpoch, ["p1", "b1"], ["renew"], what)) {
        unchanged += 1;
        assert.equal(state(), before, `${what} -> ${answer.status} ${answer.text.slice(0, 200)} changed the arbiter`);
      } else if (state() !== before) {
        changed += 1;
        pair.stop();
        pair = await lockPair();
        app = appOf(pair);
      }
    }, RUNS.arbiter[mode]);
    pair.stop();
    console.log(`fuzz peer arbiter ${mode}: ${unchanged} must-not-change cases, ${changed} accepted that changed the arbiter, answers ${JSON.stringify(codes)}`);
    assert.ok(unchanged > 0, "refused and stale requests were exercised");
  });
}

// ---- The ring's neighbour routes ------------------------------------------------------------

for (const mode of MODES) {
test(`fuzz peer (${mode}): ring neighbour routes (token, writes, view, wake) never fail the node and stale, foreign or refused messages change nothing`, { timeout: FUZZ_TEST_TIMEOUT_MS }, async () => {
  const peerAuth = mode !== "plain";
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
  const cases = fc.record({ template: fc.constantFrom(...templates), nestedChange: fc.boolean(), forgery: fc.constantFrom(...FORGERY_KINDS) }).chain(({ template, nestedChange, forgery }) => {
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
    return bodies.map((wire) => ({ path: template.path, idle: template.idle === true, forgery, ...wire }));
  });
  let [unchanged, accepted] = [0, 0];
  const codes: Record<string, number> = {};
  await fuzz(`peer ring routes ${mode}`, cases, async ({ path, idle, forgery, message, body }) => {
    const node = ringNode(dirs, undefined, { peerAuth });
    try {
      if (!idle) assert.equal(await withSection(node), fence);
      const before = node.stateWithSends();
      const request: FuzzRequest = { method: "POST", path, body, contentType: "application/json" };
      const what = `${mode} ${path}: ${typeof body === "string" ? body.slice(0, 300) : `${body.length} bytes`}`;
      const countedBefore = refusals(node.service.security);
      const answer = await sendOrPending(node, request, before, (app, r) => peerSendOf(mode, forgery)(app, "a", "b", r));
      if (mode === "forged") {
        assert.notEqual(answer, "pending", `${forgery} ${what}: a forgery changed the node`);
        refusedAsForged(answer as FuzzAnswer, `${forgery} ${what}`, codes, forgery, refusals(node.service.security) - countedBefore);
        unchanged += 1;
        return assert.equal(node.stateWithSends(), before, `${forgery} ${what} changed the node`);
      }
      if (answer === "pending") return void (accepted += 1, codes.pending = (codes.pending ?? 0) + 1);
      countAnswer(answer, codes);
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
  }, RUNS.ring[mode]);
  console.log(`fuzz peer ring routes ${mode}: ${unchanged} must-not-change cases, ${accepted} accepted, answers ${JSON.stringify(codes)}`);
  assert.ok(unchanged > 0 && (mode === "forged" || accepted > 0), "both were exercised");
});
}

/**
 * Sends `body` to `path` of a fresh node b (holding a section, peer authentication on) with each
 * forgery: each must be refused 401 and change nothing. Then from a with the right key, which
 * returns the answer (the node's state then is the caller's to judge).
 */
async function forgedRefusedSignedAnswered(path: string, body: string): Promise<FuzzAnswer> {
  const request: FuzzRequest = { method: "POST", path, body, contentType: "application/json" };
  for (const [kind, forge] of Object.entries(FORGERIES)) {
    const node = ringNode(dirs, undefined, { peerAuth: true });
    try {
      await withSection(node);
      const before = node.stateWithSends();
      const answer = await forge(node.app, "a", "b", request);
      assert.equal(answer.status, 401, `${kind}: ${answer.text}`);
      assert.equal(node.stateWithSends(), before, kind);
    } finally {
      node.close();
    }
  }
  const node = ringNode(dirs, undefined, { peerAuth: true });
  try {
    await withSection(node);
    return await GENUINE.send(node.app, "a", "b", request);
  } finally {
    node.close();
  }
}

test("fuzz finding 4: a second token of the epoch from the predecessor's id, to the node that holds the token, is refused 401 without a's MAC", async () => {
  // On 2c9c5fa: 500 internal, "second token in epoch 1: hop 4 while holding" (a process exit
  // once assertions fail-stop). Shrunk from the fuzzer: the valid token template itself, sent to
  // a node that holds the token. Without a MAC nobody could tell it from a's genuine token; with
  // peer authentication every forgery is refused before the core sees it (the fuzzers send tokens
  // to a node that does not hold one, to keep their cases apart from this one).
  const token = { epoch: 1, hop: 4, wseq: 0, commit: 0, fence: 1, idleHops: 0 };
  const genuine = await forgedRefusedSignedAnswered("/v1/ring/peer/token", JSON.stringify({ from: "a", token }));
  // From a itself it is a broken invariant of the ring, and the core still asserts it (a node
  // fail-stops on it: failStopOnBug): the MAC, not a loosened check, keeps the forgery out.
  assert.equal(genuine.status, 500, genuine.text);
  assert.match(genuine.text, /second token in epoch 1/);
});

test("fuzz finding 3b: a renew of exactly EPOCH_MAX from a member's id is refused 401 without the member's MAC", async () => {
  // On 2c9c5fa: the epoch is in range, so the view core took it and found no epoch after it to
  // coordinate: "fences would overflow", a 500 (an exit once assertions fail-stop).
  const genuine = await forgedRefusedSignedAnswered("/v1/ring/peer/view", JSON.stringify({ type: "renew", from: "a", epoch: EPOCH_MAX, seq: 1, voters: ["a", "b", "c"] }));
  assert.equal(genuine.status, 500, `a genuine renew of the last epoch still ends the node (the todo below): ${genuine.text}`);
});

test("fuzz finding 3b (genuine): a ring at the last epoch EPOCH_MAX does not make a node assert", { todo: "a genuine renew (or any view change) reaching EPOCH_MAX leaves no epoch after it: the view core asserts 'fences would overflow' and the node fail-stops. Not a forgery any more (the MAC refuses those, test above) but a ring that ran out of epochs (2^21 view changes). Fix: the view core stops coordinating at EPOCH_MAX - 1 with a clear error (the ring needs an operator), or the schema refuses EPOCH_MAX itself" }, async () => {
  const node = ringNode(dirs, undefined, { peerAuth: true });
  try {
    await withSection(node);
    const body = JSON.stringify({ type: "renew", from: "a", epoch: EPOCH_MAX, seq: 1, voters: ["a", "b", "c"] });
    const answer = await GENUINE.send(node.app, "a", "b", { method: "POST", path: "/v1/ring/peer/view", body, contentType: "application/json" });
    assert.ok(answer.status < 500, answer.text);
  } finally {
    node.close();
  }
});

/** Sends each view message to a fresh node b holding a section; each must be refused 400 by the schema and change nothing. */
async function viewMessagesChangeNothing(messages: unknown[]): Promise<void> {
  for (const message of messages) {
    const node = ringNode(dirs);
    try {
      await withSection(node);
      const before = node.stateWithSends();
      const answer = await send(node.app, { method: "POST", path: "/v1/ring/peer/view", body: JSON.stringify(message), contentType: "application/json" });
      assert.equal(answer.status, 400, answer.text);
      assert.equal(node.stateWithSends(), before, JSON.stringify(message).slice(0, 200));
    } finally {
      node.close();
    }
  }
}

test("fuzz finding 3: a view message with an epoch above EPOCH_MAX is refused by the view message's schema and changes nothing", async () => {
  // On 2c9c5fa: a renew of epoch 2^53 − 1 from a member passed checkViewMessage (epochs were only
  // counts there); the node took it as the highest epoch seen and coordinated the next one, and
  // the core asserted "fences would overflow": a 500 (an exit, once assertions fail-stop).
  // Fixed first in checkViewMessage, now refused by the schema (lib/wire/ring_peer.ts): 400.
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

test("fuzz finding 5: a view message whose from or type is a deeply nested array is refused and changes nothing", async () => {
  // On 2c9c5fa: checkViewMessage wrote `from` into its reason ("unknown sender …"); Array
  // toString recurses, so 3,000 nested arrays overflowed the stack: a 500. Now the schema
  // refuses a `from` or `type` that is no string (400) before anything writes it.
  let nested: unknown = [];
  for (let i = 0; i < 5_000; i++) nested = [nested];
  await viewMessagesChangeNothing([{ type: "renew", from: nested, epoch: 1, seq: 1, voters: ["a"] }, { type: nested, from: "a", epoch: 1 }]);
});
