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
 * Clock track (libfaketime, clock.ts): one node's wall clock stepped, then back; and, not a step,
 * a few nodes whose whole clock runs at a rate for the whole run (`rates`).
 */
import { Prng } from "../../lib/core/prng.ts";
import { DEFAULT_SETTINGS } from "../../lib/settings.ts";
import { sleep } from "../_harness.ts";
import type { HistoryWriter } from "./history.ts";
import { CLOCK_STEP_MAX_S } from "./clock.ts";
import { getJson, LOCK_SERVERS, type NodeId, type Supervisor } from "./supervisor.ts";

/**
 * `serving`: whichever of p1/b1 serves locks when the step starts (resolved at run time).
 * `client`: one of the client processes running then (cli_clients.ts), picked by `pick`.
 */
export type Target = NodeId | "serving" | "client";
/** Process faults (any network), network faults (namespaces only: NetLab), wall-clock steps (libfaketime). */
export type FaultKind = "kill" | "pause" | "cut" | "degrade" | "clock";

/** A link's degradation: `tc netem` delay and jitter, and loss (loss alone without netem). */
export interface LinkSpec {
  delayMs: number;
  jitterMs: number;
  lossPercent: number;
}

export interface Fault {
  kind: FaultKind;
  target: Target;
  /** Client faults: index (drawn from the seed) into the sorted names of the running clients. */
  pick?: number;
  /** cut: more nodes on the target's side (a ring split). */
  with?: NodeId[];
  /** cut: the other side; by default every other node of the target's service (lock or ring). */
  from?: NodeId[];
  /** cut: only the packets from the target's side to the other side are lost. */
  oneWay?: boolean;
  /** degrade: what happens to the target's link. */
  link?: LinkSpec;
  /** clock: the target's wall clock this many seconds off real time, until the heal. */
  offsetS?: number;
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
export const PRIMARY_LEASE_MS = DEFAULT_SETTINGS.primaryLeaseMs;

export type Track = "lock" | "ring" | "client" | "clock";
const TRACKS: Track[] = ["lock", "ring", "client", "clock"];
/** Tracks that always get a kind: the clock track is empty where libfaketime is missing. */
const PROCESS_TRACKS: Track[] = ["lock", "ring", "client"];

interface StepKind {
  name: string;
  track: Track;
  /** "netns": needs the nodes in namespaces (a partition); "degrade": also tc netem or iptables; "faketime": libfaketime. */
  needs?: "netns" | "degrade" | "faketime";
  /** `ring`: the ring's nodes in ring order; `steppable`: the nodes whose wall clock may be stepped (not rated). */
  draw(prng: Prng, ring: NodeId[], steppable: NodeId[]): Omit<FaultStep, "track" | "name" | "quietMs">;
}

const lockServer = (prng: Prng): Target => prng.pick<Target>(["p1", "b1", "serving", "serving"]);
/** A third of the partitions are one-way (the target's packets lost, the others' delivered). */
const oneWay = (prng: Prng) => prng.below(3) === 0;
const link = (prng: Prng): LinkSpec => ({ delayMs: prng.between(5, 150), jitterMs: prng.between(0, 50), lossPercent: prng.between(0, 30) });

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
  { name: "ring-pause", track: "ring", draw: (p, ring) => ({ faults: [{ kind: "pause", target: p.pick(ring) }], durationMs: p.between(100, 4_000) }) },
  { name: "ring-kill", track: "ring", draw: (p, ring) => ({ faults: [{ kind: "kill", target: p.pick(ring) }], durationMs: p.between(200, 3_000) }) },
  // Client processes: a kill -9 is not healed (the client's loop starts its next process); a
  // pause outlives the lease now and then, so its session expires and another client is granted.
  { name: "client-kill", track: "client", draw: (p) => ({ faults: [{ kind: "kill", target: "client", pick: p.below(1_000) }], durationMs: p.between(100, 1_000) }) },
  { name: "client-pause", track: "client", draw: (p) => ({ faults: [{ kind: "pause", target: "client", pick: p.below(1_000) }], durationMs: p.between(100, 4_000) }) },
];

