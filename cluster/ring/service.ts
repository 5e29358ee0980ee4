/**
 * The driver around the pure ring node (lib/core/ring/ring_node.ts): it feeds the node the clock,
 * peer messages and client requests, stores what the node asks to store BEFORE anything else of
 * the same output happens, sends the node's messages through the link to the successor, and
 * carries out its effects. It holds no protocol logic itself; it is the wiring of its parts:
 *
 * - `view_driver.ts`: the view change (lib/core/ring/view.ts, docs/ring-view.md) beside the ring
 *   node; the driver feeds it ticks, the peers' view messages (`onViewMessage`) and the
 *   triggers: a start (bootstrap, or a rejoin in a new epoch after a restart), a successor that
 *   does not take hand-offs, a newer epoch met on the wire. Its decisions step the ring node.
 * - `peer_link.ts` with `handoff_delivery.ts`: the link to the successor, whose deliveries are
 *   watched (lib/core/ring/handoff_watch.ts: a refused or uncertain token hand-off, a suspected
 *   successor).
 * - `repair_driver.ts`: with a repair link (the daemon's UDP channel, cluster/ring/udp.ts), ring
 *   repair's suspicions (lib/core/ring/repair.ts): hints only; a confirmed suspicion starts a
 *   view change, which decides membership.
 * - `client_waits.ts`: the clients' pending requests (long-polls) and section watches.
 * - `hop_times.ts`: the hop times status shows.
 * - One timer ticks all the cores, armed for their earliest deadline
 *   (lib/core/ring/tick_schedule.ts).
 *
 * Everything it needs from the runtime comes in as a port: the clock, the timers
 * (cluster/timers.ts), the peers (HTTP in the daemon) and the storage (files in the daemon). The
 * simulator (tests/sim/ring/node.ts) runs this class and its parts as they are, on virtual time,
 * with a simulated network and disk; so they keep the port rule of cluster/timers.ts (the peers'
 * promises are continued with `.then` only, see tests/sim/ring/ports.ts).
 */
import { assertNever } from "../../lib/core/assert.ts";
import type {
  ClientReply,
  RingEffect,
  RingInput,
  RingNode,
  RingOutput,
  RingResult,
} from "../../lib/core/ring/ring_node.ts";
import type { RepairInput, RepairMessage, SuspicionStatus } from "../../lib/core/ring/repair.ts";
import type { CatchUpReply } from "../../lib/core/ring/ring_types.ts";
import { nextTickAtMs } from "../../lib/core/ring/tick_schedule.ts";
import type { ViewChangeReason, ViewCore, ViewHardState, ViewMessage, ViewStatus } from "../../lib/core/ring/view.ts";
import type { Settings } from "../../lib/settings.ts";
import type { Clock } from "../clock.ts";
import type { Logger } from "../log.ts";
import type { TimerHandle, Timers } from "../timers.ts";
import { type ClientInput, ClientWaits } from "./client_waits.ts";
import { HandoffDelivery } from "./handoff_delivery.ts";
import { HopTimes, type HopTimesStatus } from "./hop_times.ts";
import { type LinkItem, PeerLink } from "./peer_link.ts";
import { type RepairLink, RepairDriver } from "./repair_driver.ts";
import { type LeaseStatus, type ViewChangeTiming, ViewDriver, type ViewStore } from "./view_driver.ts";
import { SecurityLog } from "../security_log.ts";
import { checkCatchUp } from "../../lib/wire/ring_peer.ts";
import type { RingStore } from "./storage.ts";

/**
 * How the service reaches the other ring nodes (HTTP in the daemon, simulated messages in the
 * simulator). Each call rejects on network failure or after the transport's timeout.
 */
export interface RingPeers {
  /** Hands the token or writes to the successor. */
  deliver(to: string, item: LinkItem): PromiseLike<RingResult>;
  fetchLog(from: string, fromWseq: number): PromiseLike<CatchUpReply>;
  wake(to: string): PromiseLike<void>;
  /** One view-change message (one-way: answers come back as messages); rejects if not delivered. */
  view(to: string, message: ViewMessage): PromiseLike<void>;
}

