/**
 * `mutexd arbiter recover`: the record a replacement arbiter starts from after its disk was lost,
 * decided from what both lock servers report (`GET /v1/status`), or a refusal saying why it
 * cannot be decided safely. Pure; the command does the I/O (cluster/commands/arbiter.ts).
 *
 * Why the read stays true until the new arbiter starts (docs/failover.md, "The arbiter loses its
 * disk"): without an arbiter no epoch is created (a takeover needs its consent), the primary's
 * token ceiling and TTL cover are not raised (it commits nothing they do not cover), and it cannot
 * have the backup recorded out of sync, so it keeps requiring the backup's acks: a backup that
 * held every committed change at the read keeps holding them. What can change
 * is that a lock server restarts, which the record handles like any restart (its new process
 * proves its copy gone), or that an arbiter runs meanwhile, which the command refuses.
 */
import type { ReplicaStatus } from "../lock/lock_replica.ts";
import type { ArbiterState } from "./arbiter.ts";

export interface ServerReport {
  id: string;
  /** The server's `/v1/status` replication part; undefined when it did not answer. */
  status: ReplicaStatus | undefined;
}

export type RecoverDecision = { ok: true; record: ArbiterState } | { ok: false; reason: string };

/** `existing`: what the arbiter's disk holds now (null: nothing); a record never goes back in epoch. */
export function recoverRecord(servers: [ServerReport, ServerReport], existing: ArbiterState | null): RecoverDecision {
  const silent = servers.filter((s) => s.status === undefined).map((s) => s.id);
  if (silent.length > 0) {
    return { ok: false, reason: `${silent.join(" and ")} did not answer: both lock servers must report (a silent one may serve a newer epoch)` };
  }
  const [a, b] = servers as Array<{ id: string; status: ReplicaStatus }>;
  const primaries = [a, b].filter((s) => s.status.role === "primary");
  if (primaries.length !== 1) {
    return { ok: false, reason: primaries.length === 0 ? "no lock server is primary: wait until one serves, then run this again" : "both lock servers say primary: wait until one stepped down" };
  }
  const primary = primaries[0];
  const other = primary === a ? b : a;
  const view = primary.status.arbiterRecord;
  if (other.status.epoch > primary.status.epoch) {
    return { ok: false, reason: `${other.id} knows epoch ${other.status.epoch}, above the primary's ${primary.status.epoch}` };
  }
  if (view === null || view === undefined) return { ok: false, reason: `${primary.id} reports no arbiter record view (a version from before)` };
  if (existing !== null && existing.epoch > primary.status.epoch) {
    return { ok: false, reason: `the arbiter's disk holds epoch ${existing.epoch}, above the primary's ${primary.status.epoch}: it is not lost` };
  }
  // "In sync" only when the backup holds every committed change now (what the primary's in-sync
  // report says), and names the process holding it: without that name a restarted backup could
  // not prove the copy gone (arbiter.ts, backupCopyLost), and a primary that lost its table too
  // would wait for it forever. Out of sync is always safe: the backup is not promoted, and the
  // primary's next renewal reports what holds.
  const inSync = view.backupInSync === true && view.backupIncarnation !== null;
  return {
    ok: true,
    record: {
      epoch: primary.status.epoch,
      primary: primary.id,
      backup: other.id,
      backupInSync: inSync,
      reportSeq: view.reportSeq,
      backupIncarnation: inSync ? view.backupIncarnation : null,
      backupCopyLost: false,
      ttlMaxMs: view.ttlMaxMs,
      tokenCeiling: view.tokenCeiling,
    },
  };
}
