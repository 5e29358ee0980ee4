/**
 * Clock faults for chaos nodes through libfaketime (an LD_PRELOAD library that rewrites what
 * clock_gettime and friends return; docs/chaos.md, "Clock faults").
 *
 * Every node starts with the preload and a timestamp file of its own, so a step needs no
 * restart: the nemesis rewrites the file and the node reads it on its next wall-clock call.
 * - A stepped node (`clock-step`) has FAKETIME_DONT_FAKE_MONOTONIC=1: its wall clock
 *   (`Date.now`, CLOCK_REALTIME) jumps; its monotonic clock (`performance.now`, timers) does not,
 *   as with an NTP step. FAKETIME_NO_CACHE=1: the file is read on every wall-clock call (25 µs,
 *   measured; the nodes rarely read the wall clock).
 * - A rated node (`clock-rate`) has its whole clock, monotonic too, run at a rate from its first
 *   start for the whole run. A rate is not changed at run time: libfaketime then jumps the clock
 *   by the elapsed time times the change (backwards for a slower rate), which would be a
 *   monotonic step, not a rate (FAKETIME_XRESET, meant to smooth it, was seen to skew wall and
 *   monotonic clocks apart). Its file never changes, so it is cached (1 s).
 * Only the node processes get the preload: the runner and its clients keep the real clock (one
 * clock for the history), and a node-based wrapper under the preload with an offset was seen to
 * hang (node_modules/deno/bin.cjs, and coreutils' timeout).
 */
import { existsSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { NodeId } from "./supervisor.ts";

/** Where distributions install libfaketime's multi-threaded variant (the runtimes are threaded). */
const FAKETIME_PATHS = [
  "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
  "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
  "/usr/lib64/faketime/libfaketimeMT.so.1",
  "/usr/lib/faketime/libfaketimeMT.so.1",
  "/usr/local/lib/faketime/libfaketimeMT.so.1",
];

/** The library's path, or why there is none (the clock kinds are then off with this reason). */
export function faketimeLibrary(): { path: string } | { why: string } {
  const path = FAKETIME_PATHS.find((p) => existsSync(p));
  return path ? { path } : { why: "no libfaketime (apt-get install faketime)" };
}

/** The largest step: a node's token floor is the wall clock in µs at its start, a safe integer for centuries more, not for any offset. */
export const CLOCK_STEP_MAX_S = 3 * 3_600;

/** Each node's clock, by libfaketime: its environment at every (re)start, and steps at run time. */
export class NodeClocks {
  constructor(
    private readonly library: string,
    private readonly dir: string,
    /** Rated nodes and their rate (1.03: 3 % fast); every other node may be stepped. */
    readonly rates: Record<NodeId, number>,
  ) {}

  file(id: NodeId): string {
    return join(this.dir, `faketime-${id}.rc`);
  }

  /** The environment of node `id`; its file is written first (offset 0, or its rate). */
  env(id: NodeId): Record<string, string> {
    const rate = this.rates[id];
    if (rate === undefined) {
      if (!existsSync(this.file(id))) this.write(id, "+0");
      return {
        LD_PRELOAD: this.library,
        FAKETIME_TIMESTAMP_FILE: this.file(id),
        FAKETIME_NO_CACHE: "1",
        FAKETIME_DONT_FAKE_MONOTONIC: "1",
      };
    }
    this.write(id, `+0 x${rate}`);
    return { LD_PRELOAD: this.library, FAKETIME_TIMESTAMP_FILE: this.file(id), FAKETIME_CACHE_DURATION: "1" };
  }

  /** Sets node `id`'s wall clock `offsetS` seconds from the real one (0: back to real time). */
  step(id: NodeId, offsetS: number): void {
    if (this.rates[id] !== undefined) throw new Error(`clock: ${id} runs at a rate and is not stepped`);
    if (!Number.isSafeInteger(offsetS) || Math.abs(offsetS) > CLOCK_STEP_MAX_S) {
      throw new Error(`clock: step ${offsetS} s out of bounds`);
    }
    this.write(id, `${offsetS < 0 ? "-" : "+"}${Math.abs(offsetS)}`);
  }

  /** Whole, or not at all: libfaketime reads the file at any moment. */
  private write(id: NodeId, spec: string): void {
    const file = this.file(id);
    writeFileSync(`${file}.tmp`, `${spec}\n`);
    renameSync(`${file}.tmp`, file);
  }
}
