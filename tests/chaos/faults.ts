/**
 * The nemesis: a fault schedule drawn from the seed, and its execution on the supervisor.
 *
 * The seed first draws a profile (a weight per fault kind, some of them zero: swarm testing, as
 * TigerBeetle's VOPR draws its "weather"), then the schedule: a list of steps per track. The lock
 * track and the ring track run side by side. One step applies its faults, waits `durationMs`,
 * heals them (SIGCONT, or restart on the same port), then rests `quietMs`. The seed fixes the
 * schedule; the timing around it is real and not replayable.
 *
 * Lock track: at most one lock server (p1 or b1) is faulty at a time. The arbiter may be faulty
 * alone or together with one lock server ("double" steps): safety must hold then too, and
 * liveness is owed under every single fault, the arbiter's included (check.ts: grant-gap).
 * Ring track: pauses and restarts of any ring node, the first one of the file included (no node
 * is special since the view change: a majority of r1..r3 goes on without the faulted one, which
 * rejoins in a new epoch when it is back).
 */
import { Prng } from "../../lib/core/prng.ts";
import { sleep } from "../_harness.ts";
import type { HistoryWriter } from "./history.ts";
import { getJson, LOCK_SERVERS, type NodeId, type Supervisor } from "./supervisor.ts";

/**
 * `serving`: whichever of p1/b1 serves locks when the step starts (resolved at run time).
 * `client`: one of the client processes running then (cli_clients.ts), picked by `pick`.
 */
export type Target = NodeId | "serving" | "client";
export type FaultKind = "kill" | "pause";

export interface Fault {
  kind: FaultKind;
  target: Target;
  /** Client faults: index (drawn from the seed) into the sorted names of the running clients. */
  pick?: number;
}

export interface FaultStep {
  track: Track;
  /** Profile entry this step was drawn from (for the printout). */
  name: string;
  faults: Fault[];
  durationMs: number;
  quietMs: number;
}

/** primaryLeaseMs of the chaos cluster (the default): "short" pauses stay below it. */
export const PRIMARY_LEASE_MS = 500;

export type Track = "lock" | "ring" | "client";
const TRACKS: Track[] = ["lock", "ring", "client"];

interface StepKind {
  name: string;
  track: Track;
  draw(prng: Prng): Omit<FaultStep, "track" | "name" | "quietMs">;
}

const lockServer = (prng: Prng): Target => prng.pick<Target>(["p1", "b1", "serving", "serving"]);

export const STEP_KINDS: StepKind[] = [
  { name: "kill-server", track: "lock", draw: (p) => ({ faults: [{ kind: "kill", target: lockServer(p) }], durationMs: p.between(200, 3_000) }) },
  {
    name: "pause-short",
    track: "lock",
    draw: (p) => ({ faults: [{ kind: "pause", target: lockServer(p) }], durationMs: p.between(50, PRIMARY_LEASE_MS - 100) }),
  },
  {
    name: "pause-long",
    track: "lock",
    draw: (p) => ({ faults: [{ kind: "pause", target: lockServer(p) }], durationMs: p.between(PRIMARY_LEASE_MS + 200, 4_000) }),
  },
  { name: "kill-arbiter", track: "lock", draw: (p) => ({ faults: [{ kind: "kill", target: "a1" }], durationMs: p.between(200, 2_500) }) },
  { name: "pause-arbiter", track: "lock", draw: (p) => ({ faults: [{ kind: "pause", target: "a1" }], durationMs: p.between(100, 2_500) }) },
  {
    name: "double",
    track: "lock",
    draw: (p) => ({
      faults: [{ kind: p.pick<FaultKind>(["kill", "pause"]), target: "a1" }, { kind: p.pick<FaultKind>(["kill", "pause"]), target: lockServer(p) }],
      durationMs: p.between(300, 3_000),
    }),
  },
  { name: "ring-pause", track: "ring", draw: (p) => ({ faults: [{ kind: "pause", target: p.pick<NodeId>(["r1", "r2", "r3"]) }], durationMs: p.between(100, 4_000) }) },
  { name: "ring-kill", track: "ring", draw: (p) => ({ faults: [{ kind: "kill", target: p.pick<NodeId>(["r1", "r2", "r3"]) }], durationMs: p.between(200, 3_000) }) },
  // Client processes: a kill -9 is not healed (the client's loop starts its next process); a
  // pause outlives the lease now and then, so its session expires and another client is granted.
  { name: "client-kill", track: "client", draw: (p) => ({ faults: [{ kind: "kill", target: "client", pick: p.below(1_000) }], durationMs: p.between(100, 1_000) }) },
  { name: "client-pause", track: "client", draw: (p) => ({ faults: [{ kind: "pause", target: "client", pick: p.below(1_000) }], durationMs: p.between(100, 4_000) }) },
];

export interface Schedule {
  seed: number;
  profile: Record<string, number>;
  steps: Record<Track, FaultStep[]>;
}