/**
 * Network faults, on namespaces only. Their weights come from a fork of their own, after the
 * process kinds', so a seed's loopback schedule is the one it had before they existed.
 */
export const NET_STEP_KINDS: StepKind[] = [
  {
    name: "isolate-lock",
    track: "lock",
    needs: "netns",
    draw: (p) => ({ faults: [{ kind: "cut", target: p.pick<Target>(["p1", "b1", "serving", "a1"]), oneWay: oneWay(p) }], durationMs: p.between(300, 4_000) }),
  },
  {
    name: "cut-arbiter",
    track: "lock",
    needs: "netns",
    draw: (p) => ({ faults: [{ kind: "cut", target: lockServer(p), from: ["a1"], oneWay: oneWay(p) }], durationMs: p.between(300, 4_000) }),
  },
  {
    name: "degrade-lock",
    track: "lock",
    needs: "degrade",
    draw: (p) => ({ faults: [{ kind: "degrade", target: p.pick<Target>(["p1", "b1", "serving", "a1"]), link: link(p) }], durationMs: p.between(1_000, 5_000) }),
  },
  {
    name: "ring-isolate",
    track: "ring",
    needs: "netns",
    draw: (p, ring) => ({ faults: [{ kind: "cut", target: p.pick(ring), oneWay: oneWay(p) }], durationMs: p.between(500, 5_000) }),
  },
  {
    name: "ring-split",
    track: "ring",
    needs: "netns",
    draw: (p, ring) => {
      // The smaller side: ⌊n/2⌋ nodes (2 of 5), so the other side keeps a majority.
      const rest = [...ring];
      const side: NodeId[] = [];
      for (let k = 0; k < Math.floor(ring.length / 2); k++) side.push(rest.splice(p.below(rest.length), 1)[0]);
      return { faults: [{ kind: "cut", target: side[0], with: side.slice(1) }], durationMs: p.between(500, 5_000) };
    },
  },
  {
    name: "ring-degrade",
    track: "ring",
    needs: "degrade",
    draw: (p, ring) => ({ faults: [{ kind: "degrade", target: p.pick(ring), link: link(p) }], durationMs: p.between(1_000, 5_000) }),
  },
];

/**
 * Clock kinds (libfaketime). Their weights come from a fork of their own, after the network
 * kinds', and their steps from the clock track's fork, so a seed's other schedules stay as they were.
 * A step: seconds, minutes or hours (at most CLOCK_STEP_MAX_S), forward or back.
 */
const clockOffsetS = (p: Prng) => {
  const unitS = p.pick([1, 60, 3_600]);
  return (p.below(2) === 0 ? -1 : 1) * p.between(1, unitS === 3_600 ? CLOCK_STEP_MAX_S / 3_600 : 59) * unitS;
};
export const CLOCK_STEP_KINDS: StepKind[] = [
  {
    name: "clock-step",
    track: "clock",
    needs: "faketime",
    draw: (p, _ring, steppable) => ({ faults: [{ kind: "clock", target: p.pick(steppable), offsetS: clockOffsetS(p) }], durationMs: p.between(1_000, 5_000) }),
  },
];
/** Not a step: its weight is how many nodes run at a rate for the whole run (clock.ts says why not a step). */
export const CLOCK_RATE = "clock-rate";
/**
 * The largest rate error drawn, per mille: half of what the lease argument covers (11 % with the
 * defaults, docs/failover.md Lemma 1). Only the arbiter runs fast too: a fast lock server or ring
 * node would end its clients' sessions and sections before their own clocks do, and the client
 * rule has no margin for rates (docs/chaos.md, "Clock faults").
 */
export const RATE_ERROR_MAX_PERMILLE = 50;
const RATE_ERROR_MIN_PERMILLE = 10;

