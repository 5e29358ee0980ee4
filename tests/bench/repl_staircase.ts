/**
 * The replication round trip's staircase (docs/bench.md "Replication cost", sixth pass): from the
 * transport's floor up to the replicating HTTP front, one of mutexd's real pieces added per step,
 * every step interleaved round by round in ONE run on the same processes. The driver is the
 * primary's side, the child the backup's, a third process the HTTP client of the (d) steps:
 *   floor       the driver's `new WebSocket` sends a 400-byte text, the child's Bun.serve acks 84 bytes
 *               (tests/bench/transport_cost.ts client-ws);
 *   json        the real frames without a key (FrameCodec, no MAC): the bodies' JSON both ways;
 *   codec       (a) the real frames: FrameCodec encode/check with a peer key (MAC per frame, both
 *               ways), a real append's JSON body and a real appendAck's, parsed and built each way;
 *   stream      (b) the real peer_stream.ts client (streamPeerTransport: its promise, timer, seq
 *               map) to the real peer_stream_server.ts served by runtime.ts serveHttp, the child
 *               answering with a stub: readPeerRequest + checkPeerRequest (the backup's checks) and
 *               a fixed appendAck;
 *   stream-no-timer  the same client arming no timer at all (no timeout): what a setTimeout and a
 *               clearTimeout per request cost (main's peer_stream.ts; one timer per stream since);
 *   http        (d0) the client POSTs an enter-sized JSON body to the driver's serveHttp, answered at
 *               once (a lone primary's transport floor; no replication);
 *   http+stream (d) the same request answered only after a `stream` round trip (the primary's shape).
 * Per step and round: CPU (utime+stime, /proc/PID/stat) of the driver and the child per change, and
 * the driver's user/system split. Compare with tests/bench/repl_probe.ts (the real deployment).
 *
 *   bun tests/bench/repl_staircase.ts [--rounds 5] [--count 20000]
 *
 * Bun only (the children are Bun processes; Bun.serve). Loops bounded by counts; children killed by PID.
 */
import { readFileSync } from "node:fs";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { monotonicClock } from "../../cluster/clock.ts";
import { Hono } from "hono";
import { installErrorHandlers, readBodyBytes, readPeerRequest } from "../../cluster/http_util.ts";
import { peerAuthMiddleware } from "../../cluster/peer_auth.ts";
import { memoryLogger } from "../../cluster/log.ts";
import { FrameCodec, type FrameKeys, STREAM_PATH } from "../../cluster/peer_frame.ts";
import { peerKey } from "../../cluster/peer_mac.ts";
import { PeerSigner } from "../../cluster/peer_signer.ts";
import { PeerVerifier } from "../../cluster/peer_verifier.ts";
import { peerStreamServer, streamPeerTransport } from "../../cluster/peer_stream.ts";
import { serveHttp } from "../../cluster/runtime.ts";
import { SecurityLog } from "../../cluster/security_log.ts";
import { realTimers, type Timers } from "../../cluster/timers.ts";
import { DEFAULT_SETTINGS } from "../../lib/settings.ts";
import { checkPeerRequest } from "../../lib/wire/lock_peer.ts";
import { interleavedRounds, median } from "./lib/stats.ts";