export interface RingServiceOptions {
  node: RingNode;
  settings: Settings;
  clock: Clock;
  timers: Timers;
  log: Logger;
  storage: RingStore & ViewStore;
  /** The view change's hard state as stored (null: none yet). */
  storedView: ViewHardState | null;
  /** The arbiter's id, when the cluster has one: it may coordinate view changes (never votes). */
  arbiter?: string | null;
  peers: RingPeers;
  /** Runs ring repair's suspicion core when given (the daemon); without it (the simulator) nothing of repair runs. */
  repairLink?: RepairLink;
  /** Called when storing failed: the node's memory is ahead of its disk, so it must stop. */
  onFatal(error: Error): void;
  /** Sees every core step, after its persist and before its effects (the simulator's checkers). */
  onStep?(input: RingInput | { type: "start" }, output: RingOutput): void;
  /** Where refused input is counted and logged (the process's one; absent: the service's own). */
  security?: SecurityLog;
  /**
   * A finer clock for the hop times of status only (fractional ms: a hop on loopback takes less
   * than the integer clock's step); absent: `clock`. Never an input of a core.
   */
  hopClock?: Clock;
  /**
   * Runs first in every tick, with how much later than armed its timer ran: the daemon's stall
   * monitor counts that, rather than running a timer of its own (docs/bench.md "Idle CPU").
   */
  onTick?(lateMs: number): void;
}

/**
 * The lines a section writes when all goes well, its grant and its end by a leave: `debug`, as a
 * lock server's grant and release (README, `logLevel`), so the default level writes no line per
 * section (before: two JSON lines per section, each with its date, stringified and written).
 * Other ends (the lease ran out, abandoned, a new epoch) stay `info`: they tell of a fault.
 */
function perSectionEvent(event: string, fields: Record<string, unknown>): boolean {
  return event === "granted" || (event === "sectionEnded" && fields.reason === "left");
}

export class RingService {
  readonly node: RingNode;
  /** Refused input: malformed peer messages and answers (status `security`). */
  readonly security: SecurityLog;
  private readonly link: PeerLink;
  /** The clients' pending requests and section watches (cluster/ring/client_waits.ts). */
  private readonly clients: ClientWaits;
  private loops: Array<() => void> = [];
  /** The tick's timer and when it is due (see armTick); null between a tick's start and its re-arming, and before start. */
  private nextTick: { handle: TimerHandle; atMs: number } | null = null;
  private ticking = false;
  private stopped = false;
  private lastTrouble = "";
  /** Ring repair's suspicions, with a repair link only (cluster/ring/repair_driver.ts). */
  private readonly repair?: RepairDriver;
  /** The view change and what status shows of it (cluster/ring/view_driver.ts). */
  private readonly views: ViewDriver;
  /** The view change's core (votes, coordinates, probes for a lost token, runs the token lease): the views' own. */
  private readonly view: ViewCore;
  /** Hop times of this node's hand-offs (status `hopMs`). */
  private readonly hops: HopTimes;

