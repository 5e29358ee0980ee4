/** R7: the ring's speed on 5 nodes (tests/bench/lib/ring_perf.ts, docs/bench.md "Ring speed"). */
import { ringSpeedWorkload } from "../lib/ring_perf.ts";

export default ringSpeedWorkload("R7", 5);
