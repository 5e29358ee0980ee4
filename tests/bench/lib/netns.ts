/**
 * A network namespace for ONE ring node, so packet loss hits that node's links and nothing else
 * (loss on `lo` would hit every node). The namespace is joined to this host by a veth pair:
 * host end `<prefix>h` = 10.214.N.1, namespace end `<prefix>n` = 10.214.N.2 (a subnet no address here
 * lies in; the process tests' tests/_netns.ts uses 10.213.X). The other nodes and
 * the driver bind the host end's address, so everything stays on this machine.
 *
 * Loss is an iptables `statistic` rule INSIDE the namespace, on both its INPUT and OUTPUT through
 * the veth: each packet to or from the node is dropped with the given probability. The project's
 * machine has no `sch_netem` (tc says "Specified qdisc kind is unknown") and no tc `gact`
 * action, so `tc ... netem loss 30%` is not available; iptables' statistic match does the same
 * to the packets (random, independent drops) without a qdisc. Needs root, `ip` and `iptables`;
 * `unavailable()` says why not, and the workload then skips its row.
 */
import { spawnSync } from "node:child_process";
import process from "node:process";

export class LossyNamespace {
  readonly name: string;
  /** The addresses, set by create() (a free subnet is looked for then). */
  hostIp = "";
  nodeIp = "";
  broadcast = "";
  private readonly hostLink: string;
  private readonly nodeLink: string;
  private created = false;
  /** Removes the namespace if the process exits before `remove()` (the runner gave up on a run). */
  private readonly removeAtExit = () => this.remove();

  /** `tag` tells namespaces of concurrent runs apart (this process's pid by default). */
  constructor(tag = process.pid) {
    this.name = `mutexd-bench-${tag}`;
    // Interface names are at most 15 characters.
    this.hostLink = `mxb${tag % 1_000_000}h`;
    this.nodeLink = `mxb${tag % 1_000_000}n`;
  }

  /** Why a namespace with packet loss cannot be made here (null: it can). */
  static unavailable(): string | null {
    if (process.getuid?.() !== 0) return "needs root (network namespaces and iptables)";
    for (const [cmd, args] of [["ip", ["-V"]], ["iptables", ["--version"]]] as const) {
      const result = spawnSync(cmd, [...args], { encoding: "utf8" });
      if (result.error || result.status !== 0) return `\`${cmd}\` is not installed: apt-get install iproute2 iptables`;
    }
    return null;
  }

  /** Creates the namespace and the veth pair (no loss yet). Throws with the failing command. */
  create(): void {
    const subnet = freeSubnet();
    this.hostIp = `${subnet}.1`;
    this.nodeIp = `${subnet}.2`;
    this.broadcast = `${subnet}.255`;
    this.created = true;
    process.once("exit", this.removeAtExit);
    const n = this.name;
    run("ip", ["netns", "add", n]);
    run("ip", ["link", "add", this.hostLink, "type", "veth", "peer", "name", this.nodeLink]);
    run("ip", ["link", "set", this.nodeLink, "netns", n]);
    run("ip", ["addr", "add", `${this.hostIp}/24`, "dev", this.hostLink]);
    run("ip", ["link", "set", this.hostLink, "up"]);
    run("ip", ["-n", n, "addr", "add", `${this.nodeIp}/24`, "dev", this.nodeLink]);
    run("ip", ["-n", n, "link", "set", this.nodeLink, "up"]);
    run("ip", ["-n", n, "link", "set", "lo", "up"]);
  }

  /** argv prefix that runs a command inside the namespace (`ip netns exec` execs it: same pid). */
  get launcher(): string[] {
    return ["ip", "netns", "exec", this.name];
  }

  /** Drops each packet to or from the namespace's node with probability `percent` / 100. */
  setLoss(percent: number): void {
    const probability = String(percent / 100);
    for (const [chain, dir] of [["INPUT", "-i"], ["OUTPUT", "-o"]]) {
      run("ip", ["netns", "exec", this.name, "iptables", "-A", chain, dir, this.nodeLink, "-m", "statistic", "--mode", "random", "--probability", probability, "-j", "DROP"]);
    }
  }

  /** Packets dropped so far by the loss rules (from iptables' counters). */
  droppedPackets(): number {
    const out = run("ip", ["netns", "exec", this.name, "iptables", "-L", "-v", "-n", "-x"]);
    return out.split("\n").filter((l) => /\bDROP\b/.test(l)).reduce((sum, l) => sum + Number(l.trim().split(/\s+/)[0]), 0);
  }

  /**
 * Deletes the namespace and the veth pair (deleting one end deletes both); ignores what is gone.
 * A run killed by a signal leaves them: `ip netns list`, then `ip netns del mutexd-bench-<pid>`.
 */
  remove(): void {
    if (!this.created) return;
    process.off("exit", this.removeAtExit);
    spawnSync("ip", ["link", "del", this.hostLink]);
    spawnSync("ip", ["netns", "del", this.name]);
    this.created = false;
  }
}

/** A 10.214.X (X in 1..250) that no IPv4 address of this host lies in, looked for from a place given by the pid. */
function freeSubnet(): string {
  const used = run("ip", ["-4", "-o", "addr", "show"]);
  for (let i = 0; i < 250; i++) {
    const x = 1 + ((process.pid + i) % 250);
    if (!used.includes(` 10.214.${x}.`)) return `10.214.${x}`;
  }
  throw new Error("no free 10.214.X.0/24 subnet");
}

function run(cmd: string, args: string[]): string {
  const result = spawnSync(cmd, args, { encoding: "utf8" });
  if (result.error || result.status !== 0) {
    throw new Error(`${cmd} ${args.join(" ")}: ${result.error?.message ?? result.stderr.trim()}`);
  }
  return result.stdout;
}
