/**
 * The two rounds of `probe` messages a ViewCore sends (docs/ring-view.md), neither of which changes
 * state anywhere but here:
 * - the token-loss probe: a member that has not seen the token for tokenLossMs asks the voters;
 *   when a majority saw none lately, the token is lost and a view change starts. A section its
 *   holder announced (`section`) counts as a sighting until its lease ends: a long section on a
 *   loaded holder, slow to answer the probe, is not a lost token. An announcer that probes ends
 *   its own announcement first (`sectionEnd`): the token it passed on may be lost since;
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
  readonly settings: Pick<ViewSettings, "tokenLossMs" | "viewChangeTimeoutMs" | "viewPromiseWaitMs" | "ringLeaseMaxMs">;
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

/**
 * How many announcements of one announcer a receiver keeps: one per visit of the token still
 * counting (those within tokenLossMs of their end), of which a ring normally has one or two.
 */
const SECTIONS_KEPT = 4;

export class ViewProbe {
  /** The pre-vote round (see canvassed); canvassFirst: needed before the next attempt. */
  private canvass: { sentAtMs: number; answered: Set<string> } | null = null;
  private canvassFirst = false;
  private probe: { epoch: number; sentAtMs: number; quiet: Set<string>; unreachable: Set<string>; majorityAtMs: number | null } | null = null;
  private nextProbeAtMs = Number.NEGATIVE_INFINITY;
  /**
   * Per announcer, its sections announced in view `epoch`, each by its number `n`: the token may
   * be there until `untilMs`. Kept apart, so an end (`n` and below) leaves a later announcement:
   * a `sectionEnd` delayed past the token's return and the next announcement ends only what it
   * names. One key per other voter of the current list at most (a section arriving drops other
   * views' and non-voters' entries, changeMembership a removed node's), SECTIONS_KEPT entries each.
   */
  private readonly announced = new Map<string, Array<{ epoch: number; n: number; untilMs: number }>>();
  /**
   * The latest section this node announced as the holder of view `epoch`'s token, its number `n`,
   * ending at `untilMs` (its clock); `ended`: a `sectionEnd` for it went out (a later section is
   * announced again).
   */
  private ownAnnounced: { epoch: number; n: number; untilMs: number; ended: boolean } | null = null;
  /**
   * Numbers this node's announcements (`section.n`, which `sectionEnd.n` names). Not stored: after
   * a restart it counts from 1 again, so an end then leaves the sections numbered higher before
   * the restart, which count until their own leases end (as every announcement did before ends).
   */
  private announcedCount = 0;

  constructor(private readonly host: ViewProbeHost) {}

  /**
   * This node, holding view `epoch`'s token, granted a section of `leaseMs` now: whether to
   * announce it. Not when its last announcement already has the others wait until at least
   * tokenLossMs / 2 after this section's end (they probe tokenLossMs after the announced end):
   * a client that leaves and enters again at once would otherwise cost two messages per section
   * in a ring of three, 2.5× the CPU of an unannounced one (tests/bench/section_announce_cost.ts).
   */
  announceSection(epoch: number, leaseMs: number): number | null {
    const host = this.host;
    if (epoch !== host.viewEpoch()) return null;
    const untilMs = host.nowMs() + leaseMs;
    const own = this.ownAnnounced;
    if (own?.epoch === epoch && !own.ended && untilMs <= own.untilMs + host.settings.tokenLossMs / 2) return null;
    const n = ++this.announcedCount;
    this.ownAnnounced = { epoch, n, untilMs, ended: false };
    return n;
  }

  /**
   * The holder of view `epoch`'s token granted a section of `leaseMs` (a `section` message,
   * received now): the token may stay there that long, so it counts as seen until the lease ends.
   * Liveness only (the view change's safety never rests on it): a holder that dies in the section
   * is found tokenLossMs after its lease, the lease its last renewal stated bounds the wait for it
   * anyway (decide.ts), and a lease above ringLeaseMaxMs counts as ringLeaseMaxMs. Its holder
   * ends it early (`sectionEnd`, onSectionEnd) when it probes for the token it passed on. `n`:
   * the announcement's number, which that end names.
   */
  onSection(from: string, epoch: number, leaseMs: number, n: number): void {
    const host = this.host;
    // Another view's section: an older view's holder has lost its lease; of a newer one, this
    // node is behind, which its probe finds out.
    if (epoch !== host.viewEpoch()) return;
    const nowMs = host.nowMs();
    const untilMs = nowMs + Math.min(leaseMs, host.settings.ringLeaseMaxMs);
    this.prune(epoch, nowMs);
    const kept = this.announced.get(from) ?? [];
    kept.push({ epoch, n, untilMs });
    // The bound: the oldest ends go first (they say the least about where the token is now).
    kept.sort((x, y) => y.untilMs - x.untilMs).splice(SECTIONS_KEPT);
    this.announced.set(from, kept);
    // Only a section still running says where the token is (a lease of 0 passes the schema).
    if (this.probe && untilMs > nowMs) {
      this.probe = null;
      host.event("tokenAlive", { at: from, section: true });
    }
  }

