/**
 * Network namespaces for process tests that need a network partition (iproute2's `ip`, as
 * root): one namespace per node, each with a veth pair onto a bridge in the test's own
 * namespace, so the test process reaches every node while the nodes' traffic to each other can
 * be cut. A cut is silent, as a real partition is: each side gets a permanent neighbour entry
 * with an unused MAC address for every address on the other side, so its packets go nowhere
 * (no connection refused, no reset: hand-offs and renewals time out). Healing deletes those
 * entries. Not a test file.
 *
 * The namespaces, veths and bridge are named after this process's PID, and the subnet is a
 * 10.213.X.0/24 no interface here uses; `remove` deletes everything `create` made.
 */
import { execFileSync } from "node:child_process";
import process from "node:process";

/** A MAC address nobody has (locally administered): frames to it are dropped. */
const NOWHERE_MAC = "02:00:00:00:00:01";
/** The veth inside each namespace. */
const DEVICE = "eth0";

function ip(...args: string[]): string {
  return execFileSync("ip", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

/** Null when namespaces can be made here, else why not (for a test's skip message). */
export function netnsUnavailable(): string | null {
  if (typeof process.getuid === "function" && process.getuid() !== 0) return "network namespaces need root";
  const name = `mxd${process.pid}probe`;
  try {
    ip("netns", "add", name);
    ip("netns", "del", name);
    return null;
  } catch (error) {
    return `cannot make a network namespace with iproute2's ip: ${(error as Error).message.split("\n")[0]}`;
  }
}

/** One neighbour entry that sends a namespace's packets for `address` nowhere. */
export interface Cut {
  namespace: string;
  address: string;
}

/**
 * How `NetLab.degrade` can work here: "netem" (tc's netem qdisc: delay, jitter, loss), "iptables"
 * (loss only), or null with why neither can. Probed in a namespace of its own.
 */
export function degradeSupport(): { mode: "netem" | "iptables" | null; why: string } {
  const name = `mxd${process.pid}tcprobe`;
  try {
    ip("netns", "add", name);
  } catch (error) {
    return { mode: null, why: `no namespace: ${(error as Error).message.split("\n")[0]}` };
  }
  const inside = (...args: string[]) => execFileSync("ip", ["netns", "exec", name, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  try {
    ip("-n", name, "link", "set", "lo", "up");
    try {
      inside("tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms");
      return { mode: "netem", why: "tc netem" };
    } catch {
      // no sch_netem in this kernel, or no tc: loss alone through iptables
    }
    try {
      inside("iptables", "-A", "INPUT", "-m", "statistic", "--mode", "random", "--probability", "0.5", "-j", "DROP");
      return { mode: "iptables", why: "loss only: tc has no netem qdisc here, iptables' statistic match drops" };
    } catch {
      return { mode: null, why: "neither tc netem nor iptables' statistic match works here" };
    }
  } finally {
    try {
      ip("netns", "del", name);
    } catch {
      // already gone
    }
  }
}

export class NetLab {
  private readonly tag = `mxd${process.pid}`;
  private readonly bridge = `${this.tag}br`;
  private namespaces: string[] = [];
  private cuts: Cut[] = [];
  private readonly degraded = new Set<number>();
  /** Each node's address, in the order of `create`'s count. */
  readonly addresses: string[] = [];

  /** The bridge with the test's address, and `count` namespaces on it; call `remove` in `finally`. */
  create(count: number): void {
    const subnet = this.freeSubnet();
    ip("link", "add", this.bridge, "type", "bridge");
    ip("addr", "add", `${subnet}.1/24`, "dev", this.bridge);
    ip("link", "set", this.bridge, "up");
    for (let i = 0; i < count; i++) {
      const namespace = `${this.tag}n${i}`;
      const veth = `${this.tag}v${i}`;
      const address = `${subnet}.${11 + i}`;
      ip("netns", "add", namespace);
      this.namespaces.push(namespace);
      ip("link", "add", veth, "type", "veth", "peer", "name", DEVICE, "netns", namespace);
      ip("link", "set", veth, "master", this.bridge, "up");
      ip("-n", namespace, "addr", "add", `${address}/24`, "dev", DEVICE);
      ip("-n", namespace, "link", "set", DEVICE, "up");
      ip("-n", namespace, "link", "set", "lo", "up");
      this.addresses.push(address);
    }
  }

  /** argv that runs a command inside node `index`'s namespace. */
  wrap(index: number): string[] {
    return ["ip", "netns", "exec", this.namespaces[index]];
  }

  /** Cuts every path between the nodes of `a` and those of `b` (indices), both ways; returns the cut for `healCut`. */
  cut(a: number[], b: number[]): Cut[] {
    return [...this.cutOneWay(a, b), ...this.cutOneWay(b, a)];
  }

  /**
   * Cuts the paths from the nodes of `from` to those of `to` only: a neighbour entry on the
   * sending side alone, so `to` still reaches `from` (its requests arrive, the answers are lost).
   */
  cutOneWay(from: number[], to: number[]): Cut[] {
    const made: Cut[] = [];
    for (const i of from) {
      for (const j of to) {
        const cut = { namespace: this.namespaces[i], address: this.addresses[j] };
        ip("-n", cut.namespace, "neigh", "replace", cut.address, "lladdr", NOWHERE_MAC, "dev", DEVICE, "nud", "permanent");
        this.cuts.push(cut);
        made.push(cut);
      }
    }
    return made;
  }

  /** Removes every cut (the neighbours are found by ARP again). */
  heal(): void {
    this.healCut(this.cuts.slice());
  }

  /** Removes the given cuts only (another track's cuts stay); a cut already healed is skipped. */
  healCut(cuts: Cut[]): void {
    for (const cut of cuts) {
      const at = this.cuts.indexOf(cut);
      if (at < 0) continue;
      this.cuts.splice(at, 1);
      // Another cut of the same pair may remain (two faults overlapping): the entry stays then.
      if (this.cuts.some((c) => c.namespace === cut.namespace && c.address === cut.address)) continue;
      try {
        ip("-n", cut.namespace, "neigh", "del", cut.address, "dev", DEVICE);
      } catch {
        // the namespace is gone already (remove() ran first, on Ctrl-C)
      }
    }
  }

  /**
   * Degrades node `index`'s link inside its namespace: `tc netem` delay, jitter and loss when
   * `netem` is true (the kernel has sch_netem), else loss only with iptables' statistic match
   * on its INPUT and OUTPUT (both directions). `undegrade` restores it.
   */
  degrade(index: number, spec: { delayMs: number; jitterMs: number; lossPercent: number }, netem: boolean): void {
    const namespace = this.namespaces[index];
    if (netem) {
      execFileSync("ip", ["netns", "exec", namespace, "tc", "qdisc", "replace", "dev", DEVICE, "root", "netem", "delay", `${spec.delayMs}ms`, `${spec.jitterMs}ms`, "loss", `${spec.lossPercent}%`], { stdio: "ignore" });
    } else {
      const p = String(spec.lossPercent / 100);
      for (const [chain, side] of [["INPUT", "-i"], ["OUTPUT", "-o"]]) {
        execFileSync("ip", ["netns", "exec", namespace, "iptables", "-A", chain, side, DEVICE, "-m", "statistic", "--mode", "random", "--probability", p, "-j", "DROP"], { stdio: "ignore" });
      }
    }
    this.degraded.add(index);
  }

  /** Removes what `degrade` added on node `index` (both kinds; what is not there is skipped). */
  undegrade(index: number): void {
    if (!this.degraded.delete(index)) return;
    const namespace = this.namespaces[index];
    const quietly = (args: string[]) => {
      try {
        execFileSync("ip", ["netns", "exec", namespace, ...args], { stdio: "ignore" });
      } catch {
        // not there
      }
    };
    quietly(["tc", "qdisc", "del", "dev", DEVICE, "root"]);
    quietly(["iptables", "-F", "INPUT"]);
    quietly(["iptables", "-F", "OUTPUT"]);
  }

  /** The subnet's broadcast address (10.213.X.255), after `create`. */
  get broadcast(): string {
    return this.addresses[0].replace(/\.\d+$/, ".255");
  }

  /**
   * Deletes the veths, the namespaces and the bridge; what was never made is skipped. The veths
   * go first and by name: a deleted namespace takes its end of the pair with it only when the
   * kernel gets round to freeing it, seconds later.
   */
  remove(): void {
    const quietly = (...args: string[]) => {
      try {
        ip(...args);
      } catch {
        // never made, or already gone
      }
    };
    this.cuts.length = 0;
    this.degraded.clear();
    this.namespaces.forEach((_, i) => quietly("link", "del", `${this.tag}v${i}`));
    for (const namespace of this.namespaces.splice(0)) quietly("netns", "del", namespace);
    quietly("link", "del", this.bridge);
  }

  /**
   * A 10.213.X (X in 1..250) no IPv4 address here lies in, looked for from a place given by the
   * PID, so two runs started at once (Deno and Bun) are unlikely to pick the same one.
   */
  private freeSubnet(): string {
    const used = ip("-4", "-o", "addr", "show");
    for (let k = 0; k < 250; k++) {
      const x = 1 + ((process.pid + k) % 250);
      if (!used.includes(` 10.213.${x}.`)) return `10.213.${x}`;
    }
    throw new Error("no free 10.213.X.0/24 subnet");
  }
}
