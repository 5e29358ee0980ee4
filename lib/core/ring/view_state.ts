/**
 * The view change core's state and its output (the layer every part of ViewCore builds on: view.ts).
 *
 * ViewCore is one state machine whose concepts share its state (the promised ballot, the installed
 * view, the voters, the lease hold) and call each other within one input, so its parts are layers
 * of one class: this file holds the fields, the construction from the stored hard state with the
 * coordinator's attempts (view_attempt.ts) and the probe (view_probe.ts) wired to it, the voters
 * (`configure`), and the helpers and sinks of the output being built; view_voting.ts the vote and
 * the install; view_lease.ts the token lease's messages; view.ts the inputs. The fields are
 * protected for those layers only.
 *
 * No clock, timers, randomness or I/O: time comes in as `nowMs`.
 */
import { assert } from "../assert.ts";
import { LeaseHold, TokenLeaseHolder } from "./token_lease.ts";
import { ViewAttempts } from "./view_attempt.ts";
import { ViewProbe } from "./view_probe.ts";
import { emptyReady, type ViewChangeReason, type ViewOptions, type ViewReady } from "./view_io.ts";
import type { Ballot, View, ViewHardState, ViewMessage } from "./view_wire.ts";

const NO_BALLOT: Ballot = { epoch: 0, coordinator: "" };

export abstract class ViewState {
  protected promised: Ballot;
  protected view: View | null;
  /** Until then a node removed by a reload may still have a client in a section (see changeMembership). */
  protected removedSectionsUntilMs = Number.NEGATIVE_INFINITY;
  /** The ring nodes of the cluster file (the voters), in file order; see changeMembership. */
  protected ring: string[] = [];
  protected voter = false;
  protected quorum = 1;
  protected rank = 0;
  protected readonly hold: LeaseHold;
  /** Whether a hard state was ever stored (a restart then holds and reports its restart). */
  protected hasPast: boolean;
  /** When this incarnation started, if the node ran before (it had a stored hard state); else null. */
  protected readonly restartedAtMs: number | null;
  protected lease!: TokenLeaseHolder;
  /** The coordinator's side: its attempt and the announcement of the view it decided. */
  protected readonly attempts: ViewAttempts;
  /** The token-loss probe and the pre-vote canvass. */
  protected readonly probe: ViewProbe;
  protected wanted: { reason: ViewChangeReason; aboveEpoch: number } | null = null;
  /** A prepare that waits for this node's lease hold to end (the highest one only). */
  protected deferred: { from: string; ballot: Ballot; voters: readonly string[] } | null = null;
  protected lastPromiseAtMs = Number.NEGATIVE_INFINITY;
  protected highestSeenEpoch = 0;
  /** The newest view epoch reported as "behind" (once per epoch). */
  protected behindEpoch = 0;
  protected grantNotBeforeMs = Number.NEGATIVE_INFINITY;
  protected neverLeft: { epoch: number; hop: number } | null = null;
  protected quorumOk = true;
  protected nowMs: number;
  protected out: ViewReady = emptyReady();

  constructor(protected readonly options: ViewOptions, stored: ViewHardState | null, nowMs: number) {
    const { ring, settings } = options;
    this.configure(ring);
    this.promised = stored?.promised ?? NO_BALLOT;
    this.view = stored?.view ?? null;
    this.highestSeenEpoch = Math.max(this.promised.epoch, this.view?.epoch ?? 0);
    // It may have renewed a lease just before it stopped: no promise for a whole lease.
    this.hold = new LeaseHold(settings.tokenLeaseMs, nowMs);
    this.restartedAtMs = stored ? nowMs : null;
    this.hasPast = stored !== null;
    this.nowMs = nowMs;
    const { id } = options;
    // Closures, not copies: configure changes the voters, and calls go through the prototype.
    const common = {
      id,
      settings,
      nowMs: () => this.nowMs,
      quorum: () => this.quorum,
      voter: () => this.voter,
      others: () => this.others(),
      send: (to: string, message: ViewMessage) => this.send(to, message),
      event: (event: string, fields: Record<string, unknown>) => this.event(event, fields),
      setQuorum: (ok: boolean, reason: string) => this.setQuorum(ok, reason),
      seeViewEpoch: (viewEpoch: number) => this.seeViewEpoch(viewEpoch),
    };
    this.probe = new ViewProbe({
      ...common,
      localFacts: () => options.localFacts(this.nowMs),
      voterCount: () => this.ring.length,
      viewEpoch: () => this.view?.epoch ?? 0,
      grantNotBeforeMs: () => this.grantNotBeforeMs,
      mayProbe: () => this.isMember() && !this.wanted && !this.attempts.running,
      answerTo: (to, message) => this.answerTo(to, message),
      canvassAnswered: () => this.attempts.tick(),
      backOff: () => this.attempts.backOff(),
      tokenLost: () => this.startViewChange("tokenLoss", this.nowMs),
    });
    this.attempts = new ViewAttempts({
      ...common,
      ring: () => this.ring,
      rank: () => this.rank,
      wanted: () => this.wanted,
      clearWanted: () => this.wanted = null,
      promisedLately: () =>
        this.promised.epoch > (this.view?.epoch ?? 0) && this.nowMs < this.lastPromiseAtMs + settings.viewChangeTimeoutMs,
      prepareDeferred: () => this.deferred !== null,
      mayTakeEpoch: () => this.probe.mayTakeEpoch(),
      needCanvass: (needed) => this.probe.needCanvass(needed),
      highestSeenEpoch: () => this.highestSeenEpoch,
      seeEpoch: (epoch) => this.seeEpoch(epoch),
      onPrepare: (from, ballot, voters) => this.onPrepare(from, ballot, voters),
      onNewView: (view) => this.onNewView(view),
    });
  }