  constructor(private readonly options: RingServiceOptions) {
    this.node = options.node;
    this.hops = new HopTimes(options.hopClock ?? options.clock);
    const { settings, peers, log, timers } = options;
    this.security = options.security ?? new SecurityLog(options.clock, log, settings.securityLogIntervalMs);
    const node = this.node;
    this.views = new ViewDriver({
      node,
      settings,
      arbiter: options.arbiter ?? null,
      storedView: options.storedView,
      storage: options.storage,
      log,
      nowMs: () => this.now(),
      send: (to, message) => peers.view(to, message),
      stopped: () => this.stopped,
      onFatal: (error) => options.onFatal(error),
      stepNode: (input) => this.stepPeer(input),
      dropBefore: (epoch) => this.link.dropBefore(epoch),
      pumped: () => this.armTick(),
    });
    this.view = this.views.core;
    this.clients = new ClientWaits({
      timers,
      settings,
      submit: (input) => this.execute(this.node.step(input, this.now()), input),
      detach: (reqId) => this.stepPeer({ type: "detach", reqId }),
      sectionActive: (fence) => node.sectionActive(fence),
    });
    if (options.repairLink) {
      this.repair = new RepairDriver({
        self: node.id,
        ring: node.ring,
        settings,
        link: options.repairLink,
        log,
        nowMs: () => this.now(),
        stopped: () => this.stopped,
        confirmed: () => this.wantViewChange("suspect"),
        stepped: () => this.armTick(),
      });
    }
    const delivery = new HandoffDelivery({
      deliver: (to, item) => peers.deliver(to, item),
      successor: () => node.successor,
      security: this.security,
      retries: settings.ringRepairRetries,
      promisedEpoch: () => this.view.status(this.now()).promised.epoch,
      handoffRefused: (epoch, hop) => this.view.handoffRefused(epoch, hop, this.now()),
      handoffUncertain: (epoch, hop) => this.view.handoffUncertain(epoch, hop, this.now()),
      heardFrom: (from) => this.stepRepair({ type: "heardFrom", node: from }),
      handoffFailed: (to) => this.stepRepair({ type: "handoffFailed", to, epoch: this.epoch() }),
      wantViewChange: (reason) => this.wantViewChange(reason),
    });
    this.link = new PeerLink({
      deliver: (item) => delivery.deliver(item),
      timers,
      retryMs: settings.tokenRetryMs,
      retryMaxMs: settings.tokenHopTimeoutMs,
      batchWritesMax: settings.ringBatchWritesMax,
      onTokenDelivered: (token) => {
        this.hops.delivered(token.epoch, token.hop);
        this.stepPeer({ type: "tokenDelivered", epoch: token.epoch, hop: token.hop });
      },
      onStale: (epoch, what) => this.stepPeer({ type: "peerStale", epoch, what }),
      onTrouble: (what, detail, attempt) => {
        // One line per streak of failures (and every 50th retry), not one per retry.
        const key = `${what}:${detail}`;
        if (attempt === 1 || attempt % 50 === 0 || key !== this.lastTrouble) {
          log.event("successorUnreachable", { successor: this.node.successor, what, detail, attempt });
        }
        this.lastTrouble = key;
      },
    });
  }

  /**
   * Starts the clock and asks for a view: a node that ran before comes back in a new epoch
   * (rejoin; it takes nothing of its old one), a node without a past bootstraps.
   */
  start(): void {
    const { settings, timers } = this.options;
    this.ticking = true;
    this.execute(this.node.start(this.now()), { type: "start" });
    this.loops.push(() => {
      if (this.nextTick) timers.clearTimeout(this.nextTick.handle);
      this.nextTick = null;
    });
    // Spread by place in the file, so nodes started together do not all coordinate at once (a
    // prepare that arrives first is waited for: a ViewCore does not compete with a prepare deferred on it).
    // A view installed here before this node's turn (another node's bootstrap or rejoin took it
    // in, in an epoch above any it ran in) is what the wish was for: asking then would only end
    // that view's sections with one more epoch.
    const reason = this.options.storedView ? "rejoin" : "bootstrap";
    const first = timers.setTimeout(() => {
      if (this.node.status(this.now()).epoch === 0) this.wantViewChange(reason);
    }, this.node.ring.indexOf(this.node.id) * settings.viewChangeRetryMs);
    this.loops.push(() => timers.clearTimeout(first));
  }

  /**
   * One tick of the three cores, on one timer: each wake-up of an idle process costs more than
   * the ticks (docs/bench.md, idle CPU). Re-armed by armTick.
   */
  private tick(dueAtMs: number): void {
    this.nextTick = null;
    this.options.onTick?.(Math.max(0, this.now() - dueAtMs));
    this.view.tick(this.now());
    this.pumpView();
    this.stepPeer({ type: "tick" });
    if (this.repair) this.stepRepair({ type: "tick", epoch: this.epoch() });
    this.armTick();
  }

