/**
 * The whole `/metrics` text of a lock server and of a ring node after a fixed sequence of events
 * (answers, refusals, a stall, a clock jump, grants, waits, holds, releases, expiries, role
 * changes; token arrivals, rotations, grants, section ends, views, regenerations), pinned byte for
 * byte (each histogram series spelled out by `histogram` below). What it proves: reorganising
 * cluster/metrics.ts and the files it was split into changes no name, help text, label, series
 * order or value of the exposition. The expected text is the scrape of the code before the split
 * (cluster/metrics.ts at d0a5826); a deliberate change to the metrics updates it here, in the same
 * commit. Clocks are moved by hand (no real time passes).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { manualClock } from "../cluster/clock.ts";
import { memoryLogger } from "../cluster/log.ts";
import { NodeMetrics } from "../cluster/metrics.ts";
import { LockMetrics } from "../cluster/lock/metrics.ts";
import { RingMetrics } from "../cluster/ring/metrics.ts";
import { SecurityLog } from "../cluster/security_log.ts";
import type { RingInput, RingOutput } from "../lib/core/ring/ring_io.ts";

/** A NodeMetrics on hand-moved clocks, with one refusal, one stall past the margin, one clock jump and three answers. */
function nodeWithEvents(nodeId: string) {
  const clock = manualClock(1_000);
  let wallMs = 1_700_000_000_000;
  const log = memoryLogger();
  const security = new SecurityLog(clock, log, 1_000);
  const node = new NodeMetrics({
    nodeId,
    clock,
    log,
    security,
    loopStall: () => ({ loopStallMaxMs: 420, loopStallRecentMaxMs: 35 }),
    leaseSafetyMs: 100,
    wallNowMs: () => wallMs,
  });
  security.refused("malformed", "peer-x");
  security.refused("forged", "peer-y");
  security.refused("malformed", "peer-x");
  node.stalled(50);
  node.stalled(250, 7);
  clock.advance(1_000);
  wallMs += 1_000 + 5_000;
  node.checkClocks();
  node.answered(200);
  node.answered(409);
  node.answered(200);
  return { node, clock };
}

test("a lock server's /metrics text after a fixed sequence of events is pinned byte for byte", async () => {
  const { node, clock } = nodeWithEvents("p1");
  const lock = new LockMetrics(node, clock, () => ({ sessionCount: 3, lockCount: 2, epoch: 4, lagEntries: 5 }), {
    namesMax: 2,
    rankIntervalMs: 1_000,
    scoredMax: 10,
  });
  lock.event("primary", { how: "takeover" });
  lock.event("backup", {});
  lock.event("steppedDown", {});
  lock.event("primary", { how: "start" });
  lock.effect({ type: "granted", grant: { name: "a", session: "s1", token: 1, mode: "exclusive" } });
  lock.queued("a", "s2");
  lock.queued("a", "s2"); // a long-poll asking again: one wait
  clock.advance(250);
  lock.effect({ type: "released", name: "a", session: "s1", token: 1, reason: "leave" });
  lock.effect({ type: "granted", grant: { name: "a", session: "s2", token: 2, mode: "exclusive" } });
  lock.effect({ type: "granted", grant: { name: "b", session: "s3", token: 3, mode: "shared" } });
  lock.effect({ type: "granted", grant: { name: "c", session: "s3", token: 4, mode: "shared" } }); // past namesMax: other
  lock.queued("d", "s4");
  lock.effect({ type: "waitEnded", name: "d", session: "s4", reason: "withdrawn" });
  clock.advance(1_500);
  lock.effect({ type: "released", name: "c", session: "s3", token: 4, reason: "closed" }); // re-ranks first
  lock.effect({ type: "released", name: "a", session: "s2", token: 2, reason: "expired" });
  lock.effect({ type: "sessionExpired", session: "s2", released: [] });
  lock.effect({ type: "released", name: "z", session: "s9", token: 9, reason: "leave" }); // never seen granted
  assert.equal(await node.text(), LOCK_SERVER_TEXT);
});

