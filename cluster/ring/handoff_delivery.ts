/**
 * The ring driver's deliveries to the successor, watched (the PeerLink's `deliver`, see
 * cluster/ring/service.ts): each goes to the peers, its answer is checked against its schema (a
 * malformed one is no answer: the hand-off may have been taken), and its outcome goes to the
 * pure HandoffWatch (lib/core/ring/handoff_watch.ts), whose verdicts this carries out: the
 * repair core hears of the successor, the view change of a refused or uncertain token hand-off,
 * and a suspected successor or a newer view starts a view change. The answer or error goes on to
 * the link unchanged. Ports as in cluster/timers.ts: the peers' promise is continued with
 * `.then` only, so the simulator runs this as it is.
 */
import { type HandoffRecord, HandoffWatch } from "../../lib/core/ring/handoff_watch.ts";
import type { RingResult } from "../../lib/core/ring/ring_node.ts";
import type { ViewChangeReason } from "../../lib/core/ring/view.ts";
import { checkRingResult } from "../../lib/wire/ring_peer.ts";
import type { SecurityLog } from "../security_log.ts";
import type { LinkItem } from "./peer_link.ts";

export interface HandoffDeliveryPorts {
  /** The transport's delivery (RingPeers.deliver): rejects on network failure or timeout. */
  deliver(to: string, item: LinkItem): PromiseLike<RingResult>;
  /** The successor a delivery goes to now. */
  successor(): string;
  security: SecurityLog;
  /** ringRepairRetries. */
  retries: number;
  /** The newest epoch this node promised (the view change's). */
  promisedEpoch(): number;
  /** The view change's inputs about the token hand-off (ViewCore.handoffRefused / handoffUncertain). */
  handoffRefused(epoch: number, hop: number): void;
  handoffUncertain(epoch: number, hop: number): void;
  /** The repair core's inputs: the successor answered; hand-offs to it failed (it is suspected). */
  heardFrom(node: string): void;
  handoffFailed(to: string): void;
  wantViewChange(reason: ViewChangeReason): void;
}

export class HandoffDelivery {
  private readonly watch: HandoffWatch;

  constructor(private readonly ports: HandoffDeliveryPorts) {
    this.watch = new HandoffWatch({ retries: ports.retries, promisedEpoch: () => ports.promisedEpoch() });
  }

  /** Delivers `item` to the successor, watched; settles as the transport did. */
  deliver(item: LinkItem): PromiseLike<RingResult> {
    const { ports, watch } = this;
    const to = ports.successor();
    const record = watch.attempt(item.kind === "token" ? item.token : null);
    const tellRefused = (refused: HandoffRecord | null) => {
      if (refused) ports.handoffRefused(refused.epoch, refused.hop);
    };
    // An answer its schema refuses is no answer: the hand-off may have been taken (uncertain).
    const checked = (answer: RingResult): RingResult => {
      const result = checkRingResult(answer);
      if (result.ok) return result.value;
      ports.security.refused("answerMalformed", to, { message: result.message });
      throw new Error(`${to}: malformed hand-off answer: ${result.message}`);
    };
    return ports.deliver(to, item).then(checked).then(
      (result) => {
        const verdict = watch.answered(record, result);
        ports.heardFrom(to);
        tellRefused(verdict.refused);
        // The successor is in a newer view than any this node promised: it was left out.
        if (verdict.rejoin) ports.wantViewChange("rejoin");
        return result;
      },
      (error) => {
        const verdict = watch.failed(record, connectRefused(error));
        tellRefused(verdict.refused);
        // A refusal reported for an earlier attempt no longer holds.
        if (verdict.uncertain) ports.handoffUncertain(verdict.uncertain.epoch, verdict.uncertain.hop);
        if (verdict.suspect) {
          ports.handoffFailed(to);
          ports.wantViewChange("suspect");
        }
        throw error;
      },
    );
  }
}

/**
 * Whether a failed hand-off never reached the successor (connection refused: nothing listens),
 * as opposed to a timeout, after which it may have arrived. Runtimes word it differently.
 */
export function connectRefused(error: unknown): boolean {
  const seen = new Set<unknown>();
  for (let e = error; e && !seen.has(e) && seen.size < 5; e = (e as { cause?: unknown }).cause) {
    seen.add(e);
    const text = `${(e as { code?: unknown }).code ?? ""} ${(e as Error).message ?? ""}`;
    // The runtimes' words for a refused connect only: a bare "refused" may be in the body of an
    // answer (`status 409: …refused…`), and an answered request did reach the successor.
    if (/ECONNREFUSED|ConnectionRefused|Connection refused/i.test(text)) return true;
  }
  return false;
}
