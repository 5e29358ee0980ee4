/**
 * CMD of the chaos clients that run as processes (cli_clients.ts): run by `mutexd lock NAME -- …`
 * or `mutexd ring lock -- …`, it does one guarded increment under MUTEXD_TOKEN, as the in-process
 * clients do (workload.ts), and records each step in the run's history through the hub (hub.ts):
 * - lock (CHAOS_LOCK=l<N>): read the counter with the token → hold CHAOS_HOLD_MS → write
 *   counter + 1 with the token, both at the hub's guarded counter (a stale token is refused: fail);
 * - ring (CHAOS_LOCK=ring): get "counter" at MUTEXD_RING_SERVER → hold → put counter + 1 under the
 *   fence MUTEXD_TOKEN (a fence no longer the node's running section is refused: fail).
 * A step whose answer never came (the hub or node unreachable, this process killed) stays open in
 * the history: unknown. Not a test file. Every request has a timeout (REQUEST_TIMEOUT_MS).
 */
import process from "node:process";
import { connectRing } from "../../lib/client/ring_client.ts";
import { MutexdError } from "../../lib/wire/errors.ts";

const REQUEST_TIMEOUT_MS = 2_000;
const env = (name: string): string => {
  const value = process.env[name];
  if (value === undefined) throw new Error(`cli_step: ${name} is not set`);
  return value;
};
const hub = env("CHAOS_HUB");
const client = env("CHAOS_CLIENT");
const listener = env("CHAOS_LISTENER");
const lock = env("CHAOS_LOCK");
const holdMs = Number(env("CHAOS_HOLD_MS"));
const token = Number(env("MUTEXD_TOKEN"));

async function post(path: string, body: object): Promise<{ status: number; json: Record<string, unknown> }> {
  const response = await fetch(`${hub}${path}`, { method: "POST", body: JSON.stringify(body), signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  return { status: response.status, json: await response.json() };
}

/** Invokes a step in the history, runs it, completes it: ok with its fields, or fail / info. */
async function step(fields: object, run: () => Promise<{ type: "ok" | "fail" | "info"; more?: object }>): Promise<boolean> {
  const { json } = await post("/invoke", { client, lock, token, ...fields });
  let outcome: { type: "ok" | "fail" | "info"; more?: object };
  try {
    outcome = await run();
  } catch (error) {
    outcome = { type: "info", more: { error: String((error as Error).message) } };
  }
  await post("/done", { key: json.key, type: outcome.type, ...outcome.more });
  return outcome.type === "ok";
}

// A ring section's lease is fixed: its end (MUTEXD_DEADLINE, this machine's wall clock, the
// history's) ends the hold for the checker even if the loss is heard late. A lock's lease is
// renewed while CMD runs, so its deadline at the start is no end.
const leaseEnd = lock === "ring" && process.env.MUTEXD_DEADLINE ? Date.parse(process.env.MUTEXD_DEADLINE) : undefined;
// mutexd stops CMD with SIGTERM when its lock is lost (its lease ran out by its own count, or the
// lock was force-released): the moment the holder is told, which ends its hold for the checker.
// Said to the hub at once, then CMD ends (SIGKILL follows after --grace anyway); the exit that the
// runner sees later would end the hold too late (a mutex "overlap" of a few ms under load).
process.on("SIGTERM", () => {
  const at = Date.now();
  void post("/stopped", { listener, at }).catch(() => {}).finally(() => process.exit(143));
});
await post("/entered", { listener, token, pid: process.pid, ...(leaseEnd === undefined || Number.isNaN(leaseEnd) ? {} : { leaseEnd }) });
try {
  if (lock === "ring") {
    const node = env("CHAOS_NODE");
    const ring = connectRing({ server: env("MUTEXD_RING_SERVER"), requestTimeoutMs: REQUEST_TIMEOUT_MS });
    let value = 0;
    const read = await step({ op: "ring-read", node }, async () => {
      value = Number((await ring.get("counter"))?.value ?? "0");
      return { type: "ok", more: { value } };
    });
    // The hold between read and write (seeded, sometimes past the lease): workload, not a wait.
    await new Promise((resolve) => setTimeout(resolve, holdMs));
    if (read) {
      await step({ op: "ring-put", node, value: value + 1 }, async () => {
        try {
          await ring.put(token, "counter", String(value + 1));
          return { type: "ok" };
        } catch (error) {
          const refused = error instanceof MutexdError && (error.code === "not_in_section" || error.code === "lock_lost");
          return { type: refused ? "fail" : "info", more: { error: String((error as Error).message) } };
        }
      });
    }
  } else {
    let value = 0;
    const counter = async (more: object) => {
      const { status, json } = await post("/counter", { lock, token, ...more });
      if (status === 409) return { type: "fail" as const, more: { error: String(json.error) } };
      if (status !== 200) return { type: "info" as const, more: { error: `hub answered ${status}` } };
      if (typeof json.value === "number") value = json.value;
      return { type: "ok" as const, more: typeof json.value === "number" ? { value } : {} };
    };
    const read = await step({ op: "read" }, () => counter({}));
    // The hold between read and write (seeded, sometimes past the lease): workload, not a wait.
    await new Promise((resolve) => setTimeout(resolve, holdMs));
    if (read) await step({ op: "write", value: value + 1 }, () => counter({ value: value + 1 }));
  }
} finally {
  await post("/leaving", { listener });
}