type Step = "floor" | "json" | "codec" | "stream-no-timer" | "stream" | "http" | "http+stream";
const STEPS: Step[] = ["floor", "json", "codec", "stream-no-timer", "stream", "http", "http+stream"];
const SECRET = "staircase-secret-0123456789abcdef0123456789";
const FLOOR_FRAME = "1 0 0 " + "a".repeat(64) + "\n" + JSON.stringify({ type: "append", pad: "x".repeat(303) });
const FLOOR_ACK = "1 1 200 " + "b".repeat(64) + "\n" + JSON.stringify({ ok: true });
/** A W1 append as the primary sends it (one enter; 409 characters with its frame head). */
const appendOf = (index: number) => ({
  type: "append",
  from: "p1",
  epoch: 1,
  syncGen: 1,
  entries: [{
    index,
    epoch: 1,
    atMs: 1_764_380_000_000 + index,
    requestId: "r-0123456789abcdef",
    command: { type: "enter", name: "w1-0", session: "s1-0123456789abcdef0123", secretHash: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", mode: "exclusive", waitMs: 10_000, lockDelayMs: 0 },
  }],
});
const ackOf = (index: number) => ({ type: "appendAck", from: "b1", epoch: 1, ok: true, appliedIndex: index, promiseMs: 1_764_380_000_500 });
const ENTER_BODY = JSON.stringify({ session: "s1-0123456789abcdef0123", secret: "0123456789abcdef0123456789abcdef0123456789a", waitMs: 10_000 });
const KEYS: FrameKeys = { key: undefined, nonce: "0123456789abcdef0123456789abcdef" };
const TICK_US = 1e6 / 100; // USER_HZ
const WARMUP = 3_000;
// deno-lint-ignore no-explicit-any
const Bun_ = (globalThis as any).Bun;

function cpuTicks(pid: number): { all: number; sys: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { all: Number(fields[11]) + Number(fields[12]), sys: Number(fields[12]) };
}

/** The backup's side: a bare WebSocket acker, a codec acker, and the real stream server with the stub. */
async function child(): Promise<void> {
  const key = await peerKey(SECRET);
  const keys: FrameKeys = { ...KEYS, key };
  // Per step ("c": MACed, "j": the same frames without a key): its codecs and seqs.
  const sides = {
    c: { requests: new FrameCodec(keys, "request", "p1", "b1"), answers: new FrameCodec(keys, "answer", "b1", "p1"), lastSeq: 0, seqOut: 0 },
    j: { requests: new FrameCodec(KEYS, "request", "p1", "b1"), answers: new FrameCodec(KEYS, "answer", "b1", "p1"), lastSeq: 0, seqOut: 0 },
  };
  const bare = Bun_.serve({
    port: 0,
    hostname: "127.0.0.1",
    fetch: (request: Request, server: { upgrade(r: Request): boolean }) => server.upgrade(request) ? undefined : new Response("no", { status: 400 }),
    websocket: {
      perMessageDeflate: false,
      message: (socket: { send(t: string): void }, text: string) => {
        const side = text[0] === "c" ? sides.c : text[0] === "j" ? sides.j : null;
        if (side === null) return socket.send(FLOOR_ACK);
        const checked = side.requests.check(side.lastSeq, text.slice(1));
        if ("refused" in checked) throw new Error(checked.refused);
        side.lastSeq = checked.seq;
        const append = JSON.parse(checked.body) as ReturnType<typeof appendOf>;
        socket.send(side.answers.encode({ seq: ++side.seqOut, re: checked.seq, status: 200, body: JSON.stringify(ackOf(append.entries[0].index)) }));
      },
    },
  });
  const security = new SecurityLog(monotonicClock, memoryLogger(), 10_000);
  const verifier = new PeerVerifier(key, "b1", (id) => id === "p1");
  const stream = peerStreamServer({
    self: "b1",
    keyed: { key, verifier },
    security,
    bodyBytesMax: DEFAULT_SETTINGS.peerBodyBytesMax,
    answer(text, sender, done) {
      const message = readPeerRequest(text, DEFAULT_SETTINGS.peerBodyBytesMax, (value) => checkPeerRequest(value, DEFAULT_SETTINGS));
      sender?.check(message.from);
      done(200, JSON.stringify(ackOf((message as ReturnType<typeof appendOf>).entries[0].index)));
    },
  });
  // The probe before the upgrade: a signed GET of the route, answered by the real middleware.
  const app = new Hono();
  installErrorHandlers(app, () => {});
  app.use("/v1/peer/*", peerAuthMiddleware(verifier, security, (c) => readBodyBytes(c, DEFAULT_SETTINGS.peerBodyBytesMax)));
  app.get(STREAM_PATH, (c) => c.json({ stream: true }));
  const real = await serveHttp(app.fetch, { hostname: "127.0.0.1", port: 0, stream: stream.route });
  console.log(JSON.stringify({ bare: bare.port, real: real.port }));
  process.stdin.on("end", () => process.exit(0));
  process.stdin.resume();
}

/** The HTTP client of the (d) steps: on "N\n" from stdin, N sequential POSTs; prints "done" after each batch. */
async function client(url: string): Promise<void> {
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    const n = Number(line);
    if (!(n >= 1 && n <= 1_000_000)) break;
    for (let i = 0; i < n; i += 1) {
      const response = await fetch(url, { method: "POST", body: ENTER_BODY, headers: { "content-type": "application/json" } });
      await response.text();
    }
    console.log("done");
  }
  process.exit(0);
}

