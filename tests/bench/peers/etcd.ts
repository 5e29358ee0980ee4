/**
 * etcd as a lock service for `make bench-peers`: the concurrency package's Mutex recipe (etcd
 * 3.4's client/v3/concurrency/mutex.go) through etcd's v3 JSON gateway with the runtime's fetch,
 * as mutexd's own client talks HTTP+JSON (peer-bench.md used the gRPC client etcd3; the gateway
 * costs more per request, so this is a lower bound on etcd).
 *
 * A session is a lease (TTL 10 s in W1–W3) kept alive every TTL/3. Acquire: one Txn "if my key
 * `lock/<name>/<lease>` has no create revision, put it with my lease; then read the prefix's
 * first key by create revision" (one Raft write). If the first key is mine, the lock is mine and
 * my key's create revision is the fencing token; else wait until every key created before mine
 * is deleted (read the last one before mine, watch it for its DELETE, again), then read my key
 * (the session must still hold it). Release: delete my key (one Raft write). FIFO.
 */
import { Buffer } from "node:buffer";
import type { BenchClient, BenchSession, EnterAnswer } from "../lib/clients.ts";
import { sleep } from "../lib/workload.ts";

const b64 = (text: string) => Buffer.from(text).toString("base64");
const unb64 = (text: string) => Buffer.from(text, "base64").toString();
/** The range end that covers every key under `prefix` (etcd's clientv3.GetPrefixRangeEnd). */
const prefixEnd = (prefix: string) => prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
/** Predecessors waited for in one acquire at most (each one is a read and a watch). */
const MAX_PREDECESSORS = 10_000;
/** Tries of one request at most, when a try has less time than the request (F1). */
const MAX_TRIES = 1_000;
/** The pause before a request's next try. */
const RETRY_MS = 10;

interface Kv {
  key: string;
  create_revision: string;
}
interface RangeResponse {
  header: { revision: string };
  kvs?: Kv[];
}

class EtcdSession implements BenchSession {
  private readonly timer: ReturnType<typeof setInterval>;
  constructor(private readonly client: EtcdLockClient, readonly id: string, ttlMs: number) {
    // Kept alive every TTL/3 beside the workload, as mutexd's client and the peers' clients do.
    this.timer = setInterval(() => void client.post("/v3/lease/keepalive", { ID: id }).catch(() => {}), Math.floor(ttlMs / 3));
  }
  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.client.post("/v3/lease/revoke", { ID: this.id });
  }
}

/** Clients made so far: each starts at another member, so that the load spreads over a cluster. */
let clients = 0;

export class EtcdLockClient implements BenchClient {
  readonly kind = "etcd";
  /**
   * `bases`: the members' client URLs; `at`: the member requests go to, first the next one for each
   * client, then the next after a failed try (F1's failover); `requestTimeoutMs` bounds every request but a watch;
   * `tryTimeoutMs` (≤ requestTimeoutMs) each try of one. A try that gets no answer (refused, or
   * timed out) is sent again to the next member until the request's time is up; an answer that
   * is an error is not. A try needs a bound of its own because etcd never answers some requests
   * after its leader dies: a follower that has not yet noticed forwards the proposal to the dead
   * leader, where it is lost, and answers 503 only at its own request timeout (5 s + 2 × the
   * election timeout = 7 s with the defaults). A try given up on may still be applied, even
   * after the requests that follow it; the recipe allows that: the lock's Txn puts my key only
   * if it has no create revision, a delete is by create revision (`deleteMine`), a keepalive or
   * a range again changes nothing, a second lease is left to expire, a second revoke is an error
   * answer the session's close ignores. A late Txn after my leave could still put my key back
   * until its lease ends; F1 closes its session right after, which revokes the lease.
   */
  constructor(
    private readonly bases: string[],
    private readonly requestTimeoutMs = 10_000,
    private readonly tryTimeoutMs = requestTimeoutMs,
    private at = clients++,
  ) {}

  private get base(): string {
    return this.bases[this.at % this.bases.length];
  }

  async post<T = Record<string, unknown>>(path: string, body: unknown): Promise<T> {
    const deadline = performance.now() + this.requestTimeoutMs;
    for (let tries = 1; ; tries++) {
      const base = this.base;
      let answer: { ok: boolean; status: number; text: string };
      try {
        const timeoutMs = Math.max(1, Math.min(this.tryTimeoutMs, deadline - performance.now()));
        const response = await fetch(`${base}${path}`, { method: "POST", body: JSON.stringify(body), signal: AbortSignal.timeout(timeoutMs) });
        answer = { ok: response.ok, status: response.status, text: await response.text() };
      } catch (error) {
        if (this.base === base) this.at++;
        // No answer: the next member, while the request has time (never when a try is the whole request).
        if (this.tryTimeoutMs >= this.requestTimeoutMs || tries >= MAX_TRIES || deadline - performance.now() <= RETRY_MS) throw error;
        await sleep(RETRY_MS);
        continue;
      }
      if (!answer.ok) {
        if (this.base === base) this.at++;
        throw new Error(`etcd ${path}: ${answer.status} ${answer.text.slice(0, 200)}`);
      }
      return JSON.parse(answer.text) as T;
    }
  }

