/**
 * The two rounds of `probe` messages a ViewCore sends (docs/ring-view.md), neither of which changes
 * state anywhere but here:
 * - the token-loss probe: a member that has not seen the token for tokenLossMs asks the voters;
 *   when a majority saw none lately, the token is lost and a view change starts;
 * - the pre-vote canvass: a coordinator that could not even reach a majority asks before it takes
 *   the next epoch.
 *
 * Owned by a ViewCore, which hands the probe messages and their answers in here.
 * No clock, timer, randomness or I/O in here: time comes from the core's step.
 */
import type { LocalFacts, ViewMessage } from "./view_wire.ts";
import type { ViewSettings } from "./view_io.ts";

/** What the probe and the canvass need of their ViewCore (read live: configure changes the voters). */
export interface ViewProbeHost {
  readonly id: string;
  readonly settings: Pick<ViewSettings, "tokenLossMs" | "viewChangeTimeoutMs" | "viewPromiseWaitMs">;
  nowMs(): number;
  localFacts(): LocalFacts;
  /** How many voters there are, how many make a majority, and whether this node is one. */
  voterCount(): number;
  quorum(): number;
  voter(): boolean;
  /** The epoch of the installed view (0: none). */
  viewEpoch(): number;
  grantNotBeforeMs(): number;
  /** A member of its installed view, with no view change wanted or running: it may probe. */
  mayProbe(): boolean;
  /** Sinks of the core's current step. */
  /** The other voters. */
  others(): string[];
  send(to: string, message: ViewMessage): void;
  answerTo(to: string, message: ViewMessage): void;
  event(event: string, fields: Record<string, unknown>): void;
  setQuorum(ok: boolean, reason: string): void;
  /** Another node installed view `viewEpoch` (this node may be behind). */
  seeViewEpoch(viewEpoch: number): void;
  /** A canvass answer came: the coordinator may now go on. */
  canvassAnswered(): void;
  /** The canvass found no majority: try again later. */
  backOff(): void;
  tokenLost(): void;
}

export class ViewProbe {
  /** The pre-vote round (see canvassed); canvassFirst: needed before the next attempt. */
  private canvass: { sentAtMs: number; answered: Set<string> } | null = null;
  private canvassFirst = false;
  private probe: { epoch: number; sentAtMs: number; quiet: Set<string>; unreachable: Set<string>; majorityAtMs: number | null } | null = null;
  private nextProbeAtMs = Number.NEGATIVE_INFINITY;

  constructor(private readonly host: ViewProbeHost) {}

  // ---- token loss probe -----------------------------------------------------------------

  tick(): void {
    const host = this.host;
    const settings = host.settings;
    if (!host.mayProbe()) return;
    const nowMs = host.nowMs();
    const local = host.localFacts();
    const probe = this.probe;
    if (probe) {
      this.checkProbe();
      if (this.probe && nowMs >= probe.sentAtMs + settings.viewChangeTimeoutMs) {
        this.probe = null;
        host.setQuorum(false, `token probe: ${probe.quiet.size} answers, ${host.quorum()} needed`);
      }
      return;
    }
    if (local.token !== "away" || nowMs < this.nextProbeAtMs) return;
    const lastSeenMs = local.lastTokenAgeMs;
    if (lastSeenMs !== null && lastSeenMs < settings.tokenLossMs) return;
    if (lastSeenMs === null && nowMs < host.grantNotBeforeMs() + settings.tokenLossMs) return;
    const epoch = host.viewEpoch();
    this.probe = { epoch, sentAtMs: nowMs, quiet: new Set([host.id]), unreachable: new Set(), majorityAtMs: null };
    this.nextProbeAtMs = nowMs + settings.tokenLossMs;
    for (const to of host.others()) host.send(to, { type: "probe", from: host.id, epoch });
    this.checkProbe();
  }

