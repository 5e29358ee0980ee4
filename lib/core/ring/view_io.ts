/**
 * The ViewCore's plain interface types (view.ts): its options and settings, the reasons for a
 * view change, and what one step hands the driver (ViewReady: hard state, messages, decisions
 * for the ring node, events). The wire's data (ballots, views, messages) is in view_wire.ts.
 */
import type { Settings } from "../../settings.ts";
import type { Ballot, LocalFacts, View, ViewHardState, ViewMessage } from "./view_wire.ts";

export type ViewChangeReason = "tokenLoss" | "suspect" | "rejoin" | "membership" | "bootstrap";

export type ViewDecision =
  /** Refuse every token and write of an epoch below `epoch`; stop granting. */
  | { type: "promised"; epoch: number }
  /** Ring anew: this view, this successor; regenerate if asked; no grant before grantNotBeforeMs. */
  | { type: "install"; view: View; successor: string; regenerate: boolean; grantNotBeforeMs: number; fenceFloor: number }
  /** `sectionMaxMs`: the longest section the node may grant under this lease (its renewal stated it). */
  | { type: "lease"; epoch: number; validUntilMs: number; sectionMaxMs: number }
  /** A newer view exists without this node: catch the replica up from a member, then rejoin. */
  | { type: "behind"; viewEpoch: number }
  /** false: no majority reachable (no view change, no lease): this node does not grant. */
  | { type: "quorum"; ok: boolean; reason: string };

export interface ViewReady {
  persist: ViewHardState | null;
  send: Array<{ to: string; message: ViewMessage }>;
  decisions: ViewDecision[];
  events: Array<{ event: string; fields: Record<string, unknown> }>;
}

export type ViewSettings = Pick<
  Settings,
  "tokenLeaseMs" | "tokenLeaseSafetyMs" | "viewPromiseWaitMs" | "viewChangeTimeoutMs" | "viewChangeRetryMs" | "ringLeaseMaxMs" | "tokenLossMs"
>;

export interface ViewOptions {
  id: string;
  /** The ring nodes of the cluster file, in file order: the voters. */
  ring: string[];
  /** The arbiter's id, if there is one: it may coordinate, it never votes. */
  arbiter: string | null;
  settings: ViewSettings;
  /** The ring node's facts now (pure: the driver reads them from its RingNode). */
  localFacts: (nowMs: number) => LocalFacts;
}

export interface ViewStatus {
  id: string;
  promised: Ballot;
  view: View | null;
  member: boolean;
  quorum: "ok" | "lost";
  coordinating: Ballot | null;
  wanted: ViewChangeReason | null;
  leaseValidUntilMs: number | null;
  promiseHeldUntilMs: number;
  /** Until when a section its holder announced in the installed view may run (null: none): the probe waits for it. */
  sectionSeenUntilMs: number | null;
}

export function emptyReady(): ViewReady {
  return { persist: null, send: [], decisions: [], events: [] };
}