  /** Whether `name` is still held with `token` (my key exists with that create revision): F1's check. */
  async isHeld(name: string, session: BenchSession, token: number): Promise<boolean> {
    const mine = await this.post<RangeResponse>("/v3/kv/range", { key: b64(`lock/${name}/${session.id}`) });
    return Number(mine.kvs?.[0]?.create_revision) === token;
  }

  async openSession(ttlMs: number): Promise<BenchSession> {
    const lease = await this.post<{ ID: string }>("/v3/lease/grant", { TTL: Math.ceil(ttlMs / 1000) });
    return new EtcdSession(this, lease.ID, ttlMs);
  }

  async enter(name: string, session: BenchSession, waitMs: number): Promise<EnterAnswer> {
    const prefix = `lock/${name}/`;
    const myKey = b64(`${prefix}${session.id}`);
    const owner = { request_range: { key: b64(prefix), range_end: b64(prefixEnd(prefix)), sort_order: "ASCEND", sort_target: "CREATE", limit: 1 } };
    const txn = await this.post<{ header: { revision: string }; succeeded?: boolean; responses: Array<{ response_range: RangeResponse }> }>(
      "/v3/kv/txn",
      {
        compare: [{ key: myKey, target: "CREATE", create_revision: "0" }],
        success: [{ request_put: { key: myKey, value: "", lease: session.id } }, owner],
        failure: [{ request_range: { key: myKey } }, owner],
      },
    );
    const myRev = txn.succeeded ? Number(txn.header.revision) : Number(txn.responses[0].response_range.kvs![0].create_revision);
    const first = txn.responses[txn.responses.length - 1].response_range.kvs?.[0];
    if (first === undefined || Number(first.create_revision) === myRev) return { granted: true, token: myRev };

    const deadline = performance.now() + waitMs;
    for (let k = 0; k < MAX_PREDECESSORS; k++) {
      const before = await this.post<RangeResponse>("/v3/kv/range", {
        key: b64(prefix),
        range_end: b64(prefixEnd(prefix)),
        sort_order: "DESCEND",
        sort_target: "CREATE",
        limit: 1,
        max_create_revision: String(myRev - 1),
      });
      const last = before.kvs?.[0];
      if (last === undefined) {
        const mine = await this.post<RangeResponse>("/v3/kv/range", { key: myKey });
        if (!mine.kvs?.length) throw new Error(`etcd: ${name}: my key is gone (lease expired)`);
        return { granted: true, token: myRev };
      }
      if (!(await this.waitDelete(last.key, Number(before.header.revision), deadline))) break;
    }
    await this.deleteMine(myKey, myRev);
    return { granted: false, position: 0 };
  }

  /** Watches `key` (base64) from `revision` until its DELETE (true) or `deadline` (false). */
  private async waitDelete(key: string, revision: number, deadline: number): Promise<boolean> {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), Math.max(0, deadline - performance.now()));
    try {
      const response = await fetch(`${this.base}/v3/watch`, {
        method: "POST",
        body: JSON.stringify({ create_request: { key, start_revision: String(revision) } }),
        signal: abort.signal,
      });
      if (!response.ok || !response.body) throw new Error(`etcd watch: ${response.status}`);
      // The gateway streams one JSON object per line: {"result":{"created":true,…}}, then events.
      const decoder = new TextDecoder();
      let text = "";
      for await (const chunk of response.body) {
        text += decoder.decode(chunk, { stream: true });
        let eol;
        while ((eol = text.indexOf("\n")) >= 0) {
          const line = text.slice(0, eol).trim();
          text = text.slice(eol + 1);
          if (!line) continue;
          const message = JSON.parse(line) as { result?: { events?: Array<{ type?: string }> }; error?: unknown };
          if (message.error) throw new Error(`etcd watch: ${JSON.stringify(message.error).slice(0, 200)}`);
          if (message.result?.events?.some((e) => e.type === "DELETE")) return true;
        }
        if (text.length > 1_000_000) throw new Error("etcd watch: a line over 1 MB");
      }
      throw new Error(`etcd watch on ${unb64(key)} ended`);
    } catch (error) {
      if (abort.signal.aborted) return false;
      throw error;
    } finally {
      clearTimeout(timer);
      abort.abort();
    }
  }

  async leave(name: string, session: BenchSession, token: number): Promise<void> {
    await this.deleteMine(b64(`lock/${name}/${session.id}`), token);
  }

  /**
   * Deletes my key (base64) made at `createRevision`. The recipe's plain delete, unless this
   * client sends a try again (F1): a try given up on may still be applied after the requests
   * that follow it, and a late plain delete would remove the key a later enter made again; so
   * then the delete is a Txn that deletes only the key made at `createRevision`.
   */
  private async deleteMine(key: string, createRevision: number): Promise<void> {
    if (this.tryTimeoutMs >= this.requestTimeoutMs) {
      await this.post("/v3/kv/deleterange", { key });
      return;
    }
    await this.post("/v3/kv/txn", {
      compare: [{ key, target: "CREATE", create_revision: String(createRevision) }],
      success: [{ request_delete_range: { key } }],
    });
  }

  close(): void {}
}