async function driver(): Promise<void> {
  const { values: flags } = parseArgs({ args: process.argv.slice(2), options: { rounds: { type: "string" }, count: { type: "string" } } });
  const rounds = Number(flags.rounds ?? 5);
  const count = Number(flags.count ?? 20_000);
  if (!(rounds >= 1 && rounds <= 20) || !(count >= 1_000 && count <= 1_000_000)) throw new Error("--rounds must be 1..20 and --count 1,000..1,000,000");
  const self = fileURLToPath(import.meta.url);
  const backup = spawn(process.execPath, [self, "--child"], { stdio: ["pipe", "pipe", "inherit"] });
  const ports = await new Promise<{ bare: number; real: number }>((resolve) => backup.stdout!.once("data", (line: Buffer) => resolve(JSON.parse(line.toString()))));

  const key = await peerKey(SECRET);
  const keys: FrameKeys = { ...KEYS, key };
  const sides = {
    codec: { tag: "c", requests: new FrameCodec(keys, "request", "p1", "b1"), answers: new FrameCodec(keys, "answer", "b1", "p1"), lastSeqIn: 0, seqOut: 0 },
    json: { tag: "j", requests: new FrameCodec(KEYS, "request", "p1", "b1"), answers: new FrameCodec(KEYS, "answer", "b1", "p1"), lastSeqIn: 0, seqOut: 0 },
  };
  const bare = new WebSocket(`ws://127.0.0.1:${ports.bare}/`);
  await new Promise((resolve) => bare.onopen = resolve);
  let onBare: (text: string) => void = () => {};
  bare.onmessage = (event) => onBare(event.data as string);

  const signer = new PeerSigner(key, "p1");
  const base = `http://127.0.0.1:${ports.real}`;
  const transportWith = (timers: Timers) => streamPeerTransport({
    self: "p1",
    idOf: () => "b1",
    peerFetch: (to, url, request) => signer.fetch(to, url, request),
    http: { send: () => Promise.reject(new Error("the stream did not open")) },
    keyed: { key, signer },
    caPem: undefined,
    bodyBytesMax: DEFAULT_SETTINGS.peerBodyBytesMax,
    security: new SecurityLog(monotonicClock, memoryLogger(), 10_000),
    log: memoryLogger(),
    clock: monotonicClock,
    timers,
    openTimeoutMs: 2_000,
    clientProblem: null,
  });
  const transport = transportWith(realTimers);
  // The same client arming no timer (diagnosis: what Bun's setTimeout/clearTimeout per request cost).
  // None at all (the hello's timer neither: the hello comes at once on loopback), so the step means
  // the same on code with a timer per request and with one per stream.
  const noTimers: Timers = { setTimeout: () => 0, clearTimeout: () => {} };
  const untimed = transportWith(noTimers);
  let index = 0;
  const replicate = async (through = transport) => {
    index += 1;
    const ack = await through.send(`${base}/v1/peer`, appendOf(index), 2_000) as { appliedIndex: number };
    if (ack.appliedIndex !== index) throw new Error(`ack ${ack.appliedIndex} for ${index}`);
  };
  // The stream opens on its first send (probe, upgrade, hello): over HTTP it would reject.
  await replicate();
  await replicate(untimed);

  let front: "http" | "http+stream" = "http";
  const answer = () => new Response(JSON.stringify({ granted: true, token: index, position: 0 }), { headers: { "content-type": "application/json" } });
  const server = await serveHttp(async (request) => {
    await request.text();
    if (front === "http+stream") await replicate();
    return answer();
  }, { hostname: "127.0.0.1", port: 0 });
  const httpClient = spawn(process.execPath, [self, "--client", `http://127.0.0.1:${server.port}/v1/locks/w1-0/enter`], { stdio: ["pipe", "pipe", "inherit"] });
  const clientLines = createInterface({ input: httpClient.stdout! })[Symbol.asyncIterator]();

  /** One round trip by the driver itself (the floor and codec steps). */
  const roundTrip = (step: "floor" | "json" | "codec" | "stream" | "stream-no-timer"): Promise<void> => {
    if (step === "stream") return replicate();
    if (step === "stream-no-timer") return replicate(untimed);
    return new Promise((resolve) => {
      if (step === "floor") {
        onBare = () => resolve();
        bare.send(FLOOR_FRAME);
        return;
      }
      index += 1;
      const side = sides[step];
      onBare = (text) => {
        const checked = side.answers.check(side.lastSeqIn, text);
        if ("refused" in checked) throw new Error(checked.refused);
        side.lastSeqIn = checked.seq;
        const ack = JSON.parse(checked.body) as { appliedIndex: number };
        if (ack.appliedIndex !== index) throw new Error("codec: wrong ack");
        resolve();
      };
      bare.send(side.tag + side.requests.encode({ seq: ++side.seqOut, re: 0, status: 0, body: JSON.stringify(appendOf(index)) }));
    });
  };
  const run = async (step: Step, n: number) => {
    const [d0, b0, w0] = [cpuTicks(process.pid), cpuTicks(backup.pid!), performance.now()];
    if (step === "http" || step === "http+stream") {
      front = step;
      httpClient.stdin!.write(`${n}\n`);
      const line = await clientLines.next();
      if (line.value !== "done") throw new Error("the HTTP client stopped");
    } else {
      for (let i = 0; i < n; i += 1) await roundTrip(step);
    }
    const [d1, b1, w1] = [cpuTicks(process.pid), cpuTicks(backup.pid!), performance.now()];
    return { step, primaryUs: (d1.all - d0.all) * TICK_US / n, primarySysUs: (d1.sys - d0.sys) * TICK_US / n, backupUs: (b1.all - b0.all) * TICK_US / n, backupSysUs: (b1.sys - b0.sys) * TICK_US / n, wallUs: (w1 - w0) * 1_000 / n };
  };

  const load = () => readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
  console.log(`load average at the start: ${load()}; ${rounds} rounds × ${count} changes per step`);
  const samples = await interleavedRounds(STEPS, rounds, WARMUP, count, run);
  console.log(`load average at the end: ${load()}`);
  console.log("| step | primary CPU µs/change (sys) | backup CPU µs/change (sys) | both | wall µs/change |");
  console.log("|---|---|---|---|---|");
  for (const step of STEPS) {
    const of = samples.filter((s) => s.step === step);
    const m = (f: (s: (typeof of)[number]) => number) => median(of.map(f)).toFixed(1);
    console.log(`| ${step} | ${m((s) => s.primaryUs)} (${m((s) => s.primarySysUs)}) | ${m((s) => s.backupUs)} (${m((s) => s.backupSysUs)}) | ${m((s) => s.primaryUs + s.backupUs)} | ${m((s) => s.wallUs)} |`);
  }
  httpClient.stdin!.end();
  bare.close();
  transport.close();
  untimed.close();
  await server.close();
  httpClient.kill();
  backup.kill();
  process.exit(0);
}

if (process.argv.includes("--child")) await child();
else if (process.argv.includes("--client")) await client(process.argv[process.argv.indexOf("--client") + 1]);
else await driver();
