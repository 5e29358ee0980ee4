/**
 * The correctness check each system's client passes in the same run as its numbers (`make
 * bench-peers`): two clients, one lock, a few rounds. While A holds the lock, B's try (wait 0) is
 * refused; B's waiting enter is granted only after A sent its leave; every grant's fencing token is
 * higher than the one before. It proves the adapter is a lock, not that the system is one.
 */
import type { BenchClient } from "../lib/clients.ts";

const ROUNDS = 3;
const WAIT_MS = 10_000;
const TTL_MS = 10_000;

/** Returns "ok, N grants" or throws with what went wrong. */
export async function checkClient(make: () => BenchClient): Promise<string> {
  const [a, b] = [make(), make()];
  const [sa, sb] = [await a.openSession(TTL_MS), await b.openSession(TTL_MS)];
  const name = "peers-check";
  const tokens: number[] = [];
  try {
    for (let round = 0; round < ROUNDS; round++) {
      const first = await a.enter(name, sa, WAIT_MS);
      if (!first.granted) throw new Error(`round ${round}: A was not granted a free lock`);
      tokens.push(first.token);
      const tried = await b.enter(name, sb, 0);
      if (tried.granted) throw new Error(`round ${round}: B was granted (token ${tried.token}) while A held token ${first.token}`);
      let leaveSent = false;
      const waiting = b.enter(name, sb, WAIT_MS).then((answer) => ({ answer, afterLeave: leaveSent }));
      // Give B's enter time to queue before A leaves (a pause, not a wait for a condition: B's
      // grant must come after the leave whether or not B queued first).
      await new Promise((resolve) => setTimeout(resolve, 50));
      leaveSent = true;
      await a.leave(name, sa, first.token);
      const { answer, afterLeave } = await waiting;
      if (!answer.granted) throw new Error(`round ${round}: B was not granted after A left`);
      if (!afterLeave) throw new Error(`round ${round}: B was granted before A sent its leave`);
      tokens.push(answer.token);
      await b.leave(name, sb, answer.token);
    }
    for (let k = 1; k < tokens.length; k++) {
      if (!(tokens[k] > tokens[k - 1])) throw new Error(`tokens do not increase: ${tokens.join(", ")}`);
    }
    return `ok, ${tokens.length} grants`;
  } finally {
    await Promise.all([sa.close().catch(() => {}), sb.close().catch(() => {})]);
    a.close();
    b.close();
  }
}