/** `weight` distinct nodes and their rates: the arbiter 1 ± ρ, every other node 1 − ρ (slow). */
function drawRates(prng: Prng, weight: number, nodes: NodeId[]): Record<NodeId, number> {
  const rates: Record<NodeId, number> = {};
  const rest = [...nodes];
  // One node at least is left to step.
  for (let k = 0; k < weight && rest.length > 1; k++) {
    const id = rest.splice(prng.below(rest.length), 1)[0];
    const errorPermille = prng.between(RATE_ERROR_MIN_PERMILLE, RATE_ERROR_MAX_PERMILLE);
    const fast = id === "a1" && prng.below(2) === 0;
    rates[id] = (1_000 + (fast ? errorPermille : -errorPermille)) / 1_000;
  }
  return rates;
}

export interface Schedule {
  seed: number;
  profile: Record<string, number>;
  /** Kinds that cannot run here, and why (printed on line 1). */
  off: Record<string, string>;
  steps: Record<Track, FaultStep[]>;
  /** clock-rate: the rated nodes and their rates (1.03: 3 % fast), for the whole run. */
  rates: Record<NodeId, number>;
}

export interface ScheduleOptions {
  /** The ring's nodes in order (r1..r3 on loopback, r1..r5 on namespaces). */
  ring: NodeId[];
  /** Null when the nodes run in namespaces, else why not: the network kinds are then off. */
  netnsOff: string | null;
  /** Null when links can be degraded (tc netem, or iptables for loss), else why not. */
  degradeOff: string | null;
  /** Null when node clocks can be faked (libfaketime), else why not; omitted: off, "not asked". */
  clockOff?: string | null;
  /** Only these kinds, weight 1 each, and each track's first steps take them in turn (a test's coverage). */
  only?: string[];
  stepsMax?: number;
}

export const ALL_STEP_KINDS = [...STEP_KINDS, ...NET_STEP_KINDS, ...CLOCK_STEP_KINDS];
/** Every kind a profile weighs (and --only names): the step kinds and clock-rate. */
export const FAULT_KIND_NAMES = [...ALL_STEP_KINDS.map((k) => k.name), CLOCK_RATE];

/** Enough steps to fill `seconds` of run time (each track), at most `stepsMax` per track. */
export function makeSchedule(seed: number, seconds: number, options: ScheduleOptions): Schedule {
  const { ring, stepsMax = 500 } = options;
  const root = new Prng(seed);
  const weights = root.fork("profile");
  const netWeights = root.fork("net-profile");
  const clockWeights = root.fork("clock-profile");
  const profile: Record<string, number> = {};
  const off: Record<string, string> = {};
  for (const kind of STEP_KINDS) profile[kind.name] = weights.pick([0, 1, 2, 3, 3]);
  for (const kind of NET_STEP_KINDS) {
    profile[kind.name] = netWeights.pick([0, 1, 2, 3, 3]);
    const why = options.netnsOff ?? (kind.needs === "degrade" ? options.degradeOff : null);
    if (why !== null) {
      profile[kind.name] = 0;
      off[kind.name] = why;
    }
  }
  const clockOff = options.clockOff === undefined ? "not asked" : options.clockOff;
  for (const name of [...CLOCK_STEP_KINDS.map((k) => k.name), CLOCK_RATE]) {
    profile[name] = clockWeights.pick([0, 1, 2, 3, 3]);
    if (clockOff !== null) {
      profile[name] = 0;
      off[name] = clockOff;
    }
  }
  if (options.only) {
    for (const name of options.only) {
      if (!(name in profile)) throw new Error(`no fault kind ${name}`);
      if (off[name]) throw new Error(`fault kind ${name} is off here: ${off[name]}`);
    }
    for (const name of Object.keys(profile)) profile[name] = options.only.includes(name) ? 1 : 0;
  }
  // Each track keeps at least one kind, so no seed runs without faults (unless --only says so).
  for (const track of PROCESS_TRACKS) {
    const kinds = STEP_KINDS.filter((k) => k.track === track);
    if (!options.only && ALL_STEP_KINDS.every((k) => k.track !== track || profile[k.name] === 0)) profile[weights.pick(kinds).name] = 1;
  }
  const nodes = ["a1", "p1", "b1", ...ring];
  const rates = drawRates(root.fork("clock-rates"), profile[CLOCK_RATE], nodes);
  const steppable = nodes.filter((id) => rates[id] === undefined);
  const steps: Record<Track, FaultStep[]> = { lock: [], ring: [], client: [], clock: [] };
  for (const track of TRACKS) {
    const prng = root.fork(track);
    const kinds = ALL_STEP_KINDS.filter((k) => k.track === track && profile[k.name] > 0);
    if (kinds.length === 0) continue;
    const total = kinds.reduce((sum, k) => sum + profile[k.name], 0);
    let plannedMs = 0;
    for (let i = 0; i < stepsMax && plannedMs < seconds * 1_000; i++) {
      let ticket = prng.below(total);
      // With --only, the first steps take each kind once, so a short run applies every one.
      const kind = options.only && i < kinds.length ? kinds[i] : kinds.find((k) => (ticket -= profile[k.name]) < 0)!;
      const quietMs = track === "lock" ? prng.between(300, 3_000) : prng.between(1_000, 4_000);
      const step: FaultStep = { track, name: kind.name, quietMs, ...kind.draw(prng, ring, steppable) };
      steps[track].push(step);
      plannedMs += step.durationMs + step.quietMs;
    }
  }
  return { seed, profile, off, steps, rates };
}

