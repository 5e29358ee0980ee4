/**
 * Chaos clients as real processes (issue 13): each is a loop in the runner that starts
 * `mutexd lock NAME -- CMD` (or `mutexd ring lock -- CMD`), CMD being tests/chaos/cli_step.ts,
 * waits for it to exit, and starts the next. The supervisor tracks every such process by PID, so
 * the nemesis's "client" steps kill -9 or SIGSTOP them (faults.ts).
 *
 * History: the runner writes the `acquire` (`ring-enter`) invoke before it starts the process;
 * CMD's first word through the hub completes it with its token; CMD's reads and writes are its
 * own records (cli_step.ts); its last word opens the `release` (`ring-release`), which the process's
 * exit status completes (0: ok, else unknown). Client names start with "cli-" (summary.ts counts
 * them apart).
 *
 * A client faulted by the nemesis cannot be held to its lease: a stopped process sends no
 * keepalive, so its session may expire and the lock go to another client, as it should. So a
 * fault while the client holds its lock ends its hold for the checker (a `lost` event at the
 * fault), and a grant that reaches CMD after a fault of this round is recorded `info` (it may
 * have expired before CMD ran). What such a client still writes is fenced by its token: the
 * storage server (hub.ts) or the ring node must refuse it, and the counters must stay exact.
 */
import { join } from "node:path";
import { mutexdArgv, ROOT, sleep } from "../_harness.ts";
import type { ChaosHub } from "./hub.ts";
import type { HistoryRecord } from "./history.ts";
import type { Supervisor } from "./supervisor.ts";
import { OPS_PER_CLIENT_MAX, type WorkloadContext } from "./workload.ts";

/** argv that runs cli_step.ts under the runtime running the chaos runner. */
function stepArgv(): string[] {
  return [...mutexdArgv().slice(0, -1), join(ROOT, "tests/chaos/cli_step.ts")];
}

export interface CliClientOptions {
  /** "cli-l0", "cli-r0", …: the name in the history and the supervisor. */
  client: string;
  /** argv prefix of mutexd (the runner's binary). */
  mutexd: string[];
  supervisor: Supervisor;
  hub: ChaosHub;
  /** Lock clients: the lock names and the cluster file. */
  locks?: string[];
  clusterFile?: string;
  /**
   * Ring clients: the ring nodes and their URLs; round k asks the k-th (mod length), so one client
   * process reaches every ring node over a run.
   */
  ringNodes?: Array<{ node: string; server: string }>;
}

/** Per round: the client's hold, as far as the history knows it. */
interface Round {
  faulted: boolean;
  /** The client process was killed -9: its CMD may run on, an orphan. */
  killed: boolean;
  acquired: boolean;
  holding: boolean;
  token?: number;
  pid?: number;
  release?: (type: "ok" | "info", more?: Partial<HistoryRecord>) => void;
}

/** Called by the nemesis when it faults a client process (faults.ts). */
export type ClientFaultHook = (client: string, fault: string) => void;

/** Hooks of the running client loops by name, for the nemesis. */
const rounds = new Map<string, (fault: string) => void>();

export const onClientFault: ClientFaultHook = (client, fault) => rounds.get(client)?.(fault);

