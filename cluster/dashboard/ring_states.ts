/**
 * Each ring member's state as the dashboard shows it, from one snapshot's parts (routes.ts): pure,
 * no DOM, so the page's script (page_script.ts) and the tests share it.
 * - `down`: the member did not answer the snapshot (or no part of it came);
 * - `outOfView`: the newest view any member that answered reports (highest epoch) leaves it out;
 * - `minority`: it answered, but its lease says the quorum is lost (it sits in a minority);
 * - `suspected`: some member that answered suspects it (its repair link's suspicions);
 * - `alive`: none of these.
 * The first that applies wins, in this order.
 */

export interface RingView {
  epoch: number;
  members: string[];
  regenerator?: string;
}

/** What the page reads of a ring member's part (`GET /v1/ring/status` through the dashboard). */
export interface RingPartState {
  view: { view: RingView | null };
  lease: { quorum: string };
  suspicions?: Array<{ node: string }>;
  token?: string;
  successor?: string;
}

export interface SnapshotPart {
  id: string;
  /** Why it is missing (a member that did not answer), else absent. */
  down?: string;
  // deno-lint-ignore no-explicit-any
  state: any;
}

export type RingMemberState = "alive" | "suspected" | "outOfView" | "minority" | "down";

export const RING_MEMBER_STATES: readonly RingMemberState[] = ["alive", "suspected", "outOfView", "minority", "down"];

export function ringStates(
  ringMembers: ReadonlyArray<{ id: string }>,
  parts: ReadonlyMap<string, SnapshotPart>,
): { states: Map<string, RingMemberState>; view: RingView | null } {
  const up = ringMembers.map((m) => parts.get(m.id)).filter((p): p is SnapshotPart => p !== undefined && !p.down);
  let best: RingView | null = null;
  for (const p of up) {
    const view = (p.state as RingPartState).view?.view ?? null;
    if (view && (!best || view.epoch > best.epoch)) best = view;
  }
  const suspected = new Set(up.flatMap((p) => ((p.state as RingPartState).suspicions ?? []).map((s) => s.node)));
  const states = new Map<string, RingMemberState>();
  for (const m of ringMembers) {
    const p = parts.get(m.id);
    let state: RingMemberState = "alive";
    if (!p || p.down) state = "down";
    else if (best && !best.members.includes(m.id)) state = "outOfView";
    else if ((p.state as RingPartState).lease?.quorum === "lost") state = "minority";
    else if (suspected.has(m.id)) state = "suspected";
    states.set(m.id, state);
  }
  return { states, view: best };
}