/** Enough steps to fill `seconds` of run time (each track), at most `stepsMax` per track. */
export function makeSchedule(seed: number, seconds: number, stepsMax = 500): Schedule {
  const root = new Prng(seed);
  const weights = root.fork("profile");
  const profile: Record<string, number> = {};
  for (const kind of STEP_KINDS) profile[kind.name] = weights.pick([0, 1, 2, 3, 3]);
  // Each track keeps at least one kind, so no seed runs without faults.
  for (const track of TRACKS) {
    const kinds = STEP_KINDS.filter((k) => k.track === track);
    if (kinds.every((k) => profile[k.name] === 0)) profile[weights.pick(kinds).name] = 1;
  }
  const steps: Record<Track, FaultStep[]> = { lock: [], ring: [], client: [] };
  for (const track of TRACKS) {
    const prng = root.fork(track);
    const kinds = STEP_KINDS.filter((k) => k.track === track && profile[k.name] > 0);
    const total = kinds.reduce((sum, k) => sum + profile[k.name], 0);
    let plannedMs = 0;
    for (let i = 0; i < stepsMax && plannedMs < seconds * 1_000; i++) {
      let ticket = prng.below(total);
      const kind = kinds.find((k) => (ticket -= profile[k.name]) < 0)!;
      const quietMs = track === "lock" ? prng.between(300, 3_000) : prng.between(1_000, 4_000);
      const step: FaultStep = { track, name: kind.name, quietMs, ...kind.draw(prng) };
      steps[track].push(step);
      plannedMs += step.durationMs + step.quietMs;
    }
  }
  return { seed, profile, steps };
}

export function describeStep(step: FaultStep): string {
  return `${step.faults.map((f) => `${f.kind} ${f.target}`).join(" + ")} for ${step.durationMs} ms, then ${step.quietMs} ms quiet`;
}

/** Which of p1/b1 serves now (by its status); p1 when neither answers as serving. */
async function servingNow(supervisor: Supervisor): Promise<NodeId> {
  for (const id of ["p1", "b1"] as NodeId[]) {
    if (supervisor.state(id) !== "up") continue;
    const status = await getJson<{ server?: { serving?: boolean } }>(`${supervisor.url(id)}/v1/status`, 300);
    if (status?.server?.serving) return id;
  }
  return "p1";
}

export interface NemesisOptions {
  supervisor: Supervisor;
  history: HistoryWriter;
  /** Prints one line per fault and heal. */
  print: (line: string) => void;
  /** No step starts after this (wall clock ms); a step running then is cut short and healed. */
  deadlineMs: number;
  /** Set by the runner to stop early (Ctrl-C). */
  stopped: () => boolean;
  /** Told of a client process's fault just before its signal (cli_clients.ts onClientFault). */
  onClientFault?: (client: string, fault: FaultKind) => void;
}

/** Runs one track's steps until the deadline; every fault is healed before this returns. */
export async function runTrack(steps: FaultStep[], options: NemesisOptions): Promise<number> {
  const { supervisor, history, print } = options;
  let done = 0;
  const remaining = () => options.deadlineMs - Date.now();
  for (const step of steps) {
    if (remaining() <= 0 || options.stopped()) break;
    const applied: Array<{ kind: FaultKind; id: string; client: boolean; finish: (type: "ok" | "info", more?: object) => void }> = [];
    try {
      for (const fault of step.faults) {
        if (fault.target === "client") {
          const running = supervisor.runningClients();
          if (running.length === 0) continue;
          const name = running[(fault.pick ?? 0) % running.length];
          const finish = history.invoke({ op: "fault", client: "nemesis", fault: fault.kind, node: name, step: step.name });
          // Before the signal: the client's hold ends for the checker no later than the fault.
          options.onClientFault?.(name, fault.kind);
          supervisor.signalClient(name, fault.kind === "kill" ? "SIGKILL" : "SIGSTOP");
          print(`${fault.kind === "kill" ? "!" : "z"} ${fault.kind.padEnd(5)} ${name} for ${step.durationMs} ms [${step.name}]`);
          applied.push({ kind: fault.kind, id: name, client: true, finish });
          continue;
        }
        // Which lock server serves decides whether this fault costs a takeover (summary.ts).
        const lockServer = fault.target === "serving" || LOCK_SERVERS.includes(fault.target);
        const serving = lockServer ? await servingNow(supervisor) : undefined;
        const id = fault.target === "serving" ? serving! : fault.target;
        if (supervisor.state(id) !== "up") continue;
        const finish = history.invoke({
          op: "fault",
          client: "nemesis",
          fault: `${fault.kind}${fault.target === "serving" ? "-serving" : ""}`,
          node: id,
          step: step.name,
          ...(serving === undefined ? {} : { primary: id === serving }),
        });
        if (fault.kind === "kill") await supervisor.kill(id);
        else supervisor.pause(id);
        print(`${fault.kind === "kill" ? "!" : "z"} ${fault.kind.padEnd(5)} ${id}${fault.target === "serving" ? " (serving)" : ""} for ${step.durationMs} ms [${step.name}]`);
        applied.push({ kind: fault.kind, id, client: false, finish });
      }
      await sleep(Math.max(0, Math.min(step.durationMs, remaining())));
    } finally {
      // Heal in reverse order: the arbiter of a double step comes back last.
      for (const { kind, id, client, finish } of applied.reverse()) {
        if (client) {
          // A killed client is not restarted: its loop starts its next process.
          if (kind === "pause") {
            supervisor.signalClient(id, "SIGCONT");
            print(`~ resume ${id}`);
          }
          finish("ok");
        } else if (kind === "pause") {
          supervisor.resume(id as NodeId);
          print(`~ resume ${id}`);
          finish("ok");
        } else {
          const up = await supervisor.start(id as NodeId);
          print(`^ start  ${id}${up ? "" : " (NOT healthy within 15 s)"}`);
          finish(up ? "ok" : "info", up ? {} : { error: "restart not healthy" });
        }
      }
    }
    done += 1;
    await sleep(Math.max(0, Math.min(step.quietMs, remaining())));
  }
  return done;
}