/** One fault in words: `kill p1`, `cut r2+r4 | rest`, `cut p1 -> a1 (one-way)`, `degrade b1 (30±5 ms, 10% loss)`, `clock r2 -3600 s`. */
export function describeFault(f: Fault): string {
  if (f.kind === "clock") return `clock ${f.target} ${f.offsetS! < 0 ? "" : "+"}${f.offsetS} s`;
  if (f.kind === "cut") {
    const side = [f.target, ...(f.with ?? [])].join("+");
    return `cut ${side} ${f.oneWay ? "->" : "|"} ${f.from?.join("+") ?? "rest"}${f.oneWay ? " (one-way)" : ""}`;
  }
  if (f.kind === "degrade" && f.link) {
    const delay = f.link.delayMs + f.link.jitterMs > 0 ? `${f.link.delayMs}±${f.link.jitterMs} ms, ` : "";
    return `degrade ${f.target} (${delay}${f.link.lossPercent}% loss)`;
  }
  return `${f.kind} ${f.target}`;
}

export function describeStep(step: FaultStep): string {
  return `${step.faults.map(describeFault).join(" + ")} for ${step.durationMs} ms, then ${step.quietMs} ms quiet`;
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
  /** How links are degraded (degradeSupport in tests/_netns.ts); null: no degrade kind runs. */
  degradeMode?: "netem" | "iptables" | null;
}

/** The other side of a cut: `from`, or every other node of the target's service. */
function otherSide(fault: Fault, side: NodeId[], supervisor: Supervisor): NodeId[] {
  if (fault.from) return fault.from;
  const service = supervisor.ringNodes.includes(side[0]) ? supervisor.ringNodes : ["p1", "b1", "a1"];
  return service.filter((id) => !side.includes(id));
}

