/** R1: the ring's repair after a fault on a non-holder (tests/bench/lib/ring_workloads.ts, docs/bench.md "Ring repair"). */
import { nonHolderWorkload } from "../lib/ring_workloads.ts";

export default nonHolderWorkload("R1", "kill");
