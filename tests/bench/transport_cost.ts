/**
 * What a replication round trip costs each side per transport (docs/bench.md "Replication cost",
 * fourth pass): two Bun processes on loopback, the driver sending a ~400-byte frame and the other
 * answering a ~100-byte ack, one round trip at a time (W1's shape), for
 *   client-ws  the driver's `new WebSocket` client sends, the other's Bun.serve `ws.send` answers
 *              (the replication stream as it is: the primary is the client);
 *   server-ws  the driver's Bun.serve `ws.send` sends, the other's `new WebSocket` client answers
 *              (the primary as the server side);
 *   raw-tcp    Bun.connect / Bun.listen `socket.write` with a 4-byte length prefix, both ways.
 * `--burst k`: k frames sent in one turn, the next k once all are answered (figures per frame).
 * The modes are interleaved round by round in ONE run, on the same two processes. Per mode and round
 * it reads both processes' CPU (utime+stime, /proc/PID/stat) and the driver's `process.cpuUsage()`
 * around its sends alone (process-wide, so an upper bound: other threads' work counts too).
 *
 *   bun tests/bench/transport_cost.ts [--rounds 5] [--count 20000] [--frame-bytes 400] [--burst 1]
 *
 * Bun only (Bun.serve, Bun.listen, Bun.connect). Loops are bounded by their counts; the child is
 * killed by its PID at the end (and exits when its stdin closes).
 */
import { readFileSync } from "node:fs";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { interleavedRounds, median } from "./lib/stats.ts";

type Mode = "client-ws" | "server-ws" | "raw-tcp";
const MODES: Mode[] = ["client-ws", "server-ws", "raw-tcp"];
/** `--frame-bytes N` (both processes read it): a larger frame, as an append carrying several entries. */
const frameBytesFlag = process.argv.indexOf("--frame-bytes");
const frameBytes = frameBytesFlag > 0 ? Number(process.argv[frameBytesFlag + 1]) : 400;
if (!(frameBytes >= 120 && frameBytes <= 65_536)) throw new Error("--frame-bytes must be 120..65,536");
const FRAME = "1 0 0 " + "a".repeat(64) + "\n" + JSON.stringify({ type: "append", pad: "x".repeat(frameBytes - 97) });
const ACK = "1 1 200 " + "b".repeat(64) + "\n" + JSON.stringify({ ok: true });
const WARMUP = 2_000;
const TICK_US = 1e6 / 100; // USER_HZ: /proc/PID/stat counts in 1/100 s

// deno-lint-ignore no-explicit-any
const Bun_ = (globalThis as any).Bun;

function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

/** A length-prefixed frame reader over a byte stream: calls `onFrame` per whole frame. */
function framer(onFrame: (text: string) => void): (chunk: Uint8Array) => void {
  let buffered = new Uint8Array(0);
  const decoder = new TextDecoder();
  return (chunk) => {
    let bytes = buffered.length ? concat(buffered, chunk) : chunk;
    // At most one frame per 4 bytes of input: bounded by the chunk's length.
    while (bytes.length >= 4) {
      const length = new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0);
      if (bytes.length < 4 + length) break;
      onFrame(decoder.decode(bytes.subarray(4, 4 + length)));
      bytes = bytes.subarray(4 + length);
    }
    buffered = bytes.slice();
  };
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

const encoder = new TextEncoder();
function prefixed(text: string): Uint8Array {
  const body = encoder.encode(text);
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, body.length);
  out.set(body, 4);
  return out;
}

/** The other process: a WebSocket server and a raw TCP server that answer every frame with ACK, and a WebSocket client to the driver's server. */
async function child(driverWsPort: number): Promise<void> {
  const ack = prefixed(ACK);
  const ws = Bun_.serve({
    port: 0,
    hostname: "127.0.0.1",
    fetch: (request: Request, server: { upgrade(r: Request): boolean }) => server.upgrade(request) ? undefined : new Response("no", { status: 400 }),
    websocket: { perMessageDeflate: false, message: (socket: { send(t: string): void }) => socket.send(ACK) },
  });
  const tcp = Bun_.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(socket: { data: unknown; setNoDelay?(on: boolean): void; write(b: Uint8Array): number }) {
        socket.setNoDelay?.(true);
        socket.data = framer(() => socket.write(ack));
      },
      data(socket: { data: (chunk: Uint8Array) => void }, chunk: Uint8Array) {
        socket.data(chunk);
      },
    },
  });
  const client = new WebSocket(`ws://127.0.0.1:${driverWsPort}/`);
  client.onmessage = () => client.send(ACK);
  await new Promise((resolve) => client.onopen = resolve);
  console.log(JSON.stringify({ wsPort: ws.port, tcpPort: tcp.port }));
  // Exit with the driver.
  process.stdin.on("end", () => process.exit(0));
  process.stdin.resume();
}

interface Sample {
  mode: Mode;
  driverUs: number;
  otherUs: number;
  sendUs: number;
  wallUs: number;
}