  /** Sets the voters; a new majority needs a new lease (the old one counted other voters). */
  protected configure(ring: string[]): void {
    const { id, arbiter } = this.options;
    assert(new Set(ring).size === ring.length && ring.length > 0, "ring ids must be unique and non-empty");
    assert(ring.includes(id) || id === arbiter, `${id} is neither a ring node nor the arbiter`);
    this.ring = [...ring];
    this.voter = ring.includes(id);
    this.quorum = Math.floor(ring.length / 2) + 1;
    this.rank = this.voter ? ring.indexOf(id) : ring.length;
    this.lease = new TokenLeaseHolder(id, this.quorum, this.options.settings);
  }

  // ---- helpers ----------------------------------------------------------------------------

  protected advance(nowMs: number): void {
    assert(Number.isFinite(nowMs) && nowMs >= this.nowMs, `time went backwards: ${nowMs} < ${this.nowMs}`);
    this.nowMs = nowMs;
  }

  protected currentEpoch(): number {
    return Math.max(this.promised.epoch, this.view?.epoch ?? 0);
  }

  protected seeEpoch(epoch: number): void {
    this.highestSeenEpoch = Math.max(this.highestSeenEpoch, epoch);
  }

  /** Another node installed view `viewEpoch`; newer than anything here: this node is behind. */
  protected seeViewEpoch(viewEpoch: number): void {
    this.seeEpoch(viewEpoch);
    // The arbiter installs nothing: a wish it coordinates is served by any newer view, its own or
    // a ring node's (else it would force one more view change later: review finding 6).
    if (!this.voter && this.wanted && viewEpoch > this.wanted.aboveEpoch) this.wanted = null;
    if (viewEpoch <= this.currentEpoch() || viewEpoch <= this.behindEpoch) return;
    this.behindEpoch = viewEpoch;
    this.out.decisions.push({ type: "behind", viewEpoch });
    this.event("behind", { viewEpoch, epoch: this.currentEpoch() });
  }

  protected isMember(): boolean {
    return this.view !== null && this.view.members.includes(this.options.id) && this.promised.epoch <= this.view.epoch;
  }

  protected others(): string[] {
    return this.ring.filter((id) => id !== this.options.id);
  }

  /** Answers `to`; an answer to itself (its own ballot) is fed back at once. */
  protected answerTo(to: string, message: ViewMessage): void {
    if (to === this.options.id) this.receive(message, this.nowMs);
    else this.send(to, message);
  }

  protected send(to: string, message: ViewMessage): void {
    this.out.send.push({ to, message });
  }

  protected persist(): void {
    this.hasPast = true;
    this.out.persist = { promised: { ...this.promised }, view: this.view ? { ...this.view, members: [...this.view.members] } : null };
  }

  protected setQuorum(ok: boolean, reason: string): void {
    if (ok === this.quorumOk) return;
    this.quorumOk = ok;
    this.out.decisions.push({ type: "quorum", ok, reason });
  }

  protected event(event: string, fields: Record<string, unknown>): void {
    this.out.events.push({ event, fields });
  }

  // ---- the layers above ---------------------------------------------------------------------

  /** Every peer message (view.ts); a node's answer to itself comes back through it. */
  abstract receive(message: ViewMessage, nowMs: number): void;
  /** Asks for a new view (view.ts). */
  abstract startViewChange(reason: ViewChangeReason, nowMs: number, ownAfterMs?: number): void;
  /** A prepare, from a peer or this node's own attempt (view_voting.ts). */
  protected abstract onPrepare(from: string, ballot: Ballot, voters: readonly string[]): void;
  /** A decided view, from its coordinator or this node's own attempt (view_voting.ts). */
  protected abstract onNewView(view: View): void;
}
