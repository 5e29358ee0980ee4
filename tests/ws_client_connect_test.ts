/**
 * cluster/ws_client.ts while it is still connecting, against real sockets on 127.0.0.1 (no fake
 * Deno.connect): close() must end the attempt at once, with `onclose` (1006, not clean), no `onopen`
 * and no `onerror` (an end asked for is no error).
 *
 * - During the TLS handshake: a TCP listener accepts and reads the ClientHello, and never answers.
 *   Deno.startTls returns at once and the handshake runs in the first write (the upgrade request),
 *   so close() must close that TlsConn (cut()), which cancels the write. Without cut() in close()'s
 *   CONNECTING branch the write waits forever and `onclose` never comes (tried once locally: the
 *   test fails on its bound).
 *   Not checked, because this client cannot change it: the TCP socket itself stays open until the
 *   server answers or closes. Deno's TLS stream, dropped mid-handshake, hands its socket to a task
 *   that first finishes the handshake (rustls-tokio-stream's Drop, denoland/deno#14547) and there is
 *   no handle left to close it with (the TCP conn's resource was taken by startTls). The test's
 *   server closes its side at the end, which ends that task.
 * - During a real hanging Deno.connect: a Deno.listen listener that never accepts, its accept queue
 *   filled by this test, so the kernel drops the client's SYN and the connect waits out the SYN
 *   retries (minutes). The kernel says so: /proc/net/tcp shows the client's socket in SYN_SENT and
 *   the listener's queue not holding it. close() must abort the connect through its signal: without
 *   `this.connecting.abort()` in close() (tried once locally) `onclose` waits for the kernel to give
 *   up and the test fails on its bound; with it the SYN_SENT socket is gone too. Linux only (/proc).
  The queue counts as full only when a filler's SYN is dropped: SYN_SENT at two polls in a row and
  the kernel's ListenOverflows count risen. A SYN merely slow (injected once locally: the fifth
  filler's connect started 300 ms late, shown in SYN_SENT meanwhile) passed the old one-poll check
  as a full queue, and the test then failed waiting for the client's SYN_SENT; now the fill goes on.
 *
 * Deno only: the client opens Deno.connect; a Bun node uses Bun's own WebSocket. Each test closes
 * the listeners and connections it opened.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { type ClientCloseEvent, DenoWebSocket } from "../cluster/ws_client.ts";
import { runtimeName } from "../cluster/runtime.ts";
import { eventually } from "./_harness.ts";

const skip = runtimeName === "deno" ? false : "the client opens Deno.connect: a Bun node uses Bun's own WebSocket";
const TIMEOUT_MS = 5_000;

// deno-lint-ignore no-explicit-any
const Deno = (globalThis as any).Deno;

interface Listener {
  addr: { port: number };
  accept(): Promise<Conn>;
  close(): void;
}
interface Conn {
  read(buffer: Uint8Array): Promise<number | null>;
  close(): void;
}

/** A client and what it reported: `closed` once `onclose` came, whether `onopen` did, `onerror`s. */
function watch(url: string) {
  const ws = new DenoWebSocket(url, { messageBytesMax: 1_000 });
  const seen = { opened: false, errors: 0, closed: undefined as ClientCloseEvent | undefined };
  ws.onopen = () => seen.opened = true;
  ws.onerror = () => seen.errors += 1;
  ws.onclose = (event) => seen.closed = event;
  return { ws, seen };
}

/** Calls close() on a client still CONNECTING and checks how it ended: onclose (1006, not clean) within TIMEOUT_MS, never open, no error. */
async function closeWhileConnecting({ ws, seen }: ReturnType<typeof watch>, when: string): Promise<void> {
  assert.equal(ws.readyState, DenoWebSocket.CONNECTING);
  ws.close();
  await eventually(`onclose after close() ${when}`, () => seen.closed !== undefined, TIMEOUT_MS);
  assert.deepEqual(seen.closed, { code: 1006, reason: "", wasClean: false });
  assert.equal(seen.opened, false, "never opened");
  assert.equal(seen.errors, 0, "an end asked for is no error");
  assert.equal(ws.readyState, DenoWebSocket.CLOSED);
}

test("ws client: close() during the TLS handshake (a server that never answers the ClientHello) ends it at once: onclose 1006, no open, no error", { skip }, async () => {
  const listener: Listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let accepted: Conn | undefined;
  try {
    const { ws, seen } = watch(`wss://127.0.0.1:${listener.addr.port}/`);
    accepted = await listener.accept();
    // The ClientHello: a TLS handshake record (content type 22). Once it came, the handshake is under way.
    const hello = new Uint8Array(4_096);
    const n = await accepted.read(hello);
    assert.ok(n !== null && n > 0 && hello[0] === 22, `a TLS ClientHello (first byte ${hello[0]})`);
    await closeWhileConnecting({ ws, seen }, "during the TLS handshake");
  } finally {
    accepted?.close();
    listener.close();
  }
});

/** 127.0.0.1:`port` as /proc/net/tcp writes it (address little-endian, port big-endian, both hex). */
function procAddress(port: number): string {
  return `0100007F:${port.toString(16).toUpperCase().padStart(4, "0")}`;
}