async function driver(): Promise<void> {
  const { values: flags } = parseArgs({ args: process.argv.slice(2), options: { rounds: { type: "string" }, count: { type: "string" }, "frame-bytes": { type: "string" }, burst: { type: "string" } } });
  const rounds = Number(flags.rounds ?? 5);
  const count = Number(flags.count ?? 20_000);
  const burst = Number(flags.burst ?? 1);
  if (!(Number.isInteger(burst) && burst >= 1 && burst <= 64)) throw new Error("--burst must be 1..64");
  if (!(rounds >= 1 && rounds <= 20) || !(count >= 1_000 && count <= 1_000_000)) throw new Error("--rounds must be 1..20 and --count 1,000..1,000,000");
  // The driver's side of server-ws: its Bun.serve, whose one connection the child opens.
  let serverSocket: { send(t: string): number } | null = null;
  let onServerAck: () => void = () => {};
  const connected = Promise.withResolvers<void>();
  const server = Bun_.serve({
    port: 0,
    hostname: "127.0.0.1",
    fetch: (request: Request, s: { upgrade(r: Request): boolean }) => s.upgrade(request) ? undefined : new Response("no", { status: 400 }),
    websocket: {
      perMessageDeflate: false,
      open(socket: { send(t: string): number }) {
        serverSocket = socket;
        connected.resolve();
      },
      message: () => onServerAck(),
    },
  });
  const proc = spawn(process.execPath, [fileURLToPath(import.meta.url), "--child", String(server.port)], { stdio: ["pipe", "pipe", "inherit"] });
  const ports = await new Promise<{ wsPort: number; tcpPort: number }>((resolve) => proc.stdout!.once("data", (line: Buffer) => resolve(JSON.parse(line.toString()))));
  await connected.promise;
  const pid = proc.pid!;

  const client = new WebSocket(`ws://127.0.0.1:${ports.wsPort}/`);
  await new Promise((resolve) => client.onopen = resolve);
  let onClientAck: () => void = () => {};
  client.onmessage = () => onClientAck();

  let onTcpAck: () => void = () => {};
  const tcpFramer = framer(() => onTcpAck());
  const tcp = await Bun_.connect({
    hostname: "127.0.0.1",
    port: ports.tcpPort,
    socket: { data: (_socket: unknown, chunk: Uint8Array) => tcpFramer(chunk) },
  });
  tcp.setNoDelay?.(true);
  const tcpFrame = prefixed(FRAME);

  /** n sequential round trips over `mode`; CPU of both processes and of the sends alone. */
  const run = async (mode: Mode, n: number): Promise<Sample> => {
    let sendUs = 0;
    const send = mode === "client-ws" ? () => client.send(FRAME) : mode === "server-ws" ? () => serverSocket!.send(FRAME) : () => tcp.write(tcpFrame);
    const [driver0, other0, wall0] = [cpuTicks(process.pid), cpuTicks(pid), performance.now()];
    // `burst` frames in one turn, the next burst once all are answered (bounded by n).
    await new Promise<void>((done) => {
      let left = n;
      let unanswered = 0;
      const next = () => {
        if (unanswered > 0 && --unanswered > 0) return;
        if (left <= 0) return done();
        const before = process.cpuUsage();
        for (let i = 0; i < burst; i += 1) send();
        const after = process.cpuUsage(before);
        sendUs += after.user + after.system;
        left -= burst;
        unanswered = burst;
      };
      onClientAck = onServerAck = onTcpAck = next;
      next();
    });
    const [driver1, other1, wall1] = [cpuTicks(process.pid), cpuTicks(pid), performance.now()];
    return { mode, driverUs: (driver1 - driver0) * TICK_US / n, otherUs: (other1 - other0) * TICK_US / n, sendUs: sendUs / n, wallUs: (wall1 - wall0) * 1_000 / n };
  };

  const load = () => readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
  console.log(`load average at the start: ${load()}; ${rounds} rounds × ${count} frames per mode in bursts of ${burst}, frame ${FRAME.length} B, ack ${ACK.length} B`);
  const samples = await interleavedRounds(MODES, rounds, WARMUP, count, run);
  console.log(`load average at the end: ${load()}`);
  console.log("mode        driver CPU µs/fr  other CPU µs/fr  both  driver send µs (cpuUsage)  wall µs/fr   (median of rounds; min–max of both)");
  for (const mode of MODES) {
    const of = samples.filter((s) => s.mode === mode);
    const both = of.map((s) => s.driverUs + s.otherUs);
    console.log(
      `${mode.padEnd(10)}  ${median(of.map((s) => s.driverUs)).toFixed(1).padStart(15)}  ${median(of.map((s) => s.otherUs)).toFixed(1).padStart(15)}  ${median(both).toFixed(1).padStart(5)}` +
        `  ${median(of.map((s) => s.sendUs)).toFixed(2).padStart(25)}  ${median(of.map((s) => s.wallUs)).toFixed(1).padStart(10)}   (${Math.min(...both).toFixed(1)}–${Math.max(...both).toFixed(1)})`,
    );
  }
  client.close();
  tcp.end();
  server.stop(true);
  proc.kill();
}

if (process.argv.includes("--child")) await child(Number(process.argv[process.argv.indexOf("--child") + 1]));
else await driver();
