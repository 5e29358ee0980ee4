/**
 * Runs a command while a lock (or a ring critical section) is held, for `mutexd lock` and
 * `mutexd ring lock`. If the hold is lost, the command is stopped at once: SIGTERM, then SIGKILL
 * after the grace. `consul lock` let a child run ~90 s after losing its lock
 * (hashicorp/consul#9788); mutexd does not.
 */
import { spawn } from "node:child_process";
import { constants as osConstants } from "node:os";
import process from "node:process";
import { EXIT } from "./common.ts";


export interface Hold {
  /** Fires when the hold is lost; its reason (an Error) says why. */
  signal: AbortSignal;
  release(): Promise<void>;
  /** Names the hold in messages, e.g. "lock demo". */
  describe: string;
}

/**
 * Runs `command` with `env` added to the environment while `hold` holds. Returns the command's
 * status (128+N when killed by signal N) after releasing, or EXIT.lost if the hold was lost.
 */
export async function runWhileHeld(
  command: string[],
  env: Record<string, string>,
  hold: Hold,
  graceMs: number,
): Promise<number> {
  const child = spawn(command[0], command.slice(1), { stdio: "inherit", env: { ...process.env, ...env } });
  const exited = new Promise<number>((resolve) => {
    child.on("exit", (code, signal) => resolve(code ?? 128 + signalNumber(signal)));
    child.on("error", (error) => {
      process.stderr.write(`mutexd: cannot run ${command[0]}: ${error.message}\n`);
      resolve(127);
    });
  });
  let lost = false;
  let killTimer: ReturnType<typeof setTimeout> | undefined;
  const onLost = () => {
    lost = true;
    // A reason that already names the hold ("ring section 7 lost: the lease ended") is not repeated.
    const reason = (hold.signal.reason as Error | undefined)?.message ?? "";
    const lostText = reason.startsWith(`${hold.describe} lost`) ? reason : `${hold.describe} lost${reason ? ` (${reason})` : ""}`;
    process.stderr.write(`mutexd: ${lostText}; stopping the command\n`);
    child.kill("SIGTERM");
    killTimer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  };
  if (hold.signal.aborted) onLost();
  else hold.signal.addEventListener("abort", onLost, { once: true });
  // Signals to mutexd go to the command; mutexd releases after the command exits.
  const onTerm = () => child.kill("SIGTERM");
  const onInt = () => child.kill("SIGINT");
  process.on("SIGTERM", onTerm);
  process.on("SIGINT", onInt);

  const status = await exited;
  clearTimeout(killTimer);
  process.off("SIGTERM", onTerm);
  process.off("SIGINT", onInt);
  if (lost) return EXIT.lost;
  try {
    await hold.release();
  } catch (error) {
    process.stderr.write(`mutexd: release of ${hold.describe} failed: ${(error as Error).message}\n`);
  }
  return status;
}

/** The number of a signal by name, as the shell reports it in 128+N (every signal the OS knows). */
function signalNumber(signal: string | null): number {
  return (osConstants.signals as Record<string, number>)[signal ?? ""] ?? 0;
}
