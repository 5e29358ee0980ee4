/**
 * A node's place in the OS scheduler. Every role holds or gives leases (the primary's from the
 * arbiter and the backup, the ring's token lease), so a node must run within a lease's margin
 * of waking: a primary stops serving when no answer to a request of the last
 * `primaryLeaseMs − leaseSafetyMs` has been handled. On a host whose CPUs other work keeps busy,
 * a node at the ordinary priority waits on the run queue for hundreds of milliseconds; issue 14
 * measured stalls of 170–940 ms in which the node used 0–12 ms of CPU and waited the rest
 * (`/proc/thread-self/schedstat`), long enough for the backup to take over a live primary.
 * A lower nice value lets a node that wakes run before ordinary work; a node uses little CPU,
 * so it takes little from that work (docs/failover.md, "Takeover timing").
 */
import { readdirSync } from "node:fs";
import os from "node:os";
import process from "node:process";

/**
 * The nice value a node asks for (−20 is the highest priority, 0 the ordinary one). Not a
 * real-time policy: a node stuck in a loop still leaves the host usable.
 */
export const NODE_NICE = -10;

export interface PriorityOutcome {
  /** The nice value in force afterwards. */
  nice: number;
  /** Why it was not lowered to the target (the OS's error code, e.g. EACCES without CAP_SYS_NICE); absent when it was, or was already as low. */
  refused?: string;
}

/**
 * Lowers the calling thread's nice value to `target` if it is higher, never raises it (an operator's
 * `Nice=` of −15 stays), then every other thread's the runtime already started. Called on the main
 * thread, which runs the event loop. On Linux a nice value is per thread, and a thread inherits
 * its creator's: the runtime's helpers (V8's workers for GC and compiling, Deno's tokio workers)
 * exist before the script runs, and left at 0 the event loop could wait for one of them behind
 * ordinary work. Without the privilege (CAP_SYS_NICE, or systemd's `Nice=` in the unit) the values
 * stay and the refusal is returned, not thrown.
 */
export function lowerNice(target: number = NODE_NICE): PriorityOutcome {
  let before = 0;
  try {
    before = os.getPriority(0);
    if (before <= target) return { nice: before };
    os.setPriority(0, target);
    for (const thread of otherThreads()) {
      try {
        if (os.getPriority(thread) > target) os.setPriority(thread, target);
      } catch {
        // The thread ended meanwhile; the privilege was there for the main thread.
      }
    }
    return { nice: os.getPriority(0) };
  } catch (error) {
    // No privilege (EACCES), or a runtime that does not let the script ask (Deno without --allow-sys).
    // Both runtimes throw Node's SystemError (code ERR_SYSTEM_ERROR) with the OS's code in `info`.
    const { info, code } = error as { info?: { code?: unknown }; code?: unknown };
    return { nice: before, refused: String(info?.code ?? code ?? (error as Error).name) };
  }
}

/** The ids of this process's threads but the main one (/proc/self/task); none where there is no /proc. */
function otherThreads(): number[] {
  try {
    return readdirSync("/proc/self/task").map(Number).filter((id) => Number.isSafeInteger(id) && id !== process.pid);
  } catch {
    return [];
  }
}