/** Runs one track's steps until the deadline; every fault is healed before this returns. */
export async function runTrack(steps: FaultStep[], options: NemesisOptions): Promise<number> {
  const { supervisor, history, print } = options;
  const lab = supervisor.lab;
  let done = 0;
  const remaining = () => options.deadlineMs - Date.now();
  for (const step of steps) {
    if (remaining() <= 0 || options.stopped()) break;
    const applied: Array<{ heal: () => Promise<string>; finish: (type: "ok" | "info", more?: object) => void }> = [];
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
          // A killed client is not restarted: its loop starts its next process.
          const resume = fault.kind === "pause";
          applied.push({ heal: () => Promise.resolve(resume ? (supervisor.signalClient(name, "SIGCONT"), `~ resume ${name}`) : ""), finish });
          continue;
        }
        // Which lock server serves decides whether this fault costs a takeover (summary.ts).
        const lockServer = fault.target === "serving" || LOCK_SERVERS.includes(fault.target);
        const serving = lockServer ? await servingNow(supervisor) : undefined;
        const id = fault.target === "serving" ? serving! : fault.target;
        const network = fault.kind === "cut" || fault.kind === "degrade";
        if (network && !lab) throw new Error(`nemesis: ${fault.kind} needs the nodes in namespaces`);
        if (fault.kind === "clock" && !supervisor.clocks) throw new Error("nemesis: a clock step needs libfaketime");
        if (!network && supervisor.state(id) !== "up") continue;
        // Without netem only the loss applies: the printout and the history say so.
        const link = fault.link && options.degradeMode !== "netem" ? { delayMs: 0, jitterMs: 0, lossPercent: fault.link.lossPercent } : fault.link;
        const resolved = { ...fault, target: id, link };
        const finish = history.invoke({
          op: "fault",
          client: "nemesis",
          fault: `${fault.kind}${fault.oneWay ? "-one-way" : ""}${fault.target === "serving" ? "-serving" : ""}`,
          node: id,
          step: step.name,
          ...(serving === undefined ? {} : { primary: id === serving }),
          ...(network || fault.kind === "clock" ? { detail: describeFault(resolved) } : {}),
        });
        let heal: () => Promise<string>;
        if (fault.kind === "kill") {
          await supervisor.kill(id);
          heal = async () => {
            const up = await supervisor.start(id);
            if (!up) throw new Error(`${id} restart not healthy within 15 s`);
            return `^ start  ${id}`;
          };
        } else if (fault.kind === "pause") {
          supervisor.pause(id);
          heal = () => Promise.resolve((supervisor.resume(id), `~ resume ${id}`));
        } else if (fault.kind === "cut") {
          const side = [id, ...(fault.with ?? [])];
          const at = (ids: NodeId[]) => ids.map((n) => supervisor.index(n));
          const other = otherSide(fault, side, supervisor);
          const cuts = fault.oneWay ? lab!.cutOneWay(at(side), at(other)) : lab!.cut(at(side), at(other));
          heal = () => Promise.resolve((lab!.healCut(cuts), `~ mend   ${side.join("+")} ${fault.oneWay ? "->" : "|"} ${other.join("+")}`));
        } else if (fault.kind === "clock") {
          // The node reads the file on its next wall-clock call: no restart, no signal.
          supervisor.clocks!.step(id, fault.offsetS!);
          heal = () => Promise.resolve((supervisor.clocks!.step(id, 0), `~ clock  ${id} back to real time`));
        } else {
          lab!.degrade(supervisor.index(id), link!, options.degradeMode === "netem");
          heal = () => Promise.resolve((lab!.undegrade(supervisor.index(id)), `~ restore ${id}'s link`));
        }
        const mark = { kill: "!", pause: "z", cut: "/", degrade: "%", clock: "@" }[fault.kind];
        print(`${mark} ${describeFault(resolved)}${fault.target === "serving" ? " (serving)" : ""} for ${step.durationMs} ms [${step.name}]`);
        applied.push({ heal, finish });
      }
      await sleep(Math.max(0, Math.min(step.durationMs, remaining())));
    } finally {
      // Heal in reverse order: the arbiter of a double step comes back last.
      for (const { heal, finish } of applied.reverse()) {
        try {
          const line = await heal();
          if (line) print(line);
          finish("ok");
        } catch (error) {
          print(`~ heal failed: ${(error as Error).message}`);
          finish("info", { error: (error as Error).message });
        }
      }
    }
    done += 1;
    await sleep(Math.max(0, Math.min(step.quietMs, remaining())));
  }
  return done;
}