  /**
   * `from` ended its sections of view `epoch` numbered `n` and below (`sectionEnd`): they are no
   * sighting any more. Only those: another holder's announcement of the same view stands, and so
   * does a later one of its own (numbered higher), even when the end arrives after it.
   */
  onSectionEnd(from: string, epoch: number, n: number): void {
    const kept = this.announced.get(from)?.filter((section) => section.epoch !== epoch || section.n > n);
    if (kept?.length) this.announced.set(from, kept);
    else this.announced.delete(from);
  }

  /**
   * Drops what no longer says anything of view `epoch`'s token: other views' announcements, those
   * of nodes that are no other voter now, and those over tokenLossMs ago (no "seen lately" then).
   * Called when a section arrives and when the membership changes (forgetNonVoters).
   */
  private prune(epoch: number, nowMs: number): void {
    const others = new Set(this.host.others());
    for (const [from, sections] of this.announced) {
      const kept = sections.filter((s) => s.epoch === epoch && s.untilMs + this.host.settings.tokenLossMs > nowMs);
      if (kept.length > 0 && others.has(from)) this.announced.set(from, kept);
      else this.announced.delete(from);
    }
  }

  /** The voters changed: a removed node's announcements go (and every one no longer relevant). */
  forgetNonVoters(): void {
    this.prune(this.host.viewEpoch(), this.host.nowMs());
  }

  /** Until when the latest section announced in the installed view may run (null: none). */
  sectionSeenUntilMs(): number | null {
    const epoch = this.host.viewEpoch();
    let untilMs: number | null = null;
    for (const sections of this.announced.values()) {
      for (const section of sections) {
        if (section.epoch === epoch && (untilMs === null || section.untilMs > untilMs)) untilMs = section.untilMs;
      }
    }
    return untilMs;
  }

  /**
   * When this node last had evidence of the token (null: never): it held, sent or took it then,
   * or a section announced in the installed view may run until then (from its step's clock).
   */
  private tokenSeenAtMs(local: LocalFacts): number | null {
    const host = this.host;
    const seenAtMs = local.lastTokenAgeMs === null ? null : host.nowMs() - local.lastTokenAgeMs;
    const sectionUntilMs = this.sectionSeenUntilMs();
    if (sectionUntilMs === null) return seenAtMs;
    return seenAtMs === null ? sectionUntilMs : Math.max(seenAtMs, sectionUntilMs);
  }

  /** How long ago that was (0 while an announced section may still run); null: never. */
  private tokenSeenAgeMs(local: LocalFacts): number | null {
    const seenAtMs = this.tokenSeenAtMs(local);
    return seenAtMs === null ? null : Math.max(0, this.host.nowMs() - seenAtMs);
  }

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
    const lastSeenMs = this.tokenSeenAgeMs(local);
    if (lastSeenMs !== null && lastSeenMs < settings.tokenLossMs) return;
    if (lastSeenMs === null && nowMs < host.grantNotBeforeMs() + settings.tokenLossMs) return;
    const epoch = host.viewEpoch();
    this.probe = { epoch, sentAtMs: nowMs, quiet: new Set([host.id]), unreachable: new Set(), majorityAtMs: null };
    this.nextProbeAtMs = nowMs + settings.tokenLossMs;
    const endOwn = this.ownSectionMayCount(epoch, nowMs);
    for (const to of host.others()) {
      if (endOwn) host.send(to, { type: "sectionEnd", from: host.id, epoch, n: endOwn.n });
      host.send(to, { type: "probe", from: host.id, epoch });
    }
    if (endOwn) this.ownAnnounced = { ...endOwn, ended: true };
    this.checkProbe();
  }

  /**
   * This node's last announced section of view `epoch` while the others may still count it as a
   * sighting (else null). This node probes, so the token left here: the section is over, but the
   * others answer "seen" (age 0) until its lease ends and "seen lately" tokenLossMs after, which
   * hid a token lost at the next holder for up to the whole lease (ringLeaseMaxMs). So a
   * `sectionEnd` goes to each voter ahead of the probe, with every probe until then: one lost, or
   * overtaken by the probe (separate requests), costs one more probe round, not the lease. The
   * extra tokenLossMs covers the announcement's delay and the receivers' clock rates. Sent only
   * by a prober, never per hand-off: the ring's hops stay one message each.
   */
  private ownSectionMayCount(epoch: number, nowMs: number): { epoch: number; n: number; untilMs: number } | null {
    const own = this.ownAnnounced;
    if (own === null || own.epoch !== epoch || nowMs >= own.untilMs + 2 * this.host.settings.tokenLossMs) return null;
    return { epoch: own.epoch, n: own.n, untilMs: own.untilMs };
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
    const seenAtMs = this.tokenSeenAtMs(local);
    const lostAtMs = seenAtMs !== null ? seenAtMs + lossMs : host.grantNotBeforeMs() + lossMs;
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
      // A section announced here counts as a sighting (the prober may have missed its announcement).
      lastTokenAgeMs: this.tokenSeenAgeMs(local),
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