  /**
   * Arms the tick for when the cores next need one (their `nextDeadlineMs`, bounded by
   * `nextTickAtMs`, lib/core/ring/tick_schedule.ts). Called after every tick and every step,
   * since an input may bring a deadline nearer (a waiter, a suspicion, the token leaving); an
   * earlier tick already armed is kept.
   */
  private armTick(): void {
    if (!this.ticking || this.stopped) return;
    const { timers, settings } = this.options;
    const nowMs = this.now();
    const dueMs = Math.min(this.node.nextDeadlineMs(), this.view.nextDeadlineMs(nowMs), this.repair?.nextDeadlineMs(nowMs) ?? Number.POSITIVE_INFINITY);
    const atMs = nextTickAtMs(nowMs, dueMs, settings);
    if (this.nextTick && this.nextTick.atMs <= atMs) return;
    if (this.nextTick) timers.clearTimeout(this.nextTick.handle);
    this.nextTick = { atMs, handle: timers.setTimeout(() => this.tick(atMs), atMs - nowMs) };
  }

  /** Stops timers and answers every pending client request (so the HTTP server can close). */
  stop(): void {
    this.stopped = true;
    for (const stop of this.loops) stop();
    this.link.close();
    this.clients.close();
  }

  /** A message from a peer, a tick or an acknowledgement: the result answers the peer. */
  stepPeer(input: RingInput): RingResult {
    if (this.stopped) return { ok: false, type: "error", error: { code: "ring_unavailable", message: "stopping" } };
    if (this.repair && "from" in input && input.from !== this.node.id) this.stepRepair({ type: "heardFrom", node: input.from });
    const output = this.node.step(input, this.now());
    this.execute(output, input);
    return output.result;
  }

  /** A token hand-off or a write batch from the predecessor `from`: the result answers it. */
  stepItem(from: string, item: LinkItem): RingResult {
    return item.kind === "token"
      ? this.stepPeer({ type: "token", from, token: item.token })
      : this.stepPeer({ type: "writes", from, epoch: item.epoch, entries: item.entries });
  }

  /**
   * A client request (enter, leave or write) answered through `onReply`, once (a callback, not a
   * promise, so the simulator runs the HTTP API without one): at once, at the grant, or, for an
   * enter, "waiting" with a ticket after its long-poll (ClientWaits.request).
   */
  request(input: ClientInput, onReply: (reply: ClientReply) => void, abort?: AbortSignal): void {
    if (this.stopped) {
      return onReply({ ok: false, error: { code: "ring_unavailable", message: "the ring node is stopping" } });
    }
    this.clients.request(input, onReply, abort);
  }

  /**
   * Waits until section `fence` ends, `waitMs` passes or `abort` fires, then `onEnd(active)`;
   * false (and no call) when ringWaitersMax watches wait already (ClientWaits.watch).
   */
  watch(fence: number, waitMs: number, onEnd: (active: boolean) => void, abort?: AbortSignal): boolean {
    if (this.stopped) {
      onEnd(false);
      return true;
    }
    return this.clients.watch(fence, waitMs, onEnd, abort);
  }

  now(): number {
    return this.options.clock.nowMs();
  }

  get linkLength(): number {
    return this.link.length;
  }

  /** A datagram of the repair channel (validated there), for the repair core. */
  onRepairMessage(message: RepairMessage & { seq: number }): void {
    this.repair?.onMessage(message);
  }

  /**
   * The cluster file was reloaded (SIGHUP) and lists these ring nodes: one added or removed is
   * taken in or out by a view change (lib/core/ring/view.ts `changeMembership`); more at once is
   * refused (the reason is returned and logged), and so is a list without this node.
   */
  changeMembership(ring: string[]): string | null {
    if (this.stopped) return "stopping";
    const refusal = this.view.changeMembership(ring, this.now());
    if (refusal === null) {
      this.node.setRing(ring);
      this.repair?.setRing(ring);
    }
    this.options.log.event(refusal === null ? "ringReloaded" : "ringReloadRefused", { ring: ring.join(","), ...(refusal ? { reason: refusal } : {}) });
    this.pumpView();
    return refusal;
  }

