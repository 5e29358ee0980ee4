/**
 * Redis as a lock service for `make bench-peers`, as peer-bench.md ran it: one connection per
 * client; acquire = one Lua script (`SET lock:{name} value NX PX ttl`, and if it was set, `INCR
 * fence:{name}`: the fencing token, atomic with the SET); waiting = polling every 10 ms + 0–10 ms
 * of jitter (Redis has no queue); release = compare-and-delete in Lua (`GET == value` → `DEL`).
 *
 * The client is a tiny RESP2 client on node:net (no npm package): commands are pipelined on
 * one connection and answered in order.
 */
import { Buffer } from "node:buffer";
import net from "node:net";
import type { BenchClient, BenchSession, EnterAnswer } from "../lib/clients.ts";
import { sleep } from "../lib/workload.ts";

/** The lock key's PX while held, as peer-bench.md's W1–W4 (a holder that dies frees it after this). */
const LOCK_PX_MS = 30_000;
/** Poll interval while waiting: 10 ms plus 0–10 ms of jitter (peer-bench.md caveat 6). */
const POLL_MS = 10;
/** Commands in flight on one connection at most (bounds the reply queue). */
const MAX_IN_FLIGHT = 1_000;

const ACQUIRE = `if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return redis.call('INCR', KEYS[2]) else return 0 end`;
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end`;

export type RespValue = string | number | null | RespValue[];

/**
 * Parses one RESP2 value from `buf` at `at`; returns it and the offset after it, or undefined if
 * the buffer does not hold the whole value yet. An error reply is returned as an Error.
 */
export function parseResp(buf: Buffer, at: number): { value: RespValue | Error; next: number } | undefined {
  const eol = buf.indexOf("\r\n", at);
  if (eol < 0) return undefined;
  const line = buf.toString("latin1", at + 1, eol);
  const type = buf[at];
  if (type === 0x2b) return { value: line, next: eol + 2 }; // +simple
  if (type === 0x2d) return { value: new Error(line), next: eol + 2 }; // -error
  if (type === 0x3a) return { value: Number(line), next: eol + 2 }; // :integer
  if (type === 0x24) { // $bulk
    const length = Number(line);
    if (length < 0) return { value: null, next: eol + 2 };
    if (buf.length < eol + 2 + length + 2) return undefined;
    return { value: buf.toString("utf8", eol + 2, eol + 2 + length), next: eol + 2 + length + 2 };
  }
  if (type === 0x2a) { // *array
    const count = Number(line);
    if (count < 0) return { value: null, next: eol + 2 };
    const items: RespValue[] = [];
    let next = eol + 2;
    for (let i = 0; i < count; i++) {
      const item = parseResp(buf, next);
      if (!item) return undefined;
      if (item.value instanceof Error) throw item.value;
      items.push(item.value);
      next = item.next;
    }
    return { value: items, next };
  }
  throw new Error(`RESP: unexpected type byte ${type} (the stream is out of step)`);
}

export function encodeResp(args: readonly (string | number)[]): string {
  let out = `*${args.length}\r\n`;
  for (const arg of args) {
    const text = String(arg);
    out += `$${Buffer.byteLength(text)}\r\n${text}\r\n`;
  }
  return out;
}

export class RespConnection {
  private buffer: Buffer = Buffer.alloc(0);
  private readonly waiting: Array<{ resolve(v: RespValue): void; reject(e: Error): void }> = [];
  private failure: Error | undefined;

  private constructor(private readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (error) => this.fail(error));
    socket.on("close", () => this.fail(new Error("redis connection closed")));
  }

  static connect(port: number, host = "127.0.0.1"): Promise<RespConnection> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, host, () => {
        socket.off("error", reject);
        resolve(new RespConnection(socket));
      });
      socket.once("error", reject);
    });
  }

  command(...args: (string | number)[]): Promise<RespValue> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.waiting.length >= MAX_IN_FLIGHT) return Promise.reject(new Error("redis: too many commands in flight"));
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.socket.write(encodeResp(args));
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    let at = 0;
    for (;;) {
      let parsed;
      try {
        parsed = at < this.buffer.length ? parseResp(this.buffer, at) : undefined;
      } catch (error) {
        this.fail(error as Error);
        return;
      }
      if (!parsed) break;
      at = parsed.next;
      const waiter = this.waiting.shift();
      if (!waiter) {
        this.fail(new Error("redis: a reply nobody asked for"));
        return;
      }
      if (parsed.value instanceof Error) waiter.reject(parsed.value);
      else waiter.resolve(parsed.value);
    }
    this.buffer = this.buffer.subarray(at);
  }

  private fail(error: Error): void {
    if (this.failure) return;
    this.failure = error;
    for (const waiter of this.waiting.splice(0)) waiter.reject(error);
    this.socket.destroy();
  }
}

/** Redis has no sessions: the connection is the client's; a "session" only names the holder. */
class RedisSession implements BenchSession {
  constructor(readonly id: string) {}
  close(): Promise<void> {
    return Promise.resolve();
  }
}

let clientCount = 0;

export class RedisLockClient implements BenchClient {
  readonly kind = "redis";
  private connection: Promise<{ conn: RespConnection; acquireSha: string; releaseSha: string }>;
  private readonly id = ++clientCount;
  private grants = 0;
  /** The value of each lock this client holds (the release compares it). */
  private readonly held = new Map<string, string>();
  /** Jitter from a per-client linear congruential generator: deterministic, no wall clock. */
  private seed: number;

  constructor(port: number) {
    this.seed = this.id * 2654435761 >>> 0;
    this.connection = RespConnection.connect(port).then(async (conn) => ({
      conn,
      acquireSha: String(await conn.command("SCRIPT", "LOAD", ACQUIRE)),
      releaseSha: String(await conn.command("SCRIPT", "LOAD", RELEASE)),
    }));
  }

  openSession(_ttlMs: number): Promise<BenchSession> {
    return Promise.resolve(new RedisSession(`client-${this.id}`));
  }

  async enter(name: string, session: BenchSession, waitMs: number): Promise<EnterAnswer> {
    const { conn, acquireSha } = await this.connection;
    const value = `${session.id}:${++this.grants}`;
    const deadline = performance.now() + waitMs;
    // Bounded: one try per POLL_MS at least, so at most waitMs / POLL_MS + 1 tries.
    for (let tries = 0; tries <= waitMs / POLL_MS + 1; tries++) {
      const token = Number(await conn.command("EVALSHA", acquireSha, 2, `lock:{${name}}`, `fence:{${name}}`, value, LOCK_PX_MS));
      if (token > 0) {
        this.held.set(name, value);
        return { granted: true, token };
      }
      const left = deadline - performance.now();
      if (left <= 0) break;
      this.seed = (this.seed * 1664525 + 1013904223) >>> 0;
      // The Redis recipe has no wait: a taken lock is polled (SET NX again) after a jittered pause.
      await sleep(Math.min(left, POLL_MS + (this.seed % (POLL_MS + 1))));
    }
    return { granted: false, position: 0 };
  }

  async leave(name: string, _session: BenchSession, _token: number): Promise<void> {
    const { conn, releaseSha } = await this.connection;
    const value = this.held.get(name);
    this.held.delete(name);
    const deleted = await conn.command("EVALSHA", releaseSha, 1, `lock:{${name}}`, value ?? "");
    if (deleted !== 1) throw new Error(`redis: ${name} was not held by ${value} at release`);
  }

  close(): void {
    this.connection.then(({ conn }) => conn.close(), () => {});
  }
}
