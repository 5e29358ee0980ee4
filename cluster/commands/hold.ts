/**
 * Runs a command while a lock (or a ring critical section) is held, for `mutexd lock` and
 * `mutexd ring lock`. If the hold is lost, the command is stopped at once: SIGTERM, then SIGKILL
 * after the grace. `consul lock` let a child run ~90 s after losing its lock
 * (hashicorp/consul#9788); mutexd does not.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { constants as osConstants } from "node:os";
import process from "node:process";
import { EXIT } from "./common.ts";

export interface Hold {
  /** Fires when the hold is lost; its reason (an Error) says why. */
  signal: AbortSignal;
  release(): Promise<void>;
  /** Names the hold in messages, e.g. "lock demo". */
  describe: string;
  /** Milliseconds until the lease ends by the local clock unless it is renewed (MUTEXD_DEADLINE_MS). */
  remainingMs(): number;
}

/** Where setpriv may be (util-linux); the first that exists is used (fixed paths: not whatever PATH finds). */
const SETPRIV_PATHS = ["/usr/bin/setpriv", "/bin/setpriv", "/usr/sbin/setpriv", "/sbin/setpriv"];

/**
 * `command` started so that it dies with this process where the OS allows: on Linux through
 * `setpriv --pdeathsig KILL`, which sets the parent-death signal and then executes the command
 * (so a SIGKILLed `mutexd lock` takes its command with it, as flock's lock dies with its
 * process). Elsewhere, or without setpriv, the command itself: it outlives a killed mutexd.
 */
export function deathTiedCommand(command: string[], platform = process.platform): string[] {
  const setpriv = platform === "linux" ? SETPRIV_PATHS.find((path) => existsSync(path)) : undefined;
  return setpriv === undefined ? command : [setpriv, "--pdeathsig", "KILL", "--", ...command];
}

/**
 * MUTEXD_DEADLINE (wall-clock ISO time) and MUTEXD_DEADLINE_MS (milliseconds left) of the lease
 * when the command starts. An environment cannot change afterwards: they are not kept current.
 * Until then the lock is surely the command's (unless an operator force-releases it: only the
 * fencing token guards against that), even if mutexd is stopped (SIGSTOP) and cannot
 * stop it; a careful command checks them before a side effect.
 */
export function deadlineEnv(remainingMs: number, wallNowMs = Date.now()): Record<string, string> {
  const leftMs = Math.max(0, Math.floor(remainingMs));
  return { MUTEXD_DEADLINE: new Date(wallNowMs + leftMs).toISOString(), MUTEXD_DEADLINE_MS: String(leftMs) };
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
  const [file, ...args] = deathTiedCommand(command);
  const childEnv = { ...process.env, ...env, ...deadlineEnv(hold.remainingMs()) };
  const child = spawn(file, args, { stdio: "inherit", env: childEnv });
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
    process.stderr.write(`mutexd: ${lostMessage(hold)}; stopping the command\n`);
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
  if (lost) {
    // The session may live on (the lock was taken from it): close it; its fate changes nothing.
    await hold.release().catch(() => {});
    return EXIT.lost;
  }
  return await releaseAfterUse(hold, status);
}

/** The number of a signal by name, as the shell reports it in 128+N (every signal the OS knows). */
function signalNumber(signal: string | null): number {
  return (osConstants.signals as Record<string, number>)[signal ?? ""] ?? 0;
}

/**
 * Holds until SIGINT or SIGTERM, then releases: EXIT.ok. EXIT.lost when the hold is lost first,
 * or when the release finds it released by another party.
 */
export async function holdUntilSignal(hold: Hold): Promise<number> {
  process.stderr.write(`mutexd: holding ${hold.describe}; SIGINT (Ctrl-C) or SIGTERM releases it\n`);
  let onSignal = () => {};
  const ended = await new Promise<"signal" | "lost">((resolve) => {
    if (hold.signal.aborted) return resolve("lost");
    hold.signal.addEventListener("abort", () => resolve("lost"), { once: true });
    onSignal = () => resolve("signal");
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
  });
  process.off("SIGINT", onSignal);
  process.off("SIGTERM", onSignal);
  if (ended === "lost") {
    process.stderr.write(`mutexd: ${lostMessage(hold)}\n`);
    await hold.release().catch(() => {});
    return EXIT.lost;
  }
  return await releaseAfterUse(hold, EXIT.ok);
}

/** "lock demo lost (why)"; a reason that already names the hold is not repeated. */
function lostMessage(hold: Hold): string {
  const reason = (hold.signal.reason as Error | undefined)?.message ?? "";
  return reason.startsWith(`${hold.describe} lost`) ? reason : `${hold.describe} lost${reason ? ` (${reason})` : ""}`;
}

/**
 * Releases after use: `status`, or EXIT.lost when the release finds the hold released by
 * another party (the user did not hold it alone); another failure is reported and changes nothing.
 */
async function releaseAfterUse(hold: Hold, status: number): Promise<number> {
  try {
    await hold.release();
  } catch (error) {
    process.stderr.write(`mutexd: release of ${hold.describe} failed: ${(error as Error).message}\n`);
    if ((error as { code?: unknown }).code === "lock_lost") return EXIT.lost;
  }
  return status;
}
