/** R8: the ring's speed on 9 nodes (tests/bench/lib/ring_perf.ts, docs/bench.md "Ring speed"). */
import { ringSpeedWorkload } from "../lib/ring_perf.ts";

export default ringSpeedWorkload("R8", 9);