/** One process client's loop; returns how many of its processes exited 0. */
export async function cliWorker(ctx: WorkloadContext, o: CliClientOptions): Promise<number> {
  const { history, prng } = ctx;
  const ring = o.ringNodes !== undefined && o.ringNodes.length > 0;
  const names = ring ? { acquire: "ring-enter", release: "ring-release", lost: "ring-lost" } as const : { acquire: "acquire", release: "release", lost: "lost" } as const;
  let clean = 0;
  for (let op = 0; op < OPS_PER_CLIENT_MAX && !ctx.stopped(); op++) {
    const lock = ring ? "ring" : prng.pick(o.locks!);
    const leaseMs = ring ? prng.pick([1_000, 2_000, 3_000]) : prng.pick([1_500, 2_000, 3_000, 5_000]);
    const waitMs = prng.between(200, 4_000);
    // Longer holds than the in-process clients' (0-30 ms), so a pause of the nemesis often falls
    // between CMD's read and its write; one in five outlives the lease.
    const holdMs = prng.chance(0.2) ? prng.between(leaseMs / 2, leaseMs * 1.5) : prng.between(0, 200);
    const at = ring ? o.ringNodes![op % o.ringNodes!.length] : undefined;
    const where = at ? { node: at.node } : {};
    const acquire = history.invoke({ op: names.acquire, client: o.client, lock, leaseMs, ...where });
    const round: Round = { faulted: false, killed: false, acquired: false, holding: false };
    const lost = (error: string, atMs?: number) => {
      round.holding = false;
      history.event({ op: names.lost, client: o.client, lock, token: round.token, ...where, error }, atMs === undefined ? undefined : { startMs: atMs, endMs: atMs });
    };
    rounds.set(o.client, (fault) => {
      round.faulted = true;
      round.killed ||= fault === "kill";
      if (round.holding) lost(`${fault} by the nemesis: its lease may run out`);
    });
    // One listener per round: a CMD orphaned by a kill -9 of its client speaks to no later round.
    const listener = `${o.client}#${op}`;
    o.hub.listen(listener, {
      entered: (token, pid, leaseEndMs) => {
        if (round.acquired) return;
        o.supervisor.trackCommand(o.client, pid, true);
        round.pid = pid;
        round.token = token;
        round.acquired = true;
        if (round.faulted) {
          acquire("info", { token, error: "granted to a client the nemesis had faulted: the grant may have expired" });
        } else {
          acquire("ok", { token, ...(leaseEndMs === undefined ? {} : { leaseEnd: leaseEndMs }) });
          round.holding = true;
        }
      },
      leaving: () => {
        if (round.pid !== undefined) o.supervisor.trackCommand(o.client, round.pid, false);
        if (round.holding) {
          round.holding = false;
          round.release = history.invoke({ op: names.release, client: o.client, lock, token: round.token, ...where });
        }
      },
      // mutexd told CMD to stop (SIGTERM): the lock was lost for its holder then.
      stopped: (atMs) => {
        if (round.holding) lost("CMD stopped by mutexd (SIGTERM): the lock was lost", atMs);
      },
    });
    const argv = ring
      ? [...o.mutexd, "ring", "lock", "--server", at!.server, "--wait", `${waitMs}ms`, "--lease", `${leaseMs}ms`, "--grace", "500ms", "--", ...stepArgv()]
      : [...o.mutexd, "lock", lock, "--config", o.clusterFile!, "--ttl", `${leaseMs}ms`, "--wait", `${waitMs}ms`, "--grace", "500ms", "--", ...stepArgv()];
    const proc = o.supervisor.startClient(o.client, argv, {
      CHAOS_HUB: o.hub.url,
      CHAOS_CLIENT: o.client,
      CHAOS_LISTENER: listener,
      CHAOS_LOCK: lock,
      CHAOS_HOLD_MS: String(holdMs),
      ...(at ? { CHAOS_NODE: at.node } : {}),
    });
    if (!proc) {
      acquire("fail", { error: "the run is stopping" });
      break;
    }
    const status = await proc.exited;
    o.hub.unlisten(listener);
    // A client that exited by itself waited for its CMD: that PID is gone, never to be signalled.
    if (!round.killed && round.pid !== undefined) o.supervisor.trackCommand(o.client, round.pid, false);
    if (!round.acquired) {
      // 3: not acquired (taken, --wait ran out); anything else may have been granted unseen.
      acquire(status === 3 ? "fail" : "info", { error: `exit ${status}` });
    } else if (round.release) {
      round.release(status === 0 ? "ok" : "info", status === 0 ? {} : { error: `exit ${status}` });
    } else if (round.holding) {
      lost(`exit ${status} before CMD finished`);
    }
    if (status === 0) clean += 1;
    rounds.delete(o.client);
    // The client's think time between rounds (seeded), as the in-process clients have: workload, not a wait.
    await sleep(prng.between(10, 200));
  }
  return clean;
}