  /**
   * When `tick` may next act (a pure read): `nowMs` while a probe or canvass runs; when the token
   * will have been away tokenLossMs (and the last probe's pause is over) while it is away; +∞
   * while it is here or on its way out, or probing is not this node's to do (the token's moves
   * and the wishes that allow it again come as inputs).
   */
  nextCheckMs(nowMs: number): number {
    const host = this.host;
    if (this.probe || this.canvass) return nowMs;
    if (!host.mayProbe()) return Number.POSITIVE_INFINITY;
    const local = host.localFacts();
    if (local.token !== "away") return Number.POSITIVE_INFINITY;
    const lossMs = host.settings.tokenLossMs;
    // The facts' age is from the core's last step (host.nowMs), not from `nowMs`.
    const lostAtMs = local.lastTokenAgeMs !== null ? host.nowMs() - local.lastTokenAgeMs + lossMs : host.grantNotBeforeMs() + lossMs;
    return Math.max(this.nextProbeAtMs, lostAtMs);
  }

  onProbe(from: string): void {
    const host = this.host;
    const local = host.localFacts();
    host.answerTo(from, {
      type: "probeReply",
      from: host.id,
      viewEpoch: host.viewEpoch(),
      tokenEpoch: local.tokenEpoch,
      tokenHop: local.tokenHop,
      live: local.token !== "away",
      lastTokenAgeMs: local.lastTokenAgeMs,
    });
  }

  onProbeReply(message: Extract<ViewMessage, { type: "probeReply" }>): void {
    this.host.seeViewEpoch(message.viewEpoch);
    if (this.canvass) {
      this.canvass.answered.add(message.from);
      this.host.canvassAnswered();
    }
    const probe = this.probe;
    if (!probe) return;
    const seenLately = message.lastTokenAgeMs !== null && message.lastTokenAgeMs < this.host.settings.tokenLossMs;
    if (message.viewEpoch > probe.epoch) {
      this.probe = null; // not lost: this node is behind (seeViewEpoch said so)
      return;
    }
    if (message.live || seenLately) {
      this.probe = null;
      this.host.event("tokenAlive", { at: message.from, tokenEpoch: message.tokenEpoch, tokenHop: message.tokenHop });
      return;
    }
    probe.quiet.add(message.from);
    this.checkProbe();
  }

  /** A probe could not be delivered to `to`: an answer, but not a quiet one. */
  unreachable(to: string): void {
    if (!this.probe) return;
    this.probe.unreachable.add(to);
    this.checkProbe();
  }

  /** Token lost: a majority saw none lately, and the rest answered too or had a short while. */
  private checkProbe(): void {
    const host = this.host;
    const probe = this.probe;
    if (!probe || probe.quiet.size < host.quorum()) return;
    const nowMs = host.nowMs();
    probe.majorityAtMs ??= nowMs;
    const allAnswered = probe.quiet.size + probe.unreachable.size >= host.voterCount();
    if (!allAnswered && nowMs < probe.majorityAtMs + host.settings.viewPromiseWaitMs) return;
    host.event("tokenLost", { epoch: probe.epoch, quiet: [...probe.quiet].join(",") });
    this.probe = null;
    host.tokenLost();
  }

  // ---- pre-vote ---------------------------------------------------------------------------

  /** Whether the next attempt must canvass first (not even a majority answered the last one). */
  needCanvass(needed: boolean): void {
    this.canvassFirst = needed;
  }

  /** True when the next attempt may take an epoch: no canvass needed, or it found a majority. */
  mayTakeEpoch(): boolean {
    return !this.canvassFirst || this.canvassed();
  }

  /**
   * Raft's pre-vote: a node that could not even reach a majority asks (probe, no state change
   * anywhere) before it takes the next epoch. Without it, a node cut off for days would burn an
   * epoch per attempt and push every epoch towards EPOCH_MAX. True once a majority answered.
   */
  private canvassed(): boolean {
    const host = this.host;
    const canvass = this.canvass;
    const nowMs = host.nowMs();
    if (canvass && canvass.answered.size >= host.quorum()) {
      this.canvass = null;
      this.canvassFirst = false;
      return true;
    }
    if (canvass && nowMs < canvass.sentAtMs + host.settings.viewChangeTimeoutMs) return false;
    if (canvass) {
      this.canvass = null;
      host.setQuorum(false, `${canvass.answered.size} voters answered, ${host.quorum()} needed`);
      host.event("canvassFailed", { answered: [...canvass.answered].join(",") });
      host.backOff();
      return false;
    }
    this.canvass = { sentAtMs: nowMs, answered: new Set(host.voter() ? [host.id] : []) };
    for (const to of host.others()) host.send(to, { type: "probe", from: host.id, epoch: host.viewEpoch() });
    return false;
  }
}