test("a ring node's /metrics text after a fixed sequence of events is pinned byte for byte", async () => {
  const { node, clock } = nodeWithEvents("r2");
  const ring = new RingMetrics(node, clock);
  const event = (name: string, fields: Record<string, unknown>) => ({ type: "event", event: name, fields });
  const step = (input: unknown, result: unknown, effects: unknown[] = []) =>
    ring.step(input as RingInput, { result, persist: [], effects } as unknown as RingOutput);
  const token = (epoch: number) => ({ type: "token", from: "r1", token: { epoch } });
  step({ type: "start" }, { ok: true, type: "started" }, [event("epoch", { epoch: 1 })]);
  step(token(1), { ok: true, type: "token", duplicate: false });
  clock.advance(40);
  step(token(1), { ok: true, type: "token", duplicate: true }); // a duplicate: no hop
  step(token(1), { ok: true, type: "token", duplicate: false }, [event("granted", { waitedMs: 12 })]);
  clock.advance(3);
  step({ type: "tick" }, { ok: true, type: "tick" }, [event("sectionEnded", { reason: "left", heldMs: 3 }), event("granted", { waitedMs: -1 })]);
  step({ type: "tick" }, { ok: true, type: "tick" }, [event("sectionEnded", { heldMs: "x" }), event("epoch", { epoch: 2 }), event("tokenRegenerated", {})]);
  clock.advance(700);
  step(token(2), { ok: true, type: "token", duplicate: false });
  step(token(2), { ok: false, type: "token" });
  assert.equal(await node.text(), RING_NODE_TEXT);
});

/** The upper bounds of every time histogram (1 ms to 5 min), as the exposition writes them. */
const BOUNDS = ["0.001", "0.005", "0.01", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "30", "300"];

/** One histogram series as the exposition writes it: a cumulative count per bound, `+Inf` (the count), the sum and the count. */
function histogram(name: string, labels: string, cumulative: number[], count: number, sum: number): string {
  assert.equal(cumulative.length, BOUNDS.length, name);
  return [
    ...BOUNDS.map((le, i) => `${name}_bucket{le="${le}",${labels}} ${cumulative[i]}`),
    `${name}_bucket{le="+Inf",${labels}} ${count}`,
    `${name}_sum{${labels}} ${sum}`,
    `${name}_count{${labels}} ${count}`,
  ].join("\n");
}

