/** W1: 1 client, 1 lock: acquire + release per second, latencies. */
import { uncontended } from "../lib/uncontended.ts";
import { fmt, fmtLatency } from "../lib/stats.ts";
import { getLatency, type Workload } from "../lib/workload.ts";

const workload: Workload = {
  id: "W1",
  title: "1 client, 1 lock: acquire+release",
  clients: "each",
  run: (ctx) => uncontended(ctx, 1, "w1"),
  rows: [
    {
      label: "W1 acq+rel/s",
      show: (m) => `${fmt(m.rate)}/s`,
      value: (m) => m.rate,
      peers: {
        etcd: { text: "616/s", value: 616 },
        redis: { text: "5,361/s", value: 5361 },
        zk: { text: "662/s", value: 662 },
      },
    },
    {
      label: "W1 acquire p50/p99/max ms",
      show: (m) => fmtLatency(getLatency(m, "acquire")),
      value: (m) => m["acquire.p50"],
      peers: {
        etcd: { text: "0.76/3.8/12", value: 0.76 },
        redis: { text: "0.09/0.17/4.5", value: 0.09 },
        zk: { text: "0.73/5.4/18", value: 0.73 },
      },
    },
    {
      label: "W1 a+r p50/p99/max ms",
      show: (m) => fmtLatency(getLatency(m, "cycle")),
      value: (m) => m["cycle.p50"],
      peers: {
        etcd: { text: "1.41/5.6/16", value: 1.41 },
        redis: { text: "0.18/0.33/4.7", value: 0.18 },
        zk: { text: "1.19/7.5/20", value: 1.19 },
      },
    },
    {
      label: "W1 CPU server / client (server µs per a+r)",
      show: (m) => `${fmt(m.serverCpuPct)}% / ${fmt(m.clientCpuPct)}% (${fmt(m.serverUsPerOp)} µs)`,
      peers: { etcd: { text: "46% / 65%" }, redis: { text: "33% / 51%" }, zk: { text: "85% / 20%" } },
    },
  ],
};
export default workload;
