/** R11: R4 (kill -9 of the holder in its section → next grant) on a 3-node ring (docs/bench.md, "Ring speed"). */
import { holderKillWorkload } from "./r4.ts";

export default holderKillWorkload("R11", 3);
