/**
 * The checker registry. A checker is an invariant over the whole simulated system; the simulator
 * runs every registered checker after every event (so "at one moment of virtual time" means
 * exactly that), and a checker may also report from inside a driver hook (`sim.violate`) when the
 * evidence exists only at that step (a grant's token, the queue before a grant).
 *
 * The first violation stops the run: its checker name and message are the run's verdict.
 */
export interface Checker {
  /** Stable name, e.g. "lock.client-mutex"; replay files and tests refer to it. */
  name: string;
  /** What it proves, one line (docs, --help). */
  doc: string;
  /** Returns a violation message, or undefined when the invariant holds now. */
  check(): string | undefined;
}

export interface Violation {
  checker: string;
  message: string;
  atMs: number;
}

export class CheckerRegistry {
  private readonly checkers: Checker[] = [];
  /** Names of checkers that report only from hooks (listed for --help and the header). */
  private readonly hookNames: string[] = [];

  register(checker: Checker): void {
    this.checkers.push(checker);
  }

  /** Declares a checker that reports through `sim.violate` rather than `check()`. */
  declareHook(name: string): void {
    this.hookNames.push(name);
  }

  get names(): string[] {
    return [...this.checkers.map((c) => c.name), ...this.hookNames];
  }

  /** Runs every checker; the first violation found, or undefined. */
  runAll(): { checker: string; message: string } | undefined {
    for (const checker of this.checkers) {
      const message = checker.check();
      if (message !== undefined) return { checker: checker.name, message };
    }
    return undefined;
  }
}