/** Every node's own metrics, first in every scrape (the same events in both tests). */
const nodeText = (node: string) => `# HELP mutexd_http_responses_total HTTP answers by status code.
# TYPE mutexd_http_responses_total counter
mutexd_http_responses_total{code="200",node="${node}"} 2
mutexd_http_responses_total{code="409",node="${node}"} 1

# HELP mutexd_security_refusals_total Refused input (forged or replayed peer messages, bad client tokens, malformed bodies) by reason.
# TYPE mutexd_security_refusals_total counter
mutexd_security_refusals_total{reason="malformed",node="${node}"} 2
mutexd_security_refusals_total{reason="forged",node="${node}"} 1

# HELP mutexd_event_loop_stall_seconds The longest event-loop stall of the last ~10 s (window=recent) and since the start (window=max).
# TYPE mutexd_event_loop_stall_seconds gauge
mutexd_event_loop_stall_seconds{window="recent",node="${node}"} 0.035
mutexd_event_loop_stall_seconds{window="max",node="${node}"} 0.42

# HELP mutexd_stalls_past_lease_margin_total Event-loop stalls longer than the lease safety margin (the lease arguments assume shorter pauses).
# TYPE mutexd_stalls_past_lease_margin_total counter
mutexd_stalls_past_lease_margin_total{node="${node}"} 1

# HELP mutexd_clock_jumps_total Wall-clock steps seen against the monotonic clock, by direction.
# TYPE mutexd_clock_jumps_total counter
mutexd_clock_jumps_total{direction="forward",node="${node}"} 1

`;
const LOCK_SERVER_TEXT = nodeText("p1") + `# HELP mutexd_lock_grants_total Locks granted (committed).
# TYPE mutexd_lock_grants_total counter
mutexd_lock_grants_total{node="p1"} 4

# HELP mutexd_lock_releases_total Holds ended, by reason (leave, expired, closed).
# TYPE mutexd_lock_releases_total counter
mutexd_lock_releases_total{reason="leave",node="p1"} 2
mutexd_lock_releases_total{reason="closed",node="p1"} 1
mutexd_lock_releases_total{reason="expired",node="p1"} 1

# HELP mutexd_lock_session_expiries_total Sessions that expired.
# TYPE mutexd_lock_session_expiries_total counter
mutexd_lock_session_expiries_total{node="p1"} 1

# HELP mutexd_lock_waits_total Enters that were queued rather than granted at once.
# TYPE mutexd_lock_waits_total counter
mutexd_lock_waits_total{node="p1"} 2

# HELP mutexd_lock_wait_seconds Time from an enter to its grant, by lock name (the top 2 by total wait, re-ranked every 1 s; the rest under "other").
# TYPE mutexd_lock_wait_seconds histogram
${histogram("mutexd_lock_wait_seconds", 'node="p1",lock="a"', [1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2], 2, 0.25)}
${histogram("mutexd_lock_wait_seconds", 'node="p1",lock="b"', [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], 1, 0)}
${histogram("mutexd_lock_wait_seconds", 'node="p1",lock="other"', [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], 1, 0)}

# HELP mutexd_lock_hold_seconds Time from a grant to its release, by lock name (the top 2 by total hold, as the wait histogram).
# TYPE mutexd_lock_hold_seconds histogram
${histogram("mutexd_lock_hold_seconds", 'node="p1",lock="a"', [0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2], 2, 1.75)}
${histogram("mutexd_lock_hold_seconds", 'node="p1",lock="c"', [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1], 1, 1.5)}

# HELP mutexd_lock_takeovers_total Times this server took over as primary from the other's copy.
# TYPE mutexd_lock_takeovers_total counter
mutexd_lock_takeovers_total{node="p1"} 1

# HELP mutexd_lock_role_changes_total Roles this server took, by role.
# TYPE mutexd_lock_role_changes_total counter
mutexd_lock_role_changes_total{role="primary",node="p1"} 2
mutexd_lock_role_changes_total{role="backup",node="p1"} 1
mutexd_lock_role_changes_total{role="steppedDown",node="p1"} 1

# HELP mutexd_lock_sessions Open sessions in this server's table.
# TYPE mutexd_lock_sessions gauge
mutexd_lock_sessions{node="p1"} 3

# HELP mutexd_lock_locks Locks held or waited for in this server's table.
# TYPE mutexd_lock_locks gauge
mutexd_lock_locks{node="p1"} 2

# HELP mutexd_lock_epoch The replication epoch this server is in.
# TYPE mutexd_lock_epoch gauge
mutexd_lock_epoch{node="p1"} 4

# HELP mutexd_lock_replication_lag_entries Log entries the backup has not acknowledged (a primary with a backup; absent otherwise).
# TYPE mutexd_lock_replication_lag_entries gauge
mutexd_lock_replication_lag_entries{node="p1"} 5
`;
const RING_NODE_TEXT = nodeText("r2") + `# HELP mutexd_ring_token_hops_total Token hand-offs this node took from its predecessor.
# TYPE mutexd_ring_token_hops_total counter
mutexd_ring_token_hops_total{node="r2"} 3

# HELP mutexd_ring_rotation_seconds Time between two arrivals of the token here in one epoch (one trip round the ring).
# TYPE mutexd_ring_rotation_seconds histogram
${histogram("mutexd_ring_rotation_seconds", 'node="r2"', [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1], 1, 0.04)}

# HELP mutexd_ring_view_changes_total Views (epochs) this node entered.
# TYPE mutexd_ring_view_changes_total counter
mutexd_ring_view_changes_total{node="r2"} 2

# HELP mutexd_ring_token_regenerations_total Tokens this node regenerated for a new view.
# TYPE mutexd_ring_token_regenerations_total counter
mutexd_ring_token_regenerations_total{node="r2"} 1

# HELP mutexd_ring_grants_total Critical sections granted on this node.
# TYPE mutexd_ring_grants_total counter
mutexd_ring_grants_total{node="r2"} 2

# HELP mutexd_ring_sections_ended_total Critical sections ended on this node, by reason.
# TYPE mutexd_ring_sections_ended_total counter
mutexd_ring_sections_ended_total{reason="left",node="r2"} 1
mutexd_ring_sections_ended_total{reason="unknown",node="r2"} 1

# HELP mutexd_ring_wait_seconds Time from an enter to its grant on this node.
# TYPE mutexd_ring_wait_seconds histogram
${histogram("mutexd_ring_wait_seconds", 'node="r2"', [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1], 1, 0.012)}

# HELP mutexd_ring_hold_seconds Time from a grant to the section's end on this node.
# TYPE mutexd_ring_hold_seconds histogram
${histogram("mutexd_ring_hold_seconds", 'node="r2"', [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], 1, 0.003)}
`;
