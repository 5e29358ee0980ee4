/**
 * W0: the bare baseline (issue 14). The runtime's own HTTP server with no lock logic
 * (tests/bench/bare_server.ts), driven by the same client in the same loop as W1 (1 client) and
 * W2 (32 clients), on one fresh server per run: server CPU per request. run.ts divides mutexd's
 * server µs per acquire+release (W1, W2, W3 of the same run) by two of these requests.
 */
import { startBare } from "../lib/server.ts";
import { fmt } from "../lib/stats.ts";
import { uncontended } from "../lib/uncontended.ts";
import type { Workload } from "../lib/workload.ts";

/** The concurrency of W2 and W3, whose baseline is the bare server under as many clients. */
const MANY_CLIENTS = 32;

const workload: Workload = {
  id: "W0",
  title: "bare server baseline: the same client and loop against a server without lock logic",
  clients: "each",
  async run(ctx) {
    const bare = await startBare(ctx.serverRuntime);
    ctx.adopt(bare);
    // An acquire+release is two requests: per request is half of W1's loop's figure.
    const one = await uncontended(ctx, 1, "w0", bare);
    const many = await uncontended(ctx, MANY_CLIENTS, "w0", bare);
    return {
      metrics: {
        rate: 2 * one.metrics.rate,
        serverUsPerRequest: one.metrics.serverUsPerOp / 2,
        rateMany: 2 * many.metrics.rate,
        serverUsPerRequestMany: many.metrics.serverUsPerOp / 2,
        serverCpuPct: one.metrics.serverCpuPct,
        clientCpuPct: one.metrics.clientCpuPct,
      },
      notes: [...one.notes ?? [], ...many.notes ?? []],
    };
  },
  rows: [
    {
      label: "W0 bare server: requests/s, 1 client; 32 clients",
      show: (m) => `${fmt(m.rate)}/s; ${fmt(m.rateMany)}/s`,
    },
    {
      label: "W0 bare server µs per request, 1 client; 32 clients",
      show: (m) => `${fmt(m.serverUsPerRequest)} µs; ${fmt(m.serverUsPerRequestMany)} µs`,
    },
  ],
};
export default workload;
