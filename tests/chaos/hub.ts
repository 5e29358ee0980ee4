/**
 * The chaos hub: a small HTTP server in the runner's process, on loopback, for the clients that
 * run as separate processes (`mutexd lock NAME -- CMD`, `mutexd ring lock -- CMD`; CMD is
 * tests/chaos/cli_step.ts). Through it CMD
 * - reads and writes the guarded counter (the same GuardedCounters as the in-process clients, so
 *   its token check, the fencing, is one for all clients): POST /counter;
 * - records its steps in the run's one history (one clock, the runner's): POST /invoke, /done;
 * - says it entered its lock (with its token and its PID), that it is leaving, and that mutexd told
 *   it to stop (SIGTERM: the lock was lost): POST /entered, /leaving, /stopped, which the runner's
 *   worker of that client handles (cli_clients.ts).
 * Bodies are JSON; anything malformed is a 400. Pending operations are bounded (PENDING_MAX).
 */
import { serveHttp, type HttpServer } from "../../cluster/runtime.ts";
import type { HistoryRecord, HistoryWriter, RecordType } from "./history.ts";
import { StaleTokenError, type GuardedCounters } from "./workload.ts";

/** Operations invoked through the hub and not yet completed, at most (a CMD killed mid-step leaves one). */
const PENDING_MAX = 10_000;

export interface HubListener {
  /** `leaseEndMs`: a ring section's own lease end (wall ms), when CMD knows it. */
  entered(token: number, pid: number, leaseEndMs?: number): void;
  leaving(): void;
  /**
   * mutexd stopped CMD (SIGTERM), at `atMs` (wall ms, CMD's clock: the machine's, the history's):
   * what ends a lock's hold for its client, which the CMD's exit, seen later, would overstate.
   */
  stopped(atMs: number): void;
}

type Completion = (type: Exclude<RecordType, "invoke">, more?: Partial<HistoryRecord>) => HistoryRecord;

export class ChaosHub {
  private readonly pending = new Map<number, Completion>();
  private readonly listeners = new Map<string, HubListener>();
  private nextKey = 1;

  private server?: HttpServer;
  /** http://127.0.0.1:PORT, set by start(). */
  url = "";

  private constructor(private readonly history: HistoryWriter, private readonly counters: GuardedCounters) {}

  static async start(history: HistoryWriter, counters: GuardedCounters): Promise<ChaosHub> {
    const hub = new ChaosHub(history, counters);
    hub.server = await serveHttp((request) => hub.handle(request), { hostname: "127.0.0.1", port: 0 });
    hub.url = `http://127.0.0.1:${hub.server.port}`;
    return hub;
  }

  /** `key`: the CMD's CHAOS_LISTENER (one per round of a client). */
  listen(key: string, listener: HubListener): void {
    this.listeners.set(key, listener);
  }

  unlisten(key: string): void {
    this.listeners.delete(key);
  }

  async close(): Promise<void> {
    await this.server?.close();
  }

  private async handle(request: Request): Promise<Response> {
    const { history, counters } = this;
    let body: Record<string, unknown>;
    try {
      body = await request.json();
      if (typeof body !== "object" || body === null) throw new Error("not an object");
    } catch (error) {
      return Response.json({ error: `bad body: ${(error as Error).message}` }, { status: 400 });
    }
    const str = (k: string) => (typeof body[k] === "string" ? body[k] as string : undefined);
    const int = (k: string) => (Number.isSafeInteger(body[k]) ? body[k] as number : undefined);
    const path = new URL(request.url).pathname;
    const client = str("client");
    if (path === "/counter") {
      const lock = str("lock");
      const token = int("token");
      const value = int("value");
      if (!lock || !/^l\d+$/.test(lock) || token === undefined) return Response.json({ error: "lock and token" }, { status: 400 });
      try {
        if (value === undefined) return Response.json({ value: counters.read(lock, token) });
        counters.write(lock, token, value);
        return Response.json({});
      } catch (error) {
        if (error instanceof StaleTokenError) return Response.json({ error: error.message }, { status: 409 });
        throw error;
      }
    }
    if (path === "/invoke") {
      const op = str("op");
      if (!client || !op || this.pending.size >= PENDING_MAX) return Response.json({ error: "client and op (or too many pending)" }, { status: 400 });
      const key = this.nextKey++;
      this.pending.set(key, history.invoke({ op: op as HistoryRecord["op"], client, ...recordFields(body) }));
      return Response.json({ key });
    }
    if (path === "/done") {
      const complete = this.pending.get(int("key") ?? 0);
      const type = str("type");
      if (!complete || (type !== "ok" && type !== "fail" && type !== "info")) return Response.json({ error: "key and type" }, { status: 400 });
      this.pending.delete(int("key")!);
      complete(type, recordFields(body));
      return Response.json({});
    }
    const listener = this.listeners.get(str("listener") ?? "");
    if (path === "/entered" && listener && int("token") !== undefined && int("pid") !== undefined) {
      listener.entered(int("token")!, int("pid")!, int("leaseEnd"));
      return Response.json({});
    }
    if (path === "/leaving" && listener) {
      listener.leaving();
      return Response.json({});
    }
    // When CMD was told to stop, never later than now (its clock is this machine's wall clock).
    if (path === "/stopped" && listener && int("at") !== undefined) {
      listener.stopped(Math.min(int("at")!, Date.now()));
      return Response.json({});
    }
    return Response.json({ error: `no such request: ${path}` }, { status: 404 });
  }
}

/** The fields a CMD may set on its records: no id, type or time (the hub's clock stamps those). */
function recordFields(body: Record<string, unknown>): Partial<HistoryRecord> {
  const out: Partial<HistoryRecord> = {};
  for (const k of ["lock", "node", "fault", "error"] as const) if (typeof body[k] === "string") out[k] = (body[k] as string).slice(0, 300);
  for (const k of ["token", "value", "leaseMs"] as const) if (Number.isSafeInteger(body[k])) out[k] = body[k] as number;
  return out;
}