  /** A view-change message from a peer (its answers leave as messages of their own). */
  onViewMessage(message: ViewMessage): void {
    if (this.stopped) return;
    if (this.repair && typeof message?.from === "string" && message.from !== this.node.id && this.node.ring.includes(message.from)) {
      this.stepRepair({ type: "heardFrom", node: message.from });
    }
    this.view.receive(message, this.now());
    this.pumpView();
  }

  /** The token lease and the view's quorum as status shows them. */
  lease(): LeaseStatus {
    return this.views.lease();
  }

  /** The view change's state for status: the view, the promise, and the last change with its timing. */
  viewStatus(): ViewStatus & { lastChange: ViewChangeTiming | null } {
    return this.views.status();
  }

  /** Hop times of this node's last hand-offs (status `hopMs`, the benchmark's hop latency; cluster/ring/hop_times.ts). */
  hopTimes(): HopTimesStatus {
    return this.hops.status();
  }

  /** The repair core's suspicions (empty without a repair link). */
  suspicions(): SuspicionStatus[] {
    return this.repair?.status(this.now()) ?? [];
  }

  /** One repair step (nothing without a repair link). */
  private stepRepair(input: RepairInput): void {
    this.repair?.step(input);
  }

  private epoch(): number {
    return this.node.status(this.now()).epoch;
  }

  /** Asks the view change for a new view (a trigger of this driver's, or the simulator's fault). */
  private wantViewChange(reason: ViewChangeReason): void {
    this.views.want(reason);
  }

  /** Handles what the view change has ready (ViewDriver.pump), then re-arms the tick. */
  private pumpView(): void {
    this.views.pump();
  }

  /** Stores first, then acts: the order every RingOutput demands. */
  private execute(output: RingOutput, input: RingInput | { type: "start" }): void {
    if (output.persist.length > 0) {
      try {
        this.options.storage.apply(output.persist);
      } catch (error) {
        this.options.log.event("persistFailed", { message: (error as Error).message });
        this.options.onFatal(error as Error);
        throw error;
      }
    }
    this.options.onStep?.(input, output);
    for (const effect of output.effects) this.onEffect(effect);
    this.pumpView();
  }

  private onEffect(effect: RingEffect): void {
    const { peers, log } = this.options;
    switch (effect.type) {
      case "sendToken":
        this.hops.queuedToken(effect.token.epoch, effect.token.hop);
        this.link.push({ kind: "token", token: effect.token });
        return;
      case "tokenReturned":
        this.link.dropTokensBefore(effect.epoch, effect.hop);
        return;
      case "sendWrites":
        this.link.push({ kind: "writes", epoch: effect.epoch, entries: effect.entries });
        return;
      case "fetch":
        peers.fetchLog(effect.from, effect.fromWseq).then(
          (reply) => {
            // Checked against its schema first: a malformed answer counts as a failed fetch.
            const checked = checkCatchUp(reply, this.options.settings);
            if (checked.ok) return this.stepPeer({ type: "caughtUp", reply: checked.value });
            this.security.refused("answerMalformed", effect.from, { message: checked.message });
            log.event("fetchFailed", { from: effect.from, fromWseq: effect.fromWseq, message: checked.message });
          },
          (error) => log.event("fetchFailed", { from: effect.from, fromWseq: effect.fromWseq, message: (error as Error).message }),
        );
        return;
      case "wakeAll":
        for (const id of this.node.ring) if (id !== this.node.id) peers.wake(id).then(undefined, () => {});
        return;
      case "wantLease":
        // Renews through the view change (its answers come as messages, the lease as a decision).
        this.view.wantLease(effect.epoch, this.now(), effect.sectionMaxMs);
        return;
      case "sectionGranted":
        this.view.sectionGranted(effect.epoch, effect.leaseMs, this.now());
        return;
      case "reply":
        this.clients.reply(effect.reqId, effect.reply);
        return;
      case "sectionEnded":
        this.clients.sectionEnded(effect.fence);
        return;
      case "event":
        log.event(effect.event, effect.fields, perSectionEvent(effect.event, effect.fields) ? "debug" : "info");
        return;
      default:
        assertNever(effect, "ring effect");
    }
  }
}
