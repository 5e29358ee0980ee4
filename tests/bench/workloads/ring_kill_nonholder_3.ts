/** R9: R1 (kill -9 of a non-holder → its successor granted) on a 3-node ring (docs/bench.md, "Ring speed"). */
import { nonHolderWorkload } from "../lib/ring_workloads.ts";

export default nonHolderWorkload("R9", "kill", 3);