/** From /proc/net/tcp: connections to 127.0.0.1:`port` in SYN_SENT, and the listener's accept queue length. */
function kernelView(port: number): { synSent: number; queued: number } {
  const address = procAddress(port);
  let synSent = 0;
  let queued = -1;
  for (const line of readFileSync("/proc/net/tcp", "utf8").split("\n").slice(1)) {
    const [, local, remote, state, queues] = line.trim().split(/\s+/);
    if (state === "02" && remote === address) synSent += 1;
    // A listener's rx_queue is its accept queue's length.
    if (state === "0A" && local === address) queued = parseInt(queues.split(":")[1], 16);
  }
  return { synSent, queued };
}

/** Connections at most to fill a listener's accept queue (the kernel caps a backlog at somaxconn, 4096 by default). */
const FILL_CONNECTIONS_MAX = 5_000;

/**
 * The kernel's count of SYNs dropped because a listener's accept queue was full (TcpExt
 * ListenOverflows in /proc/net/netstat, for the whole network namespace).
 */
function listenOverflows(): number {
  const lines = readFileSync("/proc/net/netstat", "utf8").split("\n").filter((line) => line.startsWith("TcpExt:"));
  const [names, values] = lines.map((line) => line.trim().split(/\s+/));
  const at = names?.indexOf("ListenOverflows") ?? -1;
  if (at < 1 || values === undefined) throw new Error("no TcpExt ListenOverflows in /proc/net/netstat");
  return Number(values[at]);
}

/** A poll of the kernel's view while a connect is under way (its interval). */
const POLL_MS = 10;

/**
 * Connects to `port` (a listener that never accepts) until its accept queue is full: a connect
 * whose SYN the kernel dropped is aborted and the made ones are returned. Dropped means all of: in
 * SYN_SENT at two polls in a row while the queue holds every connection made, and the kernel's
 * ListenOverflows count risen since the connect began. A SYN_SENT seen once may be a SYN that is
 * only slow (a busy host defers the loopback's softirq), and the counter is the kernel saying it
 * dropped one. Throws if the queue never fills within FILL_CONNECTIONS_MAX; on any throw, the
 * connect under way is aborted and the made connections closed.
 */
async function fillAcceptQueue(port: number): Promise<Conn[]> {
  const conns: Conn[] = [];
  let abort: AbortController | undefined;
  /** The connect under way: its Conn once made, undefined if it failed or was aborted. */
  let connecting: Promise<Conn | undefined> = Promise.resolve(undefined);
  try {
    while (conns.length < FILL_CONNECTIONS_MAX) {
      const overflowsBefore = listenOverflows();
      const attempt = new AbortController();
      abort = attempt;
      let conn: Conn | undefined;
      connecting = Deno.connect({ hostname: "127.0.0.1", port, signal: attempt.signal }).then((made: Conn) => conn = made, () => undefined);
      let dropped = false;
      let synSentPolls = 0;
      await eventually(`connection ${conns.length + 1} made, or its SYN dropped`, async () => {
        await Promise.race([connecting, new Promise((resolve) => setTimeout(resolve, POLL_MS))]);
        if (conn) return true;
        const view = kernelView(port);
        synSentPolls = view.synSent > 0 && view.queued === conns.length ? synSentPolls + 1 : 0;
        dropped = synSentPolls >= 2 && listenOverflows() > overflowsBefore;
        return dropped;
      }, TIMEOUT_MS);
      if (conn) {
        conns.push(conn);
        continue;
      }
      attempt.abort();
      // Made after all between the last poll and the abort: the queue had room, fill on.
      const late = await connecting;
      if (late) {
        conns.push(late);
        continue;
      }
      assert.ok(dropped);
      return conns;
    }
    assert.fail(`the accept queue took over ${FILL_CONNECTIONS_MAX} connections`);
  } catch (error) {
    abort?.abort();
    const late = await connecting;
    if (late && !conns.includes(late)) late.close();
    for (const conn of conns) conn.close();
    throw error;
  }
}

test("ws client: close() while a real Deno.connect hangs (a listener whose accept queue is full drops the SYN) aborts it: onclose 1006, the SYN_SENT socket gone", {
  skip: skip || (process.platform === "linux" ? false : "the kernel's view is read from /proc/net/tcp (Linux)"),
}, async () => {
  const listener: Listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  let fillers: Conn[] = [];
  try {
    fillers = await fillAcceptQueue(port);
    await eventually("the aborted filler's socket gone", () => kernelView(port).synSent === 0, TIMEOUT_MS);
    const { ws, seen } = watch(`ws://127.0.0.1:${port}/`);
    // The kernel holds the client's connect: its SYN unanswered, and it is not in the accept queue.
    await eventually("the client's socket in SYN_SENT", () => kernelView(port).synSent === 1, TIMEOUT_MS);
    assert.equal(kernelView(port).queued, fillers.length, "the client's connection was not made");
    await closeWhileConnecting({ ws, seen }, "while Deno.connect hangs");
    await eventually("the client's SYN_SENT socket gone", () => kernelView(port).synSent === 0, TIMEOUT_MS);
    assert.equal(kernelView(port).queued, fillers.length, "and it never joined the queue");
  } finally {
    for (const conn of fillers) conn.close();
    listener.close();
  }
});
