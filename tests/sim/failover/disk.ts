/**
 * The failover kind's durable profile (`--set failover.durable=1`): each lock server runs the
 * real DurableLog (cluster/lock/durable_log.ts) on this simulated disk, and the profile adds two
 * faults of its own.
 *
 * The disk holds the two files' texts (they survive a crash of the process). A write (an append
 * and its fsync, or a snapshot replacement) takes virtual time; a crash while it runs loses it,
 * or, for an append, may leave any prefix of it (whole lines and a torn one: what the OS wrote
 * back on its own before the fsync), and a replacement may have reached its rename or not. A
 * disk told to refuse fails the next write, and the server fail-stops (exit 70; the operator's
 * restart comes later). Not modelled, since nothing survives it: a disk that loses writes it had
 * acknowledged (an fsync that lies); docs/failover.md says so.
 *
 * Its faults are scheduled here, from their own fork of the run's generator, not through the
 * profile's fault list: adding them there would shift the weather every saved seed of the
 * failover kind was saved with.
 * - all-crash: fp, fb and fa crash together (a power cut), each restarts 0..3000 ms later;
 * - disk-refuse: one server's disk refuses its next write.
 */
import type { LogDisk } from "../../../cluster/lock/durable_log.ts";
import type { Prng } from "../../../lib/core/prng.ts";
import type { Actor } from "../actor.ts";
import type { Sim } from "../simulator.ts";

export class SimLogDisk implements LogDisk {
  /** The files on disk: they outlive the process. */
  snapshot: string | undefined;
  log = "";
  /** The write running now; what a crash makes of it depends on its kind. */
  private running: { kind: "append" | "replace"; text: string } | null = null;
  private refuse = false;
  /** The server process whose disk it is (set by the server before its first start). */
  private actor: Actor | undefined;

  constructor(private readonly prng: Prng, private readonly latencyMs: readonly [number, number]) {}

  attach(actor: Actor): void {
    this.actor = actor;
  }

  append(text: string, done: (error: Error | null) => void): void {
    this.run("append", text, () => {
      this.log += text;
    }, done);
  }

  replace(parts: string[], done: (error: Error | null) => void): void {
    const text = parts.join("");
    this.run("replace", text, () => {
      this.snapshot = text;
      this.log = "";
    }, done);
  }

  /** The next write fails (ENOSPC, EIO). */
  refuseNextWrite(): void {
    this.refuse = true;
  }

  /** The process died: what its running write left on disk. */
  crashed(): void {
    const running = this.running;
    this.running = null;
    if (!running) return;
    if (running.kind === "append") {
      this.log += running.text.slice(0, this.prng.between(0, running.text.length - 1));
    } else if (this.prng.chance(0.5)) {
      this.snapshot = running.text; // the rename was done; the new log not yet written to
      this.log = "";
    }
  }

  private run(kind: "append" | "replace", text: string, apply: () => void, done: (error: Error | null) => void): void {
    this.running = { kind, text };
    // In the process's incarnation: a crash before the end cancels it (and `crashed` runs).
    const actor = this.actor!;
    actor.after(this.prng.between(...this.latencyMs), () => {
      this.running = null;
      if (this.refuse && actor.sim.phase === "safety") {
        this.refuse = false;
        actor.sim.log(actor.id, "!", `disk refuses the ${kind}`);
        return done(new Error(`simulated disk refuses the ${kind}`));
      }
      apply();
      done(null);
    });
  }
}

/** Schedules the durable profile's faults (see the header) while the safety phase lasts. */
export function scheduleDurableFaults(sim: Sim, prng: Prng, actors: { servers: Actor[]; arbiter: Actor; disks: SimLogDisk[] }): void {
  const rates = { allCrash: prng.between(2, 10) / 100, diskRefuse: prng.between(2, 10) / 100 };
  sim.log("failover", "*", `durable profile: all-crash ${rates.allCrash}/s, disk-refuse ${rates.diskRefuse}/s`);
  const every = (ratePerSecond: number, inject: () => void) => {
    const gapMs = () => prng.between(1, Math.round(2_000 / ratePerSecond));
    const fire = () => {
      if (sim.phase !== "safety") return;
      inject();
      sim.at(sim.nowMs + gapMs(), fire);
    };
    sim.at(gapMs(), fire);
  };
  every(rates.allCrash, () => {
    const all = [...actors.servers, actors.arbiter];
    if (all.some((a) => a.state === "crashed")) return;
    sim.log("failover", "!", "all-crash: every lock server and the arbiter at once");
    for (const actor of all) {
      actor.crash();
      sim.afterFault(prng.between(0, 3_000), () => actor.restart());
    }
  });
  every(rates.diskRefuse, () => {
    const i = prng.between(0, actors.disks.length - 1);
    if (actors.servers[i].state !== "up") return;
    actors.disks[i].refuseNextWrite();
  });
}
