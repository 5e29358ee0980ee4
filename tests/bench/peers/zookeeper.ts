/**
 * ZooKeeper as a lock service for `make bench-peers`: the lock recipe of ZooKeeper's docs with
 * node-zookeeper-client (pure JavaScript; the client peer-bench.md used). A session is one
 * ZooKeeper session (one connection; timeout 10 s in W1–W3). Acquire: create
 * `/locks/<name>/lock-` EPHEMERAL_SEQUENTIAL (a write; a lock name used for the first time also
 * creates its parent), then getChildren: if mine has the lowest sequence number the lock is mine
 * and that number is the fencing token; else watch the node just before mine (exists with a
 * watch) and look again when it is deleted. FIFO. Release: delete my node (a write).
 */
import type { Buffer } from "node:buffer";
import zookeeper from "node-zookeeper-client";
import type { BenchClient, BenchSession, EnterAnswer } from "../lib/clients.ts";

/** The part of node-zookeeper-client this adapter uses (the package has no types). */
interface ZkError {
  getCode(): number;
}
type Callback<T> = (error: (Error & Partial<ZkError>) | null, value: T) => void;
interface ZkClient {
  connect(): void;
  close(): void;
  once(event: "connected" | "disconnected" | "expired", listener: () => void): void;
  create(path: string, data: Buffer | undefined, mode: number, callback: Callback<string>): void;
  remove(path: string, version: number, callback: Callback<void>): void;
  exists(path: string, watcher: (event: unknown) => void, callback: Callback<unknown | null>): void;
  getChildren(path: string, callback: Callback<string[]>): void;
}
interface ZkModule {
  createClient(connectionString: string, options: { sessionTimeout: number; spinDelay: number; retries: number }): ZkClient;
  CreateMode: { PERSISTENT: number; EPHEMERAL_SEQUENTIAL: number };
  Exception: { NO_NODE: number; NODE_EXISTS: number };
}
const zk = zookeeper as unknown as ZkModule;

const CONNECT_TIMEOUT_MS = 10_000;
/** Looks at the children at most this often in one acquire (each look follows a deletion). */
const MAX_LOOKS = 10_000;

function call<T>(f: (callback: Callback<T>) => void): Promise<T> {
  return new Promise((resolve, reject) => f((error, value) => (error ? reject(error) : resolve(value))));
}
const codeOf = (error: unknown) => (error as Partial<ZkError>).getCode?.();

class ZkSession implements BenchSession {
  readonly id: string;
  constructor(readonly client: ZkClient, n: number) {
    this.id = `zk-${n}`;
  }
  close(): Promise<void> {
    this.client.close();
    return Promise.resolve();
  }
}

let sessions = 0;

export class ZkLockClient implements BenchClient {
  readonly kind = "zk";
  /** Each held lock's znode path. */
  private readonly held = new Map<string, string>();
  /** Lock names whose parent znode exists (creating one costs a failed create and a create). */
  private readonly parents = new Set<string>();
  constructor(private readonly connectString: string) {}

  async openSession(ttlMs: number): Promise<BenchSession> {
    const client = zk.createClient(this.connectString, { sessionTimeout: ttlMs, spinDelay: 100, retries: 0 });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("zookeeper: no connection within 10 s")), CONNECT_TIMEOUT_MS);
      client.once("connected", () => {
        clearTimeout(timer);
        resolve();
      });
      client.connect();
    });
    return new ZkSession(client, ++sessions);
  }

  async enter(name: string, session: BenchSession, waitMs: number): Promise<EnterAnswer> {
    const { client } = session as ZkSession;
    const parent = `/locks/${name}`;
    const mine = (await this.createChild(client, parent)).slice(parent.length + 1);
    const deadline = performance.now() + waitMs;
    for (let look = 0; look < MAX_LOOKS; look++) {
      const children = (await call<string[]>((cb) => client.getChildren(parent, cb))).sort();
      const at = children.indexOf(mine);
      if (at < 0) throw new Error(`zookeeper: ${parent}/${mine} is gone (session expired)`);
      if (at === 0) {
        this.held.set(name, `${parent}/${mine}`);
        return { granted: true, token: Number(mine.slice("lock-".length)) };
      }
      // Watch only the predecessor (no herd): wake when it goes, or when the wait ends.
      let wake = () => {};
      const deleted = new Promise<void>((resolve) => (wake = resolve));
      const stat = await call<unknown | null>((cb) => client.exists(`${parent}/${children[at - 1]}`, () => wake(), cb));
      if (stat === null) continue;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timedOut = await Promise.race([
        deleted.then(() => false),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), Math.max(0, deadline - performance.now())))),
      ]);
      clearTimeout(timer);
      if (timedOut) break;
    }
    await call<void>((cb) => client.remove(`${parent}/${mine}`, -1, cb));
    return { granted: false, position: 0 };
  }

  /** Creates `parent`/lock-NNN (ephemeral, sequential), and the parents on first use. */
  private async createChild(client: ZkClient, parent: string): Promise<string> {
    const create = () => call<string>((cb) => client.create(`${parent}/lock-`, undefined, zk.CreateMode.EPHEMERAL_SEQUENTIAL, cb));
    if (this.parents.has(parent)) return await create();
    try {
      const child = await create();
      this.parents.add(parent);
      return child;
    } catch (error) {
      if (codeOf(error) !== zk.Exception.NO_NODE) throw error;
      for (const path of ["/locks", parent]) {
        await call<string>((cb) => client.create(path, undefined, zk.CreateMode.PERSISTENT, cb)).catch((e) => {
          if (codeOf(e) !== zk.Exception.NODE_EXISTS) throw e;
        });
      }
      this.parents.add(parent);
      return await create();
    }
  }

  /** Whether `name` is still held with `token` (my znode exists): F1's check. */
  async isHeld(name: string, session: BenchSession, token: number): Promise<boolean> {
    const path = this.held.get(name);
    if (!path || Number(path.slice(path.lastIndexOf("-") + 1)) !== token) return false;
    return (await call<unknown | null>((cb) => (session as ZkSession).client.exists(path, () => {}, cb))) !== null;
  }

  async leave(name: string, session: BenchSession, _token: number): Promise<void> {
    const { client } = session as ZkSession;
    const path = this.held.get(name);
    if (!path) throw new Error(`zookeeper: ${name} is not held`);
    this.held.delete(name);
    await call<void>((cb) => client.remove(path, -1, cb));
  }

  close(): void {}
}
