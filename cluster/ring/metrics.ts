/**
 * A ring node's metrics (`GET /metrics` with every node's, cluster/metrics.ts): token hops,
 * rotations, grants, section ends, view changes and regenerations, fed from its core's steps
 * (docs/http-api.md lists them).
 */
import { Counter, Histogram } from "prom-client";
import type { RingInput, RingOutput } from "../../lib/core/ring/ring_io.ts";
import type { Clock } from "../clock.ts";
import type { LogFields } from "../log.ts";
import type { NodeMetrics } from "../metrics.ts";
import { TIME_BUCKETS_SECONDS } from "../scraped_metrics.ts";

/** A ring node's metrics, fed from its core's events and the token's arrivals (ring/service.ts). */
export class RingMetrics {
  private readonly hops: Counter;
  private readonly rotationSeconds: Histogram;
  private readonly viewChanges: Counter;
  private readonly regenerations: Counter;
  private readonly grants: Counter;
  private readonly sectionsEnded: Counter<"reason">;
  private readonly waitSeconds: Histogram;
  private readonly holdSeconds: Histogram;
  /** The token's last arrival here: its epoch, and when (monotonic ms). */
  private lastArrival: { epoch: number; atMs: number } | null = null;

  constructor(node: NodeMetrics, private readonly clock: Clock) {
    const registers = [node.registry];
    this.hops = new Counter({ name: "mutexd_ring_token_hops_total", help: "Token hand-offs this node took from its predecessor.", registers });
    this.rotationSeconds = new Histogram({
      name: "mutexd_ring_rotation_seconds",
      help: "Time between two arrivals of the token here in one epoch (one trip round the ring).",
      buckets: TIME_BUCKETS_SECONDS,
      registers,
    });
    this.viewChanges = new Counter({ name: "mutexd_ring_view_changes_total", help: "Views (epochs) this node entered.", registers });
    this.regenerations = new Counter({ name: "mutexd_ring_token_regenerations_total", help: "Tokens this node regenerated for a new view.", registers });
    this.grants = new Counter({ name: "mutexd_ring_grants_total", help: "Critical sections granted on this node.", registers });
    this.sectionsEnded = new Counter({ name: "mutexd_ring_sections_ended_total", help: "Critical sections ended on this node, by reason.", labelNames: ["reason"], registers });
    this.waitSeconds = new Histogram({ name: "mutexd_ring_wait_seconds", help: "Time from an enter to its grant on this node.", buckets: TIME_BUCKETS_SECONDS, registers });
    this.holdSeconds = new Histogram({ name: "mutexd_ring_hold_seconds", help: "Time from a grant to the section's end on this node.", buckets: TIME_BUCKETS_SECONDS, registers });
  }

  /** One step of the ring node's core (RingServiceOptions.onStep): token arrivals and core events. */
  step(input: RingInput | { type: "start" }, output: RingOutput): void {
    if (input.type === "token" && output.result.ok && output.result.type === "token" && !output.result.duplicate) this.tokenArrived(input.token.epoch);
    for (const effect of output.effects) if (effect.type === "event") this.event(effect.event, effect.fields);
  }

  /** The token of `epoch` was taken here. */
  private tokenArrived(epoch: number): void {
    const nowMs = this.clock.nowMs();
    this.hops.inc();
    if (this.lastArrival?.epoch === epoch) this.rotationSeconds.observe((nowMs - this.lastArrival.atMs) / 1000);
    this.lastArrival = { epoch, atMs: nowMs };
  }

  /** A core event (ring_node.ts): grants, section ends, epochs, regenerations. */
  private event(event: string, fields: LogFields): void {
    const seconds = (ms: unknown) => (typeof ms === "number" && ms >= 0 ? ms / 1000 : undefined);
    switch (event) {
      case "granted": {
        this.grants.inc();
        const waited = seconds(fields.waitedMs);
        if (waited !== undefined) this.waitSeconds.observe(waited);
        return;
      }
      case "sectionEnded": {
        this.sectionsEnded.inc({ reason: String(fields.reason ?? "unknown").slice(0, 32) });
        const held = seconds(fields.heldMs);
        if (held !== undefined) this.holdSeconds.observe(held);
        return;
      }
      case "epoch":
        this.viewChanges.inc();
        return;
      case "tokenRegenerated":
        this.regenerations.inc();
        return;
    }
  }
}
