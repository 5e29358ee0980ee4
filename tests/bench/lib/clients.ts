/**
 * The two drivers the workloads run with, behind one small interface:
 *
 * - "project": mutexd's own TypeScript client (lib/client/lock_client.ts: connect, openSession,
 *   enter, leave), which uses the runtime's fetch. What an application gets.
 * - "http": a minimal client on node:http with a keep-alive Agent, speaking the same HTTP API
 *   (the driver the peer benchmark used for its mutexd stub). Shows how much is client cost.
 *
 * One BenchClient is one logical client (own session(s), own connections).
 */
import { Buffer } from "node:buffer";
import http from "node:http";
import { connect, type LockClient, type Session } from "../../../lib/client/lock_client.ts";

export type ClientKind = "project" | "http";
export const CLIENT_KINDS: readonly ClientKind[] = ["project", "http"];

export type EnterAnswer = { granted: true; token: number } | { granted: false; position: number };

export interface BenchSession {
  readonly id: string;
  /** Closes the session on the server (releases what it holds) and stops its keepalives. */
  close(): Promise<void>;
}

export interface BenchClient {
  /** mutexd's drivers, or a peer's adapter (tests/bench/peers/). */
  readonly kind: ClientKind | "etcd" | "redis" | "zk";
  /** Opens a session kept alive every TTL/3 until closed. */
  openSession(ttlMs: number): Promise<BenchSession>;
  /** mutex_enter: waits up to `waitMs` (long-polling; 0 = try-lock) for the lock. */
  enter(name: string, session: BenchSession, waitMs: number): Promise<EnterAnswer>;
  /** mutex_leave with the grant's token. */
  leave(name: string, session: BenchSession, token: number): Promise<void>;
  close(): void;
}

/** `servers`: a deployment's URLs, primary first (the node:http client only uses the first). */
export function makeClient(kind: ClientKind, servers: string | string[]): BenchClient {
  const list = Array.isArray(servers) ? servers : [servers];
  return kind === "project" ? new ProjectClient(list) : new NodeHttpClient(list[0]);
}

// ---------------------------------------------------------------------------------------------

class ProjectSession implements BenchSession {
  constructor(readonly session: Session) {}
  get id(): string {
    return this.session.id;
  }
  close(): Promise<void> {
    return this.session.close();
  }
}

class ProjectClient implements BenchClient {
  readonly kind = "project";
  private readonly client: LockClient;
  constructor(servers: string[]) {
    this.client = connect({ servers });
  }
  async openSession(ttlMs: number): Promise<BenchSession> {
    return new ProjectSession(await this.client.openSession({ ttlMs }));
  }
  async enter(name: string, session: BenchSession, waitMs: number): Promise<EnterAnswer> {
    const answer = await this.client.enter(name, { session: (session as ProjectSession).session, waitMs });
    return answer.granted ? { granted: true, token: answer.token } : { granted: false, position: answer.position };
  }
  leave(name: string, session: BenchSession, token: number): Promise<void> {
    return this.client.leave(name, { session: (session as ProjectSession).session, token });
  }
  close(): void {}
}

// ---------------------------------------------------------------------------------------------

/** Server-side cap of one long-poll is settings.longPollMaxMs (5 s); ask for at most this per round. */
const LONG_POLL_MS = 5_000;
const REQUEST_TIMEOUT_MS = 3_000;

class HttpError extends Error {
  constructor(readonly status: number, readonly body: unknown) {
    super(`HTTP ${status}: ${JSON.stringify(body)}`);
  }
}

class RawSession implements BenchSession {
  private readonly timer: ReturnType<typeof setInterval>;
  private closed = false;
  /** `secret`: the open's sessionSecret, sent on every request about the session. */
  constructor(private readonly client: NodeHttpClient, readonly id: string, ttlMs: number, readonly secret: string) {
    this.timer = setInterval(() => {
      if (!this.closed) {
        client.request("POST", `/v1/sessions/${encodeURIComponent(id)}/keepalive`, { sessionSecret: secret }).catch(() => {});
      }
    }, Math.max(1, Math.floor(ttlMs / 3)));
  }
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    await this.client.request("DELETE", `/v1/sessions/${encodeURIComponent(this.id)}`, { sessionSecret: this.secret }).catch((error) => {
      if (!(error instanceof HttpError && error.status === 404)) throw error;
    });
  }
}

class NodeHttpClient implements BenchClient {
  readonly kind = "http";
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  private readonly host: string;
  private readonly port: number;

  constructor(url: string) {
    const u = new URL(url);
    this.host = u.hostname;
    this.port = Number(u.port);
  }

  request<T = Record<string, unknown>>(method: string, path: string, body?: unknown, extraTimeoutMs = 0): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const req = http.request(
        {
          host: this.host,
          port: this.port,
          method,
          path,
          agent: this.agent,
          headers: payload === undefined
            ? {}
            : { "content-type": "application/json", "content-length": Buffer.byteLength(payload) },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (chunk: Buffer) => chunks.push(chunk));
          res.on("error", reject);
          res.on("end", () => {
            const text = chunks.length === 1 ? chunks[0].toString() : Buffer.concat(chunks).toString();
            let data: unknown;
            try {
              data = text ? JSON.parse(text) : {};
            } catch {
              reject(new Error(`${method} ${path}: answer is not JSON (status ${res.statusCode})`));
              return;
            }
            const status = res.statusCode ?? 0;
            if (status >= 200 && status < 300) resolve(data as T);
            else reject(new HttpError(status, data));
          });
        },
      );
      req.setTimeout(REQUEST_TIMEOUT_MS + extraTimeoutMs, () => req.destroy(new Error(`${method} ${path}: timeout`)));
      req.on("error", reject);
      req.end(payload);
    });
  }

  async openSession(ttlMs: number): Promise<BenchSession> {
    const opened = await this.request<{ session: string; sessionSecret: string }>("POST", "/v1/sessions", { ttlMs });
    return new RawSession(this, opened.session, ttlMs, opened.sessionSecret);
  }

  async enter(name: string, session: BenchSession, waitMs: number): Promise<EnterAnswer> {
    const deadline = performance.now() + waitMs;
    // Each round is one long-poll of at most LONG_POLL_MS; the count bounds the loop.
    for (let round = 0; round < 100_000; round++) {
      const remaining = Math.max(0, Math.round(deadline - performance.now()));
      const ask = Math.min(remaining, LONG_POLL_MS);
      const answer = await this.request<{ granted: boolean; token?: number; waiting?: boolean; position?: number }>(
        "POST",
        "/v1/enter",
        { name, session: session.id, sessionSecret: (session as RawSession).secret, waitMs: ask },
        ask,
      );
      if (answer.granted) return { granted: true, token: answer.token! };
      if (!answer.waiting || remaining === 0) {
        if (answer.waiting) await this.request("POST", "/v1/leave", { name, session: session.id, sessionSecret: (session as RawSession).secret }).catch(() => {});
        return { granted: false, position: answer.position ?? 0 };
      }
    }
    throw new Error("enter: too many rounds");
  }

  async leave(name: string, session: BenchSession, token: number): Promise<void> {
    await this.request("POST", "/v1/leave", { name, session: session.id, sessionSecret: (session as RawSession).secret, token });
  }

  close(): void {
    this.agent.destroy();
  }
}
