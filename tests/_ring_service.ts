/**
 * Helpers for tests of the ring driver (cluster/ring/service.ts) in process, with hand-made
 * peers: the test plays the other ring nodes' view-change messages. Not a test file.
 */
import assert from "node:assert/strict";
import type { View, ViewMessage } from "../lib/core/ring/view_wire.ts";
import type { RingPeers, RingService } from "../cluster/ring/service.ts";
import type { Clock } from "../cluster/clock.ts";
import { viewOf } from "./_ring_node.ts";

/** A port that never answers (nothing in the test waits on it). */
export const never = () => new Promise<never>(() => {});

/**
 * The service joins `view` (default: epoch 1, members a, b, c, coordinated by a) as the view
 * change does it: a prepare of the view's ballot from its coordinator, then the view. A node
 * promises nothing while its start hold runs (it may have backed a lease just before a
 * restart), so the clock first moves past that hold.
 */
export function joinView(service: RingService, clock: Clock & { advance(ms: number): void }, view: View = viewOf(1)): void {
  const heldUntilMs = service.lease().heldUntilMs;
  if (clock.nowMs() < heldUntilMs) clock.advance(heldUntilMs - clock.nowMs());
  const ballot = { epoch: view.epoch, coordinator: view.coordinator };
  service.onViewMessage({ type: "prepare", from: view.coordinator, ballot, voters: [...service.node.ring] });
  service.onViewMessage({ type: "newView", from: view.coordinator, view });
  assert.equal(service.node.status(clock.nowMs()).epoch, view.epoch, `view ${view.epoch} installed`);
}

/**
 * The view port of peers that back every token lease: each renewal is answered OK by its
 * addressee, in a microtask (as an answer from the wire would come, never inside the send).
 * Every other view message is recorded in `sent` and goes nowhere.
 */
export function leaseBackingPeers(service: () => RingService): { view: RingPeers["view"]; sent: Array<{ to: string; message: ViewMessage }> } {
  const sent: Array<{ to: string; message: ViewMessage }> = [];
  const view = (to: string, message: ViewMessage) => {
    sent.push({ to, message });
    if (message.type === "renew") {
      const { epoch, seq } = message;
      Promise.resolve().then(() => service().onViewMessage({ type: "renewAnswer", from: to, epoch, seq, ok: true }));
    }
    return Promise.resolve();
  };
  return { view, sent };
}
