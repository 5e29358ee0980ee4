/** W2: 32 clients, each on its own lock: acquire + release per second, latencies. */
import { uncontended } from "../lib/uncontended.ts";
import { fmt, fmtLatency } from "../lib/stats.ts";
import { getLatency, type Workload } from "../lib/workload.ts";

const workload: Workload = {
  id: "W2",
  title: "32 clients, own lock each: acquire+release",
  clients: "each",
  run: (ctx) => uncontended(ctx, 32, "w2"),
  rows: [
    {
      label: "W2 acq+rel/s",
      show: (m) => `${fmt(m.rate)}/s`,
      value: (m) => m.rate,
      peers: {
        etcd: { text: "2,962/s", value: 2962 },
        redis: { text: "30,102/s", value: 30102 },
        zk: { text: "5,872/s", value: 5872 },
      },
    },
    {
      label: "W2 acquire p50/p99/max ms",
      show: (m) => fmtLatency(getLatency(m, "acquire")),
      value: (m) => m["acquire.p50"],
      peers: {
        etcd: { text: "4.6/13.6/29", value: 4.6 },
        redis: { text: "0.47/1.9/6.8", value: 0.47 },
        zk: { text: "2.9/10.3/16", value: 2.9 },
      },
    },
    {
      label: "W2 a+r p50/p99/max ms",
      show: (m) => fmtLatency(getLatency(m, "cycle")),
      value: (m) => m["cycle.p50"],
      peers: {
        etcd: { text: "10.0/25/40", value: 10.0 },
        redis: { text: "0.94/2.6/9.2", value: 0.94 },
        zk: { text: "4.4/14.2/21", value: 4.4 },
      },
    },
    {
      label: "W2 CPU server / client (server µs per a+r)",
      show: (m) => `${fmt(m.serverCpuPct)}% / ${fmt(m.clientCpuPct)}% (${fmt(m.serverUsPerOp)} µs)`,
      peers: { etcd: { text: "59% / 94%" }, redis: { text: "49% / 102%" }, zk: { text: "118% / 43%" } },
    },
  ],
};
export default workload;
