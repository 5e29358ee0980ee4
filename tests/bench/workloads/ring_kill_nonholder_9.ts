/** R10: R1 (kill -9 of a non-holder → its successor granted) on a 9-node ring (docs/bench.md, "Ring speed"). */
import { nonHolderWorkload } from "../lib/ring_workloads.ts";

export default nonHolderWorkload("R10", "kill", 9);
