/**
 * A replicated pair's CPU per acquire+release in process (issue 14, docs/bench.md "Replication cost",
 * "Eighth pass"): a primary and a backup LockService with an arbiter core, made and wired as lockPair
 * (tests/_fuzz_apps.ts `pairLockService`) makes them but without its message recording, each peer message encoded,
 * answered by the backup's real peer route (api_peer.ts `answerPeer`) and decoded as the stream
 * does; the primary's app driven by W1's requests (an enter and a leave with a requestId) on
 * `fetch` directly. What this leaves out is sockets, MACs and the HTTP server (repl_staircase.ts).
 *
 *   bun tests/bench/repl_pair_cost.ts        deno run -A tests/bench/repl_pair_cost.ts
 *
 * Prints the median over ROUNDS rounds of the process's CPU (user + system) per a+r, and of the
 * wall time inside the backup's peer route per a+r (its turn is synchronous: a sharper measure of
 * the backup's side than the whole process's CPU under a shared machine's noise), after a
 * warm-up that fills the remembered answers of both sides. Run under `bun --cpu-prof-md` or
 * `deno run --cpu-prof` for a profile of the primary's replicate/commit path and the backup's
 * apply/ack path together. Every loop is bounded by its count.
 */
import process from "node:process";
import { manualClock } from "../../cluster/clock.ts";
import { answerArbiter, type ArbiterPorts } from "../../cluster/arbiter/server.ts";
import { createLockApp } from "../../cluster/lock/api.ts";
import { answerPeer } from "../../cluster/lock/api_peer.ts";
import type { LockService } from "../../cluster/lock/service.ts";
import { memoryLogger } from "../../cluster/log.ts";
import { pairLockService } from "../_fuzz_apps.ts";
import { decodePeerBody, encodePeerBody } from "../../cluster/peer_transport.ts";
import { realTimers } from "../../cluster/timers.ts";
import { ArbiterCore, type ArbiterState } from "../../lib/core/arbiter/arbiter.ts";
import { DEFAULT_SETTINGS } from "../../lib/settings.ts";
import { median } from "./lib/stats.ts";

const ROUNDS = Number(process.env.ROUNDS ?? 5);
const PER_ROUND = Number(process.env.PER_ROUND ?? 20_000);
const WARM_UP = 12_000;
const settings = DEFAULT_SETTINGS;
const clock = manualClock(0);
const core = new ArbiterCore({ primaryId: "p1", backupId: "b1", leaseMs: settings.primaryLeaseMs, bootstrapWaitMs: settings.bootstrapWaitMs }, null, 0);
let saved: ArbiterState | null = null;
const ports: ArbiterPorts = {
  store: { load: () => saved, save: (state) => void (saved = structuredClone(state)) },
  clock,
  log: memoryLogger(),
  failStop: (reason) => {
    throw new Error(`arbiter fail-stop: ${reason}`);
  },
};
/** Time inside the backup's peer route (its answer included), summed. */
let backupMs = 0;
const services = new Map<string, LockService>();
const serviceOf = (id: string, peer: string) =>
  pairLockService(id, peer, settings, clock, realTimers, (url, body) => {
    const to = new URL(url).host;
    const text = encodePeerBody(body);
    if (to === "a1") return Promise.resolve(decodePeerBody(answerArbiter(core, text, ports, settings.bodyBytesMax).body));
    return new Promise((done) => {
      // The backup's whole turn (parse, check, apply, ack, encode) is synchronous without a durable log.
      const startMs = performance.now();
      answerPeer(services.get(to)!, settings, text, (answer) => {
        backupMs += performance.now() - startMs;
        done(decodePeerBody(answer));
      });
    });
  });
const [p, b] = [serviceOf("p1", "b1"), serviceOf("b1", "p1")];
services.set("p1", p).set("b1", b);
const tick = async () => {
  clock.advance(settings.tickMs);
  p.tick();
  b.tick();
  await new Promise((resolve) => setTimeout(resolve, 0));
};
const inSync = () => p.replica.status().serving && p.replica.status().backup?.arbiterRecordedInSync === true && b.replica.status().lastIndex === p.replica.status().commitIndex;
for (let i = 0; i < 2_000 && !inSync(); i++) await tick();
if (!inSync()) throw new Error("the pair did not come in sync");
const app = createLockApp(p, { nodeId: "p1", role: "primary", settings });

const BASE = "http://127.0.0.1:7001";
async function post(path: string, body: unknown): Promise<Record<string, unknown>> {
  const text = JSON.stringify(body);
  const response = await app.fetch(new Request(BASE + path, { method: "POST", headers: { "content-type": "application/json", "content-length": String(text.length) }, body: text }));
  const answer = await response.json() as Record<string, unknown>;
  if (response.status >= 300) throw new Error(`${path}: ${response.status} ${JSON.stringify(answer)}`);
  return answer;
}
/** Ticks until `pending` settles: a TTL beyond the arbiter's record waits for a renewal. */
async function ticking<T>(pending: Promise<T>): Promise<T> {
  let settled = false;
  pending.finally(() => settled = true).catch(() => {});
  for (let i = 0; i < 2_000 && !settled; i++) await tick();
  return await pending;
}
const { session, sessionSecret } = await ticking(post("/v1/sessions", { ttlMs: 60_000 })) as { session: string; sessionSecret?: string };
let call = 0;
async function cycles(count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const id = `${(call++).toString(16).padStart(8, "0")}-2f4d-4c1b-9a57-3d2e1f0a9b8c`;
    const grant = await post("/v1/enter", { name: "w1-0", session, sessionSecret, waitMs: 10_000, callId: id });
    await post("/v1/leave", { name: "w1-0", session, sessionSecret, token: grant.token, requestId: id });
    // The servers tick as a driver's timer would; time moves only with them (the session's TTL outlasts the run).
    if (i % 1_000 === 0) await tick();
  }
}
const cpuUs = () => {
  const usage = process.cpuUsage();
  return usage.user + usage.system;
};
await cycles(WARM_UP);
const rounds: number[] = [];
const backupRounds: number[] = [];
for (let round = 0; round < ROUNDS; round++) {
  const startUs = cpuUs();
  backupMs = 0;
  await cycles(PER_ROUND);
  rounds.push((cpuUs() - startUs) / PER_ROUND);
  backupRounds.push(backupMs * 1_000 / PER_ROUND);
}
const [pStatus, bStatus] = [p.replica.status(), b.replica.status()];
if (bStatus.lastIndex < pStatus.commitIndex - 1) throw new Error(`backup behind: ${bStatus.lastIndex} < ${pStatus.commitIndex}`);
p.stop();
b.stop();
process.stdout.write(`replicated pair in process: ${median(rounds).toFixed(1)} µs CPU per acquire+release (rounds: ${rounds.map((r) => r.toFixed(1)).join(", ")}; commit ${pStatus.commitIndex}); of it in the backup's peer route (wall): ${median(backupRounds).toFixed(2)} µs (${backupRounds.map((r) => r.toFixed(2)).join(", ")})\n`);
process.exit(0);
